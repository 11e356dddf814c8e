"""The store protocols (sync and async) and the helpers every backend shares.

A store holds checkpoints of sessions. Each session is a linear chain: a put
names the parent it was based on (``expected_parent``) and is refused with
:class:`~ctxflow.errors.StaleCheckpoint` when that is not the session's
latest checkpoint, so two writers never fork a session silently. Forking is
explicit (:meth:`Store.fork`) and makes a new session.

Bodies are shared by content hash across the whole store. A body is deleted
(by retention or erasure) only when no remaining manifest record of any
session names it. Retention keeps every remaining checkpoint loadable: when
the oldest kept checkpoint is a delta, it is rewritten as a full manifest
before its ancestors go.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar, runtime_checkable

from ctxflow.checkpoints.bodies import body_hash
from ctxflow.checkpoints.manifest import Manifest, mentions
from ctxflow.checkpoints.model import (
    CheckpointDraft,
    CheckpointRecord,
    Snapshot,
    new_checkpoint_id,
)
from ctxflow.checkpoints.model import new_session_id as _new_session_id
from ctxflow.errors import CheckpointError, CheckpointNotFound, CorruptCheckpoint, StaleCheckpoint
from ctxflow.serde import EnvelopeCodec

__all__ = [
    "AsyncStore",
    "BaseStore",
    "Store",
    "ThreadedAsyncStore",
    "apply_deltas",
    "check_retention",
    "pick_pruned",
    "replay",
]

T = TypeVar("T")


@runtime_checkable
class Store(Protocol):
    """Where checkpoints live: put, list, load, fork, retention and erasure."""

    def put(self, draft: CheckpointDraft, *, expected_parent: str | None) -> CheckpointRecord:
        """Write one checkpoint atomically; ``StaleCheckpoint`` if the latest is not
        ``expected_parent`` (None: the session must not exist yet)."""
        ...

    def sessions(self) -> list[str]:
        """Every session id in the store, oldest first."""
        ...

    def checkpoints(self, session_id: str) -> list[CheckpointRecord]:
        """A session's checkpoints, oldest first; ``CheckpointNotFound`` for an unknown one."""
        ...

    def latest(self, session_id: str) -> CheckpointRecord:
        """The newest checkpoint of a session; ``CheckpointNotFound`` for an unknown one."""
        ...

    def load(self, session_id: str, checkpoint_id: str | None = None) -> Snapshot:
        """A checkpoint's full manifest and bodies (the latest when no id is given)."""
        ...

    def fork(
        self, session_id: str, checkpoint_id: str, *, new_session_id: str | None = None
    ) -> CheckpointRecord:
        """Start a new session whose first checkpoint equals the given one."""
        ...

    def prune(
        self,
        session_id: str,
        *,
        keep_last: int | None = None,
        max_age: float | None = None,
        now: float | None = None,
    ) -> list[str]:
        """Delete old checkpoints (beyond the last ``keep_last``, or older than ``max_age``
        seconds); the latest always stays. Returns the deleted ids."""
        ...

    def erase(self, session_id: str) -> None:
        """Delete a whole session, and its bodies that no other session references."""
        ...

    def close(self) -> None:
        """Release the backend's resources."""
        ...


@runtime_checkable
class AsyncStore(Protocol):
    """The async form of :class:`Store` (same operations, awaited)."""

    async def put(self, draft: CheckpointDraft, *, expected_parent: str | None) -> CheckpointRecord:
        """See :meth:`Store.put`."""
        ...

    async def sessions(self) -> list[str]:
        """See :meth:`Store.sessions`."""
        ...

    async def checkpoints(self, session_id: str) -> list[CheckpointRecord]:
        """See :meth:`Store.checkpoints`."""
        ...

    async def latest(self, session_id: str) -> CheckpointRecord:
        """See :meth:`Store.latest`."""
        ...

    async def load(self, session_id: str, checkpoint_id: str | None = None) -> Snapshot:
        """See :meth:`Store.load`."""
        ...

    async def fork(
        self, session_id: str, checkpoint_id: str, *, new_session_id: str | None = None
    ) -> CheckpointRecord:
        """See :meth:`Store.fork`."""
        ...

    async def prune(
        self,
        session_id: str,
        *,
        keep_last: int | None = None,
        max_age: float | None = None,
        now: float | None = None,
    ) -> list[str]:
        """See :meth:`Store.prune`."""
        ...

    async def erase(self, session_id: str) -> None:
        """See :meth:`Store.erase`."""
        ...

    async def close(self) -> None:
        """See :meth:`Store.close`."""
        ...


