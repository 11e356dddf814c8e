"""Fencing on every write path: a node that lost its lease, paused (SIGSTOP) or simply expired,
changes nothing of the session's new owner and forgets the session."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from redis_support import (
    HoldWorker,
    RedisServer,
    coordinator,
    full_draft,
    lease_expired,
    wait_for,
    write_turns,
)
from redis_worker import COMMANDS

from ctxflow.errors import OwnershipLost, SessionError
from ctxflow.persistence import CheckpointDraft, Checkpointer, CheckpointRecord
from ctxflow.sessions._ownership import Lease, SessionCoordinator
from ctxflow.stores import Fence

pytestmark = pytest.mark.redis

#: Every write a node makes for a session, as the hold worker names them.
WRITES = COMMANDS


def _node(
    client: redis.Redis, tenant: str, node: str, ttl: float = 60.0, **kwargs: object
) -> SessionCoordinator:
    """A coordinator not started: no heartbeat renews its leases (they run out at ``ttl``)."""
    return coordinator(client, tenant, node, ttl=ttl, beat=ttl / 5, claim=3600, **kwargs)


def _writes(
    node: SessionCoordinator, lease: Lease, writer: Checkpointer
) -> dict[str, Callable[[], object]]:
    """Each of ``WRITES`` as this node would make it under ``lease``."""
    store = node.store
    assert store is not None
    sid, mine = lease.session_id, writer.last_id
    assert mine is not None
    fenced = node.fenced(lease)

    def put() -> CheckpointRecord:
        draft = full_draft(store, sid, mine)
        return fenced.put(draft, expected_parent=mine)

    def rebuild(latest: CheckpointRecord) -> CheckpointDraft:
        return full_draft(store, sid, latest.id)

    return {
        "put": put,
        "prune": lambda: fenced.prune(sid, keep_last=1),
        "erase": lambda: fenced.erase(sid),
        "fork": lambda: fenced.fork(sid, mine),
        "commit": lambda: node.commit(lease, full_draft(store, sid, mine), expected_parent=mine),
        "commit_with_retry": lambda: node.commit_with_retry(
            lease, full_draft(store, sid, mine), expected_parent=mine, rebuild=rebuild
        ),
        "commit_or_fork": lambda: node.commit_or_fork(
            lease, full_draft(store, sid, mine), expected_parent=mine
        ),
        "update": lambda: node.update(sid, lambda d: "late", lease=lease),
        "update_with_retry": lambda: node.update_with_retry(sid, lambda d: "late", lease=lease),
        "update_or_fork": lambda: node.update_or_fork(sid, lambda d: "late", lease=lease),
    }


@pytest.fixture
def worker() -> Iterator[Callable[..., HoldWorker]]:
    """Start hold workers (resumed and killed after the test)."""
    started: list[HoldWorker] = []

    def start(*args: object) -> HoldWorker:
        started.append(HoldWorker(*args))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for each in started:
        each.resume()
        each.kill()


def test_a_paused_node_changes_nothing_of_the_new_owner(
    client: redis.Redis, tenant: str, redis_url: str, worker: Callable[..., HoldWorker]
) -> None:
    """A SIGSTOPped owner resumed past its lease gets OwnershipLost on every write, deletes or
    forks none of the new owner's acknowledged checkpoints, and forgets the session."""
    old = worker(redis_url, tenant, "paused", 1.0, "ses_gc")
    old.pause()
    new = _node(client, tenant, "new")
    lease_expired(client, new, "ses_gc")
    lease = new.acquire("ses_gc")
    assert lease.token > old.token
    write_turns(new, lease, 10)
    new.update("ses_gc", lambda d: "new", lease=lease)
    assert new.store is not None
    acked = new.store.checkpoints("ses_gc")
    old.resume()
    outcomes = {write: old.run(write) for write in WRITES}
    assert {write: outcome[0] for write, outcome in outcomes.items()} == dict.fromkeys(
        WRITES, "OwnershipLost"
    )
    assert old.run("owned") == ("ok", "-")
    wait_for(lambda: old.lost, "the paused node reporting the lost session")
    assert old.lost == ["ses_gc"]
    assert old.run("sessions") == ("ok", "ses_gc")
    assert new.store.checkpoints("ses_gc") == acked
    assert new.read("ses_gc").data == "new"
    write_turns(new, lease, 1)


