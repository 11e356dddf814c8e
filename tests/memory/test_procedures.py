"""Procedural memory: success signals, learning procedures from trajectories, loading them."""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ctxflow.engine import Engine
from ctxflow.errors import CtxflowWarning, FormatError
from ctxflow.layers import LayeredState, Procedure
from ctxflow.memory import _procedures as procedures_module
from ctxflow.memory._procedures import (
    MAX_ENTRIES,
    MAX_FILE_BYTES,
    MAX_STEPS,
    ProcedureLearner,
    actions_of,
    failure_signal,
    learn_procedures,
    load_procedures,
    procedures_from_plain,
    success_signal,
)
from ctxflow.model import Message, ToolResultBlock, ToolUseBlock, Transcript
from ctxflow.replay.inputs import RunInput, read_run_input, synthesise_tools
from ctxflow.replay.runner import replay
from ctxflow.stores import MemoryStore

PONY = (
    Path(__file__).resolve().parents[2] / "examples" / "transcripts" / "openhands-ponyc-4588.jsonl"
)


class Trajectory:
    """Builds a tool-calling trajectory with readable, stable message ids."""

    def __init__(self) -> None:
        self.messages: list[Message] = [Message(role="user", content="Fix the bug.", id="task")]

    def call(
        self, name: str, tool_input: dict[str, Any], result: str, *, is_error: bool = False
    ) -> tuple[str, str]:
        """Append one call and its result; their message ids."""
        n = len(self.messages)
        use = ToolUseBlock(id=f"toolu_{n}", name=name, input=tool_input)
        self.messages.append(Message(role="assistant", content=[use], id=f"a{n}"))
        answer = ToolResultBlock(tool_use_id=use.id, content=result, is_error=is_error)
        self.messages.append(Message(role="user", content=[answer], id=f"u{n + 1}"))
        return f"a{n}", f"u{n + 1}"

    def bash(self, command: str, result: str, *, is_error: bool = False) -> tuple[str, str]:
        """Append a bash call."""
        return self.call("bash", {"command": command}, result, is_error=is_error)

    def edit(self) -> tuple[str, str]:
        """Append a successful str_replace edit."""
        return self.call(
            "str_replace_editor",
            {"command": "str_replace", "path": "m.py", "old_str": "a", "new_str": "b"},
            "The file m.py has been edited.",
        )

    def text_action(self, command: str, observation: str) -> tuple[str, str]:
        """Append a mini-swe-agent style action: a fenced bash block and a text observation."""
        n = len(self.messages)
        reply = f"THOUGHT: next.\n\n```bash\n{command}\n```"
        self.messages.append(Message(role="assistant", content=reply, id=f"a{n}"))
        self.messages.append(Message(role="user", content=observation, id=f"u{n + 1}"))
        return f"a{n}", f"u{n + 1}"


PYTEST_FAIL = "F.\n=========== 1 failed, 1 passed in 0.12s ===========\n"
PYTEST_PASS = "..\n=========== 2 passed in 0.10s ===========\n"


def _fix_loop(trajectory: Trajectory) -> tuple[str, ...]:
    """A failing test run, an edit and a passing run; the ids of the edit and the last run."""
    trajectory.bash("python -m pytest tests", PYTEST_FAIL)
    edit = trajectory.edit()
    run = trajectory.bash("python -m pytest tests", PYTEST_PASS)
    return (*edit, *run)


def _result(text: str, *, is_error: bool = False) -> Message:
    block = ToolResultBlock(tool_use_id="toolu_1", content=text, is_error=is_error)
    return Message(role="user", content=[block], id="r")


# --- success and failure signals ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (PYTEST_PASS, "pytest passed"),
        ("3 passed, 1 skipped in 0.51s\n", "pytest passed"),
        ("...\n----\nRan 3 tests in 0.010s\n\nOK\n", "unittest OK"),
        ("Ran 24 tests in 0.1s\n\nOK (skipped=2)\nDestroying test database", "unittest OK"),
        ("=== tests finished: 9 passed, in 0.09 seconds ===", "sympy tests passed"),
        ("test result: ok. 4 passed; 0 failed; 0 ignored", "cargo test ok"),
        ("ok  \texample.com/pkg\t0.012s\n", "go test ok"),
        (
            "   Compiling app\n    Finished `dev` profile [unoptimized] in 2.3s",
            "cargo build finished",
        ),
        ("BUILD SUCCESSFUL in 3s\n", "build successful"),
        ("[100%] Built target ponyc\n", "build finished"),
        ("Successfully built marshmallow\n", "build finished"),
    ],
)
def test_success_signal_names_test_and_build_successes(text: str, kind: str) -> None:
    """Clean test summaries and finished builds are successes, named by their kind."""
    assert success_signal(_result(text)) == kind


