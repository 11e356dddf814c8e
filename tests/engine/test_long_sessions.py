"""What a long session keeps: a bounded ring of step records, and an opt-in frozen heap."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ctxflow.engine import KEEP_RECORDS, Engine, StepRecords
from ctxflow.errors import PolicyError
from ctxflow.model import Message
from ctxflow.persistence import MemoryStore
from ctxflow.testing import FixedCounter


def _stepped(engine: Engine, steps: int) -> None:
    engine.send("start", task="t")
    engine.send("plan_ready")
    for n in range(steps):
        engine.add_messages([Message.user(f"q{n}"), Message.assistant(f"a{n}")])
        engine.send("step")


def test_records_keep_the_latest_only() -> None:
    """An engine keeps its latest ``keep_records`` records; indexes stay absolute."""
    engine = Engine(counter=FixedCounter(), keep_records=3)
    _stepped(engine, 5)
    assert engine.records.total == 7
    assert len(engine.records) == 3
    assert [r.index for r in engine.records] == [4, 5, 6]
    assert engine.records[-1].trigger == "step"
    assert [r.index for r in engine.records.since(5)] == [5, 6]
    assert engine.records.since(0) == list(engine.records)
    assert engine.records[1:] == list(engine.records)[1:]


def test_the_default_ring_is_large() -> None:
    """By default the ring holds KEEP_RECORDS records and compares as a list."""
    engine = Engine(counter=FixedCounter())
    assert engine.records.keep == KEEP_RECORDS
    assert engine.records == []
    _stepped(engine, 2)
    assert engine.records == list(engine.records)
    assert engine.records != [engine.records[0]]


@pytest.mark.parametrize("keep", [0, -1, True, 2.5, "3"])
def test_a_bad_ring_size_is_refused(keep: object) -> None:
    """A ring size that is not a positive integer is a PolicyError naming it."""
    with pytest.raises(PolicyError) as info:
        StepRecords(keep)  # type: ignore[arg-type]
    assert info.value.rule == "keep_records"
    with pytest.raises(PolicyError):
        Engine(keep_records=keep)  # type: ignore[arg-type]


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the collector as it was."""
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_freeze_gc_freezes_after_a_restore_only_when_asked() -> None:
    """``freeze_gc=True`` freezes the heap after opening a checkpoint; the default does not."""
    store = MemoryStore()
    engine = Engine(counter=FixedCounter(), store=store)
    _stepped(engine, 3)
    engine.checkpoint("manual")
    gc.unfreeze()
    Engine.from_checkpoint(counter=FixedCounter(), store=store, session_id=engine.session_id)
    assert gc.get_freeze_count() == 0
    opened = Engine.from_checkpoint(
        counter=FixedCounter(), store=store, session_id=engine.session_id, freeze_gc=True
    )
    assert gc.get_freeze_count() > 0
    gc.unfreeze()
    opened.restore(opened.checkpoint_ids[-1])
    assert gc.get_freeze_count() > 0
    with pytest.raises(PolicyError):
        Engine(freeze_gc="yes")  # type: ignore[arg-type]
