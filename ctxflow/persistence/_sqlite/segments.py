"""Message bodies in the SQLite store: loose rows, packed into segments, and who references them.

Bodies are written *loose* (one envelope each, in ``loose``); once
``segment_bodies`` loose bodies have accumulated, the write that crosses the
line packs them into one *segment* (one envelope over a list of bodies) in
the same transaction. One lz4 frame over many messages compresses their
shared keys and text several times better than one frame per message, and a
load decodes a few segments instead of a thousand envelopes.

``bodies`` keeps one row per hash (its segment and position there, or its
loose row), so content addressing works as before, and ``session_bodies``
records which sessions reference which body. When retention or erasure
deletes a packed body, its segment is dropped if nothing in it is left, else
rewritten without it: an erased session's text must not linger in a segment
another session still reads.

Rows that place a body are ``(hash, segment, pos, loose data[, row id])``:
``segment`` and ``pos`` are NULL for a loose body, ``loose data`` for a packed one.

A body's place (its ``bodies`` row) lies outside any checksummed envelope, so
every body read is checked against the hash it was asked for: a segment ends
with its bodies' digests back to back (one bytes value after the bodies, which
readers that index by position never reach), and a body is compared with the
digest at its position; a loose body, or one in a segment written without
digests, is hashed again. A damaged place gives
:class:`~ctxflow.errors.CorruptCheckpoint`, never another session's message.

A body the store holds but cannot read (damaged bytes, a lost segment) is
written again when a checkpoint carries it: :meth:`BodySegments.unreadable`
finds them, :meth:`BodySegments.add` rewrites them loose.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ctxflow.errors import CorruptCheckpoint
from ctxflow.persistence._bodies import body_hash
from ctxflow.persistence._codec import read_envelope
from ctxflow.persistence._manifest import pack_hashes, unpack_hashes
from ctxflow.persistence._sqlite.schema import Part, select_in

__all__ = ["SEGMENT_BODIES", "BodySegments"]

#: Loose bodies packed into one segment at once (one lz4 frame compresses their
#: shared keys and text far better than one frame per body).
SEGMENT_BODIES = 64


#: A segment as read: its bodies in position order, and their digests (None when the
#: segment was written without them).
Segment = tuple[list[Any], list[str] | None]


@attrs.frozen(kw_only=True)
class BodySegments(Part):
    """The bodies of one SQLite store: write, find, decode, reference and collect them."""

    #: How many loose bodies make a segment.
    size: int

    def add(self, bodies: Mapping[str, bytes]) -> None:
        """Store bodies loose, then pack if due.

        A hash already held is one the store could not read (see
        :meth:`unreadable`): its row is pointed at the new loose copy, and a
        segment left with no body in it is dropped.
        """
        left: set[int] = set()
        for digest, data in bodies.items():
            cursor = self.db.execute("INSERT OR IGNORE INTO bodies (hash) VALUES (?)", (digest,))
            if cursor.rowcount:
                self.db.execute(
                    "INSERT INTO loose (id, data) VALUES (?, ?)", (cursor.lastrowid, data)
                )
                continue
            body, segment = self.db.execute(
                "SELECT id, segment FROM bodies WHERE hash = ?", (digest,)
            ).fetchone()
            self.db.execute("UPDATE bodies SET segment = NULL, pos = NULL WHERE id = ?", (body,))
            self.db.execute("INSERT OR REPLACE INTO loose (id, data) VALUES (?, ?)", (body, data))
            if type(segment) is int:
                left.add(segment)
        for segment in sorted(left):
            self.db.execute(
                "DELETE FROM segments WHERE id = ? AND NOT EXISTS "
                "(SELECT 1 FROM bodies WHERE segment = ?)",
                (segment, segment),
            )
        if bodies:
            self._pack()

    def present(self, hashes: Iterable[str]) -> set[str]:
        """Which of these hashes are stored."""
        sql = "SELECT hash FROM bodies WHERE hash IN ({marks})"
        return {r[0] for r in select_in(self.db, sql, sorted(hashes))}

    def unreadable(self, hashes: Iterable[str]) -> set[str]:
        """Which of these stored bodies sit in bytes that fail their checksum, or nowhere.

        Only the envelopes' checksums are checked (nothing is decompressed): this
        runs on the put path, for the bodies a checkpoint carries that the store
        holds already. A body in intact bytes but at a wrong place is caught when
        it is loaded (module docstring).
        """
        rows = self._placing(hashes)
        bad = set()
        segments = {row[1] for row in rows if type(row[1]) is int}
        intact = {
            int(key)
            for key, data in select_in(
                self.db, "SELECT id, data FROM segments WHERE id IN ({marks})", sorted(segments)
            )
            if self._intact(bytes(data))
        }
        for digest, segment, pos, loose in rows:
            if segment is None:
                ok = loose is not None and self._intact(bytes(loose))
            else:
                ok = segment in intact and type(pos) is int and pos >= 0
            if not ok:
                bad.add(digest)
        return bad

    def _intact(self, data: bytes) -> bool:
        """True when ``data`` is an envelope this codec reads whose checksum matches."""
        try:
            envelope = read_envelope(data, max_size=self.codec.max_size)
        except CorruptCheckpoint:
            return False
        return envelope.version <= self.codec.version and envelope.tags == self.codec.tags

    def ids(self, hashes: Iterable[str]) -> dict[str, int]:
        """The row ids of these body hashes (those stored)."""
        sql = "SELECT hash, id FROM bodies WHERE hash IN ({marks})"
        return {r[0]: r[1] for r in select_in(self.db, sql, sorted(hashes))}

    def decoded(self, hashes: Iterable[str]) -> dict[str, Any]:
        """The decoded bodies present under these hashes (each checked against its hash)."""
        return self.decode_placed(self._placing(hashes), None)

    def of_session(self, session: int) -> list[Any]:
        """(hash, segment, pos, loose data, row id) of every body a session references.

        A session references every body its checkpoints name, so one range scan of its
        references finds a checkpoint's bodies, instead of a lookup per hash.
        """
        return self.db.execute(
            "SELECT b.hash, b.segment, b.pos, l.data, b.id FROM session_bodies r "
            "JOIN bodies b ON b.id = r.body LEFT JOIN loose l ON l.id = b.id "
            "WHERE r.session = ?",
            (session,),
        ).fetchall()

    def decode_placed(self, rows: list[Any], wanted: Collection[str] | None) -> dict[str, Any]:
        """Decode bodies from placing rows (only the ``wanted`` ones, when given), each
        checked against its hash (module docstring)."""
        found: dict[str, Any] = {}
        placed = []
        for row in rows:
            if wanted is not None and row[0] not in wanted:
                continue
            if row[1] is not None:
                placed.append(row)
            elif row[3] is not None:
                body = self.codec.decode(bytes(row[3]))
                if body_hash(body) != row[0]:
                    raise _misplaced(row[0], "its loose row")
                found[row[0]] = body
        # Each segment is read for the positions wanted of it, the others skipped unread.
        positions: dict[int, set[int]] = {}
        for row in placed:
            if type(row[1]) is int and type(row[2]) is int:
                positions.setdefault(row[1], set()).add(row[2])
        segments = self._segments(sorted(positions), positions)
        for digest, segment, pos, *_ in placed:
            bodies, digests = segments.get(segment, ([], None))
            if type(pos) is not int or not 0 <= pos < len(bodies):
                raise CorruptCheckpoint(
                    f"body {digest!r} must be inside segment {segment} "
                    f"(position {pos} of {len(bodies)})",
                    rule="segment",
                    segment=segment,
                )
            body = bodies[pos]
            if (digests[pos] if digests is not None else body_hash(body)) != digest:
                raise _misplaced(digest, f"segment {segment} position {pos}")
            found[digest] = body
        return found

    def segment(self, segment: int) -> list[Any]:
        """The decoded bodies of one segment, in position order; typed errors when damaged."""
        row = self.db.execute("SELECT data FROM segments WHERE id = ?", (segment,)).fetchone()
        return [] if row is None else self._segment_value(segment, bytes(row[0]))[0]

    def reference(self, session: int, hashes: Iterable[str]) -> None:
        """Record that ``session`` references the stored bodies of these hashes."""
        self.db.executemany(
            "INSERT OR IGNORE INTO session_bodies (session, body) "
            "SELECT ?, id FROM bodies WHERE hash = ?",
            ((session, h) for h in hashes),
        )

    def collect(self, session: int, live: Collection[str]) -> None:
        """Drop the session's references outside ``live``; delete bodies nobody references."""
        held = self.db.execute(
            "SELECT b.id, b.hash FROM session_bodies r JOIN bodies b ON b.id = r.body "
            "WHERE r.session = ?",
            (session,),
        ).fetchall()
        dead = [(session, body) for body, digest in held if digest not in live]
        self.db.executemany("DELETE FROM session_bodies WHERE session = ? AND body = ?", dead)
        sql = "SELECT DISTINCT segment FROM bodies WHERE id IN ({marks}) AND segment IS NOT NULL"
        found = select_in(self.db, sql, [body for _, body in dead])
        touched = {r[0] for r in found if type(r[0]) is int}
        for _, body in dead:
            cursor = self.db.execute(
                "DELETE FROM bodies WHERE id = ? AND NOT EXISTS "
                "(SELECT 1 FROM session_bodies WHERE body = ?)",
                (body, body),
            )
            if cursor.rowcount:
                self.db.execute("DELETE FROM loose WHERE id = ?", (body,))
        for segment in sorted(touched):
            self._shrink(segment)

    def _placing(self, hashes: Iterable[str]) -> list[Any]:
        """The placing rows of these hashes (those stored)."""
        sql = (
            "SELECT b.hash, b.segment, b.pos, l.data FROM bodies b LEFT JOIN loose l "
            "ON l.id = b.id WHERE b.hash IN ({marks})"
        )
        return list(select_in(self.db, sql, sorted(hashes)))

    def _segments(
        self, ids: Sequence[int], positions: Mapping[int, Collection[int]]
    ) -> dict[int, Segment]:
        """The read segments, by id (missing ones left out), each with only the bodies at
        its ``positions`` built (None stands at the others)."""
        rows = select_in(self.db, "SELECT id, data FROM segments WHERE id IN ({marks})", ids)
        return {
            int(i): self._segment_value(int(i), bytes(d), positions.get(int(i), ()))
            for i, d in rows
        }

    def _segment_value(
        self, segment: int, data: bytes, positions: Collection[int] | None = None
    ) -> Segment:
        value = (
            self.codec.decode(data)
            if positions is None
            else self.codec.decode_items(data, positions)
        )
        if not isinstance(value, list):
            raise CorruptCheckpoint(
                f"segment {segment} must be a list of bodies (got {type(value).__name__})",
                rule="segment",
                segment=segment,
            )
        if not value or not isinstance(value[-1], bytes):
            return value, None
        try:
            digests = unpack_hashes(value[-1])
        except ValueError:
            digests = []
        if len(digests) != len(value) - 1:
            raise CorruptCheckpoint(
                f"segment {segment} must end with one digest per body "
                f"(got {len(digests)} for {len(value) - 1})",
                rule="segment",
                segment=segment,
            )
        return value[:-1], digests

    @staticmethod
    def _stored(bodies: list[Any], hashes: list[str]) -> list[Any]:
        """A segment's value as stored: the bodies, then their digests back to back."""
        packed = pack_hashes(hashes)
        return [*bodies, packed] if isinstance(packed, bytes) else bodies

    def _pack(self) -> None:
        """Move the loose bodies into one new segment once enough have accumulated.

        A loose body that cannot be read stays loose (its checkpoints raise
        ``CorruptCheckpoint``; a checkpoint carrying it again rewrites it).
        """
        (count,) = self.db.execute("SELECT count(*) FROM loose").fetchone()
        if count < self.size:
            return
        rows = []
        packed = []
        for row in self.db.execute(
            "SELECT b.id, b.hash, l.data FROM loose l JOIN bodies b ON b.id = l.id ORDER BY l.id"
        ).fetchall():
            try:
                packed.append(self.codec.decode(bytes(row[2])))
            except CorruptCheckpoint:
                continue
            rows.append(row)
        if not rows:
            return
        value = self._stored(packed, [row[1] for row in rows])
        cursor = self.db.execute(
            "INSERT INTO segments (data) VALUES (?)", (self.codec.encode(value),)
        )
        segment = int(cursor.lastrowid or 0)
        self.db.executemany(
            "UPDATE bodies SET segment = ?, pos = ? WHERE id = ?",
            ((segment, pos, row[0]) for pos, row in enumerate(rows)),
        )
        self.db.executemany("DELETE FROM loose WHERE id = ?", ((body,) for body, _, _ in rows))

    def _shrink(self, segment: int) -> None:
        """Drop a segment no body row points to; else rewrite it without deleted bodies.

        Rewriting (not just keeping) a shared segment is what makes erasure real:
        an erased session's bodies must not survive inside a segment another
        session still reads. A segment that cannot be read is dropped whole: the
        bodies left in it were unreadable already, and erasure must not wait on them.
        """
        kept = self.db.execute(
            "SELECT id, pos, hash FROM bodies WHERE segment = ? ORDER BY pos", (segment,)
        ).fetchall()
        if not kept:
            self.db.execute("DELETE FROM segments WHERE id = ?", (segment,))
            return
        try:
            packed = self.segment(segment)
        except CorruptCheckpoint:
            self.db.execute("DELETE FROM segments WHERE id = ?", (segment,))
            return
        # A row placed outside the segment lost its body already: it keeps its place.
        inside = [row for row in kept if type(row[1]) is int and 0 <= row[1] < len(packed)]
        if len(inside) < len(packed):
            rest = self._stored([packed[pos] for _, pos, _ in inside], [h for _, _, h in inside])
            self.db.execute(
                "UPDATE segments SET data = ? WHERE id = ?", (self.codec.encode(rest), segment)
            )
            self.db.executemany(
                "UPDATE bodies SET pos = ? WHERE id = ?",
                ((new, body) for new, (body, _, _) in enumerate(inside)),
            )


def _misplaced(digest: str, place: str) -> CorruptCheckpoint:
    """The error for a place that holds another body than the one asked for."""
    return CorruptCheckpoint(
        f"body {digest!r} must be the body stored at its place ({place} holds another)",
        rule="body_hash",
        body=digest,
    )
