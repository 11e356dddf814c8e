"""The store operations written once, over a few primitives each backend implements.

:class:`BaseStore` turns a handful of ``_``-prefixed primitives (read a
session's records, read manifests and bodies, write a checkpoint, delete,
collect unreferenced bodies) into the whole :class:`~ctxflow.persistence.Store`
protocol: the stale-parent check, fork, retention and erasure live here, once.

Every operation runs its reads and writes inside one ``_transaction``, so a
failure leaves the store as it was, and everything is encoded before that
transaction starts, so a value that cannot be encoded changes nothing. A
backend that must run an operation again (Redis, after another client changed
a watched session) overrides :meth:`BaseStore._run`.

Retention keeps every remaining checkpoint loadable: when the oldest kept
checkpoint is a delta, it is rewritten as a full manifest before its
ancestors go.

Damage: a load that meets damaged data raises
:class:`~ctxflow.errors.CorruptCheckpoint` naming the checkpoint it was
loading, and checks that the records it replays form one chain of the session
asked for (each the parent of the next). A put that carries a body the store
holds but cannot read writes it again instead of reusing it (only the bodies
the draft carries are checked, so the usual put reads nothing more). Erasure
never needs to read what it deletes (:meth:`BaseStore._erase`).
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Self, TypeVar, Unpack

import attrs

from ctxflow.errors import CheckpointError, CheckpointNotFound, CorruptCheckpoint, StaleCheckpoint
from ctxflow.model import IndexFacts
from ctxflow.persistence._bodies import body_hash
from ctxflow.persistence._codec import EnvelopeCodec, encode_readable
from ctxflow.persistence._manifest import (
    Manifest,
    facts_of_body,
    mentions,
    new_mentions,
    replay,
)
from ctxflow.persistence._model import (
    CheckpointDraft,
    CheckpointRecord,
    Snapshot,
    check_store_id,
    new_checkpoint_id,
)
from ctxflow.persistence._model import new_session_id as _new_session_id
from ctxflow.persistence._protocol import Retention

__all__ = [
    "BaseStore",
    "Encoded",
    "chain_start",
    "check_chain",
    "check_retention",
    "duplicate_id",
    "missing_bodies",
    "no_session",
    "pick_pruned",
    "record_for",
    "stale_parent",
    "view_hashes",
]

T = TypeVar("T")

#: A message's id from its index facts (a Facts or a placeholder holding them).
_ID: Callable[[Any], str] = operator.attrgetter("id")

#: Picks the bodies a load reads from a checkpoint's manifest (None: every one).
Wanted = Callable[[Manifest], set[str]] | None


def view_hashes(manifest: Manifest, measure: str | None) -> set[str]:
    """The bodies a view load reads: all but those of hidden, indexed messages and their
    overlays; every one when the manifest's counts were not taken with ``measure``."""
    if (
        measure is None
        or manifest.measure != measure
        or len(manifest.counts) != len(manifest.hashes)
    ):
        return manifest.body_hashes()
    tags, index, hashes = manifest.tags, manifest.index, manifest.hashes
    wanted: set[str] = set()
    left: set[str] = set()  # ids of the hidden messages whose bodies stay in the store
    if len(index) == len(hashes) and all(index):  # every message indexed: by columns
        ids = list(map(_ID, index))
        hidden = list(map(tags.__contains__, ids))
        wanted.update(itertools.compress(hashes, map(operator.not_, hidden)))
        if manifest.overlays:
            left.update(itertools.compress(ids, hidden))
    else:
        for digest, facts in zip(hashes, index, strict=True):
            if facts is None or facts.id not in tags:
                wanted.add(digest)
            else:
                left.add(facts.id)
    wanted.update(h for i, h in manifest.overlays.items() if i not in left)
    wanted.update(manifest.part_hashes())
    return wanted


