"""The engine on the real compression ladder: guard on steps and transitions, rollback, memory."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ctxflow import errors
from ctxflow.compression import CompressionReport, Ladder, LadderPolicy
from ctxflow.engine import PhaseConfig
from ctxflow.model import Message, ToolResultBlock, ToolUseBlock
from ctxflow.persistence import CheckpointRecord
from ctxflow.testing._engine import TransitionRecorder, assert_transition
from tests.engine.conftest import Driver

Make = Callable[..., Driver]


def tool_loop(n: int) -> list[Message]:
    out = [Message.system("You are an agent."), Message.user("Fix the failing dates test.")]
    for i in range(n):
        out.append(
            Message(
                role="assistant",
                content=(ToolUseBlock(id=f"u{i}", name="search", input={"q": f"q{i}"}),),
            )
        )
        out.append(
            Message(
                role="user",
                content=(ToolResultBlock(tool_use_id=f"u{i}", content=f"log line {i} " * 60),),
            )
        )
    return out


def running(make: Make, budget: int, **kwargs: object) -> Driver:
    d = make(budget=budget, **kwargs)
    d.send("start", task="fix it")
    d.send("plan_ready")
    return d


def test_guard_fires_on_a_step_and_the_ladder_runs_to_target(make: Make) -> None:
    """Over the threshold, a step runs the ladder: tokens drop, pairs stay valid, report kept."""
    recorder = TransitionRecorder()
    d = running(make, 1500, listeners=[recorder])
    d.engine.add_messages(tool_loop(20))
    before = d.engine.conversation.effective_tokens
    d.send("step")
    record = assert_transition(
        d.engine, "step", to="execution", compressed=True, within_budget=True, pairs_intact=True
    )
    report = record.compression
    assert isinstance(report, CompressionReport)
    assert report.reached_target
    assert record.tokens_before == before > record.tokens_after
    assert len(d.engine.conversation) == 42  # tagged, not deleted
    assert recorder.compressions == [(report, "execution")]


def test_guard_does_not_fire_under_the_threshold(make: Make) -> None:
    """Under the threshold a step leaves the conversation alone."""
    d = running(make, 6000)
    d.engine.add_messages(tool_loop(20))
    d.send("step")
    assert_transition(d.engine, "step", compressed=False)


def test_guard_runs_against_the_new_phase_before_it_lands(make: Make) -> None:
    """A transition into a phase with a tighter policy compresses for that phase first."""
    tight = LadderPolicy(threshold=0.2, target=0.1)
    d = running(make, 6000, phases={"reflection": PhaseConfig(compression_policy=tight)})
    d.engine.add_messages(tool_loop(20))
    d.send("step")
    assert_transition(d.engine, "step", compressed=False)
    d.send("reflect")
    record = assert_transition(d.engine, "reflect", to="reflection", compressed=True)
    assert record.tokens_after < record.tokens_before
    assert d.engine.ladder("reflection").policy is tight


def test_hard_limit_unreachable_refuses_the_event_and_changes_nothing(make: Make) -> None:
    """When the last turn alone exceeds the hard limit, BudgetExceeded leaves everything as is."""
    d = running(make, 300)
    d.engine.add_messages(
        [*tool_loop(3)[1:], Message.assistant("ok"), Message.user("word " * 2000)]
    )
    view = [m.id for m in d.engine.conversation.effective()]
    tokens = d.engine.conversation.effective_tokens
    with pytest.raises(errors.BudgetExceeded):
        d.send("reflect")
    assert d.engine.phase == "execution"
    assert [m.id for m in d.engine.conversation.effective()] == view
    assert d.engine.conversation.effective_tokens == tokens


def test_a_rolled_back_compression_is_undone(make: Make) -> None:
    """If the checkpoint after a compressing transition fails, the ladder's tags are undone."""
    from ctxflow.engine import StoreCheckpointer
    from ctxflow.stores import MemoryStore

    class Refusing(StoreCheckpointer):
        def capture(self, conversation: object, **kw: object) -> CheckpointRecord:
            if kw["phase"] == "reflection":
                raise errors.StaleCheckpoint("moved on", rule="stale")
            return super().capture(conversation, **kw)  # type: ignore[arg-type]

    tight = LadderPolicy(threshold=0.2, target=0.1)
    d = running(
        make,
        6000,
        checkpointer=Refusing(MemoryStore()),
        phases={"reflection": PhaseConfig(compression_policy=tight)},
    )
    d.engine.add_messages(tool_loop(20))
    view = [m.id for m in d.engine.conversation.effective()]
    with pytest.raises(errors.StaleCheckpoint):
        d.send("reflect")
    assert [m.id for m in d.engine.conversation.effective()] == view
    assert d.engine.phase == "execution"


def test_reflection_flushes_stated_decisions_into_memory(make: Make) -> None:
    """Entering reflection keeps decisions stated in the conversation as semantic facts."""
    d = running(make, 6000)
    d.engine.add_messages(
        [Message.user("go on"), Message.assistant("Decision: use port 8231 for the test server.")]
    )
    d.send("reflect")
    assert_transition(d.engine, "reflect", to="reflection")
    values = [f.value for f in d.engine.state.memory.semantic]
    assert any("8231" in v for v in values)


def test_phase_compression_policy_must_be_a_ladder_policy(make: Make) -> None:
    """A compression policy of the wrong type is refused when the engine is built."""
    with pytest.raises(errors.PolicyError, match="LadderPolicy"):
        make(phases={"execution": PhaseConfig(compression_policy=0.5)})
    ladder = Ladder()
    d = make(phases={"execution": PhaseConfig(compression_policy=ladder)})
    assert d.engine.ladder("execution") is ladder
