"""The Conversation: an append-only log with a tool-pair index and an effective view.

A message enters once, is measured once (its token count is cached), and is
indexed once. Compression never deletes: it *tags* messages
(``condense_parent`` / ``truncation_parent``) or lays an *overlay* over one
(a cleared or trimmed tool result), and the effective view — what a model
would be shown — is derived from the log, the tags and the overlays. Every
original stays fetchable by id.

A summary message added by :meth:`Conversation.add_summary` is stored at the
end of the log (the log only grows) but appears in the effective view where
the first message it covers stood, so the chronology reads naturally.

The view is rebuilt from slices of the log between the few *special*
positions (tagged, summary or overlaid messages), so a rebuild costs Python
work per special message, not per message. Validity is known incrementally:
once the view has been checked, an append checks only the new messages and a
compression only the messages it changed and their new neighbours (every API
rule is local), so the ladder's check of a 10,000-message view is not a
10,000-message pass each time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import attrs

from ctxflow.errors import InvalidConversation, InvalidMessage
from ctxflow.model.messages import (
    Message,
    RedactedThinkingBlock,
    Role,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from ctxflow.model.validity import API, ValidityReport, check, local_ok

__all__ = ["SUMMARY_OF", "Conversation", "ToolPair"]

#: Metadata key on a summary message: the ids of the messages it covers.
SUMMARY_OF = "ctxflow.summary_of"

Measure = Callable[[Message], int]

# A log position's part in the view (see Conversation._rebuild).
_PLAIN, _SKIP, _SPECIAL = 0, 1, 2


def _char_estimate(message: Message) -> int:
    """Chars/4 over the blocks' string fields; the fallback when no counter is given.

    Reads the fields directly (this runs for every message of a restored
    checkpoint): the text, ids, names, signatures and the block type. It has
    no ``key``: counting again is as cheap as storing its counts.
    """
    total = 0
    for block in message.content:
        total += len(block.type)
        if isinstance(block, TextBlock):
            total += len(block.text)
        elif isinstance(block, ToolUseBlock):
            total += len(block.id) + len(block.name)
        elif isinstance(block, ToolResultBlock):
            total += len(block.tool_use_id)
            if isinstance(block.content, str):
                total += len(block.content)
        elif isinstance(block, ThinkingBlock):
            total += len(block.thinking) + len(block.signature)
        elif isinstance(block, RedactedThinkingBlock):
            total += len(block.data)
    return total // 4 + 4


@attrs.frozen(kw_only=True)
class ToolPair:
    """A tool_use and where it was answered (``result_message`` is None while pending)."""

    tool_use_id: str
    name: str
    use_message: str
    result_message: str | None


class Conversation:
    """An append-only message log with cached counts, pair index and effective view."""

    def __init__(
        self,
        messages: Iterable[Message] = (),
        *,
        measure: Measure | None = None,
        counts: Sequence[int] | None = None,
    ):
        self._measure: Measure = measure or _char_estimate
        self._log: list[Message] = []
        self._counts: list[int] = []  # parallel to the log
        self._position: dict[str, int] = {}
        self._uses: dict[str, tuple[str, str]] = {}  # tool_use id -> (message id, tool name)
        self._results: dict[str, str] = {}  # tool_use id -> message id of the result
        self._overlays: dict[str, Message] = {}
        self._overlay_tokens: dict[str, int] = {}
        # per log position: _PLAIN (shown as is), _SKIP (not shown: truncated, or a
        # summary's own slot), _SPECIAL (a summary's span, or shown overlaid)
        self._flags = bytearray()
        self._total = 0
        self._effective_total = 0
        self._view: list[Message] | None = None
        self._view_tokens: list[int] = []
        self._view_positions: list[int] = []  # log position of each view entry
        self._anchors: dict[str, int] = {}  # summary id -> log position it is shown at
        self._epoch = 0  # moves on every change other than an append
        # (epoch, view length checked, valid for OpenAI too); only valid views are kept
        self._valid: tuple[int, int, bool] | None = None
        self.version = 0
        self.extend(messages, counts=counts)

    # -- reading -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._log)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._log)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._position

    def __repr__(self) -> str:
        return (
            f"<Conversation messages={len(self._log)} effective={len(self.effective())} "
            f"tokens={self._total} effective_tokens={self._effective_total}>"
        )

    @property
    def messages(self) -> Sequence[Message]:
        """Every message ever appended, in order, tags included (read-only view)."""
        return tuple(self._log)

    @property
    def effective_count(self) -> int:
        """How many messages the effective view holds."""
        return len(self._current_view())

    @property
    def total_tokens(self) -> int:
        """Tokens of every original message in the log."""
        return self._total

    @property
    def effective_tokens(self) -> int:
        """Tokens of the effective view (hidden messages excluded, overlays counted)."""
        return self._effective_total

    def original(self, message_id: str) -> Message:
        """The message as appended (tags current), even when hidden or overlaid."""
        try:
            return self._log[self._position[message_id]]
        except KeyError:
            raise InvalidMessage(
                f"no message with id {message_id!r} in this conversation",
                rule="unknown_message",
                message_id=message_id,
            ) from None

    def get(self, message_id: str) -> Message:
        """The message as the effective view shows it (its overlay if it has one)."""
        message = self.original(message_id)
        return self._overlays.get(message_id, message)

    def index_of(self, message_id: str) -> int:
        """The position of a message in the log."""
        self.original(message_id)
        return self._position[message_id]

    def tokens(self, message_id: str) -> int:
        """The cached token count of a message as the effective view shows it."""
        self.original(message_id)
        if message_id in self._overlay_tokens:
            return self._overlay_tokens[message_id]
        return self._counts[self._position[message_id]]

    def original_tokens(self, message_id: str) -> int:
        """The cached token count of the original message."""
        self.original(message_id)
        return self._counts[self._position[message_id]]

    def pair(self, tool_use_id: str) -> ToolPair:
        """Where a tool call was made and answered."""
        try:
            message_id, name = self._uses[tool_use_id]
        except KeyError:
            raise InvalidMessage(
                f"no tool_use with id {tool_use_id!r}",
                rule="unknown_tool_use",
                tool_use_id=tool_use_id,
            ) from None
        return ToolPair(
            tool_use_id=tool_use_id,
            name=name,
            use_message=message_id,
            result_message=self._results.get(tool_use_id),
        )

    def pairs(self) -> Iterator[ToolPair]:
        """Every tool pair in call order."""
        for tool_use_id in self._uses:
            yield self.pair(tool_use_id)

    def tool_name(self, tool_use_id: str) -> str:
        """The name of the tool a tool_use id called."""
        return self.pair(tool_use_id).name

    def overlay(self, message_id: str) -> Message | None:
        """The overlay laid over a message, if any."""
        return self._overlays.get(message_id)

    @property
    def overlays(self) -> dict[str, Message]:
        """A copy of every overlay, by message id."""
        return dict(self._overlays)

    def summaries(self) -> list[Message]:
        """Every summary message in the log, oldest first."""
        return [m for m in self._log if SUMMARY_OF in m.metadata]

    def covered_by(self, summary_id: str) -> list[Message]:
        """The originals a summary covers (expanding a condensed span)."""
        summary = self.original(summary_id)
        ids = summary.metadata.get(SUMMARY_OF)
        if not ids:
            raise InvalidMessage(f"message {summary_id!r} is not a summary", rule="not_a_summary")
        return [self.original(i) for i in ids]

    def effective(self) -> list[Message]:
        """The messages a model would be shown, in order.

        Hidden messages are skipped, overlays replace their originals, and a
        visible summary stands where the first message it covers stood.
        """
        return list(self._current_view())

    def effective_counts(self) -> list[int]:
        """The cached token counts of the effective view, in the order of :meth:`effective`."""
        self._current_view()
        return list(self._view_tokens)

    def log_counts(self) -> list[int]:
        """The cached token counts of every original message, in log order."""
        return list(self._counts)

    def _current_view(self) -> list[Message]:
        if self._view is None:
            self._rebuild()
        assert self._view is not None
        return self._view

    def _flag(self, at: int) -> int:
        message = self._log[at]
        if SUMMARY_OF in message.metadata:
            return _SKIP  # shown where the first message it covers stood
        if message.condense_parent is not None:
            return _SPECIAL
        if message.truncation_parent is not None:
            return _SKIP
        return _SPECIAL if message.id in self._overlays else _PLAIN

    def _rebuild(self) -> None:
        """Derive the view, its counts and log positions from the log's flags.

        Runs of plain messages are copied as slices and runs of skipped ones
        found with ``bytearray.find``, so the Python work is per run and per
        special message, however long the log.
        """
        log, counts, flags = self._log, self._counts, self._flags
        overlays, overlay_tokens = self._overlays, self._overlay_tokens
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
            message = log[stop]
            parent = message.condense_parent
            if parent is None:
                view.append(overlays[message.id])
                tokens.append(overlay_tokens[message.id])
                positions.append(stop)
            elif parent not in anchors:
                anchors[parent] = stop
                where = self._position[parent]
                summary = log[where]
                if not summary.hidden:
                    view.append(overlays.get(parent, summary))
                    tokens.append(overlay_tokens.get(parent, counts[where]))
                    positions.append(stop)
        self._view, self._view_tokens, self._view_positions = view, tokens, positions
        self._anchors = anchors
        self._effective_total = sum(tokens)

    # -- validity --------------------------------------------------------------

    def check(self, *, api: API = "anthropic", effective: bool = True) -> ValidityReport:
        """Check the effective view (or the whole log) against ``api``'s rules.

        A view known valid is not walked again: only what was appended or
        changed since it was last checked.
        """
        if not effective:
            return check(self._log, api=api)
        if api == "anthropic" and self.valid_for("anthropic"):
            return ValidityReport(api=api, violations=(), pending=self._pending())
        if api == "openai" and self.valid_for("openai"):
            return ValidityReport(api=api, violations=(), pending=self._pending())
        return check(self._current_view(), api=api)

    def valid_for(self, api: API = "anthropic") -> bool:
        """True when the effective view passes ``api``'s rules (known incrementally)."""
        known = self._validity()
        if known is None:
            view = self._current_view()
            report = check(view, api="openai")
            # The OpenAI rules are the Anthropic ones plus text-only tool results.
            anthropic = all(v.rule == "tool_result_non_text" for v in report.violations)
            self._valid = (self._epoch, len(view), report.ok) if anthropic else None
            known = (anthropic, report.ok)
        return known[1] if api == "openai" else known[0]

    def _validity(self) -> tuple[bool, bool] | None:
        """(Anthropic, OpenAI) validity of the view from what is known, or None if unknown."""
        memo = self._valid
        if memo is None or memo[0] != self._epoch:
            return None
        _, checked, openai = memo
        view = self._current_view()
        if checked < len(view):
            anthropic, openai_new = local_ok(view, range(checked, len(view)))
            if not anthropic:
                self._valid = None
                return None  # let a full check report exactly what is wrong
            openai = openai and openai_new
            self._valid = (self._epoch, len(view), openai)
        return True, openai

    def _pending(self) -> tuple[str, ...]:
        view = self._current_view()
        last = view[-1] if view else None
        if last is not None and last.role is Role.ASSISTANT:
            return tuple(u.id for u in last.tool_uses)
        return ()

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
        if counts is not None and (
            len(counts) != len(batch) or not all(type(c) is int and c >= 0 for c in counts)
        ):
            raise InvalidMessage(
                f"'counts' must be {len(batch)} non-negative integers, one per message "
                f"(got {len(counts)} values)",
                rule="counts",
            )
        if not batch:
            return
        new_ids: set[str] = set()
        new_uses: dict[str, tuple[str, str]] = {}
        new_results: dict[str, str] = {}
        known, used, answered = self._position, self._uses, self._results
        base = len(self._log)
        special = False
        for index, message in enumerate(batch, base):
            if not isinstance(message, Message):
                raise InvalidMessage(
                    f"message {index} must be a Message (got {type(message).__name__})",
                    rule="not_a_message",
                    index=index,
                )
            ident = message.id
            if ident in known or ident in new_ids:
                raise InvalidMessage(
                    f"message {index}: id {ident!r} is already in the conversation",
                    rule="duplicate_message_id",
                    index=index,
                    message_id=ident,
                )
            if message.role is Role.SYSTEM and index != 0:
                raise InvalidMessage(
                    f"message {index}: a system message may only come first",
                    rule="system_position",
                    index=index,
                    message_id=ident,
                )
            new_ids.add(ident)
            if message.hidden or (message.metadata and SUMMARY_OF in message.metadata):
                special = True
            for use in message.tool_uses:
                if use.id in used or use.id in new_uses:
                    raise InvalidMessage(
                        f"message {index}: tool_use id {use.id!r} is already used",
                        rule="duplicate_tool_use_id",
                        index=index,
                        tool_use_id=use.id,
                    )
                new_uses[use.id] = (ident, use.name)
            for result in message.tool_results:
                answers = result.tool_use_id
                if answers not in used and answers not in new_uses:
                    raise InvalidMessage(
                        f"message {index}: tool_result {answers!r} answers no tool_use",
                        rule="orphan_tool_result",
                        index=index,
                        tool_use_id=answers,
                    )
                if answers in answered or answers in new_results:
                    raise InvalidMessage(
                        f"message {index}: tool_use {answers!r} is already answered",
                        rule="duplicate_tool_result",
                        index=index,
                        tool_use_id=answers,
                    )
                new_results[answers] = ident
        taken = list(counts) if counts is not None else [self._measure(m) for m in batch]
        end = base + len(batch)
        known.update(zip([m.id for m in batch], range(base, end), strict=True))
        self._log += batch
        self._counts += taken
        self._total += sum(taken)
        used.update(new_uses)
        answered.update(new_results)
        self._flags += bytes(len(batch))  # _PLAIN
        if special:
            for at in range(base, end):
                self._flags[at] = self._flag(at)
            self._changed(range(base, end))
            return
        # The common case stays O(new messages): extend the cached view in place.
        self.version += 1
        if self._view is not None:
            self._view += batch
            self._view_tokens += taken
            self._view_positions += range(base, end)
        self._effective_total += sum(taken)

    # -- changing (used by compression) ---------------------------------------

    def hide(
        self,
        message_ids: Iterable[str],
        *,
        condense_parent: str | None = None,
        truncation_parent: str | None = None,
    ) -> None:
        """Tag messages as hidden; pinned (important) messages refuse to be hidden."""
        if (condense_parent is None) == (truncation_parent is None):
            raise ValueError("give exactly one of condense_parent or truncation_parent")
        ids = list(message_ids)
        for message_id in ids:
            self._check_hideable(message_id, "hidden")
        touched = [self._tag(i, condense_parent, truncation_parent) for i in ids]
        self._changed(touched)

    def unhide(self, message_ids: Iterable[str]) -> None:
        """Clear the compression tags of messages (undo a compression)."""
        ids = list(message_ids)
        for message_id in ids:
            self.original(message_id)
        touched = []
        for message_id in ids:
            at = self._position[message_id]
            message = self._log[at]
            if message.hidden:
                self._log[at] = message.with_tags(condense_parent=None, truncation_parent=None)
                self._flags[at] = self._flag(at)
                touched.append(at)
        self._changed(touched)

    def add_summary(self, summary: Message, covers: Sequence[str]) -> Message:
        """Append ``summary`` and hide the messages it ``covers`` behind it."""
        return self.apply(summaries=((summary, covers),))[0]

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
        for message_id, replacement in overlays.items():
            self._check_overlay(message_id, replacement)
        marked = self._check_summaries(summaries)
        for message_id, tag in hidden.items():
            if not isinstance(tag, str) or not tag:
                raise InvalidMessage(
                    f"the truncation tag of {message_id!r} must be a non-empty string "
                    f"(got {tag!r})",
                    rule="tag",
                    message_id=message_id,
                )
            self._check_hideable(message_id, "hidden")
        known = overlay_counts or {}
        overlay_counts = {
            i: known[i] if known.get(i) is not None else self._measure(m)
            for i, m in overlays.items()
        }
        summary_counts = [self._measure(m) for m in marked]
        was = self._validity()
        if keep_valid and was is None:
            self.valid_for("anthropic")
            was = self._validity()
        undo = _Undo(self)
        touched: list[int] = []
        restyled: list[int] = []
        for message_id, replacement in overlays.items():
            undo.overlay(message_id)
            self._overlays[message_id] = replacement
            self._overlay_tokens[message_id] = overlay_counts[message_id]
            at = self._position[message_id]
            self._flags[at] = self._flag(at)
            restyled.append(at)
        for summary, covers, count in zip(
            marked, (c for _, c in summaries), summary_counts, strict=True
        ):
            at = len(self._log)
            self._position[summary.id] = at
            self._log.append(summary)
            self._counts.append(count)
            self._total += count
            self._flags.append(_SKIP)
            undo.appended += 1
            for message_id in covers:
                undo.message(self._position[message_id])
                touched.append(self._tag(message_id, summary.id, None))
        for message_id, tag in hidden.items():
            undo.message(self._position[message_id])
            touched.append(self._tag(message_id, None, tag))
        self._changed(touched + [self._position[m.id] for m in marked], restyled=restyled)
        if keep_valid and was is not None:
            now = self._validity()
            if now is None or (was[1] and not now[1]):
                undo.restore()
                raise InvalidConversation(
                    "a compression must keep the view valid for every API it passed "
                    f"(it would not be valid for {'anthropic' if now is None else 'openai'})",
                    rule="invalid_result",
                    violations=(),
                    api="anthropic" if now is None else "openai",
                )
        return marked

    def _tag(self, message_id: str, condense: str | None, truncation: str | None) -> int:
        """Add the tags a message lacks (a tag it has already is kept); its log position."""
        at = self._position[message_id]
        message = self._log[at]
        condense = message.condense_parent or condense
        truncation = message.truncation_parent or truncation
        if condense != message.condense_parent or truncation != message.truncation_parent:
            self._log[at] = message.with_tags(
                condense_parent=condense, truncation_parent=truncation
            )
            self._flags[at] = self._flag(at)
        return at

    def _check_hideable(self, message_id: str, verb: str) -> None:
        if self.original(message_id).important:
            raise InvalidMessage(
                f"message {message_id!r} is pinned (important) and cannot be {verb}",
                rule="pinned",
                message_id=message_id,
            )

    def _check_summaries(self, summaries: Sequence[tuple[Message, Sequence[str]]]) -> list[Message]:
        marked: list[Message] = []
        fresh: set[str] = set()
        for summary, covers in summaries:
            if not isinstance(summary, Message):
                raise InvalidMessage(
                    f"a summary must be a Message (got {type(summary).__name__})",
                    rule="not_a_message",
                )
            if not covers:
                raise InvalidMessage("a summary must cover at least one message", rule="empty_span")
            if summary.tool_uses or summary.tool_results:
                raise InvalidMessage(
                    "a summary message may not carry tool blocks", rule="summary_tool_blocks"
                )
            if summary.role is Role.SYSTEM:
                raise InvalidMessage(
                    "a summary may not be a system message",
                    rule="system_position",
                    message_id=summary.id,
                )
            if summary.id in self._position or summary.id in fresh:
                raise InvalidMessage(
                    f"summary id {summary.id!r} is already in the conversation",
                    rule="duplicate_message_id",
                    message_id=summary.id,
                )
            for message_id in covers:
                if message_id not in fresh:
                    self._check_hideable(message_id, "condensed")
            fresh.add(summary.id)
            marked.append(
                attrs.evolve(summary, metadata={**summary.metadata, SUMMARY_OF: list(covers)})
            )
        return marked

    def set_overlay(self, message_id: str, replacement: Message) -> None:
        """Show ``replacement`` instead of a message; its role and tool ids must match."""
        self.apply(overlays={message_id: replacement})

    def _check_overlay(self, message_id: str, replacement: Message) -> None:
        original = self.original(message_id)
        if replacement.id != original.id or replacement.role is not original.role:
            raise InvalidMessage(
                f"overlay for {message_id!r} must keep its id and role",
                rule="overlay_identity",
                message_id=message_id,
            )
        if [u.id for u in replacement.tool_uses] != [u.id for u in original.tool_uses] or [
            r.tool_use_id for r in replacement.tool_results
        ] != [r.tool_use_id for r in original.tool_results]:
            raise InvalidMessage(
                f"overlay for {message_id!r} must keep its tool blocks' ids",
                rule="overlay_pairs",
                message_id=message_id,
            )

    def set_overlays(
        self, replacements: Mapping[str, Message], *, counts: Mapping[str, int] | None = None
    ) -> None:
        """Lay many overlays at once (one view rebuild); all are checked before any is set.

        ``counts`` may give overlays' token counts already taken with :meth:`measure`
        (so a planner that measured them does not pay twice); others are measured here.
        """
        self.apply(overlays=replacements, overlay_counts=counts)

    def remove_overlays(self, message_ids: Iterable[str]) -> None:
        """Show many originals again (one view rebuild)."""
        ids = list(message_ids)
        for message_id in ids:
            self.original(message_id)
        touched = []
        for message_id in ids:
            if self._overlays.pop(message_id, None) is not None:
                self._overlay_tokens.pop(message_id, None)
                at = self._position[message_id]
                self._flags[at] = self._flag(at)
                touched.append(at)
        self._changed((), restyled=touched)

    @property
    def epoch(self) -> int:
        """Moves on every change other than an append (tags, overlays, summaries)."""
        return self._epoch

    @property
    def measure_key(self) -> str | None:
        """The stable name of this conversation's measure (its ``key``), None if it has none."""
        key = getattr(self._measure, "key", None)
        return key if isinstance(key, str) and key else None

    def measure(self, message: Message) -> int:
        """Count ``message`` with this conversation's measure (nothing is cached)."""
        return self._measure(message)

    def remove_overlay(self, message_id: str) -> None:
        """Show the original again."""
        self.remove_overlays((message_id,))

    def _changed(self, moved: Iterable[int], *, restyled: Iterable[int] = ()) -> None:
        """Rebuild the view after a change: log positions whose visibility ``moved``
        (hidden, shown again, or newly appended) and positions whose shown
        content was ``restyled`` (an overlay laid or lifted: roles and tool ids kept).

        A view known valid before stays known valid when the restyled messages
        and the new neighbours around the moved ones pass the local rules;
        otherwise validity is unknown until the next check.
        """
        was = self._validity() if self._view is not None else None
        self.version += 1
        self._epoch += 1
        self._rebuild()
        self._valid = None
        if was is None or not was[0]:
            return
        assert self._view is not None
        view = self._view
        around: set[int] = set()
        for at in moved:
            index, shown = self._view_index(at)
            if index is not None:
                around.add(index)
                if shown:
                    around.add(index + 1)  # shown (again): the pair after it is new too
        anthropic, openai = local_ok(view, sorted(around))
        if not anthropic:
            return
        restyled_shown = []
        for at in restyled:
            index, shown = self._view_index(at)
            if index is not None and shown and index not in around:
                restyled_shown.append(index)
        anthropic, openai_restyled = local_ok(view, restyled_shown, pairs=False)
        if anthropic:
            self._valid = (self._epoch, len(view), was[1] and openai and openai_restyled)

    def _view_index(self, at: int) -> tuple[int | None, bool]:
        """Where log position ``at`` stands in the view, and whether it is shown there.

        A summary stands where its span began (None when it stands nowhere);
        a hidden message's index is that of the next message shown.
        """
        message = self._log[at]
        if SUMMARY_OF in message.metadata:
            anchor = self._anchors.get(message.id)
            if anchor is None:
                return None, False
            at = anchor
        positions = self._view_positions
        index = bisect_left(positions, at)
        return index, index < len(positions) and positions[index] == at


