"""Reading what ``ctxflow run`` replays: a transcript, or a recorded request body.

Three shapes are accepted and told apart by their content (``format`` forces one):

- ``jsonl``: the corpus transcript format, one conversation per line (``--id``
  picks one from a multi-line file; the first is used otherwise);
- ``anthropic``: a Messages API request body (``system``, ``messages``, ``tools``);
- ``openai``: a Chat Completions request body (``tool`` messages, ``tool_calls``,
  function tools, or a ``system``/``developer`` message inside ``messages``).

A recorded conversation rarely carries its tool definitions; Anthropic rejects
tool blocks without them, so :func:`synthesise_tools` derives one definition per
tool name seen, with the input keys the calls used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from ctxflow.errors import FormatError, InvalidMessage
from ctxflow.layers import ToolDef
from ctxflow.model import (
    Message,
    Transcript,
    from_openai,
    load_transcript,
    messages_from_anthropic,
    read_transcripts,
)
from ctxflow.model._anthropic import message_to_anthropic
from ctxflow.model._transcripts import json_text

__all__ = ["RunInput", "detect_format", "read_run_input", "synthesise_tools"]

Format = Literal["jsonl", "anthropic", "openai"]
FORMATS: tuple[Format, ...] = ("jsonl", "anthropic", "openai")


@attrs.frozen(kw_only=True)
class RunInput:
    """A conversation to replay, with the tool definitions it was (or would be) sent with."""

    transcript: Transcript
    tools: tuple[ToolDef, ...]
    format: Format
    tools_synthesised: bool


def synthesise_tools(messages: Sequence[Message]) -> tuple[ToolDef, ...]:
    """One tool definition per tool name called, listing the input keys seen, in call order."""
    keys: dict[str, dict[str, None]] = {}
    for message in messages:
        for use in message.tool_uses:
            keys.setdefault(use.name, {}).update(dict.fromkeys(use.input))
    return tuple(
        ToolDef(
            name=name,
            description=f"The {name} tool (definition synthesised from a recorded transcript).",
            input_schema={
                "type": "object",
                "properties": {key: {} for key in sorted(seen)},
            },
        )
        for name, seen in keys.items()
    )


def _tools_from_body(body: Mapping[str, Any], fmt: Format, where: str) -> tuple[ToolDef, ...]:
    raw = body.get("tools")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise FormatError(f"{where}: 'tools' must be a list", rule="tools", where=where)
    out = []
    for i, tool in enumerate(raw):
        spec = tool.get("function") if fmt == "openai" and isinstance(tool, Mapping) else tool
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise FormatError(
                f"{where}: tools[{i}] has no name", rule="tools", where=where, index=i
            )
        schema = spec.get("input_schema" if fmt == "anthropic" else "parameters") or {
            "type": "object",
            "properties": {},
        }
        out.append(
            ToolDef(
                name=spec["name"], description=str(spec.get("description", "")), input_schema=schema
            )
        )
    return tuple(out)


def detect_format(path: Path, text: str) -> Format:
    """Tell the three input shapes apart by content (then by file extension)."""
    stripped = text.lstrip()
    first = stripped.split("\n", 1)[0]
    try:
        head = json.loads(first)
    except json.JSONDecodeError:
        head = None
    if isinstance(head, Mapping) and "messages" in head and "id" in head:
        return "jsonl"
    if path.suffix == ".jsonl":
        return "jsonl"
    body = json_text(text, str(path), what="JSON or JSONL")
    if not isinstance(body, Mapping) or not isinstance(body.get("messages"), list):
        raise FormatError(
            f"{path}: not a conversation (expected a transcript line or a request body with "
            "'messages')",
            rule="not_a_conversation",
            where=str(path),
        )
    return "openai" if _looks_openai(body) else "anthropic"


def _looks_openai(body: Mapping[str, Any]) -> bool:
    for tool in body.get("tools") or ():
        if isinstance(tool, Mapping) and tool.get("type") == "function":
            return True
    for message in body["messages"]:
        if not isinstance(message, Mapping):
            continue
        if message.get("role") in ("tool", "developer") or "tool_calls" in message:
            return True
        if message.get("role") == "system":
            return True
    return False


def _skip(text: str, pos: int) -> int:
    """The first position at or after ``pos`` that is not JSON whitespace."""
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line_of(text: str, key: str, index: int) -> int | None:
    """The line where item ``index`` of the top-level array ``key`` starts (None: not found).

    Only used to name the line of a refused message in a request body, which
    ``json.loads`` has already accepted as a whole.
    """
    decoder = json.JSONDecoder()
    try:
        pos = _skip(text, 0)
        if text[pos] != "{" or index < 0:
            return None
        pos += 1
        while True:
            pos = _skip(text, pos)
            name, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, pos)
            pos = _skip(text, pos + 1)
            if name == key and text[pos] == "[":
                pos += 1
                for _ in range(index):
                    pos = _skip(text, pos)
                    _, pos = decoder.raw_decode(text, pos)
                    pos = _skip(text, pos) + 1
                pos = _skip(text, pos)
                return text.count("\n", 0, pos) + 1
            _, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, pos) + 1
    except (IndexError, ValueError):
        return None


def read_run_input(
    path: str | Path, *, conversation_id: str | None = None, format: Format | None = None
) -> RunInput:
    """Read a run input; errors name the file (and line)."""
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise FormatError(
            f"'format' must be one of {', '.join(FORMATS)} (got {format!r})", rule="format"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise FormatError(
            f"{path}: cannot be read ({exc.strerror})", rule="unreadable", where=str(path)
        ) from None
    except UnicodeDecodeError as exc:
        raise FormatError(
            f"{path}: invalid UTF-8 at byte {exc.start}", rule="utf8", where=str(path)
        ) from None
    fmt = format or detect_format(path, text)
    if fmt == "jsonl":
        ids = [conversation_id] if conversation_id else None
        for transcript in read_transcripts(path, ids=ids):
            tools = synthesise_tools(transcript.messages)
            return RunInput(transcript=transcript, tools=tools, format=fmt, tools_synthesised=True)
        what = f"no conversation with id {conversation_id!r}" if conversation_id else "no line"
        raise FormatError(f"{path}: {what}", rule="not_found", where=str(path))
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"{path}:{exc.lineno}: not JSON ({exc.msg})", rule="json", where=str(path)
        ) from None
    if not isinstance(body, Mapping) or not isinstance(body.get("messages"), list):
        raise FormatError(
            f"{path}: not a request body with a 'messages' list",
            rule="not_a_conversation",
            where=str(path),
        )
    ident = conversation_id or path.stem
    shift = 0
    try:
        if fmt == "openai":
            messages = from_openai(body["messages"])
        else:
            items = list(body["messages"])
            system = body.get("system")
            if system:
                items.insert(0, {"role": "system", "content": system})
                shift = 1
            messages = messages_from_anthropic(items)
    except InvalidMessage as exc:
        index = exc.details.get("index")
        line = _line_of(text, "messages", index - shift) if isinstance(index, int) else None
        where = f"{path}:{line}" if line is not None else str(path)
        raise FormatError(
            f"{where}: {exc.message}", rule=exc.rule, where=str(path), line=line
        ) from None
    transcript = load_transcript(
        {
            "id": ident,
            "source": str(body.get("model", "")) or None,
            "messages": [message_to_anthropic(m) for m in messages],
        },
        where=str(path),
    )
    declared = _tools_from_body(body, fmt, str(path))
    tools = declared or synthesise_tools(transcript.messages)
    return RunInput(transcript=transcript, tools=tools, format=fmt, tools_synthesised=not declared)
