"""Session heads in the SQLite store: where loading the latest checkpoint starts.

Each session keeps a *head*: the full manifest of one of its recent
checkpoints, its bodies named by their packed 16-byte digests as any full
manifest names them, so loading the latest checkpoint looks up only the
bodies its view shows. (Heads written before named bodies by their row ids,
3 bytes each: they still read, through one scan of the session's
references, and the next move writes digests.) It moves to the latest
checkpoint every ``head_every`` checkpoints and past the rows being packed,
from the previous head or a newer full manifest. The latest checkpoint's
chain starts at the head (or a newer plain full manifest), so loading it
reads no pack and replays at most ``head_every`` plain rows. Retention and
erasure empty the head; a later full manifest sets it again.

A head is a full manifest, so moving it costs the whole log. Once it weighs
:data:`LARGE_HEAD` bytes or more (``length(head)`` and ``seq`` tell without
reading it) it moves only when the rows written since it weigh at least half
as much, and packing takes only rows it already covers:
both then cost, amortised, what was written (the rule full manifests follow
too), and a latest load replays at most about half a head's bytes of deltas.
Smaller heads keep the plain every-``head_every`` rule.

Stored in the ``heads`` table, one row per session: the seq of the checkpoint
it holds, and the codec bytes of ``[seq, depth, manifest]``: that seq again,
how many deltas were applied since the last full manifest, and the plain full
manifest. A file no write of this version has
touched yet keeps them in ``sessions.head`` (read there, read-only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import attrs

from ctxflow._log import get_logger
from ctxflow.errors import CorruptCheckpoint
from ctxflow.persistence._codec import encode_readable
from ctxflow.persistence._manifest import (
    Manifest,
    apply_deltas,
    index_fields,
    pack_hashes,
    read_counts,
    unpack_hashes,
    unpack_index,
    unpack_tag_columns,
)
from ctxflow.persistence._manifest_plain import extend_full
from ctxflow.persistence._sqlite.schema import Part, has_heads_table
from ctxflow.persistence._sqlite.segments import BodySegments

__all__ = ["HEAD_EVERY", "LARGE_HEAD", "Head", "Plain", "SessionHeads"]

_log = get_logger("ctxflow.stores")

#: The session head moves to the latest checkpoint every this many checkpoints (and
#: at every pack), so the latest load replays at most this many plain rows after it.
HEAD_EVERY = 32
#: From this many encoded bytes a head moves by weight (module docstring).
LARGE_HEAD = 64 * 1024


class Head(NamedTuple):
    """A session head: a checkpoint's seq, its delta depth, its full manifest by body ids."""

    seq: int
    depth: int
    manifest: dict[str, Any]


class Plain(NamedTuple):
    """A checkpoint as the head and the packs read it: seq, full or not, decoded manifest."""

    seq: int
    full: bool
    manifest: Any


