"""The effective view: what a model would be shown, derived from the log, its tags and overlays.

Compression never deletes: it *tags* messages (``condense_parent`` /
``truncation_parent``) or lays an *overlay* over one (a cleared or trimmed
tool result). A summary is stored at the end of the log (the log only grows)
but shown where the first message it covers stood, its *anchor*, so the
chronology reads naturally.

The view is rebuilt from slices of the log between the few *special*
positions (tagged, summary or overlaid messages), marked in a byte per log
position, so a rebuild costs Python work per special message, not per
message. Validity is known incrementally: once the view has been checked, an
append checks only the new messages and a change only the messages it touched
and their new neighbours (every API rule is local, see
:func:`~ctxflow.model._validity.local_ok`), so the ladder's check of a long view
is not a pass over it each time.
"""

from __future__ import annotations

import itertools
import operator
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from ctxflow.model._lazy import (
    SUMMARY_OF,
    Facts,
    IndexFacts,
    OverlayPlaceholder,
    Placeholder,
    Source,
    facts_of,
)
from ctxflow.model._log import MessageLog, Unbuilt
from ctxflow.model._messages import Message, Role
from ctxflow.model._validity import check, local_ok

__all__ = ["SUMMARY_OF", "Checked", "View", "is_summary"]


def is_summary(message: Message | IndexFacts) -> bool:
    """True when ``message`` is a summary (a placeholder, or an unbuilt message's
    index facts, knows without its body)."""
    kind = type(message)
    if kind is Placeholder or kind is Facts:
        return bool(message.summary)  # type: ignore[union-attr]  # both have it
    assert isinstance(message, Message)
    return bool(message.metadata) and SUMMARY_OF in message.metadata


_ID: Callable[[Any], str] = operator.attrgetter("id")
_FIRST: Callable[[Any], Any] = operator.itemgetter(0)
_SUMMARY: Callable[[Any], bool] = operator.attrgetter("summary")

# A log position's part in the view: shown as is; not shown (truncated, or a
# summary's own slot); special (a summary's span, or shown overlaid).
_PLAIN, _SKIP, _SPECIAL = 0, 1, 2


class Checked(NamedTuple):
    """A view known valid for Anthropic: when, how far, and whether for OpenAI too."""

    epoch: int
    length: int
    openai: bool


