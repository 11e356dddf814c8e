"""A long agent session: per-turn cost, memory, storage and reopen time as the log grows.

On demand: ``python -m benchmarks --only long`` (part of ``make bench``) runs
1k, 2k, 10k and 20k messages; ``CTXFLOW_LONG_SIZES=1000,100000,1000000`` asks
for other sizes (the 1,000,000-message session takes about an hour).

Each size runs in its own Python process, so its peak RSS is its own. The
session is synthetic and deterministic: tool rounds over code and logs (an
assistant turn with a tool call, then its result of 150 to 1,500 characters,
no two alike), a reflection every 10 steps (``reflect``, an assistant message
stating a decision, so semantic memory fills to its limit, a user nudge,
``execute``), driven the way ``ctxflow run`` drives a turn: ask for
the window, add the turn's messages, send ``step``. The engine has its
defaults (chart, ladder, cl100k counting, checkpoint policy) with a 32,000
token budget and an embedded SQLite store.

Reported per size: the per-turn median, p99 and mean over the first and the
last tenth of the turns; peak RSS of the session (``rss_session_mib``) and
with the reopens after it (``rss_mib``: a reopen holds a second copy); the
store's bytes (database, WAL) against the raw JSON of the messages; the time to reopen the latest
checkpoint into a new engine; the share of the run spent in garbage
collection; the memory tiers' item counts at the end. Every 50th window is
checked against the budget and for tool pairing.

The peer: LangGraph's ``SqliteSaver`` holds a ``MessagesState`` graph's
checkpoints at the sizes it can run in the time (up to 2,000 messages: each
invoke writes the whole history again, so 10,000 take it a quarter of an
hour); its store ÷ raw and per-step figures are reported beside ours.
"""

from __future__ import annotations

import gc
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Harness

_WORDS = (
    "def",
    "class",
    "return",
    "import",
    "self",
    "value",
    "result",
    "error",
    "assert",
    "test",
    "config",
    "path",
    "parser",
    "token",
    "window",
    "budget",
    "message",
    "handler",
    "request",
    "response",
    "buffer",
    "index",
    "cache",
    "store",
    "session",
    "record",
    "layer",
    "memory",
    "state",
    "event",
    "chart",
    "phase",
    "item",
    "count",
)
_TOOLS = ("read_file", "run_tests", "grep", "edit_file", "list_dir")


def _line(rng: random.Random, kind: int) -> str:
    words = rng.choices(_WORDS, k=rng.randint(3, 9))
    if kind == 0:
        return f"    {words[0]}_{rng.randint(0, 99999)} = {'.'.join(words[1:])}()"
    if kind == 1:
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d} INFO {' '.join(words)}"
    return f"tests/test_{words[0]}.py::{words[1]}_{rng.randint(0, 9999)} PASSED"


def _result_text(rng: random.Random, size: int) -> str:
    kind = rng.randint(0, 2)
    out: list[str] = []
    total = 0
    while total < size:
        line = _line(rng, kind)
        out.append(line)
        total += len(line) + 1
    return "\n".join(out)


def session_messages(step: int, rng: random.Random) -> list[Any]:
    """The two messages of tool round ``step``: a call and its result."""
    from ctxflow.model import Message, Role, TextBlock, ToolResultBlock, ToolUseBlock

    tool = _TOOLS[step % len(_TOOLS)]
    call_id = f"call_{step}"
    path = f"src/module_{rng.randint(0, 400)}.py"
    call = Message(
        role=Role.ASSISTANT,
        content=(
            TextBlock(text=f"Step {step}: {tool} on {path} to check the {rng.choice(_WORDS)}."),
            ToolUseBlock(id=call_id, name=tool, input={"path": path}),
        ),
    )
    result = Message(
        role=Role.USER,
        content=(
            ToolResultBlock(tool_use_id=call_id, content=_result_text(rng, rng.randint(150, 1500))),
        ),
    )
    return [call, result]


