"""Checkpoint cost over a long session: ctxflow's SQLite store against LangGraph's SqliteSaver.

A loop appends one message per step and checkpoints at every step into a
SQLite file in a temporary directory. Recorded: the per-step cost (append plus
checkpoint, median over a window) near step 10 and at the last step (ours
over five runs of the session), their ratio (flat is the goal: at most 1.5x),
the storage after the run against the raw
conversation JSON (goal: at most 1x), and the time to load the latest state.

Loads are timed two ways against the same two of the peer: from an open store
(``checkpoints.load_latest_ms``, the like-for-like figure: the peer's
``get_state`` reuses its open connection) and from a new connection each time
(``checkpoints.load_latest_new_connection_ms``: a fresh ``SQLiteStore`` against
the compiled graph given a fresh ``SqliteSaver``). A second session, written
with the cl100k measure the engine counts with, is restored with that measure:
``checkpoints.load_latest_cl100k_ms`` takes the counts stored with the
checkpoints, ``checkpoints.load_latest_cl100k_recount_ms`` counts every message
again (a session written without counts); the peer counts no tokens at all.
Every load of both sides is timed in one rotation (one call of each per round),
so a slow spell of the machine falls on both alike; ``paired_ratio`` is the
median of each round's own ratio, steadier than the ratio of the medians when
the machine switches between fast and slow spells.

The peer, when installed, is measured as in PEERS.md section 3: a StateGraph
with ``messages: Annotated[list, add_messages]``, one node that appends the
next turn (as LangChain messages) and loops, ``durability="sync"``; per-step
time is the time between node entries.
"""

from __future__ import annotations

import gc
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    Harness,
    file_size,
    message_graph,
    paired_ratio,
    rotated_rounds,
    step_windows,
)
from ctxflow.model import Conversation, Message, Role, messages_to_anthropic
from ctxflow.persistence import Checkpointer, restore
from ctxflow.stores import SQLiteStore
from ctxflow.tokens import TiktokenCounter, message_measure
from ctxflow.tokens._counters import MessageMeasure

WINDOW = 50
LOAD_RUNS = 30
REPEATS = 4


def _write(
    path: Path, messages: list[Message], measure: MessageMeasure | None = None
) -> tuple[str, list[float]]:
    """Append and checkpoint every message; the session id and the per-step times."""
    store = SQLiteStore(path)
    writer = Checkpointer(store, measure=measure)
    conversation = Conversation(measure=measure)
    chart = {"configuration": ["execution"], "history": {}}
    times = []
    gc.collect()
    gc.disable()
    try:
        for step, message in enumerate(messages, start=1):
            start = time.perf_counter()
            conversation.append(message)
            writer.capture(
                conversation,
                state={"runtime": {"phase": "execution", "step": step}},
                chart=chart,
                phase="execution",
                trigger="messages",
            )
            times.append(time.perf_counter() - start)
    finally:
        gc.enable()
    store.checkpoint_wal()
    store.close()
    return writer.session_id, times


Loads = dict[str, Callable[[], object]]


def _ours(messages: list[Message], folder: Path, stack: ExitStack) -> tuple[dict[str, Any], Loads]:
    path = folder / "ctxflow.db"
    session_id, times = _write(path, messages)
    size = file_size(path)
    # The session is written REPEATS times more, each to a file of its own, and
    # each window's median is taken over every run: the early and late steps of
    # one run are seconds apart, and a slow spell of the machine then falls on
    # one window only (the growth ratio moved by 0.8 between two runs of one day).
    runs = [step_windows(times)]
    for repeat in range(REPEATS):
        runs.append(step_windows(_write(folder / f"ctxflow-repeat-{repeat}.db", messages)[1]))
    cl100k = message_measure(TiktokenCounter("cl100k_base"))
    counted_path = folder / "ctxflow-cl100k.db"
    counted_id, _ = _write(counted_path, messages, cl100k)
    store = stack.enter_context(SQLiteStore(path))
    counted = stack.enter_context(SQLiteStore(counted_path))

    def opened() -> None:
        assert len(restore(store, session_id).conversation) == len(messages)

    def fresh() -> None:
        with SQLiteStore(path) as new:
            assert len(restore(new, session_id).conversation) == len(messages)

    def with_counts() -> None:
        assert len(restore(counted, counted_id, measure=cl100k).conversation) == len(messages)

    def recount() -> None:
        assert len(restore(store, session_id, measure=cl100k).conversation) == len(messages)

    assert (
        restore(counted, counted_id, measure=cl100k).conversation.total_tokens
        == restore(store, session_id, measure=cl100k).conversation.total_tokens
    )
    early = statistics.median(e for e, _ in runs)
    late = statistics.median(lt for _, lt in runs)
    loads = {"load": opened, "load_new": fresh, "load_cl100k": with_counts, "recount": recount}
    return {"early": early, "late": late, "size": size}, loads


def _rotation(h: Harness, loads: Loads, *, runs: int) -> dict[str, list[float]]:
    """Each load's times in ms (:func:`~benchmarks.harness.rotated_rounds`; three rounds in
    a smoke run)."""
    runs = min(runs, 3) if h.smoke else runs
    return rotated_rounds(loads, runs)


