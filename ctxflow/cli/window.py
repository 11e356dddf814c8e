"""``ctxflow window``: the window one assistant turn of a replay would get in a given phase.

The replay is ``ctxflow run``'s, step for step: the same input reading, the
same plan (fitted to the chart), the same engine, fed up to the window of
turn N (see :func:`~ctxflow.replay.runner.replay_to_turn`). There the engine
builds the window phase P would get (``Engine.window(phase=P)``) without
moving the chart, and the command prints it as the request body ``run
--windows`` would write. So the body printed for a turn in the phase the
replay is in there is the body ``run`` writes for that turn.

stdout holds the JSON body and nothing else; ``--explain`` writes how the
budget was spent to stderr. Checkpoints go to an in-memory store: the command
writes no file. Everything is checked before the replay: the model, the chart,
the phase, the input file and the turn.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from ctxflow.budget import LayerUsage, Window
from ctxflow.cli.run import (
    add_retriever_option,
    memory_retriever,
    replay_engines,
    replay_options,
)
from ctxflow.engine import Engine
from ctxflow.errors import FormatError, PolicyError
from ctxflow.replay.inputs import FORMATS, read_run_input
from ctxflow.replay.plan import fit_plan, plan_replay
from ctxflow.replay.runner import replay_to_turn, request_body
from ctxflow.stores import MemoryStore
from ctxflow.tokens import DEFAULT_MODEL

__all__ = ["register", "run"]

# Why the window builder leaves history out, masks or trims it (WindowReport.excluded's keys).
_REASONS = {
    "older_than_window": "older than the window: did not fit",
    "masked_results": "tool results shown as a placeholder",
    "trimmed_results": "tool results condensed: middle-trimmed, head and tail kept",
    "before_first_user": "before the first user message, which leads every window",
    "broken_pair": "a tool call without its result, or a result without its call",
}


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``window`` sub-command's arguments."""
    parser.add_argument("file", help="a transcript (corpus JSONL) or a request body (JSON)")
    parser.add_argument("--id", help="the conversation to replay from a multi-line JSONL file")
    parser.add_argument("--format", choices=FORMATS, help="force the input format")
    parser.add_argument(
        "--at",
        type=int,
        metavar="N",
        help="the assistant turn whose window to build, numbered as 'run' prints them "
        "(default: the last)",
    )
    parser.add_argument("--phase", required=True, help="the chart phase to build the window in")
    parser.add_argument("--chart", default="agent_loop", help="a chart name or file")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model profile ({DEFAULT_MODEL})")
    parser.add_argument("--budget", type=int, help="the input budget in tokens (default: model)")
    parser.add_argument(
        "--reflect-every", type=int, default=10, help="reflect every K steps (0: never), as run"
    )
    parser.add_argument(
        "--api", choices=("anthropic", "openai"), help="request body format (default: model's)"
    )
    add_retriever_option(parser)
    parser.add_argument(
        "--explain",
        action="store_true",
        help="write each layer's allocation and use, what was left out and why, "
        "and the allowed tools to stderr",
    )


