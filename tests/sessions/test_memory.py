"""The manager's memory thresholds: evict the largest idle sessions (saved first), then refuse."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ctxflow.errors import MemoryLimitExceeded, SessionError, SessionEvicted
from ctxflow.model import Message, ToolResultBlock, ToolUseBlock
from ctxflow.sessions import ContextManager, MemoryThresholds
from ctxflow.sessions import _cache as cache_module
from ctxflow.sessions._cache import approx_bytes
from ctxflow.sessions._memory import rss_bytes
from ctxflow.stores import MemoryStore, SQLiteStore
from ctxflow.testing import FixedCounter, capture_events


class Clock:
    """A manager clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def log(size: int, tag: str) -> list[Message]:
    """A task and one tool round whose result holds ``size`` characters."""
    call = Message(role="assistant", content=(ToolUseBlock(id=f"{tag}1", name="cat", input={}),))
    out = ToolResultBlock(tool_use_id=f"{tag}1", content="y" * size)
    return [Message.user(f"task {tag}"), call, Message(role="user", content=(out,))]


def manager_for(store: MemoryStore | SQLiteStore, clock: Clock, **memory: object) -> ContextManager:
    """A manager over ``store`` with memory thresholds (the rest at their defaults)."""
    return ContextManager(
        store,
        clock=clock,
        memory=MemoryThresholds(**memory),  # type: ignore[arg-type]
        engine_options={"counter": FixedCounter()},
        compress=None,
        limits=None,
    )


def test_past_soft_the_largest_idle_sessions_go_first_saved_and_reloadable() -> None:
    """Past the soft threshold the largest idle sessions are saved and evicted; none is lost."""
    store, clock = MemoryStore(), Clock()
    logs = {"a": log(2_000, "a"), "b": log(40_000, "b"), "c": log(15_000, "c")}
    extra = [Message.assistant("noted"), Message.user("go on " * 500)]
    new = log(10_000, "d")
    sizes = {k: approx_bytes(v) for k, v in logs.items()}
    sizes["b"] += approx_bytes(extra)
    total = sum(sizes.values()) + approx_bytes(new)
    # soft at 0.9 of everything: only the last create crosses it; target 0.7 of it.
    manager = manager_for(store, clock, max_bytes=int(total / 0.9), idle=30.0)
    for key, messages in logs.items():
        manager.create(key, messages=messages)
    manager.append("b", extra)  # acknowledged, not yet saved
    assert manager.get("b").dirty
    assert manager.stats().bytes_in_memory == sum(sizes.values())
    b_engine, c_engine = manager.get("b"), manager.get("c")
    clock.now += 60  # a, b, c are idle now

    with capture_events() as events:
        manager.create("d", messages=new)

    stats = manager.stats()
    assert stats.memory_evictions == 1 and stats.live == 3  # b alone brought it under target
    assert b_engine.retired and not c_engine.retired
    assert stats.bytes_in_memory == total - sizes["b"]
    assert stats.bytes_in_memory <= manager.memory.target_bytes  # type: ignore[union-attr]
    levels = [e for e in events if e["event"] == "memory_level"]
    assert [(e["previous"], e["level"]) for e in levels] == [("ok", "soft"), ("soft", "ok")]
    assert levels[0]["evicted"] == 0 and levels[1]["evicted"] == 1
    with pytest.raises(SessionEvicted):
        b_engine.add_message(Message.assistant("too late"))

    fresh = ContextManager(store, engine_options={"counter": FixedCounter()}).get("b")
    assert fresh.conversation.messages == (*logs["b"], *extra)
    again = manager.get("b")  # reloaded: past soft again, so the idle c (then a) go
    assert again.conversation.messages == fresh.conversation.messages
    assert c_engine.retired and not manager.get("d").retired


def test_a_check_evicts_in_order_of_size_and_skips_a_session_in_use() -> None:
    """A check evicts idle sessions largest first, down to the target; one an operation is
    using stays however large it is."""
    store, clock = MemoryStore(), Clock()
    logs = {k: log(v, k) for k, v in {"huge": 60_000, "big": 30_000, "mid": 20_000}.items()}
    logs["small"] = log(5_000, "small")
    size = {k: approx_bytes(m) for k, m in logs.items()}
    total = sum(size.values())
    target = (size["huge"] + size["small"] + 1) / total  # big and mid must go, small need not
    manager = manager_for(store, clock, max_bytes=total, soft=0.9, target=target, idle=30.0)
    for key, messages in logs.items():
        manager.create(key, messages=messages)  # past soft at the last one; none idle yet
    assert manager.stats().memory_evictions == 0
    clock.now += 60

    evicted = manager.update("huge", lambda engine: manager.check_memory().evicted)
    assert evicted == ("big", "mid")
    assert manager.stats().bytes_in_memory == size["huge"] + size["small"]
    assert sorted(store.sessions()) == sorted(logs)


