"""The Conversation: an append-only log with a tool-pair index and an effective view.

A message enters once, is measured once (its token count is cached), and is
indexed once. Compression never deletes: it tags messages or lays overlays
over them, and the effective view — what a model would be shown — is derived
from the log, the tags and the overlays. Every original stays fetchable by id.

The Conversation composes private parts and keeps the public API:

- :mod:`~ctxflow.model._log`: the messages, their cached counts and positions;
- :mod:`~ctxflow.model._pairs`: where each tool call was made and answered;
- :mod:`~ctxflow.model._view`: flags, overlays, summaries' anchors, the view's
  rebuild and its incremental validity;
- :mod:`~ctxflow.model._undo`: taking back a compression refused after it was
  made; :mod:`~ctxflow.model._changes` holds the rules checked before one is.

An append checks the log's rules, then the pair index's, each in one pass
over the batch; the first error raised is still the first in the batch.

Every change other than an append is also written to a *change journal*: the
log positions whose tags or overlays it touched. A reader that keeps a mark
(:attr:`Conversation.change_mark`) asks :meth:`Conversation.changes_since` what
moved since, instead of comparing every message (a checkpoint writer does:
its cost follows the change, not the log). The journal keeps the latest
:data:`JOURNAL_SIZE` entries or more (a compression touches at most the
view and the spans it hides); a reader further behind gets None and compares
in full.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

from ctxflow.errors import InvalidConversation, InvalidMessage
from ctxflow.model._changes import check_hideable, check_overlay, check_truncations, mark_summaries
from ctxflow.model._lazy import IndexFacts, OverlayPlaceholder, Placeholder, Source, page_in
from ctxflow.model._log import MessageLog, Unbuilt, char_estimate, check_counts
from ctxflow.model._messages import Message, Role
from ctxflow.model._pairs import PairIndex, ToolPair
from ctxflow.model._undo import Undo
from ctxflow.model._validity import API, ValidityReport, check
from ctxflow.model._view import SUMMARY_OF, View, is_summary

__all__ = ["JOURNAL_SIZE", "SUMMARY_OF", "Conversation", "ToolPair"]

#: The change journal forgets its older half once it holds more entries than this.
JOURNAL_SIZE = 1 << 16

#: Counts one message's tokens (a window's measure: text, tool blocks, overhead).
#: A measure may carry a stable ``key`` naming what it counts; stored counts are
#: reused only by a measure with the same key. Public as ``ctxflow.protocols.Measure``.
Measure = Callable[[Message], int]

_ID: Callable[[Any], str] = operator.attrgetter("id")
_ROLE: Callable[[Any], Role] = operator.attrgetter("role")


class _History(Sequence[Message]):
    """A read-only sequence over a conversation's log (see :attr:`Conversation.history`)."""

    __slots__ = ("_log",)

    def __init__(self, log: MessageLog) -> None:
        self._log = log

    def __len__(self) -> int:
        return len(self._log.messages)

    @overload
    def __getitem__(self, index: int) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Message, ...]: ...

    def __getitem__(self, index: int | slice) -> Message | tuple[Message, ...]:
        log = self._log
        if isinstance(index, slice):
            if log.unbuilt is None:
                return tuple(log.messages[index])
            return tuple(map(log.message, range(*index.indices(len(log.messages)))))
        return log.message(index)

    def __iter__(self) -> Iterator[Message]:
        return self._log.iterate()

    def iter_built(self, start: int = 0) -> Iterator[Message]:
        """The messages from ``start`` on, in order, passing over the hidden messages
        a lazy restore left unbuilt (see :meth:`Conversation.lazy`): for a reader
        that skips unread placeholders anyway, without building them."""
        return self._log.iterate_built(max(0, start))


