"""``ctxflow run``: replay a recorded agent conversation through the engine.

Exit status: 0 when every window was valid and within its budget; 1 when any
was not (that is a bug in ctxflow); 2 for bad input or a budget too small for
the fixed costs. Everything is checked before the replay starts: the chart
against the events the replay sends, every output path, the store (a path or
a URL: see :func:`ctxflow.stores.open_store`; a bad one creates nothing).
Output files are written to temporary names beside their targets and renamed
only when the run ends (see :mod:`ctxflow.cli.files`), so a failed or
interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

from ctxflow.cli.files import (
    StagedFiles,
    check_distinct,
    open_store_option,
    output_target,
    store_url,
)
from ctxflow.engine import Chart, Engine, load_chart
from ctxflow.errors import FormatError, StoreError
from ctxflow.layers import LayeredState
from ctxflow.memory import RETRIEVERS, Retriever, retriever_named
from ctxflow.persistence import Store
from ctxflow.replay.inputs import FORMATS, read_run_input
from ctxflow.replay.plan import fit_plan, plan_replay
from ctxflow.replay.plot import plot_turns, require_plot_extra
from ctxflow.replay.runner import LONG_TERM_TIERS, RunResult, TurnRecord, replay
from ctxflow.stores import StoreURL
from ctxflow.tokens import DEFAULT_MODEL, ModelProfile, get_profile

__all__ = [
    "add_retriever_option",
    "default_store_path",
    "memory_retriever",
    "register",
    "replay_engines",
    "replay_options",
]


def default_store_path() -> Path:
    """Where ``ctxflow run`` keeps its embedded SQLite store by default."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "ctxflow" / "runs.sqlite"


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``run`` sub-command's arguments."""
    parser.add_argument("file", help="a transcript (corpus JSONL) or a request body (JSON)")
    parser.add_argument("--id", help="the conversation to replay from a multi-line JSONL file")
    parser.add_argument("--format", choices=FORMATS, help="force the input format")
    parser.add_argument("--chart", default="agent_loop", help="a chart name or file")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model profile ({DEFAULT_MODEL})")
    parser.add_argument("--budget", type=int, help="the input budget in tokens (default: model)")
    parser.add_argument(
        "--store",
        help="where checkpoints go: 'memory', a SQLite file (in an existing folder) or "
        "sqlite:///path, redis://host:port/db, postgresql://user@host/db "
        "(default: a SQLite file in the cache folder)",
    )
    add_retriever_option(parser)
    parser.add_argument(
        "--summarizer",
        choices=("extractive",),
        default="extractive",
        help="how condensation summarises (the offline extractive summarizer)",
    )
    parser.add_argument(
        "--reflect-every", type=int, default=10, help="reflect every K steps (0: never)"
    )
    parser.add_argument(
        "--api", choices=("anthropic", "openai"), help="request body format for --windows"
    )
    parser.add_argument("--report", help="write the JSON report here")
    parser.add_argument("--windows", help="write every window as a request body (JSONL) here")
    parser.add_argument("--plot", help="write a PNG of tokens per layer over turns here")
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress and no warnings; the result line and written paths stay",
    )


class _Progress:
    """Prints one line per turn as the replay builds it.

    The long-term memory tiers (``epi= sem= pro=``) join the line from the first
    window that carries any of them, and stay for the rest of the run, so a run
    without long-term memory keeps its lines short.
    """

    def __init__(self) -> None:
        self.long_term = False

    def __call__(self, record: TurnRecord) -> None:
        layers = record.layers
        used = " ".join(
            f"{name[:3]}={layers[name]['used']:>6,}"
            for name in ("memory", "evidence", "work")
            if name in layers
        )
        self.long_term = self.long_term or record.long_term_tokens > 0
        if self.long_term:
            used += "".join(
                f" {name[:3]}={record.tiers.get(name, 0):>6,}" for name in LONG_TERM_TIERS
            )
        marks = ("C" if record.compression else "-") + ("K" if record.checkpoint else "-")
        flag = (
            "" if record.valid and record.within_budget else "  !! " + ", ".join(record.violations)
        )
        events = ",".join(record.events) or "-"
        print(
            f"{record.turn:>4} {record.phase:<10} {events:<18} {marks} "
            f"{record.window_tokens:>8,}/{record.input_budget:<8,} {used}{flag}",
            flush=True,
        )


