"""Summarizers: an offline extractive one (the default) and one over any LLM client.

Both implement the :class:`~ctxflow.protocols.Summarizer` protocol
(``summarize(messages, *, max_tokens) -> str``); the async LLM summarizer
implements :class:`~ctxflow.protocols.AsyncSummarizer`.

The extractive summarizer is deterministic and needs no network: it keeps the
user's original request, decisions and commitments, the specific details users
state (codes, numbers with units, paths, "my X is …", "please use …", kept
verbatim), files and identifiers, errors, tool outcomes and open questions,
found with regular expressions, and bounds itself to about ``max_tokens``
(four characters a token, a conservative guess for any counter; the ladder
measures the result anyway). The detail scan (:mod:`ctxflow.compression._details`)
reads only user text; callers over large spans still bound what they hand it
(the truncation rung scans short user turns, newest first).

The LLM summarizer renders the span as a bounded transcript (so the call
always fits the model's window, however long the span) and asks for a 70-90%
reduction. Any failure of the client, or an empty or non-text answer, becomes
a :class:`~ctxflow.errors.CompressionError`, which the ladder records before
falling through to its next rung.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from ctxflow.compression._details import block_texts as _texts
from ctxflow.compression._details import extract_details
from ctxflow.errors import CompressionError
from ctxflow.layers import Fact
from ctxflow.model import SUMMARY_OF, Message, Role, TextBlock, ToolResultBlock
from ctxflow.protocols import AsyncLLMClient, LLMClient

__all__ = [
    "SUMMARY_PROMPT",
    "AsyncLLMSummarizer",
    "ExtractiveSummarizer",
    "LLMSummarizer",
    "checked_summary",
    "extract_details",
    "extract_facts",
    "is_decision",
    "render",
]

# Keywords first (one fast scan), then the line around each hit is judged; a
# whole-line regex with leading ``.*`` is far slower on long tool-heavy texts.
_KEYWORD = re.compile(
    r"(?i)\b(decision|decided|remember|important|constraint|requirement|note|fact|go with)\b"
)
_LABELS = frozenset(
    ("decision", "decided", "remember", "important", "constraint", "requirement", "note", "fact")
)
_KEYS = (*_LABELS, "go with")
_LEAD = re.compile(r"[ \t>*-]*")
_SEP = re.compile(r"[ \t]*[:\-\u2013][ \t]*\S")
_DECIDED = re.compile(r"(?i)\b(?:we|i)\s+(?:have\s+)?$")
_LETS = re.compile(r"(?i)\blet'?s\s+$")
_PATH = re.compile(
    r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.(?:py|pyi|js|ts|tsx|jsx|md|rst|txt|json|ya?ml|toml|cfg|ini"
    r"|c|h|cc|cpp|hpp|go|rs|java|rb|sh|sql|html|css|lock))\b"
)
_ERROR_LINE = re.compile(r"(?m)^.*\b(?:\w*Error|Exception|Traceback|FAILED|fatal)\b.*$")
_QUESTION = re.compile(r"(?m)^[^\n?]{8,200}\?\s*$")
_FACT_CHARS = 400
# How far before "decided" / "go with" the "we" / "let's" may stand.
_LOOKBEHIND_CHARS = 64
_SPACES = re.compile(r"\s*")


def _keyword_hits(text: str) -> Iterator[re.Match[str]]:
    """The keyword matches of ``text``, in order.

    ASCII text (most of it) is searched key by key with ``str.find`` and each
    hit confirmed by the regular expression at that spot: a scan at C speed
    instead of trying the alternation at every position of a long text.
    """
    if not text.isascii():
        yield from _KEYWORD.finditer(text)
        return
    lowered = text.lower()
    starts = []
    for key in _KEYS:
        at = lowered.find(key)
        while at >= 0:
            starts.append(at)
            at = lowered.find(key, at + 1)
    end = -1
    for at in sorted(starts):
        if at < end:
            continue
        match = _KEYWORD.match(text, at)
        if match is not None:
            end = match.end()
            yield match


def _decisions(text: str) -> Iterator[tuple[str, str]]:
    """Each (kind, line) stating a decision, constraint or thing to remember in ``text``.

    Linear in the text, however many keywords one long line holds: each line's
    bounds and lead are found once, the look-behind for "we decided" / "let's go
    with" reads a short window, and a line is read no further than a fact keeps
    (its first ``_FACT_CHARS`` characters).
    """
    line_start = searched = 0
    line_end = lead_end = content_start = -1
    for match in _keyword_hits(text):
        start, end = match.span()
        newline = text.rfind("\n", searched, start)
        searched = start
        if newline >= 0 or line_end < 0:  # the first keyword of a line
            if newline >= 0:
                line_start = newline + 1
            line_end = text.find("\n", end)
            if line_end < 0:
                line_end = len(text)
            lead_end = _run_end(_LEAD, text, line_start, line_end)
            content_start = _run_end(_SPACES, text, line_start, line_end)
        word = match.group(1).lower()
        labelled = word in _LABELS and _SEP.match(text, end) is not None
        if labelled and (lead_end >= start or text.endswith((". ", "! ", "? "), line_start, start)):
            yield word, _line(text, start, line_end)
            continue
        window = max(line_start, start - _LOOKBEHIND_CHARS)
        if (word == "decided" and _DECIDED.search(text, window, start)) or (
            word == "go with" and _LETS.search(text, window, start)
        ):
            yield "decision", _line(text, content_start, line_end)


def _run_end(pattern: re.Pattern[str], text: str, start: int, stop: int) -> int:
    """Where the run of ``pattern`` (which matches the empty string) starting at ``start`` ends."""
    found = pattern.match(text, start, stop)
    return found.end() if found is not None else start


def _line(text: str, start: int, stop: int) -> str:
    """``text[start:stop]`` (from its first non-space), read no further than a fact keeps."""
    return text[start : min(stop, start + _FACT_CHARS + 1)].rstrip()


def is_decision(message: Message) -> bool:
    """True when a user message states a decision, a constraint or something to remember."""
    if message.role is not Role.USER:
        return False
    return any(next(_decisions(t), None) is not None for t in _texts(message))


def extract_facts(messages: Sequence[Message], *, details: bool = False) -> list[Fact]:
    """The decisions, constraints and things to remember stated in the messages' text.

    Each line such as ``Decision: use port 8231`` becomes a fact keyed by its
    label and a short digest of its text, sourced to the message it came from.
    Tool results are not searched: they hold code and logs, not commitments.
    With ``details`` the specific details users state follow (see
    :func:`extract_details`), unless a decision already holds them.
    """
    facts = _decision_facts(messages)
    if details:
        known = [f.value for f in facts]
        facts.extend(f for f in extract_details(messages) if not any(f.value in k for k in known))
    return facts


def _decision_facts(messages: Sequence[Message]) -> list[Fact]:
    facts: list[Fact] = []
    seen: set[str] = set()
    for message in messages:
        if (
            message.role is Role.SYSTEM
            or SUMMARY_OF in message.metadata
            or message.metadata.get("ctxflow.kind") == "summary"
        ):
            continue
        for text in _texts(message):
            for kind, found in _decisions(text):
                line = found[:_FACT_CHARS]
                key = f"{'decision' if kind == 'decided' else kind}:"
                key += hashlib.sha1(line.encode()).hexdigest()[:10]
                if key not in seen:
                    seen.add(key)
                    facts.append(Fact(key=key, value=line, source=message.id))
    return facts


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def render(messages: Sequence[Message], *, max_chars: int = 64_000, per_block: int = 1_500) -> str:
    """A plain-text transcript of ``messages``, bounded to about ``max_chars`` characters.

    Each block is clipped to ``per_block`` characters; if the whole is still
    too long its middle is cut, so the start (the request) and the end (the
    latest state) survive.
    """
    lines: list[str] = []
    for message in messages:
        role = "summary" if SUMMARY_OF in message.metadata else message.role.value
        for block in message.content:
            if isinstance(block, TextBlock):
                lines.append(f"{role}: {_clip(block.text, per_block)}")
            elif block.type == "tool_use":
                call = json.dumps(dict(block.input), ensure_ascii=False)  # type: ignore[union-attr]
                lines.append(f"{role} calls {block.name}: {_clip(call, per_block)}")  # type: ignore[union-attr]
            elif isinstance(block, ToolResultBlock):
                flag = " (error)" if block.is_error else ""
                lines.append(f"tool result{flag}: {_clip(block.text, per_block)}")
    text = "\n".join(lines)
    if len(text) <= max_chars:
        return text
    head = max_chars * 2 // 3
    tail = max_chars - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n[… {cut:,} characters of the transcript omitted …]\n{text[-tail:]}"


class ExtractiveSummarizer:
    """A deterministic, offline summarizer built from regular expressions."""

    def __init__(self, *, chars_per_token: float = 3.0) -> None:
        self.chars_per_token = chars_per_token

    def summarize(self, messages: Sequence[Message], *, max_tokens: int) -> str:
        """Request, decisions, files, errors, tool outcomes and open questions, bounded."""
        budget = max(40, int(max_tokens * self.chars_per_token))
        sections: list[tuple[str, list[str]]] = []
        request = next(
            (
                m
                for m in messages
                if m.role is Role.USER and SUMMARY_OF not in m.metadata and _texts(m)
            ),
            None,
        )
        earlier = [" ".join(_texts(m)) for m in messages if SUMMARY_OF in m.metadata]
        if earlier:
            sections.append(("Earlier", [_clip(t, 600) for t in earlier[-2:]]))
        if request is not None:
            sections.append(("Request", [_clip(" ".join(_texts(request)), 500)]))
        decisions = [f.value for f in _decision_facts(messages)]
        if decisions:
            sections.append(("Decisions", decisions))
        said = " ".join(_texts(request)) if request is not None else ""
        details = [
            f.value
            for f in extract_details(messages)
            if f.value not in said and not any(f.value in d for d in decisions)
        ]
        if details:
            sections.append(("Details", details))
        files: dict[str, None] = {}
        tools: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        errors: list[str] = []
        questions: list[str] = []
        names: dict[str, str] = {}
        for message in messages:
            for text in _texts(message):
                files.update(dict.fromkeys(_PATH.findall(text)))
                if message.role is Role.USER:
                    questions.extend(q.strip() for q in _QUESTION.findall(text))
            for use in message.tool_uses:
                names[use.id] = use.name
                tools[use.name] += 1
                files.update(
                    dict.fromkeys(_PATH.findall(json.dumps(dict(use.input), ensure_ascii=False)))
                )
            for result in message.tool_results:
                name = names.get(result.tool_use_id, "tool")
                content = result.text
                if result.is_error:
                    failures[name] += 1
                    errors.append(f"{name}: {_clip(content, 160)}")
                else:
                    hit = _ERROR_LINE.search(content[:20_000])
                    if hit:
                        errors.append(f"{name}: {_clip(hit.group(0), 160)}")
        if files:
            sections.append(("Files", [", ".join(list(files)[:40])]))
        if tools:
            outcome = ", ".join(
                f"{name} x{n}" + (f" ({failures[name]} failed)" if failures[name] else "")
                for name, n in tools.most_common()
            )
            sections.append(("Tools", [outcome]))
        if errors:
            sections.append(("Errors", list(dict.fromkeys(errors))[-6:]))
        if questions:
            sections.append(("Open questions", list(dict.fromkeys(questions))[-4:]))
        last = next((m for m in reversed(messages) if m.role is Role.ASSISTANT and _texts(m)), None)
        if last is not None:
            sections.append(("Latest", [_clip(" ".join(_texts(last)), 300)]))
        out: list[str] = []
        used = 0
        for title, items in sections:
            header = f"{title}:"
            if used + len(header) + 1 > budget:
                break
            out.append(header)
            used += len(header) + 1
            for item in items:
                line = f"- {item}"
                if title == "Details" and used + len(line) + 1 > budget:
                    continue  # a clipped detail is no longer checkable: try a shorter one
                if used + len(line) + 1 > budget:
                    line = _clip(line, budget - used - 1)
                    if len(line) < 12:
                        break
                out.append(line)
                used += len(line) + 1
        text = "\n".join(out).strip()
        return text or f"{len(messages)} messages with no text to keep."


SUMMARY_PROMPT = """You compress the earlier part of an agent's conversation so the agent can \
continue without it. Write a summary that is 70-90% shorter than the transcript, in plain \
text with these sections:
Request: the user's original request and goals.
Decisions: every decision, commitment, constraint and preference, verbatim where short.
Facts: identifiers, file paths, names, numbers, codes and results the agent will need again.
Chronology: what was done, in order, and each tool outcome (including errors).
Open: questions and work still open.
Do not invent anything. Do not address the user. At most {max_tokens} tokens."""


def _request(
    messages: Sequence[Message], max_tokens: int, model: str, max_input_chars: int
) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "system": SUMMARY_PROMPT.format(max_tokens=max_tokens),
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "Transcript to summarise:\n\n"
                        + render(messages, max_chars=max_input_chars),
                    }
                ],
            }
        ],
    }


def _text_of(response: Mapping[str, Any]) -> str:
    if not isinstance(response, Mapping):
        raise CompressionError(
            f"the summarizer's client must return a mapping (got {type(response).__name__})",
            rule="summarizer_output",
        )
    content = response.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise CompressionError(
            "the summarizer's response must have a 'content' list of blocks "
            f"(got {type(content).__name__})",
            rule="summarizer_output",
        )
    return "\n".join(
        b["text"]
        for b in content
        if isinstance(b, Mapping) and b.get("type") == "text" and isinstance(b.get("text"), str)
    )


def checked_summary(text: object, *, source: str = "summarizer") -> str:
    """``text`` stripped, or a CompressionError when it is not a non-empty string."""
    if not isinstance(text, str):
        raise CompressionError(
            f"a summary must be a string (got {type(text).__name__} from {source})",
            rule="summarizer_output",
        )
    stripped = text.strip()
    if not stripped:
        raise CompressionError(
            f"a summary must not be empty (got {text!r} from {source})", rule="summarizer_output"
        )
    return stripped


_Client = TypeVar("_Client", LLMClient, AsyncLLMClient)


class _ClientSummarizer(Generic[_Client]):
    """What the sync and async LLM summarizers share: the client, the model, the input cap."""

    def __init__(
        self, client: _Client, *, model: str = "default", max_input_tokens: int = 16_000
    ) -> None:
        self.client: _Client = client
        self.model = model
        self.max_input_chars = max_input_tokens * 3

    def _request(self, messages: Sequence[Message], max_tokens: int) -> dict[str, Any]:
        return _request(messages, max_tokens, self.model, self.max_input_chars)


@contextmanager
def _client_failures() -> Iterator[None]:
    """The client's failures as a CompressionError (one that already is passes as it is)."""
    try:
        yield
    except CompressionError:
        raise
    except Exception as error:
        raise CompressionError(
            f"the summarizer's client failed: {type(error).__name__}: {error}",
            rule="summarizer_failed",
        ) from error


class LLMSummarizer(_ClientSummarizer[LLMClient]):
    """Summarises through any :class:`~ctxflow.protocols.LLMClient` (Anthropic-shaped bodies)."""

    def summarize(self, messages: Sequence[Message], *, max_tokens: int) -> str:
        """The model's summary of ``messages`` (CompressionError on any failure)."""
        request = self._request(messages, max_tokens)
        with _client_failures():
            response = self.client.complete(request)
        return checked_summary(_text_of(response), source="LLMSummarizer")


class AsyncLLMSummarizer(_ClientSummarizer[AsyncLLMClient]):
    """The async form of :class:`LLMSummarizer`, over an :class:`AsyncLLMClient`."""

    async def summarize(self, messages: Sequence[Message], *, max_tokens: int) -> str:
        """The model's summary of ``messages`` (CompressionError on any failure)."""
        request = self._request(messages, max_tokens)
        with _client_failures():
            response = await self.client.complete(request)
        return checked_summary(_text_of(response), source="AsyncLLMSummarizer")
