"""The rules a compression's change must meet, checked before anything changes.

A change is refused whole: :meth:`Conversation.apply` runs every check here
on every part of it (overlays, summaries, truncation tags) before it touches
the log or the view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import attrs

from ctxflow.errors import InvalidMessage
from ctxflow.model._lazy import Facts, IndexFacts, Placeholder
from ctxflow.model._log import MessageLog
from ctxflow.model._messages import Message, Role
from ctxflow.model._view import SUMMARY_OF

__all__ = ["check_hideable", "check_overlay", "check_truncations", "mark_summaries"]


def check_hideable(log: MessageLog, message_id: str, verb: str) -> None:
    """Refuse to hide an unknown or a pinned (important) message."""
    if log.original(message_id).important:
        raise InvalidMessage(
            f"message {message_id!r} is pinned (important) and cannot be {verb}",
            rule="pinned",
            message_id=message_id,
        )


def check_overlay(log: MessageLog, message_id: str, replacement: Message) -> None:
    """Refuse an overlay that changes its message's id, role or tool blocks' ids."""
    original = log.known(log.at(message_id))  # an unbuilt message answers with its facts
    if replacement.id != original.id or replacement.role is not original.role:
        raise InvalidMessage(
            f"overlay for {message_id!r} must keep its id and role",
            rule="overlay_identity",
            message_id=message_id,
        )
    if type(original) is Placeholder or type(original) is Facts:
        facts = cast("IndexFacts", original)  # its facts hold the ids: its body stays unread
        if (
            isinstance(replacement, Placeholder)
            and replacement.uses == facts.uses
            and replacement.results == facts.results
        ):
            return  # a placeholder laid over one of the same facts keeps everything
        uses = [use_id for use_id, _ in facts.uses]
        results = list(facts.results)
    else:
        assert isinstance(original, Message)
        uses = [u.id for u in original.tool_uses]
        results = [r.tool_use_id for r in original.tool_results]
    if isinstance(replacement, Placeholder):
        changed = [i for i, _ in replacement.uses] != uses or list(replacement.results) != results
    else:
        changed = [u.id for u in replacement.tool_uses] != uses or [
            r.tool_use_id for r in replacement.tool_results
        ] != results
    if changed:
        raise InvalidMessage(
            f"overlay for {message_id!r} must keep its tool blocks' ids",
            rule="overlay_pairs",
            message_id=message_id,
        )


def check_truncations(log: MessageLog, hidden: Mapping[str, str]) -> None:
    """Refuse a truncation tag that is not a non-empty string, or a message that cannot hide."""
    for message_id, tag in hidden.items():
        if not isinstance(tag, str) or not tag:
            raise InvalidMessage(
                f"the truncation tag of {message_id!r} must be a non-empty string (got {tag!r})",
                rule="tag",
                message_id=message_id,
            )
        check_hideable(log, message_id, "hidden")


def mark_summaries(
    log: MessageLog, summaries: Sequence[tuple[Message, Sequence[str]]]
) -> list[Message]:
    """The summaries marked with what they cover, once each is checked.

    A summary is a new non-system message without tool blocks that covers at
    least one message, none of them pinned; it may cover a summary before it
    in the same change.
    """
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
        if summary.id in log.position or summary.id in fresh:
            raise InvalidMessage(
                f"summary id {summary.id!r} is already in the conversation",
                rule="duplicate_message_id",
                message_id=summary.id,
            )
        for message_id in covers:
            if message_id not in fresh:
                check_hideable(log, message_id, "condensed")
        fresh.add(summary.id)
        marked.append(
            attrs.evolve(summary, metadata={**summary.metadata, SUMMARY_OF: list(covers)})
        )
    return marked
