"""Procedural memory: tool-call sequences that ended in a success, learned from a trajectory.

An agent that fixed a failing test by editing and re-running it twice has shown
a procedure. This module finds such loops in a list of messages and turns each
one that recurs into a :class:`~ctxflow.layers.Procedure`, with the ids of the
messages it was learned from as evidence.

Four pieces, each small and table-driven:

- **Actions.** A tool call is normalised to ``"<tool>: <verb>"``: the program
  of a shell command (``bash: pytest``, ``bash: sed -i``), the sub-command of an
  editor tool (``str_replace_editor: str_replace``) or the bare tool name. A
  shell command that runs several programs gives several actions
  (``cat <<EOF > t.py ... python t.py`` is ``cat >`` then ``python``); its
  result belongs to the last that changes something (``make html && grep x
  out.html`` is judged as the build), or to the last when none does. Calls
  come from ``tool_use`` blocks or, for text-action agents (mini-swe-agent
  style), from an assistant text holding exactly one fenced ``bash`` block,
  answered by the next user message's text.
- **Signals.** A result counts as a success only for a reason this module can
  name: a clean test summary (pytest, unittest, sympy, cargo, go), a build that
  says it finished (make, cargo, gradle, sphinx), a check the agent wrote that
  reports it passed (a line starting ``SUCCESS``), a transaction tool (one
  named for a change to a record, such as ``cancel_reservation``) whose result
  is not an error, or, *after a failure of the same action*, an exit code 0 or
  a result with no error flag and no failure text. A bare exit code 0 is not a
  success: most commands exit 0. Failures are read the same way (exit codes,
  error flags, ``Error: ...`` from a transaction tool, failed test summaries,
  tracebacks).
- **Attempts.** Every run of an action that changes something is an attempt:
  the actions since that action last ran (or since the start), ending with
  it. Actions that only look (``ls``, ``grep``, ``view``, ``get_...``) are left
  out and make no attempt, so what they show is never a success; immediate
  repeats are folded and at most :data:`MAX_STEPS` actions are kept.
- **Procedures.** A sequence of actions is a procedure when at least one
  attempt showing it ended in a success and it was *seen* ``min_seen`` times:
  for two actions or more, carried out ``min_seen`` times (whole, or as the
  tail of a longer attempt), whatever those runs ended in: the edit-and-rerun
  loop that failed twice and then passed was seen three times; for one action
  alone, successful ``min_seen`` times (a call that fails and then works when
  retried shows no procedure: the failure is what made its success count).
  Each success is explained by the longest such sequence it shows. The
  evidence is the ids of the messages of every successful attempt and of the
  first ``min_seen`` others.

Gotchas: results can be huge (an 868 KB ``git diff``), so only the head and the
tail of a result are read (:data:`SCAN_CHARS` each): test summaries and exit
codes live there. SWE-agent trajectories record no exit codes and never flag
errors, so there only summaries and failure text (a traceback, a refused edit)
followed by a clean rerun count. A read that works after failing (a wrong path,
then the right one) is never a success. Counts are kept per distinct sequence;
past :data:`MAX_SEQUENCES` of them, those carried out once that never succeeded
are forgotten, so a long session's learner stays small.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import attrs

from ctxflow.errors import FormatError
from ctxflow.layers import SCOPES, Procedure
from ctxflow.model import Message, Placeholder, Role, ToolUseBlock

__all__ = [
    "MAX_ENTRIES",
    "MAX_FILE_BYTES",
    "MAX_STEPS",
    "SCAN_CHARS",
    "ProcedureLearner",
    "actions_of",
    "failure_signal",
    "learn_procedures",
    "load_procedures",
    "procedures_from_plain",
    "success_signal",
]

#: The longest action sequence a procedure holds (older actions are dropped).
MAX_STEPS = 6
# The fewest actions a sequence needs for every run of it, not only its successes, to count
# as seen: one action retried after a failure shows no procedure.
MIN_TAIL = 2
#: The distinct sequences a learner keeps counts for before it forgets those carried out
#: once that never succeeded.
MAX_SEQUENCES = 20_000
#: Characters read from the head and from the tail of each result.
SCAN_CHARS = 8192
#: The largest procedures file :func:`load_procedures` reads.
MAX_FILE_BYTES = 1 << 20
#: The most entries a procedures file may hold.
MAX_ENTRIES = 1000

# --- actions -------------------------------------------------------------------------

# Tools whose ``command`` input is a shell command line.
_SHELL_TOOLS = frozenset({"bash", "execute_bash", "shell", "run_shell_command", "terminal"})
# Shell words that only set the scene for the command that follows them.
_SETUP_PROGRAMS = frozenset({"cd", "pushd", "popd", "export", "source", ".", "set", "ulimit"})
# Wrappers that run the next word as the program.
_WRAPPERS = frozenset({"sudo", "env", "time", "nohup", "command", "exec", "xvfb-run"})
# Programs whose first non-option word is the verb that matters (``git diff``, ``cargo test``).
_SUBCOMMAND_PROGRAMS = frozenset(
    {"git", "cargo", "go", "npm", "yarn", "pnpm", "pip", "conda", "docker", "poetry", "uv", "tox"}
)
# Programs that write a file when their output is redirected (``cat <<EOF > f``).
_WRITERS = frozenset({"cat", "echo", "printf"})
# Verbs that only look: left out of a sequence unless they are the step that succeeded.
_INSPECTIONS = frozenset(
    {
        *("ls", "cat", "head", "tail", "nl", "less", "wc", "pwd", "tree", "file", "stat", "which"),
        *("grep", "egrep", "rg", "ag", "find", "sed", "awk", "echo", "diff", "cmp"),
        *("git status", "git diff", "git log", "git show", "git grep", "git blame"),
        *("view", "open", "goto", "scroll_up", "scroll_down", "find_file", "search_file"),
        *("search_dir", "think"),
    }
)
# Non-shell tools whose names say they only look (tau-bench's ``get_user_details``).
_INSPECTING_TOOL_PREFIXES = ("get_", "search_", "list_", "find_", "read_", "view_", "lookup_")
# Non-shell tools whose names say they change a record: a result that is not an error is
# the record as changed (tau-bench's ``cancel_reservation``), a completed transaction.
_TRANSACTION_PREFIXES = (
    *("book_", "cancel_", "modify_", "exchange_", "return_", "update_", "create_", "delete_"),
    *("send_", "add_", "remove_", "place_", "refund_"),
)
# SWE-agent commands whose following lines are text, up to ``end_of_edit`` and the like.
_BLOCK_COMMANDS = frozenset({"edit", "insert", "append"})
_MAX_COMMAND = 20_000  # characters of a command line that are read
_DELIMITER = re.compile(r"'([^']*)'|\"([^\"]*)\"|([A-Za-z0-9_.-]+)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^python[0-9.]*$")
_PIP = re.compile(r"^pip[0-9.]*$")
# A text action: one fenced shell block in an assistant reply (mini-swe-agent's own rule).
_FENCED = re.compile(r"```(?:bash|sh)[ \t]*\n(.*?)\n?```", re.DOTALL)


def _program(words: list[str]) -> str | None:
    """The verb of one simple command (``words`` without operators), or None if it is empty."""
    index = 0
    while index < len(words) and (_ASSIGNMENT.match(words[index]) or words[index] in _WRAPPERS):
        index += 1
    if index < len(words) and words[index] == "timeout":
        index += 1
        while index < len(words) and (words[index].startswith("-") or words[index][:1].isdigit()):
            index += 1
    if index >= len(words):
        return None
    program = words[index]
    if program.startswith("/"):  # /usr/bin/python3 is python; bin/test stays bin/test
        program = os.path.basename(program) or program
    program = program.removeprefix("./")
    rest = words[index + 1 :]
    if _PYTHON.match(program):
        if rest[:1] == ["-m"] and len(rest) > 1:
            return "pytest" if rest[1] in {"pytest", "py.test"} else f"python -m {rest[1]}"
        return "python -c" if rest[:1] == ["-c"] else "python"
    if program in {"pytest", "py.test"}:
        return "pytest"
    if _PIP.match(program):
        program = "pip"
    if program == "sed" and any(w == "--in-place" or re.match(r"^-[a-zA-Z]*i", w) for w in rest):
        return "sed -i"
    if program in _WRITERS and any(w in {">", ">>", "<<", "<<-"} for w in rest):
        return f"{program} >"
    if program in _SUBCOMMAND_PROGRAMS:
        verb = next((w for w in rest if not w.startswith("-")), None)
        return f"{program} {verb}" if verb else program
    return program


def _heredoc_end(text: str, start: int) -> tuple[str, int]:
    """The delimiter of a heredoc whose ``<<`` ends at ``start``, and where the word ends."""
    i = start
    if i < len(text) and text[i] == "-":
        i += 1
    while i < len(text) and text[i] in " \t":
        i += 1
    match = _DELIMITER.match(text, i)
    if match is None:
        return "", i
    return next(g for g in match.groups() if g is not None), match.end()


def _simple_commands(command: str) -> Iterator[list[str]]:
    """The simple commands of a shell command line that start a pipeline, as word lists.

    A small, forgiving reader, not a shell: quotes, escapes, ``$(...)``, comments
    and heredoc bodies are honoured; commands after a single ``|`` (filters such as
    ``head``) are left out; ``<<`` and ``>`` are kept as words.
    """
    text = command[:_MAX_COMMAND]
    words: list[str] = []
    word: list[str] = []
    quote = ""
    piped = False
    heredocs: list[str] = []
    i, n = 0, len(text)

    def end_word() -> None:
        if word:
            words.append("".join(word))
            word.clear()

    while i < n:
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"' and i + 1 < n:
                i += 1
                word.append(text[i])
            else:
                word.append(ch)
            i += 1
            continue
        if ch in "'\"":
            quote = ch
            word.append("")  # an empty quoted word is still a word
        elif ch == "\\":
            if i + 1 < n and text[i + 1] != "\n":
                word.append(text[i + 1])
            i += 1
        elif ch in " \t":
            end_word()
        elif ch == "#" and not word:
            while i + 1 < n and text[i + 1] != "\n":
                i += 1
        elif ch == "$" and text.startswith("$(", i):
            depth = 0
            while i < n:
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                word.append(text[i])
                if depth == 0 and text[i] == ")":
                    break
                i += 1
        elif text.startswith("<<", i) and not text.startswith("<<<", i):
            end_word()
            words.append("<<")
            delimiter, i = _heredoc_end(text, i + 2)
            if delimiter:
                heredocs.append(delimiter)
            continue
        elif ch == ">":
            end_word()
            words.append(">")
            while i + 1 < n and text[i + 1] in ">&|":
                i += 1
        elif ch in "\n;&|()":
            end_word()
            if words and not piped:
                yield words
            words = []
            operator = text[i : i + 2]
            piped = ch == "|" and operator != "||"
            if operator in {"&&", "||", ";;"}:
                i += 1
            if ch == "\n" and heredocs:
                for delimiter in heredocs:  # skip each body up to its delimiter line
                    end = text.find(f"\n{delimiter}\n", i)
                    if end < 0:
                        end = text.find(f"\n{delimiter}", i)
                    i = n if end < 0 else end + len(delimiter) + 1
                heredocs.clear()
                continue
        else:
            word.append(ch)
        i += 1
    end_word()
    if words and not piped:
        yield words


def _shell_verbs(command: str) -> tuple[str, ...]:
    """The verbs of a shell command line, in order, scene setting left out and repeats folded."""
    first = command.lstrip().split(None, 1)[:1]
    if first and first[0] in _BLOCK_COMMANDS:  # the lines after it are its text
        command = command.lstrip().split("\n", 1)[0]
    verbs: list[str] = []
    for words in _simple_commands(command):
        verb = _program(words)
        if verb is not None and (not verbs or verbs[-1] != verb):
            verbs.append(verb)
    acting = [v for v in verbs if v not in _SETUP_PROGRAMS]
    return tuple((acting or verbs or ["shell"])[-MAX_STEPS:])


def actions_of(call: ToolUseBlock) -> tuple[str, ...]:
    """The normalised actions of a tool call, each ``"<tool>: <verb>"`` or the tool name.

    A shell command gives one action per program it runs (``cat <<EOF > t.py ...
    python t.py`` gives ``bash: cat >`` then ``bash: python``); its result belongs
    to the last that changes something.
    """
    command = call.input.get("command")
    if isinstance(command, str) and command.strip():
        if call.name in _SHELL_TOOLS or len(command.split()) > 1:
            return tuple(f"{call.name}: {verb}" for verb in _shell_verbs(command))
        return (f"{call.name}: {command.strip()}",)
    return (call.name,)


# --- signals -------------------------------------------------------------------------


class _Pattern(NamedTuple):
    """One row of a signal table: text matching ``regex`` signals ``kind``.

    ``needle`` is a literal the text must hold before the regex is tried (a cheap
    filter: most results hold none); ``counted`` rows capture a test count that
    must be at least one.
    """

    kind: str
    needle: str
    regex: re.Pattern[str]
    counted: bool = False


def _row(kind: str, needle: str, regex: str, *, counted: bool = False) -> _Pattern:
    return _Pattern(kind, needle, re.compile(regex, re.MULTILINE), counted)


# A success counts only when the same text matches no failure row.
_SUCCESSES: tuple[_Pattern, ...] = (
    # pytest: "=== 12 passed, 1 skipped in 0.3s ===", or "12 passed in 0.3s" with -q
    _row("pytest passed", " passed", r"^=*\s*(\d+) passed\b[^\n]*? in [\d.]+s\b", counted=True),
    # unittest (and Django's runtests): "Ran 5 tests in 0.1s", a blank line, "OK (skipped=1)"
    _row("unittest OK", "Ran ", r"^Ran (\d+) tests? in [\d.]+s\s*\n\s*\nOK\b", counted=True),
    # sympy's bin/test: "== tests finished: 9 passed, in 0.09 seconds =="
    _row("sympy tests passed", "tests finished", r"tests finished: (\d+) passed\b", counted=True),
    # cargo test: "test result: ok. 4 passed; 0 failed; ..."
    _row(
        "cargo test ok",
        "test result: ok",
        r"^test result: ok\. (\d+) passed; 0 failed",
        counted=True,
    ),
    # go test: "ok  	example.com/pkg	0.012s" (or "(cached)")
    _row("go test ok", "ok", r"^ok\s+\S+\s+(?:[\d.]+s|\(cached\))"),
    # cargo build / check: "Finished `dev` profile [unoptimized] target(s) in 2.3s"
    _row("cargo build finished", "Finished ", r"^\s*Finished [`\w]+.* in [\d.]+s"),
    # gradle "BUILD SUCCESSFUL", maven "BUILD SUCCESS"
    _row("build successful", "BUILD SUCCESS", r"^(?:\[INFO\] )?BUILD SUCCESS(?:FUL)?\b"),
    # cmake / make: "[100%] Built target app"
    _row("build finished", "Built target", r"^\[100%\] Built target \S+"),
    # pip wheels, docker images: "Successfully built marshmallow"
    _row("build finished", "Successfully built", r"^Successfully built \S+"),
    # sphinx-build: "build succeeded, 2 warnings."
    _row("build finished", "build succeeded", r"^build succeeded\b"),
    # webpack, angular and friends
    _row("compiled successfully", "Compiled successfully", r"\bCompiled successfully\b"),
    # a check the agent wrote, reporting that it passed: "SUCCESS: Query returned True"
    _row("the check passed", "SUCCESS", r"^SUCCESS\b"),
    _row("the check passed", "ll tests passed", r"^All (?:\d+ )?tests passed\b"),
)

# Text that makes a result a failure, whatever else it says.
_FAILURES: tuple[_Pattern, ...] = (
    # pytest summaries counting failures or errors: "=== 1 failed, 2 passed in 0.1s ==="
    _row("tests failed", " failed", r"^=*[^\n]*?\b\d+ failed\b[^\n]* in [\d.]+ ?s"),
    _row("tests failed", " error", r"^=*[^\n]*?\b\d+ errors?\b[^\n]* in [\d.]+ ?s"),
    # sympy: "tests finished: 4 passed, 1 failed, ..." or "... 1 exceptions ..."
    _row("tests failed", "tests finished", r"tests finished:[^\n]*\b(?:failed|exceptions?)\b"),
    # unittest: "FAILED (failures=2, errors=1)"
    _row("tests failed", "FAILED (", r"^FAILED \((?:failures|errors)=\d+"),
    # cargo and go
    _row("tests failed", "test result: FAILED", r"^test result: FAILED\b"),
    _row("tests failed", "FAIL", r"^--- FAIL:|^FAIL(?:ED|URE)?\b"),
    _row("traceback", "Traceback", r"^Traceback \(most recent call last\):"),
    _row("command not found", "command not found", r"command not found$"),
    _row("command not found", "No such file", r"No such file or directory$"),
    _row("build failed", "BUILD FAILED", r"^BUILD FAILED\b"),
    _row("build failed", "***", r"^make(?:\[\d+\])?: \*\*\*"),
    _row("build failed", "error", r"^error(?:\[E\d+\])?: "),
    # SWE-agent's editor refusing an edit
    _row("edit refused", "Your proposed edit", r"^Your proposed edit has introduced new syntax"),
)


def _first(table: tuple[_Pattern, ...], text: str) -> str | None:
    """The kind of the first row of ``table`` that ``text`` matches."""
    for row in table:
        if row.needle in text:
            match = row.regex.search(text)
            if match and (not row.counted or int(match.group(1)) > 0):
                return row.kind
    return None


# Explicit exit codes, in the formats agents print them.
_EXIT_CODE = re.compile(
    r"<returncode>\s*(-?\d+)\s*</returncode>"  # mini-swe-agent
    r"|\b[Ee]xit code:? (-?\d+)\b"  # "exit code 0", "Exit code: 0", OpenHands' "[... exit code 1.]"
)
# Terminal colour codes (``\x1b[32m``), left out before the summaries are read.
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
# Programs whose exit code 1 means "nothing found" or "differs", not a failure.
_QUIET_ONE = frozenset({"grep", "egrep", "fgrep", "rg", "ag", "diff", "cmp", "test", "["})


def _transacts(action: str) -> bool:
    """True for a call of a tool named for a change to a record (``cancel_reservation``)."""
    return ": " not in action and action.startswith(_TRANSACTION_PREFIXES)


@attrs.frozen
class _Outcome:
    """How one result ended: a success, a failure or neither, each with its reason."""

    success: str | None = None
    failure: str | None = None


def _scanned(text: str) -> str:
    if len(text) > 2 * SCAN_CHARS:
        text = text[:SCAN_CHARS] + "\n" + text[-SCAN_CHARS:]
    if "\x1b[" in text:  # coloured output: pytest's summary line is bold and green
        text = _COLOUR.sub("", text)
    return text


def _exit_code(text: str) -> int | None:
    if "returncode" not in text and "xit code" not in text:
        return None
    match = _EXIT_CODE.search(text)
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


def _outcome(text: str, is_error: bool, action: str, failed: Collection[str]) -> _Outcome:
    """Read one result (or observation) of ``action``; ``failed`` holds actions that failed last."""
    text = _scanned(text)
    code = _exit_code(text)
    verb = action.rsplit(": ", 1)[-1]
    if code is not None and code != 0 and not (code == 1 and verb in _QUIET_ONE):
        return _Outcome(failure=f"exit code {code}")
    if is_error and code is None:
        if verb in _QUIET_ONE:  # flagged, but maybe only "no match": neither way
            return _Outcome()
        return _Outcome(failure="the tool reported an error")
    failure = _first(_FAILURES, text)
    if failure is not None:
        return _Outcome(failure=failure)
    success = _first(_SUCCESSES, text)
    if success is not None:
        return _Outcome(success=success)
    if _transacts(action) and text.strip():  # the changed record, or "Error: ..."
        if text.lstrip().startswith("Error"):
            return _Outcome(failure="the tool reported an error")
        return _Outcome(success=f"a completed {action}")
    if action in failed and not _inspects(action):  # a read that works again shows nothing
        if code == 0:
            return _Outcome(success=f"exit code 0 after a failed {action}")
        if code is None and not is_error:
            return _Outcome(success=f"no error after a failed {action}")
    return _Outcome()


def _message_outcome(message: Message, action: str, failed: Collection[str]) -> _Outcome:
    results = message.tool_results
    if results:
        outcomes = [_outcome(r.text, r.is_error, action, failed) for r in results]
    elif message.role is Role.USER:
        outcomes = [_outcome(message.text, False, action, failed)]
    else:
        return _Outcome()
    return next((o for o in outcomes if o.failure), None) or next(
        (o for o in outcomes if o.success), _Outcome()
    )


def success_signal(
    message: Message, *, action: str = "", failed: Collection[str] = ()
) -> str | None:
    """Why ``message`` (a tool result or a text observation) counts as a success, or None.

    ``action`` is the normalised action the message answers (the last of
    :func:`actions_of`) and ``failed`` the actions whose last run failed; an exit
    code 0, or a result with no error flag and no failure text, is a success only
    for such an action.
    """
    return _message_outcome(message, action, failed).success


def failure_signal(message: Message, *, action: str = "") -> str | None:
    """Why ``message`` (a tool result or a text observation) counts as a failure, or None."""
    return _message_outcome(message, action, ()).failure


# --- learning ------------------------------------------------------------------------


@attrs.frozen
class _Step:
    """One call and its answer, read."""

    action: str
    call_id: str
    result_id: str
    outcome: _Outcome


@attrs.frozen
class _Occurrence:
    """One attempt: the actions since the last action's previous run, with their message ids.

    ``signal`` names the success the attempt ended in, or is None when it ended
    in a failure or in neither.
    """

    actions: tuple[str, ...]
    ids: tuple[tuple[str, ...], ...]  # per action: its calls' and results' message ids
    signal: str | None
    source: str

    def evidence(self, length: int) -> Iterator[str]:
        """The message ids of the last ``length`` actions."""
        for ids in self.ids[len(self.ids) - length :]:
            yield from ids


class _Scan:
    """Reads a growing message log once: each call, answered, becomes a step in call order.

    A call waits for its answer (a tool_result naming it, or, for a text-action
    turn, the next user message); a call still unanswered when a later assistant
    message arrives is never answered in a valid conversation and is dropped.
    """

    def __init__(self) -> None:
        self.failed: set[str] = set()
        self.pending: list[tuple[tuple[str, ...], str, str | None]] = []  # actions, call, use id
        self.answers: dict[str, Message] = {}
        self.fenced: tuple[tuple[str, ...], str] | None = None  # a text turn awaiting its answer

    def feed(self, message: Message) -> Iterator[_Step]:
        """The steps ``message`` completes."""
        fenced, self.fenced = self.fenced, None
        if fenced is not None and message.role is Role.USER and not message.tool_results:
            yield from self._step(fenced[0], fenced[1], message)
        for result in message.tool_results:
            self.answers.setdefault(result.tool_use_id, message)
        if message.role is Role.ASSISTANT:
            self.pending = []
            self.answers = {}
            if message.tool_uses:
                self.pending = [(actions_of(c), message.id, c.id) for c in message.tool_uses]
            else:
                blocks = _FENCED.findall(message.text)
                if len(blocks) == 1 and blocks[0].strip():
                    verbs = _shell_verbs(blocks[0])
                    self.fenced = (tuple(f"bash: {verb}" for verb in verbs), message.id)
            return
        while self.pending:
            actions, call_id, use_id = self.pending[0]
            answer = self.answers.get(use_id or "")
            if answer is None:
                return
            del self.pending[0]
            yield from self._step(actions, call_id, answer)

    def _step(self, actions: tuple[str, ...], call_id: str, answer: Message) -> Iterator[_Step]:
        # The result is the last acting program's: ``make html && grep x out.html`` built.
        last = next(
            (i for i in range(len(actions) - 1, -1, -1) if not _inspects(actions[i])),
            len(actions) - 1,
        )
        for index, action in enumerate(actions):
            if index != last:
                yield _Step(action, call_id, answer.id, _Outcome())
                continue
            outcome = _message_outcome(answer, action, self.failed)
            if outcome.failure:
                self.failed.add(action)
            else:
                self.failed.discard(action)
            yield _Step(action, call_id, answer.id, outcome)


def _inspects(action: str) -> bool:
    """True for an action that only looks (reads, lists, searches) and changes nothing."""
    tool, _, verb = action.partition(": ")
    if verb:
        return verb in _INSPECTIONS
    return tool in _INSPECTIONS or tool.startswith(_INSPECTING_TOOL_PREFIXES)


def _folded(steps: Sequence[_Step], signal: str | None, source: str) -> _Occurrence:
    """The occurrence ``steps`` make: the last :data:`MAX_STEPS` actions, immediate
    repeats folded (``steps`` hold no action that only looks)."""
    actions: list[str] = []
    ids: list[list[str]] = []
    for step in reversed(steps):
        if not actions or actions[-1] != step.action:
            if len(actions) == MAX_STEPS:
                break
            actions.append(step.action)
            ids.append([])
        ids[-1] += (step.result_id, step.call_id)
    return _Occurrence(
        tuple(reversed(actions)),
        tuple(tuple(dict.fromkeys(reversed(group))) for group in reversed(ids)),
        signal,
        source,
    )


class _Attempts:
    """Every run of an action that changes something, as an attempt: the actions since
    that action last ran (or since the start), ending with it.

    Actions that only look are no part of an attempt and make none. Only the
    last ``4 * MAX_STEPS`` steps are kept: an attempt holds at most
    :data:`MAX_STEPS` actions, so older steps cannot matter, and the work per
    step stays bounded.
    """

    def __init__(self) -> None:
        self.steps: list[tuple[int, _Step]] = []  # recent steps, each with its number
        self.last_run: dict[str, int] = {}  # action -> the number of its latest step
        self.count = 0

    def feed(self, step: _Step) -> _Occurrence | None:
        """The attempt ``step`` closes (None for a step that only looks)."""
        if _inspects(step.action):
            return None
        number = self.count
        self.count += 1
        self.steps.append((number, step))
        if len(self.steps) > 4 * MAX_STEPS:
            del self.steps[: -2 * MAX_STEPS]
        since = self.last_run.get(step.action, -1)
        self.last_run[step.action] = number
        window = [s for n, s in self.steps if n > since]
        return _folded(window, step.outcome.success, step.result_id)


class _Seen:
    """What is known of one sequence: how often it was carried out, and the
    occurrences kept as its evidence (every success, the first other attempts)."""

    __slots__ = ("attempts", "found", "others", "successes")

    def __init__(self) -> None:
        self.attempts = 0
        self.successes = 0
        self.others = 0
        self.found: list[_Occurrence] = []

    def add(self, occurrence: _Occurrence, keep_others: int) -> None:
        self.attempts += 1
        if occurrence.signal is not None:
            self.successes += 1
            self.found.append(occurrence)
        elif self.others < keep_others:
            self.others += 1
            self.found.append(occurrence)


def _tails(actions: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """The sequences an attempt shows: all its actions, then their tails, longest first."""
    yield actions
    for length in range(len(actions) - 1, 0, -1):
        yield actions[-length:]


_SIGNAL_PHRASES: tuple[tuple[str, str], ...] = (
    ("pytest passed", "it passes"),
    ("unittest OK", "the tests pass"),
    ("sympy tests passed", "the tests pass"),
    ("cargo test ok", "the tests pass"),
    ("go test ok", "the tests pass"),
    ("exit code 0", "it exits 0"),
    ("no error", "it reports no error"),
    ("cargo build", "it builds"),
    ("build", "it builds"),
    ("compiled", "it compiles"),
    ("the check passed", "its check passes"),
    ("a completed", "it completes"),
)
_EDITS = frozenset(
    {"sed -i", "str_replace", "insert", "edit", "create", "cat >", "echo >", "write"}
)
_READS = frozenset({"view", "open", "cat", "head", "tail", "nl", "less"})
_SEARCHES = frozenset({"grep", "rg", "find", "ls", "find_file", "search_file", "search_dir"})


def _phrase(action: str) -> str:
    """A readable phrase for an action, for procedure names."""
    tool, _, verb = action.partition(": ")
    if not verb:
        return f"call {tool}"
    if verb in _EDITS:
        return "edit" if verb in {"str_replace", "insert", "edit", "sed -i"} else "write a file"
    if verb in _READS:
        return "read"
    if verb in _SEARCHES:
        return "search"
    return f"run {verb}" if tool in _SHELL_TOOLS else f"{tool} {verb}"


def _signal_phrase(signal: str) -> str:
    return next((p for k, p in _SIGNAL_PHRASES if signal.startswith(k)), "it succeeds")


def _name(actions: tuple[str, ...], signal: str) -> str:
    phrases: list[str] = []
    for phrase in map(_phrase, actions):
        if not phrases or phrases[-1] != phrase:
            phrases.append(phrase)
    head = ", ".join(phrases[:-1])
    until = f"{phrases[-1]} until {_signal_phrase(signal)}"
    return f"{head}, then {until}" if head else until


def _steps_text(actions: tuple[str, ...], signals: Sequence[str], seen: int, succeeded: int) -> str:
    lines = [f"{n}. {action}" for n, action in enumerate(actions, 1)]
    kinds = ", ".join(dict.fromkeys(signals))
    times = (
        f"seen {seen} times" if succeeded == seen else f"seen {seen} times, {succeeded} succeeded"
    )
    lines.append(f"Success when: {kinds} ({times}).")
    return "\n".join(lines)


class ProcedureLearner:
    """Learns procedures from a growing log, reading each message once.

    Call it with the whole log each time (``learner(messages, step)``): it reads
    only what was appended since the last call, and starts over when the log
    no longer extends the one it read (a restore, another conversation). So a
    consolidation costs the messages since the last one, not the session, and
    each message is read once, whatever the log's length.

    ``min_seen`` is how often a sequence must be seen: a sequence of two
    actions or more that ended in a success at least once is seen each time it
    was carried out (whole, or as the tail of a longer attempt), whatever that
    run ended in; one action alone is seen only when it succeeded.
    """

    def __init__(self, *, min_seen: int = 2) -> None:
        if isinstance(min_seen, bool) or not isinstance(min_seen, int) or min_seen < 1:
            raise FormatError(
                f"'min_seen' must be a positive integer (got {min_seen!r})", rule="min_seen"
            )
        self.min_seen = min_seen
        self._reset()

    def _reset(self) -> None:
        self._read = 0
        self._last: str | None = None
        self._scan = _Scan()
        self._attempts = _Attempts()
        # The distinct sequences that ended in a success, in the order of their first.
        self._successes: dict[tuple[str, ...], None] = {}
        self._prune_at = MAX_SEQUENCES
        self._shown: dict[tuple[str, ...], _Seen] = {}

    def __call__(self, messages: Sequence[Message], step: int = 0) -> list[Procedure]:
        """The procedures ``messages`` show (see :func:`learn_procedures`)."""
        read = self._read
        if read > len(messages) or (read and messages[read - 1].id != self._last):
            self._reset()
            read = 0
        shown, keep = self._shown, self.min_seen
        # A conversation's history passes over the messages a lazy restore left unbuilt.
        skim = getattr(messages, "iter_built", None)
        for message in skim(read) if callable(skim) else messages[read:]:
            if type(message) is Placeholder and not message.loaded:
                continue  # hidden before its checkpoint: consolidated then, not read again
            for done in self._scan.feed(message):
                occurrence = self._attempts.feed(done)
                if occurrence is None:
                    continue
                if occurrence.signal is not None:
                    self._successes.setdefault(occurrence.actions)
                for tail in _tails(occurrence.actions):
                    seen = shown.get(tail)
                    if seen is None:
                        seen = shown[tail] = _Seen()
                    seen.add(occurrence, keep)
                if len(shown) > self._prune_at:
                    self._prune()
        self._read = len(messages)
        self._last = messages[-1].id if messages else None
        return self._procedures(step)

    def _prune(self) -> None:
        """Forget the sequences carried out once that never succeeded, so a long session
        holds at most about :data:`MAX_SEQUENCES` of them; the work stays linear."""
        shown = self._shown
        for actions in [a for a, seen in shown.items() if not seen.successes and seen.attempts < 2]:
            del shown[actions]
        self._prune_at = max(MAX_SEQUENCES, 2 * len(shown))

    def _recurs(self, actions: tuple[str, ...]) -> bool:
        """True when ``actions`` (which ended in a success at least once) count as seen
        ``min_seen`` times: carried out that often, or, for one action alone, successful
        that often (retrying one call is no procedure until it works again)."""
        seen = self._shown[actions]
        if len(actions) < MIN_TAIL:
            return seen.successes >= self.min_seen
        return seen.attempts >= self.min_seen

    def _procedures(self, step: int) -> list[Procedure]:
        # Each success is explained by the longest sequence it shows that recurs.
        chosen = dict.fromkeys(
            next((t for t in _tails(actions) if self._recurs(t)), ()) for actions in self._successes
        )
        procedures: list[Procedure] = []
        for actions in chosen:
            if not actions:
                continue
            seen = self._shown[actions]
            signals = [o.signal for o in seen.found if o.signal is not None]
            common = max(dict.fromkeys(signals), key=signals.count)
            evidence = (i for o in seen.found for i in o.evidence(len(actions)))
            procedures.append(
                Procedure(
                    name=_name(actions, common),
                    steps=_steps_text(actions, signals, seen.attempts, seen.successes),
                    source=next(o.source for o in reversed(seen.found) if o.signal is not None),
                    evidence=tuple(dict.fromkeys(evidence)),
                    seen=seen.attempts,
                    step=step,
                    importance=1.0 - 0.5 / seen.successes,
                )
            )
        return procedures


def learn_procedures(
    messages: Sequence[Message], *, min_seen: int = 2, step: int = 0
) -> list[Procedure]:
    """The tool-call sequences of ``messages`` that ended in a success and were seen
    at least ``min_seen`` times.

    A sequence of two actions or more is seen each time it was carried out (the
    actions since its last action ran before, or their tail), whatever that run
    ended in, and must have ended in a success at least once: the edit-and-test
    loop that failed twice and then passed was seen three times. One action
    alone must have succeeded ``min_seen`` times: a call that failed and then
    worked when retried is no procedure.

    One procedure per distinct sequence of normalised actions, in the order of
    their first success; ``seen`` counts the runs, and the steps text says how
    many succeeded when not all did; ``evidence`` holds the ids of every call
    and result of every successful run and of the first ``min_seen`` others,
    ``source`` the id of the last success, and ``importance`` grows with the
    successes. Work is linear in the messages; a :class:`ProcedureLearner`
    reads a growing log incrementally.
    """
    return ProcedureLearner(min_seen=min_seen)(messages, step)


# --- user-given procedures -----------------------------------------------------------

_FIELDS = frozenset({"name", "steps", "importance", "scope"})


def _entry_error(where: str, index: int, field: str, rule: str, what: str) -> FormatError:
    named = f"entry {index}" + (f" field {field!r}" if field else "")
    return FormatError(f"{where}: {named} {what}", rule=rule, where=where, index=index, field=field)


def _entry(entry: object, index: int, where: str) -> Procedure:
    if not isinstance(entry, Mapping):
        raise _entry_error(
            where, index, "", "not_an_object", f"must be an object (got {type(entry).__name__})"
        )
    unknown = sorted(str(key) for key in entry if key not in _FIELDS)
    if unknown:
        raise _entry_error(
            where, index, unknown[0], "unknown_field", f"is not one of {sorted(_FIELDS)}"
        )
    for field in ("name", "steps"):
        value = entry.get(field)
        if not isinstance(value, str) or not value.strip():
            raise _entry_error(
                where, index, field, "missing_field", f"must be a non-empty string (got {value!r})"
            )
    importance = entry.get("importance", 0.5)
    if (
        isinstance(importance, bool)
        or not isinstance(importance, int | float)
        or not 0 <= importance <= 1
    ):
        raise _entry_error(
            where,
            index,
            "importance",
            "bad_importance",
            f"must be a number in [0, 1] (got {importance!r})",
        )
    scope = entry.get("scope", "session")
    if scope not in SCOPES:
        raise _entry_error(
            where, index, "scope", "bad_scope", f"must be one of {list(SCOPES)} (got {scope!r})"
        )
    return Procedure(name=entry["name"], steps=entry["steps"], importance=importance, scope=scope)


def procedures_from_plain(data: Any, *, where: str = "procedures") -> list[Procedure]:
    """Procedures from plain data: a list of ``{"name", "steps", "importance"?, "scope"?}``.

    Bad input raises :class:`~ctxflow.errors.FormatError` naming ``where``, the
    entry index and the field (also as the ``index`` and ``field`` attributes).
    """
    if not isinstance(data, list):
        raise FormatError(
            f"{where}: procedures must be a JSON list of objects (got {type(data).__name__})",
            rule="not_a_list",
            where=where,
        )
    if len(data) > MAX_ENTRIES:
        raise FormatError(
            f"{where}: a procedures list must hold at most {MAX_ENTRIES} entries (got {len(data)})",
            rule="too_many",
            where=where,
            count=len(data),
        )
    return [_entry(entry, index, where) for index, entry in enumerate(data)]


def load_procedures(path: str | os.PathLike[str]) -> list[Procedure]:
    """User-given procedures from a UTF-8 JSON file (see :func:`procedures_from_plain`).

    Refuses a file larger than :data:`MAX_FILE_BYTES` before parsing it; every
    error is a :class:`~ctxflow.errors.FormatError` that names the file.
    """
    where = os.fspath(path)
    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FormatError(
            f"{where}: cannot be read ({exc.strerror or exc})", rule="unreadable", where=where
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise FormatError(
            f"{where}: a procedures file must be at most {MAX_FILE_BYTES} bytes (got more)",
            rule="too_large",
            where=where,
        )
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FormatError(
            f"{where}: must be UTF-8 text (invalid byte at offset {exc.start})",
            rule="not_utf8",
            where=where,
        ) from None
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"{where}: must be JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            rule="not_json",
            where=where,
            line=exc.lineno,
        ) from None
    return procedures_from_plain(data, where=where)