def run(args: argparse.Namespace) -> int:
    """Print the window of turn ``--at`` in phase ``--phase`` as a request body."""
    profile, chart = replay_options(args)
    if args.phase not in chart.phases:
        raise PolicyError(
            f"--phase must be a phase of chart {chart.name!r} ({', '.join(chart.phases)}) "
            f"(got {args.phase!r})",
            rule="unknown_phase",
            phase=args.phase,
        )
    retriever = memory_retriever(args)
    run_input = read_run_input(args.file, conversation_id=args.id, format=args.format)
    plan = fit_plan(
        plan_replay(run_input.transcript.messages, reflect_every=args.reflect_every), chart
    )
    turns = sum(1 for step in plan if step.kind == "window")
    turn = turns if args.at is None else args.at
    if not 1 <= turn <= turns:
        where = f"conversation {run_input.transcript.id!r}"
        raise FormatError(
            f"--at must be an assistant turn from 1 to {turns} "
            f"({where} has {turns} assistant turns) (got {turn})"
            if turns
            else f"{where} has no assistant turn to build a window for",
            rule="turn",
            where=args.file,
        )
    api: Literal["anthropic", "openai"] = args.api or (
        "openai" if profile.provider == "openai" else "anthropic"
    )
    store = MemoryStore()
    data = {"transcript": Path(args.file).name, "conversation": run_input.transcript.id}

    engine_factory = replay_engines(
        args, chart, profile, store=store, data=data, retriever=retriever
    )

    try:
        engine = replay_to_turn(run_input, turn, engine_factory=engine_factory, plan=plan)
        window = engine.window(phase=args.phase)
        body = request_body(window, api, engine)
        if args.explain:
            _explain(window, engine, turn=turn, turns=turns, phase=args.phase)
    finally:
        store.close()
    print(json.dumps(body, ensure_ascii=False, indent=2))
    return 0


def _explain(window: Window, engine: Engine, *, turn: int, turns: int, phase: str) -> None:
    """How the window's budget was spent, and what it left out, on stderr."""
    report = window.report
    allocation = report.allocation
    share = window.tokens / window.input_budget if window.input_budget else 0.0
    lines = [
        f"turn {turn} of {turns}, phase {phase} (the replay is in {engine.phase}), "
        f"model {engine.profile.name}, chart {engine.chart.name}",
        f"tokens: {window.tokens:,} of the {window.input_budget:,} input budget ({share:.1%})",
        "fixed: "
        + ", ".join(f"{name} {size:,}" for name, size in allocation.fixed.named().items())
        + f"; headroom {allocation.headroom:,}; flexible {allocation.flexible:,} "
        f"(message budget {report.message_budget:,})",
        "",
        *_table("layer", report.layers),
        *_table("memory tier", report.tiers),
        "work: the latest tool rounds whole; evidence: older rounds condensed; "
        "memory: the history, older rounds masked",
        f"leftover lent to: {', '.join(report.lending) or 'nothing'} (the phase's intent)",
        "",
        f"messages: {len(window.messages)} in the window",
    ]
    if report.excluded:
        lines.append("left out, masked or trimmed:")
        for reason, what in report.excluded.items():
            lines.append(
                f"  {reason}: {what.units} units, {what.messages} messages, "
                f"{what.tokens:,} tokens" + (f" ({_REASONS[reason]})" if reason in _REASONS else "")
            )
    else:
        lines.append("left out, masked or trimmed: nothing")
    ranker = getattr(engine.retriever, "source", None) or "bm25"
    for tier, reasons in report.memory_chosen.items():
        lines.append(
            f"{tier} memory chosen by relevance ({ranker}) to the task and the latest turn:"
        )
        lines.extend(f"  {reason}" for reason in reasons)
    dropped = ", ".join(f"{name} {n}" for name, n in report.dropped_blocks.items())
    lines.append(f"context blocks that did not fit their allocation: {dropped or 'none'}")
    lines.append(f"tools phase {phase} allows: {', '.join(window.allowed_tools) or 'none'}")
    carried = [tool.name for tool in window.tools if tool.name not in window.allowed_tools]
    if carried:
        lines.append(
            f"tools carried but not allowed (the history calls them): {', '.join(carried)}"
        )
    for line in lines:
        print(line, file=sys.stderr)


def _table(title: str, rows: Mapping[str, LayerUsage]) -> list[str]:
    """A layer (or tier) table: allocated and used tokens per row."""
    width = max([len(title), *(len(name) for name in rows)])
    out = [f"{title:<{width}}  {'allocated':>9}  {'used':>9}"]
    out += [f"{name:<{width}}  {u.allocated:>9,}  {u.used:>9,}" for name, u in rows.items()]
    return out
