"""A ``create_agent`` loop whose model gets a ctxflow window (``CtxflowMiddleware``).

Run it: ``python examples/langchain_middleware.py`` (needs the ``[langchain]``
extra). An agent reads sixteen source files, one tool call each, with a
scripted chat model standing in for a provider. The files add up to several
times the 4,000-token input budget; the middleware sends every call a window
that fits, keeps each tool call with its result, trims and condenses older
rounds (the agent's own state keeps the whole history), and moves the phase
chart from the agent's steps: planning, a step per tool round, a reflection
every five. Before answering, the model recalls the first file, which its
window no longer holds whole, by its call id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool

from ctxflow.integrations.langchain import CtxflowMiddleware, to_ctxflow
from ctxflow.model import check

FILES = 16
BUDGET = 4000


@tool
def read_file(path: str) -> str:
    """Read a source file of the project."""
    return f"# {path}\n" + "".join(
        f"def handler_{i}(event): return {i}  # {path}\n" for i in range(60)
    )


class ScriptedChat(BaseChatModel):
    """A stand-in chat model: reads the files in turn, recalls the first, answers."""

    requests: list[list[BaseMessage]]
    window_tokens: list[int]
    middleware: Any

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChat:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.requests.append(list(messages))
        self.window_tokens.append(self.middleware.window("review").tokens)
        turn = len(self.requests) - 1
        if turn < FILES:
            call = {
                "name": "read_file",
                "args": {"path": f"src/mod{turn}.py"},
                "id": f"call_{turn}",
            }
            text = "I will read every module, then summarise." if turn == 0 else ""
            reply = AIMessage(content=text, tool_calls=[call])
        elif turn == FILES:
            reply = AIMessage(
                content="",
                tool_calls=[{"name": "recall", "args": {"id": "call_0"}, "id": "call_r"}],
            )
        else:
            recalled = next(m for m in reversed(messages) if isinstance(m, ToolMessage))
            lines = str(recalled.content).count("\n")
            reply = AIMessage(content=f"{FILES} modules read; mod0.py has {lines} lines.")
        return ChatResult(generations=[ChatGeneration(message=reply)])


def main() -> None:
    """Run the agent; print the answer, what each call got and the chart's path."""
    middleware = CtxflowMiddleware(budget=BUDGET, reflect_every=5)
    model = ScriptedChat(requests=[], window_tokens=[], middleware=middleware)
    agent = create_agent(
        model, tools=[read_file], middleware=[middleware], system_prompt="You review code."
    )
    config = {"configurable": {"thread_id": "review"}}
    out = agent.invoke({"messages": [{"role": "user", "content": "Review src/."}]}, config)
    print("answer:", out["messages"][-1].content)

    history = sum(len(str(m.content)) for m in out["messages"])
    print(f"history: {len(out['messages'])} messages, {history:,} characters")
    valid = all(
        isinstance(r[0], SystemMessage)
        and check(to_ctxflow(r[1:]), api="anthropic").ok
        and check(to_ctxflow(r[1:]), api="openai").ok
        for r in model.requests
    )
    print(f"model calls: {len(model.requests)}, all valid for both APIs: {valid}")
    within = max(model.window_tokens) <= BUDGET
    print(f"every window within {BUDGET:,} tokens: {within}")
    engine = middleware.engine("review")
    assert engine is not None
    triggers = [r.trigger for r in engine.records]
    print(
        "chart:",
        " ".join(triggers[:3]),
        "...",
        f"{triggers.count('step')} steps,",
        f"{triggers.count('reflect')} reflections",
    )


if __name__ == "__main__":
    main()
