"""Tests for the ``--plot`` PNG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ctxflow.replay.plot import plot_turns


def turns() -> list[dict[str, object]]:
    phases = ["planning"] * 2 + ["execution"] * 6 + ["reflection"] + ["execution"] * 3
    return [
        {
            "turn": i + 1,
            "phase": phase,
            "input_budget": 8_000,
            "layers": {"system": {"used": 900}, "memory": {"used": 300 * i}},
            "compression": {"rungs": ["clear"]} if i == 7 else None,
            "checkpoint": "c1" if i in (0, 2, 8) else None,
        }
        for i, phase in enumerate(phases)
    ]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    """The plot is a real PNG of a sensible size."""
    out = plot_turns(turns(), tmp_path / "run.png", title="t")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_plot_without_matplotlib_says_how_to_install(tmp_path: Path) -> None:
    """Without the extra the error names the install command and writes nothing."""
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from ctxflow.replay.plot import plot_turns, PlotUnavailable\n"
        "try:\n"
        f"    plot_turns([], {str(tmp_path / 'x.png')!r})\n"
        "except PlotUnavailable as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'ctxflow[plot]'" in done.stdout
    assert not (tmp_path / "x.png").exists()


def test_plot_draws_memory_tiers(tmp_path: Path) -> None:
    """Turns carrying episodic, semantic and procedural memory plot to a PNG."""
    with_memory = [
        {**t, "tiers": {"short_term": 300, "episodic": 40 * i, "semantic": 60, "procedural": 0}}
        for i, t in enumerate(turns())
    ]
    data = plot_turns(with_memory, tmp_path / "m.png", title="t").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_plot_renders_when_no_tier_holds_anything(tmp_path: Path) -> None:
    """All-zero tiers (and a run with no turns) still render, the panel saying so."""
    zero = [{**t, "tiers": dict.fromkeys(("short_term", "episodic"), 0)} for t in turns()]
    assert plot_turns(zero, tmp_path / "z.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_turns([], tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
