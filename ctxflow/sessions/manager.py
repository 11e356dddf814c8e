"""The context manager: thousands of agent contexts in one process, none ever lost.

Contexts live in an LRU cache in front of a :class:`~ctxflow.stores.Store`.
The cache holds at most ``max_live`` contexts and unloads those idle longer
than ``ttl`` seconds; unloading *persists first* (a checkpoint of a dirty
context), so evicted means unloaded, never lost. If that save fails the context
stays in memory and the failure is reported — a store failing mid-save leaves
the in-memory context intact.

Durability: by default a change is in memory until the next save (autosave on
an interval, eviction, :meth:`ContextManager.flush`, or shutdown — SIGTERM and
SIGINT handlers flush every dirty context before the process exits). With
``write_through=True`` every acknowledged update is checkpointed before the
call returns.

Limits: each context keeps at most ``max_messages`` messages and
``max_tokens`` tokens in its *effective* view (defaults 2,000 and 150,000). A
change that crosses a limit runs the compression ladder (tags, never deletes;
one :class:`~ctxflow.compression.Ladder` per context by default); with
``compress=None`` such a change is refused with ``BudgetExceeded`` before
anything changes.

Concurrency: each context has a lock; :meth:`ContextManager.batch` takes the
locks of several contexts in sorted id order (no deadlock); :meth:`update` with
``expected_version`` is optimistic and :func:`retry` retries conflicts with
exponential backoff and jitter. The async methods run the same code in a
worker thread (``asyncio.to_thread``), so threads and tasks share one set of
locks and a waiting task never blocks its event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import statistics
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import Any, TypeVar

import attrs
import structlog

from ctxflow.checkpoints import Checkpointer
from ctxflow.compression import Ladder
from ctxflow.errors import (
    BudgetExceeded,
    CheckpointNotFound,
    CtxflowError,
    SessionError,
    SessionNotFound,
    StoreError,
)
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation, Message
from ctxflow.sessions.context import Context
from ctxflow.sessions.merge import MergeStrategy, Part, merge_parts, originals, split_messages
from ctxflow.stores.base import Store

__all__ = [
    "ConflictError",
    "ContextManager",
    "LadderCompressor",
    "Limits",
    "ManagerStats",
    "retry",
]

log = structlog.get_logger("ctxflow.sessions")
_DEFAULT: Any = object()

T = TypeVar("T")
Measure = Callable[[Message], int]
#: A compression run: given the conversation, the state and a token target, tag
#: messages through the Conversation's methods and return the new state.
Compress = Callable[[Conversation, LayeredState, int], LayeredState]


class LadderCompressor:
    """The default compressor: ctxflow's compression ladder, one per context.

    A ladder keeps a short history per session (to detect thrash), so each
    context gets its own. The manager's token target ``T`` is the ladder's
    target; its hard limit is ``T / policy.target`` (the context's limit).
    """

    def __init__(self, factory: Callable[[], Ladder] = Ladder) -> None:
        self.factory = factory
        # Keyed weakly by the conversation: an unloaded context's ladder goes with it.
        self._ladders: weakref.WeakKeyDictionary[Conversation, Ladder] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(
        self, conversation: Conversation, state: LayeredState, target: int
    ) -> LayeredState:
        with self._lock:
            ladder = self._ladders.get(conversation)
            if ladder is None:
                ladder = self._ladders[conversation] = self.factory()
        budget = max(1, int(target / ladder.policy.target))
        return ladder.run(conversation, state, budget=budget).state


class ConflictError(SessionError):
    """An optimistic update found the context at another version."""


@attrs.frozen(kw_only=True)
class Limits:
    """Per-context limits on the effective view, enforced through compression."""

    max_messages: int = 2_000
    max_tokens: int = 150_000
    target: float = 0.5

    def __attrs_post_init__(self) -> None:
        if self.max_messages < 2 or self.max_tokens < 1:
            raise SessionError(
                f"limits must be positive (got max_messages={self.max_messages}, "
                f"max_tokens={self.max_tokens})",
                rule="limits",
            )
        if not 0 < self.target < 1:
            raise SessionError(
                f"'target' must be between 0 and 1 (got {self.target})", rule="limits"
            )


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
    on: tuple[type[BaseException], ...] = (ConflictError,),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it does not raise one of ``on``; back off exponentially with jitter."""
    for attempt in range(attempts):
        try:
            return fn()
        except on:
            if attempt == attempts - 1:
                raise
            sleep(random.uniform(0, min(cap, base * 2**attempt)))
    raise AssertionError("unreachable")  # pragma: no cover


def _approx_bytes(messages: Sequence[Message]) -> int:
    total = 0
    for message in messages:
        for block in message.content:
            total += 64 + sum(len(v) for v in attrs.asdict(block).values() if isinstance(v, str))
    return total


class _Entry:
    __slots__ = ("bytes", "checkpointer", "context", "last_used")

    def __init__(self, context: Context, checkpointer: Checkpointer, now: float) -> None:
        self.context = context
        self.checkpointer = checkpointer
        self.last_used = now
        self.bytes = _approx_bytes(context.conversation.messages)


class ContextManager:
    """Create, get, update and delete contexts over a store, with caching and limits."""

    def __init__(
        self,
        store: Store,
        *,
        max_live: int = 1_000,
        ttl: float | None = None,
        limits: Limits | None = None,
        compress: Compress | None = _DEFAULT,
        measure: Measure | None = None,
        write_through: bool = False,
        listeners: Sequence[object] = (),
        clock: Callable[[], float] = time.monotonic,
        warn_live_ratio: float = 0.9,
    ) -> None:
        if max_live < 1:
            raise SessionError(f"'max_live' must be >= 1 (got {max_live})", rule="max_live")
        self.store = store
        self.max_live = max_live
        self.ttl = ttl
        self.limits = limits or Limits()
        self.compress: Compress | None = LadderCompressor() if compress is _DEFAULT else compress
        self.measure = measure
        self.write_through = write_through
        self.listeners = list(listeners)
        self.clock = clock
        self.warn_live_ratio = warn_live_ratio
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._cache_lock = threading.RLock()
        self._loading: dict[str, threading.Lock] = {}
        self._hits = self._misses = self._saves = self._save_failures = self._evictions = 0
        self._save_times: deque[float] = deque(maxlen=512)
        self._autosave: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._warned_live = False

    # -- listeners -------------------------------------------------------------

    def _emit(self, hook: str, *args: Any) -> None:
        for listener in self.listeners:
            method = getattr(listener, hook, None)
            if method is not None:
                method(*args)

    # -- the cache -------------------------------------------------------------

    def _touch(self, entry: _Entry) -> None:
        entry.last_used = self.clock()
        self._cache.move_to_end(entry.context.id)

    def _entry(self, context_id: str) -> _Entry:
        with self._cache_lock:
            entry = self._cache.get(context_id)
            if entry is not None:
                self._hits += 1
                self._touch(entry)
                return entry
            gate = self._loading.setdefault(context_id, threading.Lock())
        with gate:  # one loader per id; others wait and then hit the cache
            with self._cache_lock:
                entry = self._cache.get(context_id)
                if entry is not None:
                    self._hits += 1
                    self._touch(entry)
                    return entry
            self._misses += 1
            entry = self._load(context_id)
            with self._cache_lock:
                self._cache[context_id] = entry
                self._loading.pop(context_id, None)
        self._emit("on_loaded", entry.context)
        self._evict_over_limit(keep=context_id)
        return entry

    def _load(self, context_id: str) -> _Entry:
        checkpointer = Checkpointer(self.store, session_id=context_id)
        try:
            restored = checkpointer.restore(measure=self.measure)
        except CheckpointNotFound:
            raise SessionNotFound(
                f"no context with id {context_id!r} (never created, or deleted)",
                rule="unknown_context",
                context_id=context_id,
            ) from None
        saved = restored.state
        context = Context(
            id=context_id,
            conversation=restored.conversation,
            state=LayeredState.from_plain(saved.get("layers", {})),
            chart=dict(restored.chart),
            data=dict(saved.get("data", {})),
            version=int(saved.get("version", 0)),
        )
        context.saved_version = context.version
        context.audit.seq = int(saved.get("audit_seq", 0))
        return _Entry(context, checkpointer, self.clock())

    def _evict_over_limit(self, keep: str | None = None) -> None:
        now = self.clock()
        victims: list[str] = []
        with self._cache_lock:
            if self.ttl is not None:
                victims += [
                    cid
                    for cid, e in self._cache.items()
                    if now - e.last_used > self.ttl and cid != keep
                ]
            excess = len(self._cache) - len(victims) - self.max_live
            for cid in self._cache:
                if excess <= 0:
                    break
                if cid != keep and cid not in victims:
                    victims.append(cid)
                    excess -= 1
            live = len(self._cache)
        for cid in victims:
            self.evict(cid)
        high = live >= self.warn_live_ratio * self.max_live
        if high and not self._warned_live:  # once per crossing, not once per call
            log.warning("live_contexts_high", live=live, max_live=self.max_live)
        self._warned_live = high

    def evict(self, context_id: str) -> bool:
        """Persist (if dirty) and unload one context; False when the save failed (kept)."""
        with self._cache_lock:
            entry = self._cache.get(context_id)
        if entry is None:
            return True
        with entry.context.lock:
            if entry.context.dirty:
                try:
                    self._save(entry)
                except StoreError:
                    return False
            with self._cache_lock:
                self._cache.pop(context_id, None)
                self._evictions += 1
        self._emit("on_evicted", entry.context)
        return True

    def invalidate(self, context_id: str) -> bool:
        """Drop the cached copy of a context another process changed; reload on next get.

        Wire it to a :class:`~ctxflow.sessions.ownership.SessionCoordinator`:
        ``on_invalidate=lambda change: manager.invalidate(change.session_id)``.
        A copy with unsaved changes is kept (and False returned): its next save
        is refused by the store's parent check, so nothing is silently lost.
        """
        with self._cache_lock:
            entry = self._cache.get(context_id)
            if entry is None:
                return True
            if entry.context.dirty:
                log.warning("invalidate_dirty_copy", context=context_id)
                return False
            del self._cache[context_id]
        return True

    # -- persistence -----------------------------------------------------------

    def _save(self, entry: _Entry, trigger: str = "save") -> None:
        context = entry.context
        events = context.audit.events  # everything since the last save
        state = {
            "layers": context.state.to_plain(),
            "data": context.data,
            "version": context.version,
            "audit_seq": context.audit.seq,
            "audit": [e.light() for e in events],
        }
        started = time.perf_counter()
        try:
            record = entry.checkpointer.capture(
                context.conversation,
                state=state,
                chart=context.chart,
                phase=context.phase,
                trigger=trigger,
            )
        except CtxflowError as exc:
            self._save_failures += 1
            log.error("save_failed", context=context.id, error=str(exc))
            raise StoreError(
                f"saving context {context.id!r} failed: {exc}; it stays in memory, unsaved",
                rule="save_failed",
                context_id=context.id,
            ) from exc
        self._save_times.append((time.perf_counter() - started) * 1000)
        self._saves += 1
        context.saved_version = context.version
        context.audit.trim(context.audit.seq)
        self._emit("on_checkpointed", context, record)

    def save(self, context_id: str) -> None:
        """Checkpoint one context now (if it changed)."""
        entry = self._entry(context_id)
        with entry.context.lock:
            if entry.context.dirty:
                self._save(entry)

    def flush(self) -> list[str]:
        """Checkpoint every dirty context; return the ids whose save failed."""
        with self._cache_lock:
            entries = list(self._cache.values())
        failed = []
        for entry in entries:
            with entry.context.lock:
                if entry.context.dirty and not entry.context.deleted:
                    try:
                        self._save(entry)
                    except StoreError:
                        failed.append(entry.context.id)
        return failed

    # -- the public operations ---------------------------------------------------

    def create(
        self,
        context_id: str | None = None,
        *,
        messages: Sequence[Message] = (),
        state: LayeredState | None = None,
        data: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> Context:
        """Create and persist a new context (its first checkpoint)."""
        checkpointer = Checkpointer(self.store, session_id=context_id)
        if context_id is not None:
            with self._cache_lock:
                taken = context_id in self._cache
            if taken or context_id in self.store.sessions():
                raise SessionError(
                    f"a context with id {context_id!r} exists", rule="context_exists"
                )
        conversation = Conversation(messages, measure=self.measure)
        context = Context(
            id=checkpointer.session_id,
            conversation=conversation,
            state=state or LayeredState(),
            data=dict(data or {}),
        )
        context.audit.append(at=context.clock(), actor=actor, phase=context.phase, kind="created")
        self._check_limits(context)
        entry = _Entry(context, checkpointer, self.clock())
        self._save(entry, trigger="created")
        with self._cache_lock:
            self._cache[context.id] = entry
        self._emit("on_created", context)
        self._evict_over_limit(keep=context.id)
        return context

    def get(self, context_id: str) -> Context:
        """The live context (loaded from the store on a miss)."""
        entry = self._entry(context_id)
        if entry.context.deleted:
            raise SessionNotFound(
                f"context {context_id!r} was deleted", rule="deleted", context_id=context_id
            )
        self._emit("on_accessed", entry.context)
        return entry.context

    def update(
        self,
        context_id: str,
        change: Callable[[Context], T],
        *,
        expected_version: int | None = None,
    ) -> T:
        """Apply ``change`` to a context under its lock; enforce limits; save if write-through.

        With ``expected_version`` the update is optimistic: a context at another
        version raises :class:`ConflictError` (wrap the call in :func:`retry`).
        If ``change`` raises, the exception propagates; changes already made
        through the context's methods stay (each is atomic on its own).
        """
        entry = self._entry(context_id)
        context = entry.context
        with context.lock:
            if context.deleted:
                raise SessionNotFound(
                    f"context {context_id!r} was deleted", rule="deleted", context_id=context_id
                )
            if expected_version is not None and context.version != expected_version:
                raise ConflictError(
                    f"context {context_id!r} is at version {context.version}, "
                    f"not {expected_version}",
                    rule="version_conflict",
                    context_id=context_id,
                )
            result = change(context)
            self._check_limits(context)
            entry.bytes = _approx_bytes(context.conversation.messages)
            if self.write_through and context.dirty:
                self._save(entry, trigger="write_through")
        self._emit("on_updated", context)
        return result

    def append(
        self, context_id: str, messages: Sequence[Message], *, actor: str | None = None
    ) -> Context:
        """Append messages to a context (a convenience over :meth:`update`).

        Without a compression ladder, an append that would cross a limit is
        refused before anything changes.
        """
        batch = tuple(messages)
        if self.compress is None:
            context = self.get(context_id)
            with context.lock:
                conversation = context.conversation
                messages_after = conversation.effective_count + len(batch)
                tokens_after = conversation.effective_tokens + sum(
                    conversation.measure(m) for m in batch
                )
                self._refuse_over(context, messages_after, tokens_after)

        def change(context: Context) -> Context:
            context.append(batch, actor=actor)
            return context

        return self.update(context_id, change)

    def delete(self, context_id: str) -> None:
        """Delete a context and erase it from the store."""
        entry = self._entry(context_id)
        with entry.context.lock:
            self.store.erase(context_id)
            entry.context.deleted = True
            with self._cache_lock:
                self._cache.pop(context_id, None)
        self._emit("on_deleted", entry.context)

    def _check_limits(self, context: Context) -> None:
        conversation = context.conversation
        messages = conversation.effective_count
        tokens = conversation.effective_tokens
        if messages <= self.limits.max_messages and tokens <= self.limits.max_tokens:
            return
        compress = self.compress
        if compress is None:
            self._refuse_over(context, messages, tokens)
            return
        target = int(self.limits.max_tokens * self.limits.target)
        if messages > self.limits.max_messages:
            # Aim the token target so the message count lands under its limit too.
            share = self.limits.max_messages * self.limits.target / messages
            target = min(target, int(tokens * share))
        context.compress(lambda conv, state: compress(conv, state, target), reason="limits")

    def _refuse_over(self, context: Context, messages: int, tokens: int) -> None:
        if messages <= self.limits.max_messages and tokens <= self.limits.max_tokens:
            return
        raise BudgetExceeded(
            f"context {context.id!r} would hold {messages} messages and {tokens} tokens, over "
            f"the limits ({self.limits.max_messages} messages, {self.limits.max_tokens} "
            "tokens), and no compression ladder is configured",
            rule="context_limit",
            context_id=context.id,
        )

    # -- several contexts ------------------------------------------------------

    @contextlib.contextmanager
    def batch(self, context_ids: Sequence[str]) -> Iterator[list[Context]]:
        """Lock several contexts, in sorted id order, for one combined update."""
        ordered = sorted(set(context_ids))
        entries = [self._entry(cid) for cid in ordered]
        with contextlib.ExitStack() as stack:
            for entry in entries:
                stack.enter_context(entry.context.lock)
            by_id = {e.context.id: e.context for e in entries}
            yield [by_id[cid] for cid in context_ids]
            for entry in entries:
                self._check_limits(entry.context)
                if self.write_through and entry.context.dirty:
                    self._save(entry, trigger="write_through")

    def merge(
        self,
        context_ids: Sequence[str],
        *,
        strategy: MergeStrategy = "last",
        new_id: str | None = None,
        actor: str | None = None,
    ) -> Context:
        """A new context merging several (they stay as they are)."""
        with self.batch(context_ids) as contexts:
            parts = [
                Part(
                    id=c.id,
                    messages=tuple(originals(c.conversation)),
                    state=c.state,
                    data=c.data,
                )
                for c in contexts
            ]
            messages, state, data = merge_parts(parts, strategy=strategy)
        merged = self.create(new_id, messages=messages, state=state, data=data, actor=actor)
        self._emit("on_merged", merged, list(context_ids))
        return merged

    def split(
        self, context_id: str, at: str, *, actor: str | None = None
    ) -> tuple[Context, Context]:
        """Two new contexts: the messages before ``at``, and from ``at`` on."""
        context = self.get(context_id)
        with context.lock:
            head, tail = split_messages(context.conversation, at, context_id=context_id)
            state, data = context.state, dict(context.data)
        first = self.create(messages=head, state=state, data=data, actor=actor)
        second = self.create(messages=tail, state=state, data=data, actor=actor)
        return first, second

    # -- async forms -------------------------------------------------------------

    async def aget(self, context_id: str) -> Context:
        """Async :meth:`get` (runs in a worker thread)."""
        return await asyncio.to_thread(self.get, context_id)

    async def aupdate(
        self,
        context_id: str,
        change: Callable[[Context], T],
        *,
        expected_version: int | None = None,
    ) -> T:
        """Async :meth:`update` (runs in a worker thread, sharing the thread locks)."""
        return await asyncio.to_thread(
            self.update, context_id, change, expected_version=expected_version
        )

    async def acreate(self, context_id: str | None = None, **kwargs: Any) -> Context:
        """Async :meth:`create`."""
        return await asyncio.to_thread(lambda: self.create(context_id, **kwargs))

    async def aflush(self) -> list[str]:
        """Async :meth:`flush`."""
        return await asyncio.to_thread(self.flush)

    # -- lifecycle ---------------------------------------------------------------

    def start_autosave(self, interval: float) -> None:
        """Flush dirty contexts every ``interval`` seconds in a daemon thread."""
        if interval <= 0:
            raise SessionError(f"'interval' must be > 0 (got {interval})", rule="autosave")
        if self._autosave is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                failed = self.flush()
                if failed:
                    log.warning("autosave_failed", contexts=len(failed))
                self._evict_over_limit()

        self._autosave = threading.Thread(target=loop, name="ctxflow-autosave", daemon=True)
        self._autosave.start()

    def install_signal_handlers(
        self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """On SIGTERM/SIGINT: flush every dirty context, then exit as the signal asks."""

        def handler(signum: int, frame: FrameType | None) -> None:
            failed = self.close()
            log.info("shutdown_flush", signal=signum, failed=len(failed))
            raise SystemExit(128 + signum)

        for sig in signals:
            signal.signal(sig, handler)

    def close(self) -> list[str]:
        """Stop autosave and flush everything; return the ids whose save failed."""
        self._stop.set()
        if self._autosave is not None and self._autosave is not threading.current_thread():
            self._autosave.join(timeout=5)
        failed = self.flush()
        self._closed = True
        return failed

    def stats(self) -> ManagerStats:
        """Numbers for monitoring; logs a warning when a threshold is crossed."""
        with self._cache_lock:
            entries = list(self._cache.values())
        times = sorted(self._save_times)
        total = self._hits + self._misses
        stats = ManagerStats(
            live=len(entries),
            dirty=sum(e.context.dirty for e in entries),
            messages=sum(len(e.context.conversation) for e in entries),
            tokens=sum(e.context.conversation.effective_tokens for e in entries),
            bytes_in_memory=sum(e.bytes for e in entries),
            hits=self._hits,
            misses=self._misses,
            hit_rate=self._hits / total if total else 0.0,
            saves=self._saves,
            save_failures=self._save_failures,
            save_p50_ms=statistics.median(times) if times else 0.0,
            save_p99_ms=times[min(len(times) - 1, int(len(times) * 0.99))] if times else 0.0,
            evictions=self._evictions,
        )
        if stats.live >= self.warn_live_ratio * self.max_live:
            log.warning("live_contexts_high", live=stats.live, max_live=self.max_live)
        if stats.save_failures:
            log.warning("save_failures", failures=stats.save_failures)
        return stats
