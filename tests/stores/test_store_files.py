"""Whose file a SQLite store opens: foreign files refused untouched, read-only mode, the mark."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctxflow.errors import CheckpointNotFound, StoreError
from ctxflow.model import Conversation, Message
from ctxflow.persistence import Checkpointer, restore
from ctxflow.persistence._sqlite.schema import APPLICATION_ID
from ctxflow.stores import SQLiteStore


def _turn(i: int) -> Message:
    role = Message.user if i % 2 == 0 else Message.assistant
    return role(f"turn {i}", id=f"m{i}")


def _write(store: SQLiteStore, session: str, steps: int) -> Conversation:
    writer = Checkpointer(store, session)
    conversation = Conversation()
    for i in range(steps):
        conversation.append(_turn(i))
        writer.capture(conversation)
    return conversation


def _state(folder: Path) -> dict[str, str]:
    """Every file of a folder and the hash of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def _unchanged(path: Path, before: dict[str, str]) -> bool:
    """True when the store file's bytes are as ``before`` and no WAL content appeared (a
    reader of a WAL database may leave SQLite's empty side files where it can write)."""
    after = _state(path.parent)
    wal = path.with_name(path.name + "-wal")
    return after[path.name] == before[path.name] and (not wal.exists() or wal.stat().st_size == 0)


