"""Checkpoint records as stored in a session's ``rec`` hash: one msgpack array each."""

from __future__ import annotations

import msgpack

from ctxflow.errors import CorruptCheckpoint
from ctxflow.persistence._model import CheckpointRecord

__all__ = ["decode_record", "encode_record"]


def encode_record(record: CheckpointRecord) -> bytes:
    """A record as the msgpack array the store keeps."""
    out: bytes = msgpack.packb(
        [
            record.id,
            record.session_id,
            record.parent_id,
            record.seq,
            record.created_at,
            record.phase,
            record.trigger,
            record.tokens,
            record.message_count,
            record.size,
            record.full,
        ]
    )
    return out


def decode_record(session_id: str, data: bytes | None) -> CheckpointRecord:
    """A stored record back; ``CorruptCheckpoint`` naming the session for anything else."""
    try:
        fields = msgpack.unpackb(data or b"", raw=False)
        (id_, sid, parent, seq, created, phase, trigger, tokens, count, size, full) = fields
        return CheckpointRecord(
            id=id_,
            session_id=sid,
            parent_id=parent,
            seq=int(seq),
            created_at=float(created),
            phase=phase,
            trigger=trigger,
            tokens=int(tokens),
            message_count=int(count),
            size=int(size),
            full=bool(full),
        )
    except (ValueError, TypeError, msgpack.UnpackException):
        raise CorruptCheckpoint(
            f"session {session_id!r}: a stored checkpoint record must be a msgpack record "
            f"(got {(data or b'')[:16]!r})",
            rule="record",
            session_id=session_id,
        ) from None
