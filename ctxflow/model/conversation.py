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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from ctxflow.errors import InvalidMessage
from ctxflow.model.messages import (
    Message,
    RedactedThinkingBlock,
    Role,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from ctxflow.model.validity import API, ValidityReport, check

__all__ = ["SUMMARY_OF", "Conversation", "ToolPair"]

#: Metadata key on a summary message: the ids of the messages it covers.
SUMMARY_OF = "ctxflow.summary_of"

Measure = Callable[[Message], int]


def _char_estimate(message: Message) -> int:
    """Chars/4 over the blocks' string fields; the fallback when no counter is given.

    Reads the fields directly (this runs for every message of a restored
    checkpoint): the text, ids, names, signatures and the block type.
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

    def __init__(self, messages: Iterable[Message] = (), *, measure: Measure | None = None):
        self._measure: Measure = measure or _char_estimate
        self._log: list[Message] = []
        self._position: dict[str, int] = {}
        self._tokens: dict[str, int] = {}
        self._uses: dict[str, tuple[str, str]] = {}  # tool_use id -> (message id, tool name)
        self._results: dict[str, str] = {}  # tool_use id -> message id of the result
        self._overlays: dict[str, Message] = {}
        self._overlay_tokens: dict[str, int] = {}
        self._total = 0
        self._effective_total = 0
        self._view: list[Message] | None = None
        self.version = 0
        self.extend(messages)

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
        if self._view is None:
            self._view = self._build_view()
        return len(self._view)

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
        return self._tokens[message_id]

    def original_tokens(self, message_id: str) -> int:
        """The cached token count of the original message."""
        self.original(message_id)
        return self._tokens[message_id]

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
        if self._view is None:
            self._view = self._build_view()
        return list(self._view)

    def _build_view(self) -> list[Message]:
        return self._scan()[0]

    def _scan(self) -> tuple[list[Message], int]:
        """The effective view and its token total, in one pass over the log."""
        view: list[Message] = []
        append = view.append
        total = 0
        placed: set[str] = set()
        overlays, overlay_tokens, tokens = self._overlays, self._overlay_tokens, self._tokens
        for message in self._log:
            if message.metadata and SUMMARY_OF in message.metadata:
                continue  # placed at the first message it covers
            if message.condense_parent is not None or message.truncation_parent is not None:
                parent = message.condense_parent
                if parent is not None and parent not in placed:
                    summary = self._log[self._position[parent]]
                    if not summary.hidden:
                        append(overlays.get(parent, summary))
                        total += overlay_tokens.get(parent, tokens[parent])
                    placed.add(parent)
                continue
            ident = message.id
            if ident in overlays:
                append(overlays[ident])
                total += overlay_tokens[ident]
            else:
                append(message)
                total += tokens[ident]
        return view, total

    def check(self, *, api: API = "anthropic", effective: bool = True) -> ValidityReport:
        """Check the effective view (or the whole log) against ``api``'s rules."""
        return check(self.effective() if effective else self._log, api=api)

    # -- appending -----------------------------------------------------------

    def append(self, message: Message) -> Message:
        """Append one message; raise before any change if it breaks the log's rules."""
        self.extend((message,))
        return message

    def extend(self, messages: Iterable[Message]) -> None:
        """Append messages atomically: all are checked before any is added."""
        batch = list(messages)
        if not batch:
            return
        new_ids: set[str] = set()
        new_uses: dict[str, tuple[str, str]] = {}
        new_results: set[str] = set()
        base = len(self._log)
        for offset, message in enumerate(batch):
            index = base + offset
            if not isinstance(message, Message):
                raise InvalidMessage(
                    f"message {index} must be a Message (got {type(message).__name__})",
                    rule="not_a_message",
                    index=index,
                )
            if message.id in self._position or message.id in new_ids:
                raise InvalidMessage(
                    f"message {index}: id {message.id!r} is already in the conversation",
                    rule="duplicate_message_id",
                    index=index,
                    message_id=message.id,
                )
            if message.role is Role.SYSTEM and index != 0:
                raise InvalidMessage(
                    f"message {index}: a system message may only come first",
                    rule="system_position",
                    index=index,
                    message_id=message.id,
                )
            new_ids.add(message.id)
            for use in message.tool_uses:
                if use.id in self._uses or use.id in new_uses:
                    raise InvalidMessage(
                        f"message {index}: tool_use id {use.id!r} is already used",
                        rule="duplicate_tool_use_id",
                        index=index,
                        tool_use_id=use.id,
                    )
                new_uses[use.id] = (message.id, use.name)
            for result in message.tool_results:
                known = result.tool_use_id in self._uses or result.tool_use_id in new_uses
                if not known:
                    raise InvalidMessage(
                        f"message {index}: tool_result {result.tool_use_id!r} answers no tool_use",
                        rule="orphan_tool_result",
                        index=index,
                        tool_use_id=result.tool_use_id,
                    )
                if result.tool_use_id in self._results or result.tool_use_id in new_results:
                    raise InvalidMessage(
                        f"message {index}: tool_use {result.tool_use_id!r} is already answered",
                        rule="duplicate_tool_result",
                        index=index,
                        tool_use_id=result.tool_use_id,
                    )
                new_results.add(result.tool_use_id)
        counts = [self._measure(m) for m in batch]
        for message, count in zip(batch, counts, strict=True):
            self._position[message.id] = len(self._log)
            self._log.append(message)
            self._tokens[message.id] = count
            self._total += count
            for use in message.tool_uses:
                self._uses[use.id] = (message.id, use.name)
            for result in message.tool_results:
                self._results[result.tool_use_id] = message.id
        if any(m.hidden or SUMMARY_OF in m.metadata for m in batch):
            self._recount()
            return
        # The common case stays O(new messages): extend the cached view in place.
        self.version += 1
        if self._view is not None:
            self._view.extend(batch)
        self._effective_total += sum(counts)

    # -- tagging (used by compression) --------------------------------------

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
            message = self.original(message_id)
            if message.important:
                raise InvalidMessage(
                    f"message {message_id!r} is pinned (important) and cannot be hidden",
                    rule="pinned",
                    message_id=message_id,
                )
        for message_id in ids:
            message = self.original(message_id)
            changes: dict[str, Any] = {}
            if condense_parent is not None and message.condense_parent is None:
                changes["condense_parent"] = condense_parent
            if truncation_parent is not None and message.truncation_parent is None:
                changes["truncation_parent"] = truncation_parent
            if changes:
                self._log[self._position[message_id]] = attrs.evolve(message, **changes)
        self._recount()

    def unhide(self, message_ids: Iterable[str]) -> None:
        """Clear the compression tags of messages (undo a compression)."""
        ids = list(message_ids)
        for message_id in ids:
            self.original(message_id)
        for message_id in ids:
            message = self.original(message_id)
            self._log[self._position[message_id]] = attrs.evolve(
                message, condense_parent=None, truncation_parent=None
            )
        self._recount()

    def add_summary(self, summary: Message, covers: Sequence[str]) -> Message:
        """Append ``summary`` and hide the messages it ``covers`` behind it."""
        if not covers:
            raise InvalidMessage("a summary must cover at least one message", rule="empty_span")
        for message_id in covers:
            if self.original(message_id).important:
                raise InvalidMessage(
                    f"message {message_id!r} is pinned (important) and cannot be condensed",
                    rule="pinned",
                    message_id=message_id,
                )
        if summary.tool_uses or summary.tool_results:
            raise InvalidMessage(
                "a summary message may not carry tool blocks", rule="summary_tool_blocks"
            )
        marked = attrs.evolve(summary, metadata={**summary.metadata, SUMMARY_OF: list(covers)})
        self.append(marked)
        self.hide(covers, condense_parent=marked.id)
        return marked

    def set_overlay(self, message_id: str, replacement: Message) -> None:
        """Show ``replacement`` instead of a message; its role and tool ids must match."""
        self._check_overlay(message_id, replacement)
        self._overlays[message_id] = replacement
        self._overlay_tokens[message_id] = self._measure(replacement)
        self._recount()

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
        for message_id, replacement in replacements.items():
            self._check_overlay(message_id, replacement)
        known = counts or {}
        for message_id, replacement in replacements.items():
            self._overlays[message_id] = replacement
            count = known.get(message_id)
            self._overlay_tokens[message_id] = (
                count if count is not None else self._measure(replacement)
            )
        self._recount()

    def remove_overlays(self, message_ids: Iterable[str]) -> None:
        """Show many originals again (one view rebuild)."""
        ids = list(message_ids)
        for message_id in ids:
            self.original(message_id)
        for message_id in ids:
            self._overlays.pop(message_id, None)
            self._overlay_tokens.pop(message_id, None)
        self._recount()

    def measure(self, message: Message) -> int:
        """Count ``message`` with this conversation's measure (nothing is cached)."""
        return self._measure(message)

    def remove_overlay(self, message_id: str) -> None:
        """Show the original again."""
        self.original(message_id)
        self._overlays.pop(message_id, None)
        self._overlay_tokens.pop(message_id, None)
        self._recount()

    def _recount(self) -> None:
        self.version += 1
        self._view, self._effective_total = self._scan()