@pytest.mark.parametrize(
    "text",
    [
        PYTEST_FAIL,
        "===== 2 passed, 1 error in 0.3s =====",
        "Ran 83 tests in 0.2s\n\nFAILED (failures=3, errors=3)",
        "Ran 0 tests in 0.000s\n\nOK\n",
        "=== tests finished: 4 passed, 1 failed, in 0.1 seconds ===",
        "test result: ok. 3 passed; 0 failed\ntest result: FAILED. 1 passed; 1 failed",
        "ok  \texample.com/a\t0.01s\n--- FAIL: TestB (0.00s)\nFAIL\texample.com/b\t0.02s",
        "<returncode>1</returncode>\n<output>\n2 passed in 0.1s\n</output>",
        "<returncode>0</returncode>\n<output>\nhello\n</output>",
        "Exit code: 0",
        "",
    ],
)
def test_success_signal_is_conservative(text: str) -> None:
    """Failed or empty test runs, a non-zero exit code and a bare exit code 0 are no success."""
    assert success_signal(_result(text)) is None


@pytest.mark.parametrize(
    "text",
    [
        "<returncode>0</returncode>\n<output>\nfixed\n</output>",
        "done\n[The command completed with exit code 0.]",
        "Exit code: 0",
    ],
)
def test_exit_code_zero_counts_only_after_a_failure_of_the_same_action(text: str) -> None:
    """Exit code 0 is a success for an action that failed last time, and only for it."""
    failed = {"bash: python"}
    message = _result(text)
    assert success_signal(message, action="bash: python", failed=failed) == (
        "exit code 0 after a failed bash: python"
    )
    assert success_signal(message, action="bash: make", failed=failed) is None
    assert success_signal(message, action="bash: python") is None


def test_a_result_no_longer_flagged_counts_after_a_flagged_failure() -> None:
    """Without an exit code, a result not flagged as an error recovers a failed action."""
    action = "str_replace_editor: str_replace"
    fine = _result("The file m.py has been edited.")
    assert (
        success_signal(fine, action=action, failed={action}) == f"no error after a failed {action}"
    )
    assert (
        success_signal(_result("ERROR: no match", is_error=True), action=action, failed={action})
        is None
    )


def test_a_read_that_works_again_is_no_success() -> None:
    """Inspections (cat, grep, view) never count as a recovery."""
    message = _result("<returncode>0</returncode>\n<output>\nx\n</output>")
    assert success_signal(message, action="bash: cat", failed={"bash: cat"}) is None


@pytest.mark.parametrize(
    ("text", "is_error", "action", "failure"),
    [
        ("<returncode>2</returncode>\n<output>\n</output>", False, "bash: python", "exit code 2"),
        ("<returncode>1</returncode>\n<output>\n</output>", False, "bash: grep", None),
        ("<returncode>2</returncode>\n<output>\n</output>", False, "bash: grep", "exit code 2"),
        ("ERROR: invalid path", True, "str_replace_editor: view", "the tool reported an error"),
        ("", True, "execute_bash: grep", None),
        ("Traceback (most recent call last):\n  File 'x.py'\nValueError", False, "", "traceback"),
        (PYTEST_FAIL, False, "bash: pytest", "tests failed"),
        ("bash: ponyc: command not found", False, "bash: ponyc", "command not found"),
        (
            "Your proposed edit has introduced new syntax error(s).",
            False,
            "bash: edit",
            "edit refused",
        ),
        ("all good", False, "bash: python", None),
    ],
)
def test_failure_signal(text: str, is_error: bool, action: str, failure: str | None) -> None:
    """Failures come from exit codes, error flags and failure text; grep's 1 means no match."""
    assert failure_signal(_result(text, is_error=is_error), action=action) == failure


def test_signals_read_text_observations_and_skip_assistant_messages() -> None:
    """A user text observation is read like a result; an assistant message never signals."""
    observation = Message(role="user", content=PYTEST_PASS, id="o")
    assert success_signal(observation) == "pytest passed"
    assert success_signal(Message(role="assistant", content=PYTEST_PASS, id="a")) is None


def test_only_the_head_and_tail_of_a_huge_result_are_read() -> None:
    """A summary buried in the middle of a huge result is not read; the tail's is."""
    filler = "x" * 100_000
    assert success_signal(_result(filler + PYTEST_PASS)) == "pytest passed"
    assert success_signal(_result(filler + PYTEST_PASS + filler)) is None


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("build succeeded, 2 warnings.\n\nThe HTML pages are in _build/html.", "build finished"),
        (
            "\x1b[32m======= \x1b[32m\x1b[1m3 passed\x1b[0m\x1b[32m in 0.12s\x1b[0m =======\x1b[0m",
            "pytest passed",
        ),
        ("Result with fields=[]: {}\nSUCCESS: Result is empty dict.\n", "the check passed"),
        ("<returncode>0</returncode>\n<output>\nAll tests passed!\n</output>", "the check passed"),
    ],
)
def test_success_signal_reads_sphinx_builds_coloured_summaries_and_checks(
    text: str, kind: str
) -> None:
    """Sphinx's "build succeeded", a coloured pytest summary and a check reporting SUCCESS."""
    assert success_signal(_result(text)) == kind