class Conversation:
    """An append-only message log with cached counts, pair index and effective view."""

    def __init__(
        self,
        messages: Iterable[Message] = (),
        *,
        measure: Measure | None = None,
        counts: Sequence[int] | None = None,
    ):
        self._measure: Measure = measure or char_estimate
        self._log = MessageLog()
        self._pairs = PairIndex()
        self._view = View(self._log)
        self.version = 0
        self._journal: list[int] = []
        self._journal_base = 0
        self.extend(messages, counts=counts)

    @classmethod
    def lazy(
        cls,
        messages: Sequence[Message | None],
        *,
        facts: list[IndexFacts | None],
        keys: Sequence[str],
        tags: Mapping[str, tuple[str | None, str | None]],
        source: Source,
        counts: Sequence[int],
        measure: Measure | None = None,
        overlays: Mapping[str, Message | str] | None = None,
        overlay_counts: Mapping[str, int] | None = None,
    ) -> Conversation:
        """A conversation whose hidden messages are built only when read (a lazy restore).

        ``messages`` is the log in order, None at each hidden message left in
        a store: ``facts`` gives its index facts and ``keys`` its body key at
        the same position, ``tags`` its compression tags by id (it must have
        some). The first read of such a position builds its
        :class:`~ctxflow.model.Placeholder`, which reads the body from
        ``source`` when a body field is asked for; until then it costs no
        object. ``counts`` are every message's token counts, taken with
        ``measure``. The log is checked as :meth:`extend` checks it (the same
        errors); the pair index, the view's flags and the positions are built
        from the facts, at C speed where they can be. ``facts`` is kept, not
        copied: a placeholder built takes its facts' place in it too (it holds
        them), so a caller indexing by it keeps one object per hidden message.

        ``overlays`` are laid as :meth:`set_overlays` lays them (``overlay_counts``
        as its ``counts``), by message id: an overlay, or the body key in
        ``source`` of one laid over a message left unbuilt, which stays unbuilt
        too until read (then an :class:`~ctxflow.model.OverlayPlaceholder`: an
        overlay over a hidden message is never shown, so its body stays in the
        store; one without a count in ``overlay_counts`` is read here to be
        measured).
        """
        held = list(messages)
        check_counts(counts, len(held))
        if len(facts) != len(held) or len(keys) != len(held):
            raise InvalidMessage(
                f"'facts' and 'keys' must give one entry per message ({len(held)}; got "
                f"{len(facts)} and {len(keys)})",
                rule="unbuilt",
            )
        conversation = cls(measure=measure)
        empty = list(map(operator.is_, held, itertools.repeat(None)))
        cold = list(itertools.compress(range(len(held)), empty))
        cold_facts = list(map(facts.__getitem__, cold))
        if any(map(operator.is_, cold_facts, itertools.repeat(None))) or not all(
            map(tags.__contains__, map(_ID, cold_facts))
        ):
            first = next(
                at for at, f in zip(cold, cold_facts, strict=True) if f is None or f.id not in tags
            )
            raise InvalidMessage(
                f"message {first}: a message left unbuilt must have its index facts and "
                "be hidden (tagged)",
                rule="unbuilt",
                index=first,
            )
        built = list(itertools.compress(held, map(operator.not_, empty)))
        takes = (iter(built), iter(cold_facts))
        entries: list[Message | IndexFacts] = list(
            map(next, map(takes.__getitem__, empty))  # type: ignore[arg-type]
        )
        ids = list(map(_ID, entries))
        if (
            len(set(ids)) != len(ids)
            or not all(map(isinstance, built, itertools.repeat(Message)))
            or Role.SYSTEM in map(_ROLE, itertools.islice(entries, 1, None))
        ):
            # Refused: build every placeholder (the caller's facts untouched) and let
            # extend name the first fault.
            log = MessageLog()
            log.messages = held  # type: ignore[assignment]
            log.unbuilt = Unbuilt(list(facts), keys, tags, source, len(cold))
            conversation.extend(log.built(), counts=counts)
            raise AssertionError("unreachable: extend refuses what the checks refused")
        tools = conversation._pairs.admit(entries, 0)
        log = conversation._log
        log.restored(held, ids, list(counts), Unbuilt(facts, keys, tags, source, len(cold)))
        conversation._pairs.add(tools)
        if overlays:
            conversation._lay_restored(overlays, overlay_counts or {}, source)
        conversation._view.restored(empty, log.unbuilt)
        conversation._changed(range(len(held)))
        return conversation

    def _lay_restored(
        self, overlays: Mapping[str, Message | str], counts: Mapping[str, int], source: Source
    ) -> None:
        """Lay a lazy restore's overlays (see :meth:`lazy`) before its view is flagged."""
        log = self._log
        kept = {i: o for i, o in overlays.items() if isinstance(o, Message)}
        stored = {i: o for i, o in overlays.items() if not isinstance(o, Message)}
        for message_id, key in stored.items():
            if type(key) is not str:
                raise InvalidMessage(
                    f"the overlay of {message_id!r} must be a Message or a body key "
                    f"(got {type(key).__name__})",
                    rule="not_a_message",
                    message_id=message_id,
                )
            at = log.position.get(message_id)
            if at is None or log.is_built(at):
                raise InvalidMessage(
                    f"an overlay left in the store must lie over an unbuilt message "
                    f"(got {message_id!r})",
                    rule="unbuilt_overlay",
                    message_id=message_id,
                )
        for message_id, replacement in kept.items():
            check_overlay(log, message_id, replacement)
        view = self._view
        # Each in the order given (the overlays' order is the checkpoint's): the ones
        # left in the store stand unbuilt until read.
        view.lay_unbuilt({i: kept.get(i) for i in overlays}, stored, source)
        measure = self._measure
        view.overlay_tokens.update(
            (i, counts[i] if counts.get(i) is not None else measure(view.overlay_of(i)))  # type: ignore[arg-type]
            for i in overlays
        )

    # -- reading -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._log.messages)

    def __iter__(self) -> Iterator[Message]:
        return self._log.iterate()

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._log.position

    def __repr__(self) -> str:
        return (
            f"<Conversation messages={len(self)} effective={len(self.effective())} "
            f"tokens={self.total_tokens} effective_tokens={self.effective_tokens}>"
        )

    @property
    def messages(self) -> Sequence[Message]:
        """Every message ever appended, in order, tags included (read-only view)."""
        return tuple(self._log.built())

    @property
    def history(self) -> Sequence[Message]:
        """Every message ever appended, as a read-only sequence over the log (no copy).

        It follows the conversation: later appends show in it. Prefer it to
        :attr:`messages` where a reader indexes or slices a long log. Its
        ``iter_built(start)`` passes over the hidden messages a lazy restore
        left unbuilt instead of building them.
        """
        return _History(self._log)

    @property
    def effective_count(self) -> int:
        """How many messages the effective view holds."""
        return len(self._view.current())

    @property
    def total_tokens(self) -> int:
        """Tokens of every original message in the log."""
        return self._log.total

    @property
    def effective_tokens(self) -> int:
        """Tokens of the effective view (hidden messages excluded, overlays counted)."""
        return self._view.total

    @property
    def epoch(self) -> int:
        """Moves on every change other than an append (tags, overlays, summaries)."""
        return self._view.epoch

    def is_built(self, index: int) -> bool:
        """False while the message at ``index`` is a hidden message of a lazy restore
        (:meth:`lazy`) no reader has asked for yet: reading it builds its placeholder."""
        return self._log.is_built(index)

    def log_as_built(self) -> list[Message | None]:
        """The log as a new list, None at each position :meth:`is_built` is False
        for (nothing is built): for a reader that follows the log without reading it."""
        return list(self._log.messages)

    def at(self, index: int) -> Message:
        """The message at ``index`` of the log, as appended (tags current)."""
        return self._log.message(index)

    def since(self, index: int) -> tuple[Message, ...]:
        """The messages of the log from ``index`` on (what was appended since it held
        ``index`` messages), without copying the rest."""
        log = self._log
        if log.unbuilt is None:
            return tuple(log.messages[index:])
        return tuple(log.iterate(index))

    @property
    def change_mark(self) -> int:
        """A mark of the change journal now, for :meth:`changes_since`."""
        return self._journal_base + len(self._journal)

    def changes_since(self, mark: int) -> list[int] | None:
        """The log positions whose tags or overlays changed since ``mark`` (in order,
        maybe repeated, maybe changed back since), or None when the journal no
        longer reaches back to ``mark``."""
        start = mark - self._journal_base
        if start < 0 or mark > self.change_mark:
            return None
        return self._journal[start:]

    def original(self, message_id: str) -> Message:
        """The message as appended (tags current), even when hidden or overlaid."""
        return self._log.original(message_id)

    def get(self, message_id: str) -> Message:
        """The message as the effective view shows it (its overlay if it has one)."""
        message = self._log.original(message_id)
        overlay = self._view.overlay_of(message_id)
        return message if overlay is None else overlay

    def index_of(self, message_id: str) -> int:
        """The position of a message in the log."""
        return self._log.at(message_id)

    def tokens(self, message_id: str) -> int:
        """The cached token count of a message as the effective view shows it."""
        at = self._log.at(message_id)
        overlaid = self._view.overlay_tokens.get(message_id)
        return self._log.counts[at] if overlaid is None else overlaid

    def original_tokens(self, message_id: str) -> int:
        """The cached token count of the original message."""
        return self._log.counts[self._log.at(message_id)]

    def pair(self, tool_use_id: str) -> ToolPair:
        """Where a tool call was made and answered."""
        return self._pairs.pair(tool_use_id)

    def pairs(self) -> Iterator[ToolPair]:
        """Every tool pair in call order."""
        return iter(self._pairs)

    def tool_name(self, tool_use_id: str) -> str:
        """The name of the tool a tool_use id called."""
        return self._pairs.pair(tool_use_id).name

    def overlay(self, message_id: str) -> Message | None:
        """The overlay laid over a message, if any."""
        return self._view.overlay_of(message_id)

    def overlays_as_built(self) -> dict[str, Message | None]:
        """Every overlay by message id (a copy), None for each a lazy restore left in
        the store that no reader has asked for (nothing is built)."""
        return dict(self._view.overlays)

    @property
    def overlays(self) -> dict[str, Message]:
        """A copy of every overlay, by message id."""
        return dict(self._view.built_overlays())

    def summaries(self) -> list[Message]:
        """Every summary message in the log, oldest first."""
        log = self._log
        if log.unbuilt is None:
            return [m for m in log.messages if is_summary(m)]
        known = map(log.known, range(len(log.messages)))
        return [log.message(at) for at, m in enumerate(known) if is_summary(m)]

    def covered_by(self, summary_id: str) -> list[Message]:
        """The originals a summary covers (expanding a condensed span)."""
        summary = self.original(summary_id)
        ids = summary.metadata.get(SUMMARY_OF)
        if not ids:
            raise InvalidMessage(f"message {summary_id!r} is not a summary", rule="not_a_summary")
        covered = [self.original(i) for i in ids]
        page_in(covered)
        return covered

    def effective(self) -> list[Message]:
        """The messages a model would be shown, in order.

        Hidden messages are skipped, overlays replace their originals, and a
        visible summary stands where the first message it covers stood.
        """
        return list(self._view.current())

    def effective_counts(self) -> list[int]:
        """The cached token counts of the effective view, in the order of :meth:`effective`."""
        self._view.current()
        return list(self._view.tokens)

    def log_counts(self) -> list[int]:
        """The cached token counts of every original message, in log order."""
        return list(self._log.counts)

    @property
    def measure_key(self) -> str | None:
        """The stable name of this conversation's measure (its ``key``), None if it has none."""
        key = getattr(self._measure, "key", None)
        return key if isinstance(key, str) and key else None

    def measure(self, message: Message) -> int:
        """Count ``message`` with this conversation's measure (nothing is cached)."""
        return self._measure(message)

    # -- validity --------------------------------------------------------------

    def check(self, *, api: API = "anthropic", effective: bool = True) -> ValidityReport:
        """Check the effective view (or the whole log) against ``api``'s rules.

        A view known valid is not walked again: only what was appended or
        changed since it was last checked.
        """
        if not effective:
            return check(self._log.built(), api=api)
        if api == "anthropic" and self.valid_for("anthropic"):
            return ValidityReport(api=api, violations=(), pending=self._view.pending())
        if api == "openai" and self.valid_for("openai"):
            return ValidityReport(api=api, violations=(), pending=self._view.pending())
        return check(self._view.current(), api=api)

    def valid_for(self, api: API = "anthropic") -> bool:
        """True when the effective view passes ``api``'s rules (known incrementally)."""
        anthropic, openai = self._view.validity()
        return openai if api == "openai" else anthropic

    # -- appending -----------------------------------------------------------

    def append(self, message: Message) -> Message:
        """Append one message; raise before any change if it breaks the log's rules."""
        self.extend((message,))
        return message

    def extend(self, messages: Iterable[Message], *, counts: Sequence[int] | None = None) -> None:
        """Append messages atomically: all are checked before any is added.

        ``counts`` may give the messages' token counts, already taken with this
        conversation's measure (a checkpoint stores them): they are then not
        measured again.
        """
        batch = list(messages)
        if counts is not None:
            check_counts(counts, len(batch))
        if not batch:
            return
        base = len(self._log.messages)
        try:
            self._log.admit(batch)
        except InvalidMessage as refused:
            # A broken pair in an earlier message is the batch's first error.
            self._pairs.admit(batch[: refused.details["index"] - base], base)
            raise
        tools = self._pairs.admit(batch, base)
        taken = list(counts) if counts is not None else [self._measure(m) for m in batch]
        self._log.add(batch, taken)
        self._pairs.add(tools)
        if self._view.append(batch, taken):
            self.version += 1
        else:
            self._changed(range(base, base + len(batch)))

    def page_out(self, placeholders: Iterable[Placeholder]) -> int:
        """Let hidden messages' bodies leave memory: each placeholder takes the place
        of the hidden message it stands for (an :class:`OverlayPlaceholder`, of the
        overlay laid over one), which is read again from the placeholder's source
        when something asks for its body.

        A placeholder replaces a message of the same id, role and compression
        tags that is hidden and still whole; an overlay placeholder replaces a
        hidden message's overlay that is still whole. One whose message is
        shown, is a placeholder already or carries other tags is passed over.
        Nothing a reader can see changes (a placeholder compares equal to its
        message): no version, epoch or change-journal entry. Every placeholder
        is checked before any takes its place. Returns how many did.
        """
        log, laid = self._log, self._view.overlays
        swaps: list[tuple[int, Placeholder]] = []
        overlays: list[Placeholder] = []
        for placeholder in placeholders:
            kind = type(placeholder)
            if kind not in (Placeholder, OverlayPlaceholder) or placeholder.loaded:
                raise InvalidMessage(
                    "only an unread Placeholder can take a hidden message's place "
                    f"(got {kind.__name__})",
                    rule="not_a_placeholder",
                )
            at = log.at(placeholder.id)
            if not log.is_built(at):
                continue  # unbuilt: its placeholder is built when read
            current = log.messages[at]
            if not current.hidden or current.role is not placeholder.role:
                continue
            if kind is OverlayPlaceholder:
                overlay = laid.get(placeholder.id)
                if overlay is not None and not isinstance(overlay, Placeholder):
                    overlays.append(placeholder)
                continue
            if (
                isinstance(current, Placeholder)
                or current.condense_parent != placeholder.condense_parent
                or current.truncation_parent != placeholder.truncation_parent
            ):
                continue
            swaps.append((at, placeholder))
        for at, placeholder in swaps:
            log.messages[at] = placeholder
        for placeholder in overlays:
            laid[placeholder.id] = placeholder
        return len(swaps) + len(overlays)

    # -- changing (used by compression) ---------------------------------------

    def hide(
        self,
        message_ids: Iterable[str],
        *,
        condense_parent: str | None = None,
        truncation_parent: str | None = None,
    ) -> None:
        """Tag messages as hidden; pinned (important) messages refuse to be hidden.

        ``condense_parent`` must name a summary already in the conversation;
        anything else is refused before a message is tagged.
        """
        if (condense_parent is None) == (truncation_parent is None):
            raise InvalidMessage(
                "hide takes exactly one of 'condense_parent' or 'truncation_parent' "
                f"(got {condense_parent!r} and {truncation_parent!r})",
                rule="hide_tags",
            )
        if condense_parent is not None:
            at = self._log.position.get(condense_parent)
            if at is None or not is_summary(self._log.known(at)):
                raise InvalidMessage(
                    f"'condense_parent' must name a summary in the conversation "
                    f"(got {condense_parent!r})",
                    rule="condense_parent",
                    message_id=condense_parent,
                )
        ids = list(message_ids)
        for message_id in ids:
            check_hideable(self._log, message_id, "hidden")
        self._changed([self._view.tag(i, condense_parent, truncation_parent) for i in ids])

    def unhide(self, message_ids: Iterable[str]) -> None:
        """Clear the compression tags of messages (undo a compression)."""
        positions = self._log.positions(message_ids)
        shown = [self._log.message(at) for at in positions]
        laid = map(self._view.overlay_of, [m.id for m in shown])
        page_in([*shown, *(o for o in laid if o is not None)])
        self._changed([at for at in positions if self._view.untag(at)])

    def add_summary(self, summary: Message, covers: Sequence[str]) -> Message:
        """Append ``summary`` and hide the messages it ``covers`` behind it."""
        return self.apply(summaries=((summary, covers),))[0]

    def set_overlay(self, message_id: str, replacement: Message) -> None:
        """Show ``replacement`` instead of a message; its role and tool ids must match."""
        self.apply(overlays={message_id: replacement})

    def set_overlays(
        self, replacements: Mapping[str, Message], *, counts: Mapping[str, int] | None = None
    ) -> None:
        """Lay many overlays at once (one view rebuild); all are checked before any is set.

        ``counts`` may give overlays' token counts already taken with :meth:`measure`
        (so a planner that measured them does not pay twice); others are measured here.
        """
        self.apply(overlays=replacements, overlay_counts=counts)

    def remove_overlay(self, message_id: str) -> None:
        """Show the original again."""
        self.remove_overlays((message_id,))

    def remove_overlays(self, message_ids: Iterable[str]) -> None:
        """Show many originals again (one view rebuild)."""
        positions = self._log.positions(message_ids)
        self._changed((), restyled=[at for at in positions if self._view.lift(at)])

    def apply(
        self,
        *,
        overlays: Mapping[str, Message] | None = None,
        overlay_counts: Mapping[str, int] | None = None,
        summaries: Sequence[tuple[Message, Sequence[str]]] = (),
        hidden: Mapping[str, str] | None = None,
        keep_valid: bool = False,
    ) -> list[Message]:
        """Apply one compression at once: overlays, then summaries, then truncation tags.

        ``hidden`` maps message ids to their truncation event; a summary hides
        what it covers (an earlier summary of the same call may be among them).
        Everything is checked before anything changes, and the view is rebuilt
        once. ``overlay_counts`` may give overlays' counts already taken with
        :meth:`measure`. With ``keep_valid``, a view valid before must stay valid
        for every API it passed: otherwise :class:`InvalidConversation` is
        raised and nothing changes. Returns the summaries as stored (marked
        with what they cover).
        """
        overlays = overlays or {}
        hidden = hidden or {}
        if not (overlays or summaries or hidden):
            return []
        log, view = self._log, self._view
        for message_id, replacement in overlays.items():
            check_overlay(log, message_id, replacement)
        marked = mark_summaries(log, summaries)
        check_truncations(log, hidden)
        known = overlay_counts or {}
        overlay_counts = {
            i: known[i] if known.get(i) is not None else self._measure(m)
            for i, m in overlays.items()
        }
        summary_counts = [self._measure(m) for m in marked]
        was = view.known()
        if keep_valid and was is None:
            view.validity()
            was = view.known()
        # What it changes is recorded only where it may have to be taken back.
        undo, version = Undo(view) if keep_valid else None, self.version
        touched: list[int] = []
        restyled = [log.position[message_id] for message_id in overlays]
        if undo is not None:
            for message_id in overlays:
                undo.overlay(message_id)
        view.lay_many(restyled, overlays, overlay_counts)
        for summary, covers, count in zip(
            marked, (c for _, c in summaries), summary_counts, strict=True
        ):
            touched.append(view.add_summary(summary, count))
            if undo is not None:
                undo.appended += 1
            for message_id in covers:
                if undo is not None:
                    undo.message(log.position[message_id])
                touched.append(view.tag(message_id, summary.id, None))
        for message_id, tag in hidden.items():
            if undo is not None:
                undo.message(log.position[message_id])
            touched.append(view.tag(message_id, None, tag))
        self._changed(touched, restyled=restyled)
        if undo is not None and was is not None:
            now = view.known()
            if now is None or (was[1] and not now[1]):
                undo.restore()
                self.version = version
                api = "anthropic" if now is None else "openai"
                raise InvalidConversation(
                    "a compression must keep the view valid for every API it passed "
                    f"(it would not be valid for {api})",
                    rule="invalid_result",
                    violations=(),
                    api=api,
                )
        return marked

    def _changed(self, moved: Iterable[int], *, restyled: Iterable[int] = ()) -> None:
        """Rebuild the view after a change (see :meth:`View.changed`); a new version;
        the positions written to the change journal."""
        moved, restyled = list(moved), list(restyled)
        self.version += 1
        self._view.changed(moved, restyled)
        journal = self._journal
        journal += moved
        journal += restyled
        if len(journal) > JOURNAL_SIZE:
            dropped = len(journal) // 2
            del journal[:dropped]
            self._journal_base += dropped
