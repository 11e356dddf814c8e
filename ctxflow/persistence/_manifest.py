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

The layered state is stored in *parts* (format 2): a value at depth two or
three of the state mapping (a layer's field, a memory tier) that packs to
:data:`PART_BYTES` or more is stored as a body of its own and named in the
manifest by its hash; a list of mappings (a memory tier) is stored item by
item, so an episode that did not change costs a 16-byte reference. What is
left of the state (the *skeleton*: small values, the audit tail) is stored in
the manifest, and in a delta only when it changed; a delta names only the
parts that changed. Manifests written before parts existed hold the whole
state and still read.

The message index (``index``, parallel to the hashes) holds what a restore
needs of a message without its body: its id, role, tool calls and the calls
its results answer, whether it is a summary (:func:`pack_index`). A full
manifest with an index writes its tags as columns over it (format 4,
:func:`pack_tag_columns`): a bit per message marking the hidden ones, the
distinct parents once, and two parent numbers per hidden message, instead
of a mapping from every hidden id to its pair. (Format 3 wrote that mapping,
in log order, and the index marked the hidden positions instead of naming
their ids twice; it still reads.) Records without an index still read:
their bodies supply it.

Gotcha: a delta needs the parent's ids to be a prefix of the child's. The log
only grows, so that holds along a session; anything else is written in full.
"""

from __future__ import annotations

import binascii
import itertools
import operator
import re
import sys
from array import array
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from ctxflow._kept import KeptWhileAlive
from ctxflow._plain import Sealed
from ctxflow.errors import CorruptCheckpoint
from ctxflow.model import SUMMARY_OF, Facts, IndexFacts, Role
from ctxflow.persistence._bodies import body_digest

__all__ = [
    "CALL_SEPARATOR",
    "COLUMN_MOST",
    "PARENT_DELTA",
    "PART_BYTES",
    "Manifest",
    "apply_deltas",
    "call_columns",
    "call_fields",
    "facts_of_body",
    "index_fields",
    "mentions",
    "new_mentions",
    "pack_counts",
    "pack_hashes",
    "pack_index",
    "pack_tag_columns",
    "read_counts",
    "replay",
    "shared_tags",
    "unpack_hashes",
    "unpack_index",
    "unpack_tag_columns",
]

Tags = tuple[str | None, str | None]
Path = tuple[str, ...]
#: A part's reference: ("value", hash) or ("items", (hash, ...)).
Ref = tuple[str, str | tuple[str, ...]]

#: None, again and again (an identity test of every index entry, in C).
_NONES = itertools.repeat(None)

#: A full manifest record written in place of a delta may carry that delta under this
#: key: the record's parent with it applied is the record. A store may keep the delta
#: instead (the SQLite store's packs do); a reader of the full manifest ignores it.
PARENT_DELTA = "parent_delta"

#: The packed size from which a state value is stored as a part of its own.
PART_BYTES = 512
# Parts are values at these depths of the state mapping (1 is its top level).
_PART_DEPTH = 2
_MAX_DEPTH = 3

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
        count = len(value) // _DIGEST
        spread = bytearray(_SPREAD * count)
        for at in range(_DIGEST):  # each digest's byte ``at``, all at once
            spread[at::_SPREAD] = value[at::_DIGEST]
        text = bytearray(binascii.b2a_base64(spread, newline=False).translate(_URLSAFE))
        # The two characters after each hash (the spread's zero bytes) become the separator.
        text[_TEXT::24] = text[_TEXT + 1 :: 24] = b" " * count
        return text.decode("ascii").split("  ")[:-1]
    hashes = list(value)
    if not all(isinstance(h, str) for h in hashes):
        raise ValueError("hashes must be strings")
    return hashes


def pack_counts(counts: Sequence[int]) -> bytes | list[int]:
    """Token counts as 4-byte little-endian numbers back to back (format 5), or the
    list itself when one does not fit."""
    try:
        packed = array("I", counts)
    except (OverflowError, TypeError):
        return list(counts)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def read_counts(value: Any, n: int) -> list[int]:
    """Stored token counts (packed bytes or a list), checked: ``n`` non-negative integers."""
    if isinstance(value, bytes):
        if len(value) != 4 * n:
            raise ValueError(f"packed counts must be {4 * n} bytes (4 for each of {n})")
        numbers = array("I")
        numbers.frombytes(value)
        if sys.byteorder == "big":
            numbers.byteswap()
        return numbers.tolist()
    if not isinstance(value, list) or len(value) != n:
        raise ValueError(f"counts must be a list of {n} integers")
    if not set(map(type, value)) <= {int} or (value and min(value) < 0):
        raise ValueError("counts must be non-negative integers")
    return value


#: Tag pairs shared between the messages that have them (a compression hides many
#: messages under one pair): at most this many are kept, then the table starts again.
_SHARED_TAGS = 4096
_shared: dict[Tags, Tags] = {}


def shared_tags(condense: str | None, truncation: str | None) -> Tags:
    """The pair ``(condense, truncation)``, one tuple for every message that has it: a
    long session's manifest holds a pair per hidden message, most of them equal."""
    pair = (condense, truncation)
    found = _shared.get(pair)
    if found is None:
        if len(_shared) >= _SHARED_TAGS:
            _shared.clear()
        found = _shared.setdefault(pair, pair)
    return found


def new_mentions(record: Mapping[str, Any], *, parent: str | None) -> set[str]:
    """The body hashes a write of ``record`` must find or bring: what it names that its
    parent checkpoint does not.

    A full manifest that carries the delta it replaces (:data:`PARENT_DELTA`) is
    its parent with that delta applied: it names what the delta names, the rest
    its parent, in the same session, named already. Any other record names
    itself (:func:`mentions`). At a long session's size this spares a set of
    every hash of the log at each full manifest.
    """
    delta = record.get(PARENT_DELTA)
    if parent is not None and isinstance(delta, Mapping):
        return mentions(delta)
    return mentions(record)


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
        "index",
        "measure",
        "overlay_counts",
        "overlays",
        "parts",
        "skeleton",
        "state",
        "tags",
    )
    _SHOWN = ("chart", "counts", "hashes", "ids", "measure", "overlay_counts", "overlays", "state")

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
        # Parallel to ``hashes``: each message's index facts, None where none were stored.
        self.index: list[IndexFacts | None] = [None] * len(self.hashes)
        self.tags = tags if tags is not None else {}
        self.overlays = overlays if overlays is not None else {}
        self.state = state if state is not None else {}
        # How the state is stored: what stays in the manifest, and the parts by path.
        self.skeleton = self.state
        self.parts: dict[Path, Ref] = {}
        self.chart = chart if chart is not None else {}
        self.measure = measure
        self.counts = counts if counts is not None else []
        self.overlay_counts = overlay_counts if overlay_counts is not None else {}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self._SHOWN)

    def __repr__(self) -> str:
        return (
            f"<Manifest messages={len(self.ids)} tagged={len(self.tags)} "
            f"overlays={len(self.overlays)} measure={self.measure}>"
        )

    def copy(self) -> Manifest:
        """An independent copy (state and chart are shared: they are replaced, never edited)."""
        copied = Manifest(
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
        copied.skeleton, copied.parts = self.skeleton, dict(self.parts)
        copied.index = list(self.index)
        return copied

    def indexed(self, start: int = 0) -> list[IndexFacts] | None:
        """The index facts of the messages from ``start`` on, or None when one is unknown."""
        entries = self.index[start:]
        if len(self.index) != len(self.hashes) or any(map(operator.is_, entries, _NONES)):
            return None
        return entries  # type: ignore[return-value]  # no None among them

    def body_hashes(self) -> set[str]:
        """Every body hash this manifest references (messages, overlays, state parts)."""
        return set(self.hashes) | set(self.overlays.values()) | set(_part_hashes(self.parts))

    def part_hashes(self) -> set[str]:
        """The body hashes of the state's parts."""
        return set(_part_hashes(self.parts))

    def set_state(
        self, state: dict[str, Any], bodies: dict[str, Any], written: Collection[str] = ()
    ) -> None:
        """Take ``state``, stored in parts: the bodies of new parts go into ``bodies``
        (unless ``written`` holds them already)."""
        self.state = state
        self.skeleton, self.parts = _split(state, bodies, written)

    def state_delta(
        self, state: dict[str, Any], bodies: dict[str, Any], written: Collection[str] = ()
    ) -> dict[str, Any]:
        """The delta fields that take this manifest's state to ``state`` (the skeleton if
        it changed, the parts that changed or went); new part bodies go into ``bodies``."""
        skeleton, parts = _split(state, bodies, written)
        delta: dict[str, Any] = {}
        if skeleton != self.skeleton:
            delta["state"] = skeleton
        changed = {p: r for p, r in parts.items() if self.parts.get(p) != r}
        if changed:
            delta["parts"] = _parts_plain(changed)
        gone = [list(p) for p in self.parts if p not in parts]
        if gone:
            delta["removed_parts"] = gone
        return delta

    def assemble(self, bodies: Mapping[str, Any]) -> None:
        """Rebuild ``state`` from the skeleton and the bodies of the parts."""
        if not self.parts:
            self.state = self.skeleton
            return
        state = dict(self.skeleton)
        for path, (_kind, ref) in self.parts.items():
            try:
                value = (
                    bodies[ref]["part"]
                    if isinstance(ref, str)
                    else [bodies[h]["item"] for h in ref]
                )
                parent = state
                for key in path[:-1]:
                    child = dict(parent.get(key) or {})  # copied: the skeleton is shared
                    parent[key] = child
                    parent = child
            except (KeyError, TypeError, AttributeError):
                raise CorruptCheckpoint(
                    f"state part {'/'.join(path)!r} must have its bodies in the store",
                    rule="state_part",
                ) from None
            parent[path[-1]] = value
        self.state = state

    def to_plain(self) -> dict[str, Any]:
        """The full manifest as plain data."""
        plain: dict[str, Any] = {
            "kind": "full",
            "hashes": pack_hashes(self.hashes),
            "tags": {k: list(v) for k, v in self.tags.items()},
            "overlays": dict(self.overlays),
            "state": self.skeleton,
            "chart": self.chart,
        }
        if self.parts:
            plain["parts"] = _parts_plain(self.parts)
        entries = self.indexed()
        if entries:
            plain.update(index_fields(entries, self.tags))
        if self.measure is not None:
            plain["measure"] = self.measure
            plain["counts"] = pack_counts(self.counts)
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
        entries = self.indexed(n)
        if entries:
            delta["index"] = pack_index(entries)
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
        if self.skeleton != parent.skeleton:
            delta["state"] = self.skeleton
        changed_parts = {p: r for p, r in self.parts.items() if parent.parts.get(p) != r}
        if changed_parts:
            delta["parts"] = _parts_plain(changed_parts)
        gone = [list(p) for p in parent.parts if p not in self.parts]
        if gone:
            delta["removed_parts"] = gone
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
                self.counts.extend(read_counts(data.get("counts"), len(hashes)))
            elif "counts" in data:
                raise ValueError("counts need the measure they were taken with")
            self.hashes.extend(hashes)
            if len(self.index) < len(self.hashes) - len(hashes):
                self.index += [None] * (len(self.hashes) - len(hashes) - len(self.index))
            if data.get("index") is not None and hashes:
                hidden = list(data.get("tags") or ()) if full else []
                self.index.extend(unpack_index(data["index"], len(hashes), hidden))
            else:
                self.index.extend([None] * len(hashes))
            if full and data.get("tag_columns") is not None:
                entries = self.index[len(self.index) - len(hashes) :]
                if None in entries:
                    raise ValueError("tag columns need the message index")
                ids = [e.id for e in entries]  # type: ignore[union-attr]  # no None among them
                self.tags.update(unpack_tag_columns(data["tag_columns"], ids))
            # Most deltas append and change the state only: skip what they do not hold.
            if data.get("tags"):
                for key, pair in dict(data["tags"]).items():
                    condense, truncation = pair
                    if condense is None and truncation is None:
                        self.tags.pop(key, None)
                    else:
                        self.tags[key] = shared_tags(condense, truncation)
            if data.get("overlays"):
                self.overlays.update(dict(data["overlays"]))
            for key in data.get("removed_overlays") or ():
                self.overlays.pop(key, None)
                self.overlay_counts.pop(key, None)
            if data.get("overlay_counts"):
                counted = dict(data["overlay_counts"])
                if self.measure is None:
                    raise ValueError("counts need the measure they were taken with")
                read_counts(list(counted.values()), len(counted))
                self.overlay_counts.update(counted)
            if full:
                self.parts = {}
            if full or "state" in data:
                self.skeleton = dict(data.get("state") or {})
            for path in data.get("removed_parts") or ():
                self.parts.pop(_path(path), None)
            if data.get("parts"):
                self.parts.update(_parts_read(data["parts"]))
            self.state = self.skeleton
            if full or "chart" in data:
                self.chart = dict(data.get("chart") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptCheckpoint(
                f"a manifest must have the documented shape ({type(exc).__name__}: {exc})",
                rule="manifest",
            ) from None


# --- the message index ---------------------------------------------------------------

_ROLES = {"s": Role.SYSTEM, "u": Role.USER, "a": Role.ASSISTANT}
# Each byte value's eight bits, lowest first (a bit per message of the hidden marks).
_BITS = [tuple(bool(b >> i & 1) for i in range(8)) for b in range(256)]
_ROLE_CHARS = {role: char for char, role in _ROLES.items()}
_PACKED_ID = re.compile(r"^([a-z]{1,16})_([0-9a-f]{32})$")


def facts_of_body(body: Mapping[str, Any]) -> Facts:
    """The index facts of a stored message body (``ValueError`` if it is malformed)."""
    try:
        uses: list[tuple[str, str]] = []
        results: list[str] = []
        for block in body["content"]:
            kind = block.get("type")
            if kind == "tool_use":
                uses.append((block["id"], block["name"]))
            elif kind == "tool_result":
                results.append(block["tool_use_id"])
        metadata = body.get("metadata") or {}
        if not isinstance(body["id"], str):
            raise TypeError("a message id must be a string")
        return Facts(
            body["id"], Role(body["role"]), tuple(uses), tuple(results), SUMMARY_OF in metadata
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"a message body must hold an id, a role and content ({exc})") from None


def _pack_ids(ids: list[str]) -> dict[str, Any]:
    """Message ids: ``prefix_<32 hex>`` ones as a prefix number and 16 bytes each."""
    prefixes: dict[str, int] = {}
    packed = bytearray()
    for ident in ids:
        found = _PACKED_ID.match(ident)
        if found is None or len(prefixes) > 255:
            return {"ids": list(ids)}
        prefix = prefixes.setdefault(found.group(1), len(prefixes))
        if prefix > 255:
            return {"ids": list(ids)}
        packed.append(prefix)
        packed += bytes.fromhex(found.group(2))
    return {"prefixes": list(prefixes), "packed": bytes(packed)}


def _unpack_ids(data: Mapping[str, Any], n: int) -> list[str]:
    if "ids" in data:
        ids = list(data["ids"])
        if not all(isinstance(i, str) and i for i in ids):
            raise ValueError("index ids must be non-empty strings")
    else:
        prefixes, packed = list(data["prefixes"]), data["packed"]
        if not isinstance(packed, bytes) or len(packed) % 17:
            raise ValueError("packed index ids must be 17 bytes each")
        if not all(isinstance(p, str) for p in prefixes) or (
            packed and max(packed[::17]) >= len(prefixes)
        ):
            raise ValueError("packed index ids must name their prefixes")
        ids = _named_ids(packed, prefixes)
    if len(ids) != n:
        raise ValueError(f"an index must name {n} messages (got {len(ids)})")
    return ids


def _named_ids(packed: bytes, prefixes: list[str]) -> list[str]:
    """The ids of checked packed ones: each its prefix, ``_`` and its 32 hex digits."""
    if not packed:
        return []
    text = packed.hex(" ", -17)  # 34 hex digits an id: its prefix number, then its 32
    if any(" " in p or "\n" in p for p in prefixes):
        named = [f"{p}_" for p in prefixes]
        return [named[int(word[:2], 16)] + word[2:] for word in text.split(" ")]
    # Each id's prefix number, after the space that starts it, becomes its prefix after
    # a line break (which no number's replacement can match), then one split.
    text = " " + text
    for number in set(packed[::17]):
        text = text.replace(f" {number:02x}", f"\n{prefixes[number]}_")
    return text[1:].split("\n")


def pack_index(
    entries: Sequence[IndexFacts], hidden: Collection[str] = (), *, columns: bool = False
) -> dict[str, Any]:
    """The index facts of consecutive messages as plain data: ids packed, roles as
    letters, and only where a message has them its calls (``uses``: offset, then id and
    tool number pairs, the numbers indexing ``names``), its results (``answers``: the
    offsets of messages answering exactly the calls of the message before them;
    ``results``: offset, then the ids answered) and whether it is a summary
    (``summaries``: offsets). With ``hidden`` (the ids of a full manifest's tags,
    written in log order), those ids are left out (module docstring). With
    ``columns``, the calls and answers are written as columns over the messages
    instead (:func:`call_columns`, format 5) where they can be."""
    if hidden:
        # The ids of hidden messages are the manifest's tag keys, written in log order:
        # the index marks their positions (one bit each) instead of naming them again.
        marks = bytearray((len(entries) + 7) // 8)
        for at, entry in enumerate(entries):
            if entry.id in hidden:
                marks[at >> 3] |= 1 << (at & 7)
        plain = _pack_ids([e.id for e in entries if e.id not in hidden])
        plain["hidden"] = bytes(marks)
    else:
        plain = _pack_ids([e.id for e in entries])
    plain["roles"] = "".join(_ROLE_CHARS[e.role] for e in entries)
    summaries = [at for at, e in enumerate(entries) if e.summary]
    packed = call_columns(entries) if columns else None
    if packed is not None:
        plain.update(packed)
        if summaries:
            plain["summaries"] = summaries
        return plain
    uses: list[list[Any]] = []
    answers: list[int] = []
    results: list[list[Any]] = []
    names: dict[str, int] = {}
    previous: tuple[str, ...] = ()
    for at, entry in enumerate(entries):
        if entry.uses:
            flat: list[Any] = [at]
            for use_id, name in entry.uses:
                flat += (use_id, names.setdefault(name, len(names)))
            uses.append(flat)
        if entry.results:
            if entry.results == previous:
                answers.append(at)
            else:
                results.append([at, *entry.results])
        previous = tuple(use_id for use_id, _ in entry.uses)
    return with_index_lists(plain, list(names), uses, answers, results, summaries)


#: Separates the call ids of an index's ``call_ids`` column (an id holding it is
#: written in the ``uses`` form instead).
CALL_SEPARATOR = "\x00"
#: Most calls one message may make in the column form (and the highest tool number).
COLUMN_MOST = 255


def call_columns(entries: Sequence[IndexFacts]) -> dict[str, Any] | None:
    """The calls and answers of consecutive messages as columns (format 5), or None when
    a message makes more than 255 calls, the tools have more than 256 names, or a call
    id holds :data:`CALL_SEPARATOR`.

    ``calls``: a byte per message, how many calls it makes; ``call_ids``: every call's
    id in order, joined by the separator; ``call_names``: a byte per call, its tool's
    number in ``names``; ``answered``: a byte per message, 1 where it answers exactly
    the calls of the message before it (``results`` names any other's, by offset).
    Each column is left out when it holds nothing. A long session's index then
    decodes to a few values, not a list per message."""
    calls = bytearray(len(entries))
    answered = bytearray(len(entries))
    ids: list[str] = []
    numbers = bytearray()
    names: dict[str, int] = {}
    results: list[list[Any]] = []
    previous: tuple[str, ...] = ()
    for at, entry in enumerate(entries):
        made = entry.uses
        if made:
            if len(made) > COLUMN_MOST:
                return None
            calls[at] = len(made)
            for use_id, name in made:
                ids.append(use_id)
                number = names.setdefault(name, len(names))
                if number > COLUMN_MOST:
                    return None
                numbers.append(number)
        if entry.results:
            if entry.results == previous:
                answered[at] = 1
            else:
                results.append([at, *entry.results])
        previous = tuple(use_id for use_id, _ in made)
    joined = CALL_SEPARATOR.join(ids)
    if ids and joined.count(CALL_SEPARATOR) != len(ids) - 1:
        return None
    out = call_fields(list(names), calls, joined, numbers, answered)
    if results:
        out["results"] = results
    return out


def call_fields(
    names: list[str],
    calls: bytes | bytearray,
    joined: str,
    numbers: bytes | bytearray,
    answered: bytes | bytearray,
) -> dict[str, Any]:
    """The call columns of :func:`call_columns` as stored: each left out when it holds
    nothing (no call at all, no message answering the calls before it)."""
    out: dict[str, Any] = {}
    if numbers:
        out.update(names=names, calls=bytes(calls), call_ids=joined, call_names=bytes(numbers))
    if any(answered):
        out["answered"] = bytes(answered)
    return out


def with_index_lists(
    plain: dict[str, Any],
    names: list[str],
    uses: list[list[Any]],
    answers: list[int],
    results: list[list[Any]],
    summaries: list[int],
) -> dict[str, Any]:
    """``plain`` (a packed index's ids and roles) with those of its lists that hold any."""
    for key, value in (
        ("names", names),
        ("uses", uses),
        ("answers", answers),
        ("results", results),
        ("summaries", summaries),
    ):
        if value:
            plain[key] = value
    return plain


def _offset(value: Any, n: int) -> int:
    if type(value) is not int or not 0 <= value < n:
        raise ValueError(f"an index offset must be an integer below {n} (got {value!r})")
    return value


def unpack_index(data: Any, n: int, hidden: Sequence[str] = ()) -> list[Facts]:
    """The index facts of ``n`` messages from :func:`pack_index`'s output (``ValueError``);
    ``hidden`` are the tag keys of the full manifest it came with, in order."""
    if not isinstance(data, Mapping):
        raise ValueError("an index must be a mapping")
    marks = data.get("hidden")
    if marks is None:
        ids = _unpack_ids(data, n)
    else:
        if not isinstance(marks, bytes) or len(marks) != (n + 7) // 8:
            raise ValueError(f"an index's hidden marks must be {(n + 7) // 8} bytes")
        at_hidden = list(itertools.chain.from_iterable(_BITS[b] for b in marks))[:n]
        count = sum(at_hidden)
        if count != len(hidden):
            raise ValueError(
                f"an index marks {count} hidden messages (the tags name {len(hidden)})"
            )
        # Each mark picks the next id from the shown ids (False) or the tagged ones (True).
        takes = (iter(_unpack_ids(data, n - count)), iter(hidden))
        ids = list(map(next, map(takes.__getitem__, at_hidden)))
    roles = data["roles"]
    if not isinstance(roles, str) or len(roles) != n:
        raise ValueError(f"an index must give {n} roles")
    names = list(data.get("names") or ())
    if not all(isinstance(name, str) for name in names):
        raise ValueError("an index's tool names must be strings")
    if not _CALL_COLUMNS.isdisjoint(data):
        if "uses" in data or "answers" in data:
            raise ValueError("an index must give its calls as columns or as entries, not both")
        uses = _column_uses(data, n, names)
        answering: Sequence[Any] = _flagged(data.get("answered"), n)
    else:
        uses = _index_uses(data.get("uses") or (), n, names)
        answering = data.get("answers") or ()
    results: dict[int, tuple[str, ...]] = {}
    for entry in data.get("results") or ():
        at, *answered = entry
        if not answered or not all(isinstance(x, str) for x in answered):
            raise ValueError("an index's results must be id strings")
        results[_offset(at, n)] = tuple(answered)
    results.update(_index_answers(answering, n, uses))
    summaries = {_offset(at, n) for at in data.get("summaries") or ()}
    # The facts are built column by column: tuple.__new__ makes each Facts from its
    # row without the named tuple's Python-level __new__ (a reopen makes one per
    # message of the log).
    at = range(n)
    rows = zip(
        ids,
        map(_ROLES.__getitem__, roles),
        map(uses.get, at, itertools.repeat(())),
        map(results.get, at, itertools.repeat(())),
        map(summaries.__contains__, at),
        strict=True,
    )
    return list(map(tuple.__new__, itertools.repeat(Facts), rows))


def _ints_below(values: Sequence[Any], n: int) -> bool:
    """True when ``values`` (some) are all integers from 0 to below ``n``."""
    return set(map(type, values)) == {int} and min(values) >= 0 and max(values) < n


def _index_uses(
    entries: Sequence[Any], n: int, names: list[str]
) -> dict[int, tuple[tuple[str, str], ...]]:
    """The calls of a packed index's ``uses`` entries by offset (``ValueError``)."""
    uses: dict[int, tuple[tuple[str, str], ...]] = {}
    if entries and set(map(type, entries)) == {list} and set(map(len, entries)) == {3}:
        # Each message makes one call (the usual index): read column by column when
        # every column holds what it must; otherwise the loop below finds the offender.
        at, calls, named = zip(*entries, strict=True)
        if _ints_below(at, n) and _ints_below(named, len(names)) and set(map(type, calls)) == {str}:
            pairs = zip(calls, map(names.__getitem__, named), strict=True)
            return dict(zip(at, zip(pairs), strict=True))
    known = len(names)
    for entry in entries:
        if type(entry) is list and len(entry) == 3:  # most messages make one call
            at, call, name = entry
            if type(at) is not int or not 0 <= at < n:
                raise ValueError(f"an index offset must be an integer below {n} (got {at!r})")
            if type(call) is not str or type(name) is not int or not 0 <= name < known:
                raise ValueError("an index's calls must be id strings and tool numbers")
            uses[at] = ((call, names[name]),)
            continue
        at, *flat = entry
        calls, named = flat[::2], flat[1::2]
        if len(flat) % 2 or not flat or not all(isinstance(x, str) for x in calls):
            raise ValueError("an index's calls must be id strings and name numbers")
        if not all(type(x) is int and 0 <= x < len(names) for x in named):
            raise ValueError("an index's calls must name tools by their number")
        uses[_offset(at, n)] = tuple(zip(calls, [names[x] for x in named], strict=True))
    return uses


_CALL_COLUMNS = frozenset(("calls", "call_ids", "call_names", "answered"))


def _flagged(value: Any, n: int) -> list[int]:
    """The offsets a column of ``n`` flag bytes (0 or 1) marks (none when absent)."""
    if value is None:
        return []
    if not isinstance(value, bytes) or len(value) != n or (value and max(value) > 1):
        raise ValueError(f"an index's answered column must be {n} bytes of 0 or 1")
    return list(itertools.compress(range(n), value))


def _column_uses(
    data: Mapping[str, Any], n: int, names: list[str]
) -> dict[int, tuple[tuple[str, str], ...]]:
    """The calls of a packed index's call columns by offset (``ValueError``)."""
    calls, text, numbers = data.get("calls"), data.get("call_ids"), data.get("call_names")
    if calls is None and text is None and numbers is None:
        return {}
    if not isinstance(calls, bytes) or len(calls) != n:
        raise ValueError(f"an index's calls column must be {n} bytes")
    total = sum(calls)
    if not isinstance(text, str) or not isinstance(numbers, bytes) or len(numbers) != total:
        raise ValueError(f"an index's call columns must give {total} call ids and tool numbers")
    ids = text.split(CALL_SEPARATOR) if total else []
    if len(ids) != total or (not total and text):
        raise ValueError(f"an index's call ids must be {total} strings")
    if numbers and max(numbers) >= len(names):
        raise ValueError("an index's calls must name tools by their number")
    pairs = list(zip(ids, map(names.__getitem__, numbers), strict=True))
    at = list(itertools.compress(range(n), calls))
    if len(at) == total:  # one call a message (the usual index): one pass
        return dict(zip(at, zip(pairs), strict=True))
    uses: dict[int, tuple[tuple[str, str], ...]] = {}
    taken = 0
    for offset in at:
        made = calls[offset]
        uses[offset] = tuple(pairs[taken : taken + made])
        taken += made
    return uses


def _index_answers(
    answers: Sequence[Any], n: int, uses: Mapping[int, tuple[tuple[str, str], ...]]
) -> dict[int, tuple[str, ...]]:
    """The results of a packed index's ``answers`` (each answering the calls of the
    message before it) by offset (``ValueError``)."""
    if answers and _ints_below(answers, n):
        before: list[Any] = list(map(uses.get, map((-1).__add__, answers)))
        if None not in before and set(map(len, before)) == {1}:
            # Each answers the one call before it (the usual index), read in one pass.
            first_call = map(operator.itemgetter(0), map(operator.itemgetter(0), before))
            return dict(zip(answers, zip(first_call), strict=True))
    results: dict[int, tuple[str, ...]] = {}
    for at in answers:
        made = uses.get(_offset(at, n) - 1)
        if not made:
            raise ValueError("an index's answer must follow a message with calls")
        results[at] = (made[0][0],) if len(made) == 1 else tuple(u for u, _ in made)
    return results


def pack_tag_columns(
    entries: Sequence[IndexFacts], tags: Mapping[str, Tags]
) -> dict[str, Any] | None:
    """A full manifest's tags as columns over its index (format 4), or None when a tag
    names no message of ``entries``: a bit per message marking the hidden ones
    (``marks``), the distinct parents (``parents``), and for each hidden message in
    log order the numbers of its condense and truncation parents, 4 bytes each,
    little-endian, 0 for none (``pairs``). A long session's tags share a few
    thousand parents, so this is about a tenth of the mapping they replace, and
    decodes without an object per message."""
    parents: dict[str, int] = {}
    marks = bytearray((len(entries) + 7) // 8)
    numbers = array("I")
    found = 0
    for at, entry in enumerate(entries):
        pair = tags.get(entry.id)
        if pair is None:
            continue
        found += 1
        marks[at >> 3] |= 1 << (at & 7)
        for parent in pair:
            numbers.append(0 if parent is None else parents.setdefault(parent, len(parents)) + 1)
    if found != len(tags):
        return None
    if sys.byteorder == "big":
        numbers.byteswap()
    return {"parents": list(parents), "marks": bytes(marks), "pairs": numbers.tobytes()}


def unpack_tag_columns(data: Any, ids: Sequence[str]) -> dict[str, Tags]:
    """The tags of :func:`pack_tag_columns`'s output over messages ``ids`` (``ValueError``)."""
    if not isinstance(data, Mapping):
        raise ValueError("tag columns must be a mapping")
    named, marks, pairs = data["parents"], data["marks"], data["pairs"]
    if not isinstance(named, list) or not all(isinstance(p, str) and p for p in named):
        raise ValueError("tag columns' parents must be non-empty strings")
    n = len(ids)
    if not isinstance(marks, bytes) or len(marks) != (n + 7) // 8:
        raise ValueError(f"tag columns' marks must be {(n + 7) // 8} bytes")
    if n % 8 and marks[-1] >> (n % 8):
        raise ValueError("tag columns' marks must not mark past the last message")
    if not isinstance(pairs, bytes) or len(pairs) % 8:
        raise ValueError("tag columns' pairs must be 8 bytes each")
    numbers = array("I")
    numbers.frombytes(pairs)
    if sys.byteorder == "big":
        numbers.byteswap()
    bits = itertools.chain.from_iterable(_BITS[b] for b in marks)
    hidden = list(itertools.compress(ids, bits))
    if len(numbers) != 2 * len(hidden):
        raise ValueError(f"tag columns must give 2 parents for each of {len(hidden)} messages")
    if numbers and max(numbers) > len(named):
        raise ValueError("tag columns must name their parents by number")
    # Each message's two numbers read as one 8-byte code (its pair's), and one tuple
    # per distinct pair: a long session's hidden messages share a few thousand.
    codes = array("Q")
    codes.frombytes(pairs)
    if sys.byteorder == "big":
        codes.byteswap()
    if 0 in codes:
        raise ValueError("a hidden message must have a parent")
    return dict(zip(hidden, map(_PairTable([None, *named]).__getitem__, codes), strict=True))


class _PairTable(dict[int, Tags]):
    """Tag pairs by their 8-byte code (condense number, then truncation number, as
    :func:`pack_tag_columns` writes them), each made once, when first asked for."""

    def __init__(self, parents: list[str | None]) -> None:
        super().__init__()
        self.parents = parents

    def __missing__(self, code: int) -> Tags:
        pair = self[code] = shared_tags(self.parents[code & 0xFFFFFFFF], self.parents[code >> 32])
        return pair


def index_fields(entries: Sequence[IndexFacts], tags: Mapping[str, Tags]) -> dict[str, Any]:
    """A full manifest's message index and tags: the tags as columns over the index
    when each names a message of it (else as the mapping, beside the index)."""
    columns = pack_tag_columns(entries, tags)
    if columns is None:
        return {"index": pack_index(entries, columns=True)}
    return {"tags": {}, "index": pack_index(entries, columns=True), "tag_columns": columns}


def mentions(record: Mapping[str, Any]) -> set[str]:
    """The body hashes a stored manifest record (full or delta) names itself."""
    found = set(unpack_hashes(record.get("hashes") or ()))
    found.update(dict(record.get("overlays") or {}).values())
    if record.get("parts"):
        try:
            found.update(_part_hashes(_parts_read(record["parts"])))
        except (TypeError, ValueError) as exc:
            raise CorruptCheckpoint(
                f"a manifest's state parts must have the documented shape ({exc})",
                rule="manifest",
            ) from None
    return found


# --- state parts ---------------------------------------------------------------------


def _sealed_digest(value: Sealed) -> tuple[str, int]:
    return body_digest({"item": value})


# The digests of the item bodies of sealed mappings (memory items' plain forms),
# taken once and kept while the mapping lives; bounded by the items of the
# memories of the engines a process runs at once.
_SEALED: KeptWhileAlive[tuple[str, int]] = KeptWhileAlive(_sealed_digest, size=4_096)


#: Per state path, the last list of items split there and its (body, digest, size)
#: entries: a memory tier that did not change since the last checkpoint (the same
#: item objects) is not digested again, item by item.
_LAST_ITEMS: dict[Path, tuple[tuple[Any, ...], list[tuple[dict[str, Any], str, int]]]] = {}


def _items_of(path: Path, value: Sequence[Any], item: Any) -> list[tuple[dict[str, Any], str, int]]:
    """``item`` of each of ``value``'s items, reusing the last split at ``path`` when it
    held the very same objects (any engine's: the entries depend on the items alone)."""
    last = _LAST_ITEMS.get(path)
    if last is not None and len(last[0]) == len(value) and all(map(operator.is_, last[0], value)):
        return last[1]
    found = [item(i) for i in value]
    if all(type(i) is Sealed for i in value):  # unchanging: safe to keep and compare
        _LAST_ITEMS[path] = (tuple(value), found)
    return found


def _split(
    state: Mapping[str, Any], bodies: dict[str, Any], written: Collection[str]
) -> tuple[dict[str, Any], dict[Path, Ref]]:
    """The skeleton of ``state`` and its parts (new bodies added to ``bodies``).

    Each candidate is packed once: its body's digest and size come together.
    """
    parts: dict[Path, Ref] = {}

    def stored(found: list[tuple[dict[str, Any], str, int]]) -> None:
        for body, digest, _ in found:
            if digest not in written:
                bodies[digest] = body

    def digested(body: dict[str, Any]) -> tuple[dict[str, Any], str, int]:
        return (body, *body_digest(body))

    def item(value: Any) -> tuple[dict[str, Any], str, int]:
        if type(value) is Sealed:
            return ({"item": value}, *_SEALED(value))
        return digested({"item": value})

    def walk(mapping: Mapping[str, Any], path: Path) -> dict[str, Any]:
        kept: dict[str, Any] = {}
        for key, value in mapping.items():
            where = (*path, key)
            depth = len(where)
            if isinstance(value, Mapping) and depth < _MAX_DEPTH:
                kept[key] = walk(value, where)
                continue
            if depth < _PART_DEPTH or not isinstance(key, str):
                kept[key] = value
                continue
            items = (
                isinstance(value, list | tuple)
                and value
                and all(isinstance(item, Mapping) for item in value)
            )
            found = _items_of(where, value, item) if items else [digested({"part": value})]
            if sum(size for _, _, size in found) < PART_BYTES:
                kept[key] = value
                continue
            stored(found)
            hashes = tuple(digest for _, digest, _ in found)
            parts[where] = ("items", hashes) if items else ("value", hashes[0])
        return kept

    return walk(state, ()), parts


def _part_hashes(parts: Mapping[Path, Ref]) -> Iterable[str]:
    for _kind, ref in parts.values():
        if isinstance(ref, str):
            yield ref
        else:
            yield from ref


def _parts_plain(parts: Mapping[Path, Ref]) -> list[list[Any]]:
    return [
        [list(path), kind, ref if kind == "value" else pack_hashes(list(ref))]
        for path, (kind, ref) in parts.items()
    ]


def _path(value: Any) -> Path:
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(k, str) for k in value)
    ):
        raise ValueError("a state part's path must be a non-empty list of strings")
    return tuple(value)


def _parts_read(value: Any) -> dict[Path, Ref]:
    parts: dict[Path, Ref] = {}
    for entry in value:
        path, kind, ref = entry
        if kind == "value" and isinstance(ref, str):
            parts[_path(path)] = ("value", ref)
        elif kind == "items":
            parts[_path(path)] = ("items", tuple(unpack_hashes(ref)))
        else:
            raise ValueError(f"a state part is a value or items (got {kind!r})")
    return parts


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