@pytest.mark.parametrize(
    "text",
    [
        "SUCCESS: case 1\nFAIL: case 2 returned None\n",
        "SUCCESS: parsed\nFAILED: the round trip differs\n",
        "<returncode>1</returncode>\n<output>\nSUCCESS: first half\n</output>",
        "Expected SUCCESS but the query returned False\n",
        "\x1b[31m=== 1 failed, \x1b[32m2 passed\x1b[0m in 0.1s ===\x1b[0m",
    ],
)
def test_a_check_that_also_fails_is_no_success(text: str) -> None:
    """A SUCCESS line beside a failure, after a non-zero exit or mid-sentence is no success."""
    assert success_signal(_result(text)) is None


RECORD = '{"reservation_id": "GV1N64", "user_id": "james_patel_9828", "status": "cancelled"}'


@pytest.mark.parametrize(
    ("action", "text", "is_error", "success", "failure"),
    [
        ("cancel_reservation", RECORD, False, "a completed cancel_reservation", None),
        ("book_reservation", RECORD, False, "a completed book_reservation", None),
        (
            "send_certificate",
            "Certificate c_1 added to user u_1.",
            False,
            "a completed send_certificate",
            None,
        ),
        (
            "book_reservation",
            "Error: payment amount does not add up",
            True,
            None,
            "the tool reported an error",
        ),
        (
            "update_reservation_flights",
            "Error: not enough seats",
            False,
            None,
            "the tool reported an error",
        ),
        ("get_reservation_details", RECORD, False, None, None),
        ("transfer_to_human_agents", "Transfer successful", False, None, None),
        ("cancel_reservation", "", False, None, None),
        ("execute_bash: update-alternatives", "done", False, None, None),
    ],
)
def test_a_transaction_tool_succeeds_when_its_result_is_no_error(
    action: str, text: str, is_error: bool, success: str | None, failure: str | None
) -> None:
    """A tool named for a change to a record succeeds with a record; "Error: ..." fails it."""
    message = _result(text, is_error=is_error)
    assert success_signal(message, action=action) == success
    assert failure_signal(message, action=action) == failure


# --- actions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tool_input", "actions"),
    [
        ("bash", {"command": "cd /testbed && python -m pytest -q t.py | tail -5"}, ("pytest",)),
        (
            "bash",
            {"command": "cat <<'EOF' > t.py\nx = 'a && b'\nEOF\npython t.py"},
            ("cat >", "python"),
        ),
        (
            "bash",
            {"command": "sed -i 's/a/b/' f.py && python reproduce.py 2>&1"},
            ("sed -i", "python"),
        ),
        ("bash", {"command": "sed -n '1,20p' f.py"}, ("sed",)),
        ("bash", {"command": "FOO=1 timeout 60 ./tests/runtests.py x"}, ("tests/runtests.py",)),
        ("bash", {"command": '/usr/bin/python3 -c "\nimport x\n"'}, ("python -c",)),
        ("bash", {"command": "git diff --cached"}, ("git diff",)),
        ("bash", {"command": "edit 5:5\n  x = 1\nend_of_edit\n"}, ("edit",)),
        ("bash", {"command": "cd /repo"}, ("cd",)),
        ("execute_bash", {"command": "make clean && make"}, ("make",)),
        ("str_replace_editor", {"command": "view", "path": "/a.c"}, ("view",)),
        ("get_user_details", {"user_id": "u1"}, None),
    ],
)
def test_actions_of_normalises_calls(
    name: str, tool_input: dict[str, Any], actions: tuple[str, ...] | None
) -> None:
    """Calls become tool name plus program or sub-command; scene setting is left out."""
    call = ToolUseBlock(id="toolu_1", name=name, input=tool_input)
    expected = (name,) if actions is None else tuple(f"{name}: {a}" for a in actions)
    assert actions_of(call) == expected


# --- learning --------------------------------------------------------------------------


def test_a_fix_then_test_loop_seen_twice_is_one_procedure() -> None:
    """Fail, edit, pass, twice: one procedure whose evidence is the loops' messages."""
    trajectory = Trajectory()
    first = _fix_loop(trajectory)
    trajectory.bash("ls", "m.py tests")
    second = _fix_loop(trajectory)

    (procedure,) = learn_procedures(trajectory.messages, step=7)

    assert isinstance(procedure, Procedure)
    assert procedure.name == "edit, then run pytest until it passes"
    assert procedure.steps == (
        "1. str_replace_editor: str_replace\n2. bash: pytest\n"
        "Success when: pytest passed (seen 2 times)."
    )
    assert procedure.seen == 2
    assert procedure.step == 7
    assert procedure.evidence == first + second
    assert procedure.source == second[-1]
    ids = {m.id for m in trajectory.messages}
    assert set(procedure.evidence) <= ids


