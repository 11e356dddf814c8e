"""The selector's index of a conversation: its effective view as a table of turn units.

A build must not re-tokenize the history, so everything the selector needs is
measured once and kept per conversation and measure: each message's count (from
the conversation's own cache) and its masked form and count, the turn units
(:class:`UnitTable`), and running totals over them (:class:`PrefixSums`) that
let the selector find its cuts by binary search.

The index follows the conversation: an unchanged view keeps it as it is; when
the new view extends the old one (appends), only the units from the last
closed one onwards are rebuilt; any other change (a summary, an overlay, a
hidden message) rebuilds it all. Cached
derived values (scores, merged messages, trims) are checked against the
messages they came from by identity, never trusted by position alone.

Like the Conversation itself, an index is not meant for concurrent builds on
one conversation from several threads.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Iterator
from typing import NamedTuple

import attrs

from ctxflow.budget._scoring import ScoreWeights, score_message
from ctxflow.errors import InvalidMessage
from ctxflow.model import (
    Block,
    Conversation,
    Message,
    RedactedThinkingBlock,
    Role,
    ThinkingBlock,
    ToolResultBlock,
)
from ctxflow.protocols import Measure

#: Where a unit stands in the view and whether its pairs are intact: ``(first, end, valid)``.
UnitRow = tuple[int, int, bool]

#: Metadata key on a merged window message: the ids of the messages merged.
MERGED_FROM = "ctxflow.merged_from"
#: Metadata key on a window message whose tool results were masked or trimmed.
WINDOW_EDIT = "ctxflow.window_edit"


def placeholder_text(tool: str, chars: int) -> str:
    """The text standing in for a masked tool result."""
    return f"[{tool} result withheld from this window: {chars:,} chars]"


class UnitTable:
    """The turn units of an effective view: one row each, as named typed columns.

    Row ``u`` is the unit ``view[first[u]:end[u]]``; ``tokens[u]`` is its cost
    as it stands and ``masked[u]`` its cost with tool results masked;
    ``valid[u]`` is False when its tool pairs are broken in the view. Three
    ascending lists of row numbers mark units: ``important`` (holding an
    important message), ``broken`` (not valid) and ``clash`` (opening with the
    role the previous unit closed with, so the two merge when adjacent).
    """

    __slots__ = ("broken", "clash", "end", "first", "important", "masked", "tokens", "valid")

    def __init__(self) -> None:
        self.first: list[int] = []
        self.end: list[int] = []
        self.tokens: list[int] = []
        self.masked: list[int] = []
        self.valid: list[bool] = []
        self.important: list[int] = []
        self.broken: list[int] = []
        self.clash: list[int] = []

    def __len__(self) -> int:
        return len(self.first)

    def extend(self, rows: list[UnitRow], tokens: list[int], masked: list[int]) -> None:
        """Append rows (where each unit stands) with their whole and masked costs."""
        self.first += [row[0] for row in rows]
        self.end += [row[1] for row in rows]
        self.valid += [row[2] for row in rows]
        self.tokens += tokens
        self.masked += masked

    def truncate(self, count: int) -> None:
        """Keep the first ``count`` rows."""
        for column in (self.first, self.end, self.tokens, self.masked, self.valid):
            del column[count:]
        self.important = [u for u in self.important if u < count]
        self.broken = [u for u in self.broken if u < count]
        self.clash = [u for u in self.clash if u < count]

    def evidence(self, unit: int) -> int:
        """The tokens masking the unit's tool results saves."""
        return self.tokens[unit] - self.masked[unit]


