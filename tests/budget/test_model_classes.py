"""Model classes in the budget: the family's class, not the window, moves the allocation."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxflow.budget import Window, build_window, plan_budget, window_measure
from ctxflow.layers import Layer
from ctxflow.model import Conversation, Message, read_transcripts
from ctxflow.testing import FixedCounter
from ctxflow.tokens import get_profile

from .conftest import state_for

COUNTER = FixedCounter()
TRANSCRIPT = Path(__file__).parents[2] / "examples" / "transcripts" / "openhands-ponyc-4588.jsonl"


@pytest.fixture(scope="module")
def messages() -> tuple[Message, ...]:
    """The bundled OpenHands transcript (100 messages)."""
    return next(iter(read_transcripts(TRANSCRIPT))).messages


def _window(model: str, messages: tuple[Message, ...], budget: int) -> Window:
    conversation = Conversation(messages, measure=window_measure(COUNTER))
    return build_window(
        state_for(),
        conversation,
        phase="execution",
        counter=COUNTER,
        profile=get_profile(model),
        budget=budget,
    )


def test_opus_and_haiku_windows_differ(messages: tuple[Message, ...]) -> None:
    """Same budget, same conversation: Opus keeps more evidence, Haiku more work buffer."""
    opus = _window("claude-opus-4", messages, 8_000)
    haiku = _window("claude-haiku-4-5", messages, 8_000)
    assert (opus.report.allocation.model_class, haiku.report.allocation.model_class) == (
        "large",
        "small",
    )
    big, small = opus.report.allocation.layers, haiku.report.allocation.layers
    assert big[Layer.EVIDENCE] > small[Layer.EVIDENCE]
    assert big[Layer.MEMORY] > small[Layer.MEMORY]
    assert big[Layer.WORK] < small[Layer.WORK]
    assert opus.messages != haiku.messages
    assert opus.tokens <= 8_000 and haiku.tokens <= 8_000


@pytest.mark.parametrize("phase", ["planning", "execution", "reflection"])
def test_providers_differ_where_their_classes_differ(phase: str) -> None:
    """Sonnet, GPT-3.5 and Gemini Pro allocate apart; models of one class alike, whatever window."""

    def layers(model: str) -> dict[Layer, int]:
        plan = plan_budget(
            state_for(), phase=phase, counter=COUNTER, profile=get_profile(model), budget=10_000
        )
        return dict(plan.layers)

    sonnet, turbo, pro = (
        layers("claude-sonnet-4-5"),
        layers("gpt-3.5-turbo"),
        layers("gemini-2.5-pro"),
    )
    assert sonnet != turbo and sonnet != pro and turbo != pro
    assert turbo[Layer.WORK] >= sonnet[Layer.WORK]  # planning clamps the work buffer at 0
    assert pro[Layer.EVIDENCE] > sonnet[Layer.EVIDENCE]
    assert layers("gpt-4o") == sonnet
    assert layers("gpt-4o-mini") == turbo  # small by family, though its window is 128k
    assert layers("gemini-2.5-flash") == turbo  # small by family, though its window is 1M


def test_a_dated_id_allocates_as_its_family() -> None:
    """A dated Haiku id gets Haiku's allocation, and its class is recorded."""
    dated = plan_budget(
        state_for(),
        phase="execution",
        counter=COUNTER,
        profile=get_profile("claude-haiku-4-5-20251001"),
    )
    family = plan_budget(
        state_for(), phase="execution", counter=COUNTER, profile=get_profile("claude-haiku-4-5")
    )
    assert dated.model_class == "small"
    assert dated == family
