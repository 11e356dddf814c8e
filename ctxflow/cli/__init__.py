"""The ``ctxflow`` command: one sub-command module per job, dispatched here.

Each sub-command module exposes ``register(parser)``, which adds its arguments,
and ``run(args) -> int`` (the exit status). Bad
input ends with a one-line message on stderr and exit status 2; SIGINT and
SIGTERM with one line and 128 + the signal's number (130, 143), after the
command has removed its temporary files. docs/cli.md lists every status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ctxflow.cli.interrupts import Interrupted, signals_as_exceptions
from ctxflow.cli.output import command_output
from ctxflow.errors import CtxflowError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from ctxflow import __version__
    from ctxflow.cli import checkpoints, diagram, report, run, window

    parser = argparse.ArgumentParser(
        prog="ctxflow",
        description="Context management for LLM agents, as an explicit statechart.",
    )
    parser.add_argument("--version", action="version", version=f"ctxflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = {
        "run": (
            "replay a recorded agent conversation through the engine",
            (
                "Replay a conversation as an agent loop through a chart: phase events "
                "derived from the conversation, every message fed, and before every assistant turn "
                "the window the model would have seen, checked and reported."
            ),
            run,
        ),
        "window": (
            "the window one turn of a replay would get in a given phase, as a request body",
            (
                "Replay a conversation as 'run' does up to an assistant turn, then print the "
                "window that turn would get in the given phase as a request body (JSON); "
                "--explain tells how its budget was spent."
            ),
            window,
        ),
        "report": (
            "per-message token counts and API validity of a transcript (corpus JSONL)",
            (
                "Count every message of a recorded transcript with the model's "
                "encoding (offline) and check it against the Anthropic and OpenAI rules."
            ),
            report,
        ),
        "diagram": (
            "render statecharts as Mermaid, SVG or PNG diagrams",
            (
                "Render every shipped chart (or the given chart files) into a folder: "
                "Mermaid always, SVG/PNG when Graphviz's 'dot' is installed."
            ),
            diagram,
        ),
        "checkpoints": (
            "inspect and restore checkpoints in a store (SQLite, Redis, PostgreSQL)",
            "List sessions and checkpoints, show one, diff two, or restore one as corpus JSONL.",
            checkpoints,
        ),
    }
    for name, (summary, description, module) in commands.items():
        command = sub.add_parser(name, help=summary, description=description)
        module.register(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ctxflow`` command; return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with signals_as_exceptions(), command_output(quiet=getattr(args, "quiet", False)):
            status: int = args.handler(args)
    except CtxflowError as exc:
        print(f"ctxflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"ctxflow {args.command}: stopped by {exc.name}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:  # outside the main thread, where no handler can be set
        print(f"ctxflow {args.command}: stopped by SIGINT", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `ctxflow report ... | head`
        return 0
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
