"""``ctxflow diagram``: render charts as Mermaid (always) and SVG/PNG (with Graphviz).

Asking for SVG or PNG without Graphviz's ``dot`` on PATH is an error (exit 2)
before anything is written, not a quiet fallback to Mermaid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctxflow.engine._diagrams import FORMATS, graphviz_available, write_diagrams
from ctxflow.errors import ChartError, FormatError

__all__ = ["register"]


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``diagram`` sub-command's arguments."""
    parser.add_argument("charts", nargs="*", metavar="CHART_FILE", help="JSON/YAML chart files")
    parser.add_argument("--out", default="diagrams", help="output folder (default: diagrams/)")
    parser.add_argument(
        "--format",
        action="append",
        choices=FORMATS,
        dest="formats",
        help="output format; repeat for several (default: mermaid)",
    )
    parser.add_argument(
        "--highlight",
        default="",
        help="comma-separated state ids to highlight (e.g. active,execution)",
    )


def _check_folder(value: str) -> None:
    """FormatError when ``value`` (or the first part of it that exists) is not a folder."""
    path = Path(value)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise FormatError(
            f"--out must name a folder (got {value!r}; {str(existing)!r} is a file)",
            rule="out_not_folder",
            where=value,
        )


def run(args: argparse.Namespace) -> int:
    """Write the diagrams; print one path per line."""
    _check_folder(args.out)
    formats = args.formats or ["mermaid"]
    needs_dot = sorted({f for f in formats if f != "mermaid"})
    if needs_dot and not graphviz_available():
        raise ChartError(
            f"--format {' and '.join(needs_dot)} needs Graphviz's 'dot' program on PATH "
            "(not found; install Graphviz, or use --format mermaid)",
            rule="graphviz_unavailable",
        )
    highlight = [s for s in args.highlight.split(",") if s] or None
    for path in write_diagrams(args.charts or None, args.out, formats=formats, highlight=highlight):
        print(path)
    return 0