def _raw_bytes(messages: list[Any]) -> int:
    from ctxflow.persistence._bodies import message_to_plain

    return sum(len(json.dumps(message_to_plain(m), ensure_ascii=False)) for m in messages)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check_window(window: Any, budget: int) -> None:
    assert window.tokens <= budget, (window.tokens, budget)
    uses = {b.id for m in window.messages for b in m.tool_uses}
    for m in window.messages:
        for b in m.tool_results:
            assert b.tool_use_id in uses, b.tool_use_id


def child(n_messages: int) -> dict[str, Any]:
    """Run one session of ``n_messages`` messages in this process; return its figures."""
    from ctxflow.engine import Engine
    from ctxflow.memory import MemoryLimits
    from ctxflow.model import Message
    from ctxflow.stores import SQLiteStore

    budget = 32_000
    rng = random.Random(n_messages)
    gc_time = [0.0]
    started: list[float] = []

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            gc_time[0] += time.perf_counter() - started.pop()

    gc.callbacks.append(on_gc)
    folder = tempfile.mkdtemp(prefix="ctxflow-long-")
    path = Path(folder) / "session.db"
    store = SQLiteStore(path)
    engine = Engine(store=store, budget=budget)
    wall = time.perf_counter()
    engine.send("start", task="Fix the failing parser tests in src/ and keep the suite green.")
    engine.add_messages([Message.user("Fix the failing parser tests.")])
    engine.send("plan_ready")
    raw = _raw_bytes(list(engine.conversation.messages))
    per_turn: list[float] = []
    step = 0
    checked = 0
    while len(engine.conversation) < n_messages:
        step += 1
        began = time.perf_counter()
        window = engine.window()
        batch = session_messages(step, rng)
        engine.add_messages(batch)
        engine.send("step")
        if step % 10 == 0:
            engine.send("reflect")
            engine.window()
            # A decision per reflection (one in four restating an earlier one): semantic
            # memory fills, merges and retires, and must stay within its limits.
            module = rng.randint(0, step // 40 + 3) if step % 40 == 0 else step
            note = Message.assistant(
                f"Reflection after step {step}: the tests still fail.\n"
                f"Decision: keep the fix for module {module} in src/module_{module}.py."
            )
            nudge = Message.user("Carry on with the plan.")
            engine.add_messages([note, nudge])
            batch += [note, nudge]
            engine.send("execute")
        per_turn.append((time.perf_counter() - began) * 1000)
        raw += _raw_bytes(batch)
        if step % 50 == 0:
            _check_window(window, budget)
            checked += 1
    engine.checkpoint("end")
    total_s = time.perf_counter() - wall
    session_id = engine.session_id
    state = engine.state
    limits = MemoryLimits()
    tiers = {
        "episodic": len(state.memory.episodic),
        "semantic": len(state.memory.semantic),
        "procedural": len(state.memory.procedural),
        "limits": [limits.episodes, limits.facts, limits.procedures],
        "memory_tokens": sum(
            i.tokens
            for i in (*state.memory.episodic, *state.memory.semantic, *state.memory.procedural)
        ),
    }
    assert tiers["episodic"] <= limits.episodes and tiers["semantic"] <= limits.facts
    store.close()
    del engine, window
    gc.collect()
    session_rss = _rss_mib()  # the peak of the session itself, before any reopen
    stored = sum(p.stat().st_size for p in Path(folder).iterdir())
    reopen = []
    for _ in range(3 if n_messages < 500_000 else 1):  # a million-message reopen takes a while
        again = SQLiteStore(path)
        began = time.perf_counter()
        opened = Engine.from_checkpoint(store=again, session_id=session_id, budget=budget)
        opened.window()
        reopen.append((time.perf_counter() - began) * 1000)
        assert len(opened.conversation) >= n_messages
        again.close()
        del opened
        gc.collect()  # the engine dropped holds cycles: not the next reopen's memory
    shutil.rmtree(folder, ignore_errors=True)  # measured: the store goes
    tenth = max(1, len(per_turn) // 10)
    first, last = per_turn[:tenth], per_turn[-tenth:]
    return {
        "messages": n_messages,
        "turns": len(per_turn),
        "median_ms": statistics.median(per_turn),
        "p99_ms": sorted(per_turn)[int(0.99 * (len(per_turn) - 1))],
        "first_mean_ms": statistics.fmean(first),
        "last_mean_ms": statistics.fmean(last),
        "last_median_ms": statistics.median(last),
        "last_p99_ms": sorted(last)[int(0.99 * (len(last) - 1))],
        "rss_session_mib": session_rss,
        "rss_mib": _rss_mib(),
        "store_bytes": stored,
        "raw_bytes": raw,
        "store_over_raw": stored / raw,
        "reopen_ms": statistics.median(reopen),
        "gc_share": gc_time[0] / total_s,
        "total_s": total_s,
        "tiers": tiers,
        "windows_checked": checked,
    }


def _peer_child(n_messages: int) -> dict[str, Any]:
    """LangGraph's SqliteSaver over a MessagesState graph, one step per tool round."""
    import sqlite3

    from langchain_core.messages import AIMessage, ToolMessage
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import START, MessagesState, StateGraph

    rng = random.Random(n_messages)
    folder = tempfile.mkdtemp(prefix="ctxflow-long-peer-")
    path = Path(folder) / "peer.db"
    saver = SqliteSaver(sqlite3.connect(path, check_same_thread=False))
    graph = StateGraph(MessagesState)
    graph.add_node("agent", lambda state: {})
    graph.add_edge(START, "agent")
    app = graph.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "long"}}
    per_turn = []
    raw = 0
    step = 0
    count = 0
    while count < n_messages:
        step += 1
        batch = session_messages(step, rng)
        raw += _raw_bytes(batch)
        call, result = batch
        use = call.tool_uses[0]
        ai = AIMessage(
            content=call.text,
            tool_calls=[{"id": use.id, "name": use.name, "args": dict(use.input)}],
        )
        tool = ToolMessage(content=result.tool_results[0].text, tool_call_id=use.id)
        began = time.perf_counter()
        app.invoke({"messages": [ai, tool]}, config)
        per_turn.append((time.perf_counter() - began) * 1000)
        count += 2
    tenth = max(1, len(per_turn) // 10)
    stored = sum(p.stat().st_size for p in Path(folder).iterdir())
    saver.conn.close()
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "messages": n_messages,
        "median_ms": statistics.median(per_turn),
        "last_mean_ms": statistics.fmean(per_turn[-tenth:]),
        "store_over_raw": stored / raw,
        "rss_mib": _rss_mib(),
    }


