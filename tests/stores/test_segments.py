"""Body segments and checkpoint packs in the SQLite store: damage, retention, erasure, upgrade."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import lz4.frame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.errors import CheckpointError, CorruptCheckpoint, StoreError
from ctxflow.model import Conversation, Message
from ctxflow.persistence import (
    CheckpointDraft,
    Checkpointer,
    EnvelopeCodec,
    Lz4Layer,
    body_hash,
    restore,
)
from ctxflow.persistence._sqlite.heads import HEAD_EVERY
from ctxflow.stores import SQLiteStore
from ctxflow.testing import capture_events


def _turn(i: int, tag: str = "") -> Message:
    role = Message.user if i % 2 == 0 else Message.assistant
    return role(f"turn {i}{tag} " + "words " * (i % 7), id=f"{tag}m{i}")


def _grow(store: SQLiteStore, steps: int, *, session: str | None = None, tag: str = "") -> str:
    writer = Checkpointer(store, session, full_every=4)
    conversation = Conversation()
    for i in range(steps):
        conversation.append(_turn(i, tag))
        writer.capture(conversation, state={"step": i})
    return writer.session_id


def _count(store: SQLiteStore, table: str) -> int:
    return int(store._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _segment_hashes(store: SQLiteStore) -> set[str]:
    """The hash of every body held inside any segment (recomputed from the bodies)."""
    found: set[str] = set()
    for (segment,) in store._db.execute("SELECT id FROM segments").fetchall():
        found |= {body_hash(b) for b in store._segments.segment(int(segment))}
    return found


def test_loose_bodies_are_packed_and_restore_exactly(tmp_path: Path) -> None:
    """Once enough loose bodies accumulate they move into a segment and still restore exactly."""
    with SQLiteStore(tmp_path / "s.db", segment_bodies=8) as store:
        session = _grow(store, 30)
        assert _count(store, "segments") == 3
        assert _count(store, "loose") == 30 - 24
        restored = restore(store, session).conversation
        assert [m.id for m in restored] == [f"m{i}" for i in range(30)]
        assert list(restored) == [_turn(i) for i in range(30)]
        for record in store.checkpoints(session):
            assert len(restore(store, session, record.id).conversation) == record.message_count


def test_packing_shrinks_the_file(tmp_path: Path) -> None:
    """A packed store is smaller than one that keeps every body loose."""
    sizes = []
    for n in (16, 10_000):
        with SQLiteStore(tmp_path / f"p{n}.db", segment_bodies=n) as s:
            _grow(s, 200)
            s.checkpoint_wal()
            sizes.append(s.size)
    assert sizes[0] < sizes[1]


def test_damaged_segment_gives_corrupt_checkpoint(tmp_path: Path) -> None:
    """Changed bytes in a segment give CorruptCheckpoint (checksum), never wrong messages."""
    with SQLiteStore(tmp_path / "d.db", segment_bodies=4) as store:
        session = _grow(store, 6)
        with store._transaction(write=True):
            segment, data = store._db.execute("SELECT id, data FROM segments").fetchone()
            damaged = bytearray(data)
            damaged[-2] ^= 0xFF
            store._db.execute(
                "UPDATE segments SET data = ? WHERE id = ?", (bytes(damaged), segment)
            )
        with pytest.raises(CorruptCheckpoint, match="checksum"):
            restore(store, session)


def test_segment_of_wrong_shape_gives_corrupt_checkpoint(tmp_path: Path) -> None:
    """A segment that decodes to something other than a hash map is refused with a typed error."""
    with SQLiteStore(tmp_path / "w.db", segment_bodies=4) as store:
        session = _grow(store, 6)
        with store._transaction(write=True):
            store._db.execute("UPDATE segments SET data = ?", (store.codec.encode({"a": 1}),))
        with pytest.raises(CorruptCheckpoint, match="segment"):
            restore(store, session)


@pytest.mark.parametrize(
    ("change", "message"),
    [("pos = 99", "position 99"), ("pos = 'x'", "position x"), ("segment = 'x'", "segment x")],
)
def test_body_outside_its_segment_gives_corrupt_checkpoint(
    tmp_path: Path, change: str, message: str
) -> None:
    """A body row pointing past its segment, or with text for its place, gives CorruptCheckpoint."""
    with SQLiteStore(tmp_path / "o.db", segment_bodies=4) as store:
        session = _grow(store, 6)
        with store._transaction(write=True):
            store._db.execute(f"UPDATE bodies SET {change} WHERE segment IS NOT NULL")
        with pytest.raises(CorruptCheckpoint, match=message):
            restore(store, session)


def test_prune_keeps_bodies_inside_segments(tmp_path: Path) -> None:
    """Retention leaves every body a kept checkpoint names, even when it sits in a segment."""
    with SQLiteStore(tmp_path / "r.db", segment_bodies=5) as store:
        session = _grow(store, 23)
        store.prune(session, keep_last=3)
        for record in store.checkpoints(session):
            assert len(restore(store, session, record.id).conversation) == record.message_count
        assert _count(store, "bodies") == 23


def test_erase_rewrites_shared_segments(tmp_path: Path) -> None:
    """Erasing a session removes its bodies from segments a surviving session still uses."""
    with SQLiteStore(tmp_path / "e.db", segment_bodies=6) as store:
        first = _grow(store, 9, tag="a")
        second = _grow(store, 9, tag="b")
        gone = set(store.load(first).manifest.hashes)
        assert gone & _segment_hashes(store)
        store.erase(first)
        assert not gone & _segment_hashes(store)
        assert len(restore(store, second).conversation) == 9


def test_erase_drops_unreferenced_segments(tmp_path: Path) -> None:
    """Erasing the only session leaves no segment, loose body or body row behind."""
    with SQLiteStore(tmp_path / "z.db", segment_bodies=4) as store:
        session = _grow(store, 17)
        assert _count(store, "segments") == 4
        store.erase(session)
        assert [_count(store, t) for t in ("segments", "loose", "bodies")] == [0, 0, 0]


def test_fork_shares_segment_bodies_until_both_are_erased(tmp_path: Path) -> None:
    """A fork keeps reading bodies packed for its source after the source is erased."""
    with SQLiteStore(tmp_path / "f.db", segment_bodies=4) as store:
        session = _grow(store, 10)
        fork = store.fork(session, store.latest(session).id)
        store.erase(session)
        assert len(restore(store, fork.session_id).conversation) == 10
        store.erase(fork.session_id)
        assert _count(store, "segments") == 0


def test_version_one_file_is_upgraded(tmp_path: Path) -> None:
    """A file in the version-1 layout (bodies hold their bytes) opens, upgrades and restores."""
    path = tmp_path / "v1.db"
    with SQLiteStore(path, segment_bodies=1000) as store:
        session = _grow(store, 7)
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "BEGIN;"
        "DROP INDEX bodies_segment;"
        "ALTER TABLE bodies DROP COLUMN segment;"
        "ALTER TABLE bodies DROP COLUMN pos;"
        "ALTER TABLE bodies ADD COLUMN data BLOB NOT NULL DEFAULT x'';"
        "UPDATE bodies SET data = (SELECT data FROM loose WHERE loose.id = bodies.id);"
        "DROP TABLE loose; DROP TABLE segments;"
        "ALTER TABLE sessions DROP COLUMN head;"
        "UPDATE ctxflow_meta SET value = '1' WHERE key = 'schema';"
        "COMMIT;"
    )
    db.close()
    with SQLiteStore(path, segment_bodies=4) as store:
        assert list(restore(store, session).conversation) == [_turn(i) for i in range(7)]
        writer = Checkpointer(store, session)
        conversation = writer.restore().conversation
        conversation.append(_turn(7))
        writer.capture(conversation)
        assert [_count(store, "segments"), _count(store, "loose")] == [1, 0]
        assert len(restore(store, session).conversation) == 8
        row = store._db.execute("SELECT value FROM ctxflow_meta WHERE key = 'schema'").fetchone()
        assert row[0] == "3"


def test_version_two_file_is_upgraded_and_gets_a_head(tmp_path: Path) -> None:
    """A file of schema version 2 (no session heads) opens, restores, and gains a head."""
    path = tmp_path / "v2.db"
    with SQLiteStore(path, pack_checkpoints=4) as store:
        session = _grow(store, 30)
        expected = [
            list(restore(store, session, r.id).conversation) for r in store.checkpoints(session)
        ]
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "BEGIN; ALTER TABLE sessions DROP COLUMN head; DROP TABLE heads;"
        "UPDATE ctxflow_meta SET value = '2' WHERE key = 'schema'; COMMIT;"
    )
    db.close()
    with SQLiteStore(path, pack_checkpoints=4) as store:
        assert _heads(store) == [None]
        records = store.checkpoints(session)
        assert [list(restore(store, session, r.id).conversation) for r in records] == expected
        writer = Checkpointer(store, session, full_every=4)
        conversation = writer.restore().conversation
        for i in range(30, 40):
            conversation.append(_turn(i))
            writer.capture(conversation, state={"step": i})
        assert _heads(store) != [None]
        assert list(restore(store, session).conversation) == list(conversation)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file written by a newer schema raises StoreError instead of being misread."""
    path = tmp_path / "n.db"
    SQLiteStore(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE ctxflow_meta SET value = '99' WHERE key = 'schema'")
    db.close()
    with pytest.raises(StoreError, match="schema"):
        SQLiteStore(path)


def test_new_files_use_small_pages_and_old_files_keep_theirs(tmp_path: Path) -> None:
    """A new file gets the configured page size; reopening never changes an existing one."""
    with SQLiteStore(tmp_path / "a.db") as store:
        assert store._db.execute("PRAGMA page_size").fetchone()[0] == 1024
    with SQLiteStore(tmp_path / "b.db", page_size=4096) as store:
        _grow(store, 3)
    with SQLiteStore(tmp_path / "b.db") as store:
        assert store._db.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert len(store.checkpoints(store.sessions()[0])) == 3
    with pytest.raises(StoreError, match="page_size"):
        SQLiteStore(tmp_path / "c.db", page_size=1000)


@pytest.mark.parametrize("option", ["segment_bodies", "pack_checkpoints", "head_every"])
def test_bad_packing_sizes_are_refused(tmp_path: Path, option: str) -> None:
    """A segment, pack or head interval below one is refused before the file is opened."""
    with pytest.raises(StoreError, match=option):
        SQLiteStore(tmp_path / "x.db", **{option: 0})  # type: ignore[arg-type]
    assert not (tmp_path / "x.db").exists()


def test_packed_checkpoints_list_and_restore_as_before(tmp_path: Path) -> None:
    """Packing old checkpoint rows changes neither their records nor what they restore."""
    with SQLiteStore(tmp_path / "k.db", pack_checkpoints=1000) as plain:
        _grow(plain, 25, session="s")
        expected = plain.checkpoints("s")
        conversations = [list(restore(plain, "s", r.id).conversation) for r in expected]
    with SQLiteStore(tmp_path / "k.db", pack_checkpoints=4) as store:
        writer = Checkpointer(store, "s")
        conversation = writer.restore().conversation
        conversation.append(_turn(25))
        writer.capture(conversation, state={"step": 25})
        assert _count(store, "packs") >= 1
        assert _count(store, "checkpoints") < 8
        records = store.checkpoints("s")
        assert records[:25] == expected
        latest = store.load("s")
        assert latest.record == records[-1]
        assert latest.manifest == store.load("s", records[-1].id).manifest
        for record, messages in zip(records, conversations, strict=False):
            assert list(restore(store, "s", record.id).conversation) == messages


def test_packed_id_counts_as_stored(tmp_path: Path) -> None:
    """A checkpoint id that now lives in a pack is still refused as a duplicate."""
    with SQLiteStore(tmp_path / "i.db", pack_checkpoints=2) as store:
        session = _grow(store, 9)
        first = store.checkpoints(session)[0]
        assert not store._db.execute(
            "SELECT 1 FROM checkpoints WHERE id = ?", (first.id,)
        ).fetchone()
        draft = CheckpointDraft(
            id=first.id,
            session_id="other",
            parent_id=None,
            created_at=0.0,
            manifest={"kind": "full", "hashes": [], "tags": {}, "overlays": {}},
            tokens=0,
            message_count=0,
        )
        with pytest.raises(CheckpointError, match="already stored"):
            store.put(draft, expected_parent=None)


def test_prune_rewrites_a_packed_delta_in_full(tmp_path: Path) -> None:
    """Pruning into the middle of a pack rewrites the first kept delta in full, in the pack."""
    with SQLiteStore(tmp_path / "q.db", pack_checkpoints=4, segment_bodies=3) as store:
        session = _grow(store, 30)
        records = store.checkpoints(session)
        store.prune(session, keep_last=26)
        kept = store.checkpoints(session)
        assert kept[1:] == records[5:]
        assert kept[0].full and kept[0].id == records[4].id
        for record in kept:
            assert len(restore(store, session, record.id).conversation) == record.message_count
        store.prune(session, keep_last=1)
        assert [_count(store, t) for t in ("packs", "packed_ids")] == [0, 0]
        assert len(restore(store, session).conversation) == 30


def _stored_entries(store: SQLiteStore) -> list[list[object]]:
    rows = store._db.execute("SELECT data FROM packs ORDER BY last_seq").fetchall()
    return [e for (data,) in rows for e in store.codec.decode(bytes(data))]


def test_packed_full_manifests_are_deltas_of_earlier_ones(tmp_path: Path) -> None:
    """Packed full manifests are stored against the previous full one and restore exactly."""
    with SQLiteStore(tmp_path / "g.db", pack_checkpoints=4) as store:
        conversation = _session(store, 40, full_every=2)
        stamps = [e[11] for e in _stored_entries(store) if e[3]]
        assert any(stamps) and not stamps[0]
        assert max(stamp[1] for stamp in stamps if stamp) <= 8
        for record in store.checkpoints("s"):
            got = restore(store, "s", record.id).conversation
            assert list(got) == list(conversation)[: record.message_count]
        store.prune("s", keep_last=17)
        assert not _stored_entries(store)[0][11]
        for record in store.checkpoints("s"):
            got = restore(store, "s", record.id).conversation
            assert list(got) == list(conversation)[: record.message_count]


def test_packed_full_without_its_base_gives_corrupt_checkpoint(tmp_path: Path) -> None:
    """A packed full manifest whose base pack is gone gives CorruptCheckpoint when expanded."""
    with SQLiteStore(tmp_path / "h.db", pack_checkpoints=4) as store:
        _session(store, 30, full_every=2)
        records = store.checkpoints("s")
        with store._transaction(write=True):
            first = store._db.execute("SELECT min(last_seq) FROM packs").fetchone()[0]
            store._db.execute("DELETE FROM packs WHERE last_seq = ?", (first,))
        failures = []
        for record in records[first:]:
            try:
                restore(store, "s", record.id)
            except CorruptCheckpoint as exc:
                failures.append(exc.rule)
        assert "pack" in failures


def test_damaged_pack_gives_corrupt_checkpoint(tmp_path: Path) -> None:
    """Changed bytes in a checkpoint pack give CorruptCheckpoint when the session is read."""
    with SQLiteStore(tmp_path / "b.db", pack_checkpoints=2) as store:
        session = _grow(store, 6)
        with store._transaction(write=True):
            key, last, data = store._db.execute(
                "SELECT session, last_seq, data FROM packs"
            ).fetchone()
            damaged = bytearray(data)
            damaged[-2] ^= 0xFF
            store._db.execute(
                "UPDATE packs SET data = ? WHERE session = ? AND last_seq = ?",
                (bytes(damaged), key, last),
            )
        with pytest.raises(CorruptCheckpoint, match="checksum"):
            store.checkpoints(session)


def test_erase_drops_packs(tmp_path: Path) -> None:
    """Erasing a session removes its packs and packed ids along with its rows."""
    with SQLiteStore(tmp_path / "x.db", pack_checkpoints=2) as store:
        session = _grow(store, 11)
        store.erase(session)
        tables = ("packs", "packed_ids", "checkpoints", "sessions")
        assert [_count(store, t) for t in tables] == [0, 0, 0, 0]


@settings(max_examples=25, deadline=None)
@given(
    steps=st.lists(st.sampled_from(["grow", "grow", "prune", "fork_erase"]), max_size=25),
    size=st.integers(min_value=1, max_value=5),
)
def test_latest_always_restores(
    tmp_path_factory: pytest.TempPathFactory, steps: list[str], size: int
) -> None:
    """Under any mix of captures, prunes and erased forks, every kept checkpoint restores."""
    path = tmp_path_factory.mktemp("prop") / "h.db"
    with SQLiteStore(
        path, segment_bodies=size, pack_checkpoints=size, head_every=size + 1
    ) as store:
        writer = Checkpointer(store, full_every=3)
        conversation = Conversation()
        for step in steps:
            if step == "grow" or not len(conversation):
                conversation.append(_turn(len(conversation)))
                writer.capture(conversation)
            elif step == "prune":
                store.prune(writer.session_id, keep_last=2)
            else:
                fork = store.fork(writer.session_id, store.latest(writer.session_id).id)
                store.erase(fork.session_id)
        if len(conversation):
            assert list(restore(store, writer.session_id).conversation) == list(conversation)
            for record in store.checkpoints(writer.session_id):
                got = restore(store, writer.session_id, record.id).conversation
                assert list(got) == list(conversation)[: record.message_count]
        referenced = _segment_hashes(store)
        rows = {
            r[0] for r in store._db.execute("SELECT hash FROM bodies WHERE segment IS NOT NULL")
        }
        assert referenced == rows


@pytest.mark.parametrize("full_ratio", [0.0, 1.0])
@pytest.mark.parametrize(("head", "every"), [(True, 1000), (True, 2), (True, 7), (False, 1000)])
def test_latest_load_matches_load_by_id(
    tmp_path: Path, full_ratio: float, head: bool, every: int
) -> None:
    """After every capture the latest loads as it does by id: from a plain full, the head
    (moved at packs, and every few checkpoints) or the packs (the head emptied, as
    retention leaves it)."""
    with SQLiteStore(
        tmp_path / "l.db", pack_checkpoints=3, segment_bodies=4, head_every=every
    ) as store:
        writer = Checkpointer(store, "s", full_every=5, full_ratio=full_ratio)
        conversation = Conversation()
        packed_start = 0
        for i in range(60):
            conversation.append(_turn(i))
            writer.capture(conversation, state={"step": i})
            if not head:
                with store._transaction(write=True):
                    store._db.execute("DELETE FROM heads")
            latest, by_id = store.load("s"), store.load("s", store.latest("s").id)
            assert (latest.record, latest.manifest, latest.depth) == (
                by_id.record,
                by_id.manifest,
                by_id.depth,
            )
            assert latest.bodies == by_id.bodies
            plain_fulls = store._db.execute("SELECT count(*) FROM checkpoints WHERE full = 1")
            packed_start += plain_fulls.fetchone()[0] == 0
            assert (_heads(store) != [None]) == (head and i >= min(5, every - 1))
        assert packed_start > 5


def test_latest_with_a_lost_base_pack_gives_corrupt_checkpoint(tmp_path: Path) -> None:
    """The latest checkpoint whose packed full manifest lost its base gives CorruptCheckpoint."""
    with SQLiteStore(tmp_path / "m.db", pack_checkpoints=4) as store:
        _packed_session(store)
        assert len(restore(store, "s").conversation) == 36
        with store._transaction(write=True):
            store._db.execute(
                "DELETE FROM packs WHERE last_seq = (SELECT min(last_seq) FROM packs)"
            )
            store._db.execute("DELETE FROM heads")
        with pytest.raises(CorruptCheckpoint) as info:
            store.load("s")
        assert info.value.rule == "pack"


def _heads(store: SQLiteStore) -> list[object]:
    """Each session's head (None: it has none), in session order."""
    return [
        r[0]
        for r in store._db.execute(
            "SELECT h.head FROM sessions s LEFT JOIN heads h ON h.session = s.id ORDER BY s.id"
        )
    ]


def _session(store: SQLiteStore, steps: int, *, full_every: int) -> Conversation:
    """Session "s": ``steps`` turns, a checkpoint after each, a full one every ``full_every``."""
    writer = Checkpointer(store, "s", full_every=full_every, full_ratio=0)
    conversation = Conversation()
    for i in range(steps):
        conversation.append(_turn(i))
        writer.capture(conversation, state={"step": i})
    return conversation


def _packed_session(store: SQLiteStore, steps: int = 36) -> Conversation:
    """A session "s" whose latest chain has no plain full row (fulls every 6, packs of 4)."""
    conversation = _session(store, steps, full_every=6)
    assert _count(store, "checkpoints WHERE full = 1") == 0
    return conversation


def test_latest_starts_at_the_head_without_the_packs(tmp_path: Path) -> None:
    """The latest checkpoint loads from the session head and plain rows, packs unread."""
    with SQLiteStore(tmp_path / "h.db", pack_checkpoints=4) as store:
        conversation = _packed_session(store)
        assert _heads(store) != [None]
        expected = store.load("s")
        with store._transaction(write=True):
            store._db.execute("DELETE FROM packs")
        latest = store.load("s")
        assert (latest.manifest, latest.depth, latest.bodies) == (
            expected.manifest,
            expected.depth,
            expected.bodies,
        )
        assert list(restore(store, "s").conversation) == list(conversation)


@pytest.mark.parametrize(
    ("head", "rule"),
    [
        (b"CXFL garbage", "truncated"),
        ([0, 0, "not a manifest"], "head"),
        ([0, "deep", {"hashes": []}], "head"),
        ([0, 0, {"hashes": [10**9]}], "head"),
    ],
)
def test_damaged_head_is_passed_over(tmp_path: Path, head: object, rule: str) -> None:
    """A damaged session head, or one naming bodies the session lacks, is passed over and
    logged with its rule: the latest loads as it does by id, and the next write replaces it."""
    with SQLiteStore(tmp_path / "d.db", pack_checkpoints=4) as store:
        conversation = _packed_session(store)
        seq = store.codec.decode(_heads(store)[0])[0]  # type: ignore[arg-type]
        if isinstance(head, list):
            head = store.codec.encode([seq, *head[1:]])
        with store._transaction(write=True):
            store._db.execute("UPDATE heads SET head = ?", (head,))
        with capture_events(logging.WARNING) as events:
            latest = store.load("s")
        assert [e["rule"] for e in events if e["event"] == "damaged_head"] == [rule]
        by_id = store.load("s", store.latest("s").id)
        assert (latest.manifest, latest.bodies) == (by_id.manifest, by_id.bodies)
        assert len(restore(store, "s", store.latest("s").id).conversation) == 36
        writer = Checkpointer(store, "s")
        writer.restore()
        for i in range(36, 36 + 2 * HEAD_EVERY):
            conversation.append(_turn(i))
            writer.capture(conversation)
        assert store.codec.decode(_heads(store)[0])[0] > seq  # type: ignore[arg-type]
        assert list(restore(store, "s").conversation) == list(conversation)


def test_a_move_past_a_full_manifest_starts_there_without_reading_the_head(
    tmp_path: Path,
) -> None:
    """A full manifest written since the head is where the moved head starts: the head
    itself is not read (a damaged one is not even logged), and the new head is right."""
    with SQLiteStore(tmp_path / "m.db", pack_checkpoints=1000) as store:
        writer = Checkpointer(store, "s", full_every=HEAD_EVERY // 2, full_ratio=0)
        conversation = Conversation()
        for i in range(HEAD_EVERY):
            conversation.append(_turn(i))
            writer.capture(conversation, state={"step": i})
        seq = store.codec.decode(_heads(store)[0])[0]  # type: ignore[arg-type]
        with store._transaction(write=True):
            store._db.execute("UPDATE heads SET head = ?", (b"CXFL garbage",))
        with capture_events(logging.WARNING) as events:
            for i in range(HEAD_EVERY, 2 * HEAD_EVERY):
                conversation.append(_turn(i))
                writer.capture(conversation, state={"step": i})
        assert _count(store, f"checkpoints WHERE full = 1 AND seq > {seq}") >= 1
        assert [e for e in events if e["event"] == "damaged_head"] == []
        assert store.codec.decode(_heads(store)[0])[0] > seq  # type: ignore[arg-type]
        latest = store.load("s")
        assert latest.manifest == store.load("s", store.latest("s").id).manifest
        assert list(restore(store, "s").conversation) == list(conversation)


def test_retention_empties_the_head(tmp_path: Path) -> None:
    """Pruning empties the session head; the latest still loads as it does by id."""
    with SQLiteStore(tmp_path / "r.db", pack_checkpoints=4) as store:
        session = _grow(store, 40)
        assert _heads(store) != [None]
        store.prune(session, keep_last=10)
        assert _heads(store) == [None]
        latest = store.load(session)
        assert latest.manifest == store.load(session, store.latest(session).id).manifest


class _Version1Lz4(Lz4Layer):
    """The lz4 layer as format version 1 wrote it: every body one frame."""

    def wrap(self, data: bytes) -> bytes:
        """One lz4 frame, however small the body."""
        return bytes(lz4.frame.compress(data, compression_level=self.level, store_size=True))


def test_format_version_one_file_loads_and_grows(tmp_path: Path) -> None:
    """A file written in format version 1 restores every checkpoint and takes new ones."""
    path = tmp_path / "v1.db"
    old = EnvelopeCodec((_Version1Lz4(level=3),), version=1)
    with SQLiteStore(path, codec=old, pack_checkpoints=4, segment_bodies=3) as store:
        session = _grow(store, 20)
        expected = [
            list(restore(store, session, r.id).conversation) for r in store.checkpoints(session)
        ]
        stored = [bytes(r[0]) for r in store._db.execute("SELECT manifest FROM checkpoints")]
        assert {data[4:6] for data in stored} == {b"\x00\x01"}
    with SQLiteStore(path, pack_checkpoints=4, segment_bodies=3) as store:
        records = store.checkpoints(session)
        got = [list(restore(store, session, r.id).conversation) for r in records]
        assert got == expected
        writer = Checkpointer(store, session)
        conversation = writer.restore().conversation
        conversation.append(_turn(20))
        writer.capture(conversation)
        assert list(restore(store, session).conversation) == [*expected[-1], _turn(20)]
        store.prune(session, keep_last=3)
        assert len(restore(store, session).conversation) == 21


def test_head_moves_without_packs(tmp_path: Path) -> None:
    """Without any pack, the head still moves every few checkpoints and the latest matches."""
    with SQLiteStore(tmp_path / "n.db", pack_checkpoints=1000, head_every=5) as store:
        conversation = Conversation()
        writer = Checkpointer(store, "s", full_every=1000, full_ratio=0)
        for i in range(23):
            conversation.append(_turn(i))
            writer.capture(conversation, state={"step": i})
        seq, depth, _ = store.codec.decode(_heads(store)[0])  # type: ignore[arg-type]
        assert (seq, depth, _count(store, "packs")) == (20, 19, 0)
        latest = store.load("s")
        assert latest.depth == 22
        assert latest.manifest == store.load("s", store.latest("s").id).manifest
