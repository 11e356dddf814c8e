"""The conformance suite every store backend must pass.

A backend's tests inherit :class:`StoreConformance` and implement
``make_store(tmp_path)``::

    class TestMemoryStore(StoreConformance):
        def make_store(self, tmp_path):
            return MemoryStore()

The class name does not start with ``Test``, so pytest collects it only
through its subclasses. It needs pytest (a development dependency).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctxflow.errors import CheckpointError, CheckpointNotFound, CorruptCheckpoint, StaleCheckpoint
from ctxflow.model import Conversation, Message
from ctxflow.persistence._base import BaseStore
from ctxflow.persistence._checkpointer import Checkpointer, restore
from ctxflow.persistence._codec import EnvelopeCodec
from ctxflow.persistence._protocol import Store

__all__ = ["StoreConformance"]


def _turns(start: int, count: int) -> list[Message]:
    out = []
    for i in range(start, start + count):
        if i % 2 == 0:
            out.append(Message.user(f"question {i}", id=f"m{i}"))
        else:
            out.append(Message.assistant(f"answer {i}", id=f"m{i}"))
    return out


class _KeyedMeasure:
    """A measure with a key (chars / 4 plus 4) that counts its calls."""

    key = "conformance/chars"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, message: Message) -> int:
        self.calls += 1
        return len(message.text) // 4 + 4


class StoreConformance:
    """Behaviour every :class:`~ctxflow.persistence.Store` backend must show."""

    def make_store(self, tmp_path: Path) -> BaseStore:
        """A fresh, empty store of the backend under test."""
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[BaseStore]:
        """The backend under test, closed afterwards."""
        store = self.make_store(tmp_path)
        yield store
        store.close()

    def _session(
        self, store: BaseStore, steps: int = 5, **kwargs: Any
    ) -> tuple[Checkpointer, Conversation]:
        writer = Checkpointer(store, **kwargs)
        conversation = Conversation()
        for message in _turns(0, steps):
            conversation.append(message)
            writer.capture(conversation, state={"step": len(conversation)}, phase="execution")
        return writer, conversation

    def test_put_then_load_latest(self, store: BaseStore) -> None:
        """The latest checkpoint restores the conversation that was captured."""
        writer, conversation = self._session(store)
        restored = restore(store, writer.session_id)
        assert restored.conversation.messages == conversation.messages
        assert restored.state == {"step": 5}
        assert store.latest(writer.session_id).message_count == 5

    def test_list_is_ordered(self, store: BaseStore) -> None:
        """A session's checkpoints list oldest first, each pointing at its parent."""
        writer, _ = self._session(store, steps=4)
        records = store.checkpoints(writer.session_id)
        assert [r.seq for r in records] == [1, 2, 3, 4]
        assert [r.parent_id for r in records[1:]] == [r.id for r in records[:-1]]
        assert writer.session_id in store.sessions()

    def test_every_checkpoint_loads(self, store: BaseStore) -> None:
        """Each checkpoint of a chain of deltas and full manifests restores its own state."""
        writer, _ = self._session(store, steps=9, full_every=3, full_ratio=0)
        records = store.checkpoints(writer.session_id)
        assert [r.full for r in records[:4]] == [True, False, False, True]
        for record in records:
            restored = restore(store, writer.session_id, record.id)
            assert len(restored.conversation) == record.message_count

    def test_stale_parent_is_refused(self, store: BaseStore) -> None:
        """A write based on an outdated parent raises StaleCheckpoint and changes nothing."""
        writer, conversation = self._session(store, steps=2)
        other = Checkpointer(store, writer.session_id)
        other.restore()
        conversation.append(Message.user("more", id="x1"))
        writer.capture(conversation)
        before = store.checkpoints(writer.session_id)
        with pytest.raises(StaleCheckpoint):
            other.capture(conversation)
        assert store.checkpoints(writer.session_id) == before

    def test_new_session_must_not_exist(self, store: BaseStore) -> None:
        """A first write into an existing session is stale, not a silent fork."""
        writer, conversation = self._session(store, steps=2)
        with pytest.raises(StaleCheckpoint):
            Checkpointer(store, writer.session_id).capture(conversation)

    def test_unknown_ids(self, store: BaseStore) -> None:
        """Unknown sessions and checkpoints raise CheckpointNotFound."""
        writer, _ = self._session(store, steps=1)
        with pytest.raises(CheckpointNotFound):
            store.latest("ses_missing")
        with pytest.raises(CheckpointNotFound):
            store.load("ses_missing")
        with pytest.raises(CheckpointNotFound):
            store.load(writer.session_id, "ckp_missing")
        with pytest.raises(CheckpointNotFound):
            store.erase("ses_missing")

    def test_fork(self, store: BaseStore) -> None:
        """A fork starts a new session equal to the chosen checkpoint; both go on alone."""
        writer, _ = self._session(store, steps=6)
        middle = store.checkpoints(writer.session_id)[2]
        forked = store.fork(writer.session_id, middle.id)
        assert forked.session_id != writer.session_id
        assert forked.trigger == "fork"
        branch = Checkpointer(store, forked.session_id)
        restored = branch.restore()
        assert len(restored.conversation) == 3
        restored.conversation.append(Message.assistant("branch", id="b1"))
        branch.capture(restored.conversation)
        assert store.latest(writer.session_id).message_count == 6
        assert store.latest(forked.session_id).message_count == 4
        with pytest.raises(CheckpointError):
            store.fork(writer.session_id, middle.id, new_session_id=forked.session_id)

    def test_retention_keep_last(self, store: BaseStore) -> None:
        """Keep-last-N deletes the oldest, and every kept checkpoint still restores."""
        writer, conversation = self._session(store, steps=10, full_every=4, full_ratio=0)
        records = store.checkpoints(writer.session_id)
        deleted = store.prune(writer.session_id, keep_last=3)
        assert deleted == [r.id for r in records[:7]]
        kept = store.checkpoints(writer.session_id)
        assert [r.id for r in kept] == [r.id for r in records[7:]]
        for record in kept:
            restored = restore(store, writer.session_id, record.id)
            assert len(restored.conversation) == record.message_count
        assert restore(store, writer.session_id).conversation.messages == conversation.messages

    def test_retention_ttl_keeps_latest(self, store: BaseStore) -> None:
        """TTL retention deletes old checkpoints but never the latest."""
        clock = iter(range(100, 200))
        writer, _ = self._session(store, steps=4, clock=lambda: float(next(clock)))
        deleted = store.prune(writer.session_id, max_age=1.5, now=103.0)
        assert len(deleted) == 2
        assert len(store.prune(writer.session_id, max_age=0, now=1e9)) == 1
        assert len(store.checkpoints(writer.session_id)) == 1
        restore(store, writer.session_id)

    def test_retention_keeps_shared_bodies(self, store: BaseStore) -> None:
        """Erasing a session keeps the bodies a fork of it still references."""
        writer, _ = self._session(store, steps=4)
        forked = store.fork(writer.session_id, store.latest(writer.session_id).id)
        store.erase(writer.session_id)
        assert writer.session_id not in store.sessions()
        assert len(restore(store, forked.session_id).conversation) == 4

    def test_erase_removes_bodies(self, store: BaseStore) -> None:
        """Erasing the only session leaves no bodies behind."""
        writer, _ = self._session(store, steps=4)
        hashes = store.load(writer.session_id).manifest.body_hashes()
        store.erase(writer.session_id)
        assert store.sessions() == []
        with store._transaction(write=False):
            assert store._present(hashes) == set()

    def test_bad_retention_arguments(self, store: BaseStore) -> None:
        """Unusable retention arguments raise before anything is deleted."""
        writer, _ = self._session(store, steps=3)
        with pytest.raises(CheckpointError):
            store.prune(writer.session_id, keep_last=0)
        assert len(store.checkpoints(writer.session_id)) == 3

    def test_corrupt_manifest_keeps_previous(self, store: BaseStore) -> None:
        """A damaged checkpoint raises CorruptCheckpoint naming it; the previous one loads."""
        writer, _ = self._session(store, steps=3)
        records = store.checkpoints(writer.session_id)
        corrupt = getattr(store, "corrupt", None)
        if corrupt is None:
            pytest.skip("backend offers no way to damage a stored checkpoint")
        corrupt(records[-1].id, b"CXFL\x00\x01garbage")
        with pytest.raises(CorruptCheckpoint) as info:
            store.load(writer.session_id)
        assert records[-1].id in str(info.value)
        assert len(restore(store, writer.session_id, records[-2].id).conversation) == 2

    def test_tags_and_overlays_round_trip(self, store: BaseStore) -> None:
        """Tags and overlays changed between checkpoints restore with the right effective view."""
        writer = Checkpointer(store)
        conversation = Conversation(_turns(0, 6))
        writer.capture(conversation)
        summary = Message.user("summary of 0-1", id="s1")
        conversation.add_summary(summary, ["m0", "m1"])
        conversation.set_overlay("m3", Message.assistant("[cleared]", id="m3"))
        writer.capture(conversation)
        conversation.unhide(["m0", "m1"])
        conversation.remove_overlay("m3")
        conversation.set_overlay("m4", Message.user("[trimmed]", id="m4"))
        writer.capture(conversation)
        _, second, third = store.checkpoints(writer.session_id)
        assert not second.full
        assert not third.full
        again = restore(store, writer.session_id, second.id).conversation
        assert [m.id for m in again.effective()][:2] == ["s1", "m2"]
        assert again.get("m3").text == "[cleared]"
        latest = restore(store, writer.session_id).conversation
        assert latest.messages == conversation.messages
        assert latest.overlays == conversation.overlays
        assert latest.effective() == conversation.effective()

    def test_newer_format_version_is_refused(self, store: BaseStore) -> None:
        """A checkpoint written by a newer format raises CorruptCheckpoint; nothing changes."""
        writer, _ = self._session(store, steps=3)
        corrupt = getattr(store, "corrupt", None)
        if corrupt is None:
            pytest.skip("backend offers no way to replace a stored checkpoint")
        latest = store.latest(writer.session_id)
        newer = EnvelopeCodec(store.codec.layers, version=store.codec.version + 1)
        corrupt(latest.id, newer.encode({"kind": "delta", "hashes": []}))
        with pytest.raises(CorruptCheckpoint) as info:
            store.load(writer.session_id)
        assert info.value.rule == "newer_version"
        assert store.latest(writer.session_id) == latest
        assert len(store.checkpoints(writer.session_id)) == 3

    def test_token_counts_round_trip(self, store: BaseStore) -> None:
        """Counts stored with each checkpoint restore exactly and spare the measure's work."""
        measure = _KeyedMeasure()
        writer = Checkpointer(store, full_every=3, full_ratio=0, measure=measure)
        conversation = Conversation(measure=measure)
        expected = {}
        for message in _turns(0, 12):
            conversation.append(message)
            if message.id == "m5":
                conversation.set_overlay("m3", Message.assistant("[cleared]", id="m3"))
                conversation.add_summary(Message.user("summary", id="s1"), ["m1", "m2"])
            record = writer.capture(conversation)
            expected[record.id] = [(m.id, conversation.tokens(m.id)) for m in conversation]
        measure.calls = 0
        for checkpoint_id, counts in expected.items():
            restored = restore(store, writer.session_id, checkpoint_id, measure=measure)
            assert [(m.id, restored.conversation.tokens(m.id)) for m in restored.conversation] == (
                counts
            )
        assert measure.calls == 0

    def test_is_a_store(self, store: BaseStore) -> None:
        """The backend satisfies the Store protocol."""
        assert isinstance(store, Store)