def _once(wanted: Callable[[Manifest], set[str]]) -> Callable[[Manifest], set[str]]:
    """``wanted`` picking once per manifest: a load asks to read the bodies, then to check
    them, with the same manifest."""
    last: list[tuple[Manifest, set[str]]] = []

    def pick(manifest: Manifest) -> set[str]:
        if not last or last[0][0] is not manifest:
            last[:] = [(manifest, wanted(manifest))]
        return last[0][1]

    return pick


@attrs.frozen(kw_only=True)
class Encoded:
    """A checked draft in codec bytes: what a backend writes for one checkpoint.

    ``bodies`` maps body hash to body bytes; ``mentioned`` is every body hash
    the manifest record names itself (the bodies the session references).
    """

    manifest: bytes
    bodies: Mapping[str, bytes] = attrs.field(repr=False)
    mentioned: frozenset[str] = attrs.field(repr=False)

    def without(self, present: Iterable[str]) -> Encoded:
        """The same checkpoint without the bodies the store already holds."""
        held = {h for h in present if h in self.bodies}
        if not held:
            return self
        bodies = {h: b for h, b in self.bodies.items() if h not in held}
        return Encoded(manifest=self.manifest, bodies=bodies, mentioned=self.mentioned)


class BaseStore(abc.ABC):
    """The store operations written once over a few backend primitives (module docstring)."""

    codec: EnvelopeCodec
    #: True when the stored bodies live in this process's memory: paging hidden
    #: messages out to such a store saves nothing, so the engine does not.
    in_process: bool = False

    @abc.abstractmethod
    def close(self) -> None:
        """Release the backend's resources."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
    def _manifests(self, checkpoint_ids: Sequence[str]) -> list[Any]:
        """The decoded manifest records of checkpoints, in the order given."""

    @abc.abstractmethod
    def _bodies(self, hashes: Iterable[str]) -> dict[str, Any]:
        """The decoded bodies present under these hashes."""

    @abc.abstractmethod
    def _present(self, hashes: Iterable[str]) -> set[str]:
        """Which of these body hashes are stored."""

    @abc.abstractmethod
    def _write(self, record: CheckpointRecord, encoded: Encoded) -> None:
        """Store a record, its manifest and the given bodies (replacing a stored copy: one
        given that the store holds is one it could not read); the session references what
        it names."""

    @abc.abstractmethod
    def _rewrite_full(self, checkpoint_id: str, manifest: bytes, mentioned: set[str]) -> None:
        """Replace a delta record by a full manifest."""

    @abc.abstractmethod
    def _delete(self, session_id: str, checkpoint_ids: Sequence[str]) -> None:
        """Delete checkpoint records (and the session when none is left)."""

    @abc.abstractmethod
    def _collect(self, session_id: str, live: set[str]) -> None:
        """Drop the session's references outside ``live``; delete bodies nobody references."""

    # -- hooks a backend may override ---------------------------------------------

    def _run(self, doing: str, fn: Callable[[], T], *, read: bool) -> T:
        """Run one operation (``doing`` names it); a backend may run it again on conflicts."""
        return fn()

    def _chain_records(self, session_id: str, checkpoint_id: str | None) -> list[CheckpointRecord]:
        """Consecutive records of a session, oldest first, that hold the checkpoint (the
        latest when None) and the full manifest its chain starts from: all by default."""
        return self._known(session_id)

    def _snapshot(
        self, session_id: str, checkpoint_id: str | None, wanted: Wanted = None
    ) -> Snapshot:
        """A checkpoint's record, full manifest (ids not filled in), delta depth and the
        bodies it names, or those ``wanted`` picks (the latest when None; a backend may
        find them its own way)."""
        records = self._chain_records(session_id, checkpoint_id)
        index = _index_of(records, session_id, checkpoint_id)
        start = chain_start(records, index)
        check_chain(records[max(start, 1) - 1 : index + 1], session_id)
        manifest = replay(self._manifests([r.id for r in records[start : index + 1]]))
        bodies = self._bodies(manifest.body_hashes() if wanted is None else wanted(manifest))
        return Snapshot(
            record=records[index], manifest=manifest, bodies=bodies, depth=index - start
        )

    def _unreadable(self, hashes: Iterable[str]) -> set[str]:
        """Which of these stored bodies cannot be read back as the body of their hash.

        One read per body by default; a backend that stores bodies together
        overrides it to read each group once.
        """
        bad: set[str] = set()
        for digest in hashes:
            try:
                body = self._bodies([digest]).get(digest)
            except CorruptCheckpoint:
                bad.add(digest)
                continue
            if body is None or body_hash(body) != digest:
                bad.add(digest)
        return bad

    def _erase(self, session_id: str) -> None:
        """Delete a whole session (``CheckpointNotFound`` for an unknown one) and the bodies
        nobody else references; a backend that can delete without reading its records
        overrides this, so damaged records never block erasure."""
        records = self._known(session_id)
        self._delete(session_id, [r.id for r in records])
        self._collect(session_id, set())

    def _fork_target(self, session_id: str) -> str:
        """Check a new session id for a fork (backends with id rules override this)."""
        return session_id

    def _fork_bodies(self, snapshot: Snapshot) -> Mapping[str, Mapping[str, Any]]:
        """Bodies a fork must write: none here, where bodies are shared store-wide."""
        return {}

    # -- operations -----------------------------------------------------------

    def _atomic(self, doing: str, fn: Callable[[], T], *, write: bool) -> T:
        """``fn`` inside one transaction, run through :meth:`_run`."""

        def once() -> T:
            with self._transaction(write=write):
                return fn()

        return self._run(doing, once, read=not write)

    def _prepare(self, draft: CheckpointDraft, expected_parent: str | None) -> Encoded:
        """Check a draft and encode its manifest record and bodies."""
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
        manifest = encode_readable(self.codec, dict(draft.manifest))
        bodies: dict[str, bytes] = {}
        for digest, body in draft.bodies.items():
            if body_hash(body) != digest:
                raise CheckpointError(
                    f"a body must be stored under its own hash (got {digest!r})",
                    rule="body_hash",
                )
            bodies[digest] = self.codec.encode(dict(body))
        return Encoded(
            manifest=manifest,
            bodies=bodies,
            mentioned=frozenset(new_mentions(draft.manifest, parent=draft.parent_id)),
        )

    def put(self, draft: CheckpointDraft, *, expected_parent: str | None) -> CheckpointRecord:
        """Write one checkpoint atomically; see :meth:`Store.put`."""
        encoded = self._prepare(draft, expected_parent)

        def write() -> CheckpointRecord:
            latest = self._latest(draft.session_id)
            latest_id = latest.id if latest else None
            if latest_id != expected_parent:
                raise stale_parent(draft.session_id, latest_id, expected_parent)
            if self._exists(draft.id):
                raise duplicate_id(draft.id)
            present = self._present(encoded.mentioned | encoded.bodies.keys())
            missing = encoded.mentioned - present - encoded.bodies.keys()
            if missing:
                raise missing_bodies(missing)
            reused = present & encoded.bodies.keys()
            new = encoded.without(present - self._unreadable(reused) if reused else present)
            record = record_for(draft, latest, new)
            self._write(record, new)
            return record

        return self._atomic("put", write, write=True)

    def sessions(self) -> list[str]:
        """Every session id, oldest first."""
        return self._atomic("sessions", self._session_ids, write=False)

    def checkpoints(self, session_id: str) -> list[CheckpointRecord]:
        """A session's checkpoints, oldest first."""
        check_store_id(session_id)
        return self._atomic("checkpoints", lambda: self._known(session_id), write=False)

    def latest(self, session_id: str) -> CheckpointRecord:
        """The newest checkpoint of a session."""
        check_store_id(session_id)
        record = self._atomic("latest", lambda: self._latest(session_id), write=False)
        if record is None:
            raise no_session(session_id)
        return record

    def load(self, session_id: str, checkpoint_id: str | None = None) -> Snapshot:
        """A checkpoint's full manifest and bodies (the latest when no id is given)."""
        return self._load(session_id, checkpoint_id, None)

    def load_view(
        self, session_id: str, checkpoint_id: str | None = None, *, measure: str | None
    ) -> Snapshot:
        """A checkpoint as :meth:`load` gives it, but without the bodies of hidden messages.

        A hidden (tagged) message whose index entry the manifest holds keeps its
        body in the store (read it with :meth:`read_bodies`); every other body is
        read. Counts are needed to rebuild a conversation without its hidden
        bodies: when the checkpoint's counts were not taken with ``measure`` (a
        measure's key), every body is read as :meth:`load` does.
        """
        return self._load(session_id, checkpoint_id, _once(lambda m: view_hashes(m, measure)))

    def read_bodies(self, hashes: Iterable[str]) -> dict[str, Any]:
        """The decoded bodies stored under ``hashes`` (absent ones left out), in one read."""
        wanted = set(hashes)
        return self._atomic("read bodies", lambda: self._bodies(wanted), write=False)

    def _load(self, session_id: str, checkpoint_id: str | None, wanted: Wanted) -> Snapshot:
        check_store_id(session_id)
        if checkpoint_id is not None:
            check_store_id(checkpoint_id, what="checkpoint id")

        def run() -> Snapshot:
            try:
                return self._snapshot(session_id, checkpoint_id, wanted)
            except CorruptCheckpoint as exc:
                raise self._naming(exc, session_id, checkpoint_id) from None

        snapshot = self._atomic("load", run, write=False)
        record, manifest, bodies = snapshot.record, snapshot.manifest, snapshot.bodies
        needed = manifest.body_hashes() if wanted is None else wanted(manifest)
        missing = needed - bodies.keys()
        if missing:
            raise CorruptCheckpoint(
                f"checkpoint {record.id!r} must have all its bodies in the store "
                f"(missing {len(missing)}, e.g. {min(missing)!r})",
                rule="missing_body",
            )
        index = manifest.index
        index += [None] * (len(manifest.hashes) - len(index))
        if all(index):  # every message indexed: its facts name it
            manifest.ids = list(map(_ID, index))
        else:
            manifest.ids = _ids_filling(index, manifest.hashes, bodies, record.id)
        try:
            manifest.assemble(bodies)
        except CorruptCheckpoint as exc:
            raise self._naming(exc, session_id, record.id) from None
        return snapshot

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

    def prune(self, session_id: str, **retention: Unpack[Retention]) -> list[str]:
        """Delete old checkpoints of a session; see :meth:`Store.prune`."""
        check_store_id(session_id)
        keep_last, max_age = retention.get("keep_last"), retention.get("max_age")
        check_retention(keep_last, max_age)
        now = retention.get("now")
        moment = time.time() if now is None else now

        def run() -> list[str]:
            records = self._known(session_id)
            doomed = pick_pruned(records, keep_last=keep_last, max_age=max_age, now=moment)
            if not doomed:
                return []
            kept = records[len(doomed) :]
            first = kept[0]
            if not first.full:
                start = chain_start(records, len(doomed))
                chain = self._manifests([r.id for r in records[start : len(doomed) + 1]])
                full = replay(chain).to_plain()
                self._rewrite_full(first.id, encode_readable(self.codec, full), mentions(full))
            self._delete(session_id, [r.id for r in doomed])
            live: set[str] = set()
            for plain in self._manifests([r.id for r in kept]):
                live |= mentions(plain)
            self._collect(session_id, live)
            return [r.id for r in doomed]

        return self._atomic("prune", run, write=True)

    def erase(self, session_id: str) -> None:
        """Delete a whole session and the bodies no other session references."""
        check_store_id(session_id)
        self._atomic("erase", lambda: self._erase(session_id), write=True)

    def _naming(
        self, exc: CorruptCheckpoint, session_id: str, checkpoint_id: str | None
    ) -> CorruptCheckpoint:
        """``exc`` naming the checkpoint being loaded (the latest when no id is given)."""
        target = checkpoint_id
        if target is None:
            try:
                latest = self._latest(session_id)
            except CorruptCheckpoint:
                latest = None
            target = latest.id if latest else None
        if target is not None and target in exc.message:
            return exc
        what = f"checkpoint {target!r}" if target else "the latest checkpoint"
        details = {**exc.details, "session_id": session_id, "checkpoint_id": target}
        return CorruptCheckpoint(
            f"{what} of session {session_id!r} must be readable ({exc.message})",
            rule=exc.rule,
            **details,
        )

    def _known(self, session_id: str) -> list[CheckpointRecord]:
        records = self._records(session_id)
        if not records:
            raise no_session(session_id)
        return records


