"""Every corpus conversation compressed to 10%, 25% and 50% of its compressible tokens."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import pytest

from ctxflow.compression import Ladder, recall
from ctxflow.errors import BudgetExceeded, CtxflowWarning
from ctxflow.layers import LayeredState
from ctxflow.model import Message, Role, Transcript, check

pytestmark = pytest.mark.corpus


@pytest.mark.parametrize("fraction", [0.10, 0.25, 0.50])
def test_corpus_compresses_with_zero_violations(
    transcripts: Sequence[Transcript], measure: Callable[[Message], int], fraction: float
) -> None:
    """No compressed view breaks an API rule; a raise leaves the conversation untouched."""
    reached = raised = 0
    for transcript in transcripts:
        conversation = transcript.conversation(measure=measure)
        view = conversation.effective()
        fixed = sum(
            conversation.tokens(m.id)
            for m in view[:2]
            if m.role is Role.SYSTEM or m.role is Role.USER
        )
        compressible = conversation.effective_tokens - fixed
        budget = max(1, int(fraction * compressible / 0.5))
        tags = [(m.condense_parent, m.truncation_parent) for m in conversation]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CtxflowWarning)
            try:
                report = (
                    Ladder().run(conversation, LayeredState(), budget=budget, fixed=fixed).report
                )
            except BudgetExceeded:
                raised += 1
                assert [(m.condense_parent, m.truncation_parent) for m in conversation] == tags
                assert not conversation.overlays
                continue
        assert len(caught) == (not report.reached_target)  # one CtxflowWarning when short
        for api in ("anthropic", "openai"):
            outcome = check(conversation.effective(), api=api)  # type: ignore[arg-type]
            assert outcome.ok, (transcript.id, outcome.violations[:3])
        assert report.tokens_after <= report.hard_limit
        reached += report.reached_target
        for original in transcript.messages:
            assert recall(conversation, original.id).content == original.content
    assert raised <= len(transcripts) // 10
    assert reached >= len(transcripts) * 0.8


def test_the_868_kb_diff_is_trimmed_not_sinking_the_window(
    transcripts: Sequence[Transcript], measure: Callable[[Message], int]
) -> None:
    """The psf/requests stress case fits 10% of its compressible tokens with its diff trimmed."""
    transcript = next(t for t in transcripts if t.id.endswith("psf__requests-1142"))
    conversation = transcript.conversation(measure=measure)
    biggest = max(transcript.messages, key=lambda m: conversation.tokens(m.id))
    fixed = sum(conversation.tokens(m.id) for m in conversation.effective()[:2])
    budget = int(0.10 * (conversation.effective_tokens - fixed) / 0.5)
    report = Ladder().run(conversation, LayeredState(), budget=budget, fixed=fixed).report
    assert report.reached_target
    assert report.rungs_used[0] == "trim"
    shown = conversation.get(biggest.id).tool_results[0].text
    assert "trimmed by ctxflow; recall the whole result by its call id" in shown
    call_id = biggest.tool_results[0].tool_use_id
    assert recall(conversation, call_id).id == biggest.id
    assert len(recall(conversation, biggest.id).tool_results[0].text) > 800_000