class _Undo:
    """What :meth:`Conversation.apply` changed, so a refused result can be taken back."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.messages: dict[int, Message] = {}
        self.overlays: dict[str, tuple[Message, int] | None] = {}
        self.appended = 0
        self.state = (
            conversation._valid,
            conversation._epoch,
            conversation.version,
            conversation._total,
        )

    def message(self, at: int) -> None:
        self.messages.setdefault(at, self.conversation._log[at])

    def overlay(self, message_id: str) -> None:
        c = self.conversation
        overlay = c._overlays.get(message_id)
        self.overlays.setdefault(
            message_id, None if overlay is None else (overlay, c._overlay_tokens[message_id])
        )

    def restore(self) -> None:
        c = self.conversation
        for _ in range(self.appended):
            message = c._log.pop()
            c._counts.pop()
            c._flags.pop()
            del c._position[message.id]
        size = len(c._log)
        for at, message in self.messages.items():
            if at < size:
                c._log[at] = message
        for message_id, previous in self.overlays.items():
            if previous is None:
                c._overlays.pop(message_id, None)
                c._overlay_tokens.pop(message_id, None)
            else:
                c._overlays[message_id], c._overlay_tokens[message_id] = previous
        for at in {c._position[i] for i in self.overlays} | set(self.messages):
            if at < size:
                c._flags[at] = c._flag(at)
        c._valid, c._epoch, c.version, c._total = self.state
        c._rebuild()
