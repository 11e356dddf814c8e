"""Persistence: the codec, the checkpoint model, the checkpointer and the store core.

The engine (or any agent loop) uses three names from here:

- :class:`Checkpointer` — ``Checkpointer(store, session_id).capture(conversation,
  state=..., chart=..., phase=..., trigger=...)`` writes one checkpoint;
- :func:`restore` / :meth:`Checkpointer.restore` — give back an equal
  Conversation, the plain state and the chart mapping (with the token counts
  stored by a ``Checkpointer(..., measure=...)`` when restored with a measure of
  the same :func:`measure_key`);
- :class:`CheckpointPolicy` — ``policy.should_checkpoint(phase=..., message_count=...,
  tokens=..., last=mark)`` says which trigger fires, if any.

Imports inside the package point one way: the checkpoint model (manifest,
bodies, records) and the :class:`Store` protocol at the bottom, then the codec,
the checkpointer, the shared store logic (:class:`BaseStore`), and the backends
on top. Only the in-memory backend is imported here; the SQLite and Redis
stores live in :mod:`ctxflow.stores`, so importing this package never imports
``sqlite3`` or ``redis``.

Only plain data crosses the codec (dicts with string keys, lists, str, bytes,
int, float, bool, None): no pickle and no msgpack extension type, so decoding
hostile bytes can at worst raise :class:`~ctxflow.errors.CorruptCheckpoint`.
"""

from ctxflow.persistence._base import BaseStore, Encoded
from ctxflow.persistence._bodies import body_hash, message_from_plain, message_to_plain
from ctxflow.persistence._checkpointer import (
    Checkpointer,
    Restored,
    check_full_rule,
    conversation_from_snapshot,
    measure_key,
    restore,
)
from ctxflow.persistence._codec import (
    DEFAULT_MAX_SIZE,
    FORMAT_VERSION,
    MAGIC,
    ByteLayer,
    Envelope,
    EnvelopeCodec,
    Lz4Layer,
    Migration,
    default_codec,
    encode_readable,
    read_envelope,
)
from ctxflow.persistence._manifest import Manifest, mentions
from ctxflow.persistence._memory import MemoryStore
from ctxflow.persistence._model import (
    CheckpointDraft,
    CheckpointRecord,
    Snapshot,
    new_checkpoint_id,
    new_session_id,
)
from ctxflow.persistence._policy import TRIGGERS, CheckpointMark, CheckpointPolicy
from ctxflow.persistence._protocol import AsyncStore, Retention, Store
from ctxflow.persistence._threaded import ThreadedAsyncStore

__all__ = [
    "DEFAULT_MAX_SIZE",
    "FORMAT_VERSION",
    "MAGIC",
    "TRIGGERS",
    "AsyncStore",
    "BaseStore",
    "ByteLayer",
    "CheckpointDraft",
    "CheckpointMark",
    "CheckpointPolicy",
    "CheckpointRecord",
    "Checkpointer",
    "Encoded",
    "Envelope",
    "EnvelopeCodec",
    "Lz4Layer",
    "Manifest",
    "MemoryStore",
    "Migration",
    "Restored",
    "Retention",
    "Snapshot",
    "Store",
    "ThreadedAsyncStore",
    "body_hash",
    "check_full_rule",
    "conversation_from_snapshot",
    "default_codec",
    "encode_readable",
    "measure_key",
    "mentions",
    "message_from_plain",
    "message_to_plain",
    "new_checkpoint_id",
    "new_session_id",
    "read_envelope",
    "restore",
]
