"""Tests for taking back a change: the log, the overlays and what was known of the view."""

from __future__ import annotations

from ctxflow.model import Message
from ctxflow.model._log import MessageLog
from ctxflow.model._undo import Undo
from ctxflow.model._view import SUMMARY_OF, View


def test_restore_takes_back_summaries_tags_and_overlays() -> None:
    """After restore(), the log, the overlays, the view and its validity are as before."""
    messages = [Message.user("a", id="u0"), Message.assistant("b", id="a0")]
    log = MessageLog()
    log.add(messages, [2, 3])
    view = View(log)
    view.append(messages, [2, 3])
    assert view.validity() == (True, True)
    before = (list(view.current()), view.total, log.total, view.valid, view.epoch)

    undo = Undo(view)
    undo.overlay("a0")
    view.lay(1, Message.assistant("short", id="a0"), 1)
    at = view.add_summary(Message.user("gist", id="s", metadata={SUMMARY_OF: ["u0"]}), 1)
    undo.appended += 1
    undo.message(0)
    view.tag("u0", "s", None)
    view.changed([at, 0], [1])
    assert [m.id for m in view.current()] == ["s", "a0"]

    undo.restore()
    assert (list(view.current()), view.total, log.total, view.valid, view.epoch) == before
    assert (view.overlays, "s" in log.position, log.messages[0].hidden) == ({}, False, False)
