"""Tests for the one-process context manager."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ctxflow.context import ChartConfiguration
from ctxflow.engine import Engine
from ctxflow.errors import BudgetExceeded, SessionError, SessionNotFound, StoreError
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation, Message, ToolResultBlock, ToolUseBlock
from ctxflow.persistence import restore
from ctxflow.sessions._manager import ConflictError, ContextManager, Limits, retry
from ctxflow.stores import MemoryStore, SQLiteStore


def turn(i: int) -> list[Message]:
    call = Message(role="assistant", content=(ToolUseBlock(id=f"t{i}", name="bash", input={}),))
    result = Message(role="user", content=(ToolResultBlock(tool_use_id=f"t{i}", content="x" * 40),))
    return [call, result]


class Recorder:
    """A listener recording which hooks fired."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_created(self, context: Engine) -> None:
        self.calls.append("created")

    def on_evicted(self, context: Engine) -> None:
        self.calls.append("evicted")

    def on_checkpointed(self, context: Engine, record: Any) -> None:
        self.calls.append("checkpointed")

    def on_merged(self, context: Engine, sources: list[str]) -> None:
        self.calls.append("merged")


def test_create_get_update_delete() -> None:
    """A context is created persisted, updated, reloaded and deleted."""
    store = MemoryStore()
    manager = ContextManager(store)
    context = manager.create(messages=[Message.user("task")], data={"owner": "ana"})
    assert context.session_id in store.sessions()
    manager.append(context.session_id, turn(1), actor="agent")
    assert manager.get(context.session_id).version == 1
    manager.update(context.session_id, lambda c: c.set_data("k", 1, actor="ana"))
    manager.save(context.session_id)
    fresh = ContextManager(store).get(context.session_id)
    assert fresh.conversation.messages == context.conversation.messages
    assert fresh.data == {"owner": "ana", "k": 1}
    manager.delete(context.session_id)
    with pytest.raises(SessionNotFound, match=context.session_id):
        manager.get(context.session_id)
    with pytest.raises(SessionNotFound, match="no context with id 'nope'"):
        manager.get("nope")


def test_duplicate_id_refused() -> None:
    """Creating a context under an existing id is refused."""
    manager = ContextManager(MemoryStore())
    manager.create("c1")
    with pytest.raises(SessionError, match="exists"):
        manager.create("c1")


def test_eviction_persists_first_and_reload_is_exact() -> None:
    """Past max_live the least recently used contexts are saved, unloaded, and reload equal."""
    store = MemoryStore()
    recorder = Recorder()
    manager = ContextManager(store, max_live=3, listeners=[recorder])
    ids = [manager.create(messages=[Message.user(f"task {i}")]).session_id for i in range(3)]
    manager.append(ids[0], turn(0))  # dirty, and most recently used
    snapshot = list(manager.get(ids[0]).conversation.messages)
    for i in range(3):
        manager.create(messages=[Message.user(f"more {i}")])
    assert manager.stats().live == 3
    assert "evicted" in recorder.calls
    again = manager.get(ids[0])
    assert list(again.conversation.messages) == snapshot
    assert manager.stats().misses >= 1


def test_ttl_unloads_idle_contexts() -> None:
    """Contexts idle longer than the TTL are unloaded (after being saved)."""
    now = [0.0]
    manager = ContextManager(MemoryStore(), ttl=10, clock=lambda: now[0])
    a = manager.create(messages=[Message.user("a")]).session_id
    manager.append(a, turn(1))
    now[0] = 11
    manager.create(messages=[Message.user("b")])
    assert manager.stats().live == 1
    assert len(manager.get(a).conversation) == 3


def test_limits_without_ladder_refuse_before_change() -> None:
    """Crossing a limit with no ladder raises BudgetExceeded and changes nothing."""
    manager = ContextManager(
        MemoryStore(), limits=Limits(max_messages=4, max_tokens=10_000), compress=None
    )
    cid = manager.create(messages=[Message.user("task"), *turn(0)]).session_id
    before = manager.get(cid).version
    with pytest.raises(BudgetExceeded, match="over the limits"):
        manager.append(cid, turn(1))
    assert manager.get(cid).version == before
    assert len(manager.get(cid).conversation) == 3


