"""The values that pass between a checkpointer and a store."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import attrs

from ctxflow.persistence._manifest import Manifest

__all__ = ["CheckpointDraft", "CheckpointRecord", "Snapshot", "new_checkpoint_id", "new_session_id"]


def new_session_id() -> str:
    """A fresh, unguessable session id (128 random bits)."""
    return f"ses_{secrets.token_urlsafe(16)}"


def new_checkpoint_id() -> str:
    """A fresh, unguessable checkpoint id (96 random bits)."""
    return f"ckp_{secrets.token_urlsafe(12)}"


@attrs.frozen(kw_only=True)
class CheckpointRecord:
    """What a store knows about one stored checkpoint (listing data, no content).

    ``seq`` counts from 1 within the session; ``size`` is the bytes this
    checkpoint added to the store (its manifest record plus new bodies);
    ``full`` tells whether its manifest is stored in full or as a delta.
    """

    id: str
    session_id: str
    parent_id: str | None
    seq: int
    created_at: float
    phase: str | None = None
    trigger: str | None = None
    tokens: int = 0
    message_count: int = 0
    size: int = 0
    full: bool = True


@attrs.frozen(kw_only=True)
class CheckpointDraft:
    """A checkpoint ready to be written: its record fields, manifest record and new bodies.

    ``manifest`` is the plain full manifest or a plain delta against
    ``parent_id``; ``bodies`` maps body hash to plain body for every body the
    store may not hold yet (a store ignores those it already has).
    """

    id: str
    session_id: str
    parent_id: str | None
    created_at: float
    manifest: Mapping[str, Any]
    bodies: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, repr=False)
    phase: str | None = None
    trigger: str | None = None
    tokens: int = 0
    message_count: int = 0

    @property
    def full(self) -> bool:
        """True when the manifest is stored in full."""
        return self.manifest.get("kind") == "full"


@attrs.frozen(kw_only=True)
class Snapshot:
    """A loaded checkpoint: its record, its full manifest and every body it references."""

    record: CheckpointRecord
    manifest: Manifest
    bodies: Mapping[str, Mapping[str, Any]] = attrs.field(repr=False)
    depth: int = 0
    """How many deltas were applied after the last full manifest."""
