"""Memory that outlives a session: semantic and procedural items kept per owner.

An owner is a user or a project of a tenant (:class:`Owner`). A session starts
with what its owners' earlier sessions learned (:meth:`SharedMemory.load`) and
hands back what it learned (:meth:`SharedMemory.merge`). Facts are keyed by
``key`` and procedures by ``name``; the last write of an item wins, whole.

One behaviour, four backends, all passing one conformance suite:
:class:`InMemorySharedMemory`; ``SQLiteSharedMemory`` (a table of its own in a
ctxflow SQLite file, which may be the checkpoint store's, see
:mod:`._shared_sqlite`); ``RedisSharedMemory`` (an owner's keys under one hash
tag, see :mod:`._shared_redis`); ``PostgresSharedMemory`` (a table in the
checkpoint store's schema, see :mod:`._shared_postgres`). :func:`shared_memory_for`
gives the one that matches a checkpoint store, so an application configures one store.

Bounds. An item's msgpack form is at most ``max_item_bytes``: a larger one is
refused before anything changes. An owner holds at most ``max_items`` items
and ``max_owner_bytes`` stored bytes; a merge that would pass either evicts
the least important items first, the least recently written among equals
(then by item name, so the choice is deterministic). The merge's own items
compete too: merging an unimportant item into an owner full of important ones
keeps nothing of it.

Retention and erasure delete only what they name. Each item is stored beside
the wall-clock time of its last write (the ``clock``, :func:`time.time` by
default; the item classes carry no time of their own): :meth:`~SharedMemory.prune`
removes the items not written for a given time, :meth:`~SharedMemory.erase`
every item of one owner.

Values go through the store's codec (msgpack + lz4 in a checked envelope),
never pickle. Damaged stored bytes raise ``StoreError`` with
``rule="corrupt_memory"`` naming the owner and the item; a bad owner or item
raises ``FormatError`` (a ``ValueError``), like the item classes themselves.
"""

from __future__ import annotations

import math
import re
import threading
import time
import unicodedata
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, runtime_checkable

import attrs

from ctxflow.errors import CheckpointError, FormatError, StoreError
from ctxflow.layers import Fact, Procedure
from ctxflow.persistence import MemoryStore
from ctxflow.persistence._codec import EnvelopeCodec, default_codec

if TYPE_CHECKING:
    from ctxflow.persistence import Store

__all__ = [
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_ITEM_BYTES",
    "DEFAULT_MAX_OWNER_BYTES",
    "OWNER_KINDS",
    "InMemorySharedMemory",
    "ItemMeta",
    "MemoryCore",
    "Owner",
    "OwnerKind",
    "SharedItems",
    "SharedMemory",
    "StoredItem",
    "check_owner",
    "check_owner_tenant",
    "corrupt_item",
    "plan_merge",
    "shared_memory_for",
    "stored_names",
]

#: Most items one owner holds by default.
DEFAULT_MAX_ITEMS = 1000
#: Largest msgpack form of one item by default: 16 KiB.
DEFAULT_MAX_ITEM_BYTES = 16 * 1024
#: Most stored bytes of one owner by default: 4 MiB.
DEFAULT_MAX_OWNER_BYTES = 4 * 1024 * 1024
#: Whose memory it is: a user's (across their sessions) or a project's (across everyone's).
OWNER_KINDS = ("user", "project")
OwnerKind = Literal["user", "project"]

#: A tenant name: the same rule as the stores' tenants, so it is safe inside a key.
_TENANT = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
#: Longest owner id.
_MAX_ID = 256
#: Prefix of a stored item's name: a fact's key or a procedure's name follows it.
_FACT, _PROCEDURE = "f:", "p:"


def check_owner_tenant(tenant: object) -> str:
    """``tenant`` when it is a valid tenant name (the stores' rule), else ``FormatError``."""
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise FormatError(
            f"an owner's tenant must be 1-64 characters of letters, digits, '_', '.' or '-' "
            f"(got {tenant!r})",
            rule="memory_owner",
            tenant=tenant,
        )
    return tenant


