"""Distributed ownership on a real Redis: single writer, fencing, claims, handoff."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_support import coordinator, full_draft

from ctxflow.errors import (
    CheckpointError,
    ConflictError,
    OwnershipLost,
    SessionError,
    SessionNotFound,
    StaleCheckpoint,
)
from ctxflow.model import Conversation, Message
from ctxflow.persistence import Checkpointer, Store, restore
from ctxflow.sessions._ownership import Invalidation, Lease, SessionCoordinator
from ctxflow.stores import RedisStore

pytestmark = pytest.mark.redis

WORKER = Path(__file__).with_name("redis_worker.py")
#: Seconds a loaded machine may add to a background thread's wake-up (2 shared cores).
SCHEDULING_SLACK = 5.0


def _coordinator(
    client: redis.Redis, tenant: str, node: str, **kwargs: object
) -> SessionCoordinator:
    return coordinator(client, tenant, node, **kwargs)


def _turn(conversation: Conversation, i: int) -> None:
    role = Message.user if i % 2 == 0 else Message.assistant
    conversation.append(role(f"turn {i}", id=f"m{i}"))


def test_fencing_token_rejects_a_stale_owner(client: redis.Redis, tenant: str) -> None:
    """A former owner whose lease expired and was claimed cannot write: OwnershipLost."""
    old = _coordinator(client, tenant, "old")
    new = _coordinator(client, tenant, "new")
    lease = old.acquire("ses_a")
    conversation = Conversation()
    _turn(conversation, 0)
    writer = Checkpointer(old.fenced(lease), "ses_a")
    writer.capture(conversation)
    client.delete(old.keys.session("ses_a", "owner"))  # the lease ran out during a pause
    taken = new.acquire("ses_a")
    assert taken.token == lease.token + 1
    before = new.store.checkpoints("ses_a") if new.store else []
    _turn(conversation, 1)
    with pytest.raises(OwnershipLost) as info:
        writer.capture(conversation)
    assert info.value.session_id == "ses_a"
    with pytest.raises(OwnershipLost):
        old.update("ses_a", lambda d: 1, lease=lease)
    with pytest.raises(OwnershipLost):
        old.renew(lease)
    assert new.store is not None and new.store.checkpoints("ses_a") == before
    assert "ses_a" not in old.owned()
    Checkpointer(new.fenced(taken), "ses_a").restore()


def test_fenced_store_reads_through_to_the_store(client: redis.Redis, tenant: str) -> None:
    """A fenced store is a Store whose reads and retention run on the coordinator's store."""
    node = _coordinator(client, tenant, "n")
    store = node.store
    assert store is not None
    fenced = node.fenced(node.acquire("ses_f"))
    assert isinstance(fenced, Store)
    conversation = Conversation()
    writer = Checkpointer(fenced, "ses_f")
    for i in range(3):
        _turn(conversation, i)
        writer.capture(conversation)
    assert fenced.sessions() == store.sessions() == ["ses_f"]
    assert fenced.checkpoints("ses_f") == store.checkpoints("ses_f")
    assert fenced.load("ses_f").record == fenced.latest("ses_f") == store.latest("ses_f")
    assert len(fenced.prune("ses_f", keep_last=1)) == 2
    fenced.close()
    assert len(store.checkpoints("ses_f")) == 1


def test_acquire_is_exclusive_and_tokens_grow(client: redis.Redis, tenant: str) -> None:
    """Only one node holds a session; each new owner gets a larger token."""
    a = _coordinator(client, tenant, "a")
    b = _coordinator(client, tenant, "b")
    lease = a.acquire("ses_x")
    assert a.acquire("ses_x") == lease
    with pytest.raises(SessionError) as info:
        b.acquire("ses_x")
    assert info.value.rule == "owned_elsewhere"
    a.release(lease)
    assert b.acquire("ses_x").token == lease.token + 1
    with pytest.raises(OwnershipLost):
        a.release(lease)


def test_claims_skip_erased_sessions(client: redis.Redis, tenant: str) -> None:
    """A lapsed lease of a session with no data left is forgotten, not claimed."""
    a = _coordinator(client, tenant, "a")
    b = _coordinator(client, tenant, "b")
    a.update("ses_kept", lambda d: 1)
    a.acquire("ses_kept")
    a.acquire("ses_gone")
    client.delete(a.keys.session("ses_kept", "owner"), a.keys.session("ses_gone", "owner"))
    assert [lease.session_id for lease in b.claim_orphans()] == ["ses_kept"]
    assert client.hkeys(a.keys.prefix + "owners") == [b"ses_kept"]


