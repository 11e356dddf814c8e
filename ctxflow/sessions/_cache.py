"""The manager's cache entries, its monitoring snapshot, and retry with backoff."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs

from ctxflow.engine import Engine
from ctxflow.errors import ConflictError, SessionEvicted
from ctxflow.model import Message

__all__ = ["Entry", "ManagerStats", "approx_bytes", "retry", "unpin"]

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