def test_a_loop_seen_once_is_no_procedure_unless_min_seen_is_one() -> None:
    """One success is not a procedure at min_seen=2; at min_seen=1 it is."""
    trajectory = Trajectory()
    _fix_loop(trajectory)
    assert learn_procedures(trajectory.messages) == []
    (procedure,) = learn_procedures(trajectory.messages, min_seen=1)
    assert procedure.seen == 1


def test_failures_never_followed_by_success_teach_nothing() -> None:
    """Edits and failing runs with no success afterwards give no procedure."""
    trajectory = Trajectory()
    for _ in range(4):
        trajectory.bash("python -m pytest", PYTEST_FAIL)
        trajectory.edit()
        trajectory.bash("python repro.py", "<returncode>1</returncode>\n<output>\nboom\n</output>")
    assert learn_procedures(trajectory.messages, min_seen=1) == []


def test_mini_swe_agent_text_actions_are_learned() -> None:
    """Fenced bash blocks with <returncode> observations form the same loops as tool calls."""
    trajectory = Trajectory()
    evidence: list[str] = []
    for _ in range(3):
        trajectory.text_action(
            "python repro.py", "<returncode>1</returncode>\n<output>\nE\n</output>"
        )
        trajectory.text_action(
            "grep -n foo m.py", "<returncode>0</returncode>\n<output>\n3:foo\n</output>"
        )
        evidence += trajectory.text_action(
            "sed -i 's/a/b/' m.py", "<returncode>0</returncode>\n<output>\n</output>"
        )
        evidence += trajectory.text_action(
            "python repro.py", "<returncode>0</returncode>\n<output>\nok\n</output>"
        )

    (procedure,) = learn_procedures(trajectory.messages)

    assert procedure.name == "edit, then run python until it exits 0"
    assert procedure.seen == 3
    assert "exit code 0 after a failed bash: python" in procedure.steps
    assert procedure.evidence == tuple(evidence)  # the grep only looked: not part of it
    assert procedure.source == evidence[-1]


def test_flagged_failures_then_unflagged_runs_are_learned() -> None:
    """OpenHands style: a build flagged as an error, an edit, and the same build unflagged."""
    trajectory = Trajectory()
    for _ in range(2):
        trajectory.call(
            "execute_bash", {"command": "make"}, "make: *** [all] Error 2", is_error=True
        )
        trajectory.edit()
        trajectory.call("execute_bash", {"command": "cd /w && make"}, "cc -o app app.c")
    (procedure,) = learn_procedures(trajectory.messages)
    assert procedure.name == "edit, then run make until it reports no error"
    assert "no error after a failed execute_bash: make" in procedure.steps


def test_a_traceback_then_a_clean_rerun_is_learned() -> None:
    """SWE-agent style (no exit codes): a traceback, an edit, and the script running cleanly."""
    trajectory = Trajectory()
    crash = "Traceback (most recent call last):\n  File 'decrypt.py', line 5\nTypeError: x"
    for _ in range(2):
        trajectory.bash("python decrypt.py\n", crash)
        trajectory.bash(
            "edit 5:5\n    x = int(y)\nend_of_edit\n", "[File: decrypt.py (6 lines total)]"
        )
        trajectory.bash("python decrypt.py\n", "HTB{flag}")
    (procedure,) = learn_procedures(trajectory.messages)
    assert procedure.steps.startswith("1. bash: edit\n2. bash: python\n")


def test_a_pending_call_at_the_end_is_ignored() -> None:
    """A final call with no result yet is not read."""
    trajectory = Trajectory()
    for _ in range(2):
        _fix_loop(trajectory)
    use = ToolUseBlock(id="toolu_end", name="submit", input={})
    trajectory.messages.append(Message(role="assistant", content=[use], id="end"))
    (procedure,) = learn_procedures(trajectory.messages)
    assert "end" not in procedure.evidence


def test_a_reply_with_two_bash_blocks_is_no_action() -> None:
    """An assistant text with several fenced blocks was refused by the agent: no call."""
    trajectory = Trajectory()
    for _ in range(2):
        trajectory.text_action("python -m pytest", PYTEST_FAIL)
        n = len(trajectory.messages)
        twice = "```bash\nsed -i 's/a/b/' m.py\n```\n```bash\npython -m pytest\n```"
        trajectory.messages.append(Message(role="assistant", content=twice, id=f"a{n}"))
        trajectory.messages.append(Message(role="user", content=PYTEST_PASS, id=f"u{n + 1}"))
    assert learn_procedures(trajectory.messages, min_seen=1) == []