class PrefixSums:
    """Running totals over the unit table: entry ``u`` sums rows ``0 .. u-1``.

    Broken units count as zero in every column. ``tokens``, ``masked`` and
    ``evidence`` are the whole cost, the masked cost and their difference;
    ``evidence_units`` and ``evidence_messages`` count the units (and their
    messages) with something to mask; ``units`` and ``messages`` count the
    valid units and their messages.
    """

    __slots__ = (
        "evidence",
        "evidence_messages",
        "evidence_units",
        "masked",
        "messages",
        "tokens",
        "units",
    )

    def __init__(self) -> None:
        self.tokens = [0]
        self.masked = [0]
        self.evidence = [0]
        self.evidence_units = [0]
        self.evidence_messages = [0]
        self.units = [0]
        self.messages = [0]

    def extend(self, rows: list[UnitRow], tokens: list[int], masked: list[int]) -> None:
        """Extend every total by the units ``rows`` (whole and masked costs given)."""
        valid = [row[2] for row in rows]
        tokens = [t if ok else 0 for t, ok in zip(tokens, valid, strict=True)]
        masked = [m if ok else 0 for m, ok in zip(masked, valid, strict=True)]
        messages = [row[1] - row[0] if row[2] else 0 for row in rows]
        evidence = [t - m for t, m in zip(tokens, masked, strict=True)]
        _accumulate(self.tokens, tokens)
        _accumulate(self.masked, masked)
        _accumulate(self.evidence, evidence)
        _accumulate(self.evidence_units, [1 if e > 0 else 0 for e in evidence])
        _accumulate(
            self.evidence_messages,
            [n if e > 0 else 0 for n, e in zip(messages, evidence, strict=True)],
        )
        _accumulate(self.units, [1 if ok else 0 for ok in valid])
        _accumulate(self.messages, messages)

    def truncate(self, count: int) -> None:
        """Keep the totals of the first ``count`` units."""
        for column in (
            self.tokens,
            self.masked,
            self.evidence,
            self.evidence_units,
            self.evidence_messages,
            self.units,
            self.messages,
        ):
            del column[count + 1 :]


def _accumulate(totals: list[int], values: list[int]) -> None:
    """Append the running totals of ``values`` to ``totals``."""
    totals += itertools.islice(itertools.accumulate(values, initial=totals[-1]), 1, None)


class Trim(NamedTuple):
    """A unit's messages with their largest tool results middle-trimmed, and their cost."""

    messages: list[Message]
    tokens: int


class _Merged(NamedTuple):
    """Two adjacent same-role messages as one, with its cost (cached by the pair's identity)."""

    first: Message
    second: Message
    message: Message
    tokens: int