@attrs.frozen(kw_only=True)
class SessionHeads(Part):
    """The heads of one SQLite store's sessions, moved every ``every`` checkpoints."""

    bodies: BodySegments
    every: int
    _table: list[bool] = attrs.field(factory=list, init=False, repr=False)

    def _own_table(self) -> bool:
        """True once the file keeps heads in the ``heads`` table (a write makes it so)."""
        if not self._table:
            if not has_heads_table(self.db):
                return False
            self._table.append(True)
        return True

    def read(self, session: int) -> Head | None:
        """The session's head (None when it has none)."""
        query = (
            "SELECT head FROM heads WHERE session = ?"
            if self._own_table()
            else "SELECT head FROM sessions WHERE id = ?"
        )
        row = self.db.execute(query, (session,)).fetchone()
        if row is None or row[0] is None:
            return None
        value = self.codec.decode(bytes(row[0]))
        if not (
            isinstance(value, list)
            and len(value) == 3
            and all(type(v) is int for v in value[:2])
            and isinstance(value[2], dict)
            and isinstance(value[2].get("hashes"), (list, bytes))
        ):
            raise CorruptCheckpoint(
                f"the head of session {session} must be [seq, depth, manifest]", rule="head"
            )
        return Head(*value)

    def usable(self, session: int) -> Head | None:
        """The session's head, or None when it has none or it is damaged (logged).

        A head only spares reading the packs: everything it holds is in the
        checkpoints too, so a damaged one is passed over, and replaced at its
        next move.
        """
        try:
            return self.read(session)
        except CorruptCheckpoint as exc:
            self.passed_over(session, exc)
            return None

    @staticmethod
    def passed_over(session: int, exc: CorruptCheckpoint) -> None:
        """Log a damaged head that a load or write went without."""
        _log.warning("damaged_head", session=session, rule=exc.rule, reason=exc.message)

    def manifest(
        self, session: int, head: Head, hashes: Callable[[], Mapping[int, str]]
    ) -> Manifest:
        """A head's full manifest; an earlier head's body row ids are turned back into
        hashes through ``hashes()`` (row id to hash, called only for such a head)."""
        if isinstance(head.manifest["hashes"], bytes):
            return Manifest.from_plain(head.manifest)
        return Manifest.from_plain({**head.manifest, "hashes": self._named(session, head, hashes)})

    @staticmethod
    def _named(session: int, head: Head, hashes: Callable[[], Mapping[int, str]]) -> list[str]:
        """The body hashes of a head's manifest (digests, or an earlier head's row ids)."""
        known = head.manifest["hashes"]
        try:
            if isinstance(known, bytes):
                return unpack_hashes(known)
            found = hashes()
            return [found[i] for i in known]
        except (KeyError, TypeError, ValueError):
            raise CorruptCheckpoint(
                f"the head of session {session} must name bodies the session holds",
                rule="head",
            ) from None

    @staticmethod
    def place(head: Head | None, seqs: Sequence[int]) -> int | None:
        """The head's index among the plain rows' ``seqs`` (-1: just before them), else None."""
        if head is None:
            return None
        at = head.seq - seqs[0]
        if at == -1 or (0 <= at < len(seqs) and seqs[at] == head.seq):
            return at
        return None

    def clear(self, session_id: str) -> None:
        """Empty a session's head (retention and erasure)."""
        self.db.execute(
            "DELETE FROM heads WHERE session = (SELECT id FROM sessions WHERE name = ?)",
            (session_id,),
        )

    def large(self, session: int) -> int | None:
        """The seq a large head holds (by its hint), or None for a small, absent or
        unhinted head."""
        if not self._own_table():
            return None
        row = self.db.execute(
            "SELECT length(head), seq FROM heads WHERE session = ?", (session,)
        ).fetchone()
        if row is None or row[0] < LARGE_HEAD:
            return None
        return int(row[1])

    def written(self, session: int, seq: int) -> None:
        """After checkpoint ``seq`` is written: move the head to it when one is due."""
        if seq % self.every:
            return
        held = self.large(session)
        if held is not None:
            (since,) = self.db.execute(
                "SELECT coalesce(sum(size), 0) FROM checkpoints WHERE session = ? AND seq > ?",
                (session, held),
            ).fetchone()
            (weight,) = self.db.execute(
                "SELECT length(head) FROM heads WHERE session = ?", (session,)
            ).fetchone()
            if 2 * since < weight:
                return
        head, after = self._start(session)
        rows = self.db.execute(
            "SELECT seq, full, manifest FROM checkpoints WHERE session = ? AND seq > ? "
            "ORDER BY seq",
            (session, after),
        ).fetchall()
        plain = [Plain(r[0], bool(r[1]), self.codec.decode(bytes(r[2]))) for r in rows]
        self.extend(session, plain, head, consume=True)

    def _start(self, session: int) -> tuple[Head | None, int]:
        """Where a move starts: the head (None when the move need not read it) and the
        seq after which the rows to read begin. A full manifest written since the head
        is where the moved head starts: then the head is not read at all (at a long
        session's size, decoding it is most of what a move holds in memory)."""
        if self._own_table():
            row = self.db.execute("SELECT seq FROM heads WHERE session = ?", (session,)).fetchone()
            (full,) = self.db.execute(
                "SELECT max(seq) FROM checkpoints WHERE session = ? AND full AND seq > ?",
                (session, -1 if row is None else row[0]),
            ).fetchone()
            if full is not None:
                return None, full - 1
        head = self.usable(session)
        return head, -1 if head is None else head.seq

    def extend(
        self, session: int, records: list[Plain], head: Head | None, *, consume: bool = False
    ) -> None:
        """Bring the session head forward through consecutive checkpoints, oldest first.

        ``head`` is the current one. The head moves from the last full manifest
        among ``records``, else from the head itself when they continue it; else
        it is emptied (or stays empty). With ``consume`` the records were read for
        this move alone: the full manifest it starts from is emptied once moved.
        """
        if head is not None:
            records = [r for r in records if r.seq > head.seq]
            if not records:
                return
        fulls = [i for i, r in enumerate(records) if r.full]
        data = None
        if fulls:
            first = fulls[-1]
            deltas = [r.manifest for r in records[first + 1 :]]
            depth = len(records) - 1 - first
            data = self._plain(
                records[-1].seq, depth, records[first].manifest, deltas, consume=consume
            )
            if data is None:
                manifest = Manifest.from_plain(records[first].manifest)
                apply_deltas(manifest, deltas)
                data = self._encode(records[-1].seq, depth, manifest, b"")
        elif head is not None and records[0].seq == head.seq + 1:
            try:
                data = self._continue(session, head, records)
            except CorruptCheckpoint as exc:
                self.passed_over(session, exc)
        if data is None:
            self.db.execute("DELETE FROM heads WHERE session = ?", (session,))
        else:
            self.db.execute(
                "INSERT OR REPLACE INTO heads (session, seq, head) VALUES (?, ?, ?)",
                (session, records[-1].seq, data),
            )

    def _plain(
        self, seq: int, depth: int, full: Any, deltas: list[Any], *, consume: bool = False
    ) -> bytes | None:
        """The encoded head of ``full`` moved through ``deltas`` on their stored forms
        (no manifest of the whole log is built: see ``_manifest_plain``), or None when
        those forms do not allow it. With ``consume`` (``full`` read for this move
        alone) ``full`` is emptied once moved, so its columns are not held while the
        moved head is encoded."""
        try:
            moved = extend_full(full, deltas)
        except (KeyError, TypeError, ValueError, IndexError):
            return None  # the manifest path reads it, or names what is wrong
        if moved is None:
            return None
        if consume:
            full.clear()
        return encode_readable(self.codec, [seq, depth, moved])

    def _continue(self, session: int, head: Head, records: list[Plain]) -> bytes | None:
        """The encoded head moved from ``head`` through the deltas that follow it."""
        depth = head.depth + len(records)
        data = self._plain(
            records[-1].seq, depth, head.manifest, [r.manifest for r in records], consume=True
        )
        if data is not None:
            return data
        known = head.manifest["hashes"]
        if not isinstance(known, bytes):  # an earlier head's row ids: named by digest now
            rows = self.bodies.of_session
            named = self._named(session, head, lambda: {r[4]: r[0] for r in rows(session)})
            packed = pack_hashes(named)
            if not isinstance(packed, bytes):
                return None
            known = packed
        shell = {**head.manifest, "hashes": []}
        columns = shell.pop("tag_columns", None)
        if columns is not None:  # the tags as columns over the index: as a mapping here
            try:
                ids = [e.id for e in unpack_index(head.manifest["index"], len(known) // 16)]
                tags = unpack_tag_columns(columns, ids)
            except (KeyError, TypeError, ValueError) as exc:
                raise CorruptCheckpoint(
                    f"the head of session {session} must have readable tag columns ({exc})",
                    rule="head",
                ) from None
            shell["tags"] = {i: list(pair) for i, pair in tags.items()}
        if head.manifest.get("measure") is not None:
            shell["counts"] = []
        manifest = Manifest.from_plain(shell)
        apply_deltas(manifest, [r.manifest for r in records])
        if head.manifest.get("measure") is not None:
            try:
                counted = read_counts(head.manifest.get("counts"), len(known) // 16)
            except ValueError as exc:
                raise CorruptCheckpoint(
                    f"the head of session {session} must count each message ({exc})",
                    rule="head",
                ) from None
            manifest.counts = counted + manifest.counts
        held = (head.manifest.get("index"), list(head.manifest.get("tags") or ()))
        return self._encode(records[-1].seq, depth, manifest, known, held)

    def _encode(
        self,
        seq: int,
        depth: int,
        manifest: Manifest,
        known: bytes,
        held: tuple[Any, list[str]] = (None, []),
    ) -> bytes | None:
        """The encoded head: the ``known`` packed digests, then ``manifest``'s hashes (and
        the message index of both, ``held`` being the index and tag keys of the head
        the known ones come from)."""
        plain = manifest.to_plain()
        if not isinstance(plain["hashes"], bytes):
            return None
        plain["hashes"] = known + plain["hashes"]
        for key in ("index", "tag_columns"):
            plain.pop(key, None)
        entries = manifest.indexed()
        count = len(known) // 16
        if count and entries is not None:
            try:
                entries = unpack_index(held[0], count, held[1]) + entries
            except (KeyError, TypeError, ValueError):
                entries = None  # the head's index is unknown: the head keeps none
        if entries:
            plain.update(index_fields(entries, manifest.tags))
        return encode_readable(self.codec, [seq, depth, plain])
