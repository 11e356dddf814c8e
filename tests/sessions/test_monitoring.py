"""The manager's monitoring: latency percentiles per operation, slow operations, events."""

from __future__ import annotations

from ctxflow.model import Message
from ctxflow.sessions import ContextManager, Latency
from ctxflow.sessions._cache import LATENCY_SAMPLES, OPERATIONS, Counters
from ctxflow.stores import MemoryStore
from ctxflow.testing import FixedCounter, capture_events


def test_stats_give_percentiles_for_each_operation() -> None:
    """Every operation the manager times has its count and ordered p50 <= p99 <= max."""
    manager = ContextManager(MemoryStore(), max_live=2, engine_options={"counter": FixedCounter()})
    ids = [manager.create(messages=[Message.user(f"task {i}")]).session_id for i in range(4)]
    for cid in ids:  # two of them were evicted: these reload them
        manager.append(cid, [Message.assistant("ok"), Message.user("next")])
        manager.update(cid, lambda e: e.set_data("n", 1))
        manager.get(cid)
        manager.save(cid)
    stats = manager.stats()
    assert set(stats.latency) == set(OPERATIONS)
    assert stats.latency["add"].count == 4
    assert stats.latency["update"].count == 4
    assert stats.latency["get"].count == 4
    assert stats.latency["load"].count == stats.misses >= 2
    assert stats.latency["save"].count == stats.saves
    for figures in stats.latency.values():
        assert 0 < figures.p50_ms <= figures.p99_ms <= figures.max_ms
    assert (stats.save_p50_ms, stats.save_p99_ms) == (
        stats.latency["save"].p50_ms,
        stats.latency["save"].p99_ms,
    )


def test_percentiles_over_known_samples() -> None:
    """p50 and p99 are order statistics of the samples kept."""
    counters = Counters()
    counters.samples["get"].extend(float(v) for v in range(1, 101))
    counters.calls["get"] = 100
    figures = counters.stats([], held=0).latency["get"]
    assert figures == Latency(count=100, p50_ms=50.0, p99_ms=100.0, max_ms=100.0)
    assert counters.stats([], held=0).latency["add"] == Latency(
        count=0, p50_ms=0.0, p99_ms=0.0, max_ms=0.0
    )


def test_latency_memory_is_bounded() -> None:
    """Past the ring's size the oldest samples go; the count keeps every call."""
    manager = ContextManager(MemoryStore(), engine_options={"counter": FixedCounter()})
    cid = manager.create(messages=[Message.user("task")]).session_id
    calls = LATENCY_SAMPLES + 100
    for _ in range(calls):
        manager.get(cid)
    assert len(manager._counts.samples["get"]) == LATENCY_SAMPLES
    assert manager.stats().latency["get"].count == calls


def test_slow_operations_are_logged_past_the_threshold() -> None:
    """With ``slow_ms=0`` every timed operation is an event; with None, none is."""
    manager = ContextManager(MemoryStore(), slow_ms=0.0, engine_options={"counter": FixedCounter()})
    with capture_events() as events:
        cid = manager.create(messages=[Message.user("task")]).session_id
        manager.append(cid, [Message.assistant("ok")])
        manager.get(cid)
    slow = [(e["operation"], e["context"]) for e in events if e["event"] == "slow_operation"]
    assert slow == [("save", cid), ("add", cid), ("get", cid)]
    assert all(e["ms"] >= 0 and e["slow_ms"] == 0.0 for e in events if "ms" in e)

    quiet = ContextManager(MemoryStore(), slow_ms=None, engine_options={"counter": FixedCounter()})
    with capture_events() as events:
        quiet.get(quiet.create(messages=[Message.user("task")]).session_id)
    assert [e for e in events if e["event"] == "slow_operation"] == []
