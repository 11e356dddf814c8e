"""``ctxflow run`` stopped by a real signal in a real process: one line, 128 + signum, no debris."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def _long_transcript(path: Path, rounds: int) -> None:
    """A conversation of ``rounds`` tool calls: far longer to replay than the test waits."""
    messages: list[dict[str, object]] = [{"role": "user", "content": "Fix the build. " * 20}]
    for i in range(rounds):
        call = {"type": "tool_use", "id": f"t{i}", "name": "bash", "input": {"cmd": f"make {i}"}}
        result = {"type": "tool_result", "tool_use_id": f"t{i}", "content": f"step {i} " * 40}
        messages += [
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [result]},
        ]
    messages.append({"role": "assistant", "content": "done"})
    path.write_text(json.dumps({"id": "long", "messages": messages}) + "\n")


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_run_removes_temp_files_and_exits_128_plus_signum(
    tmp_path: Path, signum: signal.Signals, status: int
) -> None:
    """A signal after the first turn ends the run with one line and 128 + signum, no traceback,
    and no output or hidden temporary file left beside the targets."""
    source = tmp_path / "long.jsonl"
    _long_transcript(source, 3000)
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "ctxflow", "run", str(source), "--budget", "6000"]
    command += ["--store", str(tmp_path / "s.sqlite"), "--report", str(out / "r.json")]
    command += ["--windows", str(out / "w.jsonl"), "--plot", str(out / "p.png")]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line[:4].strip().isdigit():  # the first turn's progress line
                break
        process.send_signal(signum)
        _, err = process.communicate(timeout=300)
    assert process.returncode == status, err
    assert err == f"ctxflow run: stopped by {signum.name}\n"
    assert not list(out.iterdir())
