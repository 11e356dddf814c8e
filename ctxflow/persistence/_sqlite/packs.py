"""Checkpoint packs in the SQLite store: a session's old checkpoint rows, many in one envelope.

Once a session has ``pack_checkpoints`` rows more than a few, its oldest ones
(record fields and decoded manifest) move into one envelope in ``packs``;
``packed_ids`` keeps their ids findable (by a 64-bit key hashed from the id,
checked against the pack). Inside packs a full manifest is stored as a delta
of the session's previous full one (at most ``_MAX_DEPTH`` in a row): full
manifests repeat the whole log's hashes and would otherwise be most of a
pack. The newest rows stay plain, so a write never touches a pack; only
listing, loading an old chain, retention and erasure decode them.

A stored pack entry has twelve fields: the record fields ``id, parent, seq,
full, created_at, phase, trigger, tokens, message_count, size``, the manifest
record, and the stamp ``[base seq, depth]`` of a full manifest stored as a
delta (else None). An *expanded* entry has the first eleven, every full
manifest in full.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from typing import Any

import attrs

from ctxflow.errors import CorruptCheckpoint
from ctxflow.persistence._codec import encode_readable
from ctxflow.persistence._manifest import PARENT_DELTA, Manifest
from ctxflow.persistence._manifest_plain import compose_deltas
from ctxflow.persistence._model import CheckpointRecord
from ctxflow.persistence._sqlite.heads import Plain, SessionHeads
from ctxflow.persistence._sqlite.schema import Part, record

__all__ = ["PACK_CHECKPOINTS", "CheckpointPacks"]

#: Checkpoint rows packed at once: once a session has this many rows more than
#: ``_PLAIN_ROWS``, its oldest ones (record and decoded manifest) move into one pack.
PACK_CHECKPOINTS = 128
_PLAIN_ROWS = 16
#: A packed full manifest is stored as a delta against the session's previous
#: full one; at most this many in a row, so expanding one decodes a few packs.
_MAX_DEPTH = 8
#: A chain of deltas after a packed full checkpoint is composed into one past this many.
_FOLD = 32
#: The fields of an entry that the code reads by place (module docstring).
_ID, _SEQ, _FULL, _MANIFEST, _STAMP = 0, 2, 3, 10, 11
_ROW = "id, parent, seq, full, created_at, phase, trigger, tokens, message_count, size, manifest"
#: The same, with a full row's manifest left to be read when it is packed (``_Unread``).
_ROW_LAZY = _ROW.replace("manifest", "CASE WHEN full THEN NULL ELSE manifest END")
#: Full manifests of packed checkpoints already expanded, by (session, seq): with depth.
_Memo = dict[tuple[int, int], tuple[Manifest, int]]
_Entries = list[list[Any]]


def _id_key(checkpoint_id: str) -> int:
    """The 64-bit key ``packed_ids`` finds a checkpoint id by (collisions are checked)."""
    digest = hashlib.blake2b(checkpoint_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@attrs.frozen(kw_only=True)
class CheckpointPacks(Part):
    """The packed checkpoints of one SQLite store, ``size`` rows to a pack."""

    heads: SessionHeads
    size: int
    # Per session, where the last pack written left its chain (see ``_compact``).
    _chains: dict[int, _Chain] = attrs.field(factory=dict, init=False, repr=False)

    # -- reading --------------------------------------------------------------

    def records(self, session: int, session_id: str) -> list[CheckpointRecord]:
        """The records of a session's packed checkpoints, oldest first."""
        rows = self.db.execute(
            "SELECT last_seq, data FROM packs WHERE session = ? ORDER BY last_seq", (session,)
        ).fetchall()
        return [
            record((e[_ID], session_id, *e[1:10]))
            for last, data in rows
            for e in self._decode(session, int(last), bytes(data))
        ]

    def records_to_full(
        self, session: int, session_id: str, *, below: int | None = None
    ) -> list[CheckpointRecord]:
        """The records of the newest packs (those before seq ``below``, when given), oldest
        first, back to one holding a full manifest."""
        found: list[CheckpointRecord] = []
        packs = self.db.execute(
            "SELECT last_seq, data FROM packs WHERE session = ? AND last_seq < ? "
            "ORDER BY last_seq DESC",
            (session, 2**63 - 1 if below is None else below),
        )
        for last, data in packs:
            entries = self._decode(session, int(last), bytes(data))
            found[:0] = [record((e[_ID], session_id, *e[1:10])) for e in entries]
            if any(e[_FULL] for e in entries):
                break
        return found

    def chain_to(
        self, session: int, session_id: str, checkpoint_id: str
    ) -> list[CheckpointRecord] | None:
        """The records a packed checkpoint's chain needs, oldest first: back to a full
        manifest, up to the checkpoint (None when no pack index row leads to it).

        Only its own pack and older ones are read, so damage in a newer pack
        leaves it loadable.
        """
        places = self.db.execute(
            "SELECT seq FROM packed_ids WHERE key = ? AND session = ? ORDER BY seq",
            (_id_key(checkpoint_id), session),
        ).fetchall()
        for (seq,) in places:
            found = self._pack_at(session, int(seq))
            entries = found[1] if found else []
            at = next((i for i, e in enumerate(entries) if e[_ID] == checkpoint_id), None)
            if at is None:
                continue
            chain = [record((e[_ID], session_id, *e[1:10])) for e in entries[: at + 1]]
            if any(e[_FULL] for e in entries[: at + 1]):
                return chain
            return self.records_to_full(session, session_id, below=entries[0][_SEQ]) + chain
        return None

    def exists(self, checkpoint_id: str) -> bool:
        """True when a pack holds this checkpoint."""
        candidates = self.db.execute(
            "SELECT 1 FROM packed_ids WHERE key = ? LIMIT 1", (_id_key(checkpoint_id),)
        )
        return candidates.fetchone() is not None and bool(self.manifests([checkpoint_id]))

    def manifests(self, checkpoint_ids: Collection[str]) -> dict[str, Any]:
        """The decoded manifest records of packed checkpoints (full ones in full), by id."""
        wanted = set(checkpoint_ids)
        found: dict[str, Any] = {}
        for entries in self._holding(wanted).values():
            found.update((e[_ID], e[_MANIFEST]) for e in entries if e[_ID] in wanted)
        return found

    def latest_chain(self, session: int) -> tuple[Manifest, list[Any]]:
        """The session's last packed full manifest and the packed deltas after it."""
        later: list[list[Any]] = []
        packs = self.db.execute(
            "SELECT last_seq, data FROM packs WHERE session = ? ORDER BY last_seq DESC",
            (session,),
        ).fetchall()
        for last, data in packs:
            stored = self._decode(session, int(last), bytes(data))
            fulls = [i for i, e in enumerate(stored) if e[_FULL]]
            if not fulls:
                later.append([e[_MANIFEST] for e in stored])
                continue
            memo: _Memo = {}
            self._expand_fulls(session, stored, memo)
            base = stored[fulls[-1]]
            deltas = [e[_MANIFEST] for e in stored[fulls[-1] + 1 :]]
            for group in reversed(later):
                deltas.extend(group)
            return memo[(session, base[_SEQ])][0], deltas
        raise CorruptCheckpoint(
            f"the latest checkpoint of session {session} must have a full manifest before it "
            "(none found)",
            rule="manifest_chain",
        )

    # -- writing --------------------------------------------------------------

    def written(self, session: int) -> None:
        """After a checkpoint is written: move a session's oldest rows into a pack when due."""
        (count,) = self.db.execute(
            "SELECT count(*) FROM checkpoints WHERE session = ?", (session,)
        ).fetchone()
        keep = min(_PLAIN_ROWS, self.size)
        if count < self.size + keep:
            return
        held = self.heads.large(session)
        if held is not None:  # only rows a large head covers: it need not move (heads)
            (count,) = self.db.execute(
                "SELECT count(*) FROM checkpoints WHERE session = ? AND seq <= ?",
                (session, held),
            ).fetchone()
            if count < self.size:
                return
            keep = 0
        if held is None:
            rows = self.db.execute(
                f"SELECT {_ROW} FROM checkpoints WHERE session = ? ORDER BY seq LIMIT ?",
                (session, count - keep),
            ).fetchall()
            entries = [[*r[:10], self.codec.decode(bytes(r[10]))] for r in rows]
        else:  # a full row is read when it is packed, then only for its delta where it can
            rows = self.db.execute(
                f"SELECT {_ROW_LAZY} FROM checkpoints WHERE session = ? ORDER BY seq LIMIT ?",
                (session, count - keep),
            ).fetchall()
            # the full rows' deltas first, before the other rows are decoded and held
            unread = {r[0]: _Unread(self, r[0]) for r in rows if r[3]}
            entries = [
                [*r[:10], unread[r[0]] if r[3] else self.codec.decode(bytes(r[10]))] for r in rows
            ]
        if held is None:
            plain = [Plain(e[_SEQ], bool(e[_FULL]), e[_MANIFEST]) for e in entries]
            self.heads.extend(session, plain, self.heads.usable(session))
        self._store(session, None, entries, chained=True)
        self.db.executemany(
            "INSERT INTO packed_ids (key, session, seq) VALUES (?, ?, ?)",
            ((_id_key(e[_ID]), session, e[_SEQ]) for e in entries),
        )
        self.db.execute(
            "DELETE FROM checkpoints WHERE session = ? AND seq <= ?", (session, entries[-1][_SEQ])
        )

    def rewrite_full(self, checkpoint_id: str, manifest: Any) -> list[int]:
        """Store a packed checkpoint's manifest in full; the sessions of the packs rewritten."""
        self._chains.clear()
        touched = []
        for (session, last), entries in self._holding([checkpoint_id]).items():
            for entry in entries:
                if entry[_ID] == checkpoint_id:
                    entry[_FULL], entry[_MANIFEST] = 1, manifest
            self._store(session, last, entries)
            touched.append(session)
        return touched

    def delete(self, session: int, doomed: Collection[str]) -> None:
        """Delete packed checkpoints of a session (and every pack left empty)."""
        if not self._holding(doomed):
            return
        self._chains.pop(session, None)
        # A kept pack may store a full manifest as a delta of a doomed one: rewrite them all.
        memo: _Memo = {}
        packs = [
            self._expand(session, self._decode(session, int(last), bytes(data)), memo)
            for last, data in self.db.execute(
                "SELECT last_seq, data FROM packs WHERE session = ? ORDER BY last_seq", (session,)
            ).fetchall()
        ]
        self.db.execute("DELETE FROM packs WHERE session = ?", (session,))
        memo = {}
        gone: list[tuple[int, int, int]] = []
        for entries in packs:
            kept = [e for e in entries if e[_ID] not in doomed]
            gone.extend((_id_key(e[_ID]), session, e[_SEQ]) for e in entries if e[_ID] in doomed)
            if kept:
                self._store(session, None, kept, memo)
        self.db.executemany(
            "DELETE FROM packed_ids WHERE key = ? AND session = ? AND seq = ?", gone
        )

    # -- packs as stored ------------------------------------------------------

    def _decode(self, session: int, last_seq: int, data: bytes) -> _Entries:
        value = self.codec.decode(data)
        if not isinstance(value, list) or not all(
            isinstance(e, list) and len(e) == 12 and isinstance(e[0], str) for e in value
        ):
            raise CorruptCheckpoint(
                f"checkpoint pack {session}/{last_seq} must be a list of 12-field entries",
                rule="pack",
                session=session,
                last_seq=last_seq,
            )
        return value

    def _pack_at(self, session: int, seq: int) -> tuple[int, _Entries] | None:
        """The stored pack of a session holding ``seq``: its last seq and entries."""
        row = self.db.execute(
            "SELECT last_seq, data FROM packs WHERE session = ? AND last_seq >= ? "
            "ORDER BY last_seq LIMIT 1",
            (session, seq),
        ).fetchone()
        if row is None:
            return None
        return int(row[0]), self._decode(session, int(row[0]), bytes(row[1]))

    def _holding(self, checkpoint_ids: Iterable[str]) -> dict[tuple[int, int], _Entries]:
        """The expanded packs holding these (packed) checkpoint ids, by (session, last seq)."""
        places: set[tuple[int, int]] = set()
        for id_key in {_id_key(i) for i in checkpoint_ids}:
            places.update(
                self.db.execute(
                    "SELECT session, seq FROM packed_ids WHERE key = ?", (id_key,)
                ).fetchall()
            )
        packs: dict[tuple[int, int], _Entries] = {}
        memo: _Memo = {}
        for session, seq in sorted(places):
            if any(k[0] == session and k[1] >= seq for k in packs):
                continue
            found = self._pack_at(session, seq)
            if found is not None:
                packs[(int(session), found[0])] = self._expand(int(session), found[1], memo)
        return packs

    def _full_at(self, session: int, seq: int, memo: _Memo) -> tuple[Manifest, int]:
        """The full manifest of the packed full checkpoint ``seq`` (and its delta depth)."""
        if (session, seq) not in memo:
            found = self._pack_at(session, seq)
            stored = found[1] if found else []
            if any(e[_SEQ] == seq and e[_FULL] for e in stored):
                self._expand_fulls(session, stored, memo)
        if (session, seq) not in memo:
            raise CorruptCheckpoint(
                f"a packed full manifest must find its base, full checkpoint {seq} (missing)",
                rule="pack",
                session=session,
                seq=seq,
            )
        return memo[(session, seq)]

    def _expand_fulls(self, session: int, stored: _Entries, memo: _Memo) -> None:
        """Put every full manifest of a pack into ``memo``, in full (see ``_compact``)."""
        for entry in stored:
            if not entry[_FULL]:
                continue
            manifest = entry[_MANIFEST]
            try:
                if entry[_STAMP] is None:
                    full, depth = Manifest.from_plain(manifest), 0
                else:
                    base_seq, depth = int(entry[_STAMP][0]), int(entry[_STAMP][1])
                    if base_seq >= entry[_SEQ]:
                        raise ValueError("a base must come first")
                    full = self._full_at(session, base_seq, memo)[0].copy()
                    full.apply(manifest)
            except (TypeError, ValueError, IndexError, AttributeError) as exc:
                raise CorruptCheckpoint(
                    f"a packed full manifest must be full or a delta of an earlier one ({exc})",
                    rule="pack",
                ) from None
            memo[(session, entry[_SEQ])] = (full, depth)

    def _expand(self, session: int, stored: _Entries, memo: _Memo) -> _Entries:
        """A pack's entries with every full manifest in full (see ``_compact``)."""
        self._expand_fulls(session, stored, memo)
        return [
            [*e[:10], memo[(session, e[_SEQ])][0].to_plain() if e[_FULL] else e[_MANIFEST]]
            for e in stored
        ]

    def _full_before(self, session: int, seq: int, memo: _Memo) -> tuple[int, Manifest, int] | None:
        """The session's last packed full checkpoint before ``seq`` (a few packs back at most)."""
        rows = self.db.execute(
            "SELECT last_seq, data FROM packs WHERE session = ? AND last_seq < ? "
            "ORDER BY last_seq DESC LIMIT 4",
            (session, seq),
        ).fetchall()
        for last, data in rows:
            fulls = [e[_SEQ] for e in self._decode(session, int(last), bytes(data)) if e[_FULL]]
            if fulls:
                return (fulls[-1], *self._full_at(session, fulls[-1], memo))
        return None

    def _compact(
        self, session: int, entries: _Entries, memo: _Memo, *, chained: bool = False
    ) -> _Entries:
        """Pack entries as stored: a full manifest becomes a delta against the previous full
        one, stamped ``[base seq, depth]`` (full manifests repeat every hash of the log, and
        they make up most of a pack's bytes otherwise).

        A full manifest record that carries the delta it replaces
        (:data:`~ctxflow.persistence._manifest.PARENT_DELTA`) is stored as the deltas
        since the previous full one composed (``compose_deltas``): nothing of the
        whole log is built. Without it (or on a chain that forks), the previous full
        manifest is read and compared. With ``chained`` (the packing of a session's
        oldest rows), where the last such packing left the chain is kept, so the
        next one need not decode the packs before it.
        """
        kept = self._chains.pop(session, None)
        chain = kept if kept is not None and kept.last == entries[0][1] else None
        if chain is None and any(e[_FULL] for e in entries):
            chain = self._chain_before(session, entries[0][_SEQ])
        base: tuple[int, Manifest, int] | None = None
        based = False  # whether ``base`` was read for the Manifest path
        out: _Entries = []
        for entry in entries:
            manifest, stamp = entry[_MANIFEST], None
            if entry[_FULL]:
                composed = _composed(chain, entry)
                if isinstance(manifest, _Unread) and composed is None:
                    manifest = manifest.whole()
                if composed is not None:
                    manifest, stamp = composed
                    depth, based = stamp[1], False
                elif chain is not None and chain.linear and chain.depth >= _MAX_DEPTH:
                    # as deep as a chain may go: stored in full, no base to read
                    manifest, depth, based = _without_delta(manifest), 0, False
                else:
                    manifest = _without_delta(manifest)
                    if not based:
                        base, based = self._full_before(session, entry[_SEQ], memo), True
                    full, depth = Manifest.from_plain(manifest), 0
                    if base is not None and base[2] < _MAX_DEPTH:
                        delta = full.delta_from(base[1])
                        if delta is not None:
                            manifest, depth = delta, base[2] + 1
                            stamp = [base[0], depth]
                    base = (entry[_SEQ], full, depth)
                    memo[(session, entry[_SEQ])] = (full, depth)
                chain = _Chain(entry[_SEQ], depth, entry[_ID])
            elif chain is not None:
                chain.add(entry)
            out.append([*entry[:10], manifest, stamp])
        if chained and chain is not None and chain.linear:
            self._chains[session] = chain
        return out

    def _chain_before(self, session: int, seq: int) -> _Chain | None:
        """The session's last packed full checkpoint before ``seq`` and the packed deltas
        after it, as stored (a few packs back at most; None when none is found)."""
        rows = self.db.execute(
            "SELECT last_seq, data FROM packs WHERE session = ? AND last_seq < ? "
            "ORDER BY last_seq DESC LIMIT 4",
            (session, seq),
        ).fetchall()
        later: _Entries = []
        for last, data in rows:
            stored = self._decode(session, int(last), bytes(data))
            fulls = [i for i, e in enumerate(stored) if e[_FULL]]
            if not fulls:
                later[:0] = stored
                continue
            found = stored[fulls[-1]]
            stamp = found[_STAMP]
            chain = _Chain(found[_SEQ], 0 if stamp is None else int(stamp[1]), found[_ID])
            for entry in [*stored[fulls[-1] + 1 :], *later]:
                chain.add(entry)
            return chain
        return None

    def _store(
        self,
        session: int,
        old_last: int | None,
        entries: _Entries,
        memo: _Memo | None = None,
        *,
        chained: bool = False,
    ) -> None:
        """Replace a pack by ``entries`` (expanded; none left: drop it)."""
        if old_last is not None:
            self.db.execute(
                "DELETE FROM packs WHERE session = ? AND last_seq = ?", (session, old_last)
            )
        if entries:
            compact = self._compact(session, entries, {} if memo is None else memo, chained=chained)
            self.db.execute(
                "INSERT INTO packs (session, last_seq, data) VALUES (?, ?, ?)",
                (session, entries[-1][_SEQ], encode_readable(self.codec, compact)),
            )


