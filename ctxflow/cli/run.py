"""``ctxflow run``: replay a recorded agent conversation through the engine.

Exit status: 0 when every window was valid and within its budget; 1 when any
was not (that is a bug in ctxflow); 2 for bad input or a budget too small for
the fixed costs. Output files are written to temporary names beside their
targets and renamed only when the run ends, so a failed run leaves nothing
half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any, Literal

from ctxflow.engine import Engine, load_chart
from ctxflow.errors import FormatError
from ctxflow.layers import LayeredState
from ctxflow.replay.inputs import FORMATS, read_run_input
from ctxflow.replay.runner import RunResult, TurnRecord, replay
from ctxflow.stores import MemoryStore, SQLiteStore
from ctxflow.tokens import DEFAULT_MODEL, get_profile

__all__ = ["default_store_path", "register"]


def default_store_path() -> Path:
    """Where ``ctxflow run`` keeps its embedded SQLite store by default."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "ctxflow" / "runs.sqlite"


def register(sub: Any) -> None:
    """Add the ``run`` sub-command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="replay a recorded agent conversation through the engine",
        description="Replay a conversation as an agent loop through a chart: phase events "
        "derived from the conversation, every message fed, and before every assistant turn "
        "the window the model would have seen, checked and reported.",
    )
    parser.add_argument("file", help="a transcript (corpus JSONL) or a request body (JSON)")
    parser.add_argument("--id", help="the conversation to replay from a multi-line JSONL file")
    parser.add_argument("--format", choices=FORMATS, help="force the input format")
    parser.add_argument("--chart", default="agent_loop", help="a chart name or file")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model profile ({DEFAULT_MODEL})")
    parser.add_argument("--budget", type=int, help="the input budget in tokens (default: model)")
    parser.add_argument(
        "--store",
        help="an SQLite file for checkpoints, or 'memory' (default: a file in the cache folder)",
    )
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
    parser.add_argument("--quiet", action="store_true", help="no per-turn progress")
    parser.set_defaults(handler=run)


@contextmanager
def _staged(path: str | None) -> Iterator[tuple[Path, IO[str]] | None]:
    """A temporary file beside ``path``, renamed onto it only on success."""
    if path is None:
        yield None
        return
    target = Path(path)
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed or removed below
            "w",
            encoding="utf-8",
            dir=target.parent if str(target.parent) else ".",
            prefix=f".{target.name}.",
            delete=False,
        )
    except OSError as exc:
        raise FormatError(
            f"{target}: cannot be written ({exc.strerror})", rule="unwritable", where=str(target)
        ) from None
    ok = False
    try:
        yield Path(handle.name), handle
        ok = True
    finally:
        handle.close()
        if ok:
            os.replace(handle.name, target)
        else:
            os.unlink(handle.name)


def _progress(record: TurnRecord) -> None:
    layers = record.layers
    used = " ".join(
        f"{name[:3]}={layers[name]['used']:>6,}"
        for name in ("memory", "evidence", "work")
        if name in layers
    )
    marks = ("C" if record.compression else "-") + ("K" if record.checkpoint else "-")
    flag = "" if record.valid and record.within_budget else "  !! " + ", ".join(record.violations)
    events = ",".join(record.events) or "-"
    print(
        f"{record.turn:>4} {record.phase:<10} {events:<18} {marks} "
        f"{record.window_tokens:>8,}/{record.input_budget:<8,} {used}{flag}",
        flush=True,
    )


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
        ("invalid windows", f"{totals['invalid_windows']}"),
        ("windows over budget", f"{totals['over_budget_windows']}"),
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


def _run(args: argparse.Namespace) -> int:
    profile = get_profile(args.model)
    if args.reflect_every < 0:
        raise FormatError(
            f"--reflect-every must be >= 0 (got {args.reflect_every})", rule="reflect_every"
        )
    chart = load_chart(args.chart)
    run_input = read_run_input(args.file, conversation_id=args.id, format=args.format)
    api: Literal["anthropic", "openai"] = args.api or (
        "openai" if profile.provider == "openai" else "anthropic"
    )
    if args.store == "memory":
        store: Any = MemoryStore()
        where = "in memory"
    else:
        path = Path(args.store) if args.store else default_store_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        store = SQLiteStore(path)
        where = str(path)
    with ExitStack() as stack:
        report = stack.enter_context(_staged(args.report))
        windows = stack.enter_context(_staged(args.windows))
        plot = stack.enter_context(_staged(args.plot))
        if not args.quiet:
            print(
                f"ctxflow run: {run_input.transcript.id} ({run_input.format}), model {profile.name}"
            )
            print(f"checkpoints: {where}")
            print(f"{'turn':>4} {'phase':<10} {'events':<18} CK {'tokens/budget':>17} layers")

        def engine_factory(state: LayeredState) -> Engine:
            return Engine(chart, model=profile, state=state, budget=args.budget, store=store)

        def write_window(body: dict[str, Any]) -> None:
            assert windows is not None
            windows[1].write(json.dumps(body, ensure_ascii=False) + "\n")

        try:
            result = replay(
                run_input,
                engine_factory=engine_factory,
                reflect_every=args.reflect_every,
                api=api,
                on_turn=None if args.quiet else _progress,
                on_window=write_window if windows is not None else None,
            )
        finally:
            store.close()
        if not args.quiet:
            _summary(result)
        if report is not None:
            document = {
                "conversation": run_input.transcript.id,
                "source": run_input.transcript.source,
                "format": run_input.format,
                "model": profile.name,
                "chart": chart.name,
                "session": result.session_id,
                "store": where,
                "tools_synthesised": run_input.tools_synthesised,
                "turns": [t.to_plain() for t in result.turns],
                "totals": result.totals(),
            }
            json.dump(document, report[1], indent=2)
            report[1].write("\n")
        if plot is not None:
            from ctxflow.replay.plot import plot_turns

            plot[1].close()
            plot_turns(
                [t.to_plain() for t in result.turns],
                plot[0],
                title=f"ctxflow run: {run_input.transcript.id} ({profile.name})",
            )
    for label, target in (("report", args.report), ("windows", args.windows), ("plot", args.plot)):
        if target and not args.quiet:
            print(f"wrote {label}: {target}")
    return 0 if result.ok else 1