def _reuse_line(result: RunResult) -> str:
    """The share of request tokens a prefix cache could serve, and where the prefix broke."""
    why: dict[str, int] = {}
    for turn in result.turns:
        if turn.prefix_break is not None:
            why[turn.prefix_break] = why.get(turn.prefix_break, 0) + 1
    breaks = ", ".join(f"{n} at {k}" for k, n in why.items()) or "never"
    return f"{result.totals()['cache_reuse']:.1%} of request tokens (prefix broke: {breaks})"


def _cost_line(cost: dict[str, Any]) -> str:
    return (
        f"{cost['ratio']:.1%} of the uncached cost "
        f"(cached tokens at x{cost['cached_price']}, written at x{cost['cache_write_price']})"
    )


def _memory_line(memory: dict[str, Any]) -> str:
    """How many windows carried long-term memory, overall and after the first flush point."""
    peaks = ", ".join(
        f"{name[:3]} {memory['tiers'][name]['max_tokens']:,}"
        for name in LONG_TERM_TIERS
        if memory["tiers"][name]["windows"]
    )
    line = f"{memory['windows_with_long_term_memory']} of {memory['windows']} windows" + (
        f" (max {peaks})" if peaks else ""
    )
    first = memory["first_compression_or_reflection_turn"]
    if first is not None:
        line += (
            f"; {memory['windows_with_long_term_memory_after_first_compression_or_reflection']}"
            f" of {memory['windows_after_first_compression_or_reflection']}"
            f" after the first compression or reflection (turn {first})"
        )
    return line


