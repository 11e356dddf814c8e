"""Charts are found from an installed wheel's layout (ctxflow/_statecharts) as from the repo."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_charts_are_found_in_the_wheel_layout(tmp_path: Path) -> None:
    """With statecharts/ force-included as ctxflow/_statecharts, chart_path finds them there."""
    package = tmp_path / "site" / "ctxflow"
    shutil.copytree(
        ROOT / "ctxflow", package, ignore=shutil.ignore_patterns("__pycache__", "_statecharts")
    )
    shutil.copytree(ROOT / "statecharts", package / "_statecharts")
    script = (
        "import ctxflow, sys\n"
        "from ctxflow.engine import chart_path, chart_names, Engine\n"
        "assert ctxflow.__file__.startswith(sys.argv[1]), ctxflow.__file__\n"
        "path = chart_path('agent_loop')\n"
        "assert path.parent.name == '_statecharts', path\n"
        "assert 'review_loop' in chart_names()\n"
        "print(Engine().chart.source)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "site")],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": ""},
    )
    assert done.returncode == 0, done.stderr
    assert "_statecharts" in done.stdout