def _ids_filling(
    index: list[IndexFacts | None],
    hashes: Sequence[str],
    bodies: Mapping[str, Any],
    checkpoint: str,
) -> list[str]:
    """The message ids of a manifest's ``hashes``, from its ``index`` or else their bodies
    (whose facts then fill the index where the body has the shape of a message)."""
    ids: list[str] = []
    try:
        for at, digest in enumerate(hashes):
            facts = index[at]
            if facts is None:
                body = bodies[digest]
                ident = body["id"]
                with contextlib.suppress(ValueError):  # a body of another shape: its id
                    index[at] = facts_of_body(body)
                ids.append(ident)
            else:
                ids.append(facts.id)
    except (KeyError, TypeError):
        raise CorruptCheckpoint(
            f"checkpoint {checkpoint!r}: every body must hold a message id",
            rule="body",
        ) from None
    return ids


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


def record_for(
    draft: CheckpointDraft, latest: CheckpointRecord | None, new: Encoded
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
        size=len(new.manifest) + sum(len(b) for b in new.bodies.values()),
        full=draft.full,
    )


def chain_start(records: Sequence[CheckpointRecord], index: int) -> int:
    """The index of the full manifest the chain of ``records[index]`` starts from."""
    start = index
    while start >= 0 and not records[start].full:
        start -= 1
    if start < 0:
        raise CorruptCheckpoint(
            f"checkpoint {records[index].id!r} must have a full manifest before it (none found)",
            rule="manifest_chain",
        )
    return start