def _summary(result: RunResult) -> None:
    totals = result.totals()
    tokens = [t.window_tokens for t in result.turns]
    budget = result.turns[-1].input_budget if result.turns else 0
    phases: dict[str, int] = {}
    for turn in result.turns:
        phases[turn.phase] = phases.get(turn.phase, 0) + 1
    rows = [
        ("conversation", result.conversation_id),
        ("model", result.model),
        ("turns (windows built)", f"{totals['turns']}"),
        ("turns by phase", ", ".join(f"{k} {v}" for k, v in phases.items())),
        ("messages fed", f"{totals['messages']}"),
        ("input budget", f"{budget:,} tokens"),
        ("window tokens (max)", f"{max(tokens, default=0):,}"),
        ("compressions", f"{totals['compressions']}"),
        ("checkpoints", f"{totals['checkpoints']}"),
        ("epi/sem/pro memory", _memory_line(totals["memory"])),
        ("invalid windows", f"{totals['invalid_windows']}"),
        ("windows over budget", f"{totals['over_budget_windows']}"),
        ("prefix cache reuse", _reuse_line(result)),
        ("est. input cost", _cost_line(totals["input_cost"])),
        ("final phase", result.final_phase),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(f"  {'result':<{width}}  {'ok' if result.ok else 'FAILED'}")


def run(args: argparse.Namespace) -> int:
    """Replay the conversation; exit 0 when every window is valid and within budget."""
    return _run(args)


def _outputs(args: argparse.Namespace) -> dict[str, Path]:
    """The output files asked for, each checked before any work is done."""
    asked = (("--report", args.report), ("--windows", args.windows), ("--plot", args.plot))
    return {option: output_target(value, option) for option, value in asked if value is not None}


def _store(args: argparse.Namespace) -> StoreURL:
    """The store to keep checkpoints in, checked, not yet opened or created."""
    if args.store is None:
        return StoreURL(kind="sqlite", target=str(default_store_path()))
    url = store_url(args.store)
    if url.path is not None and not url.path.parent.is_dir():
        raise StoreError(
            f"--store must be in an existing folder (got {args.store!r}; "
            f"{str(url.path.parent)!r} is not a folder)",
            rule="store_folder",
            where=args.store,
        )
    return url


def _result_line(result: RunResult) -> None:
    totals = result.totals()
    problems = [
        f"{totals[key]} {label}"
        for key, label in (
            ("invalid_windows", "invalid windows"),
            ("over_budget_windows", "windows over budget"),
        )
        if totals[key]
    ]
    print("result: ok" if result.ok else f"result: FAILED ({', '.join(problems)})")


def add_retriever_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--retriever``: what ranks memory items when a tier's do not all fit."""
    parser.add_argument(
        "--retriever",
        choices=RETRIEVERS,
        default="bm25",
        help="how memory items are ranked when they do not all fit: bm25 (words; default), "
        "embedding (meaning) or hybrid (both fused; the best measured); the last two need "
        "pip install 'ctxflow[embeddings]'",
    )


def memory_retriever(args: argparse.Namespace) -> Retriever | None:
    """The retriever ``--retriever`` names (None: the engine's shared BM25), loaded now."""
    if args.retriever == "bm25":
        return None
    return retriever_named(args.retriever)


def replay_engines(
    args: argparse.Namespace,
    chart: Chart,
    profile: ModelProfile,
    *,
    store: Store,
    data: dict[str, Any],
    retriever: Retriever | None,
) -> Callable[[LayeredState], Engine]:
    """The engine factory a replay of ``args`` runs with: its chart, model, budget and
    retriever, on ``store``."""

    def engine_factory(state: LayeredState) -> Engine:
        return Engine(
            chart,
            model=profile,
            state=state,
            budget=args.budget,
            store=store,
            data=data,
            retriever=retriever,
        )

    return engine_factory


def replay_options(args: argparse.Namespace) -> tuple[ModelProfile, Chart]:
    """The model and the chart a replay's options name (bad ones refused before any work)."""
    profile = get_profile(args.model)
    if args.reflect_every < 0:
        raise FormatError(
            f"--reflect-every must be >= 0 (got {args.reflect_every})", rule="reflect_every"
        )
    return profile, load_chart(args.chart)


def _run(args: argparse.Namespace) -> int:
    profile, chart = replay_options(args)
    retriever = memory_retriever(args)
    run_input = read_run_input(args.file, conversation_id=args.id, format=args.format)
    plan = fit_plan(
        plan_replay(run_input.transcript.messages, reflect_every=args.reflect_every), chart
    )
    outputs = _outputs(args)
    store_at = _store(args)
    inputs = {"the input file": Path(args.file)}
    if store_at.path is not None:
        inputs["--store"] = store_at.path
    check_distinct(outputs, inputs)
    if "--plot" in outputs:
        require_plot_extra()
    api: Literal["anthropic", "openai"] = args.api or (
        "openai" if profile.provider == "openai" else "anthropic"
    )
    if args.store is None and store_at.path is not None:
        store_at.path.parent.mkdir(parents=True, exist_ok=True)
    store = open_store_option(store_at)
    where = (
        "in memory"
        if store_at.kind == "memory"
        else str(store_at.path)
        if store_at.path is not None
        else store_at.shown
    )
    # Recorded in every checkpoint's session data, so `checkpoints list` can say where a
    # session came from.
    data = {"transcript": Path(args.file).name, "conversation": run_input.transcript.id}
    try:
        with StagedFiles() as staged:
            temp = {option: staged.add(path, option) for option, path in outputs.items()}
            with ExitStack() as stack:
                windows = (
                    stack.enter_context(temp["--windows"].open("w", encoding="utf-8"))
                    if "--windows" in temp
                    else None
                )
                if not args.quiet:
                    print(
                        f"ctxflow run: {run_input.transcript.id} ({run_input.format}), "
                        f"model {profile.name}"
                    )
                    print(f"checkpoints: {where}")
                    print(
                        f"{'turn':>4} {'phase':<10} {'events':<18} CK {'tokens/budget':>17} layers"
                    )

                engine_factory = replay_engines(
                    args, chart, profile, store=store, data=data, retriever=retriever
                )

                def write_window(body: dict[str, Any]) -> None:
                    assert windows is not None
                    windows.write(json.dumps(body, ensure_ascii=False) + "\n")

                result = replay(
                    run_input,
                    engine_factory=engine_factory,
                    reflect_every=args.reflect_every,
                    api=api,
                    on_turn=None if args.quiet else _Progress(),
                    on_window=write_window if windows is not None else None,
                    plan=plan,
                )
            if args.quiet:
                _result_line(result)
            else:
                _summary(result)
            if "--report" in temp:
                document = {
                    "conversation": run_input.transcript.id,
                    "source": run_input.transcript.source,
                    "file": Path(args.file).name,
                    "format": run_input.format,
                    "model": profile.name,
                    "chart": chart.name,
                    "session": result.session_id,
                    "store": where,
                    "tools_synthesised": run_input.tools_synthesised,
                    "turns": [t.to_plain() for t in result.turns],
                    "totals": result.totals(),
                }
                with temp["--report"].open("w", encoding="utf-8") as handle:
                    json.dump(document, handle, indent=2)
                    handle.write("\n")
            if "--plot" in temp:
                plot_turns(
                    [t.to_plain() for t in result.turns],
                    temp["--plot"],
                    title=f"ctxflow run: {run_input.transcript.id} ({profile.name})",
                )
    finally:
        store.close()
    for option, label in (("--report", "report"), ("--windows", "windows"), ("--plot", "plot")):
        if option in outputs:
            print(f"wrote {label}: {getattr(args, option[2:])}")
    return 0 if result.ok else 1
