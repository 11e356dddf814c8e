"""Tests for ``ctxflow run``, run the way a user runs it."""

from __future__ import annotations

import json
import os
import stat
import warnings
from pathlib import Path

import pytest

from ctxflow.cli import main
from ctxflow.engine import Engine, chart_names, load_chart
from ctxflow.errors import BudgetExceeded, CtxflowWarning
from ctxflow.layers import LayeredState
from ctxflow.model import Transcript, check, messages_from_anthropic
from ctxflow.replay.inputs import RunInput, synthesise_tools
from ctxflow.replay.runner import TIERS, replay
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
    assert all(set(t["tiers"]) == set(TIERS) for t in data["turns"])
    memory = totals["memory"]
    assert memory["windows"] == 49 and set(memory["tiers"]) == set(TIERS)
    assert "epi/sem/pro memory" in out
    assert f"{memory['windows_with_long_term_memory']} of 49 windows" in out


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


@pytest.mark.parametrize("option", ["--report", "--windows", "--plot"])
def test_output_naming_a_folder_is_refused_before_the_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    """An output naming a folder is one line and exit 2 before the replay: no store, no temp."""
    folder = tmp_path / "out"
    folder.mkdir()
    store = tmp_path / "s.sqlite"
    status = main(["run", str(PONY), "--store", str(store), option, str(folder)])
    captured = capsys.readouterr()
    assert status == 2
    assert "is a folder" in captured.err and captured.err.count("\n") == 1
    assert "turn" not in captured.out  # refused before the first turn
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not list(folder.iterdir())


def test_output_in_a_parent_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output whose folder is a file is one line and exit 2, and the file is untouched."""
    parent = tmp_path / "notes.txt"
    parent.write_text("mine\n")
    status = main(["run", str(PONY), "--store", "memory", "--report", str(parent / "r.json")])
    err = capsys.readouterr().err
    assert status == 2
    assert "is not a folder" in err and err.count("\n") == 1
    assert parent.read_text() == "mine\n"


def test_output_naming_the_input_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output naming the transcript being replayed (or another output) is refused."""
    source = tmp_path / "t.jsonl"
    source.write_bytes(PONY.read_bytes())
    assert main(["run", str(source), "--store", "memory", "--windows", str(source)]) == 2
    assert "--windows must name a file of its own" in capsys.readouterr().err
    assert source.read_bytes() == PONY.read_bytes()
    same = str(tmp_path / "x.json")
    assert main(["run", str(source), "--store", "memory", "--report", same, "--plot", same]) == 2
    assert "--plot must name a file of its own" in capsys.readouterr().err


def test_output_files_honour_the_umask(tmp_path: Path) -> None:
    """Report, windows and plot are created 0644 under umask 022 (not mkstemp's 0600)."""
    paths = [tmp_path / "r.json", tmp_path / "w.jsonl", tmp_path / "p.png"]
    previous = os.umask(0o022)
    try:
        args = ["run", str(PONY), "--store", "memory", "--quiet"]
        options = ["--report", str(paths[0]), "--windows", str(paths[1]), "--plot", str(paths[2])]
        assert main([*args, *options]) == 0
    finally:
        os.umask(previous)
    assert [stat.S_IMODE(p.stat().st_mode) for p in paths] == [0o644] * 3


@pytest.mark.parametrize(
    "url", ["ftp://host/runs", "sqlite://host/runs.sqlite", "redis+cluster://127.0.0.1:7000/3"]
)
def test_a_bad_or_unsupported_store_url_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """A bad or unsupported store URL is one line and exit 2, and nothing named after it
    appears."""
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(PONY), "--store", url]) == 2
    err = capsys.readouterr().err
    assert "--store: a " in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_a_sqlite_url_names_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sqlite:///runs.sqlite`` keeps the checkpoints in runs.sqlite of the current folder."""
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(PONY), "--store", "sqlite:///runs.sqlite", "--quiet"]) == 0
    assert (tmp_path / "runs.sqlite").is_file()
    assert not (tmp_path / "sqlite:").exists()


def test_store_in_a_missing_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An explicit store path in a folder that does not exist is refused, not created."""
    assert main(["run", str(PONY), "--store", str(tmp_path / "no" / "s.sqlite")]) == 2
    assert "existing folder" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("chart", chart_names())
def test_every_shipped_chart_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], chart: str
) -> None:
    """Every shipped chart replays a bundled transcript to a final state, exit 0."""
    report = tmp_path / "r.json"
    args = ["run", str(PONY), "--chart", chart, "--store", "memory", "--quiet"]
    assert main([*args, "--report", str(report)]) == 0, capsys.readouterr()
    data = json.loads(report.read_text())
    assert data["totals"]["final_phase"] in load_chart(chart).finals
    assert data["totals"]["turns"] == 49


def test_chart_lacking_the_replay_events_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chart without the events the replay needs is named before any turn, exit 2."""
    chart = tmp_path / "bare.json"
    chart.write_text(
        json.dumps(
            {
                "name": "bare",
                "states": {
                    "idle": {
                        "initial": True,
                        "transitions": [{"event": "start", "target": "work"}],
                    },
                    "work": {"transitions": [{"event": "wrap_up", "target": "done"}]},
                    "done": {"final": True},
                },
            }
        )
    )
    report = tmp_path / "r.json"
    status = main(["run", str(PONY), "--chart", str(chart), "--store", "memory"])
    status_report = main(
        ["run", str(PONY), "--chart", str(chart), "--store", "memory", "--report", str(report)]
    )
    captured = capsys.readouterr()
    assert status == status_report == 2
    assert "turn" not in captured.out
    assert "'plan_ready' in phase 'work'" in captured.err and "'step'" in captured.err
    assert captured.err.count("\n") == 2
    assert not report.exists()