def test_limits_with_a_compressor_tag_instead_of_dropping() -> None:
    """Over a limit, the compressor runs; every original message is still in the log."""

    def truncate(conversation: Conversation, state: LayeredState, target: int) -> LayeredState:
        view = conversation.effective()
        # Hide whole turns after the task until the token target is met.
        hide: list[str] = []
        tokens = conversation.effective_tokens
        for a, b in zip(view[1::2], view[2::2], strict=False):
            if tokens <= target:
                break
            hide += [a.id, b.id]
            tokens -= conversation.tokens(a.id) + conversation.tokens(b.id)
        conversation.hide(hide, truncation_parent="limits")
        return state

    manager = ContextManager(
        MemoryStore(), limits=Limits(max_messages=10, max_tokens=10_000), compress=truncate
    )
    cid = manager.create(messages=[Message.user("task")]).session_id
    for i in range(10):
        manager.append(cid, turn(i))
    context = manager.get(cid)
    assert len(context.conversation) == 21
    assert context.conversation.effective_count <= 10
    kinds = [e.kind for e in context.audit.events]
    assert "compress" in kinds


def test_audit_log_replays_over_the_checkpoint() -> None:
    """Restoring the last checkpoint and replaying the events since rebuilds the context."""
    store = MemoryStore()
    manager = ContextManager(store)
    cid = manager.create(messages=[Message.user("task")]).session_id
    manager.append(cid, turn(0), actor="agent")
    manager.save(cid)
    manager.append(cid, turn(1), actor="agent")
    manager.update(cid, lambda c: c.set_state(c.state.with_fact("k", "v"), actor="tool"))
    manager.update(cid, lambda c: c.set_data("n", 2, actor="ana"))
    review = ChartConfiguration(chart="agent_loop", configuration=("active", "reflection"))
    manager.update(cid, lambda c: c.set_chart(review, actor="engine"))
    live = manager.get(cid)
    assert live.chart_configuration == review
    events = live.audit.events
    assert [(e.kind, e.actor) for e in events] == [
        ("append", "agent"),
        ("state", "tool"),
        ("data", "ana"),
        ("chart", "engine"),
    ]
    assert all(e.phase == "idle" for e in events)
    restored = restore(store, cid)
    copy = Engine.from_checkpoint(store=store, session_id=cid)
    copy.replay(events)
    assert copy.conversation.messages == live.conversation.messages
    assert copy.state == live.state and copy.data == live.data
    assert copy.chart_configuration == live.chart_configuration
    assert copy.phase == live.phase == "reflection"
    assert copy.version == live.version
    assert restored.state["audit"][0]["kind"] == "append"


def test_store_failure_keeps_the_context(tmp_path: Path) -> None:
    """A save that fails leaves the in-memory context intact, dirty, and reports it."""
    store = SQLiteStore(tmp_path / "s.db")
    manager = ContextManager(store)
    cid = manager.create(messages=[Message.user("task")]).session_id
    manager.append(cid, turn(0))
    store.close()
    with pytest.raises(StoreError, match="stays in memory"):
        manager.save(cid)
    context = manager.get(cid)
    assert context.dirty and len(context.conversation) == 3
    assert manager.evict(cid) is False
    assert manager.stats().save_failures == 2


def test_threads_lose_no_update() -> None:
    """Eight threads incrementing shared contexts under the manager's locks lose nothing."""
    manager = ContextManager(MemoryStore())
    ids = [manager.create(data={"n": 0}).session_id for _ in range(4)]

    def work(k: int) -> None:
        for i in range(200):
            cid = ids[(i + k) % 4]
            manager.update(cid, lambda c: c.set_data("n", c.data["n"] + 1))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(manager.get(cid).data["n"] for cid in ids) == 1600


def test_optimistic_updates_retry_with_backoff() -> None:
    """Optimistic writers conflict, retry with backoff, and every increment lands."""
    manager = ContextManager(MemoryStore())
    cid = manager.create(data={"n": 0}).session_id

    def bump() -> None:
        seen = manager.get(cid)
        version, value = seen.version, seen.data["n"]
        time.sleep(0.0005)
        manager.update(cid, lambda c: c.set_data("n", value + 1), expected_version=version)

    def work() -> None:
        for _ in range(25):
            retry(bump, attempts=200, base=0.0005, cap=0.01)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert manager.get(cid).data["n"] == 100
    with pytest.raises(ConflictError, match="version"):
        manager.update(cid, lambda c: None, expected_version=-5)


def test_async_tasks_lose_no_update() -> None:
    """Concurrent asyncio tasks updating the same context lose no update."""
    manager = ContextManager(MemoryStore())
    cid = manager.create(data={"n": 0}).session_id

    async def main() -> None:
        async def bump() -> None:
            for _ in range(20):
                await manager.aupdate(cid, lambda c: c.set_data("n", c.data["n"] + 1))

        await asyncio.gather(*(bump() for _ in range(10)))

    asyncio.run(main())
    assert manager.get(cid).data["n"] == 200


