"""CtxflowSaver under real LangGraph graphs: state, history, interrupts, storage and reopening."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph", reason="needs the [langgraph] extra")

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    AnyMessage,
    ChatMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt

from ctxflow.errors import CheckpointError, StoreURLError
from ctxflow.integrations.langgraph import CtxflowSaver
from ctxflow.stores import MemoryStore, SQLiteStore


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    rounds: int


def agent(state: State) -> dict[str, Any]:
    """A scripted model: a tool call per round, then an answer."""
    rounds = state.get("rounds", 0)
    if rounds < 3:
        call = {"name": "lookup", "args": {"n": rounds}, "id": f"call_{len(state['messages'])}"}
        message = AIMessage(
            content=[{"type": "text", "text": f"round {rounds}"}], tool_calls=[call]
        )
    else:
        message = AIMessage(content=f"done after {len(state['messages'])} messages")
    return {"messages": [message], "rounds": rounds + 1}


def tools(state: State) -> dict[str, Any]:
    """Answer every tool call of the last message."""
    last = state["messages"][-1]
    assert isinstance(last, AIMessage)
    return {
        "messages": [
            ToolMessage(content=f"result {c['args']['n']} " + "x" * 300, tool_call_id=c["id"])
            for c in last.tool_calls
        ]
    }


def route(state: State) -> str:
    """To the tools while the model calls one."""
    last = state["messages"][-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else END


def build(saver: Any) -> Any:
    """The agent loop graph: agent → tools → agent … → end."""
    graph = StateGraph(State)
    graph.add_node("agent", agent)
    graph.add_node("tools", tools)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=saver)


def converse(graph: Any, thread: str, turns: int) -> None:
    """Run ``turns`` user turns, each a full tool loop."""
    config = {"configurable": {"thread_id": thread}}
    for turn in range(turns):
        graph.invoke({"messages": [HumanMessage(content=f"question {turn}")], "rounds": 0}, config)


def dumped(messages: list[AnyMessage]) -> list[dict[str, Any]]:
    """Messages as plain data, without the random ids ``add_messages`` gives them."""
    return [{k: v for k, v in m.model_dump().items() if k != "id"} for m in messages]


def test_graph_state_and_history_match_langgraphs_own_saver(tmp_path: Path) -> None:
    """A tool loop checkpointed in SQLite reopens with the state and history InMemorySaver has."""
    reference = build(InMemorySaver())
    converse(reference, "t", 4)
    config = {"configurable": {"thread_id": "t"}}
    with CtxflowSaver.from_conn_string(f"sqlite:///{tmp_path / 'lg.db'}") as saver:
        written = build(saver)
        converse(written, "t", 4)
        before = written.get_state(config).values["messages"]
    with CtxflowSaver.from_conn_string(str(tmp_path / "lg.db")) as reopened:
        graph = build(reopened)
        state = graph.get_state(config)
        expected = reference.get_state(config)
        assert len(state.values["messages"]) == 32
        assert dumped(state.values["messages"]) == dumped(expected.values["messages"])
        assert [m.model_dump() for m in state.values["messages"]] == [
            m.model_dump() for m in before
        ]
        assert state.values["rounds"] == expected.values["rounds"]
        history = list(graph.get_state_history(config))
        assert len(history) == len(list(reference.get_state_history(config)))
        assert [len(h.values.get("messages", [])) for h in history] == [
            len(h.values.get("messages", [])) for h in reference.get_state_history(config)
        ]
        assert [h.metadata["step"] for h in history] == sorted(
            (h.metadata["step"] for h in history), reverse=True
        )
        # The reopened saver continues the thread.
        converse(graph, "t", 1)
        assert len(graph.get_state(config).values["messages"]) == 40


def test_each_message_is_stored_once_and_steps_write_deltas() -> None:
    """The store holds each message body once, a step writes a small delta, and the
    store grows linearly with the conversation (not with checkpoints × history)."""
    store = MemoryStore()
    graph = build(CtxflowSaver(store))
    converse(graph, "t", 10)
    first = store.size
    converse(graph, "t", 10)
    second = store.size - first
    messages = graph.get_state({"configurable": {"thread_id": "t"}}).values["messages"]
    snapshot = store.load("langgraph/t/")
    assert len(snapshot.manifest.hashes) == len(messages) == 160
    # The log is the messages in order, and writes refer to the same bodies.
    saver = CtxflowSaver(store)
    logged = saver._items([snapshot.bodies[h] for h in snapshot.manifest.hashes])
    assert dumped(logged) == dumped(messages)
    assert [m.id for m in logged] == [m.id for m in messages]
    assert all(m.id for m in logged)
    items = [h for h in store._blobs if "task" not in store.codec.decode(store._blobs[h])]
    assert set(snapshot.manifest.hashes) <= set(items)
    records = store.checkpoints("langgraph/t/")
    assert sum(not r.full for r in records) > len(records) * 3 // 4
    assert max(r.size for r in records if not r.full) < 1500
    assert second < 1.2 * first


def test_async_graph_gives_the_sync_state() -> None:
    """``ainvoke`` through the async methods checkpoints the same state as ``invoke``."""
    sync_graph = build(CtxflowSaver(MemoryStore()))
    converse(sync_graph, "t", 2)
    async_graph = build(CtxflowSaver(MemoryStore()))
    config = {"configurable": {"thread_id": "t"}}

    async def run() -> Any:
        for turn in range(2):
            await async_graph.ainvoke(
                {"messages": [HumanMessage(content=f"question {turn}")], "rounds": 0}, config
            )
        history = [h async for h in async_graph.aget_state_history(config)]
        return await async_graph.aget_state(config), history

    state, history = asyncio.run(run())
    expected = sync_graph.get_state(config)
    assert [m.content for m in state.values["messages"]] == [
        m.content for m in expected.values["messages"]
    ]
    assert len(history) == len(list(sync_graph.get_state_history(config)))


def test_interrupt_resumes_from_its_pending_writes(tmp_path: Path) -> None:
    """A graph interrupted mid-step resumes in a new saver from the stored pending writes."""

    def ask(state: State) -> dict[str, Any]:
        answer = interrupt("approve?")
        return {"messages": [AIMessage(content=f"approved: {answer}")]}

    def built(saver: CtxflowSaver) -> Any:
        graph = StateGraph(State)
        graph.add_node("ask", ask)
        graph.add_edge(START, "ask")
        graph.add_edge("ask", END)
        return graph.compile(checkpointer=saver)

    config = {"configurable": {"thread_id": "i"}}
    path = tmp_path / "i.db"
    with CtxflowSaver.from_conn_string(f"sqlite:///{path}") as saver:
        out = built(saver).invoke({"messages": [HumanMessage(content="go")]}, config)
        assert out["__interrupt__"][0].value == "approve?"
    with CtxflowSaver.from_conn_string(f"sqlite:///{path}") as saver:
        graph = built(saver)
        assert graph.get_state(config).next == ("ask",)
        done = graph.invoke(Command(resume="yes"), config)
    assert done["messages"][-1].content == "approved: yes"


def test_time_travel_forks_from_an_older_checkpoint() -> None:
    """Updating an older checkpoint makes a newer one the thread's latest; the old stay."""
    saver = CtxflowSaver(MemoryStore())
    graph = build(saver)
    converse(graph, "t", 2)
    config = {"configurable": {"thread_id": "t"}}
    history = list(graph.get_state_history(config))
    older = next(h for h in history if len(h.values.get("messages", [])) == 9)
    forked = graph.update_state(older.config, {"messages": [HumanMessage(content="instead")]})
    latest = graph.get_state(config)
    assert latest.config["configurable"]["checkpoint_id"] == forked["configurable"]["checkpoint_id"]
    assert [m.content for m in latest.values["messages"]][-1] == "instead"
    assert len(latest.values["messages"]) == 10
    assert len(list(graph.get_state_history(config))) == len(history) + 1
    # The checkpoint before the fork still holds the longer conversation.
    assert len(graph.get_state(history[0].config).values["messages"]) == 16