def _to_langchain(message: Message) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    if message.role is Role.SYSTEM:
        return [SystemMessage(content=message.text)]
    if message.role is Role.ASSISTANT:
        calls = [{"name": u.name, "args": dict(u.input), "id": u.id} for u in message.tool_uses]
        return [AIMessage(content=message.text, tool_calls=calls)]
    out: list[Any] = [
        ToolMessage(content=r.text, tool_call_id=r.tool_use_id) for r in message.tool_results
    ]
    if message.text or not out:
        out.append(HumanMessage(content=message.text or "(empty)"))
    return out


def _peer(messages: list[Message], folder: Path, stack: ExitStack) -> tuple[dict[str, Any], Loads]:
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    turns = [_to_langchain(m) for m in messages]

    entries: list[float] = []
    graph = message_graph(turns, entries)
    path = folder / "langgraph.db"
    connection = stack.enter_context(closing(sqlite3.connect(path, check_same_thread=False)))
    saver = SqliteSaver(connection)
    app = graph.compile(checkpointer=saver)
    config: Any = {
        "configurable": {"thread_id": "bench"},
        "recursion_limit": len(turns) + 10,
    }
    gc.collect()
    gc.disable()
    try:
        app.invoke({"messages": [], "step": 0}, config, durability="sync")
        entries.append(time.perf_counter())
    finally:
        gc.enable()
    times = [b - a for a, b in itertools.pairwise(entries)]
    size = file_size(path)

    def load() -> None:
        state = app.get_state(config)
        assert state.values["step"] == len(turns)

    def fresh() -> None:
        with closing(sqlite3.connect(path, check_same_thread=False)) as new:
            state = app.copy({"checkpointer": SqliteSaver(new)}).get_state(config)
        assert state.values["step"] == len(turns)

    early, late = step_windows(times)
    return {"early": early, "late": late, "size": size}, {"load": load, "load_new": fresh}


def run(h: Harness) -> None:
    """Measure per-step checkpoint cost, growth, storage and load time."""
    n = h.size(1000, 30)
    messages = h.workload(n)
    raw = len(json.dumps(messages_to_anthropic(messages)).encode())
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        ours, loads = _ours(messages, Path(tmp), stack)
        recount = loads.pop("recount")
        peer = None
        if h.has("langgraph") and h.has("langgraph.checkpoint.sqlite"):
            peer, peer_loads = _peer(messages, Path(tmp), stack)
            loads.update({f"peer_{k}": fn for k, fn in peer_loads.items()})
        times = _rotation(h, loads, runs=LOAD_RUNS)
        times["load_cl100k_recount"] = _rotation(h, {"r": recount}, runs=5)["r"]
    for key, values in times.items():
        if key.startswith("peer_"):
            assert peer is not None
            peer[key.removeprefix("peer_")] = statistics.median(values)
        else:
            ours[key] = statistics.median(values)
    paired = {}
    if peer:
        paired = {
            "load": paired_ratio(times["load"], times["peer_load"]),
            "load_new": paired_ratio(times["load_new"], times["peer_load_new"]),
            "load_cl100k": paired_ratio(times["load_cl100k"], times["peer_load"]),
        }
    name = "langgraph SqliteSaver" if peer else None
    note = "" if peer else "peer not installed"

    def record(metric: str, key: str, unit: str, **extra: Any) -> None:
        h.record(
            metric,
            ours[key],
            unit,
            peer=name,
            peer_value=peer[key] if peer else None,
            note=note,
            **extra,
        )

    record("checkpoints.step_ms@10", "early", "ms", window=WINDOW)
    record(f"checkpoints.step_ms@{n}", "late", "ms", window=WINDOW)
    ours["growth"] = ours["late"] / ours["early"]
    if peer:
        peer["growth"] = peer["late"] / peer["early"]
    record("checkpoints.step_growth", "growth", "x", target=1.5, steps=n)
    ours["storage"] = ours["size"] / raw
    if peer:
        peer["storage"] = peer["size"] / raw
    record("checkpoints.storage_vs_raw", "storage", "x", target=1.0, raw_bytes=raw)
    record("checkpoints.storage_bytes", "size", "bytes", steps=n)
    rounds = {"rounds": h.size(LOAD_RUNS, 3)}
    for key, metric, store in (
        ("load", "checkpoints.load_latest_ms", "open"),
        ("load_new", "checkpoints.load_latest_new_connection_ms", "new"),
    ):
        extra = {"paired_ratio": paired[key]} if key in paired else {}
        record(metric, key, "ms", messages=n, store=store, **rounds, **extra)
        if extra:
            print(f"  {metric} paired ratio {extra['paired_ratio']}", flush=True)
    for key in ("load_cl100k", "load_cl100k_recount"):
        extra = {"paired_ratio": paired[key]} if key in paired else {}
        h.record(
            f"checkpoints.{key.replace('load', 'load_latest')}_ms",
            ours[key],
            "ms",
            peer=name,
            peer_value=peer["load"] if peer else None,
            note="peer: get_state, which counts no tokens" if peer else note,
            messages=n,
            store="open",
            **extra,
        )
