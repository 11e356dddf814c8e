"""The manager's cache entries, what it counts for monitoring, and retry with backoff.

An entry knows roughly how many bytes its session holds. The figure is
counted as messages arrive, not measured: each update adds the messages
appended since the last count (a restore that swapped the conversation is
counted again in full), so its cost follows the change, not the history. It
is an estimate — the text held plus a fixed cost per message and block,
close to what ``tracemalloc`` sees for a loaded session — and it does not
count overlays, which are shorter copies of messages it already counted. The
process's RSS is read beside it for alerts only: CPython rarely gives freed
memory back to the system, so RSS would not fall after an eviction.

Latencies are kept per operation in a ring of the latest
:data:`LATENCY_SAMPLES` durations, so stats cost the same after a million calls.
"""

from __future__ import annotations

import functools
import random
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from ctxflow.engine import Engine
from ctxflow.errors import ConflictError, SessionEvicted
from ctxflow.model import Conversation, Message, Placeholder

__all__ = [
    "LATENCY_SAMPLES",
    "OPERATIONS",
    "Counters",
    "Entry",
    "Latency",
    "ManagerStats",
    "approx_bytes",
    "retry",
    "unpin",
]

T = TypeVar("T")

#: How many of the latest durations each operation keeps for its percentiles.
LATENCY_SAMPLES = 1024
#: The operations whose latencies a manager keeps: ``add`` is an append.
OPERATIONS = ("add", "get", "update", "save", "load")
#: What a message costs beside its text (the Message object, its id, its cached
#: count and its places in the log and the pair index), and what a block costs.
MESSAGE_BYTES = 800
#: What a hidden message restored without its body holds beside that: its index facts.
PLACEHOLDER_BYTES = 100
BLOCK_BYTES = 100


@attrs.frozen(kw_only=True)
class Latency:
    """Latency figures of one operation over its latest samples, in milliseconds."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@attrs.frozen(kw_only=True)
class ManagerStats:
    """A monitoring snapshot.

    ``bytes_in_memory`` is the manager's estimate of what its sessions hold
    (the figure its memory thresholds act on); ``rss_bytes`` is the process's
    resident set when the system reports it (for alerts). ``latency`` maps each
    of ``add``, ``get``, ``update``, ``save`` and ``load`` to its :class:`Latency`.
    """

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
    memory_evictions: int = 0
    refused_loads: int = 0
    memory_limit_bytes: int | None = None
    rss_bytes: int | None = None
    latency: Mapping[str, Latency] = attrs.field(factory=lambda: MappingProxyType({}))


def _latency(samples: Iterable[float], count: int) -> Latency:
    times = sorted(samples)
    if not times:
        return Latency(count=count, p50_ms=0.0, p99_ms=0.0, max_ms=0.0)
    return Latency(
        count=count,
        p50_ms=times[(len(times) - 1) // 2],
        p99_ms=times[min(len(times) - 1, int(len(times) * 0.99))],
        max_ms=times[-1],
    )


class Counters:
    """What a manager counts for monitoring: hits, misses, saves, evictions and latencies."""

    def __init__(self) -> None:
        self.hits = self.misses = self.saves = self.save_failures = self.evictions = 0
        self.memory_evictions = self.refused_loads = 0
        self.samples = {op: deque[float](maxlen=LATENCY_SAMPLES) for op in OPERATIONS}
        self.calls = dict.fromkeys(OPERATIONS, 0)

    def timed(self, operation: str, started: float) -> float:
        """Count one ``operation`` that began at ``started`` (``time.perf_counter``); its ms."""
        ms = (time.perf_counter() - started) * 1000
        self.samples[operation].append(ms)
        self.calls[operation] += 1
        return ms

    def stats(
        self,
        entries: Sequence[Entry],
        *,
        held: int,
        limit: int | None = None,
        rss: int | None = None,
    ) -> ManagerStats:
        """A snapshot over the cached ``entries``, ``held`` bytes of them."""
        total = self.hits + self.misses
        latency = {op: _latency(self.samples[op], self.calls[op]) for op in OPERATIONS}
        return ManagerStats(
            live=len(entries),
            dirty=sum(e.engine.dirty for e in entries),
            messages=sum(len(e.engine.conversation) for e in entries),
            tokens=sum(e.engine.conversation.effective_tokens for e in entries),
            bytes_in_memory=held,
            hits=self.hits,
            misses=self.misses,
            hit_rate=self.hits / total if total else 0.0,
            saves=self.saves,
            save_failures=self.save_failures,
            save_p50_ms=latency["save"].p50_ms,
            save_p99_ms=latency["save"].p99_ms,
            evictions=self.evictions,
            memory_evictions=self.memory_evictions,
            refused_loads=self.refused_loads,
            memory_limit_bytes=limit,
            rss_bytes=rss,
            latency=MappingProxyType(latency),
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


@functools.cache
def _fields(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in attrs.fields(kind) if f.name != "type")


def _plain_bytes(value: Any) -> int:
    """The characters (or bytes) of the text in ``value``: strings, containers, blocks."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_plain_bytes(k) + _plain_bytes(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(_plain_bytes(v) for v in value)
    kind: type = type(value)
    if not attrs.has(kind):
        return 0
    total = BLOCK_BYTES
    for name in _fields(kind):
        total += _plain_bytes(getattr(value, name))
    return total


def approx_bytes(messages: Iterable[Message]) -> int:
    """About how many bytes ``messages`` hold in a loaded session (see the module docstring)."""
    total = 0
    for message in messages:
        total += MESSAGE_BYTES + len(message.id)
        if type(message) is Placeholder and not message.loaded:
            total += PLACEHOLDER_BYTES  # its index facts; the body stays in the store
            continue
        for block in message.content:
            total += _plain_bytes(block)
    return total


class Entry:
    """One cached session: its engine, when it was last used, its pins and its bytes."""

    __slots__ = ("_counted", "_loading", "_source", "bytes", "engine", "last_used", "pins")

    def __init__(self, engine: Engine, now: float) -> None:
        self.engine = engine
        self.last_used = now
        self.pins = 0  # operations holding the engine (under its lock): never evicted then
        self._loading = False
        self.bytes = 0
        self._counted = 0
        self._source: weakref.ref[Conversation] | None = None
        self.remeasure()

    def loaded(self) -> None:
        """Pin a session just loaded (before it is cached) until an operation holds it.

        Without it an eviction could take the session between its load and its
        loader's lock, again and again under memory pressure.
        """
        self._loading = True
        self.pins += 1

    def held(self) -> None:
        """An operation took the engine's lock: the load's pin is no longer needed."""
        if self._loading:
            self._loading = False
            self.pins -= 1

    def remeasure(self) -> int:
        """Count what was appended since the last count; the change in :attr:`bytes`."""
        conversation = self.engine.conversation
        before = self.bytes
        if self._source is None or self._source() is not conversation:
            self._source, self._counted, self.bytes = weakref.ref(conversation), 0, 0
        new = conversation.since(self._counted)
        self._counted += len(new)
        self.bytes += approx_bytes(new)
        return self.bytes - before


def unpin(entry: Entry) -> None:
    entry.pins -= 1
