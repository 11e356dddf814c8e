"""The conversation's log: every message appended, its cached count and its position.

The log only grows; the one exception is :class:`~ctxflow.model._undo.Undo`
taking back the summaries a refused compression appended. Tags change a
stored message (the view's business, see :mod:`~ctxflow.model._view`); its
position and count never change.

The view, the pair index and the Conversation read the fields directly: they
are on the benchmarks' hot paths (``tokens()``, the view's rebuild), where a
method call per message would show.

A lazy restore leaves most of a long log *unbuilt*: the hidden messages
whose bodies stay in the store hold None in :attr:`MessageLog.messages` until
something reads them, and :class:`Unbuilt` keeps what builds each one's
:class:`~ctxflow.model.Placeholder` (its index facts, body key and tags). So
a reopen costs the view and the indexes, not an object per hidden message.
Read a position through :meth:`MessageLog.message` (it builds that one);
:meth:`MessageLog.built` builds what is left and returns the whole list.

This is a message store, not logging (that is :mod:`ctxflow._log`).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

from ctxflow.errors import InvalidMessage
from ctxflow.model import _messages as m
from ctxflow.model._lazy import IndexFacts, Placeholder, Source
from ctxflow.model._messages import Message, Role

__all__ = ["MessageLog", "Unbuilt", "char_estimate", "check_counts", "refusal"]

#: A message's compression tags: (condense_parent, truncation_parent).
Tags = tuple[str | None, str | None]
_UNTAGGED: Tags = (None, None)
_NONES = itertools.repeat(None)


_ID: Callable[[Any], str] = operator.attrgetter("id")
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


class Unbuilt:
    """What builds the placeholders of a lazy restore's unbuilt positions: by log
    position, the index facts and body key of each; by message id, its tags; the
    source the placeholders read their bodies from; how many are left to build.

    ``facts`` is the caller's list, kept: a placeholder built takes the place of
    the facts it was built from there too (it holds them), so a reader indexing
    by that list holds one object per hidden message, built or not.
    """

    __slots__ = ("facts", "keys", "left", "source", "tags")

    def __init__(
        self,
        facts: list[IndexFacts | None],
        keys: Sequence[str],
        tags: Mapping[str, Tags],
        source: Source,
        left: int,
    ) -> None:
        self.facts, self.keys, self.tags, self.source, self.left = facts, keys, tags, source, left

    def facts_at(self, at: int) -> IndexFacts:
        """The index facts of unbuilt position ``at``."""
        facts = self.facts[at]
        assert facts is not None  # an unbuilt position always has its facts
        return facts

    def tags_of(self, message_id: str) -> Tags:
        """The tags of an unbuilt message (every one is hidden)."""
        return self.tags.get(message_id, _UNTAGGED)


class MessageLog:
    """Messages in the order appended, their token counts and their positions by id."""

    __slots__ = ("counts", "messages", "position", "total", "unbuilt")

    def __init__(self) -> None:
        # None at a lazy restore's unbuilt positions (see the module docstring).
        self.messages: list[Message] = []
        self.counts: list[int] = []  # parallel to the messages
        self.position: dict[str, int] = {}
        self.total = 0
        self.unbuilt: Unbuilt | None = None

    def __len__(self) -> int:
        return len(self.messages)

    def restored(
        self, messages: list[Message | None], ids: list[str], counts: list[int], unbuilt: Unbuilt
    ) -> None:
        """Take a lazy restore's whole log, admitted already: ``messages`` with None at
        the positions ``unbuilt`` describes, the ``ids`` and ``counts`` of every one."""
        self.messages = cast("list[Message]", messages)
        self.counts = counts
        self.position = dict(zip(ids, range(len(ids)), strict=True))
        self.total = sum(counts)
        self.unbuilt = unbuilt if unbuilt.left else None

    def message(self, at: int) -> Message:
        """The message at log position ``at`` (an unbuilt one's placeholder is built)."""
        message: Message | None = self.messages[at]
        if message is None:
            return self._build(at if at >= 0 else at + len(self.messages))
        return message

    def known(self, at: int) -> Message | IndexFacts:
        """The message at ``at``, or an unbuilt one's index facts (nothing is built)."""
        message: Message | None = self.messages[at]
        if message is None:
            assert self.unbuilt is not None
            return self.unbuilt.facts_at(at)
        return message

    def tags_at(self, at: int) -> Tags:
        """The compression tags of the message at ``at`` (nothing is built)."""
        message: Message | None = self.messages[at]
        if message is None:
            assert self.unbuilt is not None
            return self.unbuilt.tags_of(self.unbuilt.facts_at(at).id)
        return message.condense_parent, message.truncation_parent

    def is_built(self, at: int) -> bool:
        """False for a lazy restore's position no reader has asked for yet."""
        return cast("Message | None", self.messages[at]) is not None

    def _build(self, at: int) -> Message:
        unbuilt = self.unbuilt
        assert unbuilt is not None  # None is only ever left at an unbuilt position
        facts = unbuilt.facts_at(at)
        condense, truncation = unbuilt.tags_of(facts.id)
        one = Placeholder.of(
            facts,
            key=unbuilt.keys[at],
            source=unbuilt.source,
            condense_parent=condense,
            truncation_parent=truncation,
        )
        self.messages[at] = unbuilt.facts[at] = one
        unbuilt.left -= 1
        if not unbuilt.left:
            self.unbuilt = None
        return one

    def built(self) -> list[Message]:
        """Every message, in order, any position still unbuilt built first."""
        unbuilt, messages = self.unbuilt, self.messages
        if unbuilt is not None:
            at = list(
                itertools.compress(
                    range(len(messages)), map(operator.is_, messages, itertools.repeat(None))
                )
            )
            facts = list(map(unbuilt.facts_at, at))
            made = Placeholder.many(
                facts,
                map(unbuilt.keys.__getitem__, at),
                map(unbuilt.tags_of, map(_ID, facts)),
                unbuilt.source,
            )
            held = unbuilt.facts
            for where, one in zip(at, made, strict=True):
                messages[where] = held[where] = one
            self.unbuilt = None
        return messages

    def iterate_built(self, start: int = 0) -> Iterator[Message]:
        """The built messages from ``start`` on, in order (unbuilt ones passed over)."""
        rest = self.messages[start:]  # a slice: islice would step over the first ``start``
        if self.unbuilt is None:
            return iter(rest)
        return itertools.compress(rest, map(operator.is_not, rest, _NONES))

    def iterate(self, start: int = 0) -> Iterator[Message]:
        """The messages from ``start`` on, each unbuilt one built as it is reached."""
        if start < 0:
            start = max(0, start + len(self.messages))
        if self.unbuilt is None:  # a slice: islice would step over the first ``start``
            return iter(self.messages[start:] if start else self.messages)
        return self._building(start, self.unbuilt)

    def _building(self, start: int, unbuilt: Unbuilt) -> Iterator[Message]:
        for at in range(start, len(self.messages)):
            yield self.message(at)
            if not unbuilt.left:  # the last unbuilt one was built: the rest as a list
                yield from self.messages[at + 1 :]
                return

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
            at = self.position[message_id]
        except KeyError:
            raise _unknown(message_id) from None
        message: Message | None = self.messages[at]
        return message if message is not None else self._build(at)

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
