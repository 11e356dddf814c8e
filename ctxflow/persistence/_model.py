"""The values that pass between a checkpointer and a store.

Session and checkpoint ids become keys in every backend (SQLite text, Redis
key names), which encode them as UTF-8: a draft refuses an id that is empty,
not a string, or holds a lone surrogate, with a :class:`CheckpointError`,
before any store sees it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import attrs

from ctxflow.errors import CheckpointError
from ctxflow.persistence._manifest import Manifest

__all__ = [
    "CheckpointDraft",
    "CheckpointRecord",
    "Snapshot",
    "check_store_id",
    "new_checkpoint_id",
    "new_session_id",
]


def new_session_id() -> str:
    """A fresh, unguessable session id (128 random bits)."""
    return f"ses_{secrets.token_urlsafe(16)}"


def new_checkpoint_id() -> str:
    """A fresh, unguessable checkpoint id (96 random bits)."""
    return f"ckp_{secrets.token_urlsafe(12)}"


def check_store_id(value: object, *, what: str = "session id") -> str:
    """``value`` if it is a non-empty string a store can encode; ``CheckpointError`` if not.

    ``what`` names the id ("session id", "checkpoint id"); the error's rule is
    ``what`` with ``_`` for spaces (``session_id``, as the Redis store's own check).
    """
    if isinstance(value, str) and value:
        if value.isascii():
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CheckpointError(
                f"a {what} must be valid Unicode text (got {value!r}: a lone surrogate at "
                f"offset {exc.start})",
                rule=what.replace(" ", "_"),
                value=value,
                offset=exc.start,
            ) from None
        return value
    raise CheckpointError(
        f"a {what} must be a non-empty string (got {value!r})",
        rule=what.replace(" ", "_"),
        value=value,
    )


def _session_id(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    check_store_id(value, what="session id")


def _checkpoint_id(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    check_store_id(value, what="checkpoint id")


def _parent_id(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None:
        check_store_id(value, what="checkpoint id")


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
    store may not hold yet (a store ignores those it already has). The ids are
    checked with :func:`check_store_id`.
    """

    id: str = attrs.field(validator=_checkpoint_id)
    session_id: str = attrs.field(validator=_session_id)
    parent_id: str | None = attrs.field(validator=_parent_id)
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
