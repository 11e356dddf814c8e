"""Tests for the effective view: flags, in-place appends, anchors and incremental validity."""

from __future__ import annotations

from ctxflow.model import Message
from ctxflow.model._log import MessageLog
from ctxflow.model._view import SUMMARY_OF, View


def _view(*messages: Message) -> View:
    log = MessageLog()
    log.add(messages, [1] * len(messages))
    view = View(log)
    assert view.append(messages, [1] * len(messages))
    return view


def test_an_untagged_append_extends_the_view_in_place() -> None:
    """Plain messages join the cached view without a rebuild; a tagged one asks for a rebuild."""
    view = _view(Message.user("a", id="u0"))
    shown = view.current()
    plain = [Message.assistant("b", id="a0")]
    view.log.add(plain, [2])
    assert view.append(plain, [2])
    assert view.current() is shown
    assert ([m.id for m in shown], view.total) == (["u0", "a0"], 3)
    tagged = [Message.user("c", id="u1").with_tags(condense_parent=None, truncation_parent="t")]
    view.log.add(tagged, [5])
    assert not view.append(tagged, [5])


def test_a_summary_is_shown_at_its_anchor() -> None:
    """A summary stored last stands where the first message it covers stood."""
    view = _view(
        Message.user("a", id="u0"), Message.assistant("b", id="a0"), Message.user("c", id="u1")
    )
    summary = Message.assistant("gist", id="s", metadata={SUMMARY_OF: ["a0"]})
    at = view.add_summary(summary, 1)
    view.tag("a0", "s", None)
    view.changed([at, view.log.position["a0"]])
    assert [m.id for m in view.current()] == ["u0", "s", "u1"]
    assert view.anchors == {"s": 1}
    assert view.index(at) == (1, True)


def test_a_local_change_keeps_validity_known() -> None:
    """After a full check, hiding a valid pair of turns keeps the view known valid."""
    view = _view(
        Message.user("a", id="u0"),
        Message.assistant("b", id="a0"),
        Message.user("c", id="u1"),
        Message.assistant("d", id="a1"),
    )
    assert view.validity() == (True, True)
    moved = [view.tag(i, None, "t") for i in ("a0", "u1")]
    view.changed(moved)
    assert view.valid is not None and view.valid.epoch == view.epoch == 1
    assert view.known() == (True, True)


def test_a_tagged_batch_gets_the_flags_each_message_would_get() -> None:
    """A batch appended with tags, summaries and overlays among it is flagged in one pass
    as flag() flags each message alone, placeholders included (a restore)."""
    from ctxflow.model import Placeholder
    from ctxflow.model._lazy import Facts, Role

    class Nowhere:
        def fetch(self, wanted: object) -> list[Message]:
            raise AssertionError("a flag never reads a body")

    kinds = [
        Message.user("plain", id="p0"),
        Message.user("cut", id="t0").with_tags(condense_parent=None, truncation_parent="t"),
        Message.assistant("in span", id="c0").with_tags(
            condense_parent="s0", truncation_parent=None
        ),
        Message.assistant("both", id="b0").with_tags(condense_parent="s0", truncation_parent="t"),
        Message.assistant("gist", id="s0", metadata={SUMMARY_OF: ["c0"]}),
        Message.user("overlaid", id="o0"),
        Placeholder.of(
            Facts("h0", Role.USER, (), (), False),
            key="k0",
            source=Nowhere(),
            condense_parent=None,
            truncation_parent="t",
        ),
        Placeholder.of(
            Facts("h1", Role.ASSISTANT, (), (), True),
            key="k1",
            source=Nowhere(),
            condense_parent=None,
            truncation_parent=None,
        ),
    ]
    log = MessageLog()
    view = View(log)
    view.overlays["o0"] = Message.user("[cut]", id="o0")
    log.add(kinds, [1] * len(kinds))
    assert not view.append(kinds, [1] * len(kinds))
    assert list(view.flags) == [view.flag(at) for at in range(len(kinds))]
    assert list(view.flags) == [0, 1, 2, 2, 1, 2, 1, 1]
