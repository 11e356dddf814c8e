"""The rungs of the compression ladder: small callables that turn a draft into a smaller one.

A rung's ``propose(draft, ctx)`` returns a new :class:`~ctxflow.compression._draft.Draft`,
a :class:`Skip` saying why it did nothing, or a :class:`NeedsSummary` asking
the ladder to run the summarizer (sync or async) and hand the text to its
``finish``. Rungs never touch the conversation: the ladder commits the final
draft. Every rung tags instead of deleting, so every original stays fetchable.

Cheapest first:

1. :class:`~ctxflow.compression._trim.TrimOversized` — a message larger than
   its share is cut in the middle (head and tail kept, with a marker saying
   what was cut), the latest user text turn excepted;
2. :class:`ClearToolResults` — older tool results are replaced by a short
   placeholder (observation masking), the last ``keep_results`` and pinned
   tools excepted;
3. :class:`Truncate` — the oldest whole turns are hidden, critical messages
   (pinned, the original request, user decisions, summaries) kept;
4. :class:`Condense` — the longest eligible span is replaced by a summary,
   after its facts are flushed to semantic memory;
5. :class:`HardReset` — only pinned messages, the latest summary and the last
   complete turn (and the original request, if it fits) stay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeAlias

import attrs

from ctxflow.compression._details import extract_details
from ctxflow.compression._draft import Draft, dialogue_start, is_result, tail_start
from ctxflow.compression._summarizers import extract_facts, is_decision
from ctxflow.errors import InvalidMessage
from ctxflow.layers import Episode
from ctxflow.model import (
    SUMMARY_OF,
    Block,
    Message,
    Role,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    new_id,
)

__all__ = [
    "CLEARED",
    "OVERLAY_KIND",
    "SUMMARY_MARKER",
    "TRIMMED",
    "ClearToolResults",
    "Condense",
    "HardReset",
    "NeedsSummary",
    "Proposal",
    "Rung",
    "RungContext",
    "Skip",
    "Truncate",
    "hideable_spans",
    "is_summary",
]

#: Metadata key on an overlay saying which rung laid it (``trimmed`` or ``cleared``).
OVERLAY_KIND = "ctxflow.overlay"
TRIMMED = "trimmed"
CLEARED = "cleared"
#: How a summary message's text begins; ``{n}`` is the number of messages it covers.
SUMMARY_MARKER = "[Summary of {n} earlier messages]"


@attrs.frozen(kw_only=True)
class RungContext:
    """What a rung needs to know about this run, in tokens."""

    target: int
    hard_limit: int
    budget: int
    fixed: int
    original_request: str | None
    turn: int = 0


@attrs.frozen(kw_only=True)
class Skip:
    """A rung did nothing, and why."""

    reason: str


@attrs.frozen(kw_only=True)
class NeedsSummary:
    """A rung asks for a summary of ``messages``; ``finish`` turns the text into a draft."""

    messages: tuple[Message, ...]
    max_tokens: int
    finish: Callable[[str], Draft | Skip]


Proposal: TypeAlias = Draft | Skip | NeedsSummary


class Rung(Protocol):
    """One step of the ladder."""

    @property
    def name(self) -> str:
        """A short stable name for reports."""
        ...

    def propose(self, draft: Draft, ctx: RungContext) -> Proposal:
        """A smaller draft, a reason to skip, or a request for a summary."""
        ...


def _result_chars(results: Sequence[ToolResultBlock]) -> int:
    """The characters of the results' text (an image holds none)."""
    if len(results) == 1 and isinstance(results[0].content, str):
        return len(results[0].content)  # the usual message: one result, as text
    total = 0
    for result in results:
        content = result.content
        if isinstance(content, str):
            total += len(content)
        else:
            total += sum(len(b.text) for b in content if isinstance(b, TextBlock))
    return total


