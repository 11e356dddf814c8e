"""Tests for reading what ``ctxflow run`` replays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctxflow.errors import CtxflowError, FormatError
from ctxflow.model import messages_to_anthropic, to_openai
from ctxflow.replay.inputs import read_run_input, synthesise_tools

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "transcripts"
PONY = EXAMPLES / "openhands-ponyc-4588.jsonl"


def test_jsonl_input_synthesises_tools() -> None:
    """A transcript without tool definitions gets one per tool name, with the keys used."""
    run = read_run_input(PONY)
    assert run.format == "jsonl" and run.tools_synthesised
    names = [t.name for t in run.tools]
    assert names == ["execute_bash", "str_replace_editor", "think"]
    bash = run.tools[0]
    assert "command" in bash.input_schema["properties"]


def test_request_bodies_are_detected_by_shape(tmp_path: Path) -> None:
    """Anthropic and OpenAI request bodies are told apart and read back to the same dialogue."""
    source = read_run_input(PONY).transcript
    system, dialogue = source.messages[0], source.messages[1:]
    anthropic = {
        "model": "claude-sonnet-4-5",
        "system": system.text,
        "messages": messages_to_anthropic(dialogue),
        "tools": [{"name": "execute_bash", "input_schema": {"type": "object"}}],
    }
    openai = {"model": "gpt-4o", "messages": to_openai(source.messages)[0]}
    (tmp_path / "a.json").write_text(json.dumps(anthropic))
    (tmp_path / "o.json").write_text(json.dumps(openai))
    a = read_run_input(tmp_path / "a.json")
    o = read_run_input(tmp_path / "o.json")
    assert (a.format, o.format) == ("anthropic", "openai")
    assert not a.tools_synthesised and [t.name for t in a.tools] == ["execute_bash"]
    assert o.tools_synthesised
    for run in (a, o):
        got = [(m.role, [u.id for u in m.tool_uses]) for m in run.transcript.messages]
        want = [(m.role, [u.id for u in m.tool_uses]) for m in source.messages]
        assert got == want


def test_id_picks_a_conversation() -> None:
    """--id selects by id and a missing id is a typed error naming it."""
    run = read_run_input(PONY, conversation_id="openhands-msb-ponylang__ponyc-4588")
    assert len(run.transcript.messages) == 100
    with pytest.raises(FormatError, match="no conversation with id 'nope'"):
        read_run_input(PONY, conversation_id="nope")


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        (b"hello there\n", "json"),
        (b'{"model": "x"}', "not_a_conversation"),
        (b"[1, 2, 3]", "not_a_conversation"),
        (b"\xff\xfe", "utf8"),
    ],
)
def test_bad_input_is_typed(tmp_path: Path, content: bytes, rule: str) -> None:
    """Not JSON, not a conversation, or not UTF-8: a FormatError naming the file."""
    path = tmp_path / "in.json"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=r"in\.json") as info:
        read_run_input(path)
    assert info.value.rule == rule


def test_synthesised_tools_are_deterministic() -> None:
    """The same transcript always gives the same tool definitions."""
    messages = read_run_input(PONY).transcript.messages
    assert synthesise_tools(messages) == synthesise_tools(messages)


@pytest.mark.parametrize(
    "bad",
    ['{"role": "robot", "content": "hi"}', '{"role": "assistant", "content": "a \\ud800 b"}'],
)
@pytest.mark.parametrize("system", [None, "be brief"])
def test_refused_message_in_a_body_names_its_line(
    tmp_path: Path, bad: str, system: str | None
) -> None:
    """A refused message of a request body names the file and the line it starts on."""
    head = {"model": "claude-sonnet-4-5", **({"system": system} if system else {})}
    lines = [
        json.dumps(head)[:-1] + ', "messages": [',
        '  {"role": "user", "content": "task"},',
        "  " + bad,
        "]}",
    ]
    path = tmp_path / "body.json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError, match=r"body\.json:3: ") as info:
        read_run_input(path)
    assert info.value.details["line"] == 3


def test_lone_surrogate_in_a_transcript_names_file_and_line(tmp_path: Path) -> None:
    """A JSONL transcript message holding a lone surrogate is refused naming file and line."""
    path = tmp_path / "t.jsonl"
    first = json.dumps({"id": "a", "messages": [{"role": "user", "content": "ok"}]})
    second = '{"id": "b", "messages": [{"role": "user", "content": "x \\ud800"}]}'
    path.write_text(first + "\n" + second + "\n")
    with pytest.raises(CtxflowError, match=r"t\.jsonl:2: .*surrogate"):
        read_run_input(path, conversation_id="b")
