"""The Redis store, ownership and counters on a private three-master Redis Cluster."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
import redis
from cluster_support import LocalCluster
from redis.crc import key_slot
from redis_support import WORKER, wait_for, write_turns

from ctxflow.persistence import Checkpointer
from ctxflow.sessions._ownership import Invalidation, SessionCoordinator
from ctxflow.stores import BaseStore, RedisStore, StoreConformance

pytestmark = pytest.mark.redis


def _tenant() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


class TestClusterStore(StoreConformance):
    """The Redis store conforms on a cluster, opened from a ``redis+cluster://`` URL."""

    @pytest.fixture(autouse=True)
    def _cluster(self, redis_cluster: LocalCluster) -> None:
        self.url = redis_cluster.url

    def make_store(self, tmp_path: Path) -> BaseStore:
        """A fresh store in its own tenant on the cluster."""
        store = RedisStore.from_url(self.url, tenant=_tenant())
        assert isinstance(store.client, redis.RedisCluster)
        return store


def test_a_session_s_keys_share_one_slot_and_sessions_spread(redis_cluster: LocalCluster) -> None:
    """Checkpoints, lease, fence, record and fork of each session sit in the session's slot;
    the sessions themselves spread over the masters."""
    client = redis_cluster.client()
    tenant = _tenant()
    store = RedisStore(client, tenant=tenant)
    node = SessionCoordinator(client, tenant=tenant, node_id="a", store=store, lease_ttl=5.0)
    sessions = [f"ses_{i}" for i in range(12)]
    try:
        for session_id in sessions:
            lease = node.acquire(session_id)
            writer = write_turns(node, lease, 3)
            node.update(session_id, lambda d: {"n": 1}, lease=lease)
            node.fenced(lease).prune(session_id, keep_last=2)
            assert writer.last_id is not None
        assert sorted(node.renew_all()) == []
        forked = store.fork(sessions[0], store.latest(sessions[0]).id, new_session_id="ses_fork")
        keys = [k.decode() for k in client.scan_iter(match=f"ctxflow:{tenant}:*")]
        by_tag: dict[str, set[int]] = defaultdict(set)
        for key in keys:
            if "{" in key:
                tag = key[key.index("{") + 1 : key.index("}")]
                by_tag[tag].add(key_slot(key.encode()))
        for session_id in [*sessions, forked.session_id]:
            assert by_tag[session_id] == {key_slot(session_id.encode())}
        parts = {k.rsplit(":", 1)[1] for k in keys if "{ses_0}" in k}
        assert parts == {"order", "rec", "man", "body", "owner", "fence", "state"}
        masters = {client.get_node_from_key(f"{{{s}}}").name for s in sessions}
        assert len(masters) >= 2
    finally:
        node.shutdown(handoff=False)
        client.close()


def test_a_coordinator_runs_on_the_cluster(redis_cluster: LocalCluster) -> None:
    """Two coordinators on the cluster: heartbeats, invalidations, commit, transfer, renewal."""
    tenant = _tenant()
    heard: list[Invalidation] = []
    a_client, b_client = redis_cluster.client(), redis_cluster.client()
    a = SessionCoordinator(
        a_client,
        tenant=tenant,
        node_id="a",
        store=RedisStore(a_client, tenant=tenant),
        lease_ttl=2.0,
    )
    b = SessionCoordinator(
        b_client,
        tenant=tenant,
        node_id="b",
        store=RedisStore(b_client, tenant=tenant),
        lease_ttl=2.0,
        on_invalidate=heard.append,
    )
    with a, b:
        assert a.live_nodes() == ["a", "b"]
        lease = a.acquire("ses_x")
        write_turns(a, lease, 2)
        token = a.transfer(lease, "b")
        assert token > lease.token
        wait_for(lambda: "ses_x" in b.owned(), "b taking the handed-over session")
        wait_for(lambda: {e.kind for e in heard} == {"checkpoint"}, "b hearing a's commits")
        time.sleep(0.1)
        assert b.renew_all() == []
        moved = b.owned()["ses_x"]
        assert Checkpointer(b.fenced(moved), "ses_x").restore().conversation
    a_client.close()
    b_client.close()


