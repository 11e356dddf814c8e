"""Explainable priority scores for messages.

A score is a sum of named parts, and every part that contributed is listed in
``reasons`` so a report can say *why* a message was kept or left out. The
category is what the selector acts on:

- ``critical``: must be in the window (an important/pinned message, the first
  user message, i.e. the task); if it cannot fit, the build fails loudly;
- ``important``: score at or above ``important_at``; preferred when the
  selector fills gaps before the recent stream;
- ``normal``: score at or above ``normal_at``;
- ``low``: the rest (never used to fill gaps).

Task relevance is keyword overlap between the message text and the task
statement (lower-cased words of four letters or more), a cheap signal that
needs no model. Scores are pure functions of their inputs, so selection stays
deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

import attrs

from ctxflow._checks import number_field
from ctxflow.model import SUMMARY_OF, Message, Role

__all__ = ["DEFAULT_WEIGHTS", "Category", "Score", "ScoreWeights", "keywords", "score_message"]

_WORD = re.compile(r"[a-z][a-z0-9_]{3,}")
_DECISION = re.compile(
    r"\b(decided|decision|we will|i will|i'll|must|commit(?:ted)?|agreed|plan is|conclusion)\b",
    re.IGNORECASE,
)
_STOP = frozenset(
    [
        "this",
        "that",
        "with",
        "from",
        "have",
        "will",
        "what",
        "when",
        "where",
        "which",
        "there",
        "their",
        "about",
        "into",
        "your",
        "they",
        "them",
        "then",
        "than",
        "were",
        "been",
        "being",
        "also",
        "only",
        "just",
        "some",
        "more",
        "most",
        "such",
        "very",
    ]
)


class Category(StrEnum):
    """What a score means to the selector."""

    CRITICAL = "critical"
    IMPORTANT = "important"
    NORMAL = "normal"
    LOW = "low"


_WEIGHT = number_field("finite", rule="policy_nan", label="score weight ")


@attrs.frozen(kw_only=True)
class ScoreWeights:
    """The weight of each scoring signal (all configurable)."""

    user: float = attrs.field(default=1.0, validator=_WEIGHT)
    assistant: float = attrs.field(default=0.5, validator=_WEIGHT)
    recency: float = attrs.field(default=2.0, validator=_WEIGHT)
    tool_content: float = attrs.field(default=0.5, validator=_WEIGHT)
    relevance: float = attrs.field(default=2.0, validator=_WEIGHT)
    decision: float = attrs.field(default=1.5, validator=_WEIGHT)
    condensed: float = attrs.field(default=-1.0, validator=_WEIGHT)
    important_at: float = attrs.field(default=3.0, validator=_WEIGHT)
    normal_at: float = attrs.field(default=1.0, validator=_WEIGHT)


#: The weights used when none are given.
DEFAULT_WEIGHTS = ScoreWeights()


@attrs.frozen(kw_only=True)
class Score:
    """A message's priority: value, category, and the reasons behind it."""

    value: float
    category: Category
    reasons: tuple[str, ...]


def keywords(text: str) -> frozenset[str]:
    """The lower-cased words of four letters or more in ``text`` (stop words removed)."""
    return frozenset(w for w in _WORD.findall(text.lower()) if w not in _STOP)


def score_message(
    message: Message,
    *,
    position: int,
    count: int,
    task_words: Iterable[str] = frozenset(),
    first_user: bool = False,
    weights: ScoreWeights | None = None,
) -> Score:
    """Score ``message`` at ``position`` of ``count`` messages (0 is the oldest)."""
    weights = weights or DEFAULT_WEIGHTS
    reasons: list[str] = []
    value = 0.0
    if message.role is Role.USER:
        value += weights.user
        reasons.append(f"user message +{weights.user:g}")
    elif message.role is Role.ASSISTANT:
        value += weights.assistant
        reasons.append(f"assistant message +{weights.assistant:g}")
    if count > 1:
        recency = weights.recency * position / (count - 1)
        value += recency
        reasons.append(f"recency +{recency:.2f}")
    if message.tool_uses or message.tool_results:
        value += weights.tool_content
        reasons.append(f"tool content {weights.tool_content:+g}")
    text = message.text
    words = task_words if isinstance(task_words, frozenset) else frozenset(task_words)
    if words and text:
        overlap = len(words & keywords(text))
        if overlap:
            relevance = weights.relevance * min(1.0, overlap / max(3, len(words) // 4))
            value += relevance
            reasons.append(f"task keywords ({overlap}) +{relevance:.2f}")
    if text and _DECISION.search(text):
        value += weights.decision
        reasons.append(f"decision or commitment +{weights.decision:g}")
    if SUMMARY_OF in message.metadata:
        value += weights.condensed
        reasons.append(f"already condensed {weights.condensed:+g}")
    if message.important:
        reasons.append("important (pinned)")
        return Score(value=value, category=Category.CRITICAL, reasons=tuple(reasons))
    if first_user:
        reasons.append("first user message (the task)")
        return Score(value=value, category=Category.CRITICAL, reasons=tuple(reasons))
    if value >= weights.important_at:
        category = Category.IMPORTANT
    elif value >= weights.normal_at:
        category = Category.NORMAL
    else:
        category = Category.LOW
    return Score(value=value, category=category, reasons=tuple(reasons))
