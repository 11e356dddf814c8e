"""Checkpoints: content-addressed snapshots of a conversation, its state and its chart.

The engine (or any agent loop) uses three names from here:

- :class:`Checkpointer` — ``Checkpointer(store, session_id).capture(conversation,
  state=..., chart=..., phase=..., trigger=...)`` writes one checkpoint;
- :func:`restore` / :meth:`Checkpointer.restore` — give back an equal
  Conversation, the plain state and the chart mapping (with the token counts
  stored by a ``Checkpointer(..., measure=...)`` when restored with a measure of
  the same :func:`measure_key`);
- :class:`CheckpointPolicy` — ``policy.should_checkpoint(phase=..., message_count=...,
  tokens=..., last=mark)`` says which trigger fires, if any.
"""

from ctxflow.checkpoints.bodies import body_hash, message_from_plain, message_to_plain
from ctxflow.checkpoints.capture import (
    Checkpointer,
    Restored,
    conversation_from_snapshot,
    measure_key,
    restore,
)
from ctxflow.checkpoints.manifest import Manifest, mentions
from ctxflow.checkpoints.model import (
    CheckpointDraft,
    CheckpointRecord,
    Snapshot,
    new_checkpoint_id,
    new_session_id,
)
from ctxflow.checkpoints.policy import TRIGGERS, CheckpointMark, CheckpointPolicy

__all__ = [
    "TRIGGERS",
    "CheckpointDraft",
    "CheckpointMark",
    "CheckpointPolicy",
    "CheckpointRecord",
    "Checkpointer",
    "Manifest",
    "Restored",
    "Snapshot",
    "body_hash",
    "conversation_from_snapshot",
    "measure_key",
    "mentions",
    "message_from_plain",
    "message_to_plain",
    "new_checkpoint_id",
    "new_session_id",
    "restore",
]
