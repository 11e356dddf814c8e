"""A LangGraph checkpointer over any ctxflow :class:`~ctxflow.persistence.Store`.

Layout in the store:

- each LangGraph thread and namespace is one store session
  (``langgraph/<thread>/<ns>``, both percent-encoded), a linear chain of store
  checkpoints in the order they were put; the LangGraph checkpoint id is the
  prefix of the store checkpoint id (``<id>!<random>``), so a listing needs no
  manifest;
- list channel values (the messages channel) are stored item by item as
  content-addressed bodies, so a message that stays in the list is stored once
  however many checkpoints hold it; other values sit in the manifest's state
  (a large one a content-addressed part, as in ctxflow's own checkpoints);
- the manifest's body log (its ``hashes``) is the thread's append-only log of
  list items, and a list channel is a range set into it (``state["lists"]``):
  a step that appends one message writes a delta of one hash and a small
  state, and a full manifest only every so often (the ``full_every`` /
  ``full_ratio`` rule of :class:`~ctxflow.persistence.Checkpointer`);
- the pending writes of the latest checkpoint are stored with it: a delta per
  ``put_writes`` call holding the call in the manifest's free mapping
  (``chart``, which LangGraph's checkpoints do not otherwise use); a written
  list whose items all carry an id is appended to the log, and the next
  checkpoint's list takes those places, so a step's message is one body and
  one log entry. Items without an id, and calls beyond ``_INLINE_BYTES`` in
  one record, are bodies named in the keyed body map (``overlays``). The next
  checkpoint empties both; writes naming an older checkpoint go to a session
  of their own (``langgraph-writes/<thread>/<ns>/<id>``). They are merged on
  read as LangGraph's own savers merge them (a repeated ``(task, idx)`` is
  ignored, a special channel replaces);
- the saver keeps the head of each thread it wrote or read (at most
  ``max_heads``): the latest checkpoint of a thread whose head is still the
  store's latest is deserialized from the bytes it holds, without a read;
- with ``JsonPlusSerializer``, LangChain's messages are rebuilt from their
  stored fields (a validated message's dump) without validating them again.

Gotcha: to avoid serializing the whole message list at every step, an item that
is the *same object* as the one at that position in the value this saver wrote
last is taken to be unchanged (LangGraph's reducers replace a changed message,
they do not mutate it). Builtin containers (dict, list, set) are always
serialized. A message mutated in place after it was checkpointed is therefore
stored as it was; replace it instead (as ``add_messages`` does by id).

The saver is safe to share between threads (one lock); the async methods run
the sync ones in a worker thread.
"""

from __future__ import annotations

import asyncio
import builtins
import operator
import secrets
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, unquote

import attrs
import langchain_core.messages as lc_messages
import msgpack
import ormsgpack
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import EXT_PYDANTIC_V2, JsonPlusSerializer

from ctxflow.errors import CheckpointError, CheckpointNotFound, StaleCheckpoint
from ctxflow.persistence import (
    CheckpointDraft,
    Manifest,
    Snapshot,
    Store,
    body_hash,
    check_full_rule,
    new_checkpoint_id,
)
from ctxflow.stores import open_store

__all__ = ["CtxflowSaver"]

_THREADS = "langgraph/"
_WRITES = "langgraph-writes/"
_SEP = "!"  # percent-encoding never leaves one in an id
_ATTEMPTS = 5
#: A list channel spread over more ranges of the log than this is written anew.
_MAX_RANGES = 16
_MUTABLE = (dict, list, set)
#: The pending writes of the latest checkpoint sit in its manifest record up to this many
#: packed bytes; a call beyond them is a body of its own (so many calls stay linear).
_INLINE_BYTES = 1024
_Ranges = list[list[int]]
#: A fresh list item of the writes: the item, its id then, its body hash, its body and
#: its place in the log (None when it is not in the log).
_Fresh = tuple[Any, Any, str, dict[str, Any], int | None]


#: LangChain's message classes by (module, name), as ``JsonPlusSerializer`` names them: their
#: stored fields are a validated message's own dump, so they are rebuilt without validating.
_MESSAGES: dict[tuple[str, str], type[lc_messages.BaseMessage]] = {
    (cls.__module__, cls.__name__): cls
    for cls in (
        getattr(lc_messages, name)
        for name in lc_messages.__all__
        if name.endswith(("Message", "MessageChunk"))
    )
    if isinstance(cls, type)
    and issubclass(cls, lc_messages.BaseMessage)
    and cls not in (lc_messages.BaseMessage, lc_messages.BaseMessageChunk)
}


def _q(text: str) -> str:
    return quote(text, safe="")


def _session(thread_id: str, ns: str) -> str:
    return f"{_THREADS}{_q(thread_id)}/{_q(ns)}"


def _writes_session(thread_id: str, ns: str, checkpoint_id: str) -> str:
    return f"{_WRITES}{_q(thread_id)}/{_q(ns)}/{_q(checkpoint_id)}"


def _parse_session(session: str) -> tuple[str, str] | None:
    """The thread id and namespace of a thread session (None for any other session)."""
    if not session.startswith(_THREADS):
        return None
    parts = session[len(_THREADS) :].split("/")
    if len(parts) != 2:
        return None
    return unquote(parts[0]), unquote(parts[1])