def test_quiet_keeps_the_result_line_and_written_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--quiet hides the progress but still prints the result line and each written path."""
    report = tmp_path / "r.json"
    args = ["run", str(PONY), "--store", "memory", "--quiet", "--report", str(report)]
    assert main(args) == 0
    assert capsys.readouterr().out == f"result: ok\nwrote report: {report}\n"


def test_run_records_the_transcript_for_checkpoints_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The store's sessions name the transcript file they were replayed from."""
    store = tmp_path / "s.sqlite"
    assert main(["run", str(PONY), "--store", str(store), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["checkpoints", "list", "--store", str(store)]) == 0
    assert PONY.name in capsys.readouterr().out
    assert main(["checkpoints", "list", "--store", str(store), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["transcript"] == PONY.name


def test_lone_surrogate_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message with a lone surrogate is one line naming file and line, exit 2, before a turn."""
    path = tmp_path / "bad.jsonl"
    good = {"id": "ok", "messages": [{"role": "user", "content": "fine"}]}
    bad = {"id": "bad", "messages": [{"role": "user", "content": "SURROGATE"}]}
    text = json.dumps(good) + "\n" + json.dumps(bad).replace("SURROGATE", "a \\ud800 b") + "\n"
    path.write_text(text)
    assert main(["run", str(path), "--id", "bad", "--store", "memory"]) == 2
    captured = capsys.readouterr()
    assert "bad.jsonl:2:" in captured.err and "surrogate" in captured.err
    assert captured.err.count("\n") == 1
    assert "engine effect" not in captured.err and captured.out == ""


def test_run_reports_what_a_prefix_cache_could_serve(tmp_path: Path) -> None:
    """Most request tokens repeat the previous request; the prefix breaks only at compressions."""
    report = tmp_path / "r.json"
    args = ["run", str(PONY), "--budget", "12000", "--store", "memory", "--quiet"]
    assert main([*args, "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    totals, turns = data["totals"], data["turns"]
    assert totals["cache_reuse"] >= 0.8
    assert turns[0]["cache"]["served"] == 0
    broke = [t for t in turns if t["cache"]["broke_at"] is not None]
    assert broke and totals["prefix_breaks"] == len(broke)
    assert all(t["cache"]["why"] == "compression" and t["compression"] for t in broke)
    cost = totals["input_cost"]
    assert cost["with_cache"] < cost["without_cache"] and cost["ratio"] < 0.5
    served = sum(t["cache"]["served"] for t in turns)
    assert abs(served / cost["without_cache"] - totals["cache_reuse"]) < 1e-3


@pytest.mark.parametrize("budget", ["4000", "12000"])
def test_turn_lines_show_long_term_tiers_once_a_window_carries_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], budget: str
) -> None:
    """epi= sem= pro= join the turn lines from the first window with long-term memory on."""
    report = tmp_path / "r.json"
    args = ["run", str(PONY), "--budget", budget, "--store", "memory", "--report", str(report)]
    assert main(args) == 0
    out = capsys.readouterr().out
    turns = json.loads(report.read_text())["turns"]
    lines = [line for line in out.splitlines() if " wor=" in line]
    assert len(lines) == len(turns) == 49
    seen = False
    for line, turn in zip(lines, turns, strict=True):
        tiers = turn["tiers"]
        seen = seen or any(tiers[n] for n in ("episodic", "semantic", "procedural"))
        assert line.startswith(f"{turn['turn']:>4} ")
        # The existing columns keep their widths; the tiers come after them.
        assert line.index(" wor=") == 77
        if seen:
            assert line.endswith(
                f" epi={tiers['episodic']:>6,} sem={tiers['semantic']:>6,}"
                f" pro={tiers['procedural']:>6,}"
            )
        else:
            assert " epi=" not in line and " sem=" not in line
    memory = json.loads(report.read_text())["totals"]["memory"]
    assert seen == (memory["windows_with_long_term_memory"] > 0)
    if budget == "4000":
        assert seen, "a 4,000-token replay consolidates long-term memory"
        assert "epi/sem/pro memory     " in out and "after the first compression" in out
