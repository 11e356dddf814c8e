"""The context manager: many agent sessions in one process, each an engine, none lost.

:meth:`ContextManager.create` and :meth:`ContextManager.get` return the
session's :class:`~ctxflow.engine.Engine`, the same live object while it is
cached. Engines live in an LRU cache over a store: at most ``max_live``, none
idle past ``ttl``; unloading saves first, and an unloaded engine is *retired*
(it refuses changes with :class:`~ctxflow.errors.SessionEvicted`), so no
change goes to a copy that is not the session's live one. Operations take
the engine's lock and follow a session an eviction reloaded; an engine in
use is never evicted.

With :class:`~ctxflow.sessions.MemoryThresholds` the manager also keeps the
bytes its sessions hold in bounds: past the soft threshold it evicts the
largest idle sessions (saved first), at the hard one it refuses loads with
:class:`~ctxflow.errors.MemoryLimitExceeded`. It checks after each load and
create, on :meth:`ContextManager.check_memory`, and in the monitor thread
:meth:`ContextManager.start_monitor` starts. Each operation's latency goes
into a bounded ring for :meth:`ContextManager.stats`.

Gotchas: "acknowledged" means the call returned; durable after a flush or
close that reported no failure, or on return with ``write_through=True``.
The signal handlers never flush inside a store transaction or a half-applied
change (see :mod:`ctxflow._critical`), and exit ``128 + signum`` only after a
complete flush. The async methods run the same code in a worker thread, so
threads and tasks share one set of locks. docs/sessions.md has the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from ctxflow import _critical
from ctxflow._log import get_logger
from ctxflow.context import ChartConfiguration
from ctxflow.engine import Chart, Engine, load_chart
from ctxflow.errors import (
    CheckpointNotFound,
    ConflictError,
    CtxflowError,
    MemoryLimitExceeded,
    SessionError,
    SessionEvicted,
    SessionNotFound,
    StoreError,
)
from ctxflow.layers import LayeredState
from ctxflow.model import Message
from ctxflow.persistence import Store, new_session_id
from ctxflow.sessions._cache import Counters, Entry, Latency, ManagerStats, retry, unpin
from ctxflow.sessions._lifecycle import Autosave, Periodic, SignalFlush
from ctxflow.sessions._limits import Compress, LadderCompressor, Limits, check_limits, refuse_over
from ctxflow.sessions._memory import Level, MemoryCheck, MemoryThresholds, rss_bytes
from ctxflow.sessions._merge import MergeStrategy, Part, merge_parts, originals, split_messages

__all__ = [
    "ContextManager",
    "LadderCompressor",
    "Latency",
    "Limits",
    "ManagerStats",
    "MemoryCheck",
    "MemoryThresholds",
    "retry",
]

log = get_logger("ctxflow.sessions")
_DEFAULT: Any = object()

T = TypeVar("T")
#: Keyword arguments the manager sets itself on every engine it makes.
_OWN_OPTIONS = frozenset({"store", "checkpointer", "session_id", "conversation", "state", "data"})
#: How often an operation follows a session that an eviction reloaded before giving up.
_FOLLOW = 16


class ContextManager:
    """Create, get, update and delete sessions (engines) over a store, with caching and limits.

    ``engine_options`` are keyword arguments for every engine the manager
    makes (``chart``, ``model``, ``budget``, ``phases``, ...); ``engine_class``
    is :class:`~ctxflow.engine.Engine` or a subclass. ``memory`` bounds the
    bytes the sessions hold; an operation slower than ``slow_ms`` is logged
    (``slow_operation``; None: never).
    """

    def __init__(
        self,
        store: Store,
        *,
        max_live: int = 1_000,
        ttl: float | None = None,
        limits: Limits | None = None,
        compress: Compress | None = _DEFAULT,
        engine_options: Mapping[str, Any] | None = None,
        engine_class: type[Engine] = Engine,
        write_through: bool = False,
        listeners: Sequence[object] = (),
        clock: Callable[[], float] = time.monotonic,
        warn_live_ratio: float = 0.9,
        memory: MemoryThresholds | None = None,
        slow_ms: float | None = 1000.0,
    ) -> None:
        if max_live < 1:
            raise SessionError(f"'max_live' must be >= 1 (got {max_live})", rule="max_live")
        if memory is not None and not isinstance(memory, MemoryThresholds):
            raise SessionError(
                f"'memory' must be a MemoryThresholds or None (got {type(memory).__name__})",
                rule="memory",
            )
        if slow_ms is not None and not slow_ms >= 0:
            raise SessionError(f"'slow_ms' must be >= 0 or None (got {slow_ms})", rule="slow_ms")
        options = dict(engine_options or {})
        clash = sorted(_OWN_OPTIONS & set(options))
        if clash:
            raise SessionError(
                f"'engine_options' must not set what the manager sets itself (got {clash})",
                rule="engine_options",
            )
        if not (isinstance(engine_class, type) and issubclass(engine_class, Engine)):
            raise SessionError(
                f"'engine_class' must be Engine or a subclass (got {engine_class!r})",
                rule="engine_class",
            )
        self.store = store
        self.max_live = max_live
        self.ttl = ttl
        self.limits = limits or Limits()
        self.compress: Compress | None = LadderCompressor() if compress is _DEFAULT else compress
        # One loaded chart for every engine: loading one per engine costs ~10 ms and ~100 KiB.
        chart = options.get("chart", "agent_loop")
        options["chart"] = chart if isinstance(chart, Chart) else load_chart(chart)
        self.engine_options = options
        self.engine_class = engine_class
        self.write_through = write_through
        self.listeners = list(listeners)
        self.clock = clock
        self.warn_live_ratio = warn_live_ratio
        self._cache: OrderedDict[str, Entry] = OrderedDict()
        self._cache_lock = _critical.CriticalLock()
        self._gates = [threading.Lock() for _ in range(64)]
        self._counts = Counters()
        self._autosave = Autosave(self.flush, self._evict_over_limit)
        self._signals = SignalFlush(self.close)
        self._closed = False
        self._warned_live = False
        self.memory = memory
        self.slow_ms = slow_ms
        self._held = 0  # the bytes of every cached entry (changed under the cache lock)
        self._level: Level = "ok"
        self._rss_high = False
        self._monitor = Periodic("ctxflow-memory-monitor", self._monitor_tick)

    # -- listeners -------------------------------------------------------------

    def _emit(self, hook: str, *args: Any) -> None:
        for listener in self.listeners:
            method = getattr(listener, hook, None)
            if method is not None:
                method(*args)

    @contextlib.contextmanager
    def _timed(self, operation: str, context_id: str) -> Iterator[None]:
        """Keep the latency of ``operation`` (when it completes); log it when slow."""
        started = time.perf_counter()
        yield
        self._took(operation, context_id, started)

    def _took(self, operation: str, context_id: str, started: float) -> None:
        ms = self._counts.timed(operation, started)
        if self.slow_ms is not None and ms >= self.slow_ms:
            log.warning(
                "slow_operation",
                operation=operation,
                context=context_id,
                ms=round(ms, 3),
                slow_ms=self.slow_ms,
            )

    # -- the cache -------------------------------------------------------------

    def _cache_entry(self, entry: Entry) -> None:
        """Put ``entry`` in the cache and count its bytes (the cache lock held)."""
        self._cache[entry.engine.session_id] = entry
        self._held += entry.bytes

    def _uncache(self, entry: Entry) -> None:
        """Take ``entry`` out of the cache if it is there (the cache lock held)."""
        session_id = entry.engine.session_id
        if self._cache.get(session_id) is entry:
            del self._cache[session_id]
            self._held -= entry.bytes

    def _remeasure(self, entry: Entry) -> None:
        """Count what the session appended since its last count (its engine's lock held)."""
        delta = entry.remeasure()
        if delta:
            with self._cache_lock:
                if self._cache.get(entry.engine.session_id) is entry:
                    self._held += delta

    def _cached(self, session_id: str) -> Entry | None:
        """The cached entry of a session (counted as a hit, moved to the LRU end), or None."""
        with self._cache_lock:
            entry = self._cache.get(session_id)
            if entry is not None:
                self._counts.hits += 1
                entry.last_used = self.clock()
                self._cache.move_to_end(session_id)
            return entry

    def _entry(self, session_id: str) -> Entry:
        entry = self._cached(session_id)
        if entry is not None:
            return entry
        self._admit(session_id)
        # One loader per id at a time (a stable lock, so two threads never both load
        # an id and cache two live engines); others wait and then hit the cache.
        with self._gates[hash(session_id) % len(self._gates)]:
            entry = self._cached(session_id)
            if entry is not None:
                return entry
            self._counts.misses += 1
            entry = self._load(session_id)
            entry.loaded()  # pinned until an operation holds it: no eviction in between
            with self._cache_lock:
                self._cache_entry(entry)
        self._emit("on_loaded", entry.engine)
        self._evict_over_limit(keep=session_id)
        self._relieve(keep=session_id)
        return entry

    def _load(self, session_id: str) -> Entry:
        try:
            with self._timed("load", session_id), _critical.section():
                engine = self.engine_class.from_checkpoint(
                    None, store=self.store, session_id=session_id, **self.engine_options
                )
        except CheckpointNotFound:
            raise SessionNotFound(
                f"no context with id {session_id!r} (never created, or deleted)",
                rule="unknown_context",
                context_id=session_id,
            ) from None
        return Entry(engine, self.clock())

    @contextlib.contextmanager
    def _locked(self, session_id: str) -> Iterator[Entry]:
        """Hold the live engine of a session: its lock taken, checked not retired."""
        for _ in range(_FOLLOW):
            entry = self._entry(session_id)
            engine = entry.engine
            with engine.lock:
                entry.held()
                if not engine.retired:
                    entry.pins += 1
                    try:
                        yield entry
                    finally:
                        entry.pins -= 1
                    return
        raise SessionEvicted(
            f"session {session_id!r} was evicted {_FOLLOW} times while waiting for its lock; "
            "raise max_live, or retry",
            rule="eviction_thrash",
            session_id=session_id,
        )

    def _evict_over_limit(self, keep: str | None = None) -> None:
        now = self.clock()
        victims: list[str] = []
        with self._cache_lock:
            if self.ttl is not None:
                victims += [
                    sid
                    for sid, e in self._cache.items()
                    if now - e.last_used > self.ttl and sid != keep
                ]
            excess = len(self._cache) - len(victims) - self.max_live
            for sid, entry in self._cache.items():
                if excess <= 0:
                    break
                if sid != keep and sid not in victims and not entry.pins:
                    victims.append(sid)
                    excess -= 1
            live = len(self._cache)
        for sid in victims:
            self.evict(sid)
        high = live >= self.warn_live_ratio * self.max_live
        if high and not self._warned_live:  # once per crossing, not once per call
            log.warning("live_contexts_high", live=live, max_live=self.max_live)
        self._warned_live = high

    def evict(self, context_id: str) -> bool:
        """Save (if dirty) and unload one session; False when it stays (in use, or unsaved).

        The unloaded engine is retired: it refuses further changes. An engine
        an operation of this manager is using is not unloaded.
        """
        with self._cache_lock:
            entry = self._cache.get(context_id)
        if entry is None:
            return True
        engine = entry.engine
        with engine.lock:
            if engine.retired:
                return True
            if not self._evict_held(entry, "was evicted from its manager", "save"):
                return False
        self._emit("on_evicted", engine)
        return True

    def _evict_held(self, entry: Entry, reason: str, trigger: str) -> bool:
        """Save ``entry`` if dirty and unload it (its engine's lock held); False if it stays."""
        if entry.pins:
            return False
        if entry.engine.dirty:
            try:
                self._save(entry, trigger=trigger)
            except StoreError:
                return False
        self._unload(entry, reason)
        self._counts.evictions += 1
        return True

    def _unload(self, entry: Entry, reason: str) -> None:
        """Drop ``entry`` from the cache and retire its engine (its lock held)."""
        with self._cache_lock:
            self._uncache(entry)
        entry.engine.retire(reason)

    # -- memory ------------------------------------------------------------------

    def _admit(self, context_id: str, doing: str = "loading") -> None:
        """Refuse a load at the hard memory limit (after evicting what is idle)."""
        memory = self.memory
        if memory is None or self._held < memory.hard_bytes:
            return
        self._check_memory()
        held = self._held
        if held >= memory.hard_bytes:
            self._counts.refused_loads += 1
            log.warning("load_refused", context=context_id, held=held, hard_bytes=memory.hard_bytes)
            raise MemoryLimitExceeded(
                f"{doing} context {context_id!r} is refused: the manager's sessions hold "
                f"{held:,} bytes, at or over its hard limit of {memory.hard_bytes:,} bytes "
                f"(hard={memory.hard} of max_bytes={memory.max_bytes:,}), and no idle session "
                "could be evicted to make room",
                rule="memory_hard_limit",
                context_id=context_id,
                held_bytes=held,
                limit_bytes=memory.hard_bytes,
            )

    def _relieve(self, keep: str | None = None) -> None:
        """After bytes were added: evict idle sessions when past the soft threshold."""
        if self.memory is not None and self._held > self.memory.soft_bytes:
            self._check_memory(keep=keep)

    def check_memory(self) -> MemoryCheck:
        """Count the bytes held, evict the largest idle sessions past the soft threshold.

        Each eviction saves first; a session whose save fails, or that an
        operation is using, stays. Logs an event when the level (``ok``,
        ``soft``, ``hard``) or the RSS alert changes. The monitor thread calls
        this; an application without one calls it itself.
        """
        return self._check_memory()

    def _check_memory(self, keep: str | None = None) -> MemoryCheck:
        with self._cache_lock:
            entries = list(self._cache.values())
        for entry in entries:  # catch up with changes made on engines directly
            lock = entry.engine.lock
            if lock.acquire(blocking=False):  # a busy engine is counted at its next update
                try:
                    self._remeasure(entry)
                finally:
                    lock.release()
        memory = self.memory
        evicted: list[str] = []
        freed = 0
        if memory is not None:
            self._note_level(memory.level(self._held), ())  # the crossing, before acting on it
        if memory is not None and self._held > memory.soft_bytes:
            now = self.clock()
            idle = [
                e
                for e in entries
                if e.engine.session_id != keep and not e.pins and now - e.last_used >= memory.idle
            ]
            for entry in sorted(idle, key=lambda e: e.bytes, reverse=True):
                if self._held <= memory.target_bytes:
                    break
                size = entry.bytes
                if self._evict_idle(entry):
                    evicted.append(entry.engine.session_id)
                    freed += size
        check = MemoryCheck(
            held_bytes=self._held,
            level=memory.level(self._held) if memory is not None else "ok",
            evicted=tuple(evicted),
            freed_bytes=freed,
            rss_bytes=rss_bytes(),
        )
        self._note_level(check.level, check.evicted)
        self._note_rss(check.rss_bytes)
        return check

    def _evict_idle(self, entry: Entry) -> bool:
        """Evict ``entry`` for memory unless its engine is busy, in use or unsaved."""
        engine = entry.engine
        if not engine.lock.acquire(blocking=False):
            return False
        try:
            if engine.retired or not self._evict_held(
                entry, "was evicted from its manager to free memory", "memory"
            ):
                return False
            self._counts.memory_evictions += 1
        finally:
            engine.lock.release()
        self._emit("on_evicted", engine)
        return True

    def _note_level(self, level: Level, evicted: Sequence[str]) -> None:
        """Log a change of memory level (once per crossing)."""
        if self.memory is None or level == self._level:
            return
        fields = {
            "level": level,
            "previous": self._level,
            "held": self._held,
            "max_bytes": self.memory.max_bytes,
            "evicted": len(evicted),
        }
        if level == "ok":
            log.info("memory_level", **fields)
        else:
            log.warning("memory_level", **fields)
        self._level = level

    def _note_rss(self, rss: int | None) -> None:
        """Log the RSS crossing its alert (once per crossing; it decides nothing)."""
        alert = self.memory.rss_alert_bytes if self.memory is not None else None
        if alert is None or rss is None:
            return
        high = rss >= alert
        if high and not self._rss_high:
            log.warning("rss_high", rss=rss, alert=alert)
        self._rss_high = high

    def _monitor_tick(self) -> None:
        self._check_memory()

    def invalidate(self, context_id: str) -> bool:
        """Drop the cached engine of a session another process changed; reload on next get.

        Wire it to a :class:`~ctxflow.sessions._ownership.SessionCoordinator`:
        ``on_invalidate=lambda change: manager.invalidate(change.session_id)``.
        An engine with unsaved changes is kept (and False returned): its next
        save is refused by the store's parent check, so nothing is silently lost.
        """
        with self._cache_lock:
            entry = self._cache.get(context_id)
        if entry is None:
            return True
        with entry.engine.lock:
            if entry.engine.dirty:
                log.warning("invalidate_dirty_copy", context=context_id)
                return False
            self._unload(entry, "was changed by another process and dropped from this manager")
        return True

    def drop_lost(self, context_id: str) -> bool:
        """Retire the engine of a session this process lost to another owner, unsaved or not.

        Wire it to a coordinator: ``SessionCoordinator(..., on_lost=manager.drop_lost)``.
        Changes made after the lease was lost can never be saved (every write is
        fenced), so they are dropped with a warning rather than kept as a copy
        that diverges from the new owner's; the next ``get`` loads the session
        afresh. True when unsaved changes were dropped.
        """
        with self._cache_lock:
            entry = self._cache.get(context_id)
        if entry is None:
            return False
        with entry.engine.lock:
            unsaved = entry.engine.dirty
            if unsaved:
                log.warning("lost_session_unsaved_dropped", context=context_id)
            self._unload(entry, "was lost to another owner and dropped from this manager")
        return unsaved

    # -- persistence -----------------------------------------------------------

    def _save(self, entry: Entry, trigger: str = "save") -> None:
        engine = entry.engine
        started = time.perf_counter()
        try:
            checkpoint_id = engine.checkpoint(trigger)
        except CtxflowError as exc:
            self._counts.save_failures += 1
            log.error("save_failed", context=engine.session_id, error=str(exc))
            raise StoreError(
                f"saving context {engine.session_id!r} failed: {exc}; it stays in memory, unsaved",
                rule="save_failed",
                context_id=engine.session_id,
            ) from exc
        self._counts.saves += 1
        self._took("save", engine.session_id, started)
        self._emit("on_checkpointed", engine, checkpoint_id)

    def save(self, context_id: str) -> None:
        """Checkpoint one session now (if it changed)."""
        with self._locked(context_id) as entry:
            if entry.engine.dirty:
                self._save(entry)

    def flush(self) -> list[str]:
        """Checkpoint every dirty session; return the ids whose save failed."""
        with self._cache_lock:
            entries = list(self._cache.values())
        failed = []
        for entry in entries:
            engine = entry.engine
            with engine.lock:
                if engine.dirty and not engine.retired:
                    try:
                        self._save(entry)
                    except StoreError:
                        failed.append(engine.session_id)
        return failed

    # -- the public operations ---------------------------------------------------

    def create(
        self,
        context_id: str | None = None,
        *,
        messages: Sequence[Message] = (),
        state: LayeredState | None = None,
        data: Mapping[str, Any] | None = None,
        chart: ChartConfiguration | None = None,
        actor: str | None = None,
    ) -> Engine:
        """Create and save a new session; return its engine.

        It starts in the chart's initial state, or in ``chart``'s configuration.
        """
        if context_id is not None:
            with self._cache_lock:
                taken = context_id in self._cache
            with _critical.section():
                taken = taken or context_id in self.store.sessions()
            if taken:
                raise SessionError(
                    f"a context with id {context_id!r} exists", rule="context_exists"
                )
        self._admit(context_id or "(new)", "creating")
        engine = self.engine_class(
            store=self.store,
            session_id=context_id or new_session_id(),
            conversation=tuple(messages),
            state=state,
            data=data,
            **self.engine_options,
        )
        gate = self._gates[hash(engine.session_id) % len(self._gates)]
        with gate, engine.lock:  # no loader sees the first checkpoint before it is cached
            if chart is not None:
                engine.set_chart(chart, actor=actor)
            engine.audit.append(at=engine.clock(), actor=actor, phase=engine.phase, kind="created")
            check_limits(engine, self.limits, self.compress)
            entry = Entry(engine, self.clock())
            self._save(entry, trigger="created")
            with self._cache_lock:
                self._cache_entry(entry)
        self._emit("on_created", engine)
        self._evict_over_limit(keep=engine.session_id)
        self._relieve(keep=engine.session_id)
        return engine

    def get(self, context_id: str) -> Engine:
        """The session's live engine (loaded from the store on a miss)."""
        with self._timed("get", context_id), self._locked(context_id) as entry:
            engine = entry.engine
        self._emit("on_accessed", engine)
        return engine

    def update(
        self,
        context_id: str,
        change: Callable[[Engine], T],
        *,
        expected_version: int | None = None,
    ) -> T:
        """Apply ``change`` to the session's live engine under its lock; enforce limits.

        With ``expected_version`` the update is optimistic: an engine at another
        version raises :class:`~ctxflow.errors.ConflictError` (wrap the call in
        :func:`retry`). With write-through the change is saved before the call
        returns. If ``change`` raises, the exception propagates; changes
        already made through the engine's methods stay (each is atomic).
        """
        with self._timed("update", context_id):
            return self._update(context_id, change, expected_version)

    def _update(
        self, context_id: str, change: Callable[[Engine], T], expected_version: int | None
    ) -> T:
        with self._locked(context_id) as entry:
            engine = entry.engine
            if expected_version is not None and engine.version != expected_version:
                raise ConflictError(
                    f"context {context_id!r} is at version {engine.version}, "
                    f"not {expected_version}",
                    rule="version_conflict",
                    context_id=context_id,
                )
            result = change(engine)
            check_limits(engine, self.limits, self.compress)
            self._remeasure(entry)
            if self.write_through and engine.dirty:
                self._save(entry, trigger="write_through")
        self._emit("on_updated", engine)
        return result

    def append(
        self, context_id: str, messages: Sequence[Message], *, actor: str | None = None
    ) -> Engine:
        """Append messages to a session (a convenience over :meth:`update`).

        Without a compression ladder, an append that would cross a limit is
        refused before anything changes.
        """
        batch = tuple(messages)

        def change(engine: Engine) -> Engine:
            if self.compress is None:
                conversation = engine.conversation
                refuse_over(
                    engine,
                    self.limits,
                    conversation.effective_count + len(batch),
                    conversation.effective_tokens + sum(conversation.measure(m) for m in batch),
                )
            engine.add_messages(batch, actor=actor)
            return engine

        with self._timed("add", context_id):
            return self._update(context_id, change, None)

    def delete(self, context_id: str) -> None:
        """Delete a session and erase it from the store; its engine is retired."""
        with self._locked(context_id) as entry:
            engine = entry.engine
            self.store.erase(context_id)
            with self._cache_lock:
                self._uncache(entry)
            engine.retire("was deleted")
        self._emit("on_deleted", engine)

    # -- several sessions ------------------------------------------------------

    @contextlib.contextmanager
    def batch(self, context_ids: Sequence[str]) -> Iterator[list[Engine]]:
        """Lock several sessions' live engines, in sorted id order, for one combined update."""
        ordered = sorted(set(context_ids))
        for _ in range(_FOLLOW):
            with contextlib.ExitStack() as stack:
                entries = []
                for sid in ordered:  # each held (so not evicted) before the next is loaded
                    entry = self._entry(sid)
                    stack.enter_context(entry.engine.lock)
                    entry.held()
                    entries.append(entry)
                    if entry.engine.retired:
                        break
                    entry.pins += 1
                    stack.callback(unpin, entry)
                if any(e.engine.retired for e in entries):
                    continue  # an eviction raced: take the reloaded engines
                by_id = {e.engine.session_id: e.engine for e in entries}
                yield [by_id[sid] for sid in context_ids]
                for entry in entries:
                    check_limits(entry.engine, self.limits, self.compress)
                    self._remeasure(entry)
                    if self.write_through and entry.engine.dirty:
                        self._save(entry, trigger="write_through")
                return
        raise SessionEvicted(
            f"sessions {ordered} kept being evicted while waiting for their locks; "
            "raise max_live, or retry",
            rule="eviction_thrash",
        )

    def merge(
        self,
        context_ids: Sequence[str],
        *,
        strategy: MergeStrategy = "last",
        new_id: str | None = None,
        actor: str | None = None,
    ) -> Engine:
        """A new session merging several (they stay as they are).

        It lands in the phase (chart configuration and history) of the first
        session named.
        """
        with self.batch(context_ids) as engines:
            parts = [
                Part(
                    id=e.session_id,
                    messages=tuple(originals(e.conversation)),
                    state=e.state,
                    data=dict(e.data),
                )
                for e in engines
            ]
            chart = engines[0].chart_configuration if engines else None
            messages, state, data = merge_parts(parts, strategy=strategy)
        merged = self.create(
            new_id, messages=messages, state=state, data=data, chart=chart, actor=actor
        )
        self._emit("on_merged", merged, list(context_ids))
        return merged

    def split(self, context_id: str, at: str, *, actor: str | None = None) -> tuple[Engine, Engine]:
        """Two new sessions: the messages before ``at``, and from ``at`` on.

        Both land in the source session's phase (its chart configuration and history).
        """
        with self._locked(context_id) as entry:
            engine = entry.engine
            head, tail = split_messages(engine.conversation, at, context_id=context_id)
            state, data, chart = engine.state, dict(engine.data), engine.chart_configuration
        first = self.create(messages=head, state=state, data=data, chart=chart, actor=actor)
        second = self.create(messages=tail, state=state, data=data, chart=chart, actor=actor)
        return first, second

    # -- async forms -------------------------------------------------------------

    async def aget(self, context_id: str) -> Engine:
        """Async :meth:`get` (runs in a worker thread)."""
        return await asyncio.to_thread(self.get, context_id)

    async def aupdate(
        self,
        context_id: str,
        change: Callable[[Engine], T],
        *,
        expected_version: int | None = None,
    ) -> T:
        """Async :meth:`update` (runs in a worker thread, sharing the thread locks)."""
        return await asyncio.to_thread(
            self.update, context_id, change, expected_version=expected_version
        )

    async def acreate(self, context_id: str | None = None, **kwargs: Any) -> Engine:
        """Async :meth:`create`."""
        return await asyncio.to_thread(lambda: self.create(context_id, **kwargs))

    async def aflush(self) -> list[str]:
        """Async :meth:`flush`."""
        return await asyncio.to_thread(self.flush)

    # -- lifecycle ---------------------------------------------------------------

    def start_autosave(self, interval: float) -> None:
        """Flush dirty sessions every ``interval`` seconds in a daemon thread."""
        self._autosave.start(interval)

    def start_monitor(self, interval: float = 5.0) -> None:
        """Run :meth:`check_memory` every ``interval`` seconds in a daemon thread.

        It stops on :meth:`close`. A second call is a no-op.
        """
        self._monitor.start(interval)

    def install_signal_handlers(
        self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """On SIGTERM/SIGINT: flush every dirty session, then exit as the signal asks.

        The flush never runs inside a store transaction or a half-applied
        change: a signal landing in one is acted on when the main thread
        leaves it. Exit status ``128 + signum`` after a complete flush; status
        1, naming the sessions that could not be saved, otherwise.
        """
        self._signals.install(signals)

    def close(self) -> list[str]:
        """Stop autosave and the monitor, flush everything; return the ids whose save failed."""
        self._autosave.stop()
        self._monitor.stop()
        failed = self.flush()
        self._closed = True
        return failed

    def stats(self) -> ManagerStats:
        """Numbers for monitoring; logs a warning when a threshold is crossed."""
        with self._cache_lock:
            entries = list(self._cache.values())
            held = self._held
        limit = self.memory.max_bytes if self.memory is not None else None
        stats = self._counts.stats(entries, held=held, limit=limit, rss=rss_bytes())
        if stats.live >= self.warn_live_ratio * self.max_live:
            log.warning("live_contexts_high", live=stats.live, max_live=self.max_live)
        if stats.save_failures:
            log.warning("save_failures", failures=stats.save_failures)
        return stats