def _foreign(path: Path, *, sessions: bool = False, application_id: int = 0) -> None:
    """Another application's SQLite file (rollback journal, its own tables)."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.execute("INSERT INTO notes (text) VALUES ('keep me')")
    if sessions:
        db.execute("CREATE TABLE sessions (user TEXT, started REAL)")
    if application_id:
        db.execute(f"PRAGMA application_id = {application_id}")
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("kwargs", "read_only"),
    [({}, False), ({"sessions": True}, False), ({"application_id": 7}, False), ({}, True)],
)
def test_foreign_file_is_refused_untouched(
    tmp_path: Path, kwargs: dict[str, int], read_only: bool
) -> None:
    """Another application's SQLite file raises StoreError and is left byte for byte as it
    was: no tables added, no WAL switch, no journal files beside it."""
    path = tmp_path / "app.db"
    _foreign(path, **kwargs)  # type: ignore[arg-type]
    before = _state(tmp_path)
    with pytest.raises(StoreError) as info:
        SQLiteStore(path, read_only=read_only)
    assert info.value.rule == "foreign_file"
    assert str(path) in str(info.value)
    assert _state(tmp_path) == before


def test_empty_file_is_initialised(tmp_path: Path) -> None:
    """An empty file, or a database without tables, becomes a marked ctxflow store."""
    empty, blank = tmp_path / "empty.db", tmp_path / "blank.db"
    empty.touch()
    sqlite3.connect(blank).close()
    for path in (empty, blank):
        with SQLiteStore(path) as store:
            conversation = _write(store, "s", 3)
            assert list(restore(store, "s").conversation) == list(conversation)
            assert store._db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_unmarked_store_is_ours_and_marked_on_first_write(tmp_path: Path) -> None:
    """A ctxflow store without the mark (as 0.1.0 wrote them) opens, stays unmarked while
    only read, and is marked by its first write."""
    path = tmp_path / "old.db"
    with SQLiteStore(path) as store:
        _write(store, "s", 3)
        with store._transaction(write=True):
            store._db.execute("PRAGMA application_id = 0")
            store._db.execute("ALTER TABLE sessions DROP COLUMN latest")
            store._db.execute("ALTER TABLE sessions DROP COLUMN latest_seq")
    with SQLiteStore(path) as store:
        assert len(restore(store, "s").conversation) == 3
        assert store._db.execute("PRAGMA application_id").fetchone()[0] == 0
        writer = Checkpointer(store, "s")
        conversation = writer.restore().conversation
        conversation.append(_turn(3))
        writer.capture(conversation)
        assert store._db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    with SQLiteStore(path) as store:
        assert list(restore(store, "s").conversation) == list(conversation)


@pytest.fixture
def written(tmp_path: Path) -> Iterator[tuple[Path, Conversation]]:
    """A store file of one session, its folder and file then made read-only."""
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "s.db"
    with SQLiteStore(path) as store:
        conversation = _write(store, "s", 5)
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    yield path, conversation
    folder.chmod(stat.S_IRWXU)
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_read_only_store_reads_and_changes_nothing(
    written: tuple[Path, Conversation],
) -> None:
    """A read-only store lists and restores a read-only file in a read-only folder, and
    leaves every byte and file as it was."""
    path, conversation = written
    before = _state(path.parent)
    with SQLiteStore(path, read_only=True) as store:
        assert store.sessions() == ["s"]
        assert len(store.checkpoints("s")) == 5
        assert list(restore(store, "s").conversation) == list(conversation)
    assert _unchanged(path, before)


@pytest.mark.parametrize(
    "write",
    [
        lambda s: _write(s, "t", 1),
        lambda s: s.fork("s", s.latest("s").id),
        lambda s: s.prune("s", keep_last=1),
        lambda s: s.erase("s"),
        lambda s: s.checkpoint_wal(),
    ],
    ids=["put", "fork", "prune", "erase", "wal"],
)
def test_read_only_store_refuses_writes(tmp_path: Path, write: object) -> None:
    """Every write to a read-only store raises StoreError (read_only) and changes nothing."""
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        _write(store, "s", 4)
    before = _state(tmp_path)
    with SQLiteStore(path, read_only=True) as store:
        with pytest.raises(StoreError) as info:
            write(store)  # type: ignore[operator]
        assert info.value.rule == "read_only"
        assert len(store.checkpoints("s")) == 4
    assert _unchanged(path, before)


def test_read_only_missing_file_is_not_created(tmp_path: Path) -> None:
    """A read-only store of a missing or empty file raises StoreError and creates nothing."""
    path = tmp_path / "none.db"
    with pytest.raises(StoreError, match="missing") as info:
        SQLiteStore(path, read_only=True)
    assert info.value.rule == "no_store"
    assert list(tmp_path.iterdir()) == []
    path.touch()
    with pytest.raises(StoreError, match="empty"):
        SQLiteStore(path, read_only=True)
    assert [p.name for p in tmp_path.iterdir()] == ["none.db"]
    assert path.stat().st_size == 0


def test_read_only_store_does_not_upgrade(tmp_path: Path) -> None:
    """A read-only store of an older schema refuses (naming the upgrade), and writes nothing."""
    path = tmp_path / "v2.db"
    with SQLiteStore(path) as store:
        _write(store, "s", 2)
        with store._transaction(write=True):
            store._db.execute("UPDATE ctxflow_meta SET value = '2' WHERE key = 'schema'")
    before = _state(tmp_path)
    with pytest.raises(StoreError, match="writable upgrades it"):
        SQLiteStore(path, read_only=True)
    assert _unchanged(path, before)


def test_read_only_store_sees_another_writer(tmp_path: Path) -> None:
    """A read-only store reads checkpoints another connection wrote since it opened."""
    path = tmp_path / "live.db"
    with SQLiteStore(path) as writer_store:
        _write(writer_store, "s", 2)
        with SQLiteStore(path, read_only=True) as reader:
            assert len(reader.checkpoints("s")) == 2
            _write(writer_store, "t", 3)
            assert reader.sessions() == ["s", "t"]
            with pytest.raises(CheckpointNotFound):
                reader.load("u")


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_read_only_folder_is_read_as_immutable(written: tuple[Path, Conversation]) -> None:
    """Where permissions bind, SQLite cannot make its WAL side files in a read-only folder:
    the read-only store reads the file as immutable, creating nothing; a writable store fails."""
    path, conversation = written
    with SQLiteStore(path, read_only=True) as store:
        assert list(restore(store, "s").conversation) == list(conversation)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    with pytest.raises(StoreError):
        SQLiteStore(path)