def test_the_same_tail_seen_in_different_places_is_one_procedure() -> None:
    """Two successes whose sequences share a tail of two actions teach that tail."""
    trajectory = Trajectory()
    trajectory.bash("python -m pytest", PYTEST_FAIL)
    trajectory.bash("git checkout m.py", "")
    trajectory.edit()
    last = trajectory.bash("python -m pytest", PYTEST_PASS)
    trajectory.bash("python -m pytest", PYTEST_FAIL)
    edit = trajectory.edit()
    final = trajectory.bash("python -m pytest", PYTEST_PASS)

    (procedure,) = learn_procedures(trajectory.messages)

    assert procedure.steps.startswith("1. str_replace_editor: str_replace\n2. bash: pytest\n")
    assert procedure.seen == 2
    assert procedure.evidence[-4:] == (*edit, *final)
    assert last[-1] in procedure.evidence


def test_sequences_are_capped_and_repeats_folded() -> None:
    """Repeated actions fold into one step and a sequence holds at most MAX_STEPS actions."""
    trajectory = Trajectory()
    programs = [f"tool{i}" for i in range(MAX_STEPS + 3)]
    for _ in range(2):
        trajectory.bash("python -m pytest", PYTEST_FAIL)
        for program in programs:
            trajectory.bash(program, "")
            trajectory.bash(program, "")
        trajectory.bash("python -m pytest", PYTEST_PASS)
    (procedure,) = learn_procedures(trajectory.messages)
    numbered = [line for line in procedure.steps.splitlines() if line[0].isdigit()]
    assert len(numbered) == MAX_STEPS
    assert numbered[-1] == f"{MAX_STEPS}. bash: pytest"


def test_importance_grows_with_seen_and_learning_is_deterministic() -> None:
    """More successes mean more importance; the same messages give the same procedures."""
    twice, thrice = Trajectory(), Trajectory()
    for _ in range(2):
        _fix_loop(twice)
    for _ in range(3):
        _fix_loop(thrice)
    (low,) = learn_procedures(twice.messages)
    (high,) = learn_procedures(thrice.messages)
    assert 0.5 < low.importance < high.importance < 1
    assert learn_procedures(thrice.messages) == learn_procedures(thrice.messages)


CRASH = "Traceback (most recent call last):\n  File 'repro.py', line 3\nKeyError: 'x'"


def test_a_loop_carried_out_twice_and_successful_once_is_a_procedure() -> None:
    """Edit and rerun, failing then working: the loop was seen twice and ended in success."""
    trajectory = Trajectory()
    trajectory.bash("python repro.py", CRASH)  # the first run: nothing changed before it
    first = (*trajectory.edit(), *trajectory.bash("python repro.py", CRASH))
    second = (*trajectory.edit(), *trajectory.bash("python repro.py", "fixed"))

    (procedure,) = learn_procedures(trajectory.messages)

    assert procedure.name == "edit, then run python until it reports no error"
    assert procedure.steps == (
        "1. str_replace_editor: str_replace\n2. bash: python\n"
        "Success when: no error after a failed bash: python (seen 2 times, 1 succeeded)."
    )
    assert (procedure.seen, procedure.importance) == (2, 0.5)
    assert procedure.evidence == first + second
    assert procedure.source == second[-1]
    assert learn_procedures(trajectory.messages, min_seen=3) == []


def test_a_long_failing_loop_keeps_its_successes_and_first_failures_as_evidence() -> None:
    """Seen counts every run of the loop; evidence is the success and the first min_seen others."""
    trajectory = Trajectory()
    trajectory.bash("python -m pytest", PYTEST_FAIL)
    runs = []
    for result in [PYTEST_FAIL] * 4 + [PYTEST_PASS]:
        runs.append((*trajectory.edit(), *trajectory.bash("python -m pytest", result)))

    (procedure,) = learn_procedures(trajectory.messages)

    assert procedure.seen == 5
    assert procedure.steps.endswith("(seen 5 times, 1 succeeded).")
    assert procedure.evidence == runs[0] + runs[1] + runs[4]
    (three,) = learn_procedures(trajectory.messages, min_seen=3)
    assert three.evidence == runs[0] + runs[1] + runs[2] + runs[4]


def test_one_call_that_works_when_retried_is_no_procedure() -> None:
    """A failed call that works the next time shows no sequence: one action must succeed twice."""
    trajectory = Trajectory()
    trajectory.call("book_reservation", {"user_id": "u1"}, "Error: payment method not found")
    trajectory.call("book_reservation", {"user_id": "u1"}, RECORD)
    trajectory.bash("make", "make: *** [all] Error 2", is_error=True)
    trajectory.bash("make", "cc -o app app.c")
    assert learn_procedures(trajectory.messages) == []
    assert len(learn_procedures(trajectory.messages, min_seen=1)) == 2