class SelectionIndex:
    """Per-conversation, per-measure facts about the effective view, kept current by :meth:`sync`.

    Per message (columns indexed by view position): ``view``, ``tokens``, and
    the masked form with its count (``masked_view``, ``masked_tokens``; the
    message itself where masking saves nothing). Per unit: ``units`` and
    ``prefix``.
    """

    def __init__(self, measure: Measure) -> None:
        self.measure = measure
        self.view: list[Message] = []
        self.tokens: list[int] = []
        self.masked_view: list[Message] = []
        self.masked_tokens: list[int] = []
        self.system_text = ""
        self.tool_blocks = False
        self.dialogue_start = 0  # 1 when the view opens with a system message
        self.units = UnitTable()
        self.prefix = PrefixSums()
        #: (first, end, room) -> the unit's messages when trimmed, and the trim (None: no fit)
        self.trims: dict[tuple[int, int, int], tuple[tuple[Message, ...], Trim | None]] = {}
        self._scores: dict[int, tuple[Message, float]] = {}
        self._score_key: tuple[frozenset[str], ScoreWeights] | None = None
        self._unit_scores: dict[tuple[int, int], tuple[Message, float]] = {}
        self._costs: dict[int, tuple[Message, int]] = {}
        self._merged: dict[tuple[int, int], _Merged] = {}

    @property
    def full(self) -> list[int]:
        """Each unit's whole cost (the message stream's demand, read by the window builder)."""
        return self.units.tokens

    # -- keeping current -----------------------------------------------------

    def sync(self, conversation: Conversation) -> None:
        """Bring the index up to the conversation's effective view (appends extend it)."""
        view = conversation.effective()
        known = len(self.view)
        if known and len(view) == known and view == self.view:
            self.view = view  # unchanged: the units are those of the same messages
            return
        if known and len(view) > known and view[:known] == self.view:
            kept = self._closed_units(view)
        else:
            known = kept = 0
            self._reset(view)
        for position in range(known, len(view)):
            self._add_message(conversation, view, position)
        self.view = view
        self.units.truncate(kept)
        self.prefix.truncate(kept)
        start = self.units.end[-1] if kept else self.dialogue_start
        self._add_units(list(_split_units(view, start)))

    def _closed_units(self, view: list[Message]) -> int:
        """How many units are final in ``view``: each needs the next message to open a unit."""
        units = self.units
        kept = len(units) - 1 if len(units) else 0
        while kept > 0 and not (
            units.end[kept - 1] < len(view) and _starts_unit(view, units.end[kept - 1])
        ):
            kept -= 1
        return kept

    def _reset(self, view: list[Message]) -> None:
        self.tokens = []
        self.masked_view = []
        self.masked_tokens = []
        self.trims.clear()
        self._unit_scores.clear()
        self.tool_blocks = False
        self.dialogue_start = 1 if view and view[0].role is Role.SYSTEM else 0
        self.system_text = view[0].text if self.dialogue_start else ""

    def _add_message(self, conversation: Conversation, view: list[Message], at: int) -> None:
        message = view[at]
        tokens = conversation.tokens(message.id)
        self.tokens.append(tokens)
        if not self.tool_blocks and (message.tool_uses or message.tool_results):
            self.tool_blocks = True
        masked = _masked_form(conversation, view, at)
        cost = self.measure(masked) if masked is not None else tokens
        if masked is None or cost >= tokens:
            self.masked_view.append(message)
            self.masked_tokens.append(tokens)
        else:
            self.masked_view.append(masked)
            self.masked_tokens.append(cost)

    def _add_units(self, rows: list[UnitRow]) -> None:
        # Column by column, so that a column's numbers sit together in memory: the
        # window builder sums the whole ``tokens`` column on every build.
        units, view = self.units, self.view
        tokens = [sum(self.tokens[first:end]) for first, end, _ in rows]
        masked = [sum(self.masked_tokens[first:end]) for first, end, _ in rows]
        u = len(units)
        previous_end = units.end[-1] if u else 0
        units.extend(rows, tokens, masked)
        self.prefix.extend(rows, tokens, masked)
        for first, end, valid in rows:
            if not valid:
                units.broken.append(u)
            if any(view[i].important for i in range(first, end)):
                units.important.append(u)
            if u > 0 and view[previous_end - 1].role is view[first].role:
                units.clash.append(u)
            u += 1
            previous_end = end

    # -- cached derived values -----------------------------------------------

    def unit_scorer(self, words: frozenset[str], weights: ScoreWeights) -> Callable[[int], float]:
        """A unit's best static score among its messages, for one task and weights (cached)."""
        if (
            self._score_key is None
            or self._score_key[0] != words
            or self._score_key[1] is not weights
        ):
            self._scores.clear()
            self._unit_scores.clear()
            self._score_key = (words, weights)
        view, first_of, end_of = self.view, self.units.first, self.units.end
        cached, message_score = self._unit_scores, self._message_score

        def score(unit: int) -> float:
            first, end = first_of[unit], end_of[unit]
            hit = cached.get((first, end))
            if hit is not None and hit[0] is view[first]:
                return hit[1]
            best = max(message_score(view[i], words, weights) for i in range(first, end))
            cached[(first, end)] = (view[first], best)
            return best

        return score

    def _message_score(
        self, message: Message, words: frozenset[str], weights: ScoreWeights
    ) -> float:
        hit = self._scores.get(id(message))
        if hit is not None and hit[0] is message:
            return hit[1]
        score = score_message(message, position=0, count=1, task_words=words, weights=weights)
        self._scores[id(message)] = (message, score.value)
        return score.value

    def cost_of(self, message: Message) -> int:
        """The measure of a message made for this window (a trimmed one), cached."""
        hit = self._costs.get(id(message))
        if hit is not None and hit[0] is message:
            return hit[1]
        if len(self._costs) > 1024:
            self._costs.clear()
        cost = self.measure(message)
        self._costs[id(message)] = (message, cost)
        return cost

    def merged_message(self, a: Message, b: Message) -> tuple[Message, int]:
        """Adjacent same-role messages ``a`` and ``b`` as one message, and its cost (cached)."""
        key = (id(a), id(b))
        hit = self._merged.get(key)
        if hit is not None and hit.first is a and hit.second is b:
            return hit.message, hit.tokens
        message = _merge(a, b)
        cost = self.measure(message)
        self._merged[key] = _Merged(a, b, message, cost)
        return message, cost


def _split_units(view: list[Message], start: int) -> Iterator[UnitRow]:
    """The units of ``view[start:]`` as ``(first, end, valid)``: pairs are never split.

    An assistant message takes the user message answering all of its calls
    (with thinking blocks, the tool loop continues until a plain turn). A
    partial answer is taken with it, and the unit is not valid; so is a user
    message of results answering nothing right before them.
    """
    count = len(view)
    at = start
    while at < count:
        first = at
        message = view[at]
        at += 1
        valid = True
        if message.role is Role.USER and message.tool_results:
            valid = False
        elif message.role is Role.ASSISTANT:
            at, valid = _tool_loop_end(view, message, at)
        yield first, at, valid


