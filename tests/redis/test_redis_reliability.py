"""The Redis store under failure: restarts, tenants, bad values, refused and slow servers."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from redis_support import RedisServer, free_port

from ctxflow.errors import CheckpointError, CheckpointNotFound, CorruptCheckpoint, StoreError
from ctxflow.model import Conversation, Message
from ctxflow.persistence import Checkpointer, restore
from ctxflow.stores import RedisStore

pytestmark = pytest.mark.redis


def _write(store: RedisStore, session_id: str | None = None, steps: int = 3) -> Checkpointer:
    writer = Checkpointer(store, session_id)
    conversation = Conversation()
    for i in range(steps):
        role = Message.user if i % 2 == 0 else Message.assistant
        conversation.append(role(f"turn {i}", id=f"m{i}"))
        writer.capture(conversation, state={"step": i})
    return writer


@pytest.fixture
def store(redis_url: str, tenant: str) -> Iterator[RedisStore]:
    """A Redis store in a fresh tenant."""
    store = RedisStore.from_url(redis_url, tenant=tenant)
    yield store
    store.close()


def test_aof_restart_keeps_acknowledged_checkpoints(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A SIGKILLed AOF server (fsync always) restarts with every acknowledged checkpoint."""
    server = redis_server_factory("--appendonly", "yes", "--appendfsync", "always")
    store = RedisStore.from_url(server.url, tenant="durable")
    writers = [_write(store, steps=6) for _ in range(3)]
    acked = {w.session_id: store.checkpoints(w.session_id) for w in writers}
    store.close()
    server.kill()
    server.start()
    again = RedisStore.from_url(server.url, tenant="durable")
    assert sorted(again.sessions()) == sorted(acked)
    for session_id, records in acked.items():
        assert again.checkpoints(session_id) == records
        assert len(restore(again, session_id).conversation) == 6
    again.close()


def test_tenants_never_see_each_other(redis_url: str, client: redis.Redis, tenant: str) -> None:
    """A tenant lists and loads only its own sessions; its keys all carry its prefix."""
    mine = RedisStore(client, tenant=tenant)
    theirs = RedisStore(client, tenant=tenant + "-other")
    try:
        writer = _write(mine)
        other = _write(theirs)
        assert mine.sessions() == [writer.session_id]
        assert theirs.sessions() == [other.session_id]
        with pytest.raises(CheckpointNotFound) as info:
            theirs.load(writer.session_id)
        assert info.value.session_id == writer.session_id
        with pytest.raises(CheckpointNotFound):
            theirs.erase(writer.session_id)
        keys = [k.decode() for k in client.scan_iter(match=f"ctxflow:{tenant}:*")]
        assert keys
        assert all(writer.session_id in k or k.endswith(":sessions") for k in keys)
        assert mine.checkpoints(writer.session_id)
    finally:
        for key in client.scan_iter(match=f"ctxflow:{tenant}-other:*"):
            client.delete(key)
    with pytest.raises(StoreError):
        RedisStore(client, tenant="a:b")
    with pytest.raises(StoreError):
        RedisStore(client, tenant="*")


def test_every_key_of_a_session_shares_its_hash_tag(client: redis.Redis, store: RedisStore) -> None:
    """All of a session's keys hash to one cluster slot through the {session_id} tag."""
    writer = _write(store)
    keys = [k.decode() for k in client.scan_iter(match=f"ctxflow:{store.tenant}:s:*")]
    assert len(keys) == 4
    assert all(f"{{{writer.session_id}}}" in k for k in keys)


def test_session_ttl_expires_a_session(redis_url: str, tenant: str) -> None:
    """With a TTL, an idle session disappears from the listing and loads as not found."""
    store = RedisStore.from_url(redis_url, tenant=tenant, ttl=0.3)
    writer = _write(store)
    keep = _write(store)
    store.expire(keep.session_id, 30)
    time.sleep(0.45)
    assert store.sessions() == [keep.session_id]
    with pytest.raises(CheckpointNotFound):
        store.latest(writer.session_id)
    with pytest.raises(CheckpointNotFound):
        store.expire(writer.session_id, 5)
    store.close()


def test_a_value_that_is_not_a_checkpoint(client: redis.Redis, store: RedisStore) -> None:
    """Garbage in a record or manifest raises CorruptCheckpoint naming the session."""
    writer = _write(store)
    records = store.checkpoints(writer.session_id)
    rec = store.keys.session(writer.session_id, "rec")
    client.hset(rec, records[-1].id, b"\xc1 not msgpack")
    with pytest.raises(CorruptCheckpoint) as info:
        store.checkpoints(writer.session_id)
    assert info.value.session_id == writer.session_id
    with pytest.raises(CorruptCheckpoint):
        store.prune(writer.session_id, keep_last=1)
    assert client.hlen(rec) == 3
    assert client.llen(store.keys.session(writer.session_id, "order")) == 3
    client.hset(rec, records[-1].id, b"\x93\x01\x02\x03")  # msgpack, but not a record
    with pytest.raises(CorruptCheckpoint):
        store.latest(writer.session_id)
    client.hdel(store.keys.session(writer.session_id, "man"), records[0].id)
    with pytest.raises(CorruptCheckpoint) as info:
        store.load(writer.session_id, records[0].id)
    assert info.value.rule in {"record", "missing_manifest"}


def test_bad_session_ids_and_arguments(store: RedisStore) -> None:
    """Session ids that would break the hash tag and bad TTLs are refused before any write."""
    with pytest.raises(CheckpointError):
        _write(store, "ses_{x}")
    with pytest.raises(StoreError):
        RedisStore(store.client, tenant=store.tenant, ttl=0)
    with pytest.raises(StoreError):
        store.expire("ses_a", -1)
    with pytest.raises(StoreError):
        RedisStore.from_url("nonsense://", tenant="t")
    assert store.sessions() == []


def test_refused_connection_names_the_operation(tenant: str) -> None:
    """A closed port raises StoreError naming the operation; reads retry, writes do not."""
    store = RedisStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0",
        tenant=tenant,
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        read_retries=2,
    )
    with pytest.raises(StoreError) as info:
        store.sessions()
    assert info.value.operation == "sessions"
    assert "ConnectionError" in str(info.value)
    with pytest.raises(StoreError) as info:
        store.latest("ses_a")
    assert info.value.operation == "latest"
    with pytest.raises(StoreError) as info:
        _write(store, steps=1)
    assert info.value.operation.startswith("put")
    store.close()


def test_timeout_names_the_operation(tenant: str) -> None:
    """A server that accepts but never answers times out as StoreError; reads retry, writes not."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept)
    thread.start()
    port = listener.getsockname()[1]
    store = RedisStore.from_url(
        f"redis://127.0.0.1:{port}/0", tenant=tenant, socket_timeout=0.2, read_retries=1
    )
    try:
        with pytest.raises(StoreError) as info:
            store.sessions()
        assert info.value.operation == "sessions"
        assert "Timeout" in str(info.value)
        reads = len(accepted)
        assert reads == 2
        with pytest.raises(StoreError) as info:
            store.expire("ses_a", 5)
        assert info.value.operation == "expire"
        assert len(accepted) == reads + 1
    finally:
        stop.set()
        thread.join()
        store.close()
        for conn in accepted:
            conn.close()
        listener.close()