def test_two_savers_on_one_file_take_turns(tmp_path: Path) -> None:
    """A saver whose head another writer moved on reads it again and appends after it."""
    path = tmp_path / "shared.db"
    first, second = SQLiteStore(path), SQLiteStore(path)
    try:
        one, two = build(CtxflowSaver(first)), build(CtxflowSaver(second))
        for turn in range(4):
            graph = one if turn % 2 == 0 else two
            graph.invoke(
                {"messages": [HumanMessage(content=f"q{turn}")], "rounds": 0},
                {"configurable": {"thread_id": "t"}},
            )
        state = one.get_state({"configurable": {"thread_id": "t"}})
        assert [m.content for m in state.values["messages"] if isinstance(m, HumanMessage)] == [
            "q0",
            "q1",
            "q2",
            "q3",
        ]
    finally:
        first.close()
        second.close()


def test_from_conn_string_reads_memory_sqlite_and_paths(tmp_path: Path) -> None:
    """``memory`` (and LangGraph's ``:memory:``), ``sqlite:///path`` and a path open stores;
    other URLs are refused by name, creating nothing."""
    for memory in ("memory", ":memory:"):
        with CtxflowSaver.from_conn_string(memory) as saver:
            assert isinstance(saver.store, MemoryStore)
    with CtxflowSaver.from_conn_string(f"sqlite:///{tmp_path / 'a.db'}") as saver:
        assert isinstance(saver.store, SQLiteStore)
    with CtxflowSaver.from_conn_string(str(tmp_path / "b.db")) as saver:
        assert isinstance(saver.store, SQLiteStore)
    with pytest.raises(StoreURLError, match="mysql"), CtxflowSaver.from_conn_string("mysql://x"):
        pass
    with pytest.raises(StoreURLError), CtxflowSaver.from_conn_string(""):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db", "b.db"]