class ThreadedAsyncStore:
    """An :class:`AsyncStore` over any sync store: each call runs in ``asyncio.to_thread``.

    The sync store must tolerate calls from worker threads (the bundled ones
    do: the SQLite store serialises its connection with a lock). Calls are not
    cancelled mid-write: a cancelled await still lets the thread finish.
    """

    def __init__(self, store: Store) -> None:
        self.sync = store

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def put(self, draft: CheckpointDraft, *, expected_parent: str | None) -> CheckpointRecord:
        """See :meth:`Store.put`."""
        return await self._run(self.sync.put, draft, expected_parent=expected_parent)

    async def sessions(self) -> list[str]:
        """See :meth:`Store.sessions`."""
        return await self._run(self.sync.sessions)

    async def checkpoints(self, session_id: str) -> list[CheckpointRecord]:
        """See :meth:`Store.checkpoints`."""
        return await self._run(self.sync.checkpoints, session_id)

    async def latest(self, session_id: str) -> CheckpointRecord:
        """See :meth:`Store.latest`."""
        return await self._run(self.sync.latest, session_id)

    async def load(self, session_id: str, checkpoint_id: str | None = None) -> Snapshot:
        """See :meth:`Store.load`."""
        return await self._run(self.sync.load, session_id, checkpoint_id)

    async def fork(
        self, session_id: str, checkpoint_id: str, *, new_session_id: str | None = None
    ) -> CheckpointRecord:
        """See :meth:`Store.fork`."""
        return await self._run(
            self.sync.fork, session_id, checkpoint_id, new_session_id=new_session_id
        )

    async def prune(
        self,
        session_id: str,
        *,
        keep_last: int | None = None,
        max_age: float | None = None,
        now: float | None = None,
    ) -> list[str]:
        """See :meth:`Store.prune`."""
        return await self._run(
            self.sync.prune, session_id, keep_last=keep_last, max_age=max_age, now=now
        )

    async def erase(self, session_id: str) -> None:
        """See :meth:`Store.erase`."""
        await self._run(self.sync.erase, session_id)

    async def close(self) -> None:
        """See :meth:`Store.close`."""
        await self._run(self.sync.close)


def replay(records: Sequence[Mapping[str, Any]]) -> Manifest:
    """The full manifest from a chain of records: a full one, then deltas, oldest first."""
    if not records or records[0].get("kind") != "full":
        raise CorruptCheckpoint(
            "a manifest chain must start with a full manifest", rule="manifest_chain"
        )
    manifest = Manifest.from_plain(records[0])
    apply_deltas(manifest, records[1:])
    return manifest


def apply_deltas(manifest: Manifest, records: Iterable[Any]) -> None:
    """Apply delta records to a full manifest in place, oldest first."""
    for record in records:
        if not isinstance(record, Mapping) or record.get("kind") != "delta":
            raise CorruptCheckpoint(
                "a manifest chain must continue with deltas", rule="manifest_chain"
            )
        manifest.apply(record)


def check_retention(keep_last: int | None, max_age: float | None) -> None:
    """Refuse unusable retention arguments before anything is deleted."""
    if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
        raise CheckpointError(
            f"'keep_last' must be an integer >= 1 or None (got {keep_last!r})", rule="retention"
        )
    if max_age is not None and not max_age >= 0:
        raise CheckpointError(
            f"'max_age' must be >= 0 seconds or None (got {max_age!r})", rule="retention"
        )


def pick_pruned(
    records: Iterable[CheckpointRecord],
    *,
    keep_last: int | None,
    max_age: float | None,
    now: float,
) -> list[CheckpointRecord]:
    """The records retention deletes: the oldest ones up to the first that stays.

    Always a prefix of the session (so every kept delta keeps its chain once
    the oldest kept checkpoint is rewritten in full); the latest always stays.
    """
    ordered = sorted(records, key=lambda r: r.seq)
    doomed: list[CheckpointRecord] = []
    for index, record in enumerate(ordered[:-1]):
        too_many = keep_last is not None and index < len(ordered) - keep_last
        too_old = max_age is not None and now - record.created_at > max_age
        if not (too_many or too_old):
            break
        doomed.append(record)
    return doomed