def test_no_lost_updates_across_processes_on_the_cluster(redis_cluster: LocalCluster) -> None:
    """8 processes x 1,000 CAS increments of sessions on different masters end at 8,000."""
    tenant = _tenant()
    client = redis_cluster.client()
    sessions = ["ses_c1", "ses_c2", "ses_c3", "ses_c4"]
    assert len({client.get_node_from_key(f"{{{s}}}").name for s in sessions}) >= 2
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "count", redis_cluster.url, tenant, "1000", *sessions],
            stdout=subprocess.PIPE,
        )
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    elapsed = time.monotonic() - started
    assert all(p.returncode == 0 for p in procs), outputs
    reader = SessionCoordinator(client, tenant=tenant)
    assert sum(reader.read(s).data["n"] for s in sessions) == 8000
    assert sum(reader.read(s).version for s in sessions) == 8000
    assert elapsed < 60, f"8,000 updates took {elapsed:.1f} s"
    client.close()


def test_threads_sharing_a_cluster_store_lose_no_checkpoint(redis_cluster: LocalCluster) -> None:
    """Threads writing sessions on every master through one cluster store all land."""
    store = RedisStore.from_url(redis_cluster.url, tenant=_tenant())
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            write_store_turns(store, f"ses_t{n}", 10)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(store.sessions()) == sorted(f"ses_t{n}" for n in range(6))
    assert all(len(store.checkpoints(f"ses_t{n}")) == 10 for n in range(6))
    store.close()


def write_store_turns(store: RedisStore, session_id: str, turns: int) -> None:
    """``turns`` checkpoints of a growing conversation in ``session_id``."""
    from ctxflow.model import Conversation, Message

    writer, conversation = Checkpointer(store, session_id), Conversation()
    for i in range(turns):
        role = Message.user if i % 2 == 0 else Message.assistant
        conversation.append(role(f"turn {i}", id=f"m{i}"))
        writer.capture(conversation)


def test_the_command_runs_lists_and_restores_on_the_cluster(
    redis_cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ctxflow run --store redis+cluster://…`` writes its checkpoints on the cluster;
    ``checkpoints list`` and ``restore`` read them back through the same URL."""
    import json

    from ctxflow.cli import main
    from ctxflow.model import read_transcripts
    from ctxflow.stores import open_store

    pony = Path(__file__).resolve().parents[2] / "examples/transcripts/openhands-ponyc-4588.jsonl"
    url = f"{redis_cluster.url}?tenant={_tenant()}"
    report = tmp_path / "report.json"
    assert main(["run", str(pony), "--store", url, "--quiet", "--report", str(report)]) == 0
    session = json.loads(report.read_text(encoding="utf-8"))["session"]
    capsys.readouterr()
    assert main(["checkpoints", "list", "--store", url, session, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records[-1]["phase"] == "done"
    out = tmp_path / "restored.jsonl"
    args = ["checkpoints", "restore", "--store", url, session, "--view", "log", "--out", str(out)]
    assert main(args) == 0
    (restored,) = read_transcripts(out)
    assert len(restored.messages) == records[-1]["messages"]
    store = open_store(url)
    try:
        assert isinstance(store, RedisStore) and isinstance(store.client, redis.RedisCluster)
        assert store.latest(session).id == records[-1]["id"]
    finally:
        store.close()


def test_langgraph_s_conformance_suite_passes_on_the_cluster(redis_cluster: LocalCluster) -> None:
    """LangGraph's own checkpointer suite passes for ``CtxflowSaver`` over the Redis store on
    the cluster (each fresh saver in a tenant of its own), every base capability included."""
    import asyncio
    from collections.abc import AsyncIterator

    conformance = pytest.importorskip(
        "langgraph.checkpoint.conformance", reason="needs the [langgraph] extra"
    )
    from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES

    from ctxflow.integrations.langgraph import CtxflowSaver

    run = _tenant()

    async def factory() -> AsyncIterator[CtxflowSaver]:
        store = RedisStore.from_url(redis_cluster.url, tenant=f"{run}-{uuid.uuid4().hex[:6]}")
        try:
            yield CtxflowSaver(store)
        finally:
            store.close()

    report = asyncio.run(
        conformance.validate(conformance.checkpointer_test(name="CtxflowSaver[cluster]")(factory))
    )
    for capability in BASE_CAPABILITIES:
        outcome = report.results[capability.value]
        assert outcome.detected and outcome.passed is True, capability
    assert report.passed_all()