def _tenant_field(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    check_owner_tenant(value)


def _kind_field(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in OWNER_KINDS:
        raise FormatError(
            f"an owner's kind must be one of {list(OWNER_KINDS)} (got {value!r})",
            rule="memory_owner",
            kind=value,
        )


def _id_field(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= _MAX_ID
        or any(unicodedata.category(c) in ("Cc", "Cs") for c in value)
    ):
        raise FormatError(
            f"an owner's id must be 1-{_MAX_ID} characters without control characters "
            f"(got {value!r})",
            rule="memory_owner",
            id=value,
        )


@attrs.frozen(kw_only=True)
class Owner:
    """Whose shared memory: a user or a project (``kind``) of a tenant.

    ``tenant`` follows the stores' rule (1-64 of letters, digits, ``_.-``);
    ``id`` is 1-256 characters without control characters. Anything else
    raises ``FormatError`` (``rule="memory_owner"``).
    """

    tenant: str = attrs.field(validator=_tenant_field)
    kind: OwnerKind = attrs.field(validator=_kind_field)
    id: str = attrs.field(validator=_id_field)

    @classmethod
    def user(cls, tenant: str, id: str) -> Owner:
        """The owner of one user's memory."""
        return cls(tenant=tenant, kind="user", id=id)

    @classmethod
    def project(cls, tenant: str, id: str) -> Owner:
        """The owner of one project's memory."""
        return cls(tenant=tenant, kind="project", id=id)

    def __str__(self) -> str:
        return f"{self.tenant}/{self.kind}:{self.id}"


@attrs.frozen(kw_only=True)
class SharedItems:
    """What one owner's memory holds: facts by key, procedures by name."""

    facts: tuple[Fact, ...] = ()
    procedures: tuple[Procedure, ...] = ()

    def __len__(self) -> int:
        return len(self.facts) + len(self.procedures)


@runtime_checkable
class SharedMemory(Protocol):
    """Semantic and procedural memory kept per owner across sessions (module docstring)."""

    def load(self, owner: Owner) -> SharedItems:
        """Every item of ``owner`` (facts ordered by key, procedures by name)."""
        ...

    def merge(
        self, owner: Owner, facts: Iterable[Fact] = (), procedures: Iterable[Procedure] = ()
    ) -> None:
        """Upsert facts by key and procedures by name, then evict down to the owner's bounds."""
        ...

    def delete(
        self, owner: Owner, *, facts: Iterable[str] = (), procedures: Iterable[str] = ()
    ) -> int:
        """Remove the facts and procedures of ``owner`` with these keys and names; how many
        there were."""
        ...

    def erase(self, owner: Owner) -> int:
        """Remove every item of ``owner``; how many there were."""
        ...

    def owners(self, tenant: str) -> list[Owner]:
        """The owners of ``tenant`` holding at least one item, ordered by kind and id."""
        ...

    def prune(self, *, older_than_seconds: float, tenant: str | None = None) -> int:
        """Remove the items not written for ``older_than_seconds`` (of one tenant, or all);
        how many."""
        ...

    def close(self) -> None:
        """Release the connection (a no-op where there is none)."""
        ...


# -- what every backend shares: encoding, checks, the eviction plan --------------


@attrs.frozen
class ItemMeta:
    """What eviction and retention need of a stored item: importance, write time, size."""

    importance: float
    written_at: float
    size: int


@attrs.frozen
class StoredItem:
    """An item ready to store: its name (``f:<key>`` or ``p:<name>``), bytes and meta."""

    name: str
    data: bytes
    meta: ItemMeta


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StoreError(f"'{name}' must be an integer >= 1 (got {value!r})", rule="memory_limit")
    return value


def corrupt_item(owner: Owner, name: str, why: str) -> StoreError:
    """The error of a stored item (or its meta) that cannot be read."""
    what, _, key = name.partition(":")
    label = {"f": "fact", "p": "procedure"}.get(what, "item")
    return StoreError(
        f"shared memory of {owner} must hold readable items ({label} {key!r}: {why})",
        rule="corrupt_memory",
        owner=owner,
        key=name,
    )


class MemoryCore:
    """Encoding, bounds and checks: the part of a shared memory that is not storage."""

    def __init__(
        self,
        *,
        codec: EnvelopeCodec | None,
        clock: Callable[[], float],
        max_items: int,
        max_item_bytes: int,
        max_owner_bytes: int,
    ) -> None:
        base = codec or default_codec()
        self.max_items = _positive("max_items", max_items)
        self.max_item_bytes = _positive("max_item_bytes", max_item_bytes)
        self.max_owner_bytes = _positive("max_owner_bytes", max_owner_bytes)
        self.clock = clock
        # The store's chain (lz4, perhaps encryption), with a body bound of one item: a
        # damaged or crafted value cannot make a decode build more than that.
        self.codec = EnvelopeCodec(
            base.layers,
            max_size=self.max_item_bytes,
            max_objects=min(base.max_objects, self.max_item_bytes),
            version=base.version,
            migrations=base.migrations,
        )

    def now(self) -> float:
        """The clock's time, checked (a retention cut off a NaN would delete nothing)."""
        now = float(self.clock())
        if not math.isfinite(now):
            raise StoreError(f"the clock must give a finite time (got {now!r})", rule="clock")
        return now

    def encode(
        self, owner: Owner, facts: Iterable[Fact], procedures: Iterable[Procedure]
    ) -> dict[str, StoredItem]:
        """Every item checked and encoded, by stored name (a later one of a name wins)."""
        check_owner(owner)
        now = self.now()
        items: dict[str, StoredItem] = {}
        for cls, prefix, attr, group in (
            (Fact, _FACT, "key", facts),
            (Procedure, _PROCEDURE, "name", procedures),
        ):
            for item in _iterate(group, "facts" if cls is Fact else "procedures"):
                if not isinstance(item, cls):
                    raise FormatError(
                        f"shared {cls.__name__.lower()}s must be {cls.__name__} values "
                        f"(got {type(item).__name__})",
                        rule="memory_item",
                    )
                key = getattr(item, attr)
                if not isinstance(key, str) or not key:
                    raise FormatError(
                        f"a shared {cls.__name__.lower()}'s {attr} must be a non-empty string "
                        f"(got {key!r})",
                        rule="memory_item",
                    )
                try:
                    data = self.codec.encode(attrs.asdict(item))
                except CheckpointError as exc:
                    what = cls.__name__.lower()
                    if exc.rule == "too_large":
                        size = exc.details["size"]
                        raise FormatError(
                            f"a shared {what}'s msgpack form must be at most "
                            f"{self.max_item_bytes} bytes ({attr} {key!r}: got {size})",
                            rule="memory_item_too_large",
                            key=key,
                            size=size,
                        ) from None
                    raise FormatError(
                        f"a shared {what} must hold plain data ({attr} {key!r}: {exc})",
                        rule="memory_item",
                        key=key,
                    ) from None
                name = prefix + key
                items[name] = StoredItem(name, data, ItemMeta(item.importance, now, len(data)))
        return items

    def decode(self, owner: Owner, name: str, data: object) -> Fact | Procedure:
        """The item stored under ``name``; ``StoreError`` naming it when it cannot be read."""
        cls: type[Fact] | type[Procedure]
        if name.startswith(_FACT):
            cls, attr = Fact, "key"
        elif name.startswith(_PROCEDURE):
            cls, attr = Procedure, "name"
        else:
            raise corrupt_item(owner, name, "the stored name is neither a fact's nor a procedure's")
        if not isinstance(data, bytes):
            raise corrupt_item(
                owner, name, f"the stored value is a {type(data).__name__}, not bytes"
            )
        try:
            plain = self.codec.decode(data)
            if not isinstance(plain, dict):
                raise TypeError(f"stored value is a {type(plain).__name__}, not a map")
            item = cls(**plain)
        except (CheckpointError, TypeError, ValueError) as exc:
            raise corrupt_item(owner, name, str(exc)) from None
        if getattr(item, attr) != name[2:]:
            raise corrupt_item(owner, name, f"it holds the {attr} {getattr(item, attr)!r} instead")
        return item

    def items(self, owner: Owner, stored: Iterable[tuple[str, object]]) -> SharedItems:
        """The decoded items of stored ``(name, bytes)`` pairs, ordered by name."""
        facts: list[Fact] = []
        procedures: list[Procedure] = []
        for name, data in sorted(stored, key=lambda pair: pair[0]):
            item = self.decode(owner, name, data)
            if isinstance(item, Fact):
                facts.append(item)
            else:
                procedures.append(item)
        return SharedItems(facts=tuple(facts), procedures=tuple(procedures))

    def plan(
        self, existing: Mapping[str, ItemMeta], incoming: Mapping[str, StoredItem]
    ) -> tuple[list[StoredItem], list[str]]:
        """See :func:`plan_merge`, with this memory's bounds."""
        return plan_merge(
            existing,
            incoming,
            max_items=self.max_items,
            max_owner_bytes=self.max_owner_bytes,
        )

    def cutoff(self, older_than_seconds: float) -> float:
        """The write time at or before which retention removes an item."""
        if (
            isinstance(older_than_seconds, bool)
            or not isinstance(older_than_seconds, int | float)
            or not 0 <= older_than_seconds < math.inf
        ):
            raise StoreError(
                f"'older_than_seconds' must be a finite number >= 0 (got {older_than_seconds!r})",
                rule="retention",
            )
        return self.now() - older_than_seconds


def plan_merge(
    existing: Mapping[str, ItemMeta],
    incoming: Mapping[str, StoredItem],
    *,
    max_items: int,
    max_owner_bytes: int,
) -> tuple[list[StoredItem], list[str]]:
    """What a merge writes and deletes: the incoming items upserted over the existing ones,
    then the least important, least recently written (then by name) evicted until the owner
    is within ``max_items`` and ``max_owner_bytes``.

    Returns the incoming items to write (those not evicted at once) and the names of
    existing items to delete.
    """
    merged = dict(existing)
    merged.update((name, item.meta) for name, item in incoming.items())
    count, total = len(merged), sum(m.size for m in merged.values())
    evicted: set[str] = set()
    if count > max_items or total > max_owner_bytes:
        order = sorted(merged.items(), key=lambda e: (e[1].importance, e[1].written_at, e[0]))
        for name, meta in order:
            if count <= max_items and total <= max_owner_bytes:
                break
            evicted.add(name)
            count, total = count - 1, total - meta.size
    writes = [item for name, item in incoming.items() if name not in evicted]
    return writes, sorted(name for name in evicted if name in existing)


def stored_names(facts: Iterable[str], procedures: Iterable[str]) -> list[str]:
    """The stored names of fact keys and procedure names (checked to be strings)."""
    found: list[str] = []
    for prefix, group, what in ((_FACT, facts, "facts"), (_PROCEDURE, procedures, "procedures")):
        for key in _iterate(group, what):
            if not isinstance(key, str):
                raise FormatError(
                    f"'{what}' to delete must be strings (got {key!r})", rule="memory_item"
                )
            found.append(prefix + key)
    return found


def _iterate(group: Iterable[Any], what: str) -> Iterator[Any]:
    if isinstance(group, str | bytes):
        raise FormatError(
            f"'{what}' must be a collection of items, not a single string (got {group!r})",
            rule="memory_item",
        )
    return iter(group)


def check_owner(owner: object) -> Owner:
    """``owner`` when it is an :class:`Owner`, else ``FormatError``."""
    if not isinstance(owner, Owner):
        raise FormatError(
            f"an owner must be an Owner (got {type(owner).__name__})", rule="memory_owner"
        )
    return owner


class _Backend:
    """The protocol's argument checks, common to every backend: a subclass stores.

    Each method checks (and encodes) what it is given, returns at once when there is
    nothing to do, and hands the rest to the subclass's method of the same name with
    a leading underscore.
    """

    _core: MemoryCore

    def load(self, owner: Owner) -> SharedItems:
        """Every item of ``owner`` (facts ordered by key, procedures by name)."""
        return self._load(check_owner(owner))

    def merge(
        self, owner: Owner, facts: Iterable[Fact] = (), procedures: Iterable[Procedure] = ()
    ) -> None:
        """Upsert facts by key and procedures by name, then evict down to the owner's bounds."""
        incoming = self._core.encode(owner, facts, procedures)
        if incoming:
            self._merge(owner, incoming)

    def delete(
        self, owner: Owner, *, facts: Iterable[str] = (), procedures: Iterable[str] = ()
    ) -> int:
        """Remove the named facts and procedures of ``owner``; how many there were."""
        check_owner(owner)
        doomed = sorted(set(stored_names(facts, procedures)))
        return self._delete(owner, doomed) if doomed else 0

    def erase(self, owner: Owner) -> int:
        """Remove every item of ``owner``; how many there were."""
        return self._erase(check_owner(owner))

    def owners(self, tenant: str) -> list[Owner]:
        """The owners of ``tenant`` holding at least one item, ordered by kind and id."""
        return self._owners(check_owner_tenant(tenant))

    def prune(self, *, older_than_seconds: float, tenant: str | None = None) -> int:
        """Remove the items not written for ``older_than_seconds``; how many."""
        if tenant is not None:
            check_owner_tenant(tenant)
        return self._prune(self._core.cutoff(older_than_seconds), tenant)

    def _load(self, owner: Owner) -> SharedItems:
        """Every stored item of ``owner``, decoded."""
        raise NotImplementedError

    def _merge(self, owner: Owner, incoming: dict[str, StoredItem]) -> None:
        """Store the encoded ``incoming`` items (not empty) and evict."""
        raise NotImplementedError

    def _delete(self, owner: Owner, doomed: list[str]) -> int:
        """Remove the stored names ``doomed`` (sorted, not empty); how many there were."""
        raise NotImplementedError

    def _erase(self, owner: Owner) -> int:
        """Remove every item of ``owner``; how many there were."""
        raise NotImplementedError

    def _owners(self, tenant: str) -> list[Owner]:
        """The owners of ``tenant`` holding at least one item, ordered by kind and id."""
        raise NotImplementedError

    def _prune(self, cutoff: float, tenant: str | None) -> int:
        """Remove the items written at or before ``cutoff`` (of ``tenant``, or all)."""
        raise NotImplementedError


class _ClosingBackend(_Backend):
    """A backend holding a connection: ``with`` closes it."""

    def close(self) -> None:
        """Release the connection."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- in memory ------------------------------------------------------------------


class _Shelf:
    """The data of in-memory shared memory: per owner, item name → (bytes, meta)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.owners: dict[Owner, dict[str, tuple[bytes, ItemMeta]]] = {}


class InMemorySharedMemory(_Backend):
    """A :class:`SharedMemory` in process memory (thread-safe, not persistent).

    Items are kept encoded, as the other backends store them, so sizes and
    bounds behave the same way.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        codec: EnvelopeCodec | None = None,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
        max_owner_bytes: int = DEFAULT_MAX_OWNER_BYTES,
    ) -> None:
        self._core = MemoryCore(
            codec=codec,
            clock=clock,
            max_items=max_items,
            max_item_bytes=max_item_bytes,
            max_owner_bytes=max_owner_bytes,
        )
        self._shelf = _Shelf()

    def __repr__(self) -> str:
        return f"<InMemorySharedMemory owners={len(self._shelf.owners)}>"

    def close(self) -> None:
        """Nothing to release."""

    def corrupt(self, owner: Owner, name: str, data: bytes) -> None:
        """Replace an item's stored bytes (``f:<key>`` or ``p:<name>``), for tests of damage."""
        with self._shelf.lock:
            held = self._shelf.owners.setdefault(owner, {})
            meta = held[name][1] if name in held else ItemMeta(0.5, self._core.now(), len(data))
            held[name] = (data, meta)

    def _load(self, owner: Owner) -> SharedItems:
        with self._shelf.lock:
            stored = [(n, d) for n, (d, _) in self._shelf.owners.get(owner, {}).items()]
        return self._core.items(owner, stored)

    def _merge(self, owner: Owner, incoming: dict[str, StoredItem]) -> None:
        with self._shelf.lock:
            held = self._shelf.owners.get(owner, {})
            writes, deletes = self._core.plan({n: m for n, (_, m) in held.items()}, incoming)
            for name in deletes:
                del held[name]
            held.update((item.name, (item.data, item.meta)) for item in writes)
            if held:
                self._shelf.owners[owner] = held
            else:
                self._shelf.owners.pop(owner, None)

    def _delete(self, owner: Owner, doomed: list[str]) -> int:
        with self._shelf.lock:
            held = self._shelf.owners.get(owner, {})
            removed = sum(held.pop(name, None) is not None for name in doomed)
            if not held:
                self._shelf.owners.pop(owner, None)
        return removed

    def _erase(self, owner: Owner) -> int:
        with self._shelf.lock:
            return len(self._shelf.owners.pop(owner, {}))

    def _owners(self, tenant: str) -> list[Owner]:
        with self._shelf.lock:
            found = [o for o, held in self._shelf.owners.items() if o.tenant == tenant and held]
        return sorted(found, key=lambda o: (o.kind, o.id))

    def _prune(self, cutoff: float, tenant: str | None) -> int:
        removed = 0
        with self._shelf.lock:
            for owner, held in list(self._shelf.owners.items()):
                if tenant is not None and owner.tenant != tenant:
                    continue
                old = [n for n, (_, meta) in held.items() if meta.written_at <= cutoff]
                for name in old:
                    del held[name]
                removed += len(old)
                if not held:
                    del self._shelf.owners[owner]
        return removed


# -- one store to configure --------------------------------------------------------

#: The in-memory shared memory of each MemoryStore, so every call for a store sees one memory.
_SHELVES: weakref.WeakKeyDictionary[MemoryStore, _Shelf] = weakref.WeakKeyDictionary()
_SHELVES_LOCK = threading.Lock()


def shared_memory_for(
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
    max_items: int = DEFAULT_MAX_ITEMS,
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
    max_owner_bytes: int = DEFAULT_MAX_OWNER_BYTES,
) -> SharedMemory:
    """The shared memory that lives where a checkpoint store does, with the store's codec.

    A ``MemoryStore`` gets in-memory shared memory (the same data on every call
    for the same store); a ``SQLiteStore`` a ``SQLiteSharedMemory`` on its file
    (its own connection; read-only when the store is); a ``RedisStore`` a
    ``RedisSharedMemory`` on its client, under the ``ctxflow:`` key root, so a
    tenant's memory sits in the same ``ctxflow:<tenant>:`` namespace as its
    checkpoints, and waits for as many replicas as the store; a ``PostgresStore`` a
    ``PostgresSharedMemory`` on its connection pool, in its schema. Any other store
    raises ``StoreError`` (``rule="shared_memory"``).
    """
    limits: dict[str, Any] = {
        "clock": clock,
        "max_items": max_items,
        "max_item_bytes": max_item_bytes,
        "max_owner_bytes": max_owner_bytes,
        "codec": getattr(store, "codec", None),
    }
    if isinstance(store, MemoryStore):
        memory = InMemorySharedMemory(**limits)
        with _SHELVES_LOCK:
            memory._shelf = _SHELVES.setdefault(store, memory._shelf)
        return memory
    from ctxflow.persistence._sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        from ctxflow.memory._shared_sqlite import SQLiteSharedMemory

        return SQLiteSharedMemory(store.path, read_only=store.read_only, **limits)
    redis_store: type[Any] | None
    try:
        from ctxflow.persistence._redis import RedisStore as redis_store
    except ImportError:  # the redis extra is absent: no store can be a RedisStore
        redis_store = None
    if redis_store is not None and isinstance(store, redis_store):
        from ctxflow.memory._shared_redis import RedisSharedMemory

        replication = store.replication  # the store's durability holds for its memory too
        return RedisSharedMemory(
            store.client,
            replicas=replication.replicas,
            replica_timeout=replication.timeout,
            **limits,
        )
    postgres_store: type[Any] | None
    try:
        from ctxflow.persistence._postgres import PostgresStore as postgres_store
    except ImportError:  # the postgres extra is absent: no store can be a PostgresStore
        postgres_store = None
    if postgres_store is not None and isinstance(store, postgres_store):
        from ctxflow.memory._shared_postgres import PostgresSharedMemory

        return PostgresSharedMemory(store.pool, schema=store.schema, **limits)
    raise StoreError(
        f"shared memory is kept in a MemoryStore, SQLiteStore, RedisStore or PostgresStore "
        f"(got a {type(store).__name__})",
        rule="shared_memory",
        store=type(store).__name__,
    )
