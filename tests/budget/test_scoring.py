"""Priority scores: categories and reasons."""

import pytest

from ctxflow.budget import Category, ScoreWeights, keywords, score_message
from ctxflow.errors import PolicyError
from ctxflow.model import SUMMARY_OF, Message


def test_important_and_first_user_are_critical() -> None:
    """Pinned messages and the task message are critical, with a reason saying so."""
    pinned = score_message(Message.user("x", important=True), position=0, count=10)
    assert pinned.category is Category.CRITICAL
    assert "important (pinned)" in pinned.reasons
    task = score_message(Message.user("x"), position=0, count=10, first_user=True)
    assert task.category is Category.CRITICAL


def test_signals_add_up_with_reasons() -> None:
    """Recency, task keywords and decisions raise a score; each contribution is explained."""
    words = keywords("Fix the tokenizer crash in parser module")
    message = Message.assistant("We decided to patch the tokenizer parser first.")
    score = score_message(message, position=9, count=10, task_words=words)
    assert score.category is Category.IMPORTANT
    assert any(r.startswith("task keywords") for r in score.reasons)
    assert any(r.startswith("decision") for r in score.reasons)
    old = score_message(Message.assistant("hm"), position=0, count=10, task_words=words)
    assert old.category is Category.LOW
    assert old.value < score.value


def test_condensed_messages_are_penalised() -> None:
    """A summary (already condensed) scores lower than the same text uncondensed."""
    plain = Message.user("status report")
    summary = Message.user("status report", metadata={SUMMARY_OF: ["a"]})
    assert (
        score_message(summary, position=1, count=2).value
        < score_message(plain, position=1, count=2).value
    )


def test_weights_are_validated() -> None:
    """A NaN weight raises PolicyError."""
    with pytest.raises(PolicyError):
        ScoreWeights(recency=float("nan"))