def test_at_the_hard_limit_a_load_is_refused_and_nothing_changes() -> None:
    """With no idle session to evict, a create or load at the hard limit raises and changes
    nothing; once sessions go idle the same load succeeds."""
    store, clock = MemoryStore(), Clock()
    one = approx_bytes(log(5_000, "x"))
    manager = manager_for(store, clock, max_bytes=3 * one, soft=0.5, target=0.4, idle=30.0)
    manager.create("spare", messages=log(100, "s"))
    assert manager.evict("spare")  # stored, not live
    for key in "abc":
        manager.create(key, messages=log(5_000, key))  # used just now: past soft, none idle
    before = manager.stats()
    assert before.memory_evictions == 0 and before.bytes_in_memory == 3 * one
    sessions = sorted(store.sessions())

    with capture_events() as events, pytest.raises(MemoryLimitExceeded) as refused:
        manager.create("d", messages=log(10, "d"))
    assert refused.value.rule == "memory_hard_limit"
    assert refused.value.held_bytes == before.bytes_in_memory  # type: ignore[attr-defined]
    assert refused.value.limit_bytes == 3 * one  # type: ignore[attr-defined]
    with pytest.raises(MemoryLimitExceeded, match="'spare'"):
        manager.get("spare")

    after = manager.stats()
    assert sorted(store.sessions()) == sessions
    assert after.live == before.live and after.bytes_in_memory == before.bytes_in_memory
    assert after.refused_loads == 2 and after.misses == before.misses
    assert [e["context"] for e in events if e["event"] == "load_refused"] == ["d"]

    clock.now += 60  # now idle: a load makes room first
    assert manager.get("spare").conversation.messages[0].text == "task s"
    assert manager.stats().memory_evictions >= 1


def test_a_session_whose_save_fails_stays(tmp_path: Path) -> None:
    """An eviction for memory whose save fails keeps the session, logs the failure, refuses."""
    store, clock = SQLiteStore(tmp_path / "s.db"), Clock()
    one = approx_bytes(log(5_000, "x"))
    manager = manager_for(store, clock, max_bytes=2 * one, soft=0.5, target=0.4)
    manager.create("a", messages=log(5_000, "a"))
    manager.append("a", [Message.assistant("unsaved")])
    store.close()
    with capture_events() as events:
        check = manager.check_memory()
    assert check.level == "soft" and check.evicted == ()
    assert not manager.get("a").retired and manager.get("a").dirty
    assert [e["context"] for e in events if e["event"] == "save_failed"] == ["a"]
    assert manager.stats().save_failures == 1


def test_the_monitor_evicts_in_the_background_and_stops_on_close() -> None:
    """The monitor thread counts changes made on engines directly, evicts, and stops on close."""
    store, clock = MemoryStore(), Clock()
    one = approx_bytes(log(5_000, "x"))
    manager = manager_for(store, clock, max_bytes=4 * one, soft=0.6, target=0.3)
    engines = [manager.create(k, messages=log(10, k)) for k in "ab"]
    engines[0].add_messages(log(20_000, "z")[1:])  # straight on the engine: no manager call
    assert manager.stats().bytes_in_memory < 2 * one
    manager.start_monitor(interval=0.01)
    deadline = time.monotonic() + 5
    while not engines[0].retired and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engines[0].retired and not engines[1].retired
    threads = [t for t in threading.enumerate() if t.name == "ctxflow-memory-monitor"]
    assert len(threads) == 1
    assert manager.close() == []
    assert not threads[0].is_alive()
    copy = ContextManager(store, engine_options={"counter": FixedCounter()}).get("a")
    assert len(copy.conversation) == 5


