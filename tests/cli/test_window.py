"""Tests for ``ctxflow window``, run the way a user runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctxflow.budget import build_window, window_measure
from ctxflow.cli import main
from ctxflow.engine import Engine
from ctxflow.errors import FormatError
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation, Message, Role, read_transcripts
from ctxflow.replay.inputs import read_run_input
from ctxflow.replay.runner import replay_to_turn
from ctxflow.stores import MemoryStore
from ctxflow.tokens import counter_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "transcripts"
PONY = EXAMPLES / "openhands-ponyc-4588.jsonl"
TURNS = 49


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], list[str]]:
    """Every window ``run --windows`` writes at a 9000-token budget, and each turn's phase."""
    folder = tmp_path_factory.mktemp("run")
    windows, report = folder / "w.jsonl", folder / "r.json"
    args = ["run", str(PONY), "--budget", "9000", "--store", "memory", "--quiet"]
    assert main([*args, "--windows", str(windows), "--report", str(report)]) == 0
    bodies = [json.loads(line) for line in windows.read_text().splitlines()]
    phases = [turn["phase"] for turn in json.loads(report.read_text())["turns"]]
    return bodies, phases


def _window(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict[str, Any], str]:
    """The body ``ctxflow window`` prints (stdout must be one JSON document) and its stderr."""
    assert main(["window", str(PONY), *args]) == 0
    out, err = capsys.readouterr()
    return json.loads(out), err


def _assistants() -> list[Message]:
    messages = next(iter(read_transcripts(PONY))).messages
    return [m for m in messages if m.role is Role.ASSISTANT]


