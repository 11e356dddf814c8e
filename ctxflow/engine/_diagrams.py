"""Diagrams of charts: Mermaid always, SVG/PNG through Graphviz when ``dot`` is installed.

Mermaid source comes from python-statemachine's own renderer (machine →
neutral description → ``stateDiagram-v2``), run on the chart *class* so the
engine's bindings never show up as callbacks; ctxflow appends the highlight
of a live or restored configuration as a ``classDef``. Graphviz output is
rendered from a small DOT description written here (compound states as
clusters), so no Python Graphviz binding is needed — only the ``dot`` program.

Mermaid output is deterministic: the committed ``diagrams/*.mmd`` files are
compared with a fresh rendering by the test suite. SVG/PNG bytes depend on the
Graphviz version and are not compared.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ctxflow.engine._charts import Chart, chart_names, chart_path, load_chart
from ctxflow.errors import ChartError

__all__ = [
    "FORMATS",
    "graphviz_available",
    "render_dot",
    "render_mermaid",
    "write_diagrams",
]

#: Output formats of :func:`write_diagrams`.
FORMATS = ("mermaid", "svg", "png")
_HIGHLIGHT = "classDef current fill:#40E0D0,stroke:#333,stroke-width:2px"


def _chart_and_highlight(target: Any, highlight: Iterable[str] | None) -> tuple[Chart, list[str]]:
    if isinstance(target, Chart):
        chart = target
    elif isinstance(getattr(target, "chart", None), Chart):
        chart = target.chart
        if highlight is None:
            highlight = target.configuration
    else:
        chart = load_chart(target)
    wanted = list(highlight or ())
    unknown = [s for s in wanted if s not in chart.parents]
    if unknown:
        raise ChartError(
            f"highlighted states must be states of chart {chart.name!r} (got {unknown})",
            rule="unknown_state",
            states=unknown,
        )
    return chart, wanted


def render_mermaid(target: Any, highlight: Iterable[str] | None = None) -> str:
    """Mermaid ``stateDiagram-v2`` source of a chart, an engine, or a chart name/file.

    For an engine the current configuration is highlighted unless ``highlight``
    says otherwise; an empty ``highlight`` turns it off.
    """
    from statemachine.contrib import diagram

    renderer: Any = diagram.MermaidGraphMachine
    chart, wanted = _chart_and_highlight(target, highlight)
    lines = renderer(chart.machine_class).get_mermaid().rstrip().splitlines()
    if wanted:
        lines += ["", f"    {_HIGHLIGHT}", *(f"    {s}:::current" for s in wanted)]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(target: Any, highlight: Iterable[str] | None = None) -> str:
    """Graphviz DOT source of a chart (compound states as clusters)."""
    chart, wanted = _chart_and_highlight(target, highlight)
    current = set(wanted)
    children: dict[str | None, list[str]] = {}
    for state, parent in chart.parents.items():
        children.setdefault(parent, []).append(state)
    histories: dict[str, list[str]] = {}
    for hist, parent in chart.history.items():
        histories.setdefault(parent, []).append(hist)
    out = [
        f"digraph {chart.name} {{",
        "  compound=true; rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname=Helvetica];',
        "  edge [fontname=Helvetica, fontsize=9];",
        "  __start [shape=point, width=0.15];",
    ]

    def anchor(state: str) -> str:
        while state in children:
            state = children[state][0]
        return state

    def emit(parent: str | None, indent: str) -> None:
        for state in children.get(parent, []):
            if state in children:
                fill = "#E0F8F5" if state in current else "white"
                out.append(f"{indent}subgraph cluster_{state} {{")
                out.append(
                    f'{indent}  label={_quote(state)}; style="rounded,filled"; fillcolor="{fill}";'
                )
                emit(state, indent + "  ")
                for hist in histories.get(state, []):
                    out.append(f"{indent}  {hist} [label=H, shape=circle, width=0.3];")
                out.append(f"{indent}}}")
            else:
                attrs_ = [f"label={_quote(state)}"]
                if state in chart.finals:
                    attrs_.append("peripheries=2")
                if state in current:
                    attrs_.append('fillcolor="#40E0D0", penwidth=2')
                out.append(f"{indent}{state} [{', '.join(attrs_)}];")

    emit(None, "  ")
    initial = next(iter(children.get(None, [])))
    out.append(f"  __start -> {anchor(initial)};")
    for spec in chart.transitions:
        target = spec.target or spec.source
        extra = [f"label={_quote(spec.event)}"]
        if spec.source in children:
            extra.append(f"ltail=cluster_{spec.source}")
        if target in children:
            extra.append(f"lhead=cluster_{target}")
        out.append(f"  {anchor(spec.source)} -> {anchor(target)} [{', '.join(extra)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def graphviz_available() -> bool:
    """True when the Graphviz ``dot`` program is on PATH."""
    return shutil.which("dot") is not None


def _graphviz(dot_source: str, fmt: str) -> bytes:
    program = shutil.which("dot")
    if program is None:
        raise ChartError(
            f"rendering {fmt} needs Graphviz's 'dot' program on PATH (not found)",
            rule="graphviz_unavailable",
        )
    done = subprocess.run(
        [program, f"-T{fmt}"], input=dot_source.encode(), capture_output=True, check=False
    )
    if done.returncode != 0:
        raise ChartError(
            f"Graphviz failed to render {fmt}: {done.stderr.decode(errors='replace')[:500]}",
            rule="graphviz_failed",
        )
    return done.stdout


def write_diagrams(
    charts: Sequence[str | Path] | None = None,
    out: str | Path = "diagrams",
    *,
    formats: Iterable[str] = ("mermaid",),
    highlight: Iterable[str] | None = None,
) -> list[Path]:
    """Render charts (default: every shipped chart) into ``out``; return the files written.

    Mermaid is always possible; ``svg``/``png`` need Graphviz.
    """
    wanted = list(dict.fromkeys(formats))
    bad = [f for f in wanted if f not in FORMATS]
    if bad or not wanted:
        raise ChartError(
            f"formats must be among {list(FORMATS)} (got {wanted})", rule="diagram_format"
        )
    sources: list[str | Path] = list(charts) if charts else [chart_path(n) for n in chart_names()]
    loaded = [load_chart(source) for source in sources]
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for chart in loaded:
        marks = list(highlight) if highlight is not None else None
        if "mermaid" in wanted:
            path = folder / f"{chart.name}.mmd"
            path.write_text(render_mermaid(chart, marks), encoding="utf-8")
            written.append(path)
        for fmt in (f for f in wanted if f != "mermaid"):
            path = folder / f"{chart.name}.{fmt}"
            path.write_bytes(_graphviz(render_dot(chart, marks), fmt))
            written.append(path)
    return written
