"""Reading and writing transcripts in the corpus JSONL format.

One conversation per line: ``{"id", "source", "license", "meta", "messages"}``
where ``messages`` is an Anthropic-style list with an optional leading
``system`` message. Every field other than ``messages`` is kept as it was.

Message ids are derived from the transcript id and the message index
(``<id>#<index>``), so reading the same file twice gives the same ids — and
the same windows (DESIGN.md invariant 4).

Errors name the file and line: invalid UTF-8, a line that is not JSON or not an
object, a missing ``messages`` list, and every message-level problem
(:class:`~ctxflow.errors.InvalidMessage`, with ``line`` and ``index`` set).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import attrs

from ctxflow.errors import FormatError, InvalidMessage
from ctxflow.model._anthropic import messages_from_anthropic, messages_to_anthropic
from ctxflow.model._conversation import Conversation
from ctxflow.model._messages import Message

__all__ = [
    "Transcript",
    "dump_transcript",
    "load_transcript",
    "read_transcripts",
    "write_transcripts",
]


@attrs.frozen(kw_only=True)
class Transcript:
    """One recorded conversation with its provenance."""

    id: str
    messages: tuple[Message, ...]
    source: str | None = None
    license: str | None = None
    meta: Mapping[str, Any] = attrs.field(factory=dict)
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    def conversation(self, *, measure: Callable[[Message], int] | None = None) -> Conversation:
        """A Conversation holding this transcript's messages."""
        return Conversation(self.messages, measure=measure)


def load_transcript(data: Any, *, where: str = "transcript") -> Transcript:
    """Build a transcript from one decoded JSONL object; errors name ``where``."""
    if not isinstance(data, Mapping):
        raise FormatError(
            f"{where}: a transcript must be a JSON object (got {type(data).__name__})",
            rule="not_an_object",
            where=where,
        )
    items = data.get("messages")
    if not isinstance(items, list):
        raise FormatError(f"{where}: 'messages' must be a list", rule="no_messages", where=where)
    ident = data.get("id")
    if not isinstance(ident, str) or not ident:
        raise FormatError(f"{where}: 'id' must be a non-empty string", rule="no_id", where=where)
    ids = [f"{ident}#{i}" for i in range(len(items))]
    messages = messages_from_anthropic(items, ids=ids, where=f"{where}: ")
    # The log's own rules (orphans, duplicates) are checked here, before anyone uses it.
    try:
        Conversation(messages, measure=lambda m: 0)
    except InvalidMessage as exc:
        raise InvalidMessage(f"{where}: {exc.message}", rule=exc.rule, where=where) from None
    known = {"id", "messages", "source", "license", "meta"}
    return Transcript(
        id=ident,
        messages=tuple(messages),
        source=data.get("source"),
        license=data.get("license"),
        meta=dict(data.get("meta") or {}),
        extra={k: v for k, v in data.items() if k not in known},
    )


def dump_transcript(transcript: Transcript) -> dict[str, Any]:
    """The JSONL object of a transcript (the inverse of :func:`load_transcript`)."""
    out: dict[str, Any] = {"id": transcript.id}
    if transcript.source is not None:
        out["source"] = transcript.source
    if transcript.license is not None:
        out["license"] = transcript.license
    if transcript.meta:
        out["meta"] = dict(transcript.meta)
    out["messages"] = messages_to_anthropic(transcript.messages)
    out.update(transcript.extra)
    return out


def read_transcripts(
    source: str | os.PathLike[str] | IO[bytes], *, ids: Iterable[str] | None = None
) -> Iterator[Transcript]:
    """Yield the transcripts of a JSONL file or binary stream (only ``ids`` when given)."""
    if not isinstance(source, str | os.PathLike):
        yield from _read(getattr(source, "name", "<stream>"), source, ids)
        return
    path = Path(source)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise FormatError(
            f"{path}: cannot be read ({exc.strerror})", rule="unreadable", where=str(path)
        ) from None
    with handle:
        yield from _read(str(path), handle, ids)


def json_text(text: str, where: str, *, line: int | None = None, what: str = "JSON") -> Any:
    """``text`` parsed as JSON; else ``FormatError`` naming ``where:line`` (the error's line
    when ``line`` is None) and saying it is not ``what``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = exc.lineno if line is None else line
        raise FormatError(
            f"{where}:{at}: not {what} ({exc.msg} at column {exc.colno})",
            rule="json",
            where=where,
            line=at,
        ) from None


def _read(name: str, lines: Iterable[bytes], ids: Iterable[str] | None) -> Iterator[Transcript]:
    wanted = set(ids) if ids is not None else None
    for number, raw in enumerate(lines, start=1):
        where = f"{name}:{number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(
                f"{where}: invalid UTF-8 at byte {exc.start}", rule="utf8", where=where, line=number
            ) from None
        if not text.strip():
            continue
        if wanted is not None and not any(f'"{w}"' in text for w in wanted):
            continue
        data = json_text(text, name, line=number)
        if wanted is not None and (not isinstance(data, Mapping) or data.get("id") not in wanted):
            continue
        yield load_transcript(data, where=where)


def write_transcripts(path: str | os.PathLike[str], transcripts: Iterable[Transcript]) -> None:
    """Write transcripts as JSONL (UTF-8, one per line)."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for transcript in transcripts:
            handle.write(json.dumps(dump_transcript(transcript), ensure_ascii=False))
            handle.write("\n")
