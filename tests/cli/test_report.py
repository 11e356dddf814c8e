"""Tests for ``ctxflow report`` run the way a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ctxflow.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "transcripts"


def test_report_on_bundled_transcript(capsys: pytest.CaptureFixture[str]) -> None:
    """The report lists every message with its tokens and says both APIs are valid."""
    status = main(["report", str(EXAMPLES / "swe-agent-marshmallow-1867.jsonl")])
    out = capsys.readouterr().out
    assert status == 0
    assert "24 messages" in out
    assert "anthropic: valid" in out and "openai: valid" in out


def test_report_json_totals_add_up(capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON report's per-message tokens sum to its total."""
    status = main(["report", str(EXAMPLES / "tau-bench-airline-task00.jsonl"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert status == 0
    assert sum(m["tokens"] for m in data["messages"]) == data["total_tokens"]
    assert data["valid"] == {"anthropic": True, "openai": True}


def test_report_flags_invalid_transcript(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A transcript breaking role order exits 1 and names the rule."""
    path = tmp_path / "bad.jsonl"
    record = {"id": "x", "messages": [{"role": "assistant", "content": "hi"}]}
    path.write_text(json.dumps(record) + "\n")
    assert main(["report", str(path)]) == 1
    assert "first_not_user" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--id", "nope"], "no conversation with id 'nope'"),
        (["--model", "nope"], "no model profile named 'nope'"),
    ],
)
def test_report_bad_input_exits_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unknown ids and models give a one-line error and exit status 2."""
    status = main(["report", str(EXAMPLES / "tau-bench-airline-task00.jsonl"), *args])
    err = capsys.readouterr().err
    assert status == 2
    assert needle in err and err.count("\n") == 1


def test_report_unreadable_and_not_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file or a non-JSON line names the file (and line)."""
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert main(["report", str(bad)]) == 2
    assert "bad.jsonl:1: not JSON" in capsys.readouterr().err


def test_console_script_runs() -> None:
    """``python -m ctxflow --help`` works as an installed command would."""
    done = subprocess.run(
        [sys.executable, "-m", "ctxflow", "--help"], capture_output=True, text=True, check=True
    )
    assert "report" in done.stdout


def test_version_prints_the_version_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """`ctxflow --version` prints the installed version and exits 0."""
    import ctxflow
    from ctxflow.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"ctxflow {ctxflow.__version__}"


def test_report_json_content_is_the_message_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    """--json gives each message's content as its JSON blocks, not a Python repr."""
    path = EXAMPLES / "tau-bench-airline-task00.jsonl"
    assert main(["report", str(path), "--json"]) == 0
    messages = json.loads(capsys.readouterr().out)["messages"]
    recorded = json.loads(path.read_text().splitlines()[0])["messages"]
    assert messages[1]["content"] == recorded[1]["content"]
    assert all(isinstance(m["content"], list) for m in messages)
    assert any(b["type"] == "tool_use" for m in messages for b in m["content"])


def test_report_refuses_a_lone_surrogate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message with a lone surrogate is not called valid: one line naming file and line, 2."""
    path = tmp_path / "bad.jsonl"
    record = {"id": "x", "messages": [{"role": "user", "content": "SURROGATE"}]}
    path.write_text(json.dumps(record).replace("SURROGATE", "hi \\ud800") + "\n")
    for args in ([], ["--json"]):
        assert main(["report", str(path), *args]) == 2
        captured = capsys.readouterr()
        assert "bad.jsonl:1:" in captured.err and "surrogate" in captured.err
        assert captured.err.count("\n") == 1
        assert "valid" not in captured.out.replace("invalid", "")
