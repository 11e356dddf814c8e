"""Tests for the memory tiers in a replay's per-turn records and its totals."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from ctxflow.engine import Engine
from ctxflow.layers import LayeredState
from ctxflow.replay.inputs import read_run_input
from ctxflow.replay.runner import LONG_TERM_TIERS, TIERS, RunResult, TurnRecord, replay
from ctxflow.stores import MemoryStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "transcripts"
PONY = EXAMPLES / "openhands-ponyc-4588.jsonl"


def _replay(budget: int) -> RunResult:
    def factory(state: LayeredState) -> Engine:
        return Engine(state=state, budget=budget, store=MemoryStore())

    return replay(read_run_input(str(PONY)), engine_factory=factory)


@pytest.fixture(scope="module")
def tight() -> RunResult:
    """A replay at a budget small enough that consolidation writes long-term memory."""
    return _replay(4_000)


def test_every_turn_records_all_four_tiers(tight: RunResult) -> None:
    """Each turn's record and its plain form name every tier, zeros included."""
    assert TIERS == ("short_term", "episodic", "semantic", "procedural")
    for turn in tight.turns:
        assert tuple(turn.tiers) == TIERS
        assert turn.to_plain()["tiers"] == dict(turn.tiers)
        assert sum(turn.tiers.values()) == turn.layers["memory"]["used"]


def test_tight_replay_carries_long_term_memory(tight: RunResult) -> None:
    """At 4,000 tokens compression flushes memory, and later windows carry it."""
    assert tight.ok
    carrying = [t for t in tight.turns if t.long_term_tokens > 0]
    assert carrying, "consolidation wrote no long-term memory a window carried"
    assert not tight.turns[0].long_term_tokens  # nothing is remembered before the first turn
    first = next(t.turn for t in tight.turns if t.compression or t.phase == "reflection")
    assert all(t.turn >= first for t in carrying)


def test_memory_totals_agree_with_the_turns(tight: RunResult) -> None:
    """The summary's per-tier counts and peaks are those of the per-turn records."""
    memory = tight.totals()["memory"]
    assert memory["windows"] == len(tight.turns)
    for name in TIERS:
        used = [t.tiers[name] for t in tight.turns]
        assert memory["tiers"][name] == {
            "windows": sum(u > 0 for u in used),
            "max_tokens": max(used),
        }
    with_memory = sum(any(t.tiers[n] for n in LONG_TERM_TIERS) for t in tight.turns)
    assert memory["windows_with_long_term_memory"] == with_memory > 0
    after = memory["windows_after_first_compression_or_reflection"]
    carried = memory["windows_with_long_term_memory_after_first_compression_or_reflection"]
    assert 0 < carried <= after < len(tight.turns)
    assert memory["first_compression_or_reflection_turn"] == len(tight.turns) - after + 1


def _turn(
    turn: int, *, phase: str = "execution", compressed: bool = False, **tiers: int
) -> TurnRecord:
    return TurnRecord(
        turn=turn,
        phase=phase,
        events=(),
        window_tokens=100,
        input_budget=1_000,
        messages_in_window=1,
        layers={},
        compression={"rungs": ["clear"]} if compressed else None,
        checkpoint=None,
        valid=True,
        violations=(),
        within_budget=True,
        tiers={name: tiers.get(name, 0) for name in TIERS},
    )


def _result(*turns: TurnRecord) -> RunResult:
    return RunResult(
        conversation_id="c",
        model="m",
        session_id="s",
        turns=turns,
        messages=len(turns),
        compressions=sum(t.compression is not None for t in turns),
        checkpoints=0,
        final_phase="done",
    )


def test_after_a_compression_counts_its_own_window() -> None:
    """A compression runs before its turn's window, so that window is after it."""
    memory = _result(
        _turn(1, short_term=50),
        _turn(2, compressed=True, semantic=30),
        _turn(3, semantic=30, episodic=10),
        _turn(4),
    ).totals()["memory"]
    assert memory["first_compression_or_reflection_turn"] == 2
    assert memory["windows_after_first_compression_or_reflection"] == 3
    assert memory["windows_with_long_term_memory_after_first_compression_or_reflection"] == 2
    assert memory["windows_with_long_term_memory"] == 2
    assert memory["tiers"]["episodic"] == {"windows": 1, "max_tokens": 10}
    assert memory["tiers"]["short_term"] == {"windows": 1, "max_tokens": 50}
    assert memory["tiers"]["procedural"] == {"windows": 0, "max_tokens": 0}


def test_after_a_reflection_counts_the_windows_that_follow_it() -> None:
    """A reflection turn's own window comes before the memory it consolidates."""
    memory = _result(
        _turn(1),
        _turn(2, phase="reflection"),
        _turn(3, procedural=40),
    ).totals()["memory"]
    assert memory["first_compression_or_reflection_turn"] == 2
    assert memory["windows_after_first_compression_or_reflection"] == 1
    assert memory["windows_with_long_term_memory_after_first_compression_or_reflection"] == 1


def test_no_compression_or_reflection() -> None:
    """Without either, no window is after one, and the first turn is None."""
    memory = _result(_turn(1), _turn(2)).totals()["memory"]
    assert memory["first_compression_or_reflection_turn"] is None
    assert memory["windows_after_first_compression_or_reflection"] == 0
    assert memory["windows_with_long_term_memory"] == 0
    assert _result().totals()["memory"]["tiers"]["semantic"] == {"windows": 0, "max_tokens": 0}


def test_a_record_without_tiers_has_no_memory() -> None:
    """A record built without tiers (an older caller) has an empty mapping and no memory."""
    record = attrs.evolve(_turn(1), tiers={})
    assert record.long_term_tokens == 0 and record.to_plain()["tiers"] == {}
    fields = {f.name for f in attrs.fields(TurnRecord) if f.default is attrs.NOTHING}
    assert "tiers" not in fields  # optional: existing constructors keep working
