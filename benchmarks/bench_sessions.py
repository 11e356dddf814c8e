"""Many contexts in one process: memory per context, get/update latency, evict and reload."""

from __future__ import annotations

import statistics
import time
import tracemalloc

from benchmarks.harness import Harness
from ctxflow.model import Message, Role
from ctxflow.sessions._manager import ContextManager
from ctxflow.stores import MemoryStore


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def run(h: Harness) -> None:
    n = h.size(10_000, 300)
    corpus = [t for t in h.corpus() if t.id.startswith("taubench")]
    store = MemoryStore()
    manager = ContextManager(store, max_live=n)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    ids = []
    for i in range(n):
        transcript = corpus[i % len(corpus)]
        opening = [m for m in transcript.messages if m.role is not Role.SYSTEM][:1]
        ids.append(manager.create(messages=opening).session_id)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    h.record(
        f"sessions.memory_per_context.{n}",
        used / n / 1024,
        "KiB",
        note="live session (an engine) with its opening user turn, cache entry and checkpointer",
    )
    gets, updates = [], []
    for i in range(min(n, 5_000)):
        cid = ids[(i * 7919) % n]
        start = time.perf_counter()
        manager.get(cid)
        gets.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        manager.append(cid, [Message.assistant(f"reply {i}"), Message.user(f"next {i}")])
        updates.append((time.perf_counter() - start) * 1000)
    h.record(f"sessions.get_p50.{n}", statistics.median(gets), "ms")
    h.record(f"sessions.get_p99.{n}", _pct(gets, 0.99), "ms")
    h.record(f"sessions.update_p50.{n}", statistics.median(updates), "ms")
    h.record(f"sessions.update_p99.{n}", _pct(updates, 0.99), "ms")
    sample = ids[: min(n, 1_000)]
    start = time.perf_counter()
    for cid in sample:
        manager.evict(cid)
    h.record("sessions.evict_per_context", (time.perf_counter() - start) * 1000 / len(sample), "ms")
    start = time.perf_counter()
    for cid in sample:
        manager.get(cid)
    h.record(
        "sessions.reload_per_context", (time.perf_counter() - start) * 1000 / len(sample), "ms"
    )
