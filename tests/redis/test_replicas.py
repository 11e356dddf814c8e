"""Acknowledged writes with ``replicas=N``: WAIT before acknowledging, and failover to a replica
that loses no acknowledged checkpoint and repeats no fencing token."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from cluster_support import ReplicaPair
from redis_support import RedisServer, wait_for

from ctxflow.errors import CheckpointNotFound, ReplicationError, SessionError, StoreError
from ctxflow.layers import Fact
from ctxflow.memory._shared import Owner, shared_memory_for
from ctxflow.model import Conversation, Message
from ctxflow.persistence import Checkpointer
from ctxflow.persistence._redis.replication import Replication
from ctxflow.sessions._ownership import Lease, SessionCoordinator
from ctxflow.stores import RedisStore

pytestmark = pytest.mark.redis


def _turn(conversation: Conversation) -> Conversation:
    i = len(conversation)
    role = Message.user if i % 2 == 0 else Message.assistant
    conversation.append(role(f"turn {i}", id=f"m{i}"))
    return conversation


def test_failover_keeps_every_acknowledged_checkpoint_and_token(replica_pair: ReplicaPair) -> None:
    """With replicas=1, a primary SIGKILLed mid-load and its promoted replica: every checkpoint
    and fencing token the writer saw acknowledged is on the replica, and later tokens are higher."""
    store = RedisStore.from_url(
        replica_pair.primary.url, tenant="fo", replicas=1, replica_timeout=5, socket_timeout=5
    )
    owner = SessionCoordinator(store.client, tenant="fo", node_id="a", store=store, lease_ttl=0.5)
    assert owner.replication.replicas == 1
    acked: list[tuple[str, str]] = []
    tokens: list[int] = []
    failures: list[BaseException] = []

    def load() -> None:
        writers = [(Checkpointer(store, f"ses_{n}"), Conversation()) for n in range(4)]
        try:
            while True:
                for writer, conversation in writers:
                    record = writer.capture(_turn(conversation))
                    acked.append((record.session_id, record.id))
                lease = owner.acquire("ses_fenced")
                tokens.append(lease.token)
                owner.release(lease)
        except StoreError as exc:
            failures.append(exc)

    loader = threading.Thread(target=load)
    loader.start()
    wait_for(lambda: len(acked) >= 400 or failures, "the loader writing 400 checkpoints")
    replica_pair.primary.kill()
    loader.join(timeout=30)
    assert not loader.is_alive()
    assert failures, "the loader must fail once its primary is gone"
    replica_pair.promote()

    promoted = RedisStore.from_url(replica_pair.replica.url, tenant="fo")
    lost = []
    for session_id, checkpoint_id in acked:
        try:
            promoted.load(session_id, checkpoint_id)
        except CheckpointNotFound:
            lost.append(checkpoint_id)
    assert lost == []
    assert len(acked) >= 400

    after = SessionCoordinator(promoted.client, tenant="fo", node_id="b", lease_ttl=5)
    leases: list[Lease] = []
    # The last lease handed out before the kill may still be held; it runs out by its TTL.
    wait_for(lambda: _acquired(after, "ses_fenced", leases), "the fenced session free again")
    assert leases[0].token > max(tokens)
    store.close()
    promoted.close()


def _acquired(node: SessionCoordinator, session_id: str, into: list[Lease]) -> bool:
    """Acquire into ``into``; False while another holds the lease or the replica lags (an
    acquisition tried again by its holder keeps the token and waits again)."""
    try:
        into.append(node.acquire(session_id))
    except (SessionError, ReplicationError):
        return False
    return True


def test_a_write_no_replica_confirms_is_not_acknowledged(replica_pair: ReplicaPair) -> None:
    """A stopped replica: the put, the lease and the record update raise ReplicationError (the
    lease is not held); after failover to it the acknowledged checkpoint is there and the next
    token is higher than the one handed out."""
    client = replica_pair.primary.client(socket_timeout=10)
    # Writes while the replica runs get a generous wait; those while it is stopped a short one.
    steady = RedisStore(client, tenant="wait", replicas=1, replica_timeout=5)
    hasty = RedisStore(client, tenant="wait", replicas=1, replica_timeout=0.3)
    first = Checkpointer(steady, "ses_w").capture(_turn(Conversation()))
    node = SessionCoordinator(client, tenant="wait", node_id="a", store=steady, lease_ttl=0.5)
    handed = node.acquire("ses_lease")
    node.release(handed)
    late = SessionCoordinator(client, tenant="wait", node_id="a", store=hasty, lease_ttl=0.5)
    writer = Checkpointer(hasty, "ses_w")
    conversation = writer.restore().conversation

    replica_pair.replica.pause()
    started = time.monotonic()
    with pytest.raises(ReplicationError) as caught:
        writer.capture(_turn(conversation))
    assert time.monotonic() - started < 5
    assert caught.value.rule == "replicas"
    assert caught.value.details["acknowledged"] == 0
    assert caught.value.details["operation"] == "put"
    with pytest.raises(ReplicationError):
        late.acquire("ses_lease")
    assert late.owned() == {}
    with pytest.raises(ReplicationError):
        late.update("ses_rec", lambda d: 1)

    replica_pair.primary.kill()
    replica_pair.replica.resume()
    replica_pair.promote()
    promoted = RedisStore.from_url(replica_pair.replica.url, tenant="wait")
    # An unacknowledged write may survive (it was on its way): only the acknowledged one must.
    assert promoted.checkpoints("ses_w")[0].id == first.id
    after = SessionCoordinator(promoted.client, tenant="wait", node_id="b")
    leases: list[Lease] = []
    # The unacknowledged lease may have reached the replica; it runs out by its TTL.
    wait_for(lambda: _acquired(after, "ses_lease", leases), "the session free again")
    assert leases[0].token > handed.token
    client.close()
    promoted.close()


def test_replicas_on_a_server_without_replicas_fail_every_write_kind(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """No replica at all: put, prune, erase, fork, expire and shared memory raise
    ReplicationError naming the operation; replicas=0 acknowledges them."""
    server = redis_server_factory()
    plain = RedisStore.from_url(server.url, tenant="solo")
    writer, conversation = Checkpointer(plain, "ses_a"), Conversation()
    for _ in range(3):
        writer.capture(_turn(conversation))
    waiting = RedisStore.from_url(
        f"{server.url}?tenant=solo&replicas=1&replica_timeout=0.05", socket_timeout=2
    )
    assert waiting.replicas == 1
    latest = waiting.latest("ses_a")
    calls: dict[str, Callable[[], object]] = {
        "put": lambda: Checkpointer(waiting, "ses_b").capture(_turn(Conversation())),
        "prune": lambda: waiting.prune("ses_a", keep_last=2),
        "put (fork)": lambda: waiting.fork("ses_a", latest.id, new_session_id="ses_f"),
        "expire": lambda: waiting.expire("ses_a", 60),
        "erase": lambda: waiting.erase("ses_a"),
    }
    for doing, call in calls.items():
        with pytest.raises(ReplicationError) as caught:
            call()
        assert caught.value.details["operation"] == doing.split(" ")[0]  # a fork is a put
    memory = shared_memory_for(waiting)
    alice = Owner.user("acme", "alice")
    with pytest.raises(ReplicationError) as caught:
        memory.merge(alice, [Fact(key="tz", value="UTC", scope="user")])
    assert caught.value.details["operation"] == "merge"
    with pytest.raises(ReplicationError):
        memory.erase(alice)
    Checkpointer(plain, "ses_c").capture(_turn(Conversation()))
    assert sorted(plain.sessions()) == ["ses_b", "ses_c", "ses_f"]
    plain.close()
    waiting.close()


@pytest.mark.parametrize(
    ("replicas", "timeout"),
    [(-1, 1.0), (1.5, 1.0), (True, 1.0), (1, 0), (1, -2), (1, "1"), (1, float("inf"))],
)
def test_bad_replica_options_are_refused(replicas: object, timeout: object) -> None:
    """Negative or non-integer replica counts and non-positive timeouts are StoreErrors."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=1)
    with pytest.raises(StoreError) as caught:
        RedisStore(client, tenant="t", replicas=replicas, replica_timeout=timeout)  # type: ignore[arg-type]
    assert caught.value.rule in {"replicas", "replica_timeout"}


