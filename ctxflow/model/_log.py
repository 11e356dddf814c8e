"""The conversation's log: every message appended, its cached count and its position.

The log only grows; the one exception is :class:`~ctxflow.model._undo.Undo`
taking back the summaries a refused compression appended. Tags change a
stored message (the view's business, see :mod:`~ctxflow.model._view`); its
position and count never change.

The view, the pair index and the Conversation read the fields directly: they
are on the benchmarks' hot paths (``tokens()``, the view's rebuild), where a
method call per message would show.

This is a message store, not logging (that is :mod:`ctxflow._log`).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Sequence

from ctxflow.errors import InvalidMessage
from ctxflow.model import _messages as m
from ctxflow.model._messages import Message, Role

__all__ = ["MessageLog", "char_estimate", "check_counts", "refusal"]


_ID: Callable[[Message], str] = operator.attrgetter("id")
_ROLE: Callable[[Message], Role] = operator.attrgetter("role")


def char_estimate(message: Message) -> int:
    """Chars/4 over the blocks' string fields; the fallback when no counter is given.

    Reads the fields directly (this runs for every message of a restored
    checkpoint): the text, ids, names, signatures and the block type. It has
    no ``key``: counting again is as cheap as storing its counts.
    """
    total = 0
    for block in message.content:
        total += len(block.type)
        if isinstance(block, m.TextBlock):
            total += len(block.text)
        elif isinstance(block, m.ToolUseBlock):
            total += len(block.id) + len(block.name)
        elif isinstance(block, m.ToolResultBlock):
            total += len(block.tool_use_id)
            if isinstance(block.content, str):
                total += len(block.content)
        elif isinstance(block, m.ThinkingBlock):
            total += len(block.thinking) + len(block.signature)
        elif isinstance(block, m.RedactedThinkingBlock):
            total += len(block.data)
    return total // 4 + 4


def check_counts(counts: Sequence[int], size: int) -> None:
    """Refuse given counts that are not ``size`` non-negative integers."""
    if len(counts) != size or not (set(map(type, counts)) <= {int} and min(counts, default=0) >= 0):
        raise InvalidMessage(
            f"'counts' must be {size} non-negative integers, one per message "
            f"(got {len(counts)} values)",
            rule="counts",
        )


def refusal(index: int, rule: str, text: str, **ids: str) -> InvalidMessage:
    """The error refusing an appended message, named by its log position ``index``."""
    return InvalidMessage(f"message {index}: {text}", rule=rule, index=index, **ids)


def _unknown(message_id: str) -> InvalidMessage:
    return InvalidMessage(
        f"no message with id {message_id!r} in this conversation",
        rule="unknown_message",
        message_id=message_id,
    )


class MessageLog:
    """Messages in the order appended, their token counts and their positions by id."""

    __slots__ = ("counts", "messages", "position", "total")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.counts: list[int] = []  # parallel to the messages
        self.position: dict[str, int] = {}
        self.total = 0

    def __len__(self) -> int:
        return len(self.messages)

    def at(self, message_id: str) -> int:
        """The position of a message; :class:`InvalidMessage` if there is none."""
        try:
            return self.position[message_id]
        except KeyError:
            raise _unknown(message_id) from None

    def positions(self, message_ids: Iterable[str]) -> list[int]:
        """The positions of messages, every id checked before any is returned."""
        return [self.at(i) for i in message_ids]

    def original(self, message_id: str) -> Message:
        """The message as stored (its tags current)."""
        try:  # not through at(): this runs for every message a compression touches
            return self.messages[self.position[message_id]]
        except KeyError:
            raise _unknown(message_id) from None

    def admit(self, batch: Sequence[Message]) -> None:
        """Refuse ``batch`` at its first message that breaks the log's rules, before any change.

        The rules: a Message, an id new to the log and to the batch, a system
        message only first. The error's ``index`` is the message's log position.
        """
        if self._admissible(batch):
            return
        known = self.position
        new_ids: set[str] = set()
        for index, message in enumerate(batch, len(self.messages)):
            if not isinstance(message, Message):
                raise InvalidMessage(
                    f"message {index} must be a Message (got {type(message).__name__})",
                    rule="not_a_message",
                    index=index,
                )
            ident = message.id
            if ident in known or ident in new_ids:
                raise refusal(
                    index,
                    "duplicate_message_id",
                    f"id {ident!r} is already in the conversation",
                    message_id=ident,
                )
            if message.role is Role.SYSTEM and index != 0:
                raise refusal(
                    index,
                    "system_position",
                    "a system message may only come first",
                    message_id=ident,
                )
            new_ids.add(ident)

    def _admissible(self, batch: Sequence[Message]) -> bool:
        """True when every message of ``batch`` keeps the log's rules, checked a rule at a
        time over the whole batch (:meth:`admit` then names the first that does not)."""
        if not all(map(isinstance, batch, itertools.repeat(Message))):
            return False
        ids = set(map(_ID, batch))
        if len(ids) != len(batch) or not self.position.keys().isdisjoint(ids):
            return False
        later = itertools.islice(batch, 0 if self.messages else 1, None)  # after the first
        return Role.SYSTEM not in map(_ROLE, later)

    def add(self, batch: Sequence[Message], counts: Sequence[int]) -> None:
        """Store admitted messages with their counts."""
        base = len(self.messages)
        ids = list(map(_ID, batch))
        self.position.update(zip(ids, range(base, base + len(batch)), strict=True))
        self.messages += batch
        self.counts += counts
        self.total += sum(counts)

    def pop(self) -> Message:
        """Take back the last message (undoing a refused change)."""
        message = self.messages.pop()
        self.total -= self.counts.pop()
        del self.position[message.id]
        return message