class View:
    """The effective view of a log, its token counts, and what is known of its validity."""

    __slots__ = (
        "anchors",
        "epoch",
        "flags",
        "log",
        "messages",
        "overlay_source",
        "overlay_tokens",
        "overlays",
        "positions",
        "tokens",
        "total",
        "unbuilt_overlays",
        "valid",
    )

    def __init__(self, log: MessageLog) -> None:
        self.log = log
        # By message id; None for an overlay a lazy restore left in the store, unbuilt
        # (its body key in ``unbuilt_overlays``, built by ``overlay_of``).
        self.overlays: dict[str, Message] = {}
        self.unbuilt_overlays: dict[str, str] = {}
        self.overlay_source: Source | None = None
        self.overlay_tokens: dict[str, int] = {}
        self.flags = bytearray()  # one per log position: _PLAIN, _SKIP or _SPECIAL
        self.messages: list[Message] | None = None  # None until first asked for
        self.tokens: list[int] = []
        self.positions: list[int] = []  # the log position of each view entry
        self.anchors: dict[str, int] = {}  # summary id -> log position it is shown at
        self.total = 0
        self.epoch = 0  # moves on every change other than an append
        self.valid: Checked | None = None  # only valid views are remembered

    def overlay_of(self, message_id: str) -> Message | None:
        """The overlay laid over a message (None: none), an unbuilt one built first."""
        overlay: Message | None = self.overlays.get(message_id)
        if overlay is None and message_id in self.overlays:
            overlay = self._build_overlays((message_id,))[0]
        return overlay

    def built_overlays(self) -> dict[str, Message]:
        """Every overlay by message id, the unbuilt ones built first."""
        if self.unbuilt_overlays:
            self._build_overlays(list(self.unbuilt_overlays))
        return self.overlays

    def lay_unbuilt(
        self, overlays: Mapping[str, Message | None], keys: Mapping[str, str], source: Source
    ) -> None:
        """Lay ``overlays`` by message id, None for each left in ``source`` under its body
        key in ``keys`` (over a message the log left unbuilt: an overlay over a hidden
        message is never shown), which stays unbuilt until read. Their counts and the
        flags are the caller's."""
        self.overlays.update(overlays)  # type: ignore[arg-type]  # None: unbuilt
        self.unbuilt_overlays.update(keys)
        self.overlay_source = source

    def _build_overlays(self, message_ids: Sequence[str]) -> list[Message]:
        log, keys, source = self.log, self.unbuilt_overlays, self.overlay_source
        assert source is not None  # an unbuilt overlay came with its source
        under: list[IndexFacts] = []
        for message_id in message_ids:
            entry = log.known(log.position[message_id])
            if isinstance(entry, Message) and type(entry) is not Placeholder:
                entry = facts_of(entry)  # a message read since: its facts
            under.append(entry)
        built = OverlayPlaceholder.many(
            under, [keys.pop(i) for i in message_ids], [(None, None)] * len(under), source
        )
        self.overlays.update(zip(message_ids, built, strict=True))
        return built  # type: ignore[return-value]

    def current(self) -> list[Message]:
        """The view's messages (rebuilt first if a change left none)."""
        if self.messages is None:
            self.rebuild()
        assert self.messages is not None
        return self.messages

    # -- flags and the rebuild -------------------------------------------------

    def flag(self, at: int) -> int:
        """The part log position ``at`` plays in the view."""
        log = self.log
        entry = log.known(at)
        if is_summary(entry):
            return _SKIP  # shown where the first message it covers stood
        condense, truncation = log.tags_at(at)
        if condense is not None:
            return _SPECIAL
        if truncation is not None:
            return _SKIP
        return _SPECIAL if entry.id in self.overlays else _PLAIN

    def rebuild(self) -> None:
        """Derive the view, its counts and log positions from the log's flags.

        Runs of plain messages are copied as slices and runs of skipped ones
        found with ``bytearray.find``, so the Python work is per run and per
        special message, however long the log.
        """
        log, counts, flags = self.log.messages, self.log.counts, self.flags
        overlays, overlay_tokens = self.overlays, self.overlay_tokens
        view: list[Message] = []
        tokens: list[int] = []
        positions: list[int] = []
        anchors: dict[str, int] = {}
        size = len(log)
        skip, special, plain = flags.find(_SKIP), flags.find(_SPECIAL), 0
        at = 0
        while at < size:
            if 0 <= skip < at:
                skip = flags.find(_SKIP, at)
            if 0 <= special < at:
                special = flags.find(_SPECIAL, at)
            stop = min(skip if skip >= 0 else size, special if special >= 0 else size)
            if stop > at:
                view += log[at:stop]
                tokens += counts[at:stop]
                positions += range(at, stop)
            if stop >= size:
                break
            if stop == skip:
                if plain <= stop:
                    plain = flags.find(_PLAIN, stop)
                    plain = size if plain < 0 else plain
                if 0 <= special < stop:
                    special = flags.find(_SPECIAL, stop)
                at = min(plain, special if special >= 0 else size)
                continue
            at = stop + 1
            message: Message | None = log[stop]
            if message is None:  # an unbuilt hidden message: its facts and tags tell
                ident, parent = self.log.known(stop).id, self.log.tags_at(stop)[0]
            else:
                ident, parent = message.id, message.condense_parent
            if parent is None:
                laid: Message | None = overlays[ident]
                if laid is None:  # left in the store at a restore: built now it is shown
                    laid = self.overlay_of(ident)
                    assert laid is not None
                view.append(laid)
                tokens.append(overlay_tokens[ident])
                positions.append(stop)
            elif parent not in anchors:
                anchors[parent] = stop
                where = self.log.position[parent]
                if self.log.tags_at(where) == (None, None):  # a summary shown: built
                    shown = self.overlay_of(parent) if parent in overlays else None
                    view.append(shown if shown is not None else self.log.message(where))
                    tokens.append(overlay_tokens.get(parent, counts[where]))
                    positions.append(stop)
        self.messages, self.tokens, self.positions = view, tokens, positions
        self.anchors = anchors
        self.total = sum(tokens)

    def index(self, at: int) -> tuple[int | None, bool]:
        """Where log position ``at`` stands in the view, and whether it is shown there.

        A summary stands where its span began (None when it stands nowhere);
        a hidden message's index is that of the next message shown.
        """
        message = self.log.known(at)
        if is_summary(message):
            anchor = self.anchors.get(message.id)
            if anchor is None:
                return None, False
            at = anchor
        positions = self.positions
        index = bisect_left(positions, at)
        return index, index < len(positions) and positions[index] == at

    # -- changing ----------------------------------------------------------------

    def append(self, batch: Sequence[Message], counts: Sequence[int]) -> bool:
        """Show messages just added to the log; False when the view must be rebuilt.

        Untagged messages extend the cached view in place, so the common
        append stays O(new messages). A tagged message or a summary among them
        only gets its flag: the caller then treats the append as a change.
        """
        end = len(self.log.messages)
        base = end - len(batch)
        self.flags += bytes(len(batch))  # _PLAIN
        for message in batch:
            if message.hidden or is_summary(message):
                self.flags[base:end] = self._flags_at(range(base, end))
                return False
        if self.messages is not None:
            self.messages += batch
            self.tokens += counts
            self.positions += range(base, end)
        self.total += sum(counts)
        return True

    def _flags_at(self, positions: Sequence[int]) -> bytes:
        """What :meth:`flag` gives each of the log ``positions``, in one pass (nothing
        is built)."""
        overlays, log = self.overlays, self.log
        messages = log.messages
        flags = bytearray(len(positions))
        for k, at in enumerate(positions):
            message: Message | None = messages[at]
            if message is None:  # unbuilt: hidden, its facts and tags tell the rest
                facts = log.known(at)
                summary, ident = bool(facts.summary), facts.id  # type: ignore[union-attr]
                condense, truncation = log.tags_at(at)
            elif type(message) is Placeholder:
                summary, ident = message.summary, message.id
                condense, truncation = message.condense_parent, message.truncation_parent
            else:
                metadata = message.metadata
                summary, ident = bool(metadata) and SUMMARY_OF in metadata, message.id
                condense, truncation = message.condense_parent, message.truncation_parent
            if summary or (condense is None and truncation is not None):
                flags[k] = _SKIP
            elif condense is not None or ident in overlays:
                flags[k] = _SPECIAL
        return bytes(flags)

    def restored(self, empty: Sequence[bool], unbuilt: Unbuilt | None) -> None:
        """Flag a lazy restore's whole log at once (its messages in the log already,
        ``empty`` true at each unbuilt position, ``unbuilt`` describing those, the
        overlays laid): an unbuilt message is hidden, so it is skipped unless a
        summary condensed it (then its span is special) and it is no summary itself."""
        log = self.log
        size = len(log.messages)
        if unbuilt is None:
            self.flags = bytearray(self._flags_at(range(size)))
            return
        flags = bytearray(bytes(empty))  # _SKIP (1) at each unbuilt position, else 0
        tags, position, facts = unbuilt.tags, log.position, unbuilt.facts
        condensed = itertools.compress(
            tags.keys(), map(operator.is_not, map(_FIRST, tags.values()), itertools.repeat(None))
        )
        for at in map(position.get, condensed):
            if at is not None and flags[at] and not _SUMMARY(facts[at]):
                flags[at] = _SPECIAL
        built = list(itertools.compress(range(size), map(operator.not_, empty)))
        for at, flag in zip(built, self._flags_at(built), strict=True):
            flags[at] = flag
        self.flags = flags

    def add_summary(self, summary: Message, count: int) -> int:
        """Store a summary at the end of the log (shown at its anchor); its log position."""
        self.log.add((summary,), (count,))
        self.flags.append(_SKIP)
        return len(self.flags) - 1

    def tag(self, message_id: str, condense: str | None, truncation: str | None) -> int:
        """Add the tags a message lacks (a tag it has already is kept); its log position."""
        at = self.log.position[message_id]
        message = self.log.message(at)
        condense = message.condense_parent or condense
        truncation = message.truncation_parent or truncation
        if condense != message.condense_parent or truncation != message.truncation_parent:
            self.log.messages[at] = message.with_tags(
                condense_parent=condense, truncation_parent=truncation
            )
            self.flags[at] = self.flag(at)
        return at

    def untag(self, at: int) -> bool:
        """Clear the tags of the message at ``at``; False if it had none."""
        message = self.log.message(at)
        if not message.hidden:
            return False
        self.overlay_of(message.id)  # shown again: its overlay too, if it has one
        self.log.messages[at] = message.with_tags(condense_parent=None, truncation_parent=None)
        self.flags[at] = self.flag(at)
        return True

    def lay(self, at: int, replacement: Message, count: int) -> None:
        """Show ``replacement`` (counted ``count``) instead of the message at ``at`` (its id)."""
        self.overlays[replacement.id] = replacement
        self.unbuilt_overlays.pop(replacement.id, None)
        self.overlay_tokens[replacement.id] = count
        self.flags[at] = self.flag(at)

    def lay_many(
        self,
        positions: Sequence[int],
        replacements: Mapping[str, Message],
        counts: Mapping[str, int],
    ) -> None:
        """:meth:`lay` for many overlays at once: ``replacements`` by message id, at log
        ``positions`` in the same order, counted as ``counts`` gives (a restore lays
        every overlay of the log)."""
        self.overlays.update(replacements)
        if self.unbuilt_overlays:
            for message_id in replacements:
                self.unbuilt_overlays.pop(message_id, None)
        self.overlay_tokens.update((i, counts[i]) for i in replacements)
        flags = self.flags
        for at, flag in zip(positions, self._flags_at(positions), strict=True):
            flags[at] = flag

    def lift(self, at: int) -> bool:
        """Show the original at ``at`` again; False if it had no overlay."""
        message_id = self.log.known(at).id
        if message_id not in self.overlays:
            return False
        del self.overlays[message_id]
        self.unbuilt_overlays.pop(message_id, None)
        self.overlay_tokens.pop(message_id, None)
        self.flags[at] = self.flag(at)
        return True

    # -- validity ----------------------------------------------------------------

    def known(self) -> tuple[bool, bool] | None:
        """(Anthropic, OpenAI) validity of the view from what is known, or None if unknown."""
        memo = self.valid
        if memo is None or memo.epoch != self.epoch:
            return None
        view = self.current()
        if memo.length < len(view):
            anthropic, openai_new = local_ok(view, range(memo.length, len(view)))
            if not anthropic:
                self.valid = None
                return None  # let a full check report exactly what is wrong
            memo = self.valid = Checked(self.epoch, len(view), memo.openai and openai_new)
        return True, memo.openai

    def validity(self) -> tuple[bool, bool]:
        """(Anthropic, OpenAI) validity of the view: known, or checked once and remembered."""
        known = self.known()
        if known is not None:
            return known
        view = self.current()
        report = check(view, api="openai")
        # The OpenAI rules are the Anthropic ones plus text-only tool results.
        anthropic = all(v.rule == "tool_result_non_text" for v in report.violations)
        self.valid = Checked(self.epoch, len(view), report.ok) if anthropic else None
        return anthropic, report.ok

    def pending(self) -> tuple[str, ...]:
        """The calls of a last assistant message, waiting for their results."""
        view = self.current()
        last = view[-1] if view else None
        if last is not None and last.role is Role.ASSISTANT:
            return tuple(u.id for u in last.tool_uses)
        return ()

    def changed(self, moved: Iterable[int], restyled: Iterable[int] = ()) -> None:
        """Rebuild the view after a change: log positions whose visibility ``moved``
        (hidden, shown again, or newly appended) and positions whose shown
        content was ``restyled`` (an overlay laid or lifted: roles and tool ids kept).

        A view known valid before stays known valid when the restyled messages
        and the new neighbours around the moved ones pass the local rules;
        otherwise validity is unknown until the next check.
        """
        was = self.known() if self.messages is not None else None
        self.epoch += 1
        self.rebuild()
        self.valid = None
        if was is None or not was[0]:
            return
        view = self.current()
        around: set[int] = set()
        for at in moved:
            index, shown = self.index(at)
            if index is not None:
                around.add(index)
                if shown:
                    around.add(index + 1)  # shown (again): the pair after it is new too
        anthropic, openai = local_ok(view, sorted(around))
        if not anthropic:
            return
        restyled_shown = []
        for at in restyled:
            index, shown = self.index(at)
            if index is not None and shown and index not in around:
                restyled_shown.append(index)
        anthropic, openai_restyled = local_ok(view, restyled_shown, pairs=False)
        if anthropic:
            self.valid = Checked(self.epoch, len(view), was[1] and openai and openai_restyled)
