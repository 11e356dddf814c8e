"""``ctxflow diagram`` run the way a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


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
