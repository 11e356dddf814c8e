"""A LangGraph agent loop checkpointed in a ctxflow SQLite store (``CtxflowSaver``).

Run it: ``python examples/langgraph_checkpointer.py`` (needs the ``[langgraph]``
extra). A graph of an agent node and a tool node answers three questions, each in
a loop of tool calls, with every step checkpointed in a SQLite file. A new saver
opened on the same file then picks the thread up where it stopped: the state,
the history that time travel walks, and one more question. Last, what the
store holds: each message once, and each step a small delta.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from ctxflow.integrations.langgraph import CtxflowSaver

CITIES = {"Lyon": "522,000", "Nantes": "320,000", "Lille": "236,000"}


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def agent(state: State) -> dict[str, Any]:
    """A scripted model: look up each city named in the question, then answer."""
    question = next(m for m in reversed(state["messages"]) if isinstance(m, HumanMessage))
    wanted = [c for c in CITIES if c in str(question.content)]
    asked = question.id
    index = next(i for i, m in enumerate(state["messages"]) if m.id == asked)
    found = [m for m in state["messages"][index:] if isinstance(m, ToolMessage)]
    if len(found) < len(wanted):
        city = wanted[len(found)]
        call = {"name": "population", "args": {"city": city}, "id": f"call_{city}_{index}"}
        return {"messages": [AIMessage(content=f"Looking up {city}.", tool_calls=[call])]}
    answer = "; ".join(f"{c}: {m.content}" for c, m in zip(wanted, found, strict=True))
    return {"messages": [AIMessage(content=answer)]}


def tools(state: State) -> dict[str, Any]:
    """The tool: a fixed population table."""
    last = state["messages"][-1]
    assert isinstance(last, AIMessage)
    return {
        "messages": [
            ToolMessage(content=CITIES[call["args"]["city"]], tool_call_id=call["id"])
            for call in last.tool_calls
        ]
    }


def route(state: State) -> str:
    """The tool node while the model calls a tool, else the end."""
    last = state["messages"][-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else END


def build(saver: CtxflowSaver) -> Any:
    """The agent loop: agent → tools → agent … → end, checkpointed by ``saver``."""
    graph = StateGraph(State)
    graph.add_node("agent", agent)
    graph.add_node("tools", tools)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=saver)


def ask(graph: Any, question: str) -> str:
    """One user turn on thread ``cities``; the answer's text."""
    config = {"configurable": {"thread_id": "cities"}}
    out = graph.invoke({"messages": [HumanMessage(content=question)]}, config)
    return str(out["messages"][-1].content)


def main() -> None:
    """Run, reopen, continue; print the answers, the restored state and the storage."""
    config = {"configurable": {"thread_id": "cities"}}
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'agent.db'}"
        with CtxflowSaver.from_conn_string(url) as saver:
            graph = build(saver)
            print("answer:", ask(graph, "How many people live in Lyon?"))
            print("answer:", ask(graph, "And in Nantes and Lille?"))
            print("answer:", ask(graph, "Lyon again, please."))

        with CtxflowSaver.from_conn_string(url) as saver:
            graph = build(saver)
            state = graph.get_state(config)
            history = list(graph.get_state_history(config))
            print(f"reopened: {len(state.values['messages'])} messages, {len(history)} checkpoints")
            print("answer:", ask(graph, "And Lille alone?"))
            messages = graph.get_state(config).values["messages"]
            # The thread's store session: its body log holds each message once.
            latest = saver.store.load("langgraph/cities/")
            once = len(latest.manifest.hashes) == len(messages)
            print(f"messages: {len(messages)}, each stored once: {once}")
            records = saver.store.checkpoints("langgraph/cities/")
            puts = [r for r in records if r.trigger == "langgraph"]
            small = all(r.size < 1024 for r in records if not r.full)
            print(f"checkpoints stored: {len(puts)}, each delta under 1 KB: {small}")


if __name__ == "__main__":
    main()