class BaseStore(abc.ABC):
    """The store operations written once over a few backend primitives.

    A backend implements the ``_``-prefixed primitives; every public method
    here runs its reads and writes inside one ``_transaction`` so a failure
    leaves the store as it was. Everything is encoded with ``codec`` before a
    transaction starts, so a value that cannot be encoded changes nothing.
    """

    codec: EnvelopeCodec

    @abc.abstractmethod
    def close(self) -> None:
        """Release the backend's resources."""

    # -- primitives -----------------------------------------------------------

    @abc.abstractmethod
    def _transaction(self, *, write: bool) -> AbstractContextManager[None]:
        """A transaction: exclusive for writes, a consistent snapshot for reads."""

    @abc.abstractmethod
    def _session_ids(self) -> list[str]:
        """Every session id, oldest first."""

    @abc.abstractmethod
    def _records(self, session_id: str) -> list[CheckpointRecord]:
        """A session's records by seq ([] for an unknown session)."""

    @abc.abstractmethod
    def _latest(self, session_id: str) -> CheckpointRecord | None:
        """A session's newest record."""

    @abc.abstractmethod
    def _exists(self, checkpoint_id: str) -> bool:
        """True when a checkpoint with this id is stored (in any session)."""

    @abc.abstractmethod
    def _manifests(self, checkpoint_ids: Sequence[str]) -> list[bytes]:
        """The encoded manifest records of checkpoints, in the order given."""

    @abc.abstractmethod
    def _bodies(self, hashes: Iterable[str]) -> dict[str, bytes]:
        """The encoded bodies present under these hashes."""

    def _chain_records(self, session_id: str, checkpoint_id: str | None) -> list[CheckpointRecord]:
        """Consecutive records of a session, oldest first, that hold the checkpoint (the
        latest when None) and the full manifest its chain starts from: all by default."""
        return self._known(session_id)

    def _snapshot_parts(
        self, session_id: str, checkpoint_id: str | None
    ) -> tuple[CheckpointRecord, Manifest, int, dict[str, Any]]:
        """A checkpoint's record, full manifest, how many deltas that took, and the decoded
        bodies it names (the latest checkpoint when None; a backend may find them its way)."""
        records = self._chain_records(session_id, checkpoint_id)
        index = _index_of(records, session_id, checkpoint_id)
        start = _chain_start(records, index)
        manifest = replay(self._decoded_manifests([r.id for r in records[start : index + 1]]))
        bodies = self._decoded_bodies(manifest.body_hashes())
        return records[index], manifest, index - start, bodies

    def _decoded_manifests(self, checkpoint_ids: Sequence[str]) -> list[Any]:
        """The decoded manifest records of checkpoints, in the order given."""
        return [self.codec.decode(b) for b in self._manifests(checkpoint_ids)]

    def _decoded_bodies(self, hashes: Iterable[str]) -> dict[str, Any]:
        """The decoded bodies present under these hashes (a backend may read them in bulk)."""
        return {h: self.codec.decode(b) for h, b in self._bodies(hashes).items()}

    @abc.abstractmethod
    def _present(self, hashes: Iterable[str]) -> set[str]:
        """Which of these body hashes are stored."""

    @abc.abstractmethod
    def _write(
        self,
        record: CheckpointRecord,
        manifest: bytes,
        bodies: Mapping[str, bytes],
        mentioned: set[str],
    ) -> None:
        """Store a record, its manifest and new bodies; the session references ``mentioned``."""

    @abc.abstractmethod
    def _rewrite_full(self, checkpoint_id: str, manifest: bytes, mentioned: set[str]) -> None:
        """Replace a delta record by a full manifest."""

    @abc.abstractmethod
    def _delete(self, session_id: str, checkpoint_ids: Sequence[str]) -> None:
        """Delete checkpoint records (and the session when none is left)."""

    @abc.abstractmethod
    def _collect(self, session_id: str, live: set[str]) -> None:
        """Drop the session's references outside ``live``; delete bodies nobody references."""

    # -- operations -----------------------------------------------------------

    def _prepare(
        self, draft: CheckpointDraft, expected_parent: str | None
    ) -> tuple[bytes, dict[str, bytes], set[str]]:
        """Check a draft and encode it: (manifest bytes, body bytes by hash, hashes named)."""
        if draft.parent_id != expected_parent:
            raise CheckpointError(
                f"a draft's parent must be the expected parent {expected_parent!r} "
                f"(got {draft.parent_id!r})",
                rule="parent_mismatch",
            )
        if not draft.full and draft.parent_id is None:
            raise CheckpointError(
                "a delta manifest needs a parent (got parent None)", rule="delta_without_parent"
            )
        manifest = self.codec.encode(dict(draft.manifest))
        bodies: dict[str, bytes] = {}
        for digest, body in draft.bodies.items():
            if body_hash(body) != digest:
                raise CheckpointError(
                    f"a body must be stored under its own hash (got {digest!r})",
                    rule="body_hash",
                )
            bodies[digest] = self.codec.encode(dict(body))
        return manifest, bodies, mentions(draft.manifest)

    def put(self, draft: CheckpointDraft, *, expected_parent: str | None) -> CheckpointRecord:
        """Write one checkpoint atomically; see :meth:`Store.put`."""
        manifest, bodies, mentioned = self._prepare(draft, expected_parent)
        with self._transaction(write=True):
            latest = self._latest(draft.session_id)
            latest_id = latest.id if latest else None
            if latest_id != expected_parent:
                raise StaleCheckpoint(
                    f"a checkpoint of session {draft.session_id!r} must be based on its latest "
                    f"checkpoint {latest_id!r} (got {expected_parent!r})",
                    rule="stale_parent",
                    session_id=draft.session_id,
                    latest=latest_id,
                    expected=expected_parent,
                )
            if self._exists(draft.id):
                raise CheckpointError(
                    f"checkpoint id {draft.id!r} is already stored", rule="duplicate_id"
                )
            present = self._present(mentioned | bodies.keys())
            missing = mentioned - present - bodies.keys()
            if missing:
                raise CheckpointError(
                    f"every body a manifest names must be stored or given "
                    f"(missing {sorted(missing)[:3]})",
                    rule="missing_body",
                )
            new = {h: b for h, b in bodies.items() if h not in present}
            record = record_for(draft, latest, manifest, new)
            self._write(record, manifest, new, mentioned)
        return record

    def sessions(self) -> list[str]:
        """Every session id, oldest first."""
        with self._transaction(write=False):
            return self._session_ids()

    def checkpoints(self, session_id: str) -> list[CheckpointRecord]:
        """A session's checkpoints, oldest first."""
        with self._transaction(write=False):
            return self._known(session_id)

    def latest(self, session_id: str) -> CheckpointRecord:
        """The newest checkpoint of a session."""
        with self._transaction(write=False):
            record = self._latest(session_id)
        if record is None:
            raise _no_session(session_id)
        return record

    def load(self, session_id: str, checkpoint_id: str | None = None) -> Snapshot:
        """A checkpoint's full manifest and bodies (the latest when no id is given)."""
        with self._transaction(write=False):
            record, manifest, depth, bodies = self._snapshot_parts(session_id, checkpoint_id)
        missing = manifest.body_hashes() - bodies.keys()
        if missing:
            raise CorruptCheckpoint(
                f"checkpoint {record.id!r} must have all its bodies in the store "
                f"(missing {len(missing)}, e.g. {min(missing)!r})",
                rule="missing_body",
            )
        try:
            manifest.ids = [bodies[h]["id"] for h in manifest.hashes]
        except (KeyError, TypeError):
            raise CorruptCheckpoint(
                f"checkpoint {record.id!r}: every body must hold a message id",
                rule="body",
            ) from None
        return Snapshot(record=record, manifest=manifest, bodies=bodies, depth=depth)

    def fork(
        self, session_id: str, checkpoint_id: str, *, new_session_id: str | None = None
    ) -> CheckpointRecord:
        """Start a new session whose first checkpoint equals the given one."""
        snapshot = self.load(session_id, checkpoint_id)
        target = self._fork_target(new_session_id or _new_session_id())
        source = snapshot.record
        draft = CheckpointDraft(
            id=new_checkpoint_id(),
            session_id=target,
            parent_id=None,
            created_at=time.time(),
            manifest=snapshot.manifest.to_plain(),
            bodies=self._fork_bodies(snapshot),
            phase=source.phase,
            trigger="fork",
            tokens=source.tokens,
            message_count=source.message_count,
        )
        try:
            return self.put(draft, expected_parent=None)
        except StaleCheckpoint:
            raise CheckpointError(
                f"a fork needs a new session id ({target!r} already exists)",
                rule="session_exists",
                session_id=target,
            ) from None

    def _fork_target(self, session_id: str) -> str:
        """Check a new session id for a fork (backends with id rules override this)."""
        return session_id

    def _fork_bodies(self, snapshot: Snapshot) -> Mapping[str, Mapping[str, Any]]:
        """Bodies a fork must write: none here, where bodies are shared store-wide."""
        return {}

    def prune(
        self,
        session_id: str,
        *,
        keep_last: int | None = None,
        max_age: float | None = None,
        now: float | None = None,
    ) -> list[str]:
        """Delete old checkpoints of a session; see :meth:`Store.prune`."""
        check_retention(keep_last, max_age)
        moment = time.time() if now is None else now
        with self._transaction(write=True):
            records = self._known(session_id)
            doomed = pick_pruned(records, keep_last=keep_last, max_age=max_age, now=moment)
            if not doomed:
                return []
            kept = records[len(doomed) :]
            first = kept[0]
            if not first.full:
                start = _chain_start(records, len(doomed))
                chain = self._decoded_manifests([r.id for r in records[start : len(doomed) + 1]])
                full = replay(chain).to_plain()
                self._rewrite_full(first.id, self.codec.encode(full), mentions(full))
            self._delete(session_id, [r.id for r in doomed])
            live: set[str] = set()
            for plain in self._decoded_manifests([r.id for r in kept]):
                live |= mentions(plain)
            self._collect(session_id, live)
        return [r.id for r in doomed]

    def erase(self, session_id: str) -> None:
        """Delete a whole session and the bodies no other session references."""
        with self._transaction(write=True):
            records = self._known(session_id)
            self._delete(session_id, [r.id for r in records])
            self._collect(session_id, set())

    def _known(self, session_id: str) -> list[CheckpointRecord]:
        records = self._records(session_id)
        if not records:
            raise _no_session(session_id)
        return records