def _record_id(checkpoint_id: str) -> str:
    return f"{_q(checkpoint_id)}{_SEP}{secrets.token_urlsafe(6)}"


def _task_plain(task_id: str) -> str | bytes:
    """A task id as stored: the 16 bytes of a UUID in its canonical form, else the text."""
    try:
        found = uuid.UUID(task_id)
    except ValueError:
        return task_id
    return found.bytes if str(found) == task_id else task_id


def _task_of(stored: str | bytes) -> str:
    return str(uuid.UUID(bytes=stored)) if isinstance(stored, bytes) else stored


def _lg_id(record_id: str) -> str:
    return unquote(record_id.rpartition(_SEP)[0])


def _where(config: RunnableConfig) -> tuple[str, str, str | None]:
    """The thread id, namespace and checkpoint id a config names; ``CheckpointError``
    when it names no thread."""
    configurable = config.get("configurable") if isinstance(config, Mapping) else None
    if not isinstance(configurable, Mapping) or configurable.get("thread_id") is None:
        raise CheckpointError(
            f"a LangGraph config must name a 'thread_id' in 'configurable' (got {config!r})",
            rule="thread_id",
        )
    ns = configurable.get("checkpoint_ns") or ""
    checkpoint_id = configurable.get("checkpoint_id")
    return str(configurable["thread_id"]), str(ns), checkpoint_id


def _config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def _truncated(ranges: _Ranges, n: int) -> _Ranges:
    """The first ``n`` items of a range set."""
    kept: _Ranges = []
    for start, end in ranges:
        if n <= 0:
            break
        take = min(end - start, n)
        kept.append([start, start + take])
        n -= take
    return kept


def _positions(ranges: _Ranges) -> Iterator[int]:
    for start, end in ranges:
        yield from range(start, end)


def _extend(
    ranges: _Ranges,
    log: builtins.list[str],
    added: builtins.list[str],
    places: Sequence[int | None],
) -> bool:
    """Extend a range set by ``added`` items: at the places the writes already put them in
    the log when those follow the set's last range, else appended to the log (True)."""
    end = ranges[-1][1] if ranges else None
    first = places[0] if places else None
    if (
        first is not None
        and (end is None or end == first)
        and all(at == first + i for i, at in enumerate(places))
        and log[first : first + len(added)] == added
    ):
        start, appended = first, False
    else:
        start, appended = len(log), True
        log.extend(added)
    if ranges and ranges[-1][1] == start:
        ranges[-1] = [ranges[-1][0], start + len(added)]
    else:
        ranges.append([start, start + len(added)])
    return appended


@attrs.define
class _Channel:
    """What the saver wrote last of one list channel: its ranges in the log, its body
    hashes and, when known, its items as objects."""

    ranges: _Ranges
    hashes: builtins.list[str]
    bodies: builtins.list[Mapping[str, Any]]
    items: builtins.list[Any] | None = None
    #: No item is a builtin container (so identity alone says an item is unchanged).
    plain: bool = False


@attrs.define
class _Write:
    """One write of a ``put_writes`` call, serialized: a list value item by item (its
    items' bodies), any other value as the serializer gives it."""

    idx: int
    channel: str
    kind: str
    data: bytes
    items: builtins.list[Any] | None = None
    #: The items' ids when they were serialized (a reducer may give one later).
    ids: builtins.list[Any] = attrs.field(factory=builtins.list)
    hashes: builtins.list[str] = attrs.field(factory=builtins.list)
    bodies: builtins.list[dict[str, Any]] = attrs.field(factory=builtins.list)

    @property
    def logged(self) -> bool:
        """Its items go into the log: each carried an id, so the reducer keeps the object
        as it is and the next checkpoint's list takes the same places."""
        return bool(self.ids) and all(i is not None for i in self.ids)


@attrs.frozen
class _Stored:
    """Pending writes as stored: their calls (task, path, writes), and the log and bodies
    their items are read from."""

    calls: builtins.list[tuple[str, str, builtins.list[builtins.list[Any]]]]
    log: Sequence[str]
    bodies: Mapping[str, Mapping[str, Any]]

    @classmethod
    def of(cls, manifest: Manifest, bodies: Mapping[str, Mapping[str, Any]]) -> _Stored:
        """The writes stored with a checkpoint: those in its record, then those that are
        bodies of their own (named in its keyed body map), in the order they came."""
        calls = [(_task_of(t), p, w) for t, p, w in manifest.chart.get("writes") or ()]
        for digest in manifest.overlays.values():
            body = bodies[digest]
            if "task" in body:
                calls.append((_task_of(body["task"]), body["path"], body["writes"]))
        return cls(calls, manifest.hashes, bodies)

    def item_bodies(self) -> dict[str, Mapping[str, Any]]:
        """The bodies these writes name, by hash."""
        found: dict[str, Mapping[str, Any]] = {}
        for _, _, writes in self.calls:
            for _, _, kind, data in writes:
                if kind == "log":
                    found.update((h, self.bodies[h]) for h in self.log[data[0] : data[1]])
                elif kind == "items":
                    found.update((h, self.bodies[h]) for h in data)
        return found


