"""The in-memory store: dicts behind a lock, for tests and short-lived agents.

Values are kept encoded (the same codec bytes the SQLite store writes), so
sizes, corruption checks and a user's codec layers behave the same way here.
A failed operation leaves the dicts untouched: every change happens after
the checks, and a write is a handful of dict assignments under the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs

from ctxflow.persistence._base import BaseStore, Encoded
from ctxflow.persistence._codec import EnvelopeCodec, default_codec
from ctxflow.persistence._model import CheckpointRecord

__all__ = ["MemoryStore"]


class MemoryStore(BaseStore):
    """A :class:`~ctxflow.persistence.Store` in process memory (thread-safe, not persistent)."""

    in_process = True

    def __init__(self, *, codec: EnvelopeCodec | None = None) -> None:
        self.codec = codec or default_codec()
        self._lock = threading.RLock()
        self._sessions: dict[str, list[CheckpointRecord]] = {}
        self._manifest: dict[str, bytes] = {}
        self._blobs: dict[str, bytes] = {}
        self._refs: dict[str, set[str]] = {}  # body hash -> sessions referencing it
        self._session_refs: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"<MemoryStore sessions={len(self._sessions)} bodies={len(self._blobs)}>"

    def close(self) -> None:
        """Nothing to release."""

    @property
    def size(self) -> int:
        """Bytes held: every manifest record and body."""
        return sum(map(len, self._manifest.values())) + sum(map(len, self._blobs.values()))

    def corrupt(self, checkpoint_id: str, data: bytes) -> None:
        """Replace a checkpoint's stored manifest bytes (for tests of damaged data)."""
        with self._lock:
            self._manifest[checkpoint_id] = data

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[None]:
        with self._lock:
            yield

    def _session_ids(self) -> list[str]:
        return list(self._sessions)

    def _records(self, session_id: str) -> list[CheckpointRecord]:
        return list(self._sessions.get(session_id, ()))

    def _latest(self, session_id: str) -> CheckpointRecord | None:
        records = self._sessions.get(session_id)
        return records[-1] if records else None

    def _exists(self, checkpoint_id: str) -> bool:
        return checkpoint_id in self._manifest

    def _manifests(self, checkpoint_ids: Sequence[str]) -> list[Any]:
        return [self.codec.decode(self._manifest[i]) for i in checkpoint_ids]

    def _bodies(self, hashes: Iterable[str]) -> dict[str, Any]:
        blobs = self._blobs
        return {h: self.codec.decode(blobs[h]) for h in hashes if h in blobs}

    def _present(self, hashes: Iterable[str]) -> set[str]:
        return {h for h in hashes if h in self._blobs}

    def _write(self, record: CheckpointRecord, encoded: Encoded) -> None:
        self._blobs.update(encoded.bodies)
        self._manifest[record.id] = encoded.manifest
        self._sessions.setdefault(record.session_id, []).append(record)
        self._reference(record.session_id, encoded.mentioned)

    def _reference(self, session_id: str, hashes: Collection[str]) -> None:
        self._session_refs.setdefault(session_id, set()).update(hashes)
        for digest in hashes:
            self._refs.setdefault(digest, set()).add(session_id)

    def _rewrite_full(self, checkpoint_id: str, manifest: bytes, mentioned: set[str]) -> None:
        self._manifest[checkpoint_id] = manifest
        for session_id, records in self._sessions.items():
            for index, record in enumerate(records):
                if record.id == checkpoint_id:
                    records[index] = attrs.evolve(record, full=True, size=len(manifest))
                    self._reference(session_id, mentioned)
                    return

    def _delete(self, session_id: str, checkpoint_ids: Sequence[str]) -> None:
        doomed = set(checkpoint_ids)
        for checkpoint_id in doomed:
            self._manifest.pop(checkpoint_id, None)
        left = [r for r in self._sessions.get(session_id, ()) if r.id not in doomed]
        if left:
            self._sessions[session_id] = left
        else:
            self._sessions.pop(session_id, None)

    def _collect(self, session_id: str, live: set[str]) -> None:
        held = self._session_refs.get(session_id, set())
        for digest in held - live:
            owners = self._refs.get(digest, set())
            owners.discard(session_id)
            if not owners:
                self._refs.pop(digest, None)
                self._blobs.pop(digest, None)
        if live:
            self._session_refs[session_id] = held & live
        else:
            self._session_refs.pop(session_id, None)