def test_bad_configs_raise_typed_errors_before_writing() -> None:
    """A config without a thread, or writes without a checkpoint, raise ``CheckpointError``."""
    store = MemoryStore()
    saver = CtxflowSaver(store)
    with pytest.raises(CheckpointError, match="thread_id"):
        saver.get_tuple({"configurable": {}})
    with pytest.raises(CheckpointError, match="checkpoint_id"):
        saver.put_writes({"configurable": {"thread_id": "t"}}, [("ch", 1)], "task")
    with pytest.raises(CheckpointError, match="full_every"):
        CtxflowSaver(store, full_every=0)
    assert store.sessions() == []


def _checkpoint(checkpoint_id: str, value: str) -> dict[str, Any]:
    return {
        "v": 1,
        "id": checkpoint_id,
        "ts": "2026-01-01T00:00:00+00:00",
        "channel_values": {"x": value},
        "channel_versions": {"x": 1},
        "versions_seen": {},
        "updated_channels": None,
    }


def test_the_newest_id_stays_latest_when_an_older_one_is_put_after_it() -> None:
    """The latest of a thread is its greatest checkpoint id, as in LangGraph's own savers."""
    store = MemoryStore()
    saver = CtxflowSaver(store)
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    saver.put(config, _checkpoint("b", "newer"), {"step": 1}, {"x": 1})
    saver.put(config, _checkpoint("a", "older"), {"step": 0}, {"x": 1})
    for reader in (saver, CtxflowSaver(store)):
        latest = reader.get_tuple(config)
        assert latest is not None
        assert latest.checkpoint["id"] == "b"
        assert latest.checkpoint["channel_values"] == {"x": "newer"}
    assert [t.checkpoint["id"] for t in saver.list(config)] == ["b", "a"]


def test_writes_for_an_older_checkpoint_stay_with_it() -> None:
    """Writes that arrive after the next checkpoint belong to the one they name only."""
    store = MemoryStore()
    saver = CtxflowSaver(store)
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    first = saver.put(config, _checkpoint("a", "1"), {"step": 0}, {"x": 1})
    saver.put_writes(first, [("x", "early")], "task-1")
    second = saver.put(first, _checkpoint("b", "2"), {"step": 1}, {"x": 1})
    saver.put_writes(first, [("x", "late"), ("x", "later")], "task-2")
    saver.put_writes(first, [("x", "again")], "task-2")  # (task, idx) stored once
    for reader in (saver, CtxflowSaver(store)):
        older = reader.get_tuple(first)
        newer = reader.get_tuple(second)
        assert older is not None and newer is not None
        assert older.pending_writes == [
            ("task-1", "x", "early"),
            ("task-2", "x", "late"),
            ("task-2", "x", "later"),
        ]
        assert newer.pending_writes == []
        assert newer.parent_config is not None
        assert newer.parent_config["configurable"]["checkpoint_id"] == "a"


def varied() -> list[Any]:
    """Messages of every kind the fast decoding rebuilds, with what they may carry (content
    blocks, tool calls, usage, names, extras of other types in their kwargs)."""
    return [
        SystemMessage(content="You read files.", id="s1"),
        HumanMessage(content="Read a.py", id="h1", name="ana"),
        AIMessage(
            content=[{"type": "text", "text": "Reading."}],
            tool_calls=[{"name": "read", "args": {"path": "a.py"}, "id": "t1"}],
            usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
            response_metadata={"model": "m", "at": datetime(2026, 1, 2, tzinfo=UTC)},
            additional_kwargs={"trace": uuid.UUID(int=7), "nested": {"n": [1, 2]}},
            id="a1",
        ),
        ToolMessage(content="print(1)", tool_call_id="t1", status="error", artifact={"k": 1}),
        AIMessageChunk(content="partial", id="c1"),
        ChatMessage(content="hm", role="critic"),
        RemoveMessage(id="h1"),
    ]


