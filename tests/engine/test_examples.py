"""The examples run: the custom chart script, and the user-style test file through pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_custom_chart_example_runs() -> None:
    """examples/custom_chart.py drives the review chart to done."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "custom_chart.py")],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "approve" in done.stdout
    assert "review" in done.stdout


def test_user_test_file_passes_with_the_plugin() -> None:
    """examples/test_my_agent.py passes under pytest with the plugin loaded by entry point."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", str(ROOT / "examples" / "test_my_agent.py"),
            "-q", "-p", "no:cacheprovider", "-W", "error",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT / "examples",
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
    assert "failed" not in done.stdout
