"""The SQLite store under real failures: killed writers, damaged files, concurrent writers."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ctxflow.errors import CheckpointNotFound, CorruptCheckpoint, StaleCheckpoint, StoreError
from ctxflow.model import Conversation, Message
from ctxflow.persistence import Checkpointer, default_codec, restore
from ctxflow.stores import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import sys
from ctxflow.persistence import Checkpointer, default_codec
from ctxflow.errors import CheckpointNotFound, StaleCheckpoint
from ctxflow.model import Conversation, Message
from ctxflow.stores import SQLiteStore

path, session, name, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = SQLiteStore(path)
writer = Checkpointer(store, session, full_every=8)
written = 0
while written < limit:
    try:
        conversation = writer.restore().conversation
    except CheckpointNotFound:
        conversation = Conversation()
    i = len(conversation)
    role = Message.user if i % 2 == 0 else Message.assistant
    conversation.append(role(f"turn {i} by {name} " + "x" * (i % 40), id=f"m{i}"))
    try:
        record = writer.capture(conversation, state={"n": i + 1})
    except StaleCheckpoint:
        continue
    written += 1
    print(record.message_count, flush=True)
"""


def _turn(i: int) -> Message:
    role = Message.user if i % 2 == 0 else Message.assistant
    return role(f"turn {i} " + "x" * (i % 40), id=f"m{i}")


def _spawn(path: Path, session: str, name: str, limit: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), session, name, str(limit)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _assert_chain(path: Path, session: str) -> int:
    """Check the session is one contiguous, restorable chain; return its length."""
    with SQLiteStore(path, verify=True) as store:
        records = store.checkpoints(session)
        assert [r.message_count for r in records] == list(range(1, len(records) + 1))
        latest = restore(store, session).conversation
        assert [m.id for m in latest] == [f"m{i}" for i in range(len(records))]
        assert latest.original(f"m{len(records) - 1}").text.startswith(f"turn {len(records) - 1} ")
        for record in random.Random(len(records)).sample(records, min(5, len(records))):
            assert len(restore(store, session, record.id).conversation) == record.message_count
        return len(records)


def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    """A writer killed with SIGKILL five times leaves a store that opens and restores exactly."""
    path = tmp_path / "killed.db"
    session = "ses_killed"
    rng = random.Random(7)
    confirmed = 0
    for _ in range(5):
        child = _spawn(path, session, "child", 10_000)
        assert child.stdout is not None
        first = child.stdout.readline()  # wait until it is really writing
        assert first.strip()
        time.sleep(rng.uniform(0.02, 0.25))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        lines = [first, *out.splitlines()]
        confirmed = max(confirmed, *(int(x) for x in lines if x.strip()))
        length = _assert_chain(path, session)
        assert length >= confirmed


def test_corrupted_body_keeps_previous_checkpoint(tmp_path: Path) -> None:
    """A damaged body blob gives CorruptCheckpoint; the checkpoint before it still restores."""
    path = tmp_path / "body.db"
    with SQLiteStore(path) as store:
        writer = Checkpointer(store)
        conversation = Conversation()
        for i in range(4):
            conversation.append(_turn(i))
            writer.capture(conversation)
        digest = store.load(writer.session_id).manifest.hashes[-1]
        with store._transaction(write=True):
            store._db.execute(
                "UPDATE loose SET data = substr(data, 1, length(data) - 5) "
                "WHERE id = (SELECT id FROM bodies WHERE hash = ?)",
                (digest,),
            )
        with pytest.raises(CorruptCheckpoint, match="truncated"):
            restore(store, writer.session_id)
        previous = store.checkpoints(writer.session_id)[-2]
        assert len(restore(store, writer.session_id, previous.id).conversation) == 3


def test_damaged_file_gives_store_error(tmp_path: Path) -> None:
    """Bytes overwritten in the page area give a StoreError naming the file and SQLite's report."""
    path = tmp_path / "damaged.db"
    with SQLiteStore(path) as store:
        writer = Checkpointer(store)
        conversation = Conversation()
        for i in range(60):
            conversation.append(_turn(i))
            writer.capture(conversation)
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    for number in range(1, len(data) // page):
        data[number * page : number * page + 12] = b"\xa5" * 12
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as info:
        SQLiteStore(path, verify=True)
    assert str(path) in str(info.value)
    assert "SQLite reported" in str(info.value) or "integrity_check" in str(info.value)


def test_not_a_database_gives_store_error(tmp_path: Path) -> None:
    """A file that is not SQLite at all gives a StoreError naming it."""
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 500)
    with pytest.raises(StoreError, match=r"junk\.db"):
        SQLiteStore(path)


def test_bad_option_is_refused(tmp_path: Path) -> None:
    """An unknown synchronous mode raises StoreError before the file is created."""
    with pytest.raises(StoreError, match="synchronous"):
        SQLiteStore(tmp_path / "x.db", synchronous="SOMETIMES")
    assert not (tmp_path / "x.db").exists()


def _thread_writer(path: Path, session: str, name: str, count: int, errors: list[str]) -> None:
    store = SQLiteStore(path)
    writer = Checkpointer(store, session, full_every=4)
    written = stale = 0
    try:
        while written < count:
            try:
                conversation = writer.restore().conversation
            except CheckpointNotFound:
                conversation = Conversation()
            conversation.append(_turn(len(conversation)))
            try:
                writer.capture(conversation)
            except StaleCheckpoint:
                stale += 1
                continue
            written += 1
    except Exception as exc:  # surfaced by the assertion in the test
        errors.append(f"{name}: {type(exc).__name__}: {exc}")
    finally:
        store.close()


def test_concurrent_threads_never_interleave(tmp_path: Path) -> None:
    """Four threads writing one session give one contiguous chain; stale writes are refused."""
    path = tmp_path / "threads.db"
    SQLiteStore(path).close()
    errors: list[str] = []
    threads = [
        threading.Thread(target=_thread_writer, args=(path, "ses_t", f"t{n}", 15, errors))
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert _assert_chain(path, "ses_t") == 60


def test_shared_store_object_across_threads(tmp_path: Path) -> None:
    """One store object used by several threads serialises its transactions."""
    store = SQLiteStore(tmp_path / "shared.db")
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            writer = Checkpointer(store)
            conversation = Conversation()
            for i in range(10):
                conversation.append(_turn(i))
                writer.capture(conversation)
            assert len(restore(store, writer.session_id).conversation) == 10
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(store.sessions()) == 4
    store.close()


def test_two_processes_write_one_session(tmp_path: Path) -> None:
    """Two processes writing one session give one contiguous chain with no half checkpoint."""
    path = tmp_path / "procs.db"
    SQLiteStore(path).close()
    children = [_spawn(path, "ses_p", name, 25) for name in ("a", "b")]
    for child in children:
        child.communicate(timeout=60)
        assert child.returncode == 0
    assert _assert_chain(path, "ses_p") == 50


def test_size_limit_on_load(tmp_path: Path) -> None:
    """A stored checkpoint larger than the reader's limit raises CorruptCheckpoint."""
    path = tmp_path / "limit.db"
    with SQLiteStore(path) as store:
        writer = Checkpointer(store)
        writer.capture(Conversation([Message.user("x" * 5000, id="u1")]))
    with SQLiteStore(path, codec=default_codec(max_size=1000)) as small:
        with pytest.raises(CorruptCheckpoint) as info:
            restore(small, writer.session_id)
        assert info.value.rule == "too_large"
        assert small.latest(writer.session_id).message_count == 1