def _tool_ids(body: dict[str, Any]) -> set[str]:
    """The ids of every tool call and tool result in an Anthropic body."""
    ids = set()
    for message in body["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else ():
            if block["type"] == "tool_use":
                ids.add(block["id"])
            elif block["type"] == "tool_result":
                ids.add(block["tool_use_id"])
    return ids


def _late_context(body: dict[str, Any]) -> str:
    """The text of the last block of the last message: where the late context goes."""
    last = body["messages"][-1]["content"]
    return str(last[-1]["text"] if isinstance(last, list) else last)


def _without_late_context(body: dict[str, Any]) -> list[Any]:
    """The body's messages with the late context block left off."""
    messages = json.loads(json.dumps(body["messages"]))
    messages[-1]["content"] = messages[-1]["content"][:-1]
    return list(messages)


def _allocated(err: str, layer: str) -> int:
    """The allocation ``--explain`` shows for ``layer``."""
    row = next(line for line in err.splitlines() if line.split()[:1] == [layer])
    return int(row.split()[1].replace(",", ""))


def test_default_is_the_last_turn_before_its_assistant_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --at the body is the last turn's window: it ends with the previous turn's results."""
    body, _ = _window(capsys, "--phase", "execution", "--budget", "9000")
    assistants = _assistants()
    assert len(assistants) == TURNS
    last, previous = assistants[-1], assistants[-2]
    assert body["messages"][-1]["role"] == "user"
    assert {u.id for u in previous.tool_uses} <= _tool_ids(body)
    assert not {u.id for u in last.tool_uses} & _tool_ids(body)


def test_at_picks_the_turn(capsys: pytest.CaptureFixture[str]) -> None:
    """--at 6 holds turn 5's assistant message and its results, which --at 5 does not."""
    fifth, _ = _window(capsys, "--phase", "execution", "--budget", "9000", "--at", "5")
    sixth, _ = _window(capsys, "--phase", "execution", "--budget", "9000", "--at", "6")
    turn_5 = {u.id for u in _assistants()[4].tool_uses}
    assert turn_5 and not turn_5 & _tool_ids(fifth)
    assert turn_5 <= _tool_ids(sixth)
    assert len(sixth["messages"]) == len(fifth["messages"]) + 2
    assert sixth["messages"][-2]["role"] == "assistant"


def test_phase_changes_the_late_context_and_the_allocation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each phase's window names that phase and allocates its own way; at 9000 tokens the
    engine's compression keeps the whole stream in budget, so the messages are the same."""
    bodies, allocations = {}, {}
    for phase in ("planning", "execution", "reflection"):
        body, err = _window(capsys, "--phase", phase, "--budget", "9000", "--explain")
        assert f"phase: {phase}" in _late_context(body)
        bodies[phase] = _without_late_context(body)
        allocations[phase] = (_allocated(err, "memory"), _allocated(err, "evidence"))
    assert bodies["planning"] == bodies["execution"] == bodies["reflection"]
    assert len(set(allocations.values())) == 3


def test_a_binding_budget_can_change_what_a_phase_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The engine's compression keeps the stream within the window's budget (it fires before
    the selector would have to leave turns out), so at 3000 tokens turn 19 shows the same
    messages in planning and execution; the phases' allocations still differ. Where a budget
    binds — the recorded conversation's turns at 35% of their tokens, no compression — the
    phases show different messages (the selector's own tests cover each phase's shape)."""
    args = ("--budget", "3000", "--at", "19", "--explain")
    planning, planning_err = _window(capsys, "--phase", "planning", *args)
    execution, execution_err = _window(capsys, "--phase", "execution", *args)
    assert _without_late_context(planning) == _without_late_context(execution)
    assert "left out, masked or trimmed: nothing" in planning_err
    assert "left out, masked or trimmed: nothing" in execution_err
    assert _allocated(planning_err, "work") != _allocated(execution_err, "work")
    messages = [m for m in next(iter(read_transcripts(PONY))).messages if m.role is not Role.SYSTEM]
    conversation = Conversation(messages[:40], measure=window_measure(counter_for("cl100k_base")))
    budget = conversation.effective_tokens * 35 // 100 + 1_500
    shown = {
        phase: build_window(
            LayeredState(),
            conversation,
            phase=phase,
            counter=counter_for("cl100k_base"),
            budget=budget,
        )
        for phase in ("planning", "execution", "reflection")
    }
    assert any(w.report.excluded for w in shown.values())
    lists = {p: repr([(m.role, m.content) for m in w.messages]) for p, w in shown.items()}
    assert len(set(lists.values())) == 3


def test_window_equals_what_run_writes(
    capsys: pytest.CaptureFixture[str], recorded: tuple[list[dict[str, Any]], list[str]]
) -> None:
    """The window of a turn in the phase the replay is in there is the body run writes for it,
    the events leading into the turn taken (turn 48 is built in reflection)."""
    bodies, phases = recorded
    assert phases[47] == "reflection"
    for turn in (1, 48, TURNS):
        at = ["--at", str(turn)] if turn != TURNS else []
        phase = phases[turn - 1]
        body, err = _window(capsys, "--phase", phase, "--budget", "9000", "--explain", *at)
        assert body == bodies[turn - 1], turn
        assert f"phase {phase} (the replay is in {phase})" in err


def test_openai_body(capsys: pytest.CaptureFixture[str]) -> None:
    """--api openai prints a Chat Completions body with function tools."""
    body, _ = _window(capsys, "--phase", "execution", "--api", "openai", "--budget", "9000")
    assert body["messages"][0]["role"] == "system"
    assert body["tools"][0]["type"] == "function"
    assert "max_completion_tokens" in body


def test_model_option(capsys: pytest.CaptureFixture[str]) -> None:
    """--model picks the profile the body is rendered for."""
    body, _ = _window(capsys, "--phase", "planning", "--model", "claude-haiku-4-5", "--at", "3")
    assert body["model"] == "claude-haiku-4-5"


def test_another_chart_and_its_own_phase(capsys: pytest.CaptureFixture[str]) -> None:
    """--chart replays through that chart and accepts a phase only it has."""
    body, err = _window(
        capsys, "--chart", "review_loop", "--phase", "review", "--at", "3", "--explain"
    )
    assert "phase: review" in _late_context(body)
    assert "chart review_loop" in err


def test_explain_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """--explain writes the layers, exclusions and allowed tools to stderr; stdout stays JSON."""
    body, err = _window(capsys, "--phase", "execution", "--budget", "4000", "--explain")
    assert body["messages"]
    assert "turn 49 of 49, phase execution" in err
    assert "of the 4,000 input budget" in err
    assert "layer" in err and "allocated" in err
    for layer in ("system", "memory", "evidence", "work"):
        assert _allocated(err, layer) >= 0
    assert "short_term" in err
    assert "left out, masked or trimmed:" in err
    assert "tools phase execution allows: execute_bash, str_replace_editor, think" in err


def test_writes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command keeps its checkpoints in memory: nothing appears in the folder or the cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _window(capsys, "--phase", "execution", "--at", "2")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--phase", "nowhere"],
            "--phase must be a phase of chart 'agent_loop' (idle, planning, execution, "
            "reflection, paused, failed) (got 'nowhere')",
        ),
        (["--phase", "execution", "--at", "0"], "from 1 to 49"),
        (["--phase", "execution", "--at", "999"], "has 49 assistant turns) (got 999)"),
        (["--phase", "execution", "--budget", "300"], "input budget of 300 tokens"),
        (["--phase", "execution", "--model", "nope"], "no model profile named 'nope'"),
        (["--phase", "execution", "--id", "nope"], "no conversation with id 'nope'"),
        (["--phase", "execution", "--chart", "nope"], "no chart named 'nope'"),
        (["--phase", "execution", "--reflect-every", "-1"], "--reflect-every must be >= 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    """Bad input is one line on stderr naming what is wrong, exit 2, nothing on stdout."""
    assert main(["window", str(PONY), *args]) == 2
    out, err = capsys.readouterr()
    assert not out
    assert err.startswith("ctxflow window: error: ") and err.count("\n") == 1
    assert needle in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that cannot be read is one line naming it, exit 2."""
    missing = tmp_path / "missing.jsonl"
    assert main(["window", str(missing), "--phase", "execution"]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: cannot be read" in err and err.count("\n") == 1


def test_conversation_without_assistant_turns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A conversation with no assistant turn has no window to show: one line, exit 2."""
    line = json.loads(PONY.read_text().splitlines()[0])
    line["messages"] = line["messages"][:2]
    task = tmp_path / "task.jsonl"
    task.write_text(json.dumps(line) + "\n")
    assert main(["window", str(task), "--phase", "planning"]) == 2
    err = capsys.readouterr().err
    assert "has no assistant turn" in err and err.count("\n") == 1


@pytest.mark.parametrize("turn", [0, TURNS + 1])
def test_replay_to_turn_refuses_a_missing_turn_before_making_an_engine(turn: int) -> None:
    """replay_to_turn raises FormatError naming the turn count before it makes the engine."""
    made: list[LayeredState] = []

    def factory(state: LayeredState) -> Engine:
        made.append(state)
        return Engine(state=state, store=MemoryStore())

    with pytest.raises(FormatError) as caught:
        replay_to_turn(read_run_input(PONY), turn, engine_factory=factory)
    assert caught.value.rule == "turn"
    assert f"from 1 to {TURNS} (got {turn})" in str(caught.value)
    assert not made
