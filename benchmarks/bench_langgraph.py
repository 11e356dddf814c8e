"""LangGraph and LangChain on ctxflow, beside the peers, in one run.

**The checkpointer.** The graph is the one of PEERS.md section 3 (and ``bench_checkpoints``): a
StateGraph with ``messages: Annotated[list, add_messages]`` and a step counter,
one node that appends the next turn of a corpus conversation (as LangChain
messages) and loops, ``durability="sync"``, so every step is one checkpoint
and one set of writes. The same graph runs on ``CtxflowSaver`` over a
``SQLiteStore`` file and on ``SqliteSaver`` over a SQLite file, for 1,000 and
3,000 steps.

Recorded per length: the per-step time of the saver itself (its ``put_writes``
and ``put`` calls of a step; target: at 1,000 steps at most a tenth of the
peer's) and of the whole step (time between node entries, which adds
LangGraph's own work, the same for both), each the median of steps 6-55 and
of the last 50; the storage at rest (WAL folded in) against the
conversation's raw JSON (target: at most 2x); and the time to load the latest
state (``graph.get_state`` on the open saver; target: paired ratio at most
1.0). Loads alternate one call of each side per round over ``LOAD_ROUNDS``
rounds; ``paired_ratio`` is the median of each round's own ratio.

``SqliteSaver`` stores every channel value whole in every checkpoint, so its
file grows with the square of the steps (about 0.5 GB at 1,000 corpus steps);
at 3,000 steps it would need several GB, so the peer runs at 1,000 steps only
unless ``CTXFLOW_BENCH_PEER_STEPS`` raises the limit.

**The middleware.** Corpus conversations of 40 messages or more are replayed:
at every assistant turn, what the model would be sent under a 4,000-token
budget by ``CtxflowMiddleware``, by ``trim_messages`` (last messages, starting
on a human one, the system message kept) and by LangChain's
``SummarizationMiddleware`` (triggered at the budget, keeping half of it; its
summarizer a stand-in that keeps the first line of every human message). A
fact is planted in a human turn after the second tool round. Recorded per
approach: the share of calls valid for both APIs (roles alternate from a user
message, every tool result answers the call before it), the median share of
the budget used and the share of calls over it (both counted with LangChain's
``count_tokens_approximately``, the same for all), and the share of
conversations whose last call still holds the fact.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import sqlite3
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
from ctxflow.model import Message, messages_to_anthropic

WINDOW = 50
LOAD_ROUNDS = 15
PEER_STEPS = int(os.environ.get("CTXFLOW_BENCH_PEER_STEPS", "1000"))

Load = Callable[[], None]


def _run(
    turns: list[list[Any]], saver: Any, path: Path, settle: Callable[[], object]
) -> tuple[dict[str, float], Load]:
    """Run the graph on ``saver``: per-step times (the whole step, and the saver's own
    ``put`` + ``put_writes``), storage at rest (after ``settle`` folds the WAL in), and
    the load of its latest state."""
    spent: list[tuple[bool, float]] = []

    def timed(name: str) -> None:
        method = getattr(saver, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent.append((name == "put", time.perf_counter() - start))

        setattr(saver, name, call)

    timed("put")
    timed("put_writes")
    entries: list[float] = []
    app = message_graph(turns, entries).compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": "bench"}, "recursion_limit": len(turns) + 10}
    gc.collect()
    gc.disable()
    try:
        app.invoke({"messages": [], "step": 0}, config, durability="sync")
        entries.append(time.perf_counter())
    finally:
        gc.enable()
    early, late = step_windows([b - a for a, b in itertools.pairwise(entries)])
    # The saver's time per step: the writes of a step and the checkpoint after them.
    per_step: list[float] = []
    pending = 0.0
    for is_put, seconds in spent:
        pending += seconds
        if is_put:
            per_step.append(pending)
            pending = 0.0
    saver_early, saver_late = step_windows(per_step[1:])
    settle()
    size = file_size(path)
    expected = sum(len(t) for t in turns)

    def load() -> None:
        state = app.get_state(config)
        assert state.values["step"] == len(turns)
        assert len(state.values["messages"]) == expected

    return {
        "early": early,
        "late": late,
        "saver_early": saver_early,
        "saver_late": saver_late,
        "size": size,
    }, load


def _checkpointer(h: Harness, n: int) -> None:
    """One length: CtxflowSaver (and SqliteSaver, up to PEER_STEPS) on the same turns."""
    from ctxflow.integrations.langchain import from_ctxflow
    from ctxflow.integrations.langgraph import CtxflowSaver
    from ctxflow.stores import SQLiteStore

    messages: list[Message] = h.workload(n)
    raw = len(json.dumps(messages_to_anthropic(messages)).encode())
    turns = [from_ctxflow([m]) for m in messages]
    peer_runs = h.has("langgraph.checkpoint.sqlite") and n <= PEER_STEPS
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        path = folder / "ctxflow.db"
        store = stack.enter_context(closing(SQLiteStore(path)))
        ours, load = _run(turns, CtxflowSaver(store), path, store.checkpoint_wal)
        loads = {"ours": load}
        peer: dict[str, float] | None = None
        if peer_runs:
            from langgraph.checkpoint.sqlite import SqliteSaver

            peer_path = folder / "langgraph.db"
            connection = stack.enter_context(
                closing(sqlite3.connect(peer_path, check_same_thread=False))
            )
            peer, loads["peer"] = _run(
                turns,
                SqliteSaver(connection),
                peer_path,
                lambda: connection.execute("PRAGMA wal_checkpoint(TRUNCATE)"),
            )
        times = rotated_rounds(loads, h.size(LOAD_ROUNDS, 3))
    ours["load"] = statistics.median(times["ours"])
    if peer is not None:
        peer["load"] = statistics.median(times["peer"])
    name = "langgraph SqliteSaver" if peer else None
    note = "" if peer else f"peer not run (SqliteSaver runs up to {PEER_STEPS} steps)"

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

    record(f"langgraph.saver_step_ms@10.{n}", "saver_early", "ms", window=WINDOW, steps=n)
    record(f"langgraph.saver_step_ms@{n}", "saver_late", "ms", window=WINDOW, steps=n, target=0.1)
    record(f"langgraph.step_ms@10.{n}", "early", "ms", window=WINDOW, steps=n)
    record(f"langgraph.step_ms@{n}", "late", "ms", window=WINDOW, steps=n)
    ours["storage"] = ours["size"] / raw
    if peer:
        peer["storage"] = peer["size"] / raw
    record(f"langgraph.storage_vs_raw@{n}", "storage", "x", target=2.0, raw_bytes=raw)
    extra: dict[str, Any] = {"rounds": h.size(LOAD_ROUNDS, 3), "messages": n}
    if peer:
        extra["paired_ratio"] = paired_ratio(times["ours"], times["peer"])
    record(f"langgraph.load_latest_ms@{n}", "load", "ms", **extra)


def run(h: Harness) -> None:
    """The checkpointer at 1,000 and 3,000 steps, and the middleware, against the peers."""
    if not (h.has("langgraph") and h.has("langchain.agents")):
        h.record("langgraph.step_ms@1000", 0.0, "ms", note="langgraph or langchain not installed")
        return
    _middleware(h)
    for n in (h.size(1000, 30), h.size(3000, 60)):
        _checkpointer(h, n)


# -- the middleware against trim_messages and LangChain's summarization middleware --

BUDGET = 4000
FACT = "For the record, the deployment key is KEY-{n:04d}-ZEBRA."


def _conversations(h: Harness, count: int) -> list[list[Any]]:
    """Corpus conversations of 40 messages or more as LangChain messages, each with a fact
    planted in a human turn after its second tool round."""
    from langchain_core.messages import HumanMessage, ToolMessage

    from ctxflow.integrations.langchain import from_ctxflow

    found: list[list[Any]] = []
    for transcript in h.corpus():
        if len(transcript.messages) < 40:
            continue
        messages = from_ctxflow(transcript.messages)
        rounds = [i for i, m in enumerate(messages) if isinstance(m, ToolMessage)]
        ends = [i for i in rounds if i + 1 < len(messages) and messages[i + 1].type == "ai"]
        if len(ends) < 3:
            continue
        at = ends[1] + 1
        fact = HumanMessage(content=FACT.format(n=len(found)))
        found.append([*messages[:at], fact, *messages[at:]])
        if len(found) == count:
            break
    return found


class _Extractive:
    """A stand-in summarizer model for SummarizationMiddleware: the first line of every
    human message it is asked to summarize (1,500 characters at most), so what it keeps
    is what a summary keeps at best."""

    @staticmethod
    def model() -> Any:
        from langchain_core.language_models import BaseChatModel
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration, ChatResult

        class Extractive(BaseChatModel):
            @property
            def _llm_type(self) -> str:
                return "extractive"

            def _generate(self, messages: Any, stop: Any = None, **kw: Any) -> ChatResult:
                text = str(messages[-1].content)
                lines = [
                    line.split(":", 1)[1].strip().splitlines()[0]
                    for line in text.split("\nHuman")[1:]
                    if ":" in line and line.split(":", 1)[1].strip()
                ]
                summary = "\n".join(lines)[:1500] or "(nothing)"
                return ChatResult(generations=[ChatGeneration(message=AIMessage(content=summary))])

        return Extractive()


def _requests(messages: list[Any], approach: str) -> list[list[Any]]:
    """What each model call of a replayed conversation is sent, by approach."""
    from langchain.agents.middleware import ModelRequest, SummarizationMiddleware
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import SystemMessage
    from langchain_core.messages.utils import count_tokens_approximately, trim_messages

    from ctxflow.integrations.langchain import CtxflowMiddleware

    system = messages[0] if isinstance(messages[0], SystemMessage) else None
    rest = messages[1:] if system is not None else messages
    calls = [i for i, m in enumerate(rest) if m.type == "ai"]
    sent: list[list[Any]] = []
    model = GenericFakeChatModel(messages=iter(()))
    if approach == "ctxflow":
        middleware = CtxflowMiddleware(budget=BUDGET)
        for at in calls:
            request = ModelRequest(model=model, messages=rest[:at], system_message=system)
            middleware.wrap_model_call(
                request,
                lambda r: sent.append([r.system_message, *r.messages]),  # type: ignore[arg-type, return-value]
            )
    elif approach == "trim_messages":
        for at in calls:
            sent.append(
                trim_messages(
                    [*([system] if system else []), *rest[:at]],
                    max_tokens=BUDGET,
                    token_counter=count_tokens_approximately,
                    strategy="last",
                    start_on="human",
                    end_on=("human", "tool"),
                    include_system=True,
                )
            )
    else:
        summarizing = SummarizationMiddleware(
            model=_Extractive.model(),
            trigger=("tokens", BUDGET),
            keep=("tokens", BUDGET // 2),
        )
        state: list[Any] = []
        taken = 0
        for at in calls:
            state.extend(rest[taken:at])
            taken = at
            update = summarizing.before_model({"messages": state}, None)  # type: ignore[arg-type]
            if update:
                state = [m for m in update["messages"] if m.type != "remove"]
            sent.append([*([system] if system else []), *state])
    return sent


def _judge(requests: list[list[Any]], fact: str) -> dict[str, float]:
    """Validity, utilisation, over-budget calls and whether the last call holds the fact."""
    from langchain_core.messages.utils import count_tokens_approximately

    from ctxflow.integrations.langchain import to_ctxflow
    from ctxflow.model import check

    valid = over = 0
    used: list[float] = []
    for request in requests:
        body = [m for m in request if m is not None and m.type != "system"]
        converted = to_ctxflow(body)
        ok = bool(converted) and converted[0].role.value == "user"
        ok = ok and check(converted, api="anthropic").ok and check(converted, api="openai").ok
        valid += ok
        tokens = count_tokens_approximately([m for m in request if m is not None])
        used.append(tokens / BUDGET)
        over += tokens > BUDGET
    last = " ".join(str(m.content) for m in requests[-1] if m is not None)
    return {
        "valid": valid / len(requests),
        "utilisation": statistics.median(used),
        "over": over / len(requests),
        "fact": float(fact in last),
    }


def _middleware(h: Harness) -> None:
    """The three ways of fitting a conversation into a budget, on the same replays."""
    conversations = _conversations(h, h.size(8, 2))
    approaches = ("ctxflow", "trim_messages", "summarization")
    results: dict[str, list[dict[str, float]]] = {a: [] for a in approaches}
    for n, messages in enumerate(conversations):
        fact = FACT.format(n=n).split("is ", 1)[1].rstrip(".")
        for approach in approaches:
            results[approach].append(_judge(_requests(messages, approach), fact))
    peers = {"trim_messages": "langchain trim_messages", "summarization": "SummarizationMiddleware"}
    for key, unit in (
        ("valid", "share"),
        ("utilisation", "x"),
        ("over", "share"),
        ("fact", "share"),
    ):
        ours = statistics.mean(r[key] for r in results["ctxflow"])
        for approach, name in peers.items():
            peer = statistics.mean(r[key] for r in results[approach])
            h.record(
                f"langchain.{key}.vs_{approach}",
                ours,
                unit,
                peer=name,
                peer_value=peer,
                conversations=len(conversations),
                budget=BUDGET,
                counted="count_tokens_approximately",
            )
