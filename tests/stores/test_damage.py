"""Damaged stores: typed errors naming the checkpoint, and every other checkpoint still usable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ctxflow.errors import CheckpointNotFound, CorruptCheckpoint
from ctxflow.model import Conversation, Message
from ctxflow.persistence import BaseStore, Checkpointer, CheckpointRecord, MemoryStore, restore
from ctxflow.stores import PostgresStore, SQLiteStore


def _turn(i: int, tag: str = "") -> Message:
    role = Message.user if i % 2 == 0 else Message.assistant
    return role(f"{tag}turn {i} " + "words " * (i % 5), id=f"{tag}m{i}")


def _write(store: BaseStore, session: str, steps: int, *, tag: str = "") -> Conversation:
    """Session ``session``: one message and one checkpoint per step."""
    writer = Checkpointer(store, session, full_every=4)
    conversation = Conversation()
    for i in range(steps):
        conversation.append(_turn(i, tag))
        writer.capture(conversation, state={"step": i})
    return conversation


def _flip(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[-2] ^= 0x01
    return bytes(damaged)


def _flip_every_body(store: BaseStore) -> None:
    """Flip one bit of every stored body (loose rows and segments alike)."""
    if isinstance(store, MemoryStore):
        store._blobs = {h: _flip(b) for h, b in store._blobs.items()}
        return
    if isinstance(store, PostgresStore):
        with store.pool.connection() as conn:
            rows = conn.execute("SELECT hash, data FROM bodies").fetchall()
            with conn.cursor() as cursor:
                cursor.executemany(
                    "UPDATE bodies SET data = %s WHERE hash = %s",
                    [(_flip(bytes(data)), key) for key, data in rows],
                )
        return
    assert isinstance(store, SQLiteStore)
    with store._transaction(write=True):
        for table in ("loose", "segments"):
            rows = store._db.execute(f"SELECT id, data FROM {table}").fetchall()
            store._db.executemany(
                f"UPDATE {table} SET data = ? WHERE id = ?",
                [(_flip(bytes(data)), key) for key, data in rows],
            )


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaseStore]:
    """An in-memory store, a SQLite store that packs small segments, and a PostgreSQL store
    in a schema of its own."""
    made: BaseStore
    if request.param == "memory":
        made = MemoryStore()
    elif request.param == "sqlite":
        made = SQLiteStore(tmp_path / "d.db", segment_bodies=8, pack_checkpoints=4)
    else:
        url, schema = request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema")
        made = PostgresStore.from_url(url, schema=schema, max_size=2)
    yield made
    made.close()


def _sqlite(store: BaseStore) -> SQLiteStore:
    if not isinstance(store, SQLiteStore):
        pytest.skip("the damage is to SQLite rows")
    return store


# -- bodies -------------------------------------------------------------------


def test_damaged_bodies_are_written_again_not_reused(store: BaseStore) -> None:
    """A put carrying a body the store holds damaged writes it again, so the new session
    restores (and the old one, sharing the body, is mended)."""
    first = _write(store, "first", 20)
    _flip_every_body(store)
    with pytest.raises(CorruptCheckpoint) as info:
        restore(store, "first")
    assert store.latest("first").id in str(info.value)
    second = _write(store, "second", 20)
    assert list(restore(store, "second").conversation) == list(second)
    for record in store.checkpoints("second"):
        assert len(restore(store, "second", record.id).conversation) == record.message_count
    assert list(restore(store, "first").conversation) == list(first)


def test_intact_bodies_are_reused(store: BaseStore) -> None:
    """A put carrying bodies the store holds intact adds only its manifest record."""
    _write(store, "first", 12)
    writer = Checkpointer(store, "second")
    record = writer.capture(Conversation([_turn(i) for i in range(12)]))
    with store._transaction(write=False):
        manifest = store._manifests([record.id])[0]
    assert record.size == len(store.codec.encode(manifest))


def test_swapped_segment_places_give_corrupt_checkpoint(tmp_path: Path) -> None:
    """A body row pointing at another body of its segment raises CorruptCheckpoint naming
    the checkpoint, never restores another session's message."""
    with SQLiteStore(tmp_path / "p.db", segment_bodies=32) as store:
        writer = {name: Checkpointer(store, name) for name in ("alice", "bob")}
        talks = {name: Conversation() for name in writer}
        for i in range(20):
            for name in writer:
                talks[name].append(_turn(i, name))
                writer[name].capture(talks[name])
        assert store._db.execute("SELECT count(*) FROM segments").fetchone()[0] == 1
        first = store.load("alice").manifest.hashes[0]
        with store._transaction(write=True):
            store._db.execute(
                "UPDATE bodies SET pos = (pos | 1) - (pos & 1) WHERE hash = ?", (first,)
            )
        with pytest.raises(CorruptCheckpoint) as info:
            restore(store, "alice")
        assert info.value.rule == "body_hash"
        assert store.latest("alice").id in str(info.value)
        assert list(restore(store, "bob").conversation) == list(talks["bob"])