def test_bytes_are_counted_by_the_change_not_the_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """An update measures only the messages it appended; the total equals a full count."""
    manager = ContextManager(MemoryStore(), engine_options={"counter": FixedCounter()})
    history = [m for i in range(300) for m in log(50, f"h{i}")]
    cid = manager.create(messages=history).session_id
    measured: list[int] = []
    real = cache_module.approx_bytes

    def spy(messages: list[Message]) -> int:
        measured.append(len(messages))
        return real(messages)

    monkeypatch.setattr(cache_module, "approx_bytes", spy)
    manager.append(cid, log(50, "new"))
    assert measured == [3]
    engine = manager.get(cid)
    assert manager.stats().bytes_in_memory == real(engine.conversation.messages)


def test_bytes_follow_a_restore_that_swaps_the_conversation() -> None:
    """After a restore to an earlier checkpoint the count is the restored conversation's."""
    manager = ContextManager(MemoryStore(), engine_options={"counter": FixedCounter()})
    engine = manager.create(messages=log(100, "a"))
    first = engine.checkpoint("manual")
    manager.append(engine.session_id, log(9_000, "b")[1:])
    manager.update(engine.session_id, lambda e: e.restore(first))
    assert manager.stats().bytes_in_memory == approx_bytes(engine.conversation.messages)
    assert len(engine.conversation) == 3


def test_rss_alert_is_logged_once_per_crossing() -> None:
    """An RSS over the alert is logged once, not at every check; it decides nothing."""
    if rss_bytes() is None:
        pytest.skip("this system does not report the process's RSS through /proc")
    manager = manager_for(MemoryStore(), Clock(), max_bytes=10**9, rss_alert_bytes=1)
    manager.create("a", messages=log(10, "a"))
    with capture_events() as events:
        checks = [manager.check_memory() for _ in range(3)]
    assert [e["event"] for e in events] == ["rss_high"]
    assert all(c.level == "ok" and c.evicted == () for c in checks)
    assert manager.stats().rss_bytes is not None


@pytest.mark.parametrize(
    ("options", "rule"),
    [
        ({"max_bytes": 0}, "memory"),
        ({"max_bytes": 100, "soft": 0.5, "target": 0.6}, "memory"),
        ({"max_bytes": 100, "soft": 0.9, "hard": 0.8}, "memory"),
        ({"max_bytes": 100, "idle": -1.0}, "memory"),
        ({"max_bytes": 100, "rss_alert_bytes": 0}, "memory"),
    ],
)
def test_bad_thresholds_are_refused(options: dict[str, float], rule: str) -> None:
    """Thresholds out of order or out of range raise a SessionError naming the values."""
    with pytest.raises(SessionError) as bad:
        MemoryThresholds(**options)  # type: ignore[arg-type]
    assert bad.value.rule == rule


def test_bad_manager_memory_options_are_refused() -> None:
    """The manager refuses a 'memory' that is not MemoryThresholds and a negative 'slow_ms'."""
    with pytest.raises(SessionError, match="'memory' must be a MemoryThresholds"):
        ContextManager(MemoryStore(), memory=1000)  # type: ignore[arg-type]
    with pytest.raises(SessionError, match="'slow_ms' must be >= 0"):
        ContextManager(MemoryStore(), slow_ms=-1)
    with pytest.raises(SessionError, match="'interval' must be > 0"):
        ContextManager(MemoryStore()).start_monitor(0)


ROUNDS = 15


def test_threads_lose_nothing_while_the_monitor_evicts() -> None:
    """Four threads appending while the monitor keeps evicting: every append is kept, and the
    count of bytes held matches the sessions still live."""
    store, clock = MemoryStore(), Clock()
    manager = manager_for(store, clock, max_bytes=20_000, soft=0.1, target=0.05, hard=1000.0)
    ids = [
        manager.create(f"s{i}", messages=[Message.user(f"task {i}")]).session_id for i in range(8)
    ]
    manager.start_monitor(interval=0.002)
    errors: list[BaseException] = []

    def work(mine: list[str]) -> None:
        try:
            for n in range(ROUNDS):
                for cid in mine:
                    manager.append(cid, [Message.assistant(f"{cid} {n}"), Message.user("more")])
        except BaseException as exc:  # pragma: no cover - the failure this test looks for
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(ids[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert manager.close() == []
    assert manager.stats().memory_evictions > 0
    cached = list(manager._cache.values())
    assert manager.stats().bytes_in_memory == sum(
        approx_bytes(e.engine.conversation.messages) for e in cached
    )
    fresh = ContextManager(store, engine_options={"counter": FixedCounter()})
    for cid in ids:
        texts = [m.text for m in fresh.get(cid).conversation.messages]
        assert texts[1::2] == [f"{cid} {n}" for n in range(ROUNDS)]
