"""Step records: one frozen value per event the engine applied, kept for inspection and tests.

A record says which event moved which phase and what the move did: the
allocation per layer before and after, the checkpoint written (its id and
trigger), the compression report, whether memory was consolidated or a
checkpoint restored, the token counts around the step, and how long it took.
Records are values: comparing two runs is comparing two lists.

An engine keeps its records in a :class:`StepRecords` ring: the latest
``keep`` of them (:data:`KEEP_RECORDS` by default), so a session of a million
events holds a bounded number; the full history is in the checkpoints and the
audit log. ``total`` counts every record ever kept, and a record's ``index``
is its place among them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import attrs

from ctxflow.errors import PolicyError

__all__ = ["KEEP_RECORDS", "StepRecord", "StepRecords"]

#: How many step records an engine keeps by default.
KEEP_RECORDS = 1_000


def _frozen(value: Mapping[str, int] | None) -> Mapping[str, int]:
    return dict(value) if value else {}


@attrs.frozen(kw_only=True)
class StepRecord:
    """What one event did to the engine.

    ``source`` and ``target`` are phases (atomic states); ``target`` equals
    ``source`` for a targetless (internal) transition such as ``step``, and
    ``phase_changed`` tells the two apart. ``allocation_before`` and
    ``allocation_after`` map layer names to token integers (empty when no
    allocator is configured). ``compression`` is the guard's report, or None
    when the guard did not run the ladder.
    """

    index: int
    trigger: str
    source: str
    target: str
    phase_changed: bool
    configuration: tuple[str, ...]
    allocation_before: Mapping[str, int] = attrs.field(factory=dict, converter=_frozen)
    allocation_after: Mapping[str, int] = attrs.field(factory=dict, converter=_frozen)
    checkpoint_id: str | None = None
    checkpoint_trigger: str | None = None
    compression: Any = None
    consolidated: bool = False
    restored_from: str | None = None
    tokens_before: int = 0
    tokens_after: int = 0
    duration_ms: float = attrs.field(default=0.0, eq=False)

    @property
    def reallocated(self) -> bool:
        """True when the phase was entered and its budget reallocated."""
        return self.phase_changed and bool(self.allocation_after)

    @property
    def compressed(self) -> bool:
        """True when the compression guard ran the ladder."""
        return self.compression is not None


class StepRecords(Sequence[StepRecord]):
    """The latest ``keep`` step records, oldest first (a list-like ring).

    Indexing and slicing address the records kept; ``total`` counts every
    record appended, and :meth:`since` gives those from an absolute ``index``
    on. Compares equal to a sequence holding the same records.
    """

    __slots__ = ("_items", "total")

    def __init__(self, keep: int = KEEP_RECORDS) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise PolicyError(
                f"'keep_records' must be a positive integer (got {keep!r})", rule="keep_records"
            )
        self._items: deque[StepRecord] = deque(maxlen=keep)
        self.total = 0

    @property
    def keep(self) -> int:
        """How many records the ring holds at most."""
        return self._items.maxlen or 0

    def append(self, record: StepRecord) -> None:
        """Keep ``record`` (the oldest kept one goes when the ring is full)."""
        self._items.append(record)
        self.total += 1

    def since(self, index: int) -> list[StepRecord]:
        """The kept records whose ``index`` is ``index`` or later, oldest first."""
        first = self.total - len(self._items)
        return list(self._items)[max(0, index - first) :]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[StepRecord]:
        return iter(self._items)

    @overload
    def __getitem__(self, at: int) -> StepRecord: ...

    @overload
    def __getitem__(self, at: slice) -> list[StepRecord]: ...

    def __getitem__(self, at: int | slice) -> StepRecord | list[StepRecord]:
        if isinstance(at, slice):
            return list(self._items)[at]
        return self._items[at]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return list(self._items) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<StepRecords kept={len(self._items)} total={self.total} keep={self.keep}>"