def test_swapped_loose_rows_give_corrupt_checkpoint(tmp_path: Path) -> None:
    """Two loose bodies whose bytes changed places raise CorruptCheckpoint (body_hash)."""
    with SQLiteStore(tmp_path / "l.db") as store:
        _write(store, "alice", 3, tag="a")
        _write(store, "bob", 3, tag="b")
        mine, theirs = (store.load(s).manifest.hashes[-1] for s in ("alice", "bob"))
        with store._transaction(write=True):
            rows = {
                h: store._db.execute(
                    "SELECT l.id, l.data FROM loose l JOIN bodies b ON b.id = l.id "
                    "WHERE b.hash = ?",
                    (h,),
                ).fetchone()
                for h in (mine, theirs)
            }
            store._db.execute(
                "UPDATE loose SET data = ? WHERE id = ?", (rows[theirs][1], rows[mine][0])
            )
        with pytest.raises(CorruptCheckpoint) as info:
            restore(store, "alice")
        assert info.value.rule == "body_hash"
        assert len(restore(store, "alice", store.checkpoints("alice")[-2].id).conversation) == 2


def test_segments_without_digests_are_checked_by_hashing(tmp_path: Path) -> None:
    """A segment written without its digests (as 0.1.0 wrote them) still has every body
    checked: a swapped place raises CorruptCheckpoint."""
    with SQLiteStore(tmp_path / "o.db", segment_bodies=8) as store:
        conversation = _write(store, "alice", 10)
        with store._transaction(write=True):
            for key, data in store._db.execute("SELECT id, data FROM segments").fetchall():
                bodies = store.codec.decode(bytes(data))[:-1]
                store._db.execute(
                    "UPDATE segments SET data = ? WHERE id = ?", (store.codec.encode(bodies), key)
                )
        assert list(restore(store, "alice").conversation) == list(conversation)
        with store._transaction(write=True):
            store._db.execute("UPDATE bodies SET pos = 7 - pos WHERE segment IS NOT NULL")
        with pytest.raises(CorruptCheckpoint) as info:
            restore(store, "alice")
        assert info.value.rule == "body_hash"


# -- rows of another session ------------------------------------------------------


@pytest.mark.parametrize("target", ["other", "missing"])
def test_checkpoint_row_moved_to_another_session(tmp_path: Path, target: str) -> None:
    """A checkpoint row whose session changed makes its session's latest and the session it
    landed in raise CorruptCheckpoint naming it; their earlier checkpoints still restore."""
    with SQLiteStore(tmp_path / "m.db") as store:
        alice = _write(store, "alice", 5, tag="a")
        _write(store, "bob", 3, tag="b")
        moved = store.latest("alice")
        with store._transaction(write=True):
            store._db.execute(
                "UPDATE checkpoints SET session = ? WHERE id = ?",
                (2 if target == "other" else 99, moved.id),
            )
        with pytest.raises(CorruptCheckpoint) as info:
            restore(store, "alice")
        assert info.value.rule == "missing_latest"
        assert moved.id in str(info.value)
        for record in store.checkpoints("alice"):
            got = restore(store, "alice", record.id).conversation
            assert list(got) == list(alice)[: record.message_count]
        if target == "other":
            with pytest.raises(CorruptCheckpoint) as info:
                restore(store, "bob")
            assert info.value.rule == "chain"
            assert moved.id in str(info.value)
        for record in store.checkpoints("bob")[:3]:
            assert len(restore(store, "bob", record.id).conversation) == record.message_count


def test_a_recorded_earlier_latest_is_no_damage(tmp_path: Path) -> None:
    """A session row recording an earlier latest checkpoint than it holds (as after writes
    and retention by a version that does not record it) restores; a later one is refused."""
    with SQLiteStore(tmp_path / "v.db") as store:
        conversation = _write(store, "s", 5)
        with store._transaction(write=True):
            store._db.execute("UPDATE sessions SET latest = 'ckp_pruned', latest_seq = 2")
        assert list(restore(store, "s").conversation) == list(conversation)
        with store._transaction(write=True):
            store._db.execute("UPDATE sessions SET latest = 'ckp_lost', latest_seq = 6")
        with pytest.raises(CorruptCheckpoint, match="ckp_lost") as info:
            restore(store, "s")
        assert info.value.rule == "missing_latest"


# -- packs, segments, heads and erasure ---------------------------------------------