def test_the_wait_covers_writes_made_on_other_connections(replica_pair: ReplicaPair) -> None:
    """A wait sent on a connection that wrote nothing still covers an earlier write of another
    connection (the barrier): a pooled connection cannot acknowledge early."""
    writer, other = replica_pair.primary.client(), replica_pair.primary.client()
    other.ping()
    replication = Replication(replicas=1, timeout=0.2)
    replica_pair.replica.pause()
    writer.set("ctxflow:t:s:{ses_a}:order", "written while the replica sleeps")
    with pytest.raises(ReplicationError):
        replication.confirm(other, "ctxflow:t:", "put", "ctxflow:t:s:{ses_a}:order")
    replica_pair.replica.resume()
    Replication(replicas=1, timeout=5).confirm(other, "ctxflow:t:", "put", "ctxflow:t:s:{x}")
    replica = replica_pair.replica.client()
    assert replica.get("ctxflow:t:s:{ses_a}:order") == b"written while the replica sleeps"
    for client in (writer, other, replica):
        client.close()


def test_a_handover_is_taken_only_once_the_replica_holds_it(replica_pair: ReplicaPair) -> None:
    """With a stopped replica a transfer raises ReplicationError and the target does not take
    the token; once the replica is back, the target's claim pass takes it."""
    client = replica_pair.primary.client(socket_timeout=10)
    a_store = RedisStore(client, tenant="hand", replicas=1, replica_timeout=1)
    b_store = RedisStore(client, tenant="hand", replicas=1, replica_timeout=0.3)
    a = SessionCoordinator(client, tenant="hand", node_id="a", store=a_store, claim_interval=3600)
    b = SessionCoordinator(client, tenant="hand", node_id="b", store=b_store, claim_interval=3600)
    with a, b:
        leases: list[Lease] = []
        wait_for(lambda: _acquired(a, "ses_h", leases), "a acquiring while the replica runs")
        replica_pair.replica.pause()
        with pytest.raises(ReplicationError) as caught:
            a.transfer(leases[0], "b")
        assert caught.value.details["operation"] == "transfer"
        assert b.claim_orphans() == []
        assert "ses_h" not in b.owned()
        replica_pair.replica.resume()
        wait_for(lambda: b.claim_orphans() or "ses_h" in b.owned(), "b taking the handover")
        taken = b.owned()["ses_h"]
        assert taken.token > leases[0].token
    client.close()
