"""The checkpoint policy: which trigger fires, with an injected clock."""

from __future__ import annotations

import pytest

from ctxflow.errors import PolicyError
from ctxflow.persistence import TRIGGERS, CheckpointPolicy


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_phase_change_fires_first() -> None:
    """A phase change fires 'phase', also for the first checkpoint."""
    policy = CheckpointPolicy(every_messages=1)
    assert (
        policy.should_checkpoint(phase="planning", message_count=0, tokens=0, last=None) == "phase"
    )
    mark = policy.mark(phase="planning", message_count=0, tokens=0)
    assert (
        policy.should_checkpoint(phase="execution", message_count=5, tokens=0, last=mark) == "phase"
    )


def test_every_n_messages() -> None:
    """'messages' fires once N messages were added since the mark."""
    policy = CheckpointPolicy(every_messages=3)
    mark = policy.mark(phase="execution", message_count=10, tokens=0)
    assert (
        policy.should_checkpoint(phase="execution", message_count=12, tokens=0, last=mark) is None
    )
    assert (
        policy.should_checkpoint(phase="execution", message_count=13, tokens=0, last=mark)
        == "messages"
    )


def test_every_t_seconds_with_injected_clock() -> None:
    """'time' fires once T seconds of the injected clock passed since the mark."""
    clock = Clock()
    policy = CheckpointPolicy(every_seconds=30, clock=clock)
    mark = policy.mark(phase="execution", message_count=1, tokens=0)
    clock.now += 29.9
    assert policy.should_checkpoint(phase="execution", message_count=1, tokens=0, last=mark) is None
    clock.now += 0.1
    assert (
        policy.should_checkpoint(phase="execution", message_count=1, tokens=0, last=mark) == "time"
    )
    untimed = CheckpointPolicy(on_phase_change=False, every_seconds=1, clock=clock)
    assert untimed.should_checkpoint(phase=None, message_count=0, tokens=0, last=None) is None


def test_token_threshold_fires_once_per_crossing() -> None:
    """'tokens' fires when the count crosses the threshold upward, not again above it."""
    policy = CheckpointPolicy(token_threshold=1000)
    below = policy.mark(phase="execution", message_count=1, tokens=900)
    assert (
        policy.should_checkpoint(phase="execution", message_count=2, tokens=999, last=below) is None
    )
    assert (
        policy.should_checkpoint(phase="execution", message_count=2, tokens=1000, last=below)
        == "tokens"
    )
    above = policy.mark(phase="execution", message_count=2, tokens=1000)
    assert (
        policy.should_checkpoint(phase="execution", message_count=3, tokens=1500, last=above)
        is None
    )


def test_precedence_follows_triggers() -> None:
    """When several triggers fire, the first in TRIGGERS wins."""
    clock = Clock()
    policy = CheckpointPolicy(every_messages=1, every_seconds=1, token_threshold=10, clock=clock)
    mark = policy.mark(phase="execution", message_count=0, tokens=0)
    clock.now += 5
    assert (
        policy.should_checkpoint(phase="execution", message_count=5, tokens=50, last=mark)
        == "tokens"
    )
    assert TRIGGERS == ("phase", "tokens", "messages", "time")


def test_phase_trigger_can_be_disabled() -> None:
    """With on_phase_change off, a phase change alone fires nothing."""
    policy = CheckpointPolicy(on_phase_change=False)
    mark = policy.mark(phase="planning", message_count=0, tokens=0)
    assert policy.should_checkpoint(phase="execution", message_count=1, tokens=1, last=mark) is None


@pytest.mark.parametrize("field", ["every_messages", "every_seconds", "token_threshold"])
@pytest.mark.parametrize("value", [0, -1, "3"])
def test_bad_settings_are_refused(field: str, value: object) -> None:
    """A non-positive or non-numeric setting raises PolicyError naming the field."""
    with pytest.raises(PolicyError, match=field):
        CheckpointPolicy(**{field: value})  # type: ignore[arg-type]


def test_negative_counts_are_refused() -> None:
    """Negative message or token counts raise PolicyError."""
    with pytest.raises(PolicyError):
        CheckpointPolicy().should_checkpoint(phase=None, message_count=-1, tokens=0, last=None)