def test_batch_locks_in_sorted_order() -> None:
    """Two threads batching the same contexts in opposite orders never deadlock."""
    manager = ContextManager(MemoryStore())
    a, b = manager.create(data={"n": 0}).session_id, manager.create(data={"n": 0}).session_id

    def work(order: list[str]) -> None:
        for _ in range(100):
            with manager.batch(order) as contexts:
                for c in contexts:
                    c.set_data("n", c.data["n"] + 1)

    threads = [threading.Thread(target=work, args=(o,)) for o in ([a, b], [b, a])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
        assert not t.is_alive()
    assert manager.get(a).data["n"] == manager.get(b).data["n"] == 200


def test_merge_and_split_through_the_manager() -> None:
    """merge builds a new context from two; split builds two from one."""
    recorder = Recorder()
    manager = ContextManager(MemoryStore(), listeners=[recorder])
    a = manager.create(messages=[Message.user("a"), *turn(1)]).session_id
    b = manager.create(messages=[Message.user("b"), *turn(2)]).session_id
    merged = manager.merge([a, b], strategy="deep")
    assert merged.conversation.check().ok
    assert "merged" in recorder.calls
    log = [Message.user("x"), *turn(3), Message.assistant("ok"), Message.user("y", id="y1")]
    c = manager.create(messages=[*log, *turn(4)])
    first, second = manager.split(c.session_id, "y1")
    assert len(first.conversation) + len(second.conversation) == len(c.conversation)
    assert second.conversation.messages[0].id == "y1"


def test_autosave_and_stats() -> None:
    """Autosave flushes dirty contexts in the background; stats count saves and hits."""
    manager = ContextManager(MemoryStore())
    cid = manager.create(messages=[Message.user("t")]).session_id
    manager.append(cid, turn(0))
    manager.start_autosave(0.05)
    deadline = time.monotonic() + 5
    while manager.get(cid).dirty and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not manager.get(cid).dirty
    stats = manager.stats()
    assert stats.saves >= 2 and stats.live == 1 and stats.hit_rate > 0
    assert stats.bytes_in_memory > 0 and stats.messages == 3
    assert manager.close() == []


CHILD = """
import sys, time
from ctxflow.model import Message
from ctxflow.sessions._manager import ContextManager
from ctxflow.stores import SQLiteStore
manager = ContextManager(SQLiteStore(sys.argv[1]))
manager.install_signal_handlers()
ids = [manager.create(messages=[Message.user(f"task {i}")]).session_id for i in range(20)]
for round in range(5):
    for cid in ids:
        manager.update(cid, lambda c: c.set_data("n", round + 1))
print(" ".join(ids), flush=True)
while True:
    time.sleep(0.1)
"""


def test_sigterm_flushes_every_acknowledged_change(tmp_path: Path) -> None:
    """A process with many dirty contexts, sent SIGTERM, leaves every change in the store."""
    path = tmp_path / "store.db"
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as child:
        assert child.stdout is not None
        ids = child.stdout.readline().split()
        assert len(ids) == 20
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 128 + signal.SIGTERM
    manager = ContextManager(SQLiteStore(path))
    assert all(manager.get(cid).data == {"n": 5} for cid in ids)


def test_invalidate_drops_clean_copies_and_keeps_dirty_ones() -> None:
    """Another writer's change drops a clean cached copy; a dirty one is kept, not lost."""
    store = MemoryStore()
    mine, theirs = ContextManager(store), ContextManager(store)
    cid = mine.create(messages=[Message.user("task")]).session_id
    theirs.append(cid, turn(0))
    theirs.save(cid)
    assert len(mine.get(cid).conversation) == 1
    assert mine.invalidate(cid) is True
    assert len(mine.get(cid).conversation) == 3
    mine.update(cid, lambda c: c.set_data("x", 1))
    assert mine.invalidate(cid) is False
    assert mine.get(cid).data == {"x": 1}


def test_default_ladder_keeps_contexts_within_limits() -> None:
    """With the default ladder, a context over its token limit is compressed, nothing lost."""
    manager = ContextManager(MemoryStore(), limits=Limits(max_messages=200, max_tokens=600))
    cid = manager.create(
        messages=[Message.user("task: keep the build green", important=True)]
    ).session_id
    for i in range(30):
        manager.append(cid, turn(i))
    context = manager.get(cid)
    assert context.conversation.effective_tokens <= 600
    assert len(context.conversation) >= 61
    assert context.conversation.check().ok
    assert context.conversation.effective()[0].text.startswith("task")