@attrs.define
class _Head:
    """The latest store checkpoint of a thread session, as this saver knows it."""

    record_id: str | None
    manifest: Manifest
    versions: dict[str, Any] = attrs.field(factory=dict)
    lists: dict[str, _Channel] = attrs.field(factory=dict)
    values: dict[str, builtins.list[Any]] = attrs.field(factory=dict)
    newest: str | None = None
    known: set[str] = attrs.field(factory=set)
    #: The bodies of the pending writes stored with the latest checkpoint, by hash.
    writes: dict[str, Mapping[str, Any]] = attrs.field(factory=dict)
    since_full: int = 0
    delta_bytes: int = 0
    full_bytes: int = 0


def _array(n: int) -> bytes:
    """The msgpack header of an array of ``n`` items."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


class CtxflowSaver(BaseCheckpointSaver[int]):
    """A LangGraph checkpointer (sync and async) that keeps its checkpoints in a ctxflow store.

    ``store`` is any :class:`~ctxflow.persistence.Store` (``MemoryStore``,
    ``SQLiteStore``, ...); :meth:`from_conn_string` opens one from a URL. The
    manifest rule is that of :class:`~ctxflow.persistence.Checkpointer`: a full
    manifest at most every ``full_every`` checkpoints of a thread, once the
    deltas since the last one weigh ``full_ratio`` times it.
    """

    def __init__(
        self,
        store: Store,
        *,
        serde: SerializerProtocol | None = None,
        full_every: int = 64,
        full_ratio: float = 1.0,
        max_heads: int = 256,
    ) -> None:
        check_full_rule(full_every, full_ratio)
        super().__init__(serde=serde)
        self.store = store
        self.full_every = full_every
        self.full_ratio = full_ratio
        self.max_heads = max(1, max_heads)
        self._lock = threading.RLock()
        self._heads: dict[str, _Head] = {}
        self._writes_heads: dict[str, str] = {}
        # The list items of the writes since the last put, by object: the next put takes
        # their bodies instead of serializing them again, while each keeps the id it had.
        self._fresh: dict[int, _Fresh] = {}

    def __repr__(self) -> str:
        return f"<CtxflowSaver store={self.store!r}>"

    @classmethod
    @contextmanager
    def from_conn_string(cls, conn_string: str, **kwargs: Any) -> Iterator[CtxflowSaver]:
        """A saver on the store a URL names, closed on exit: any URL of
        :func:`ctxflow.stores.open_store` (``memory``, a path, ``sqlite:///…``,
        ``redis://…``, ``redis+cluster://…``, ``postgresql://…``), and LangGraph's
        ``:memory:`` for ``memory``."""
        store = open_store("memory" if conn_string == ":memory:" else conn_string)
        try:
            yield cls(store, **kwargs)
        finally:
            store.close()

    # -- reading -------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint a config names (the thread's newest without a checkpoint id)."""
        thread_id, ns, checkpoint_id = _where(config)
        session = _session(thread_id, ns)
        with self._lock:
            try:
                if checkpoint_id is None:
                    found = self._from_head(thread_id, ns, session)
                    if found is not None:
                        return found
                    snapshot: Snapshot | None = self.store.load(session)
                    assert snapshot is not None
                    newest = snapshot.manifest.state.get("newest")
                    if isinstance(newest, str) and _lg_id(snapshot.record.id) != newest:
                        snapshot = self._load(session, newest)
                    else:
                        head = self._adopt(session, snapshot)
                        return self._tuple_of_head(thread_id, ns, head)
                else:
                    snapshot = self._load(session, checkpoint_id)
            except CheckpointNotFound:
                return None
            if snapshot is None:
                return None
            return self._tuple(thread_id, ns, snapshot)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, by thread and namespace, filtered by metadata."""
        return iter(self._list(config, filter=filter, before=before, limit=limit))

    def _list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> builtins.list[CheckpointTuple]:
        wanted_thread = wanted_ns = wanted_id = None
        if config is not None:
            wanted_thread, _, wanted_id = _where(config)
            ns = config["configurable"].get("checkpoint_ns")
            wanted_ns = None if ns is None else str(ns)
        before_id = _where(before)[2] if before is not None else None
        found: builtins.list[CheckpointTuple] = []
        with self._lock:
            for session in self.store.sessions():
                place = _parse_session(session)
                if place is None:
                    continue
                thread_id, ns = place
                if wanted_thread is not None and thread_id != wanted_thread:
                    continue
                if wanted_ns is not None and ns != wanted_ns:
                    continue
                try:
                    records = self.store.checkpoints(session)
                except CheckpointNotFound:
                    continue
                last = {_lg_id(r.id): r.id for r in records}
                for checkpoint_id in sorted(last, reverse=True):
                    if wanted_id is not None and checkpoint_id != wanted_id:
                        continue
                    if before_id is not None and checkpoint_id >= before_id:
                        continue
                    if limit is not None and len(found) >= limit:
                        return found
                    snapshot = self.store.load(session, last[checkpoint_id])
                    metadata = self._metadata(snapshot)
                    if filter and not all(metadata.get(k) == v for k, v in filter.items()):
                        continue
                    found.append(self._tuple(thread_id, ns, snapshot, metadata=metadata))
        return found

    def _load(self, session: str, checkpoint_id: str) -> Snapshot | None:
        """The store checkpoint holding a LangGraph checkpoint (the last put of that id)."""
        record_id = None
        for record in self.store.checkpoints(session):
            if _lg_id(record.id) == checkpoint_id:
                record_id = record.id
        return None if record_id is None else self.store.load(session, record_id)

    def _metadata(self, snapshot: Snapshot) -> dict[str, Any]:
        kind, data = snapshot.manifest.state["metadata"]
        metadata: dict[str, Any] = self.serde.loads_typed((kind, data))
        return metadata

    def _tuple(
        self,
        thread_id: str,
        ns: str,
        snapshot: Snapshot,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> CheckpointTuple:
        manifest, bodies = snapshot.manifest, snapshot.bodies
        lists = {
            name: [bodies[manifest.hashes[i]] for i in _positions(ranges)]
            for name, ranges in manifest.state["lists"].items()
        }
        stored = _Stored.of(manifest, bodies)
        return self._assemble(thread_id, ns, manifest.state, lists, stored, metadata=metadata)

    def _tuple_of_head(self, thread_id: str, ns: str, head: _Head) -> CheckpointTuple:
        """The tuple of a session's latest checkpoint from what the saver holds of it; its
        list items become the ones the next put compares by identity."""
        lists = {name: channel.bodies for name, channel in head.lists.items()}
        # Writes stored apart name a checkpoint that was not its thread's latest when they
        # came, so the latest has none: its own are all in the head.
        stored = _Stored.of(head.manifest, head.writes)
        found = self._assemble(thread_id, ns, head.manifest.state, lists, stored, apart=False)
        values = found.checkpoint["channel_values"]
        for name, channel in head.lists.items():
            items = values.get(name)
            if isinstance(items, builtins.list) and len(items) == len(channel.hashes):
                channel.items = builtins.list(items)
                if not channel.plain:
                    channel.plain = not any(isinstance(item, _MUTABLE) for item in items)
        return found

    def _from_head(self, thread_id: str, ns: str, session: str) -> CheckpointTuple | None:
        """The latest checkpoint without reading it back, when the saver's head of the
        session is still the store's latest (one small query) and the thread's newest."""
        head = self._heads.get(session)
        if head is None or head.record_id is None or head.newest != _lg_id(head.record_id):
            return None
        if self.store.latest(session).id != head.record_id:
            self._heads.pop(session, None)
            return None
        return self._tuple_of_head(thread_id, ns, head)

    def _assemble(
        self,
        thread_id: str,
        ns: str,
        state: Mapping[str, Any],
        lists: Mapping[str, builtins.list[Mapping[str, Any]]],
        stored: _Stored,
        *,
        metadata: dict[str, Any] | None = None,
        apart: bool = True,
    ) -> CheckpointTuple:
        """A checkpoint tuple from a manifest state, the bodies of its list channels and
        of the pending writes stored with it (and, with ``apart``, of those stored apart)."""
        kind, data = state["checkpoint"]
        checkpoint: dict[str, Any] = self.serde.loads_typed((kind, data))
        values: dict[str, Any] = {name: self._items(items) for name, items in lists.items()}
        for name, (kind_, data_) in state["values"].items():
            values[name] = self.serde.loads_typed((kind_, data_))
        checkpoint["channel_values"] = values
        if metadata is None:
            meta_kind, meta_data = state["metadata"]
            metadata = self.serde.loads_typed((meta_kind, meta_data))
        parent = state.get("parent")
        return CheckpointTuple(
            config=_config(thread_id, ns, checkpoint["id"]),
            checkpoint=checkpoint,  # type: ignore[arg-type]
            metadata=metadata,  # type: ignore[arg-type]
            parent_config=_config(thread_id, ns, parent) if parent else None,
            pending_writes=self._pending(thread_id, ns, checkpoint["id"], stored, apart=apart),
        )

    def _value(self, body: Mapping[str, Any]) -> Any:
        return self.serde.loads_typed((body["t"], body["b"]))

    def _items(self, bodies: builtins.list[Mapping[str, Any]]) -> builtins.list[Any]:
        """The values of item bodies; msgpack ones in one call, as one array."""
        if bodies and all(b["t"] == "msgpack" for b in bodies):
            data = _array(len(bodies)) + b"".join(b["b"] for b in bodies)
            if type(self.serde) is JsonPlusSerializer:
                items = ormsgpack.unpackb(
                    data, ext_hook=self._ext_hook, option=ormsgpack.OPT_NON_STR_KEYS
                )
            else:
                items = self.serde.loads_typed(("msgpack", data))
            if isinstance(items, builtins.list) and len(items) == len(bodies):
                return items
        return [self._value(b) for b in bodies]

    def _ext_hook(self, code: int, data: bytes) -> Any:
        """``JsonPlusSerializer``'s msgpack extension types, LangChain's messages rebuilt
        from their stored fields without validating them again (about twice as fast);
        anything else decoded by the serializer itself."""
        if code == EXT_PYDANTIC_V2:
            found = ormsgpack.unpackb(
                data, ext_hook=self._ext_hook, option=ormsgpack.OPT_NON_STR_KEYS
            )
            if isinstance(found, builtins.list) and len(found) >= 3:
                cls = _MESSAGES.get((found[0], found[1]))
                if cls is not None and isinstance(found[2], dict):
                    return cls.model_construct(**found[2])
        wrapped = ormsgpack.packb(ormsgpack.Ext(code, data))
        return self.serde.loads_typed(("msgpack", wrapped))

    def _adopt(self, session: str, snapshot: Snapshot) -> _Head:
        """Take a loaded latest checkpoint as the head of its session."""
        head = self._heads.get(session)
        if head is None or head.record_id != snapshot.record.id:
            head = self._head_of(snapshot)
            self._remember(session, head)
        return head

    def _remember(self, session: str, head: _Head) -> None:
        """Keep a session's head, forgetting the least recently used beyond ``max_heads``."""
        self._heads.pop(session, None)
        self._heads[session] = head
        while len(self._heads) > self.max_heads:
            del self._heads[next(iter(self._heads))]

    def _pending(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        stored: _Stored,
        *,
        apart: bool = True,
    ) -> builtins.list[tuple[str, str, Any]]:
        """A checkpoint's pending writes (those stored with it, then any stored apart),
        merged as LangGraph's savers merge them."""
        sources = [stored]
        other = self._apart(thread_id, ns, checkpoint_id) if apart else None
        if other is not None:
            log, bodies = other.manifest.hashes, other.bodies
            calls = [bodies[d] for d in log if "task" in bodies[d]]
            sources.append(
                _Stored([(_task_of(c["task"]), c["path"], c["writes"]) for c in calls], log, bodies)
            )
        merged: dict[tuple[str, int], tuple[str, str, str, Any, _Stored]] = {}
        for source in sources:
            for task, path, writes in source.calls:
                for idx, channel, kind, data in writes:
                    if idx >= 0 and (task, idx) in merged:
                        continue  # a task's write is stored once; a special channel replaces
                    merged[(task, idx)] = (path, channel, kind, data, source)
        ordered = sorted(merged.items(), key=lambda w: writes_sort_key(w[1][0], *w[0]))
        return [
            (task, channel, self._write_value(kind, data, source))
            for (task, _), (_, channel, kind, data, source) in ordered
        ]

    def _write_value(self, kind: str, data: Any, source: _Stored) -> Any:
        if kind == "items":
            return self._items([source.bodies[h] for h in data])
        if kind == "log":
            return self._items([source.bodies[h] for h in source.log[data[0] : data[1]]])
        return self.serde.loads_typed((kind, data))

    def _apart(self, thread_id: str, ns: str, checkpoint_id: str) -> Snapshot | None:
        """The writes of a checkpoint stored apart (None when it has none)."""
        try:
            return self.store.load(_writes_session(thread_id, ns, checkpoint_id))
        except CheckpointNotFound:
            return None

    # -- writing -------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint: the changed channel values and a delta manifest."""
        thread_id, ns, parent = _where(config)
        session = _session(thread_id, ns)
        described = self.serde.dumps_typed(
            {k: v for k, v in checkpoint.items() if k != "channel_values"}
        )
        meta = self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))
        with self._lock:
            for attempt in range(_ATTEMPTS):
                head = self._head(session)
                try:
                    self._put(session, head, checkpoint, described, meta, parent, new_versions)
                    break
                except StaleCheckpoint:
                    self._heads.pop(session, None)  # another writer moved on: read it again
                    if attempt == _ATTEMPTS - 1:
                        raise
        return _config(thread_id, ns, checkpoint["id"])

    def _head(self, session: str) -> _Head:
        head = self._heads.get(session)
        if head is not None:
            return head
        try:
            snapshot = self.store.load(session)
        except CheckpointNotFound:
            head = _Head(record_id=None, manifest=Manifest())
        else:
            head = self._head_of(snapshot)
        self._remember(session, head)
        return head

    def _head_of(self, snapshot: Snapshot) -> _Head:
        """A session head from its loaded latest checkpoint."""
        state = snapshot.manifest.state
        kind, data = state["checkpoint"]
        described = self.serde.loads_typed((kind, data))
        log, bodies = snapshot.manifest.hashes, snapshot.bodies
        lists = {}
        for name, ranges in state["lists"].items():
            hashes = [log[i] for i in _positions(ranges)]
            lists[name] = _Channel(ranges, hashes, [bodies[h] for h in hashes])
        return _Head(
            record_id=snapshot.record.id,
            manifest=snapshot.manifest.copy(),
            versions=dict(described.get("channel_versions") or {}),
            lists=lists,
            writes={
                **{d: bodies[d] for d in snapshot.manifest.overlays.values()},
                **_Stored.of(snapshot.manifest, bodies).item_bodies(),
            },
            values=dict(state["values"]),
            newest=state.get("newest") or _lg_id(snapshot.record.id),
            known=snapshot.manifest.body_hashes(),
            since_full=snapshot.depth,
        )

    def _put(
        self,
        session: str,
        head: _Head,
        checkpoint: Checkpoint,
        described: tuple[str, bytes],
        meta: tuple[str, bytes],
        parent: str | None,
        new_versions: ChannelVersions,
    ) -> None:
        given = checkpoint["channel_values"]
        versions = dict(checkpoint["channel_versions"])
        manifest = head.manifest.copy()
        manifest.overlays, manifest.chart = {}, {}  # the writes before stay with theirs
        log = manifest.hashes
        bodies: dict[str, Mapping[str, Any]] = {}
        lists: dict[str, _Channel] = {}
        values: dict[str, builtins.list[Any]] = {}
        for name, version in versions.items():
            if name not in new_versions and head.versions.get(name) == version:
                if name in head.lists:
                    lists[name] = head.lists[name]
                    continue
                if name in head.values:
                    values[name] = head.values[name]
                    continue
            if name not in given:
                continue
            value = given[name]
            if type(value) is builtins.list:
                lists[name] = self._list_channel(head, head.lists.get(name), value, log, bodies)
            else:
                values[name] = builtins.list(self.serde.dumps_typed(value))
        manifest.ids.extend([""] * (len(log) - len(manifest.ids)))
        checkpoint_id = checkpoint["id"]
        newest = checkpoint_id if head.newest is None else max(head.newest, checkpoint_id)
        state = {
            "checkpoint": list(described),
            "metadata": list(meta),
            "parent": parent,
            "lists": {name: channel.ranges for name, channel in lists.items()},
            "values": values,
        }
        if newest != checkpoint_id:
            state["newest"] = newest  # only when an older id was put after a newer one
        manifest.set_state(state, bodies, head.known)
        due = head.record_id is None or (
            head.since_full + 1 >= self.full_every
            and head.delta_bytes >= self.full_ratio * head.full_bytes
        )
        record = None if due else manifest.delta_from(head.manifest)
        full = record is None
        if record is None:
            record = manifest.to_plain()
        draft = CheckpointDraft(
            id=_record_id(checkpoint_id),
            session_id=session,
            parent_id=head.record_id,
            created_at=time.time(),
            manifest=record,
            bodies=bodies,
            trigger="langgraph",
            message_count=sum(len(c.hashes) for c in lists.values()),
        )
        written = self.store.put(draft, expected_parent=head.record_id)
        weight = len(msgpack.packb(record, use_bin_type=True))
        head.record_id = written.id
        head.manifest = manifest
        head.lists, head.values, head.versions, head.newest = lists, values, versions, newest
        head.writes = {}
        self._fresh.clear()
        head.known.update(bodies)
        if full:
            head.since_full, head.delta_bytes, head.full_bytes = 0, 0, weight
        else:
            head.since_full += 1
            head.delta_bytes += weight

    def _list_channel(
        self,
        head: _Head,
        before: _Channel | None,
        value: builtins.list[Any],
        log: builtins.list[str],
        bodies: dict[str, Mapping[str, Any]],
    ) -> _Channel:
        """A list value as ranges of the log, appending the items that are new to it."""
        old_items = before.items if before is not None and before.items is not None else []
        old_hashes = before.hashes if before is not None else []
        old_bodies = before.bodies if before is not None else []
        count = len(old_items)
        if (
            before is not None
            and before.plain
            and count
            and len(value) >= count
            and all(map(operator.is_, old_items, value))
        ):
            # The common step: the same items and some appended (checked at C speed).
            new = value[count:]
            if not new:
                return _Channel(before.ranges, old_hashes, old_bodies, old_items, plain=True)
            made = [self._body(item, bodies, head.known) for item in new]
            added = [digest for digest, _, _ in made]
            ranges = [list(r) for r in before.ranges]
            appended = _extend(ranges, log, added, [at for _, _, at in made])
            if len(ranges) <= _MAX_RANGES:
                plain = not any(isinstance(item, _MUTABLE) for item in new)
                return _Channel(
                    ranges,
                    old_hashes + added,
                    old_bodies + [body for _, body, _ in made],
                    builtins.list(value),
                    plain=plain,
                )
            if appended:
                del log[-len(added) :]
        hashes: builtins.list[str] = []
        item_bodies: builtins.list[Mapping[str, Any]] = []
        places: builtins.list[int | None] = []
        for index, item in enumerate(value):
            if (
                index < len(old_items)
                and old_items[index] is item
                and not isinstance(item, _MUTABLE)
            ):
                hashes.append(old_hashes[index])
                item_bodies.append(old_bodies[index])
                places.append(None)
            else:
                digest, body, at = self._body(item, bodies, head.known)
                hashes.append(digest)
                item_bodies.append(body)
                places.append(at)
        kept = 0
        limit = min(len(hashes), len(old_hashes))
        while kept < limit and hashes[kept] == old_hashes[kept]:
            kept += 1
        ranges = _truncated(before.ranges, kept) if before is not None else []
        if kept < len(hashes):
            _extend(ranges, log, hashes[kept:], places[kept:])
        if len(ranges) > _MAX_RANGES:
            start = len(log)
            log.extend(hashes)
            ranges = [[start, len(log)]]
        plain = not any(isinstance(item, _MUTABLE) for item in value)
        return _Channel(ranges, hashes, item_bodies, builtins.list(value), plain=plain)

    def _item_body(self, value: Any) -> dict[str, Any]:
        kind, data = self.serde.dumps_typed(value)
        return {"id": "", "t": kind, "b": data}

    def _body(
        self, value: Any, bodies: dict[str, Mapping[str, Any]], known: set[str]
    ) -> tuple[str, dict[str, Any], int | None]:
        """The body hash and body of one list item, and its place in the log when the
        writes put it there; the body goes into ``bodies`` unless stored."""
        fresh = self._fresh.get(id(value))
        at = None
        if fresh is not None and fresh[0] is value and getattr(value, "id", None) == fresh[1]:
            _, _, digest, body, at = fresh
        else:
            body = self._item_body(value)
            digest = body_hash(body)
        if digest not in known:
            bodies[digest] = body
        return digest, body, at

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store the writes of a task for the checkpoint a config names."""
        thread_id, ns, checkpoint_id = _where(config)
        if checkpoint_id is None:
            raise CheckpointError(
                f"writes need the config of a checkpoint (got no 'checkpoint_id' in {config!r})",
                rule="checkpoint_id",
            )
        if not writes:
            return
        prepared = [
            self._write(WRITES_IDX_MAP.get(channel, idx), channel, value)
            for idx, (channel, value) in enumerate(writes)
        ]
        with self._lock:
            session = _session(thread_id, ns)
            for attempt in range(_ATTEMPTS):
                head = self._head(session)
                try:
                    if head.record_id is not None and _lg_id(head.record_id) == checkpoint_id:
                        self._put_writes_at_head(
                            session, head, checkpoint_id, task_id, task_path, prepared
                        )
                    else:
                        self._put_writes_apart(
                            _writes_session(thread_id, ns, checkpoint_id),
                            task_id,
                            task_path,
                            prepared,
                        )
                    return
                except StaleCheckpoint:
                    self._heads.pop(session, None)
                    if attempt == _ATTEMPTS - 1:
                        raise

    def _write(self, idx: int, channel: str, value: Any) -> _Write:
        """One write serialized: a list of plain items item by item, as a list channel
        stores them (a message that carries its id is the body its channel will hold)."""
        if type(value) is builtins.list and not any(isinstance(v, _MUTABLE) for v in value):
            # The ids first: a reducer running meanwhile may give an item one.
            ids = [getattr(item, "id", None) for item in value]
            bodies = [self._item_body(item) for item in value]
            hashes = [body_hash(body) for body in bodies]
            return _Write(idx, channel, "items", b"", value, ids, hashes, bodies)
        kind, data = self.serde.dumps_typed(value)
        return _Write(idx, channel, kind, data)

    def _put_writes_at_head(
        self,
        session: str,
        head: _Head,
        checkpoint_id: str,
        task_id: str,
        task_path: str,
        prepared: builtins.list[_Write],
    ) -> None:
        """Writes for the session's latest checkpoint: a delta holding the call (a body of
        its own, named in the keyed body map, once the record's calls weigh
        ``_INLINE_BYTES``), whose list items carrying an id are appended to the log; the
        next checkpoint empties both again."""
        manifest = head.manifest.copy()
        log = manifest.hashes
        bodies: dict[str, dict[str, Any]] = {}
        fresh: dict[int, _Fresh] = {}
        entries: builtins.list[builtins.list[Any]] = []
        for write in prepared:
            if write.items is None:
                entries.append([write.idx, write.channel, write.kind, write.data])
                continue
            bodies.update(zip(write.hashes, write.bodies, strict=True))
            if write.logged:
                start = len(log)
                log.extend(write.hashes)
                entries.append([write.idx, write.channel, "log", [start, len(log)]])
                for at, (item, item_id) in enumerate(
                    zip(write.items, write.ids, strict=True), start
                ):
                    fresh[id(item)] = (item, item_id, log[at], write.bodies[at - start], at)
            else:
                entries.append([write.idx, write.channel, "items", write.hashes])
                for digest in write.hashes:
                    manifest.overlays[f"{len(manifest.overlays)}"] = digest
        manifest.ids.extend([""] * (len(log) - len(manifest.ids)))
        call = [_task_plain(task_id), task_path, entries]
        inline = [*(manifest.chart.get("writes") or ()), call]
        if len(msgpack.packb(inline, use_bin_type=True)) <= _INLINE_BYTES:
            manifest.chart = {"writes": inline}
        else:
            body = {"id": "", "task": call[0], "path": task_path, "writes": entries}
            digest = body_hash(body)
            bodies[digest] = body
            manifest.overlays[f"{len(manifest.overlays)}"] = digest
        record = manifest.delta_from(head.manifest)
        assert record is not None  # the log only grew
        draft = CheckpointDraft(
            id=_record_id(checkpoint_id),
            session_id=session,
            parent_id=head.record_id,
            created_at=time.time(),
            manifest=record,
            bodies={d: b for d, b in bodies.items() if d not in head.known},
            trigger="langgraph-writes",
        )
        written = self.store.put(draft, expected_parent=head.record_id)
        head.record_id = written.id
        head.manifest = manifest
        head.known.update(bodies)
        head.writes.update(bodies)
        head.since_full += 1
        head.delta_bytes += len(msgpack.packb(record, use_bin_type=True))
        self._fresh.update(fresh)

    def _put_writes_apart(
        self, session: str, task_id: str, task_path: str, prepared: builtins.list[_Write]
    ) -> None:
        """Writes for a checkpoint that is no longer its thread's latest: a session of their
        own, one store checkpoint per call (the call and its items bodies)."""
        items: dict[str, dict[str, Any]] = {}
        entries: builtins.list[builtins.list[Any]] = []
        for write in prepared:
            if write.items is None:
                entries.append([write.idx, write.channel, write.kind, write.data])
            else:
                items.update(zip(write.hashes, write.bodies, strict=True))
                entries.append([write.idx, write.channel, "items", write.hashes])
        call = {"id": "", "task": _task_plain(task_id), "path": task_path, "writes": entries}
        bodies = {body_hash(call): call, **items}
        hashes = builtins.list(bodies)
        parent = self._writes_heads.get(session)
        if parent is None:
            try:
                parent = self.store.latest(session).id
            except CheckpointNotFound:
                parent = None
        manifest = (
            Manifest(hashes=hashes).to_plain()
            if parent is None
            else {"kind": "delta", "hashes": hashes}
        )
        draft = CheckpointDraft(
            id=new_checkpoint_id(),
            session_id=session,
            parent_id=parent,
            created_at=time.time(),
            manifest=manifest,
            bodies=bodies,
            trigger="langgraph-writes",
        )
        try:
            written = self.store.put(draft, expected_parent=parent)
        except StaleCheckpoint:
            self._writes_heads.pop(session, None)
            raise
        if len(self._writes_heads) >= 1024:
            self._writes_heads.clear()
        self._writes_heads[session] = written.id

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of a thread (all its namespaces)."""
        thread = _q(str(thread_id))
        prefixes = (f"{_THREADS}{thread}/", f"{_WRITES}{thread}/")
        with self._lock:
            for session in self.store.sessions():
                if session.startswith(prefixes):
                    self.store.erase(session)
                    self._heads.pop(session, None)
                    self._writes_heads.pop(session, None)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only the latest checkpoint of each namespace of the threads (with its
        writes), or delete them whole (``strategy="delete"``)."""
        if strategy not in {"keep_latest", "delete"}:
            raise CheckpointError(
                f"'strategy' must be 'keep_latest' or 'delete' (got {strategy!r})",
                rule="prune_strategy",
            )
        with self._lock:
            sessions = self.store.sessions()
            for thread_id in thread_ids:
                thread = _q(str(thread_id))
                mine = [s for s in sessions if s.startswith(f"{_THREADS}{thread}/")]
                apart = [s for s in sessions if s.startswith(f"{_WRITES}{thread}/")]
                kept: set[str] = set()
                for session in mine:
                    self._heads.pop(session, None)
                    if strategy == "delete":
                        self.store.erase(session)
                        continue
                    records = self.store.checkpoints(session)
                    newest = max(_lg_id(r.id) for r in records)
                    last = max(i for i, r in enumerate(records) if _lg_id(r.id) == newest)
                    place = _parse_session(session)
                    assert place is not None
                    kept.add(_writes_session(place[0], place[1], newest))
                    self.store.prune(session, keep_last=len(records) - last)
                for session in apart:
                    if session not in kept:
                        self.store.erase(session)
                        self._writes_heads.pop(session, None)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint of a thread, with its writes, to another thread."""
        found = self._list(
            {"configurable": {"thread_id": source_thread_id}}, filter=None, before=None, limit=None
        )
        order = sorted(
            found,
            key=lambda t: (
                t.config["configurable"]["checkpoint_ns"],
                t.config["configurable"]["checkpoint_id"],
            ),
        )
        for copied in order:
            ns = copied.config["configurable"]["checkpoint_ns"]
            target: dict[str, Any] = {"thread_id": target_thread_id, "checkpoint_ns": ns}
            if copied.parent_config is not None:
                target["checkpoint_id"] = copied.parent_config["configurable"]["checkpoint_id"]
            checkpoint = copied.checkpoint
            stored = self.put(
                {"configurable": target},
                checkpoint,
                copied.metadata,
                dict(checkpoint["channel_versions"]),
            )
            tasks: dict[str, builtins.list[tuple[str, Any]]] = {}
            for task, channel, value in copied.pending_writes or ():
                tasks.setdefault(task, []).append((channel, value))
            for task, writes in tasks.items():
                self.put_writes(stored, writes, task)

    # -- async ---------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """See :meth:`get_tuple` (run in a worker thread)."""
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """See :meth:`list` (run in a worker thread)."""
        found = await asyncio.to_thread(
            self._list, config, filter=filter, before=before, limit=limit
        )
        for item in found:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """See :meth:`put` (run in a worker thread)."""
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """See :meth:`put_writes` (run in a worker thread)."""
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """See :meth:`delete_thread` (run in a worker thread)."""
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """See :meth:`prune` (run in a worker thread)."""
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """See :meth:`copy_thread` (run in a worker thread)."""
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)