def test_a_transaction_completed_twice_is_a_procedure_without_its_lookups() -> None:
    """Two cancellations, each after a lookup: the cancellation is the procedure, twice."""
    trajectory = Trajectory()
    evidence: list[str] = []
    for reservation in ("GV1N64", "HATHAT"):
        trajectory.call("get_reservation_details", {"reservation_id": reservation}, RECORD)
        evidence += trajectory.call("cancel_reservation", {"reservation_id": reservation}, RECORD)

    (procedure,) = learn_procedures(trajectory.messages)

    assert procedure.name == "call cancel_reservation until it completes"
    assert procedure.steps == (
        "1. cancel_reservation\nSuccess when: a completed cancel_reservation (seen 2 times)."
    )
    assert procedure.evidence == tuple(evidence)


def test_a_booking_priced_again_after_an_error_is_a_procedure() -> None:
    """Calculate then book, refused with "Error: ..." and then done: seen twice, one success."""
    trajectory = Trajectory()
    for result in ("Error: payment amount does not add up, total price is 584", RECORD):
        trajectory.call("calculate", {"expression": "292 * 2"}, "584")
        trajectory.call("book_reservation", {"user_id": "u1"}, result)
    (procedure,) = learn_procedures(trajectory.messages)
    assert procedure.name == "call calculate, then call book_reservation until it completes"
    assert procedure.seen == 2


def test_what_a_look_shows_is_never_a_success() -> None:
    """A passing summary read back with cat or grep is no success: looking changed nothing."""
    trajectory = Trajectory()
    for _ in range(3):
        trajectory.edit()
        trajectory.bash("cat test.log", PYTEST_PASS)
        trajectory.bash("grep -A3 summary test.log", PYTEST_PASS)
    assert learn_procedures(trajectory.messages, min_seen=1) == []


def test_a_result_belongs_to_the_last_program_that_acts() -> None:
    """``make html && grep x out.html``: the build succeeded, not the grep."""
    trajectory = Trajectory()
    for _ in range(2):
        trajectory.edit()
        trajectory.bash(
            "cd docs && make html && grep -c MyClass _build/html/index.html",
            "build succeeded, 1 warning.\n\nThe HTML pages are in _build/html.\n3",
        )
    (procedure,) = learn_procedures(trajectory.messages)
    assert procedure.name == "edit, then run make until it builds"
    assert procedure.steps.startswith("1. str_replace_editor: str_replace\n2. bash: make\n")


def test_an_accepted_edit_does_not_cut_the_loop_it_belongs_to() -> None:
    """SWE-agent style: a crash, an edit refused then accepted, and a clean rerun: one loop."""
    trajectory = Trajectory()
    trajectory.bash("create repro.py\n", "[File: repro.py (1 lines total)]")
    trajectory.bash("edit 1:1\nimport pydicom\nend_of_edit\n", "[File: repro.py (9 lines)]")
    trajectory.bash("python repro.py\n", CRASH)
    refused = "Your proposed edit has introduced new syntax error(s). Please read this."
    trajectory.bash("edit 5:5\n  x = (\nend_of_edit\n", refused)
    fix = trajectory.bash("edit 5:5\n  x = 1\nend_of_edit\n", "[File: h.py (373 lines)]")
    run = trajectory.bash("python repro.py\n", "Script completed successfully, no errors.")

    (procedure,) = learn_procedures(trajectory.messages)

    assert procedure.steps.startswith("1. bash: edit\n2. bash: python\n")
    assert procedure.steps.endswith("(seen 2 times, 1 succeeded).")
    assert set(fix + run) <= set(procedure.evidence)


