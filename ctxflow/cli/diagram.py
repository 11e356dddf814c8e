"""``ctxflow diagram``: render charts as Mermaid (always) and SVG/PNG (with Graphviz)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ctxflow.engine._diagrams import FORMATS, graphviz_available, write_diagrams

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``diagram`` sub-command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "diagram",
        help="render statecharts as Mermaid, SVG or PNG diagrams",
        description="Render every shipped chart (or the given chart files) into a folder: "
        "Mermaid always, SVG/PNG when Graphviz's 'dot' is installed.",
    )
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
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write the diagrams; print one path per line."""
    formats = args.formats or ["mermaid"]
    if any(f != "mermaid" for f in formats) and not graphviz_available():
        print(
            "ctxflow diagram: Graphviz 'dot' not found; writing Mermaid only",
            file=sys.stderr,
        )
        formats = ["mermaid"]
    highlight = [s for s in args.highlight.split(",") if s] or None
    for path in write_diagrams(args.charts or None, args.out, formats=formats, highlight=highlight):
        print(path)
    return 0