def _no_session(session_id: str) -> CheckpointNotFound:
    return CheckpointNotFound(
        f"session {session_id!r} must exist in the store (it has no checkpoints)",
        rule="unknown_session",
        session_id=session_id,
    )


def _index_of(
    records: Sequence[CheckpointRecord], session_id: str, checkpoint_id: str | None
) -> int:
    if checkpoint_id is None:
        return len(records) - 1
    for index, record in enumerate(records):
        if record.id == checkpoint_id:
            return index
    raise CheckpointNotFound(
        f"checkpoint {checkpoint_id!r} must exist in session {session_id!r} (not found)",
        rule="unknown_checkpoint",
        session_id=session_id,
        checkpoint_id=checkpoint_id,
    )


def _chain_start(records: Sequence[CheckpointRecord], index: int) -> int:
    start = index
    while start >= 0 and not records[start].full:
        start -= 1
    if start < 0:
        raise CorruptCheckpoint(
            f"checkpoint {records[index].id!r} must have a full manifest before it (none found)",
            rule="manifest_chain",
        )
    return start


def record_for(
    draft: CheckpointDraft,
    latest: CheckpointRecord | None,
    manifest: bytes,
    new_bodies: Mapping[str, bytes],
) -> CheckpointRecord:
    """The record a put writes: the draft's fields, the next seq, the bytes it adds."""
    return CheckpointRecord(
        id=draft.id,
        session_id=draft.session_id,
        parent_id=draft.parent_id,
        seq=latest.seq + 1 if latest else 1,
        created_at=draft.created_at,
        phase=draft.phase,
        trigger=draft.trigger,
        tokens=draft.tokens,
        message_count=draft.message_count,
        size=len(manifest) + sum(len(b) for b in new_bodies.values()),
        full=draft.full,
    )
