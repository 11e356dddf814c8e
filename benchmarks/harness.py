"""The benchmark harness: medians of repeated runs, peers measured in the same run.

Each ``benchmarks/bench_<topic>.py`` module defines ``run(h: Harness) -> None``
and records named metrics through ``h``. Times are medians of ``runs``
repetitions after a warm-up, with the garbage collector off while timing
(the machine is noisy; a single timing means nothing). A metric measured
against a peer records the peer's median from the same run and the ratio.

``--smoke`` shrinks every workload and repetition count so CI can check that
the harness still runs; its numbers are not for quoting.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import platform
import statistics
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from ctxflow.model import Message, Transcript
from ctxflow.testing import concatenate, load_corpus

__all__ = ["Harness"]


class Harness:
    """Times callables and collects named metrics into one JSON document."""

    def __init__(self, *, smoke: bool = False) -> None:
        self.smoke = smoke
        self.metrics: dict[str, dict[str, Any]] = {}

    # -- workloads -----------------------------------------------------------

    def size(self, full: int, smoke: int) -> int:
        """``smoke`` in a smoke run, ``full`` otherwise."""
        return smoke if self.smoke else full

    def corpus(self) -> list[Transcript]:
        """Every transcript of the shared corpus."""
        return _corpus()

    def workload(self, n_messages: int) -> list[Message]:
        """A valid conversation of ``n_messages`` concatenated from the corpus."""
        return concatenate(self.corpus(), n_messages)

    @staticmethod
    def has(module: str) -> bool:
        """True when ``module`` can be imported (peers live in the bench environment)."""
        return importlib.util.find_spec(module) is not None

    # -- timing --------------------------------------------------------------

    def median_ms(
        self,
        fn: Callable[[], object],
        *,
        runs: int = 7,
        warmup: int = 1,
        setup: Callable[[], object] | None = None,
        repeat: int = 1,
    ) -> float:
        """The median wall time of ``fn`` in milliseconds (``setup`` runs untimed before each).

        ``repeat`` calls ``fn`` that many times per timed run and divides: for
        sub-millisecond calls, so one run is not dominated by a cold cache
        after the collection that precedes it. Give a peer the same ``repeat``.
        """
        runs = min(runs, 3) if self.smoke else runs
        for _ in range(warmup):
            if setup:
                setup()
            fn()
        return statistics.median(_timed(fn, setup, repeat) for _ in range(runs))

    def paired_ms(
        self,
        ours: Callable[[], object],
        peer: Callable[[], object],
        *,
        runs: int = 7,
        setup: Callable[[], object] | None = None,
        peer_setup: Callable[[], object] | None = None,
    ) -> tuple[float, float]:
        """The median ms of ``ours`` and of ``peer``, their runs taken in turn.

        On a noisy machine a slow spell then hits both sides alike, so the
        ratio of the two medians means more than that of two separate series.
        """
        runs = min(runs, 3) if self.smoke else runs
        for fn, before in ((ours, setup), (peer, peer_setup)):  # warm-up
            if before:
                before()
            fn()
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(runs):
            times[0].append(_timed(ours, setup))
            times[1].append(_timed(peer, peer_setup))
        return statistics.median(times[0]), statistics.median(times[1])

    # -- recording -----------------------------------------------------------

    def record(
        self,
        name: str,
        value: float,
        unit: str,
        *,
        peer: str | None = None,
        peer_value: float | None = None,
        note: str = "",
        **extra: Any,
    ) -> None:
        """Record metric ``name``; with a peer, also its value and ``ratio`` (ours / peer)."""
        entry: dict[str, Any] = {"median": round(value, 4), "unit": unit}
        if peer is not None and peer_value is not None:
            entry["peer"] = peer
            entry["peer_median"] = round(peer_value, 4)
            entry["ratio"] = round(value / peer_value, 4) if peer_value else None
        if note:
            entry["note"] = note
        entry.update(extra)
        self.metrics[name] = entry
        shown = f"{name}: {value:,.3f} {unit}"
        if "ratio" in entry:
            shown += f"  ({peer} {peer_value:,.3f} {unit}, ratio {entry['ratio']})"
        print(shown, flush=True)

    def document(self) -> dict[str, Any]:
        """The results as one JSON-able document."""
        return {
            "smoke": self.smoke,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "metrics": self.metrics,
        }

    def write(self, path: Path) -> None:
        """Write the results document to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.document(), indent=2) + "\n")


def _timed(fn: Callable[[], object], setup: Callable[[], object] | None, repeat: int = 1) -> float:
    """One timed run of ``fn`` (``repeat`` calls) in ms per call: setup untimed, GC off."""
    if setup:
        setup()
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - start) * 1000 / repeat
    finally:
        gc.enable()


@cache
def _corpus() -> list[Transcript]:
    return load_corpus()


# -- paired timings, shared by the benchmarks that time a load beside a peer's ------------


def rotated_rounds(loads: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Each load's times in ms, one call of each per round, after one untimed call each.

    Each round starts one load further on: the call after another side's large
    free (its heap shrinks, the next call faults its pages back in) is each
    load's in turn, not always the first one's. The collector runs before each
    call and is off during it.
    """
    times: dict[str, list[float]] = {name: [] for name in loads}
    for fn in loads.values():
        fn()
    order = list(loads.items())
    for round_ in range(rounds):
        shift = round_ % len(order)
        for name, fn in order[shift:] + order[:shift]:
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1000)
            finally:
                gc.enable()
    return times


def paired_ratio(ours: list[float], peer: list[float]) -> float:
    """The median of the rounds' own ratios (a round's two calls share the machine's mood)."""
    return round(statistics.median(a / b for a, b in zip(ours, peer, strict=True)), 4)


def step_windows(times: list[float], window: int = 50) -> tuple[float, float]:
    """Median ms (of times in seconds) over steps 6 to 5 + ``window`` and over the last
    ``window`` steps. Fifty a side: with ten, one slow spell of a noisy machine moved
    a growth ratio by half."""
    return (
        statistics.median(times[5 : 5 + window]) * 1000,
        statistics.median(times[-window:]) * 1000,
    )


def file_size(path: Path) -> int:
    """Bytes of a SQLite file with its journal files (``path*``)."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def message_graph(turns: list[list[Any]], entries: list[float]) -> Any:
    """A LangGraph graph with a messages channel that loops over ``turns`` (each node run
    appends the next turn and records when it ran in ``entries``); not compiled."""
    from typing import Annotated, TypedDict

    from langgraph.graph import END, StateGraph
    from langgraph.graph.message import add_messages

    # The functional form: string annotations could not see the local add_messages.
    State = TypedDict("State", {"messages": Annotated[list[Any], add_messages], "step": int})  # type: ignore[misc]  # noqa: UP013

    def node(state: dict[str, Any]) -> dict[str, Any]:
        entries.append(time.perf_counter())
        step = state["step"]
        return {"messages": turns[step], "step": step + 1}

    def route(state: dict[str, Any]) -> str:
        return "node" if state["step"] < len(turns) else END

    graph = StateGraph(State)
    graph.add_node("node", node)
    graph.set_entry_point("node")
    graph.add_conditional_edges("node", route)
    return graph
