"""The coordinator's edges on a real Redis: bounded commit retries, forks of records under a
lease, a restart after shutdown, and a handover whose announcement was missed."""

from __future__ import annotations

import threading

import pytest
import redis
from redis_support import coordinator, full_draft, wait_for, write_turns

from ctxflow.errors import ConflictError, SessionError
from ctxflow.persistence import CheckpointDraft, CheckpointRecord
from ctxflow.sessions._ownership import Invalidation, Lease, SessionCoordinator

pytestmark = pytest.mark.redis


def _node(
    client: redis.Redis,
    tenant: str,
    node: str,
    *,
    ttl: float = 1.0,
    beat: float = 0.2,
    claim: float = 3600,
    **kwargs: object,
) -> SessionCoordinator:
    return coordinator(client, tenant, node, ttl=ttl, beat=beat, claim=claim, **kwargs)


def test_commit_with_retry_gives_up_after_its_attempt_limit(
    client: redis.Redis, tenant: str
) -> None:
    """A commit whose parent goes stale on every try stops after max_attempts writes (100 by
    default) with ConflictError, rule contention."""
    node = _node(client, tenant, "n", ttl=60.0)
    lease = node.acquire("ses_l")
    first = write_turns(node, lease, 1).last_id
    assert first is not None and node.store is not None
    store = node.store
    rebuilt: list[str] = []

    def rebuild(latest: CheckpointRecord) -> CheckpointDraft:
        rebuilt.append(latest.id)
        if len(rebuilt) > 1000:
            raise RuntimeError("commit_with_retry kept retrying")
        # Another writer moves the session on before the rebuilt draft lands.
        node.commit(lease, full_draft(store, "ses_l", latest.id), expected_parent=latest.id)
        return full_draft(store, "ses_l", latest.id)

    node.commit(lease, full_draft(store, "ses_l", first), expected_parent=first)
    stale = full_draft(store, "ses_l", first)
    with pytest.raises(ConflictError) as info:
        node.commit_with_retry(lease, stale, expected_parent=first, rebuild=rebuild, max_attempts=5)
    assert info.value.rule == "contention"
    assert info.value.session_id == "ses_l"
    assert len(rebuilt) == 4
    rebuilt.clear()
    with pytest.raises(ConflictError):
        node.commit_with_retry(lease, stale, expected_parent=first, rebuild=rebuild)
    assert len(rebuilt) == 99
    with pytest.raises(SessionError) as bad:
        node.commit_with_retry(lease, stale, expected_parent=first, rebuild=rebuild, max_attempts=0)
    assert bad.value.rule == "max_attempts"


def test_update_or_fork_under_a_lease_owns_and_announces_the_fork(
    client: redis.Redis, tenant: str
) -> None:
    """A leased record update that loses a race forks into a session the node then owns, and
    other nodes hear of the fork's record."""
    heard: list[Invalidation] = []
    with _node(client, tenant, "reader", on_invalidate=heard.append):
        node = _node(client, tenant, "writer", ttl=60.0)
        lease = node.acquire("ses_u")
        node.update("ses_u", lambda d: {"n": 0}, lease=lease)

        def racing(data: dict[str, int]) -> dict[str, int]:
            if node.read("ses_u").data["n"] < 100:  # another writer gets in first, once
                node.update("ses_u", lambda d: {"n": d["n"] + 100}, lease=lease)
            return {"n": data["n"] + 1}

        forked = node.update_or_fork("ses_u", racing, lease=lease)
        assert forked.session_id != "ses_u"
        assert forked.version == 1
        assert forked.session_id in node.owned()
        node.renew(node.owned()[forked.session_id])
        assert node.read(forked.session_id).data == {"n": 1}
        wait_for(
            lambda: any(e.session_id == forked.session_id for e in heard),
            "the reader hearing of the forked record",
        )
    record = next(e for e in heard if e.session_id == forked.session_id)
    assert (record.kind, record.version, record.node_id) == ("record", 1, "writer")


def test_a_coordinator_starts_again_after_shutdown(client: redis.Redis, tenant: str) -> None:
    """After shutdown, start runs the heartbeat again: the node is live and renews its leases."""
    node = _node(client, tenant, "again", ttl=30.0, beat=0.05)
    node.start()
    node.shutdown()
    node.start()
    try:
        assert "again" in node.live_nodes()
        node.acquire("ses_again")
        owner = node.keys.session("ses_again", "owner")
        client.pexpire(owner, 10_000)
        wait_for(lambda: client.pttl(owner) > 20_000, "the restarted heartbeat renewing a lease")
    finally:
        node.shutdown()


def test_a_missed_handover_is_taken_by_the_claim_loop(client: redis.Redis, tenant: str) -> None:
    """A node that missed the announcement of a session handed to it takes it on its next
    claim pass, under the handover's token, long before the lease would run out."""
    got: list[tuple[str, str, int]] = []
    taken = threading.Event()

    def on_claim(lease: Lease, reason: str) -> None:
        got.append((lease.session_id, reason, lease.token))
        taken.set()

    stay = _node(client, tenant, "stay", ttl=60.0, beat=1.0, claim=0.1, on_claim=on_claim)
    stay.start()
    try:
        stay._invalidations.close()  # its subscription dropped: the announcement is missed
        leaving = _node(client, tenant, "leave", ttl=60.0)
        lease = leaving.acquire("ses_m")
        leaving.update("ses_m", lambda d: "moving", lease=lease)
        token = leaving.transfer(lease, "stay")
        assert taken.wait(30), "the handed session was not taken"
        assert got == [("ses_m", "transferred", token)]
        assert stay.owned()["ses_m"].token == token
        stay.update("ses_m", lambda d: "moved", lease=stay.owned()["ses_m"])
    finally:
        stay.shutdown()