@pytest.mark.parametrize("write", WRITES)
def test_an_expired_lease_fences_every_write(client: redis.Redis, tenant: str, write: str) -> None:
    """Once a lease expired, each write path fails with OwnershipLost (checked in Redis, before
    the write), changes nothing, and the node forgets the session and says so."""
    lost: list[str] = []
    node = _node(client, tenant, "sleepy", on_lost=lost.append)
    lease = node.acquire("ses_e")
    node.update("ses_e", lambda d: "kept", lease=lease)
    writer = write_turns(node, lease, 3)
    assert node.store is not None
    before = node.store.checkpoints("ses_e")
    writes = _writes(node, lease, writer)
    lease_expired(client, node, "ses_e", hasten=True)
    with pytest.raises(OwnershipLost) as info:
        writes[write]()
    assert info.value.session_id == "ses_e"
    assert node.owned() == {}
    assert lost == ["ses_e"]
    assert node.store.sessions() == ["ses_e"]
    assert node.store.checkpoints("ses_e") == before
    assert node.read("ses_e").data == "kept"
    with pytest.raises(OwnershipLost):
        writes[write]()
    assert lost == ["ses_e"]


def test_a_former_owner_learns_it_lost_the_lease_not_that_its_parent_is_stale(
    client: redis.Redis, tenant: str
) -> None:
    """After another node took the session and wrote, the former owner's put and commit raise
    OwnershipLost, and commit_or_fork forks nothing and keeps no lease."""
    lost: list[str] = []
    old = _node(client, tenant, "old", on_lost=lost.append)
    old_lease = old.acquire("ses_s")
    writer = write_turns(old, old_lease, 2)
    last = writer.last_id
    assert last is not None and old.store is not None
    lease_expired(client, old, "ses_s", hasten=True)
    new = _node(client, tenant, "new")
    write_turns(new, new.acquire("ses_s"), 2)
    acked = old.store.checkpoints("ses_s")
    draft = full_draft(old.store, "ses_s", last)
    with pytest.raises(OwnershipLost):
        old.fenced(old_lease).put(draft, expected_parent=last)
    assert lost == ["ses_s"]
    with pytest.raises(OwnershipLost):
        old.commit_or_fork(old_lease, draft, expected_parent=last)
    assert old.owned() == {}
    assert old.store.sessions() == ["ses_s"]
    assert old.store.checkpoints("ses_s") == acked


def test_a_restarted_pod_with_the_same_name_is_another_owner(
    client: redis.Redis, tenant: str, redis_url: str, worker: Callable[..., HoldWorker]
) -> None:
    """A second process with a paused node's name gets no lease until the old one runs out,
    then a larger token; the paused process, resumed, passes no fence."""
    paused = worker(redis_url, tenant, "pod-0", 3.0, "ses_pod")
    paused.pause()
    twin = _node(client, tenant, "pod-0")
    with pytest.raises(SessionError) as info:
        twin.acquire("ses_pod")
    assert info.value.rule == "owned_elsewhere"
    lease_expired(client, twin, "ses_pod")
    lease = twin.acquire("ses_pod")
    assert lease.token > paused.token
    write_turns(twin, lease, 3)
    assert twin.store is not None
    acked = twin.store.checkpoints("ses_pod")
    paused.resume()
    assert paused.run("put")[0] == "OwnershipLost"
    assert paused.run("prune")[0] == "OwnershipLost"
    assert paused.run("erase")[0] == "OwnershipLost"
    assert twin.store.checkpoints("ses_pod") == acked
    assert twin.owned() == {"ses_pod": lease}