def _names(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen(kw_only=True)
class ClearToolResults:
    """Replaces older tool results by a placeholder naming the tool and the size cleared.

    The newest ``keep_results`` result messages and results of tools named in
    ``pinned_tools`` are never cleared; results are cleared oldest first and
    only until the draft reaches the target. The placeholder names no message
    id: the model recalls a result by the call id its tool_result block
    already carries (see :func:`~ctxflow.compression._recall`).
    """

    keep_results: int = 3
    pinned_tools: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    min_chars: int = 1_000
    name: str = "clear"

    def propose(self, draft: Draft, ctx: RungContext) -> Proposal:
        """Clear the oldest eligible tool results until the target is met."""
        view, tokens, measure = draft.view, draft.tokens, draft.measure
        need = draft.total - ctx.target
        min_chars = self.min_chars
        replacements: dict[int, Message] = {}
        counts: dict[int, int] = {}
        saved = 0
        start = max(1, dialogue_start(view))
        for at, message in enumerate(view[start : _keep_from(view, self.keep_results)], start):
            if saved >= need:
                break
            if not message.tool_results or message.important:
                continue
            kind = message.metadata.get(OVERLAY_KIND)
            if kind == CLEARED:
                continue
            # A trimmed result is judged by its original: clearing it still saves its head
            # and tail, and the placeholder names the original's size.
            source = draft.original(message.id) if draft.original and kind else message
            if _result_chars(source.tool_results) < min_chars:
                continue
            replacement = self._cleared(message, view[at - 1], source)
            if replacement is None:
                continue
            count = measure(replacement)
            if count < tokens[at]:
                replacements[at] = replacement
                counts[at] = count
                saved += tokens[at] - count
        if not replacements:
            return Skip(reason="no older tool result is large enough to clear")
        return draft.with_overlays(replacements, counts)

    def _cleared(self, message: Message, call: Message, source: Message) -> Message | None:
        """``message`` with its large, unpinned results replaced (None when none is).

        A placeholder names the size of the result as ``source`` (the original)
        holds it, which is what recalling it gives back, even when the shown
        result was trimmed first.
        """
        names = {use.id: use.name for use in call.tool_uses}
        sizes = {r.tool_use_id: len(r.text) for r in source.tool_results}
        blocks: list[Block] = []
        changed = False
        for block in message.content:
            if isinstance(block, ToolResultBlock):
                size = sizes.get(block.tool_use_id, len(block.text))
                name = names.get(block.tool_use_id, "tool")
                if size >= self.min_chars and name not in self.pinned_tools:
                    kind = "error result" if block.is_error else "result"
                    block = ToolResultBlock(
                        tool_use_id=block.tool_use_id,
                        content=f"[{name} {kind} cleared by ctxflow: {_approx(size)} "
                        "characters; recall it by its call id]",
                        is_error=block.is_error,
                        extra=block.extra,
                    )
                    changed = True
            blocks.append(block)
        if not changed:
            return None
        return message.with_content(blocks, metadata={**message.metadata, OVERLAY_KIND: CLEARED})


def _approx(size: int) -> str:
    """``size`` to two significant digits: 870, 1.2k, 12k, 120k, 1.2M.

    Placeholders repeat this way, so their token counts are served from the
    counter's cache, and the model reads no false precision.
    """
    if size < 1_000:
        return str(size)
    rounded = round(size, 2 - len(str(size)))
    unit, scale = ("M", 1_000_000) if rounded >= 1_000_000 else ("k", 1_000)
    value = rounded / scale
    return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"


def _keep_from(view: Sequence[Message], keep: int) -> int:
    """The view index of the ``keep``-th newest tool-result message (the view's end for 0)."""
    if keep <= 0:
        return len(view)
    for index in range(len(view) - 1, -1, -1):
        if view[index].tool_results:
            keep -= 1
            if keep == 0:
                return index
    return 0


def hideable_spans(
    view: Sequence[Message],
    tokens: Sequence[int],
    protected: Callable[[int], bool],
    stop: int,
    need: float,
) -> list[int]:
    """View indices to hide, oldest first, until ``need`` tokens are freed.

    Only whole spans between same-role safe boundaries are taken (see
    :mod:`ctxflow.compression._draft`), none crossing a protected index, none
    at or after ``stop``; so the view stays valid for every API.
    """
    first = dialogue_start(view)
    stop = min(stop, len(view) - 1)
    out: list[int] = []
    index = first
    while index < stop and need > 0:
        if protected(index) or is_result(view[index]):
            index += 1
            continue
        role = view[index].role
        freed = 0
        best = -1
        best_freed = 0
        bound = index
        while bound < stop:
            if protected(bound):
                break
            freed += tokens[bound]
            bound += 1
            candidate = view[bound]
            if candidate.role is role and not is_result(candidate):
                best, best_freed = bound, freed
                if freed >= need:
                    break
        if best < 0:
            index += 1
            continue
        out.extend(range(index, best))
        need -= best_freed
        index = best
    return out


def _protector(
    draft: Draft, keep: set[int], *, decisions: bool, summaries: bool
) -> Callable[[int], bool]:
    """A predicate for protected view indices, judged lazily (truncation stops early).

    Each index is judged once: the span search asks about a boundary again.
    """
    view = draft.view
    judged: dict[int, bool] = {}

    def protected(index: int) -> bool:
        known = judged.get(index)
        if known is not None:
            return known
        message = view[index]
        verdict = (
            index in keep
            or message.important
            or (summaries and (SUMMARY_OF in message.metadata or _is_new_summary(message)))
            or (decisions and is_decision(message))
        )
        judged[index] = verdict
        return verdict

    return protected


def _latest_summary(draft: Draft) -> set[int]:
    for index in range(len(draft.view) - 1, -1, -1):
        message = draft.view[index]
        if SUMMARY_OF in message.metadata or _is_new_summary(message):
            return {index}
    return set()


def is_summary(message: Message) -> bool:
    """True for a summary message, committed or planned in this run."""
    return SUMMARY_OF in message.metadata or _is_new_summary(message)


def _is_new_summary(message: Message) -> bool:
    return message.role is Role.USER and message.metadata.get("ctxflow.kind") == "summary"


def _request_index(draft: Draft, ctx: RungContext) -> int | None:
    first = dialogue_start(draft.view)
    if first < len(draft.view) and draft.view[first].id == ctx.original_request:
        return first
    return None


def _chat_messages(messages: Sequence[Message], chars: int, block_chars: int) -> list[Message]:
    """The user messages whose short text blocks fit in ``chars``, newest first, in order."""
    picked: list[Message] = []
    for message in reversed(messages):
        if message.role is not Role.USER:
            continue
        texts = [b for b in message.content if isinstance(b, TextBlock)]
        size = sum(len(b.text) for b in texts)
        if not texts or size > block_chars:
            continue
        if size > chars:
            break
        chars -= size
        picked.append(message)
    picked.reverse()
    return picked


@attrs.frozen(kw_only=True)
class Truncate:
    """Hides the oldest whole turns (a sliding window), keeping critical messages.

    User decisions stay visible; the specific details users stated in the
    hidden turns (codes, numbers, paths, "my X is …") are flushed to semantic
    memory. That scan is bounded: only user messages with at most
    ``detail_block_chars`` of text (conversational turns, not pasted
    documents), newest first, up to ``detail_chars`` characters per run
    (0 turns the flush off).
    """

    detail_chars: int = 16_000
    detail_block_chars: int = 1_000
    name: str = "truncate"

    def propose(self, draft: Draft, ctx: RungContext) -> Proposal:
        """Hide the oldest hideable spans until the target is met."""
        request = _request_index(draft, ctx)
        keep = {request} if request is not None else set()
        protected = _protector(draft, keep, decisions=True, summaries=True)
        indices = hideable_spans(
            draft.view, draft.tokens, protected, tail_start(draft.view), draft.total - ctx.target
        )
        if not indices:
            return Skip(reason="no whole turn outside the protected messages can be hidden")
        facts = []
        if self.detail_chars > 0:
            hidden = [draft.view[i] for i in indices]
            facts = extract_details(
                _chat_messages(hidden, self.detail_chars, self.detail_block_chars)
            )
        return draft.without(indices, new_id("trunc"), facts)


@attrs.frozen(kw_only=True)
class Condense:
    """Summarises all but the most recent messages into one summary message.

    The span starts at a plain user message (or an earlier summary) and ends
    just before an assistant message, so the user-role summary keeps roles
    alternating; it never crosses a pinned message. Facts and decisions in the
    span go to semantic memory, the summary to episodic memory.
    """

    keep_recent: int = 6
    ratio: float = 0.2
    max_tokens: int = 2_000
    min_tokens: int = 64
    name: str = "condense"

    def _span(self, draft: Draft, stop: int) -> tuple[int, int] | None:
        view, tokens = draft.view, draft.tokens
        first = dialogue_start(view)
        best: tuple[int, int] | None = None
        best_tokens = 0
        index = first
        while index < stop:
            message = view[index]
            if message.important or message.role is not Role.USER or is_result(message):
                index += 1
                continue
            end = -1
            cursor = index + 1
            while cursor <= stop and cursor < len(view):
                if view[cursor - 1].important:
                    break
                if view[cursor].role is Role.ASSISTANT:
                    end = cursor
                cursor += 1
            # A summary covering only summaries would have no place in the view: the
            # conversation shows a summary where the first original it covers stood.
            if end > index and any(not is_summary(m) for m in view[index:end]):
                weight = sum(tokens[index:end])
                if weight > best_tokens:
                    best, best_tokens = (index, end), weight
                index = end
            else:
                index = cursor
        return best

    def propose(self, draft: Draft, ctx: RungContext) -> Proposal:
        """Ask for a summary of the longest eligible span."""
        view = draft.view
        tail = tail_start(view)
        span = self._span(draft, min(tail, max(0, len(view) - self.keep_recent)))
        if span is None:
            span = self._span(draft, tail)
        if span is None:
            return Skip(
                reason="no span starts at a plain user message and ends before an assistant "
                "message without crossing a pinned one"
            )
        start, stop = span
        messages = tuple(view[start:stop])
        weight = sum(draft.tokens[start:stop])
        room = weight - max(0, draft.total - ctx.target)
        limit = max(self.min_tokens, min(self.max_tokens, int(weight * self.ratio), room))
        facts = extract_facts(messages, details=True)

        def finish(text: str) -> Draft | Skip:
            marker = SUMMARY_MARKER.format(n=len(messages))
            summary = Message(
                role=Role.USER,
                content=(TextBlock(text=f"{marker}\n{text}"),),
                id=_summary_id(draft, messages, text),
                metadata={"ctxflow.kind": "summary"},
            )
            count = draft.measure(summary)
            if count >= weight or count > limit * 1.5 + 16:
                return Skip(
                    reason=f"the summary is too long ({count:,} tokens for a span of "
                    f"{weight:,}, limit {limit:,})"
                )
            episode = Episode(id=summary.id, summary=text, span=tuple(m.id for m in messages))
            return draft.with_summary(start, stop, summary, episode=episode, facts=facts)

        return NeedsSummary(messages=messages, max_tokens=limit, finish=finish)


def _summary_id(draft: Draft, span: Sequence[Message], text: str) -> str:
    """A summary's id, from what it summarises and says, not from the messages' ids.

    Two runs of one conversation then give the same summary ids, so the same
    token counts (memory lists episodes by id) and the same ladder choices,
    even where the application's message ids are random. A span whose id is
    taken (the same plain exchange summarised twice) mixes its ids in.
    """
    digest = hashlib.blake2b(text.encode(), digest_size=16)
    for message in span:
        digest.update(f"\x00{message.role.value}\x00{message.text}".encode())
        for block in message.content:
            if isinstance(block, ToolUseBlock):
                digest.update(f"\x00use\x00{block.id}".encode())
            elif isinstance(block, ToolResultBlock):
                digest.update(f"\x00result\x00{block.tool_use_id}".encode())
    summary_id = f"sum_{digest.hexdigest()}"
    if draft.original is None or not _taken(draft, summary_id):
        return summary_id
    for message in span:
        digest.update(f"\x00id\x00{message.id}".encode())
    return f"sum_{digest.hexdigest()}"


def _taken(draft: Draft, message_id: str) -> bool:
    """Whether the conversation behind ``draft`` or the draft itself holds ``message_id``."""
    if any(summary.id == message_id for summary, _ in draft.summaries):
        return True
    assert draft.original is not None
    try:
        draft.original(message_id)
    except InvalidMessage:
        return False
    return True


@attrs.frozen(kw_only=True)
class HardReset:
    """The last resort: pinned messages, the latest summary and the last complete turn.

    The original request is kept when it is pinned or when the result still
    reaches the target with it; the latest summary too (its text is in
    episodic memory either way). The first option that reaches the target
    wins, else the first within the hard limit, else the smallest.
    """

    name: str = "reset"

    def propose(self, draft: Draft, ctx: RungContext) -> Proposal:
        """Hide everything else that can be hidden, as one truncation event."""
        latest = _latest_summary(draft)
        tail = tail_start(draft.view)
        request = _request_index(draft, ctx)
        tag = new_id("reset")
        requests = [{request}, set()] if request is not None else [set()]
        options = []
        for keep in [latest | r for r in requests] + ([set()] if latest else []):
            protected = _protector(draft, keep, decisions=False, summaries=False)
            indices = hideable_spans(draft.view, draft.tokens, protected, tail, float("inf"))
            if indices:
                hidden = [draft.view[i] for i in indices]
                facts = [
                    *extract_facts(hidden),
                    *extract_details(_chat_messages(hidden, 16_000, 1_000)),
                ]
                options.append(draft.without(indices, tag, facts))
        if not options:
            return Skip(reason="nothing outside the last turn and pinned messages can be hidden")
        for option in options:
            if option.total <= ctx.target:
                return option
        for option in options:
            if option.total <= ctx.hard_limit:
                return option
        return min(options, key=lambda d: d.total)
