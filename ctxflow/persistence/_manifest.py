"""Checkpoint manifests: the full form, and deltas against a parent.

A full manifest names every message of the log in order (by body hash: the
body holds the message id, so ids are not stored twice),
the compression tags of the tagged ones, the overlays (by body hash), the
layered state and the chart configuration, all as plain data. Writing that
at every checkpoint would repeat the history each time (quadratic storage
over a long session), so most checkpoints store a *delta* against their
parent: the appended ids and hashes, the tags that changed, the overlays set
or removed, and the state or chart only when they changed. A full manifest is
written every so often (``full_every``) so a load replays a bounded chain.

Hashes are stored packed: one bytes value holding the 16-byte digests back to
back (``pack_hashes``), not a list of 22-character strings, which makes a full
manifest about a third smaller. Records written as lists still read.

Gotcha: a delta needs the parent's ids to be a prefix of the child's. The log
only grows, so that holds along a session; anything else is written in full.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ctxflow.errors import CorruptCheckpoint

__all__ = ["Manifest", "apply_deltas", "mentions", "pack_hashes", "replay", "unpack_hashes"]

Tags = tuple[str | None, str | None]

_DIGEST = 16
#: A digest spread to 18 bytes (two zero bytes after it) encodes to 24 base64
#: characters on its own, the first 22 of which are the digest's hash: so a whole
#: list converts in one base64 call.
_SPREAD = 18
_TEXT = 22
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_STANDARD = str.maketrans("-_", "+/")


def pack_hashes(hashes: list[str]) -> bytes | list[str]:
    """Body hashes as their digests back to back (the list itself if one is not a digest)."""
    if not all(isinstance(h, str) and len(h) == _TEXT for h in hashes):
        return list(hashes)
    text = "AA".join(hashes) + "AA" if hashes else ""
    if "+" in text or "/" in text:
        return list(hashes)
    try:
        spread = binascii.a2b_base64(text.translate(_STANDARD), strict_mode=True)
    except (binascii.Error, ValueError):
        return list(hashes)
    # A character holding bits past the digest means the text is not a canonical hash.
    if any(spread[_DIGEST::_SPREAD]):
        return list(hashes)
    return b"".join([spread[i : i + _DIGEST] for i in range(0, len(spread), _SPREAD)])


def unpack_hashes(value: Any) -> list[str]:
    """The body hashes of a stored ``hashes`` field (packed bytes or a list of strings)."""
    if isinstance(value, bytes):
        if len(value) % _DIGEST:
            raise ValueError(f"packed hashes must be a multiple of {_DIGEST} bytes")
        digests = [value[i : i + _DIGEST] for i in range(0, len(value), _DIGEST)]
        spread = b"\0\0".join(digests) + b"\0\0" if digests else b""
        text = binascii.b2a_base64(spread, newline=False).translate(_URLSAFE).decode("ascii")
        return [text[i : i + _TEXT] for i in range(0, len(text), 24)]
    hashes = list(value)
    if not all(isinstance(h, str) for h in hashes):
        raise ValueError("hashes must be strings")
    return hashes


def _counts(value: Any, n: int) -> list[int]:
    """Stored token counts, checked: ``n`` non-negative integers."""
    if not isinstance(value, list) or len(value) != n:
        raise ValueError(f"counts must be a list of {n} integers")
    if not all(type(c) is int and c >= 0 for c in value):
        raise ValueError("counts must be non-negative integers")
    return value


class Manifest:
    """The full manifest of one checkpoint (a working form, changed in place).

    ``ids`` (parallel to ``hashes``) is not stored: a store fills it from the
    bodies when it loads a checkpoint.

    ``measure`` names the measure (its ``key``) whose token counts the manifest
    carries: ``counts`` is parallel to ``hashes`` and ``overlay_counts`` maps a
    message id to its overlay's count. Without a measure both are empty. A
    delta carries the counts of the messages it appends; a change of measure
    is written in full.
    """

    __slots__ = (
        "chart",
        "counts",
        "hashes",
        "ids",
        "measure",
        "overlay_counts",
        "overlays",
        "state",
        "tags",
    )

    def __init__(
        self,
        *,
        ids: list[str] | None = None,
        hashes: list[str] | None = None,
        tags: dict[str, Tags] | None = None,
        overlays: dict[str, str] | None = None,
        state: dict[str, Any] | None = None,
        chart: dict[str, Any] | None = None,
        measure: str | None = None,
        counts: list[int] | None = None,
        overlay_counts: dict[str, int] | None = None,
    ) -> None:
        self.ids = ids if ids is not None else []
        self.hashes = hashes if hashes is not None else []
        self.tags = tags if tags is not None else {}
        self.overlays = overlays if overlays is not None else {}
        self.state = state if state is not None else {}
        self.chart = chart if chart is not None else {}
        self.measure = measure
        self.counts = counts if counts is not None else []
        self.overlay_counts = overlay_counts if overlay_counts is not None else {}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        return (
            f"<Manifest messages={len(self.ids)} tagged={len(self.tags)} "
            f"overlays={len(self.overlays)} measure={self.measure}>"
        )

    def copy(self) -> Manifest:
        """An independent copy (state and chart are shared: they are replaced, never edited)."""
        return Manifest(
            ids=list(self.ids),
            hashes=list(self.hashes),
            tags=dict(self.tags),
            overlays=dict(self.overlays),
            state=self.state,
            chart=self.chart,
            measure=self.measure,
            counts=list(self.counts),
            overlay_counts=dict(self.overlay_counts),
        )

    def body_hashes(self) -> set[str]:
        """Every body hash this manifest references (messages and overlays)."""
        return set(self.hashes) | set(self.overlays.values())

    def to_plain(self) -> dict[str, Any]:
        """The full manifest as plain data."""
        plain: dict[str, Any] = {
            "kind": "full",
            "hashes": pack_hashes(self.hashes),
            "tags": {k: list(v) for k, v in self.tags.items()},
            "overlays": dict(self.overlays),
            "state": self.state,
            "chart": self.chart,
        }
        if self.measure is not None:
            plain["measure"] = self.measure
            plain["counts"] = list(self.counts)
            plain["overlay_counts"] = dict(self.overlay_counts)
        return plain

    @classmethod
    def from_plain(cls, data: Any) -> Manifest:
        """Read a full manifest; raise ``CorruptCheckpoint`` when it is malformed."""
        if not isinstance(data, Mapping) or data.get("kind") != "full":
            raise CorruptCheckpoint("a full manifest must have kind 'full'", rule="manifest")
        manifest = cls()
        manifest.apply(data, full=True)
        return manifest

    def delta_from(self, parent: Manifest) -> dict[str, Any] | None:
        """This manifest as a delta against ``parent``, or None when it is not an extension."""
        n = len(parent.hashes)
        if len(self.hashes) < n or self.hashes[:n] != parent.hashes:
            return None
        if self.measure != parent.measure or self.counts[:n] != parent.counts:
            return None
        delta: dict[str, Any] = {"kind": "delta", "hashes": pack_hashes(self.hashes[n:])}
        if self.measure is not None:
            delta["counts"] = self.counts[n:]
        changed = {k: list(v) for k, v in self.tags.items() if parent.tags.get(k) != v}
        changed.update({k: [None, None] for k in parent.tags if k not in self.tags})
        if changed:
            delta["tags"] = changed
        set_overlays = {k: v for k, v in self.overlays.items() if parent.overlays.get(k) != v}
        if set_overlays:
            delta["overlays"] = set_overlays
        removed = [k for k in parent.overlays if k not in self.overlays]
        if removed:
            delta["removed_overlays"] = removed
        if any(k not in self.overlay_counts and k not in removed for k in parent.overlay_counts):
            return None
        counted = {
            k: v for k, v in self.overlay_counts.items() if parent.overlay_counts.get(k) != v
        }
        if counted:
            delta["overlay_counts"] = counted
        if self.state != parent.state:
            delta["state"] = self.state
        if self.chart != parent.chart:
            delta["chart"] = self.chart
        return delta

    def apply(self, data: Mapping[str, Any], *, full: bool = False) -> None:
        """Apply a delta (or, with ``full``, load a full manifest) in place."""
        try:
            hashes = unpack_hashes(data["hashes"])
            if full:
                measure = data.get("measure")
                if measure is not None and not isinstance(measure, str):
                    raise TypeError("a measure must be named by a string")
                self.measure = measure
            if self.measure is not None:
                self.counts.extend(_counts(data.get("counts"), len(hashes)))
            elif "counts" in data:
                raise ValueError("counts need the measure they were taken with")
            self.hashes.extend(hashes)
            # Most deltas append and change the state only: skip what they do not hold.
            if data.get("tags"):
                for key, pair in dict(data["tags"]).items():
                    condense, truncation = pair
                    if condense is None and truncation is None:
                        self.tags.pop(key, None)
                    else:
                        self.tags[key] = (condense, truncation)
            if data.get("overlays"):
                self.overlays.update(dict(data["overlays"]))
            for key in data.get("removed_overlays") or ():
                self.overlays.pop(key, None)
                self.overlay_counts.pop(key, None)
            if data.get("overlay_counts"):
                counted = dict(data["overlay_counts"])
                if self.measure is None:
                    raise ValueError("counts need the measure they were taken with")
                _counts(list(counted.values()), len(counted))
                self.overlay_counts.update(counted)
            if full or "state" in data:
                self.state = dict(data.get("state") or {})
            if full or "chart" in data:
                self.chart = dict(data.get("chart") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptCheckpoint(
                f"a manifest must have the documented shape ({type(exc).__name__}: {exc})",
                rule="manifest",
            ) from None


def mentions(record: Mapping[str, Any]) -> set[str]:
    """The body hashes a stored manifest record (full or delta) names itself."""
    found = set(unpack_hashes(record.get("hashes") or ()))
    found.update(dict(record.get("overlays") or {}).values())
    return found


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