def test_two_coordinators_with_one_name_never_share_a_token(
    client: redis.Redis, tenant: str
) -> None:
    """Two coordinators called alike are two owners: the second waits out the first's expired
    lease, gets a new token, and the first's writes are fenced."""
    first = _node(client, tenant, "same")
    second = _node(client, tenant, "same")
    lease = first.acquire("ses_t")
    writer = write_turns(first, lease, 1)
    with pytest.raises(SessionError):
        second.acquire("ses_t")
    lease_expired(client, first, "ses_t", hasten=True)
    taken = second.acquire("ses_t")
    assert taken.token > lease.token
    assert taken.owner != lease.owner
    with pytest.raises(OwnershipLost):
        _writes(first, lease, writer)["prune"]()
    with pytest.raises(OwnershipLost):
        first.renew(lease)
    second.renew(taken)


def test_tokens_never_repeat_after_the_counter_is_lost(client: redis.Redis, tenant: str) -> None:
    """With the session's token counter gone (a restart without persistence), the next token
    is still larger than every token given before, and a lease from before passes no fence."""
    node = _node(client, tenant, "n")
    tokens = []
    for _ in range(3):
        lease = node.acquire("ses_r")
        tokens.append(lease.token)
        node.release(lease)
    assert tokens == sorted(set(tokens))
    client.delete(node.keys.session("ses_r", "fence"))
    held = node.acquire("ses_r")
    assert held.token > max(tokens)
    client.delete(node.keys.session("ses_r", "fence"), node.keys.session("ses_r", "owner"))
    with pytest.raises(OwnershipLost):
        node.update("ses_r", lambda d: "stale", lease=held)
    again = node.acquire("ses_r")
    assert again.token > held.token


def test_tokens_never_repeat_across_a_restart_without_persistence(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A private server restarted with no persistence hands out only larger tokens, and a
    lease from before the restart passes no fence."""
    server = redis_server_factory()
    client = redis.Redis.from_url(server.url)
    node = _node(client, "restart", "n")
    before = node.acquire("ses_b")
    node.update("ses_b", lambda d: "before", lease=before)
    server.kill()
    server.start()
    with pytest.raises(OwnershipLost):
        node.update("ses_b", lambda d: "stale", lease=before)
    after = node.acquire("ses_b")
    assert after.token > before.token
    assert node.update("ses_b", lambda d: "after", lease=after).version == 1
    client.close()


def test_the_store_checks_a_fence_before_anything_else(client: redis.Redis, tenant: str) -> None:
    """RedisStore's put, prune, erase and fork with a fence that is not the session's raise
    OwnershipLost (before a stale parent or an unknown checkpoint) and change nothing; with the
    current fence they run."""
    node = _node(client, tenant, "n")
    lease = node.acquire("ses_st")
    writer = write_turns(node, lease, 3)
    store = node.store
    assert store is not None and writer.last_id is not None
    before = store.checkpoints("ses_st")
    wrong = Fence(owner=lease.owner + "0", token=lease.token)
    stale = full_draft(store, "ses_st", before[0].id)
    with pytest.raises(OwnershipLost) as info:
        store.put(stale, expected_parent=before[0].id, fence=wrong)
    assert info.value.rule == "fencing_token"
    with pytest.raises(OwnershipLost):
        store.prune("ses_st", keep_last=1, fence=wrong)
    with pytest.raises(OwnershipLost):
        store.erase("ses_st", fence=wrong)
    with pytest.raises(OwnershipLost):
        store.fork("ses_st", "ckp_unknown", fence=wrong)
    with pytest.raises(OwnershipLost):
        store.erase("ses_never_written", fence=wrong)
    assert store.sessions() == ["ses_st"]
    assert store.checkpoints("ses_st") == before
    assert store.fork("ses_st", writer.last_id, fence=lease.fence).session_id != "ses_st"
    assert len(store.prune("ses_st", keep_last=1, fence=lease.fence)) == 2
    store.erase("ses_st", fence=lease.fence)
    assert "ses_st" not in store.sessions()
