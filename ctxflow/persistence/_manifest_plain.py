"""Manifest records at the plain level: deltas composed, a full manifest extended.

Moving a session head, or storing a packed full manifest as a delta, used to
build a :class:`~ctxflow.persistence._manifest.Manifest` of the whole log (a
few hundred bytes of Python objects a message) only to write it out again.
A long session paid that at every move, and the process kept the memory it
had grown to. The functions here do the same on the stored forms: packed
hashes are joined, packed message indexes concatenated, tag columns patched
where the deltas changed a tag. What they cost follows the deltas, plus one
pass over the packed ids of the log (no object per message).

Each returns None where the plain form does not allow it (a format-3 full
manifest, ids that are not packed, hashes stored as a list, a delta without
its index): the caller then takes the :class:`Manifest` path, which reads
every form. Malformed input raises ``KeyError``, ``TypeError`` or
``ValueError``; callers treat that as they treat a malformed record.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from ctxflow.persistence._manifest import (
    _PACKED_ID,
    CALL_SEPARATOR,
    COLUMN_MOST,
    call_fields,
    pack_counts,
    read_counts,
)

__all__ = ["compose_deltas", "concat_index", "extend_full"]

_ID_BYTES = 17  # a packed id: its prefix number, then 16 bytes


def concat_index(parts: Sequence[tuple[Mapping[str, Any], int]]) -> dict[str, Any] | None:
    """The packed index of consecutive runs of messages, each ``(packed index, count)``,
    its calls as columns (None when one holds ids that are not packed, or hidden marks,
    or calls the columns cannot hold: see ``call_columns``)."""
    prefixes: dict[str, int] = {}
    packed = bytearray()
    roles: list[str] = []
    calls = _Calls()
    results: list[list[Any]] = []
    summaries: list[int] = []
    base = 0
    for plain, count in parts:
        if "ids" in plain or "hidden" in plain:
            return None
        raw = plain["packed"]
        if not isinstance(raw, bytes) or len(raw) != _ID_BYTES * count:
            raise ValueError(f"a packed index must hold {count} ids")
        numbers = [prefixes.setdefault(p, len(prefixes)) for p in plain["prefixes"]]
        if len(prefixes) > 256:
            return None
        if numbers == list(range(len(numbers))):
            packed += raw
        else:
            moved = bytearray(raw)
            for at in range(0, len(moved), _ID_BYTES):
                moved[at] = numbers[moved[at]]
            packed += moved
        roles.append(plain["roles"])
        if not calls.add(plain, count):
            return None
        results.extend([entry[0] + base, *entry[1:]] for entry in plain.get("results") or ())
        summaries.extend(at + base for at in plain.get("summaries") or ())
        base += count
    out: dict[str, Any] = {"prefixes": list(prefixes), "packed": bytes(packed)}
    out["roles"] = "".join(roles)
    out.update(calls.columns())
    if results:
        out["results"] = results
    if summaries:
        out["summaries"] = summaries
    return out


class _Calls:
    """The call columns of consecutive runs of messages (``call_columns``' format),
    joined as the runs come, from either form a run stores them in."""

    def __init__(self) -> None:
        self.names: dict[str, int] = {}
        self.calls = bytearray()
        self.ids: list[str] = []
        self.numbers = bytearray()
        self.answered = bytearray()

    def add(self, plain: Mapping[str, Any], count: int) -> bool:
        """Join the calls of a run of ``count`` messages (False: the columns cannot
        hold them; ``ValueError`` for a malformed run)."""
        named = [self.names.setdefault(name, len(self.names)) for name in plain.get("names") or ()]
        if len(self.names) > COLUMN_MOST + 1:
            return False
        calls: bytes | bytearray
        numbers: bytes | bytearray
        answered: bytes | bytearray
        if "uses" in plain or "answers" in plain:
            run = _listed_calls(plain, count, len(named))
            if run is None:
                return False
            calls, ids, numbers, answered = run
        else:
            calls = plain.get("calls", bytes(count))
            text = plain.get("call_ids", "")
            numbers = plain.get("call_names", b"")
            answered = plain.get("answered", bytes(count))
            if not (
                isinstance(calls, bytes)
                and isinstance(text, str)
                and isinstance(numbers, bytes)
                and isinstance(answered, bytes)
                and len(calls) == count == len(answered)
                and len(numbers) == sum(calls)
                and (text.count(CALL_SEPARATOR) + 1 if numbers else len(text)) == len(numbers)
                and (not numbers or max(numbers) < len(named))
            ):
                raise ValueError(f"an index's call columns must cover its {count} messages")
            ids = [text] if text else []
        if named != list(range(len(named))):
            numbers = bytes(numbers).translate(bytes(named + [0] * (256 - len(named))))
        self.calls += calls
        self.ids += ids
        self.numbers += numbers
        self.answered += answered
        return True

    def columns(self) -> dict[str, Any]:
        """The joined columns, as ``call_fields`` stores them."""
        joined = CALL_SEPARATOR.join(self.ids)
        return call_fields(list(self.names), self.calls, joined, self.numbers, self.answered)


def _listed_calls(
    plain: Mapping[str, Any], count: int, tools: int
) -> tuple[bytearray, list[str], bytearray, bytearray] | None:
    """The call columns of a run of ``count`` messages that lists its calls (``uses``,
    ``answers``) naming ``tools`` tools: the calls a message, the ids joined, the tool
    numbers, the answered flags (None when the columns cannot hold them)."""
    calls = bytearray(count)
    ids: list[str] = []
    numbers = bytearray()
    for entry in sorted(plain.get("uses") or (), key=lambda e: e[0]):
        at, *flat = entry
        made, named = flat[::2], flat[1::2]
        if (
            type(at) is not int
            or not 0 <= at < count
            or calls[at]
            or not flat
            or len(made) != len(named)
            or not all(type(call) is str for call in made)
            or not all(type(x) is int and 0 <= x < tools for x in named)
        ):
            raise ValueError(f"an index's calls must be id and tool number pairs below {count}")
        if len(made) > COLUMN_MOST or any(CALL_SEPARATOR in call for call in made):
            return None
        calls[at] = len(made)
        ids.append(CALL_SEPARATOR.join(made))
        numbers += bytes(named)
    answered = bytearray(count)
    for at in plain.get("answers") or ():
        if type(at) is not int or not 0 <= at < count:
            raise ValueError(f"an index's answers must be offsets below {count}")
        answered[at] = 1
    return calls, ids, numbers, answered


def compose_deltas(deltas: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """One delta record that does what ``deltas`` do applied in order (None when one of
    them keeps its hashes as a list, or appends messages without their index)."""
    hashes = bytearray()
    counts: list[int] | None = None
    runs: list[tuple[Mapping[str, Any], int]] = []
    tags: dict[str, list[Any]] = {}
    overlays: dict[str, str] = {}
    removed: dict[str, None] = {}
    counted: dict[str, int] = {}
    parts: dict[tuple[str, ...], list[Any]] = {}
    gone: dict[tuple[str, ...], None] = {}
    state: Any = None
    chart: Any = None
    for delta in deltas:
        if delta.get("kind") != "delta" or not isinstance(delta["hashes"], bytes):
            return None
        appended = len(delta["hashes"]) // 16
        hashes += delta["hashes"]
        if "counts" in delta:
            counts = counts if counts is not None else []
            counts += read_counts(delta["counts"], appended)
        if appended:
            if delta.get("index") is None:
                return None
            runs.append((delta["index"], appended))
        for key, pair in (delta.get("tags") or {}).items():
            tags[key] = list(pair)
        for key, digest in (delta.get("overlays") or {}).items():
            overlays[key] = digest
            removed.pop(key, None)
        for key in delta.get("removed_overlays") or ():
            overlays.pop(key, None)
            counted.pop(key, None)
            removed[key] = None
        counted.update(delta.get("overlay_counts") or {})
        if "state" in delta:
            state = delta["state"]
        for path in delta.get("removed_parts") or ():
            parts.pop(tuple(path), None)
            gone[tuple(path)] = None
        for entry in delta.get("parts") or ():
            parts[tuple(entry[0])] = entry
            gone.pop(tuple(entry[0]), None)
        if "chart" in delta:
            chart = delta["chart"]
    out: dict[str, Any] = {"kind": "delta", "hashes": bytes(hashes)}
    if runs:
        index = concat_index(runs)
        if index is None:
            return None
        out["index"] = index
    if counts is not None:
        out["counts"] = pack_counts(counts)
    for key, value in (
        ("tags", tags),
        ("overlays", overlays),
        ("removed_overlays", list(removed)),
        ("overlay_counts", counted),
        ("parts", list(parts.values())),
        ("removed_parts", [list(path) for path in gone]),
    ):
        if value:
            out[key] = value
    if state is not None:
        out["state"] = state
    if chart is not None:
        out["chart"] = chart
    return out


def extend_full(
    full: Mapping[str, Any], deltas: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """The full manifest record of ``full`` with ``deltas`` applied, in format 4 (None
    when ``full`` is not a format-4 record with packed ids, or a delta is not plain)."""
    if (
        full.get("kind") != "full"
        or not isinstance(full.get("hashes"), bytes)
        or full.get("index") is None
        or full.get("tag_columns") is None
        or full.get("tags")
        or "prefixes" not in full["index"]
        or "hidden" in full["index"]
    ):
        return None
    change = compose_deltas(deltas)
    if change is None:
        return None
    old = len(full["hashes"]) // 16
    new = len(change["hashes"]) // 16
    out = dict(full)
    out["hashes"] = full["hashes"] + change["hashes"]
    if full.get("measure") is not None:
        before, added = full["counts"], change["counts"] if new else b""
        if (
            isinstance(before, bytes)
            and isinstance(added, bytes)
            and (len(before), len(added)) == (4 * old, 4 * new)
        ):
            out["counts"] = before + added  # packed both: no number of the log is built
        else:
            counts = read_counts(before, old)
            counts += read_counts(added, new) if new else []
            out["counts"] = pack_counts(counts)
    elif "counts" in change:
        raise ValueError("counts need the measure they were taken with")
    index = full["index"]
    if new:
        index = concat_index([(full["index"], old), (change["index"], new)])
        if index is None:
            return None
        out["index"] = index
    columns = _patched_columns(full["tag_columns"], index, old, new, change.get("tags") or {})
    if columns is None:
        return None
    out["tag_columns"] = columns
    overlays = dict(full.get("overlays") or {})
    overlays.update(change.get("overlays") or {})
    counted = dict(full.get("overlay_counts") or {})
    for key in change.get("removed_overlays") or ():
        overlays.pop(key, None)
        counted.pop(key, None)
    counted.update(change.get("overlay_counts") or {})
    out["overlays"] = overlays
    if full.get("measure") is not None:
        out["overlay_counts"] = counted
    if "state" in change:
        out["state"] = change["state"]
    if "chart" in change:
        out["chart"] = change["chart"]
    if change.get("parts") or change.get("removed_parts"):
        parts = {tuple(entry[0]): entry for entry in full.get("parts") or ()}
        for path in change.get("removed_parts") or ():
            parts.pop(tuple(path), None)
        parts.update((tuple(entry[0]), entry) for entry in change.get("parts") or ())
        out["parts"] = list(parts.values())
        if not parts:
            out.pop("parts")
    return out


def _patched_columns(
    columns: Mapping[str, Any],
    index: Mapping[str, Any],
    old: int,
    new: int,
    tags: Mapping[str, Sequence[str | None]],
) -> dict[str, Any] | None:
    """Tag columns over ``old + new`` messages: ``columns`` (over the first ``old``) with
    the tag changes of ``tags`` (a pair of Nones shows a message again)."""
    names = list(columns["parents"])
    number = {name: at + 1 for at, name in enumerate(names)}
    pairs = array("I")
    pairs.frombytes(columns["pairs"])
    if sys.byteorder == "big":
        pairs.byteswap()
    marks = bytearray(columns["marks"])
    if len(marks) != (old + 7) // 8:
        raise ValueError("tag columns must mark each message")
    # Where each changed id stands: the packed ids of the log, read once.
    table = {p: at for at, p in enumerate(index["prefixes"])}
    wanted: dict[bytes, str] = {}
    for ident in tags:
        found = _PACKED_ID.match(ident)
        if found is None or found.group(1) not in table:
            return None  # cannot be a packed id of this log
        wanted[bytes([table[found.group(1)]]) + bytes.fromhex(found.group(2))] = ident
    packed = index["packed"]
    at_of: dict[str, int] = {}
    if wanted:
        for at in range(old + new):
            key = packed[at * _ID_BYTES : (at + 1) * _ID_BYTES]
            if key in wanted:
                at_of[wanted[key]] = at
    if len(at_of) != len(tags):
        raise ValueError("a tag change must name a message of the log")

    def numbered(pair: Sequence[str | None]) -> tuple[int, int]:
        out = [0, 0]
        for side, parent in enumerate(pair):
            if parent is not None:
                if parent not in number:
                    names.append(parent)
                    number[parent] = len(names)
                out[side] = number[parent]
        return out[0], out[1]

    marks += bytes((old + new + 7) // 8 - len(marks))
    before = int.from_bytes(marks, "little")
    if len(pairs) != 2 * before.bit_count():
        raise ValueError("tag columns must give 2 parents for each hidden message")
    out = array("I")
    rank = 0  # pairs of ``columns`` copied (or dropped) so far
    for at, ident in sorted((at, ident) for ident, at in at_of.items()):
        below = (before & ((1 << at) - 1)).bit_count() if at < old else len(pairs) // 2
        out.extend(pairs[2 * rank : 2 * below])
        rank = below
        if at < old and before >> at & 1:
            rank += 1  # its pair is replaced, or dropped with its mark
        pair = tags[ident]
        if pair[0] is None and pair[1] is None:
            marks[at >> 3] &= ~(1 << (at & 7)) & 0xFF
        else:
            marks[at >> 3] |= 1 << (at & 7)
            out.extend(numbered(pair))
    out.extend(pairs[2 * rank :])
    if sys.byteorder == "big":
        out.byteswap()
    return {"parents": names, "marks": bytes(marks), "pairs": out.tobytes()}