def test_no_lost_updates_across_processes(client: redis.Redis, tenant: str, redis_url: str) -> None:
    """8 processes x 1,000 CAS increments of shared sessions lose no update."""
    sessions = ["ses_c1", "ses_c2", "ses_c3"]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "count", redis_url, tenant, "1000", *sessions],
            stdout=subprocess.PIPE,
        )
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    reader = SessionCoordinator(client, tenant=tenant)
    total = sum(reader.read(s).data["n"] for s in sessions)
    assert total == 8000
    assert sum(reader.read(s).version for s in sessions) == 8000


def test_killed_node_sessions_are_claimed(client: redis.Redis, tenant: str, redis_url: str) -> None:
    """A SIGKILLed node's sessions move within TTL + one claim interval, losing no checkpoint."""
    sessions = ["ses_k1", "ses_k2", "ses_k3"]
    claimed: dict[str, tuple[float, Lease]] = {}
    done = threading.Event()

    def on_claim(lease: Lease, reason: str) -> None:
        claimed[lease.session_id] = (time.monotonic(), lease)
        if len(claimed) == len(sessions):
            done.set()

    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "node", redis_url, tenant, "victim", *sessions],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        acked: dict[str, tuple[str, int]] = {}
        assert proc.stdout is not None
        for line in proc.stdout:
            _, sid, ckp, count = line.split()
            acked[sid] = (ckp, int(count))
            if len(acked) == len(sessions) and min(c for _, c in acked.values()) >= 5:
                break
        with _coordinator(client, tenant, "survivor", on_claim=on_claim) as survivor:
            proc.kill()
            killed = time.monotonic()
            for line in proc.stdout:  # acknowledgements already in the pipe
                _, sid, ckp, count = line.split()
                acked[sid] = (ckp, int(count))
            proc.wait()
            # A condition with a generous deadline: under load the claim thread runs late.
            assert done.wait(60), f"claimed only {sorted(claimed)}"
            latest = max(t for t, _ in claimed.values()) - killed
            # Lease TTL + one claim interval, with slack for a loaded machine's scheduling.
            assert latest <= 1.0 + 0.2 + SCHEDULING_SLACK
            assert survivor.store is not None
            for sid in sessions:
                lease = claimed[sid][1]
                writer = Checkpointer(survivor.fenced(lease), sid)
                restored = writer.restore()
                assert len(restored.conversation) >= acked[sid][1]
                ids = [r.id for r in survivor.store.checkpoints(sid)]
                assert acked[sid][0] in ids
                _turn(restored.conversation, len(restored.conversation))
                writer.capture(restored.conversation)
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_graceful_shutdown_hands_sessions_over(client: redis.Redis, tenant: str) -> None:
    """Shutting a node down transfers its sessions to a live node, which is told of them."""
    taken = threading.Event()
    got: list[tuple[str, str]] = []

    def on_claim(lease: Lease, reason: str) -> None:
        got.append((lease.session_id, reason))
        taken.set()

    with _coordinator(client, tenant, "stay", on_claim=on_claim) as stay:
        leaving = _coordinator(client, tenant, "leave").start()
        lease = leaving.acquire("ses_h")
        moved = leaving.shutdown()
        assert moved == {"ses_h": "stay"}
        assert taken.wait(3)
        assert got == [("ses_h", "transferred")]
        assert stay.owned()["ses_h"].token == lease.token + 1
        with pytest.raises(OwnershipLost):
            leaving.renew(lease)
        stay.renew(stay.owned()["ses_h"])
    lonely = _coordinator(client, tenant, "lonely").start()
    lonely.acquire("ses_r")
    assert lonely.shutdown() == {"ses_r": None}
    assert client.get(lonely.keys.session("ses_r", "owner")) is None


