"""Tests for ``ctxflow run``, run the way a user runs it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from ctxflow.cli import main
from ctxflow.engine import Engine
from ctxflow.errors import BudgetExceeded, CtxflowWarning
from ctxflow.layers import LayeredState
from ctxflow.model import Transcript, check, messages_from_anthropic
from ctxflow.replay.inputs import RunInput, synthesise_tools
from ctxflow.replay.runner import replay
from ctxflow.stores import MemoryStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "transcripts"
PONY = EXAMPLES / "openhands-ponyc-4588.jsonl"


def test_run_writes_report_windows_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tight-budget replay is valid, compresses, checkpoints, and writes all three outputs."""
    report, windows, plot = tmp_path / "r.json", tmp_path / "w.jsonl", tmp_path / "p.png"
    status = main(
        [
            "run",
            str(PONY),
            "--budget",
            "12000",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--report",
            str(report),
            "--windows",
            str(windows),
            "--plot",
            str(plot),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "result                 ok" in out
    data = json.loads(report.read_text())
    totals = data["totals"]
    assert totals["ok"] and totals["compressions"] > 0 and totals["checkpoints"] > 0
    assert all(t["window_tokens"] <= 12_000 for t in data["turns"])
    bodies = [json.loads(line) for line in windows.read_text().splitlines()]
    assert len(bodies) == len(data["turns"]) == 49
    for body in bodies:
        messages = messages_from_anthropic(body["messages"])
        assert check(messages, tools=body.get("tools", [])).ok
        assert body["tools"], "tool definitions are synthesised for a transcript without them"
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_run_openai_windows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--api openai writes Chat Completions bodies with function tools."""
    windows = tmp_path / "w.jsonl"
    status = main(
        [
            "run",
            str(EXAMPLES / "tau-bench-airline-task00.jsonl"),
            "--store",
            "memory",
            "--quiet",
            "--api",
            "openai",
            "--windows",
            str(windows),
        ]
    )
    assert status == 0
    first = json.loads(windows.read_text().splitlines()[0])
    assert first["messages"][0]["role"] == "system"
    assert first["tools"][0]["type"] == "function"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--id", "nope"], "no conversation with id 'nope'"),
        (["--model", "nope"], "no model profile named 'nope'"),
        (["--budget", "300"], "budget"),
        (["--chart", "no-such-chart"], "no-such-chart"),
    ],
)
def test_run_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    """Bad input is one line on stderr, exit 2, and no output file appears."""
    report = tmp_path / "r.json"
    status = main(["run", str(PONY), "--store", "memory", "--report", str(report), *args])
    err = capsys.readouterr().err
    assert status == 2
    assert needle in err and err.count("\n") == 1
    assert not report.exists()
    assert not list(tmp_path.iterdir())


def test_run_not_a_conversation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that is not JSON, or not a conversation, names the file."""
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert main(["run", str(bad), "--store", "memory"]) == 2
    assert "bad.json:1: not JSON" in capsys.readouterr().err
    bad.write_text('{"model": "x"}')
    assert main(["run", str(bad), "--store", "memory"]) == 2
    assert "not a conversation" in capsys.readouterr().err


def test_run_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An output path in a missing folder fails before the replay, exit 2."""
    target = tmp_path / "missing" / "r.json"
    assert main(["run", str(PONY), "--store", "memory", "--report", str(target)]) == 2
    assert "cannot be written" in capsys.readouterr().err


def _replay(transcript: Transcript, budget: int) -> None:
    run = RunInput(
        transcript=transcript,
        tools=synthesise_tools(transcript.messages),
        format="jsonl",
        tools_synthesised=True,
    )

    def factory(state: LayeredState) -> Engine:
        return Engine(state=state, budget=budget, store=MemoryStore())

    result = replay(run, engine_factory=factory, reflect_every=10)
    bad = [t for t in result.turns if not (t.valid and t.within_budget)]
    assert not bad, (transcript.id, budget, bad[0].violations)


@pytest.mark.corpus
@pytest.mark.slow
@pytest.mark.parametrize("budget", [8_000, 64_000])
def test_corpus_replays_valid_within_budget(corpus: list[Transcript], budget: int) -> None:
    """Every corpus conversation replays with every window valid and within budget, or a
    budget error naming what is too large."""
    refusals: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CtxflowWarning)
        for transcript in corpus:
            try:
                _replay(transcript, budget)
            except BudgetExceeded as exc:
                refusals.append(exc.message)
    # The only warning: a compression that stopped above its target, within the hard limit.
    assert all("above its target" in str(w.message) for w in caught)
    # A refusal names the numbers (what is too large, and the budget).
    assert all(any(ch.isdigit() for ch in message) for message in refusals)
    assert len(refusals) <= len(corpus) // 10


def test_replay_is_deterministic(tmp_path: Path) -> None:
    """Two replays of one transcript with one budget write byte-identical windows."""
    outputs = []
    for i in range(2):
        target = tmp_path / f"w{i}.jsonl"
        args = ["run", str(PONY), "--budget", "9000", "--store", "memory", "--quiet"]
        assert main([*args, "--windows", str(target)]) == 0
        outputs.append(target.read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0].count(b"\n") == 49
