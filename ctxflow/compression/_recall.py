"""Recall and undo: every hidden original can be fetched, and every compression undone.

``recall`` gives an agent's "recall" tool the original of any message, by
its id (a trimmed message's marker names it) or, for a trimmed or cleared
result, by the call id the result carries (its marker says so); ``expand`` opens
a summary back into the originals it covers, through nested summaries.
``undo`` reverses one ladder run (from its report) or one compression event
(by summary id, truncation tag, or the id of any message it touched).
Undoing never deletes: a summary stays in the append-only log, it is simply
no longer shown once the messages it covers are visible again.
"""

from __future__ import annotations

from ctxflow.compression._ladder import CompressionReport
from ctxflow.errors import InvalidMessage
from ctxflow.model import SUMMARY_OF, Conversation, Message

__all__ = ["expand", "recall", "undo"]


def recall(conversation: Conversation, message_id: str) -> Message:
    """The original of a message, whether hidden, overlaid or visible (tags included).

    ``message_id`` may also be a call id (tool_use id): a cleared or trimmed
    result's marker tells the model to recall it by the call id its
    tool_result block carries, so that id gives back the message of results.
    """
    if message_id not in conversation:
        try:
            answered = conversation.pair(message_id).result_message
        except InvalidMessage:
            answered = None
        if answered is not None:
            return conversation.original(answered)
    return conversation.original(message_id)


def expand(conversation: Conversation, summary_id: str) -> list[Message]:
    """The originals a summary covers, with nested summaries expanded, in log order."""
    out: list[Message] = []
    for message in conversation.covered_by(summary_id):
        if SUMMARY_OF in message.metadata:
            out.extend(expand(conversation, message.id))
        else:
            out.append(message)
    return sorted(out, key=lambda m: conversation.index_of(m.id))


def undo(conversation: Conversation, what: CompressionReport | str) -> None:
    """Reverse a ladder run (its report) or one event (summary id, truncation tag, message id).

    Undoing by a message id undoes the whole event that hid it (so no tool
    pair is split), or removes its overlay when it was only trimmed or cleared.
    """
    if isinstance(what, CompressionReport):
        covered = [i for s in what.summaries for i in conversation.original(s).metadata[SUMMARY_OF]]
        ids = [*what.hidden, *covered]
        if ids:
            conversation.unhide(ids)
        if what.overlaid:
            conversation.remove_overlays(what.overlaid)
        if what.previous_overlays:
            conversation.set_overlays(what.previous_overlays)
        return
    if what in conversation:
        message = conversation.original(what)
        if SUMMARY_OF in message.metadata:
            conversation.unhide(message.metadata[SUMMARY_OF])
            return
        if message.condense_parent is not None:
            undo(conversation, message.condense_parent)
            return
        if message.truncation_parent is not None:
            undo(conversation, message.truncation_parent)
            return
        if conversation.overlay(what) is not None:
            conversation.remove_overlay(what)
            return
        raise InvalidMessage(
            f"message {what!r} is neither hidden, overlaid nor a summary: nothing to undo",
            rule="nothing_to_undo",
            message_id=what,
        )
    ids = [m.id for m in conversation if m.truncation_parent == what]
    if not ids:
        raise InvalidMessage(
            f"no message, summary or truncation event has the id {what!r}",
            rule="unknown_compression",
            compression_id=what,
        )
    conversation.unhide(ids)
