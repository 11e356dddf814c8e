"""A session's bookkeeping beside its context: lock, user data, version, audit log, retirement.

Every engine is a session: threads using it are serialized by its lock (a
critical section, so a signal handler never cuts into a change), every
change moves its version and is logged in its audit log until the next
checkpoint, and an engine its manager unloaded is *retired* and refuses
changes. The engine's core builds on this.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from ctxflow import errors
from ctxflow._critical import CriticalLock
from ctxflow.context import SessionInfo, check_plain
from ctxflow.engine._audit import AuditEvent, AuditLog

__all__ = ["SessionBase"]


class SessionBase:
    """Lock, data, version, audit log and retirement of one session."""

    session_id: str

    def __init__(self, data: Mapping[str, object] | None, clock: Callable[[], float]) -> None:
        #: Serializes threads using this engine; every change takes it.
        self.lock = CriticalLock()
        #: The changes since the last checkpoint, for replay over it.
        self.audit = AuditLog()
        self.clock = clock
        self._data: dict[str, object] = dict(data or {})
        check_plain(self._data, "data")
        self._version = 0
        self._saved_version = -1
        self._retired: str | None = None

    @property
    def phase(self) -> str:
        """The current phase (the active atomic state)."""
        raise NotImplementedError  # pragma: no cover - the engine's core defines it

    @property
    def data(self) -> Mapping[str, object]:
        """The session's user data (plain data, stored in checkpoints; read-only view)."""
        return MappingProxyType(self._data)

    @property
    def version(self) -> int:
        """Moves on every change to the session (optimistic updates compare it)."""
        return self._version

    @property
    def session(self) -> SessionInfo:
        """The session's bookkeeping: user data, version, audit position."""
        return SessionInfo(data=self._data, version=self._version, audit_seq=self.audit.seq)

    @property
    def dirty(self) -> bool:
        """True when the session changed since its last checkpoint."""
        return self._version != self._saved_version

    @property
    def retired(self) -> bool:
        """True once the engine's manager unloaded it: it refuses every change."""
        return self._retired is not None

    def retire(self, reason: str) -> None:
        """Refuse every later change with :class:`~ctxflow.errors.SessionEvicted`.

        A manager retires the engines it unloads, so no change goes to a copy
        that is no longer the session's live one.
        """
        with self.lock:
            self._retired = reason

    def set_data(self, key: str, value: object, *, actor: str | None = None) -> None:
        """Set one user-data entry (plain data: it is stored in checkpoints)."""
        if not isinstance(key, str):
            raise errors.PolicyError(
                f"a data key must be a string (got {type(key).__name__})", rule="engine_data"
            )
        check_plain(value, f"data[{key!r}]")
        with self.lock:
            self._check_live()
            self._data[key] = value
            self._record("data", actor, key=key, value=value)

    def _check_live(self) -> None:
        if self._retired is not None:
            raise errors.SessionEvicted(
                f"session {self.session_id!r} {self._retired}; this engine refuses changes "
                "(get the live one from its manager again)",
                rule="engine_retired",
                session_id=self.session_id,
            )

    def _record(
        self,
        kind: str,
        actor: str | None = None,
        *,
        phase: str | None = None,
        payload: Mapping[str, object] | None = None,
        **fields: object,
    ) -> AuditEvent:
        """Count one change and log it, in the phase it happened in (default: the current)."""
        self._version += 1
        event = self.audit.append(
            at=self.clock(),
            actor=actor,
            phase=self.phase if phase is None else phase,
            kind=kind,
            **{**(payload or {}), **fields},
        )
        self._changed()
        return event

    def _changed(self) -> None:
        """After every recorded change (the engine pushes shared memory here)."""

    def _saved(self, version: int, seq: int) -> None:
        self._saved_version = version
        self.audit.trim(seq)

    def _become(self, session: SessionInfo) -> None:
        """Take a checkpoint's data and version as the session's own (not dirty)."""
        self._data = dict(session.data)
        self._version = self._saved_version = session.version
        self.audit = AuditLog(session.audit_seq)