def _tool_loop_end(view: list[Message], message: Message, at: int) -> tuple[int, bool]:
    """Where the tool loop opened by ``message`` (just before ``at``) ends, and if it is intact."""
    count = len(view)
    thinking = _has_thinking(message)
    current = message
    while current.tool_uses:
        if at >= count:
            break  # a trailing pending call
        answer = view[at]
        expected = {u.id for u in current.tool_uses}
        got = {r.tool_use_id for r in answer.tool_results}
        if answer.role is not Role.USER or got != expected:
            if answer.role is Role.USER and got and got <= expected:
                at += 1
            return at, False
        at += 1
        if thinking and at < count and view[at].role is Role.ASSISTANT:
            current = view[at]
            at += 1
            continue
        break
    return at, True


def _has_thinking(message: Message) -> bool:
    return any(isinstance(b, ThinkingBlock | RedactedThinkingBlock) for b in message.content)


def _starts_unit(view: list[Message], at: int) -> bool:
    """Whether ``view[at]`` opens a unit (it answers no call and continues no thinking loop)."""
    message = view[at]
    if message.role is Role.USER and message.tool_results and at > 0:
        previous = view[at - 1]
        if previous.role is Role.ASSISTANT and previous.tool_uses:
            return False
    if message.role is Role.ASSISTANT and at > 1 and _has_thinking(view[at - 2]):
        return not (view[at - 1].role is Role.USER and view[at - 1].tool_results)
    return True


def _masked_form(conversation: Conversation, view: list[Message], at: int) -> Message | None:
    """``view[at]`` with its tool results replaced by placeholders (None: it has none)."""
    message = view[at]
    if not message.tool_results or message.role is not Role.USER:
        return None
    names = {u.id: u.name for u in view[at - 1].tool_uses} if at > 0 else {}

    def placeholder(block: ToolResultBlock) -> str:
        name = names.get(block.tool_use_id) or _tool_name(conversation, block.tool_use_id)
        return placeholder_text(name, len(block.text))

    return with_results(message, placeholder, edit="masked")


def with_results(
    message: Message, content: Callable[[ToolResultBlock], str], *, edit: str
) -> Message:
    """``message`` with each tool result's content replaced by ``content(result)``.

    ``edit`` (``masked`` or ``trimmed``) is recorded under :data:`WINDOW_EDIT`.
    """
    blocks: list[Block] = [
        ToolResultBlock(tool_use_id=b.tool_use_id, content=content(b), is_error=b.is_error)
        if isinstance(b, ToolResultBlock)
        else b
        for b in message.content
    ]
    return attrs.evolve(
        message, content=tuple(blocks), metadata={**message.metadata, WINDOW_EDIT: edit}
    )


def _tool_name(conversation: Conversation, tool_use_id: str) -> str:
    try:
        return conversation.tool_name(tool_use_id)
    except InvalidMessage:
        return "tool"


def _merge(a: Message, b: Message) -> Message:
    """``a`` and ``b`` (same role) as one message: thinking first, or results first."""
    blocks: list[Block] = [*a.content, *b.content]
    if a.role is Role.ASSISTANT:
        first = [x for x in blocks if isinstance(x, ThinkingBlock | RedactedThinkingBlock)]
        blocks = first + [
            x for x in blocks if not isinstance(x, ThinkingBlock | RedactedThinkingBlock)
        ]
    else:
        first_r = [x for x in blocks if isinstance(x, ToolResultBlock)]
        blocks = first_r + [x for x in blocks if not isinstance(x, ToolResultBlock)]
    merged_from = [*a.metadata.get(MERGED_FROM, [a.id]), *b.metadata.get(MERGED_FROM, [b.id])]
    return Message(
        role=a.role,
        content=tuple(blocks),
        id=a.id,
        timestamp=a.timestamp,
        metadata={**a.metadata, MERGED_FROM: merged_from},
        important=a.important or b.important,
    )


_INDEXES: weakref.WeakKeyDictionary[Conversation, dict[int, SelectionIndex]] = (
    weakref.WeakKeyDictionary()
)


def index_for(conversation: Conversation, measure: Measure) -> SelectionIndex:
    """The conversation's index for ``measure``, brought up to its effective view."""
    per = _INDEXES.setdefault(conversation, {})
    index = per.get(id(measure))
    if index is None or index.measure is not measure:
        index = SelectionIndex(measure)
        per[id(measure)] = index
    index.sync(conversation)
    return index
