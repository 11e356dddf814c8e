"""Diagrams: committed Mermaid files are current, highlights, DOT, and the diagram command."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ctxflow.cli import diagram
from ctxflow.engine import Engine, chart_names, chart_path, load_chart
from ctxflow.engine._diagrams import graphviz_available, render_dot, render_mermaid, write_diagrams
from ctxflow.errors import ChartError
from ctxflow.testing import FixedCounter

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize("name", chart_names())
def test_committed_mermaid_diagram_is_current(name: str) -> None:
    """diagrams/<chart>.mmd equals a fresh rendering (re-run `ctxflow diagram` after a change)."""
    committed = ROOT / "diagrams" / f"{name}.mmd"
    assert committed.is_file(), f"{committed.name} is missing: run `ctxflow diagram`"
    assert committed.read_text() == render_mermaid(load_chart(chart_path(name)))


def test_mermaid_shows_every_state_and_event() -> None:
    """The Mermaid source names every state and labels the history state."""
    text = render_mermaid("agent_loop")
    assert text.startswith("stateDiagram-v2")
    for state in load_chart().states:
        assert f" as {state}" in text
    assert 'state "H" as resume_point' in text
    assert "execution --> execution : Step" in text


def test_live_engine_configuration_is_highlighted() -> None:
    """Rendering an engine highlights its current configuration."""
    engine = Engine(counter=FixedCounter())
    engine.send("start", task="t")
    engine.send("plan_ready")
    text = render_mermaid(engine)
    assert "    execution:::current" in text
    assert "    active:::current" in text
    assert "planning:::current" not in text
    assert ":::current" not in render_mermaid(engine, highlight=())


def test_highlighting_an_unknown_state_fails() -> None:
    """A highlight naming no state of the chart is a ChartError."""
    with pytest.raises(ChartError, match="nowhere"):
        render_mermaid("agent_loop", highlight=["nowhere"])


def test_dot_has_clusters_and_highlight() -> None:
    """DOT source draws compound states as clusters and highlights active leaves."""
    text = render_dot("agent_loop", highlight=["active", "planning"])
    assert "subgraph cluster_active" in text
    assert 'planning [label="planning", fillcolor="#40E0D0", penwidth=2];' in text
    assert 'done [label="done", peripheries=2];' in text


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ctxflow")
    sub = parser.add_subparsers(dest="command", required=True).add_parser("diagram")
    diagram.register(sub)
    sub.set_defaults(handler=diagram.run)
    args = parser.parse_args(["diagram", *argv])
    status: int = args.handler(args)
    return status


def test_diagram_command_writes_mermaid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`ctxflow diagram --out DIR` writes one .mmd per shipped chart."""
    assert run_cli("--out", str(tmp_path)) == 0
    written = {p.name for p in tmp_path.iterdir()}
    assert {f"{n}.mmd" for n in chart_names()} <= written
    assert str(tmp_path / "agent_loop.mmd") in capsys.readouterr().out


def test_diagram_command_renders_a_given_file(tmp_path: Path) -> None:
    """A chart file given on the command line is rendered, highlighted as asked."""
    assert (
        run_cli(str(chart_path("review_loop")), "--out", str(tmp_path), "--highlight", "review")
        == 0
    )
    text = (tmp_path / "review_loop.mmd").read_text()
    assert "review:::current" in text


@pytest.mark.skipif(not graphviz_available(), reason="Graphviz 'dot' is not installed")
def test_svg_and_png_with_graphviz(tmp_path: Path) -> None:
    """With Graphviz, SVG and PNG files are written."""
    files = write_diagrams([chart_path("agent_loop")], tmp_path, formats=["mermaid", "svg", "png"])
    assert [f.suffix for f in files] == [".mmd", ".svg", ".png"]
    assert (tmp_path / "agent_loop.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "agent_loop.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    """An unknown output format fails with ChartError before writing anything."""
    with pytest.raises(ChartError, match="formats"):
        write_diagrams(None, tmp_path, formats=["gif"])
    assert list(tmp_path.iterdir()) == []


def test_diagram_command_reports_a_too_deep_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ctxflow diagram` on a chart nested 3,000 deep prints one ChartError line, exit 2."""
    from ctxflow.cli import main

    deep = tmp_path / "deep.json"
    opening = "".join(f'{{"s{i}": {{"states": ' for i in range(3000))
    deep.write_text('{"states": ' + opening + '{"leaf": {}}' + "}}" * 3000 + "}")
    out = tmp_path / "out"
    assert main(["diagram", str(deep), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("ctxflow diagram: error: ")
    assert "deep.json" in err[0] and "at most 32 deep" in err[0]
    assert not out.exists() or list(out.iterdir()) == []
