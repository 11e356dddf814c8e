"""Pair-safe, non-destructive compression: the ladder, its rungs, summarizers, recall.

The engine calls :func:`guard` (or :meth:`Ladder.guard`) after each step and
before a transition lands, then :meth:`Ladder.run` when it fires. Every rung
tags or overlays; nothing is deleted, and :func:`recall`, :func:`expand` and
:func:`undo` bring any original back.

::

    ladder = Ladder()  # default policy: threshold 0.75, target 0.50, hard limit 1.0
    if ladder.guard(conversation, budget=flexible, fixed=fixed):
        result = ladder.run(conversation, state, budget=flexible, fixed=fixed, turn=step)
        state = result.state  # facts flushed to semantic memory, summaries to episodic
        result.report.rungs_used, result.report.tokens_after, result.report.warnings
    undo(conversation, result.report)  # or undo(conversation, summary_or_message_id)

Budgets are plain token numbers: ``budget`` is the flexible budget and
``fixed`` the fixed costs that sit inside the conversation (0 when they do not).
"""

from ctxflow.compression._details import extract_details
from ctxflow.compression._draft import Draft
from ctxflow.compression._ladder import (
    CompressionReport,
    CompressionResult,
    Ladder,
    LadderPolicy,
    RungOutcome,
    default_rungs,
    fixed_tokens,
    guard,
)
from ctxflow.compression._recall import expand, recall, undo
from ctxflow.compression._rungs import (
    CLEARED,
    OVERLAY_KIND,
    SUMMARY_MARKER,
    TRIMMED,
    ClearToolResults,
    Condense,
    HardReset,
    NeedsSummary,
    Rung,
    RungContext,
    Skip,
    Truncate,
)
from ctxflow.compression._summarizers import (
    AsyncLLMSummarizer,
    ExtractiveSummarizer,
    LLMSummarizer,
    extract_facts,
    render,
)
from ctxflow.compression._trim import TrimOversized

__all__ = [
    "CLEARED",
    "OVERLAY_KIND",
    "SUMMARY_MARKER",
    "TRIMMED",
    "AsyncLLMSummarizer",
    "ClearToolResults",
    "CompressionReport",
    "CompressionResult",
    "Condense",
    "Draft",
    "ExtractiveSummarizer",
    "HardReset",
    "LLMSummarizer",
    "Ladder",
    "LadderPolicy",
    "NeedsSummary",
    "Rung",
    "RungContext",
    "RungOutcome",
    "Skip",
    "TrimOversized",
    "Truncate",
    "default_rungs",
    "expand",
    "extract_details",
    "extract_facts",
    "fixed_tokens",
    "guard",
    "recall",
    "render",
    "undo",
]