def test_fast_decoding_gives_what_the_serializer_gives() -> None:
    """Items decoded by the saver equal, type for type, what LangGraph's serializer decodes;
    another serializer decodes them itself."""
    saver = CtxflowSaver(MemoryStore())
    messages = varied()
    bodies = [saver._item_body(m) for m in messages]
    decoded = saver._items(bodies)
    expected = [saver.serde.loads_typed((b["t"], b["b"])) for b in bodies]
    assert decoded == expected == messages
    assert [type(m) for m in decoded] == [type(m) for m in messages]
    assert [m.model_dump() for m in decoded] == [m.model_dump() for m in expected]
    assert decoded[2].additional_kwargs["trace"] == uuid.UUID(int=7)
    assert decoded[0] is not saver._items(bodies)[0]  # each load builds its own objects

    class Counting(JsonPlusSerializer):
        calls = 0

        def loads_typed(self, data: tuple[str, bytes]) -> Any:
            Counting.calls += 1
            return super().loads_typed(data)

    other = CtxflowSaver(MemoryStore(), serde=Counting())
    assert other._items(bodies) == messages
    assert Counting.calls == 1


def _replayed(saver: Any) -> tuple[Any, Any]:
    """Two checkpoints with many small writes calls for the first (more than the record
    holds), repeated (task, idx) pairs, special channels and a list of messages."""
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    first = saver.put(config, _checkpoint("a", "1"), {"step": 0}, {"x": 1})
    for n in range(40):
        task = str(uuid.UUID(int=n % 7)) if n % 2 else f"task-{n % 5}"
        writes = [("x", f"value {n} " + "y" * 40), ("messages", [AIMessage(content=f"m{n}")])]
        if n % 9 == 0:
            writes.append(("__error__", f"error {n}"))
        saver.put_writes(first, writes, task, f"path-{n % 3}")
    second = saver.put(first, _checkpoint("b", "2"), {"step": 1}, {"x": 2})
    saver.put_writes(second, [("messages", [HumanMessage(content="next", id="n1")])], "task-b")
    return first, second


def test_many_writes_calls_read_back_as_langgraphs_own_saver_has_them() -> None:
    """Writes calls kept in the record, then beyond its limit as bodies, read back (and after
    reopening) merged and ordered as InMemorySaver gives them."""
    reference = InMemorySaver()
    expected = [reference.get_tuple(config) for config in _replayed(reference)]
    store = MemoryStore()
    saver = CtxflowSaver(store)
    configs = _replayed(saver)
    for reader in (saver, CtxflowSaver(store)):
        found = [reader.get_tuple(config) for config in configs]
        for got, want in zip(found, expected, strict=True):
            assert got is not None and want is not None
            assert got.pending_writes == want.pending_writes
        assert [t.pending_writes for t in reader.list({"configurable": {"thread_id": "t"}})] == [
            t.pending_writes for t in reversed(expected) if t is not None
        ]
    records = store.checkpoints("langgraph/t/")
    assert any(len(store.load("langgraph/t/", r.id).manifest.overlays) > 0 for r in records)


def test_a_step_stores_its_writes_in_its_record_and_each_message_once() -> None:
    """Writes whose messages carry ids add no body beside the messages themselves: the
    message bodies the writes stored are the ones the next checkpoint's list names."""
    store = MemoryStore()
    saver = CtxflowSaver(store)
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    messages: list[Any] = []
    parent = saver.put(config, _checkpoint("000", "-"), {"step": -1}, {"x": 1})
    for step in range(1, 30):
        message = AIMessage(content=f"turn {step}", id=f"m{step}")
        saver.put_writes(parent, [("messages", [message]), ("x", str(step))], f"t{step}")
        messages = [*messages, message]
        checkpoint = _checkpoint(f"{step:03d}", str(step))
        checkpoint["channel_values"] = {"messages": messages, "x": str(step)}
        checkpoint["channel_versions"] = {"messages": step, "x": step}
        parent = saver.put(parent, checkpoint, {"step": step}, {"messages": step, "x": step})
    snapshot = store.load("langgraph/t/")
    assert len(snapshot.manifest.hashes) == len(messages)
    assert set(store._blobs) == set(snapshot.manifest.hashes)  # no body for a writes call
    latest = CtxflowSaver(store).get_tuple(config)
    assert latest is not None
    assert latest.checkpoint["channel_values"]["messages"] == messages
    older = CtxflowSaver(store).get_tuple(
        {"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": "010"}}
    )
    assert older is not None
    assert older.pending_writes == [("t11", "messages", [messages[10]]), ("t11", "x", "11")]
    assert len(older.checkpoint["channel_values"]["messages"]) == 10