def check_chain(records: Sequence[CheckpointRecord], session_id: str) -> None:
    """Refuse records that are not one chain of ``session_id`` (each the next one's parent,
    seqs consecutive): a damaged row must not pass for another session's checkpoint."""
    previous: CheckpointRecord | None = None
    for record in records:
        follows = previous is None or (
            record.parent_id == previous.id and record.seq == previous.seq + 1
        )
        if record.session_id != session_id or not follows:
            after = f", after {previous.id!r} seq {previous.seq}" if previous else ""
            raise CorruptCheckpoint(
                f"checkpoint {record.id!r} must continue its chain in session {session_id!r} "
                f"(got parent {record.parent_id!r} seq {record.seq} in session "
                f"{record.session_id!r}{after})",
                rule="chain",
                session_id=session_id,
                checkpoint_id=record.id,
            )
        previous = record


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


def no_session(session_id: str) -> CheckpointNotFound:
    """The error for a session the store holds no checkpoint of."""
    return CheckpointNotFound(
        f"session {session_id!r} must exist in the store (it has no checkpoints)",
        rule="unknown_session",
        session_id=session_id,
    )


def stale_parent(session_id: str, latest: str | None, expected: str | None) -> StaleCheckpoint:
    """The error for a write based on a checkpoint that is no longer the session's latest."""
    return StaleCheckpoint(
        f"a checkpoint of session {session_id!r} must be based on its latest "
        f"checkpoint {latest!r} (got {expected!r})",
        rule="stale_parent",
        session_id=session_id,
        latest=latest,
        expected=expected,
    )


def duplicate_id(checkpoint_id: str) -> CheckpointError:
    """The error for a checkpoint id the store already holds."""
    return CheckpointError(
        f"checkpoint id {checkpoint_id!r} is already stored", rule="duplicate_id"
    )


def missing_bodies(hashes: Iterable[str]) -> CheckpointError:
    """The error for a manifest naming bodies neither stored nor given."""
    return CheckpointError(
        f"every body a manifest names must be stored or given (missing {sorted(hashes)[:3]})",
        rule="missing_body",
    )