def test_invalidation_reaches_other_nodes(client: redis.Redis, tenant: str) -> None:
    """A committed change is announced to other nodes' callbacks, not to the writer's own."""
    seen: list[Invalidation] = []
    arrived = threading.Event()

    def on_invalidate(event: Invalidation) -> None:
        seen.append(event)
        arrived.set()

    with (
        _coordinator(client, tenant, "reader", on_invalidate=on_invalidate),
        _coordinator(client, tenant, "writer", on_invalidate=on_invalidate) as writer,
    ):
        lease = writer.acquire("ses_i")
        writer.update("ses_i", lambda d: {"v": 1}, lease=lease)
        assert arrived.wait(3)
    assert seen[0].kind == "record"
    assert seen[0].session_id == "ses_i"
    assert seen[0].version == 1
    assert all(e.node_id == "writer" for e in seen)


def test_commit_on_a_stale_parent(client: redis.Redis, tenant: str) -> None:
    """A stale checkpoint commit raises, is rebuilt on the latest, or forks, by method."""
    node = _coordinator(client, tenant, "n")
    store = node.store
    assert store is not None
    lease = node.acquire("ses_p")
    conversation = Conversation()
    writer = Checkpointer(node.fenced(lease), "ses_p")
    for i in range(3):
        _turn(conversation, i)
        writer.capture(conversation)
    first, second, third = store.checkpoints("ses_p")
    stale = full_draft(store, "ses_p", second.id, source=first.id)
    with pytest.raises(StaleCheckpoint):
        node.commit(lease, stale, expected_parent=second.id)
    no_rebuild: Any = None  # an untyped caller's mistake
    with pytest.raises(CheckpointError):
        node.commit_with_retry(lease, stale, expected_parent=second.id, rebuild=no_rebuild)
    assert store.checkpoints("ses_p") == [first, second, third]
    retried = node.commit_with_retry(
        lease,
        stale,
        expected_parent=second.id,
        rebuild=lambda latest: full_draft(store, "ses_p", latest.id, source=first.id),
    )
    assert retried.parent_id == third.id
    assert retried.seq == 4
    forked = node.commit_or_fork(lease, stale, expected_parent=second.id)
    assert forked.session_id != "ses_p"
    assert forked.session_id in node.owned()
    assert store.checkpoints(forked.session_id)[0].trigger == "fork"
    assert len(restore(store, forked.session_id).conversation) == 1
    assert len(store.checkpoints("ses_p")) == 4


def test_update_that_loses_a_race(client: redis.Redis, tenant: str) -> None:
    """A record update that loses a race retries, raises or forks, by method."""
    node = _coordinator(client, tenant, "n")
    node.update("ses_q", lambda d: {"n": 0})

    def racing(data: dict[str, int]) -> dict[str, int]:
        if node.read("ses_q").data["n"] < 100:  # another writer gets in first, once per test
            node.update("ses_q", lambda d: {"n": d["n"] + 100})
        return {"n": data["n"] + 1}

    assert node.update_with_retry("ses_q", racing).data == {"n": 101}
    node.update("ses_q", lambda d: {"n": 0})
    with pytest.raises(ConflictError) as info:
        node.update("ses_q", racing)
    assert info.value.rule == "version_conflict"
    assert node.read("ses_q").data == {"n": 100}
    node.update("ses_q", lambda d: {"n": 0})
    forked = node.update_or_fork("ses_q", racing)
    assert forked.session_id != "ses_q"
    assert node.read(forked.session_id).data == {"n": 1}
    assert node.read("ses_q").data == {"n": 100}


def test_bad_input_to_the_coordinator(client: redis.Redis, tenant: str) -> None:
    """Unknown sessions, bad names and a bad attempt limit raise typed errors naming them."""
    node = _coordinator(client, tenant, "n")
    with pytest.raises(SessionNotFound) as info:
        node.read("ses_nothing")
    assert info.value.session_id == "ses_nothing"
    with pytest.raises(SessionError):
        SessionCoordinator(client, tenant=tenant, node_id="bad|node")
    with pytest.raises(SessionError) as limit:
        node.update_with_retry("ses_z", lambda d: 1, max_attempts=0)
    assert limit.value.rule == "max_attempts"
    with pytest.raises(SessionError):
        SessionCoordinator(client, tenant=tenant, store=RedisStore(client, tenant=tenant + "x"))
    with pytest.raises(CheckpointError):
        node.acquire("ses_{bad}")
    with pytest.raises(SessionNotFound):
        node.read("ses_z")
