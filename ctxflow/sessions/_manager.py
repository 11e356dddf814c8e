"""The context manager: many agent sessions in one process, each an engine, none lost.

:meth:`ContextManager.create` and :meth:`ContextManager.get` return the
session's :class:`~ctxflow.engine.Engine`, the same live object while it is
cached. Engines live in an LRU cache over a store: at most ``max_live``, none
idle past ``ttl``; unloading saves first, and an unloaded engine is *retired*
(it refuses changes with :class:`~ctxflow.errors.SessionEvicted`), so no
change goes to a copy that is not the session's live one. Operations take
the engine's lock and follow a session an eviction reloaded; an engine in
use is never evicted.

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
    SessionError,
    SessionEvicted,
    SessionNotFound,
    StoreError,
)
from ctxflow.layers import LayeredState
from ctxflow.model import Message
from ctxflow.persistence import Store, new_session_id
from ctxflow.sessions._cache import Counters, Entry, ManagerStats, approx_bytes, retry, unpin
from ctxflow.sessions._lifecycle import Autosave, SignalFlush
from ctxflow.sessions._limits import Compress, LadderCompressor, Limits, check_limits, refuse_over
from ctxflow.sessions._merge import MergeStrategy, Part, merge_parts, originals, split_messages

__all__ = [
    "ContextManager",
    "LadderCompressor",
    "Limits",
    "ManagerStats",
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
    is :class:`~ctxflow.engine.Engine` or a subclass.
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
    ) -> None:
        if max_live < 1:
            raise SessionError(f"'max_live' must be >= 1 (got {max_live})", rule="max_live")
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

    # -- listeners -------------------------------------------------------------

    def _emit(self, hook: str, *args: Any) -> None:
        for listener in self.listeners:
            method = getattr(listener, hook, None)
            if method is not None:
                method(*args)

    # -- the cache -------------------------------------------------------------

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
        # One loader per id at a time (a stable lock, so two threads never both load
        # an id and cache two live engines); others wait and then hit the cache.
        with self._gates[hash(session_id) % len(self._gates)]:
            entry = self._cached(session_id)
            if entry is not None:
                return entry
            self._counts.misses += 1
            entry = self._load(session_id)
            with self._cache_lock:
                self._cache[session_id] = entry
        self._emit("on_loaded", entry.engine)
        self._evict_over_limit(keep=session_id)
        return entry

    def _load(self, session_id: str) -> Entry:
        try:
            with _critical.section():
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
            if entry.pins:
                return False
            if engine.dirty:
                try:
                    self._save(entry)
                except StoreError:
                    return False
            self._unload(entry, "was evicted from its manager")
            self._counts.evictions += 1
        self._emit("on_evicted", engine)
        return True

    def _unload(self, entry: Entry, reason: str) -> None:
        """Drop ``entry`` from the cache and retire its engine (its lock held)."""
        session_id = entry.engine.session_id
        with self._cache_lock:
            if self._cache.get(session_id) is entry:
                del self._cache[session_id]
        entry.engine.retire(reason)

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
        self._counts.saved(started)
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
                self._cache[engine.session_id] = entry
        self._emit("on_created", engine)
        self._evict_over_limit(keep=engine.session_id)
        return engine

    def get(self, context_id: str) -> Engine:
        """The session's live engine (loaded from the store on a miss)."""
        with self._locked(context_id) as entry:
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
            entry.bytes = approx_bytes(engine.conversation.messages)
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

        return self.update(context_id, change)

    def delete(self, context_id: str) -> None:
        """Delete a session and erase it from the store; its engine is retired."""
        with self._locked(context_id) as entry:
            engine = entry.engine
            self.store.erase(context_id)
            with self._cache_lock:
                self._cache.pop(context_id, None)
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
        """Stop autosave and flush everything; return the ids whose save failed."""
        self._autosave.stop()
        failed = self.flush()
        self._closed = True
        return failed

    def stats(self) -> ManagerStats:
        """Numbers for monitoring; logs a warning when a threshold is crossed."""
        with self._cache_lock:
            entries = list(self._cache.values())
        stats = self._counts.stats(entries)
        if stats.live >= self.warn_live_ratio * self.max_live:
            log.warning("live_contexts_high", live=stats.live, max_live=self.max_live)
        if stats.save_failures:
            log.warning("save_failures", failures=stats.save_failures)
        return stats