def _spawn(kind: str, n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_long", kind, str(n)],
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        tail = "\n".join(out.stderr.strip().splitlines()[-12:])
        raise RuntimeError(f"the {kind} session of {n} messages failed:\n{tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(h: Harness) -> None:
    sizes = [
        int(s) for s in os.environ.get("CTXFLOW_LONG_SIZES", "1000,2000,10000,20000").split(",")
    ]
    if h.smoke:
        sizes = [200, 400]
    figures = {n: _spawn("ours", n) for n in sizes}
    for n, f in figures.items():
        h.record(
            f"long.{n}.last_mean_ms",
            f["last_mean_ms"],
            "ms",
            note=f"per turn, mean over the last tenth ({f['turns']} turns)",
            **{k: v for k, v in f.items() if k != "last_mean_ms"},
        )
    base = figures[sizes[0]]
    for n, f in figures.items():
        h.record(
            f"long.{n}.growth",
            f["last_mean_ms"] / base["last_mean_ms"],
            "x",
            note=f"last-tenth mean against the {sizes[0]}-message session",
        )
    # find_spec of a dotted name imports its parent: ask for the package first.
    if not h.smoke and h.has("langgraph") and h.has("langgraph.checkpoint.sqlite"):
        # Each invoke rewrites the whole history: 10k messages take the peer a quarter hour.
        for n in [s for s in sizes if s <= 2_000]:
            peer = _spawn("peer", n)
            h.record(
                f"long.{n}.peer_last_mean_ms",
                peer["last_mean_ms"],
                "ms",
                peer="LangGraph SqliteSaver (MessagesState, one invoke per round)",
                **peer,
            )


if __name__ == "__main__":
    kind, size = sys.argv[1], int(sys.argv[2])
    result = child(size) if kind == "ours" else _peer_child(size)
    print(json.dumps(result))
