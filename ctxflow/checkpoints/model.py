"""Compatibility re-exports; import from ctxflow.persistence (or ctxflow.stores)."""

from ctxflow.persistence import (
    CheckpointDraft,
    CheckpointRecord,
    Snapshot,
    new_checkpoint_id,
    new_session_id,
)

__all__ = ["CheckpointDraft", "CheckpointRecord", "Snapshot", "new_checkpoint_id", "new_session_id"]