class _Chain:
    """A packed full checkpoint (its seq and delta depth) and the deltas after it, while
    they follow each other (each the parent of the next).

    Every :data:`_FOLD` deltas are composed into one (``compose_deltas``), so a chain
    kept between packings holds a packed delta, not thousands of decoded ones.
    """

    __slots__ = ("deltas", "depth", "last", "linear", "seq")

    def __init__(self, seq: int, depth: int, last: str) -> None:
        self.seq, self.depth, self.last = seq, depth, last
        self.deltas: list[Any] = []
        self.linear = True

    def add(self, entry: list[Any]) -> None:
        """The next entry of the session, a delta."""
        if entry[1] != self.last or entry[_FULL]:
            self.linear = False
        self.deltas.append(entry[_MANIFEST])
        self.last = entry[_ID]
        if self.linear and len(self.deltas) > _FOLD:
            try:
                folded = compose_deltas(self.deltas)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                folded = None  # composed later, where a failure is handled
            if folded is not None:
                self.deltas = [folded]


def _composed(chain: _Chain | None, entry: list[Any]) -> tuple[Any, list[int]] | None:
    """A full entry as the deltas since the previous full composed with the one it
    replaces, and its stamp; None when that cannot be done on the stored forms."""
    manifest = entry[_MANIFEST]
    if chain is None or not chain.linear or chain.depth >= _MAX_DEPTH or entry[1] != chain.last:
        return None
    if isinstance(manifest, _Unread):
        replaced = manifest.delta
    else:
        replaced = manifest.get(PARENT_DELTA) if isinstance(manifest, dict) else None
    if replaced is None:
        return None
    try:
        delta = compose_deltas([*chain.deltas, replaced])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None
    if delta is None:
        return None
    return delta, [chain.seq, chain.depth + 1]


class _Unread:
    """A full checkpoint row of a packing: the delta it replaces (:data:`PARENT_DELTA`)
    read alone, which is all the pack keeps where the deltas before it compose; the
    whole manifest read again only where they do not. At a long session's size a
    full manifest decodes to megabytes, and a packing holds every row it packs."""

    __slots__ = ("checkpoint_id", "delta", "packs")

    def __init__(self, packs: CheckpointPacks, checkpoint_id: str) -> None:
        self.packs, self.checkpoint_id = packs, checkpoint_id
        self.delta = packs.codec.decode_entry(self._data(), PARENT_DELTA)

    def _data(self) -> bytes:
        (data,) = self.packs.db.execute(
            "SELECT manifest FROM checkpoints WHERE id = ?", (self.checkpoint_id,)
        ).fetchone()
        return bytes(data)

    def whole(self) -> Any:
        """The full manifest record."""
        return self.packs.codec.decode(self._data())


def _without_delta(manifest: Any) -> Any:
    """A full manifest record without the delta it replaced (a pack keeps one or the other)."""
    if isinstance(manifest, dict) and PARENT_DELTA in manifest:
        return {k: v for k, v in manifest.items() if k != PARENT_DELTA}
    return manifest
