"""``ctxflow diagram`` run the way a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctxflow.cli import main


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_graphviz_format_without_dot_exits_2_writing_nothing(tmp_path: Path, fmt: str) -> None:
    """Asking for SVG or PNG with no 'dot' on PATH is one line and exit 2, and nothing is
    written (not a Mermaid-only exit 0)."""
    bare = tmp_path / "bin"
    bare.mkdir()
    out = tmp_path / "diagrams"
    done = subprocess.run(
        [sys.executable, "-m", "ctxflow", "diagram", "--format", fmt, "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(bare)},
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "'dot'" in done.stderr and fmt in done.stderr
    assert done.stdout == ""
    assert not out.exists()


def test_out_naming_a_file_exits_2_and_leaves_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out naming a file (or a folder under one) is one line and exit 2, the file unchanged."""
    notes = tmp_path / "notes.md"
    notes.write_text("mine\n")
    for out in (notes, notes / "sub"):
        assert main(["diagram", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "must name a folder" in err and err.count("\n") == 1
    assert notes.read_text() == "mine\n"