def _failures(
    store: SQLiteStore, session: str, messages: list[Message], records: list[CheckpointRecord]
) -> dict[str, str]:
    """Restore checkpoints of a session by id: the error text of each that fails
    (CorruptCheckpoint only); each that restores must hold its prefix of ``messages``."""
    failed = {}
    for record in records:
        try:
            got = restore(store, session, record.id).conversation
        except CorruptCheckpoint as exc:
            failed[record.id] = str(exc)
            continue
        assert list(got) == messages[: record.message_count]
    return failed


def _damage_pack(store: SQLiteStore, which: str) -> list[str]:
    """Flip a bit of the oldest or newest pack; the ids of the checkpoints it held."""
    order = "ASC" if which == "oldest" else "DESC"
    with store._transaction(write=True):
        session, last, data = store._db.execute(
            f"SELECT session, last_seq, data FROM packs ORDER BY last_seq {order} LIMIT 1"
        ).fetchone()
        held = [e[0] for e in store._packs._decode(session, last, bytes(data))]
        store._db.execute(
            "UPDATE packs SET data = ? WHERE session = ? AND last_seq = ?",
            (_flip(bytes(data)), session, last),
        )
    return held


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_damaged_pack_leaves_other_checkpoints_loadable(tmp_path: Path, which: str) -> None:
    """A damaged pack fails only the checkpoints whose chain runs through it (naming them);
    older ones, the latest and erasure still work."""
    with SQLiteStore(tmp_path / "k.db", pack_checkpoints=4) as store:
        conversation = _write(store, "s", 40)
        records = store.checkpoints("s")
        held = set(_damage_pack(store, which))
        failed = _failures(store, "s", list(conversation), records)
        assert all(checkpoint_id in text for checkpoint_id, text in failed.items())
        assert held <= failed.keys()
        first = min(i for i, r in enumerate(records) if r.id in held)
        assert not failed.keys() & {r.id for r in records[:first]}
        assert list(restore(store, "s").conversation) == list(conversation)
        store.erase("s")
        assert store.sessions() == []
        with pytest.raises(CheckpointNotFound):
            store.load("s")


def test_missing_pack_index_rows_give_corrupt_checkpoint(tmp_path: Path) -> None:
    """A packed checkpoint whose index row is lost raises CorruptCheckpoint naming it."""
    with SQLiteStore(tmp_path / "i.db", pack_checkpoints=4) as store:
        _write(store, "s", 30)
        packed = store.checkpoints("s")[2]
        with store._transaction(write=True):
            store._db.execute("DELETE FROM packed_ids")
        with pytest.raises(CorruptCheckpoint) as info:
            store.load("s", packed.id)
        assert packed.id in str(info.value)


def test_damaged_shared_segment_does_not_block_erasure(tmp_path: Path) -> None:
    """Erasing a session whose bodies share a damaged segment succeeds and drops the
    segment (no erased text lingers); every checkpoint of the other session still raises
    typed errors or restores."""
    with SQLiteStore(tmp_path / "e.db", segment_bodies=6) as store:
        writer = {name: Checkpointer(store, name) for name in ("alice", "bob")}
        talks = {name: Conversation() for name in writer}
        for i in range(9):
            for name in writer:
                talks[name].append(_turn(i, name))
                writer[name].capture(talks[name])
        with store._transaction(write=True):
            key, data = store._db.execute("SELECT id, data FROM segments LIMIT 1").fetchone()
            store._db.execute("UPDATE segments SET data = ? WHERE id = ?", (_flip(data), key))
        store.erase("bob")
        assert store.sessions() == ["alice"]
        assert _count(store, f"segments WHERE id = {key}") == 0
        with pytest.raises(CorruptCheckpoint) as info:
            restore(store, "alice")
        assert store.latest("alice").id in str(info.value)
        failed = _failures(store, "alice", list(talks["alice"]), store.checkpoints("alice"))
        assert all(checkpoint_id in text for checkpoint_id, text in failed.items())
        store.erase("alice")
        assert [_count(store, t) for t in ("segments", "bodies", "loose", "sessions")] == [
            0,
            0,
            0,
            0,
        ]


def _count(store: SQLiteStore, table: str) -> int:
    return int(store._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_damaged_body_row_does_not_block_erasure(tmp_path: Path) -> None:
    """A body row whose segment is no number does not block erasing its session."""
    with SQLiteStore(tmp_path / "r.db", segment_bodies=4) as store:
        _write(store, "s", 10)
        with store._transaction(write=True):
            store._db.execute("UPDATE bodies SET segment = 'x' WHERE segment IS NOT NULL")
        store.erase("s")
        assert store.sessions() == []
