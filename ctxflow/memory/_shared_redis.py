"""Shared memory in Redis: each owner's items under one hash tag, merged in one transaction.

Layout (``P`` is the prefix, ``ctxflow:`` by default, so a tenant's memory
sits in the same ``ctxflow:<tenant>:`` namespace as its checkpoints)::

    P<tenant>:mem:{<kind>:<id>}:items    hash: item name -> item (codec bytes)
    P<tenant>:mem:{<kind>:<id>}:meta     hash: item name -> "importance written_at size"
    P<tenant>:mem:owners                 set: "<kind>:<id>" of the tenant's owners
    Pmemory-tenants                      set: tenants that have owners

Item names are ``f:<key>`` and ``p:<name>``. In the hash tag, ``%``, ``{``
and ``}`` of an owner id are percent-escaped, so every key of one owner
shares a Cluster slot whatever the id holds.

Atomicity. A merge WATCHes the owner's two keys, reads the meta, plans the
upserts and evictions, and writes everything in one MULTI/EXEC; when another
client changed the owner meanwhile it runs again (up to
``conflict_retries`` times). Deletion and erasure are single MULTI/EXECs.
The owner and tenant indexes are keys outside the owner's slot, so they are
kept in order instead: a merge adds the owner after its write; erasure
removes it before its delete; an index entry found empty is removed and put
back if the owner got items in between. So an owner with items is always
listed, and an entry left by a crash is skipped by :meth:`~RedisSharedMemory.owners`.

Every redis-py error is re-raised as ``StoreError`` (``rule="redis"``);
nothing is retried on connection errors, as a write whose reply was lost may
have been applied.

Redis Cluster: give a ``redis.RedisCluster`` client or a
``redis+cluster://host:port`` URL. An owner's two keys share a slot, so its
transactions run on one primary; the two indexes are single keys, changed
only by single commands, never in a transaction with an owner's keys.
``replicas=N`` acknowledges a merge, deletion, erasure or prune only once
``N`` replicas hold it (``WAIT``, see ``ctxflow.persistence._redis.replication``),
else ``ReplicationError``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from ctxflow.errors import StoreError
from ctxflow.memory._shared import (
    DEFAULT_MAX_ITEM_BYTES,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_OWNER_BYTES,
    OWNER_KINDS,
    ItemMeta,
    MemoryCore,
    Owner,
    SharedItems,
    StoredItem,
    _ClosingBackend,
    corrupt_item,
)
from ctxflow.persistence._codec import EnvelopeCodec
from ctxflow.persistence._redis.failures import REDIS_ERRORS
from ctxflow.persistence._redis.replication import Replication
from ctxflow.persistence._redis.url import parse_redis_url

__all__ = ["DEFAULT_PREFIX", "RedisSharedMemory"]

#: The key root of ctxflow's Redis keys (the checkpoint store's too).
DEFAULT_PREFIX = "ctxflow:"

T = TypeVar("T")


def _escape(owner_id: str) -> str:
    return owner_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisSharedMemory(_ClosingBackend):
    """A :class:`~ctxflow.memory._shared.SharedMemory` in Redis or Redis Cluster (safe across
    threads, processes and machines)."""

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster | str,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
        codec: EnvelopeCodec | None = None,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
        max_owner_bytes: int = DEFAULT_MAX_OWNER_BYTES,
        conflict_retries: int = 100,
        replicas: int = 0,
        replica_timeout: float = 1.0,
    ) -> None:
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise StoreError(
                f"'prefix' must be a non-empty string without braces (got {prefix!r})",
                rule="redis_prefix",
            )
        if (
            isinstance(conflict_retries, bool)
            or not isinstance(conflict_retries, int)
            or conflict_retries < 1
        ):
            raise StoreError(
                f"'conflict_retries' must be an integer >= 1 (got {conflict_retries!r})",
                rule="redis_option",
            )
        self._core = MemoryCore(
            codec=codec,
            clock=clock,
            max_items=max_items,
            max_item_bytes=max_item_bytes,
            max_owner_bytes=max_owner_bytes,
        )
        self.replication = Replication(replicas=replicas, timeout=replica_timeout)
        self.prefix = prefix
        self.conflict_retries = conflict_retries
        self._owns_client = isinstance(client, str)
        if isinstance(client, str):
            parsed = parse_redis_url(client)
            if parsed.options:
                raise StoreError(
                    f"a shared-memory URL must not carry store options "
                    f"(got {sorted(parsed.options)}); pass them as keywords",
                    rule="redis_url",
                )
            client = parsed.client()
        self.client: Any = client

    def __repr__(self) -> str:
        return f"<RedisSharedMemory prefix={self.prefix!r}>"

    def close(self) -> None:
        """Close the client if this memory created it (from a URL)."""
        if self._owns_client:
            self.client.close()

    # -- keys -------------------------------------------------------------------

    def owner_keys(self, owner: Owner) -> tuple[str, str]:
        """The ``items`` and ``meta`` keys of ``owner`` (one hash tag, one Cluster slot)."""
        base = f"{self.prefix}{owner.tenant}:mem:{{{owner.kind}:{_escape(owner.id)}}}"
        return f"{base}:items", f"{base}:meta"

    def _owners_key(self, tenant: str) -> str:
        return f"{self.prefix}{tenant}:mem:owners"

    @property
    def _tenants_key(self) -> str:
        return f"{self.prefix}memory-tenants"

    # -- running commands -------------------------------------------------------

    def _call(self, doing: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except REDIS_ERRORS as exc:
            raise StoreError(
                f"Redis shared memory {doing} failed: {type(exc).__name__}: {exc}",
                rule="redis",
                operation=doing,
            ) from exc

    def _transact(self, doing: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(pipeline)`` (which WATCHes, reads, then MULTI/EXECs) until no conflict."""

        def attempts() -> T:
            for _ in range(self.conflict_retries):
                with self.client.pipeline(transaction=True) as pipe:
                    try:
                        return fn(pipe)
                    except redis.WatchError:
                        continue
            raise StoreError(
                f"Redis shared memory {doing} must finish within {self.conflict_retries} "
                f"attempts (other clients kept changing the owner)",
                rule="contention",
                operation=doing,
            )

        return self._call(doing, attempts)

    def _confirm(self, doing: str, owner: Owner) -> None:
        """Wait for the replicas this memory requires to hold the owner's writes."""
        if self.replication.replicas:
            keys = (self.owner_keys(owner)[0], self._owners_key(owner.tenant), self._tenants_key)
            prefix = f"{self.prefix}{owner.tenant}:"
            self._call(doing, lambda: self.replication.confirm(self.client, prefix, doing, *keys))

    def _meta(self, owner: Owner, raw: dict[Any, Any]) -> dict[str, ItemMeta]:
        metas: dict[str, ItemMeta] = {}
        for field, value in raw.items():
            name = _text(field)
            try:
                importance, written_at, size = _text(value).split(" ")
                metas[name] = ItemMeta(float(importance), float(written_at), int(size))
            except (ValueError, UnicodeDecodeError) as exc:
                raise corrupt_item(
                    owner, name, f"its meta {value!r} is unreadable ({exc})"
                ) from None
        return metas

    def _tidy(self, owner: Owner) -> None:
        """Drop the index entries of an owner (and tenant) left empty (module docstring)."""
        items_key, _ = self.owner_keys(owner)
        owners_key, member = self._owners_key(owner.tenant), f"{owner.kind}:{owner.id}"
        client = self.client
        if client.exists(items_key):
            return
        client.srem(owners_key, member)
        if client.exists(items_key):
            client.sadd(owners_key, member)
            return
        if client.scard(owners_key) == 0:
            client.srem(self._tenants_key, owner.tenant)
            if client.exists(owners_key):
                client.sadd(self._tenants_key, owner.tenant)

    # -- the protocol (_Backend checks the arguments, then calls these) ------------

    def _load(self, owner: Owner) -> SharedItems:
        items_key, _ = self.owner_keys(owner)
        raw: dict[Any, Any] = self._call("load", lambda: dict(self.client.hgetall(items_key)))
        return self._core.items(owner, ((_text(n), bytes(d)) for n, d in raw.items()))

    def _merge(self, owner: Owner, incoming: dict[str, StoredItem]) -> None:
        items_key, meta_key = self.owner_keys(owner)

        def merge(pipe: Any) -> int:
            pipe.watch(items_key, meta_key)
            existing = self._meta(owner, pipe.hgetall(meta_key))
            writes, deletes = self._core.plan(existing, incoming)
            pipe.multi()
            if deletes:
                pipe.hdel(items_key, *deletes)
                pipe.hdel(meta_key, *deletes)
            if writes:
                pipe.hset(items_key, mapping={i.name: i.data for i in writes})
                pipe.hset(
                    meta_key,
                    mapping={
                        i.name: f"{i.meta.importance!r} {i.meta.written_at!r} {i.meta.size}"
                        for i in writes
                    },
                )
            pipe.execute()
            return len(writes)

        if not self._transact("merge", merge):  # everything merged was evicted at once
            self._call("merge", lambda: self._tidy(owner))
            self._confirm("merge", owner)
            return

        def index() -> None:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.sadd(self._owners_key(owner.tenant), f"{owner.kind}:{owner.id}")
                pipe.sadd(self._tenants_key, owner.tenant)
                pipe.execute()

        self._call("merge", index)
        self._confirm("merge", owner)

    def _delete(self, owner: Owner, doomed: list[str]) -> int:
        items_key, meta_key = self.owner_keys(owner)

        def delete() -> int:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hdel(items_key, *doomed)
                pipe.hdel(meta_key, *doomed)
                removed, _ = pipe.execute()
            self._tidy(owner)
            return int(removed)

        removed = self._call("delete", delete)
        self._confirm("delete", owner)
        return removed

    def _erase(self, owner: Owner) -> int:
        items_key, meta_key = self.owner_keys(owner)

        def erase() -> int:
            self.client.srem(self._owners_key(owner.tenant), f"{owner.kind}:{owner.id}")
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hlen(items_key)
                pipe.delete(items_key, meta_key)
                removed, _ = pipe.execute()
            self._tidy(owner)
            return int(removed)

        removed = self._call("erase", erase)
        self._confirm("erase", owner)
        return removed

    def _members(self, tenant: str) -> list[Owner]:
        """Every owner the tenant's index names (stale entries included)."""
        found: list[Owner] = []
        for raw in sorted(self.client.smembers(self._owners_key(tenant))):
            kind, _, id = _text(raw).partition(":")
            if kind not in OWNER_KINDS or not id:
                raise StoreError(
                    f"the owner index of tenant {tenant!r} must hold '<kind>:<id>' entries "
                    f"(got {raw!r})",
                    rule="corrupt_memory",
                    tenant=tenant,
                    key=self._owners_key(tenant),
                )
            found.append(Owner(tenant=tenant, kind=kind, id=id))  # type: ignore[arg-type]
        return found

    def _owners(self, tenant: str) -> list[Owner]:

        def owners() -> list[Owner]:
            members = self._members(tenant)
            with self.client.pipeline(transaction=False) as pipe:
                for owner in members:
                    pipe.exists(self.owner_keys(owner)[0])
                present = pipe.execute()
            return sorted(
                (o for o, held in zip(members, present, strict=True) if held),
                key=lambda o: (o.kind, o.id),
            )

        return self._call("owners", owners)

    def _prune(self, cutoff: float, tenant: str | None) -> int:
        def tenants() -> list[str]:
            if tenant is not None:
                return [tenant]
            return sorted(_text(t) for t in self.client.smembers(self._tenants_key))

        removed = 0
        for name in self._call("prune", tenants):
            for owner in self._call("prune", functools.partial(self._members, name)):
                removed += self._prune_owner(owner, cutoff)
        return removed

    def _prune_owner(self, owner: Owner, cutoff: float) -> int:
        items_key, meta_key = self.owner_keys(owner)

        def prune(pipe: Any) -> int:
            pipe.watch(items_key, meta_key)
            old = sorted(
                n
                for n, m in self._meta(owner, pipe.hgetall(meta_key)).items()
                if m.written_at <= cutoff
            )
            if not old:
                pipe.unwatch()
                return 0
            pipe.multi()
            pipe.hdel(items_key, *old)
            pipe.hdel(meta_key, *old)
            pipe.execute()
            return len(old)

        removed = self._transact("prune", prune)
        self._call("prune", lambda: self._tidy(owner))
        if removed:
            self._confirm("prune", owner)
        return removed
