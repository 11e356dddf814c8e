"""A large session head moves by weight, and packing takes only the rows it covers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctxflow.model import Conversation, Message
from ctxflow.persistence import Checkpointer, EnvelopeCodec, Lz4Layer, restore
from ctxflow.persistence._manifest import PARENT_DELTA
from ctxflow.persistence._sqlite import heads
from ctxflow.stores import SQLiteStore


def _head_seq(store: SQLiteStore) -> int | None:
    row = store._db.execute("SELECT seq FROM heads").fetchone()
    return None if row is None else row[0]


@pytest.mark.parametrize("large", [1 << 40, 100])
def test_heads_move_by_weight_once_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, large: int
) -> None:
    """Every latest load matches the load by id; a large head moves far less often than
    every ``head_every``, and no packed row is newer than it."""
    monkeypatch.setattr(heads, "LARGE_HEAD", large)
    with SQLiteStore(
        tmp_path / "h.db", head_every=2, pack_checkpoints=4, segment_bodies=8
    ) as store:
        writer = Checkpointer(store, "s", full_every=10_000)
        conversation = Conversation(
            Message.user(f"earlier {i}", id=f"e{i}")
            if i % 2 == 0
            else Message.assistant(f"reply {i}", id=f"e{i}")
            for i in range(1000)
        )
        moves, seen = 0, None
        for i in range(160):
            role = Message.user if i % 2 == 0 else Message.assistant
            conversation.append(role(f"turn {i} " + "word " * (i % 9), id=f"m{i}"))
            writer.capture(conversation, state={"step": i})
            held = _head_seq(store)
            moves += held != seen
            seen = held
            if i % 3 == 0:
                latest = store.load("s")
                by_id = store.load("s", store.latest("s").id)
                assert (latest.manifest, latest.bodies) == (by_id.manifest, by_id.bodies)
            packed = store._db.execute("SELECT max(last_seq) FROM packs").fetchone()[0]
            if large < (1 << 40) and packed is not None and held is not None:
                assert packed <= held or store._heads.large(1) is None
        assert list(restore(store, "s").conversation) == list(conversation)
        if large < (1 << 40):
            assert store._heads.large(1) is not None
            assert moves < 40
        else:
            assert moves >= 70


class _CountingCodec(EnvelopeCodec):
    """The default codec, counting whole decodes of full manifests and one-entry reads."""

    def __init__(self) -> None:
        super().__init__((Lz4Layer(level=3),))
        self.whole_fulls = 0
        self.entries = 0

    def decode(self, data: bytes) -> Any:
        value = super().decode(data)
        if isinstance(value, dict) and PARENT_DELTA in value:
            self.whole_fulls += 1
        return value

    def decode_entry(self, data: bytes, key: str) -> Any:
        self.entries += 1
        return super().decode_entry(data, key)


def test_a_packing_behind_a_large_head_reads_full_rows_for_their_delta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full manifests written often are packed from the deltas they carry (read alone):
    every checkpoint still loads as written, and the session restores whole."""
    monkeypatch.setattr(heads, "LARGE_HEAD", 100)
    codec = _CountingCodec()
    with SQLiteStore(
        tmp_path / "f.db", head_every=2, pack_checkpoints=4, segment_bodies=8, codec=codec
    ) as store:
        writer = Checkpointer(store, "s", full_every=3, full_ratio=0)
        conversation = Conversation(
            Message.user(f"earlier {i}", id=f"e{i}") for i in range(0, 400, 2)
        )
        written = {}
        for i in range(120):
            role = Message.user if i % 2 == 0 else Message.assistant
            conversation.append(role(f"turn {i} " + "word " * (i % 7), id=f"m{i}"))
            record = writer.capture(conversation, state={"step": i})
            written[record.id] = (len(conversation), i)
        assert store._db.execute("SELECT count(*) FROM packs").fetchone()[0] > 5
        assert codec.entries > 5  # full rows packed from their deltas
        for checkpoint_id, (count, step) in written.items():
            snapshot = restore(store, "s", checkpoint_id)
            assert len(snapshot.conversation) == count
            assert snapshot.state == {"step": step}
        assert list(restore(store, "s").conversation) == list(conversation)


def test_a_large_head_moves_once_the_rows_since_weigh_half_as_much_as_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large head stays where it is until the rows written since it weigh half as much
    as it does; then it moves at the next ``head_every``."""
    monkeypatch.setattr(heads, "LARGE_HEAD", 100)
    with SQLiteStore(tmp_path / "w.db", head_every=2) as store:
        writer = Checkpointer(store, "s", full_every=10_000)
        conversation = Conversation(Message.user(f"earlier {i}") for i in range(300))
        moves = 0
        for i in range(200):
            conversation.append(Message.user(f"turn {i} " + "word " * (i % 9)))
            before = store._db.execute("SELECT seq, length(head) FROM heads").fetchone()
            record = writer.capture(conversation, state={"step": i})
            now = _head_seq(store)
            if before is None or now == before[0]:
                continue
            moves += 1
            (since,) = store._db.execute(
                "SELECT coalesce(sum(size), 0) FROM checkpoints WHERE seq > ?", (before[0],)
            ).fetchone()
            assert 2 * since >= before[1]  # the rows since weighed half the head
            assert record.seq % 2 == 0 and now == record.seq
        assert 2 <= moves < 60
        assert list(restore(store, "s").conversation) == list(conversation)
