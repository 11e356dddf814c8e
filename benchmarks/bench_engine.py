"""Engine overhead per step vs a bare python-statemachine chart, and a full corpus replay.

``engine.step_overhead_ms`` times a ``step`` event on the Engine with its real
defaults (budget allocation, the compression guard evaluated but not firing,
the checkpoint policy consulted but not firing) against the same internal event sent to the bare
python-statemachine class of the same chart document, in the same run, the two
timed in turn.
``engine.replay_*`` feeds the longest corpus conversation into an engine,
one ``step`` per assistant turn, and reports the per-turn median and the
whole replay.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Harness
from ctxflow.engine import Engine, chart_path
from ctxflow.model import Message, Role
from ctxflow.persistence import CheckpointPolicy
from ctxflow.stores import SQLiteStore
from ctxflow.testing import FixedCounter


class _Model:
    """The bare chart's model: the callback names the document uses, doing nothing."""

    def consolidate_memory(self) -> None:
        """No-op."""

    def restore_last_good(self) -> None:
        """No-op."""


def _engine(**kwargs: Any) -> Engine:
    engine = Engine(**kwargs)
    engine.send("start", task="benchmark")
    engine.send("plan_ready")
    return engine


def run(h: Harness) -> None:
    from statemachine.io import load

    n = h.size(2000, 50)
    bare_cls = load(str(chart_path("agent_loop")))
    bare_cls.catch_errors_as_events = False
    bare = bare_cls(model=_Model())
    bare.send("start")
    bare.send("plan_ready")

    def bare_steps() -> None:
        for _ in range(n):
            bare.send("step")

    engine = _engine(counter=FixedCounter())

    def engine_steps() -> None:
        for _ in range(n):
            engine.send("step")

    # Taken in turn, so a slow spell of the machine falls on both alike.
    ours_ms, bare_ms = (ms / n for ms in h.paired_ms(engine_steps, bare_steps, runs=15))
    h.record(
        "engine.step_overhead_ms",
        ours_ms,
        "ms",
        peer="python-statemachine internal event (same chart)",
        peer_value=bare_ms,
        note="guard not firing, no checkpoint; target ratio <= 2",
    )

    transcript = max(h.corpus(), key=lambda t: len(t.messages))
    messages = list(transcript.messages)
    if h.smoke:
        messages = messages[:40]

    def turns() -> list[list[Message]]:
        out: list[list[Message]] = []
        current: list[Message] = []
        for message in messages:
            current.append(message)
            if message.role is Role.ASSISTANT:
                out.append(current)
                current = []
        if current:
            out.append(current)
        return out

    grouped = turns()

    def replay() -> list[float]:
        replayer = _engine()
        per_turn = []
        for batch in grouped:
            start = time.perf_counter()
            replayer.add_messages(batch)
            replayer.send("step")
            per_turn.append((time.perf_counter() - start) * 1000)
        return per_turn

    per_turn = replay()
    h.record(
        "engine.replay_turn_ms",
        statistics.median(per_turn),
        "ms",
        note=f"median per assistant turn (add messages + step), {transcript.id}, "
        f"{len(messages)} messages, {len(grouped)} turns, cl100k counting included",
    )
    h.record("engine.replay_total_ms", h.median_ms(replay, runs=5), "ms", turns=len(grouped))

    fired: list[int] = []

    def replay_tight() -> None:
        replayer = _engine(budget=8000)
        for batch in grouped:
            replayer.add_messages(batch)
            replayer.send("step")
        fired.append(sum(r.compressed for r in replayer.records))

    h.record(
        "engine.replay_tight_total_ms",
        h.median_ms(replay_tight, runs=5),
        "ms",
        note="same replay with an 8,000-token input budget: the ladder fires on steps",
        compressions=fired[-1],
    )

    with tempfile.TemporaryDirectory() as folder:
        count = iter(range(1_000_000))

        def replay_sqlite() -> None:
            store = SQLiteStore(Path(folder) / f"replay-{next(count)}.db")
            replayer = _engine(store=store, checkpoint_policy=CheckpointPolicy(every_messages=10))
            for batch in grouped:
                replayer.add_messages(batch)
                replayer.send("step")
            store.close()

        h.record(
            "engine.replay_sqlite_total_ms",
            h.median_ms(replay_sqlite, runs=5),
            "ms",
            note="same replay, SQLite store, a checkpoint every 10 messages",
        )