def test_a_long_session_forgets_sequences_seen_once_that_never_succeeded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past MAX_SEQUENCES, one-off sequences are forgotten; loops that succeed are kept."""
    monkeypatch.setattr(procedures_module, "MAX_SEQUENCES", 20)
    trajectory = Trajectory()
    learner = ProcedureLearner()
    sizes = []
    for n in range(60):
        trajectory.bash(f"tool{n}", "")
        if n % 20 == 0:
            _fix_loop(trajectory)
        learner(trajectory.messages)
        sizes.append(len(learner._shown))
    (procedure,) = learner(trajectory.messages)
    assert procedure.name == "edit, then run pytest until it passes"
    assert procedure.seen == 3
    assert max(sizes) <= 2 * 20 + MAX_STEPS
    assert procedure == learn_procedures(trajectory.messages)[0]


@pytest.mark.parametrize("min_seen", [0, -1, True, 1.5])
def test_min_seen_must_be_a_positive_integer(min_seen: Any) -> None:
    """A min_seen below one, or not an integer, is refused."""
    with pytest.raises(FormatError, match="'min_seen' must be a positive integer"):
        learn_procedures([], min_seen=min_seen)


# --- user-given procedures -------------------------------------------------------------


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "procedures.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_procedures_reads_a_good_file(tmp_path: Path) -> None:
    """Entries become procedures with their importance and scope (defaults where absent)."""
    path = _write(
        tmp_path,
        [
            {"name": "release", "steps": "1. tag\n2. push", "importance": 0.9, "scope": "project"},
            {"name": "test", "steps": "run pytest -q"},
        ],
    )
    release, test = load_procedures(path)
    assert release == Procedure(
        name="release", steps="1. tag\n2. push", importance=0.9, scope="project"
    )
    assert (test.importance, test.scope, test.evidence, test.seen) == (0.5, "session", (), 0)
    assert load_procedures(str(path)) == [release, test]
    assert procedures_from_plain([]) == []


@pytest.mark.parametrize(
    ("data", "rule", "index", "field"),
    [
        ([{"name": "a", "steps": "b"}, "oops"], "not_an_object", 1, ""),
        ([{"steps": "b"}], "missing_field", 0, "name"),
        ([{"name": "a", "steps": "  "}], "missing_field", 0, "steps"),
        ([{"name": "a", "steps": 3}], "missing_field", 0, "steps"),
        ([{"name": "a", "steps": "b", "importance": 1.5}], "bad_importance", 0, "importance"),
        ([{"name": "a", "steps": "b", "importance": True}], "bad_importance", 0, "importance"),
        ([{"name": "a", "steps": "b", "importance": "high"}], "bad_importance", 0, "importance"),
        ([{"name": "a", "steps": "b", "scope": "global"}], "bad_scope", 0, "scope"),
        ([{"name": "a", "steps": "b", "seen": 3}], "unknown_field", 0, "seen"),
    ],
)
def test_load_procedures_names_the_file_entry_and_field(
    tmp_path: Path, data: Any, rule: str, index: int, field: str
) -> None:
    """A bad entry raises FormatError naming the file, the entry index and the field."""
    path = _write(tmp_path, data)
    with pytest.raises(FormatError) as caught:
        load_procedures(path)
    error = caught.value
    assert (error.rule, error.details["index"], error.details["field"]) == (rule, index, field)
    assert str(path) in error.message
    assert f"entry {index}" in error.message
    assert not field or repr(field) in error.message


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        (b'{"name": "a", "steps": "b"}', "not_a_list"),
        (b'[{"name": "a",', "not_json"),
        (b'["\xff"]', "not_utf8"),
    ],
)
def test_load_procedures_refuses_unreadable_files(
    tmp_path: Path, content: bytes, rule: str
) -> None:
    """A file that is not a UTF-8 JSON list is refused, naming the file."""
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(FormatError) as caught:
        load_procedures(path)
    assert caught.value.rule == rule
    assert str(path) in caught.value.message


def test_load_procedures_refuses_a_missing_file(tmp_path: Path) -> None:
    """A file that cannot be opened is a FormatError naming it."""
    path = tmp_path / "absent.json"
    with pytest.raises(FormatError, match=r"absent\.json: cannot be read") as caught:
        load_procedures(path)
    assert caught.value.rule == "unreadable"


def test_load_procedures_refuses_too_large_files_and_too_many_entries(tmp_path: Path) -> None:
    """Files over 1 MiB and lists of more than 1,000 entries are refused."""
    assert (MAX_FILE_BYTES, MAX_ENTRIES) == (1 << 20, 1000)
    big = tmp_path / "big.json"
    big.write_bytes(b"[" + b" " * MAX_FILE_BYTES + b"]")
    with pytest.raises(FormatError, match="at most 1048576 bytes") as caught:
        load_procedures(big)
    assert caught.value.rule == "too_large"
    entry = {"name": "a", "steps": "b"}
    assert len(load_procedures(_write(tmp_path, [entry] * MAX_ENTRIES))) == MAX_ENTRIES
    with pytest.raises(FormatError, match=r"at most 1000 entries \(got 1001\)") as caught:
        load_procedures(_write(tmp_path, [entry] * (MAX_ENTRIES + 1)))
    assert caught.value.rule == "too_many"


# --- the corpus ------------------------------------------------------------------------

# Non-tau conversations learning at least one procedure (measured: 50 of 76). SWE-agent's
# short runs record no exit codes and rarely repeat anything (2 of 22 learn one).
CODING_SHARE_FLOOR = 0.6
# Per source (measured: miniswe 47/51, openhands 1/3, sweagent 2/22, taubench 27/200, all
# 77/276). A tau-bench run learns only when a transaction recurs: 87 of its 200 complete
# none, and 68 complete one kind once, so at most 45 could.
SOURCE_FLOORS = {"miniswe": 0.8, "sweagent": 0.05, "taubench": 0.1}
ALL_FLOOR = 0.25


@pytest.mark.corpus
def test_learning_over_the_corpus_gives_real_evidence(transcripts: list[Transcript]) -> None:
    """Every evidence id is a message of its conversation; the coding share is recorded."""
    convs: Counter[str] = Counter()
    learned: Counter[str] = Counter()
    started = time.perf_counter()
    for transcript in transcripts:
        source = transcript.id.split("-", 1)[0]
        procedures = learn_procedures(transcript.messages)
        ids = {m.id for m in transcript.messages}
        for procedure in procedures:
            assert procedure.seen >= 2
            assert procedure.evidence and set(procedure.evidence) <= ids, transcript.id
            assert procedure.source in ids
        convs[source] += 1
        learned[source] += bool(procedures)
    elapsed = time.perf_counter() - started
    shares = {s: f"{learned[s]}/{convs[s]} = {learned[s] / convs[s]:.2f}" for s in sorted(convs)}
    coding = [s for s in convs if s != "taubench"]
    coding_share = sum(learned[s] for s in coding) / sum(convs[s] for s in coding)
    report = f"shares {shares}; coding share {coding_share:.2f}; learned in {elapsed:.2f}s"
    assert sum(convs.values()) == 276, report
    assert coding_share >= CODING_SHARE_FLOOR, report
    for source, floor in SOURCE_FLOORS.items():
        assert learned[source] / convs[source] >= floor, report
    assert sum(learned.values()) / 276 >= ALL_FLOOR, report
    assert elapsed < 10, report  # linear: the whole corpus, 11,757 messages, in well under that


def _replayed(run: RunInput, budget: int = 12_000) -> list[Procedure]:
    """The learned procedures an engine holds after replaying ``run`` as ``ctxflow run`` does."""
    engines: list[Engine] = []

    def factory(state: LayeredState) -> Engine:
        engines.append(Engine(state=state, budget=budget, store=MemoryStore()))
        return engines[-1]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CtxflowWarning)  # a compression stopping above target
        replay(run, engine_factory=factory, reflect_every=10)
    return [p for p in engines[-1].state.memory.procedural if p.evidence]


def test_the_make_run_transcript_ends_with_a_learned_procedure() -> None:
    """Replayed at 12k as ``make run`` does, the bundled transcript learns a procedure whose
    evidence names its messages."""
    run = read_run_input(str(PONY))
    procedures = _replayed(run)
    ids = {m.id for m in run.transcript.messages}
    assert procedures
    for procedure in procedures:
        assert set(procedure.evidence) <= ids and procedure.source in ids
        assert procedure.seen >= 2


@pytest.mark.corpus
@pytest.mark.slow
def test_a_12k_replay_ends_with_what_the_whole_log_teaches(transcripts: list[Transcript]) -> None:
    """Every corpus conversation replayed at 12k ends with a learned procedure exactly when
    learning over its whole log gives one, each evidence id one of its messages."""
    for transcript in transcripts:
        run = RunInput(
            transcript=transcript,
            tools=synthesise_tools(transcript.messages),
            format="jsonl",
            tools_synthesised=True,
        )
        procedures = _replayed(run)
        ids = {m.id for m in transcript.messages}
        assert bool(procedures) == bool(learn_procedures(transcript.messages)), transcript.id
        for procedure in procedures:
            assert set(procedure.evidence) <= ids and procedure.source in ids, transcript.id


@pytest.mark.corpus
def test_the_learner_reads_a_growing_log_as_the_batch_does(
    transcripts: list[Transcript],
) -> None:
    """Fed in slices of any size, a learner learns what one batch over the same log learns."""
    checked = 0
    for n, transcript in enumerate(transcripts):
        messages = list(transcript.messages)
        expected = learn_procedures(messages)
        learner = ProcedureLearner()
        width = 1 + n % 7
        for end in range(width, len(messages) + width, width):
            got = learner(messages[:end])
        assert got == expected, transcript.id
        checked += bool(expected)
    assert checked >= 20


def test_the_learner_starts_over_when_the_log_does_not_extend() -> None:
    """A restored or different log is read from its start, not appended to what was read."""
    first, second = Trajectory(), Trajectory()
    for trajectory in (first, second):
        for _ in range(2):
            trajectory.bash("pytest", PYTEST_FAIL)
            trajectory.edit()
            trajectory.bash("pytest", PYTEST_PASS)
    second.messages = [
        Message(role=m.role, content=m.content, id=f"other-{m.id}") for m in second.messages
    ]
    learner = ProcedureLearner()
    assert learner(first.messages)
    assert learner(second.messages) == learn_procedures(second.messages)
    assert learner(first.messages[:3]) == learn_procedures(first.messages[:3]) == []


def test_a_learner_reads_each_message_once() -> None:
    """Learning again after an append reads only the appended messages."""
    trajectory = Trajectory()
    for _ in range(50):
        trajectory.bash("pytest", PYTEST_FAIL)
        trajectory.edit()
        trajectory.bash("pytest", PYTEST_PASS)
    learner = ProcedureLearner()
    learner(trajectory.messages)
    read: list[str] = []
    scan = learner._scan
    feed = scan.feed

    def counting(message: Message) -> Any:
        read.append(message.id)
        return feed(message)

    scan.feed = counting  # type: ignore[method-assign]
    trajectory.bash("pytest", PYTEST_PASS)
    learner(trajectory.messages)
    assert read == [m.id for m in trajectory.messages[-2:]]
