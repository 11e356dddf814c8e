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
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ctxflow.errors import CorruptCheckpoint
from ctxflow.persistence._sqlite.schema import Part, select_in

__all__ = ["SEGMENT_BODIES", "BodySegments"]

#: Loose bodies packed into one segment at once (one lz4 frame compresses their
#: shared keys and text far better than one frame per body).
SEGMENT_BODIES = 64


@attrs.frozen(kw_only=True)
class BodySegments(Part):
    """The bodies of one SQLite store: write, find, decode, reference and collect them."""

    #: How many loose bodies make a segment.
    size: int

    def add(self, bodies: Mapping[str, bytes]) -> None:
        """Store new bodies loose (a hash already held is skipped), then pack if due."""
        for digest, data in bodies.items():
            cursor = self.db.execute("INSERT OR IGNORE INTO bodies (hash) VALUES (?)", (digest,))
            if cursor.rowcount:
                self.db.execute(
                    "INSERT INTO loose (id, data) VALUES (?, ?)", (cursor.lastrowid, data)
                )
        if bodies:
            self._pack()

    def present(self, hashes: Iterable[str]) -> set[str]:
        """Which of these hashes are stored."""
        sql = "SELECT hash FROM bodies WHERE hash IN ({marks})"
        return {r[0] for r in select_in(self.db, sql, sorted(hashes))}

    def ids(self, hashes: Iterable[str]) -> dict[str, int]:
        """The row ids of these body hashes (those stored)."""
        sql = "SELECT hash, id FROM bodies WHERE hash IN ({marks})"
        return {r[0]: r[1] for r in select_in(self.db, sql, sorted(hashes))}

    def decoded(self, hashes: Iterable[str]) -> dict[str, Any]:
        """The decoded bodies present under these hashes."""
        sql = (
            "SELECT b.hash, b.segment, b.pos, l.data FROM bodies b LEFT JOIN loose l "
            "ON l.id = b.id WHERE b.hash IN ({marks})"
        )
        return self.decode_placed(list(select_in(self.db, sql, sorted(hashes))), None)

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
        """Decode bodies from placing rows (only the ``wanted`` ones, when given)."""
        found: dict[str, Any] = {}
        placed = []
        for row in rows:
            if wanted is not None and row[0] not in wanted:
                continue
            if row[1] is not None:
                placed.append(row)
            elif row[3] is not None:
                found[row[0]] = self.codec.decode(bytes(row[3]))
        segments = self._segments(sorted({row[1] for row in placed if type(row[1]) is int}))
        for digest, segment, pos, *_ in placed:
            packed = segments.get(segment, ())
            if type(pos) is not int or not 0 <= pos < len(packed):
                raise CorruptCheckpoint(
                    f"body {digest!r} must be inside segment {segment} "
                    f"(position {pos} of {len(packed)})",
                    rule="segment",
                    segment=segment,
                )
            found[digest] = packed[pos]
        return found

    def segment(self, segment: int) -> list[Any]:
        """The decoded bodies of one segment, in position order; typed errors when damaged."""
        row = self.db.execute("SELECT data FROM segments WHERE id = ?", (segment,)).fetchone()
        return [] if row is None else self._segment_value(segment, bytes(row[0]))

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
        touched = {int(r[0]) for r in select_in(self.db, sql, [body for _, body in dead])}
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

    def _segments(self, ids: Sequence[int]) -> dict[int, list[Any]]:
        """The decoded bodies of segments, by id (missing ones left out)."""
        rows = select_in(self.db, "SELECT id, data FROM segments WHERE id IN ({marks})", ids)
        return {int(i): self._segment_value(int(i), bytes(d)) for i, d in rows}

    def _segment_value(self, segment: int, data: bytes) -> list[Any]:
        value = self.codec.decode(data)
        if not isinstance(value, list):
            raise CorruptCheckpoint(
                f"segment {segment} must be a list of bodies (got {type(value).__name__})",
                rule="segment",
                segment=segment,
            )
        return value

    def _pack(self) -> None:
        """Move the loose bodies into one new segment once enough have accumulated."""
        (count,) = self.db.execute("SELECT count(*) FROM loose").fetchone()
        if count < self.size:
            return
        rows = self.db.execute(
            "SELECT b.id, b.hash, l.data FROM loose l JOIN bodies b ON b.id = l.id ORDER BY l.id"
        ).fetchall()
        packed = [self.codec.decode(bytes(data)) for _, _, data in rows]
        cursor = self.db.execute(
            "INSERT INTO segments (data) VALUES (?)", (self.codec.encode(packed),)
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
        session still reads.
        """
        kept = self.db.execute(
            "SELECT id, pos FROM bodies WHERE segment = ? ORDER BY pos", (segment,)
        ).fetchall()
        if not kept:
            self.db.execute("DELETE FROM segments WHERE id = ?", (segment,))
            return
        packed = self.segment(segment)
        if len(kept) < len(packed):
            if not all(0 <= pos < len(packed) for _, pos in kept):
                raise CorruptCheckpoint(
                    f"segment {segment} must hold every body placed in it", rule="segment"
                )
            rest = [packed[pos] for _, pos in kept]
            self.db.execute(
                "UPDATE segments SET data = ? WHERE id = ?", (self.codec.encode(rest), segment)
            )
            self.db.executemany(
                "UPDATE bodies SET pos = ? WHERE id = ?",
                ((new, body) for new, (body, _) in enumerate(kept)),
            )
