"""Step records: one frozen value per event the engine applied, kept for inspection and tests.

A record says which event moved which phase and what the move did: the
allocation per layer before and after, the checkpoint written (its id and
trigger), the compression report, whether memory was consolidated or a
checkpoint restored, the token counts around the step, and how long it took.
Records are values: comparing two runs is comparing two lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["StepRecord"]


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
