"""Do replays end with a learned procedure? Counted per source over the corpus.

On demand: ``python -m benchmarks --only procedures`` (part of ``make bench``),
or ``python -m benchmarks.bench_procedures`` for the table alone.

Every corpus conversation, and the bundled ``make run`` transcript, is
replayed the way ``ctxflow run`` replays it (the default chart and engine, a
reflection every 10 steps, an in-memory store) at an input budget of 12,000
tokens. A run counts when the engine's memory at the end holds at least one
learned procedure (one with evidence) whose evidence ids are all ids of the
conversation's messages. Recorded: the count and share per source
(``taubench``, ``sweagent``, ``openhands``, ``miniswe``), over the coding
sources together and over every conversation, and whether the ``make run``
transcript ends with one. A smoke run replays two conversations per source.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from benchmarks.harness import Harness
from ctxflow.engine import Engine
from ctxflow.errors import BudgetExceeded, CtxflowWarning
from ctxflow.layers import LayeredState, Procedure
from ctxflow.model import Transcript
from ctxflow.replay.inputs import RunInput, read_run_input, synthesise_tools
from ctxflow.replay.runner import replay
from ctxflow.stores import MemoryStore

BUDGET = 12_000
MAKE_RUN = Path(__file__).resolve().parents[1] / "examples/transcripts/openhands-ponyc-4588.jsonl"
CODING = ("sweagent", "openhands", "miniswe")


def source_of(transcript: Transcript) -> str:
    """The corpus source a conversation id names (``miniswe-gemini3pro-...`` is ``miniswe``)."""
    return transcript.id.split("-", 1)[0]


def learned_at_the_end(run: RunInput, budget: int = BUDGET) -> list[Procedure]:
    """The learned procedures an engine holds after replaying ``run`` at ``budget``, those
    whose evidence ids all name messages of the conversation; a refused budget gives none."""
    engines: list[Engine] = []

    def factory(state: LayeredState) -> Engine:
        engines.append(Engine(state=state, budget=budget, store=MemoryStore()))
        return engines[-1]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CtxflowWarning)
        try:
            replay(run, engine_factory=factory, reflect_every=10)
        except BudgetExceeded:
            return []
    ids = {m.id for m in run.transcript.messages}
    return [
        p
        for p in engines[-1].state.memory.procedural
        if p.evidence and set(p.evidence) <= ids and p.source in ids
    ]


def corpus_run(transcript: Transcript) -> RunInput:
    """A corpus conversation as ``ctxflow run`` reads a JSONL transcript without tools."""
    return RunInput(
        transcript=transcript,
        tools=synthesise_tools(transcript.messages),
        format="jsonl",
        tools_synthesised=True,
    )


def count(transcripts: Iterable[Transcript], budget: int = BUDGET) -> tuple[Counter[str], ...]:
    """Per source: the conversations replayed and those ending with a learned procedure."""
    runs: Counter[str] = Counter()
    learned: Counter[str] = Counter()
    for transcript in transcripts:
        source = source_of(transcript)
        runs[source] += 1
        learned[source] += bool(learned_at_the_end(corpus_run(transcript), budget))
    return runs, learned


def _smoke(transcripts: list[Transcript]) -> list[Transcript]:
    taken: Counter[str] = Counter()
    chosen = []
    for transcript in transcripts:
        if taken[source_of(transcript)] < 2:
            taken[source_of(transcript)] += 1
            chosen.append(transcript)
    return chosen


def run(h: Harness) -> None:
    """Replay every conversation at 12k and record the shares that end with a procedure."""
    transcripts = h.corpus()
    if h.smoke:
        transcripts = _smoke(transcripts)
    started = time.perf_counter()
    runs, learned = count(transcripts)
    for source in sorted(runs):
        h.record(
            f"procedures.{source}",
            learned[source] / runs[source],
            "share",
            learned=learned[source],
            runs=runs[source],
        )
    coding = sum(learned[s] for s in CODING), sum(runs[s] for s in CODING)
    h.record("procedures.coding", coding[0] / max(coding[1], 1), "share", learned=coding[0])
    total = sum(learned.values()), sum(runs.values())
    h.record("procedures.all", total[0] / max(total[1], 1), "share", learned=total[0])
    make_run = learned_at_the_end(read_run_input(str(MAKE_RUN)))
    h.record("procedures.make_run", len(make_run), "procedures")
    h.record("procedures.replay_seconds", time.perf_counter() - started, "s")


def main() -> int:
    """Print the per-source table (``python -m benchmarks.bench_procedures [--smoke]``)."""
    harness = Harness(smoke="--smoke" in sys.argv[1:])
    run(harness)
    return 0


if __name__ == "__main__":
    sys.exit(main())
