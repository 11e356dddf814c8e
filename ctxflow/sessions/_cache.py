"""The manager's cache entries, its monitoring snapshot, and retry with backoff."""

from __future__ import annotations

import random
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs

from ctxflow.engine import Engine
from ctxflow.errors import ConflictError, SessionEvicted
from ctxflow.model import Message

__all__ = ["Counters", "Entry", "ManagerStats", "approx_bytes", "retry", "unpin"]

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class ManagerStats:
    """A monitoring snapshot."""

    live: int
    dirty: int
    messages: int
    tokens: int
    bytes_in_memory: int
    hits: int
    misses: int
    hit_rate: float
    saves: int
    save_failures: int
    save_p50_ms: float
    save_p99_ms: float
    evictions: int


class Counters:
    """What a manager counts for monitoring: cache hits and misses, saves and their times."""

    def __init__(self) -> None:
        self.hits = self.misses = self.saves = self.save_failures = self.evictions = 0
        self.save_times: deque[float] = deque(maxlen=512)

    def saved(self, started: float) -> None:
        """Count one save that began at ``started`` (``time.perf_counter``)."""
        self.save_times.append((time.perf_counter() - started) * 1000)
        self.saves += 1

    def stats(self, entries: Sequence[Entry]) -> ManagerStats:
        """A snapshot over the cached ``entries``."""
        times = sorted(self.save_times)
        total = self.hits + self.misses
        return ManagerStats(
            live=len(entries),
            dirty=sum(e.engine.dirty for e in entries),
            messages=sum(len(e.engine.conversation) for e in entries),
            tokens=sum(e.engine.conversation.effective_tokens for e in entries),
            bytes_in_memory=sum(e.bytes for e in entries),
            hits=self.hits,
            misses=self.misses,
            hit_rate=self.hits / total if total else 0.0,
            saves=self.saves,
            save_failures=self.save_failures,
            save_p50_ms=statistics.median(times) if times else 0.0,
            save_p99_ms=times[min(len(times) - 1, int(len(times) * 0.99))] if times else 0.0,
            evictions=self.evictions,
        )


def retry(
    fn: Callable[[], T],
    *,
    attempts: int = 8,
    base: float = 0.005,
    cap: float = 0.5,
    on: tuple[type[BaseException], ...] = (ConflictError, SessionEvicted),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it does not raise one of ``on``; back off exponentially with jitter.

    By default it gets past optimistic conflicts and engines retired by an eviction.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except on:
            if attempt == attempts - 1:
                raise
            sleep(random.uniform(0, min(cap, base * 2**attempt)))
    raise AssertionError("unreachable")  # pragma: no cover


def approx_bytes(messages: Sequence[Message]) -> int:
    total = 0
    for message in messages:
        for block in message.content:
            total += 64 + sum(len(v) for v in attrs.asdict(block).values() if isinstance(v, str))
    return total


class Entry:
    __slots__ = ("bytes", "engine", "last_used", "pins")

    def __init__(self, engine: Engine, now: float) -> None:
        self.engine = engine
        self.last_used = now
        self.pins = 0  # operations holding the engine (under its lock): never evicted then
        self.bytes = approx_bytes(engine.conversation.messages)


def unpin(entry: Entry) -> None:
    entry.pins -= 1
