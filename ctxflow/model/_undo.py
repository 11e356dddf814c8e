"""Taking back a compression that :meth:`Conversation.apply` refused after making it.

A compression with ``keep_valid`` is only known to break the view once it is
made (validity is known incrementally, from the changed view), so ``apply``
records what it changes here first: the messages it retags, the overlays it
replaces, the summaries it appends, and what was known of the view.
"""

from __future__ import annotations

from ctxflow.model._messages import Message
from ctxflow.model._view import View

__all__ = ["Undo"]


class Undo:
    """What one change did to a log and its view, so that it can be taken back."""

    __slots__ = ("appended", "epoch", "messages", "overlays", "valid", "view")

    def __init__(self, view: View) -> None:
        self.view = view
        self.messages: dict[int, Message] = {}  # log position -> message before the change
        self.overlays: dict[str, tuple[Message, int] | None] = {}  # id -> overlay and count
        self.appended = 0
        self.valid = view.valid
        self.epoch = view.epoch

    def message(self, at: int) -> None:
        """Remember the message at log position ``at`` before it is retagged."""
        self.messages.setdefault(at, self.view.log.message(at))

    def overlay(self, message_id: str) -> None:
        """Remember the overlay of ``message_id`` (or that it had none) before it is laid."""
        view = self.view
        overlay = view.overlay_of(message_id)
        self.overlays.setdefault(
            message_id, None if overlay is None else (overlay, view.overlay_tokens[message_id])
        )

    def restore(self) -> None:
        """Put the log and the view back as they were when this record began."""
        view, log = self.view, self.view.log
        for _ in range(self.appended):
            log.pop()
            view.flags.pop()
        size = len(log)
        for at, message in self.messages.items():
            if at < size:
                log.messages[at] = message
        for message_id, previous in self.overlays.items():
            if previous is None:
                view.overlays.pop(message_id, None)
                view.overlay_tokens.pop(message_id, None)
            else:
                view.overlays[message_id], view.overlay_tokens[message_id] = previous
        for at in {log.position[i] for i in self.overlays} | set(self.messages):
            if at < size:
                view.flags[at] = view.flag(at)
        view.valid, view.epoch = self.valid, self.epoch
        view.rebuild()
