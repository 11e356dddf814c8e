"""Budgets over the context layers: allocation, priority scoring, selection, the Window.

The engine calls :func:`build_window` once per model call; the compression
ladder reads :func:`plan_budget` (thresholds are fractions of
``Allocation.flexible``) and never depends on the selector.
"""

from ctxflow.budget._allocation import (
    DEFAULT_POLICY,
    Allocation,
    FixedCosts,
    allocate,
    largest_remainder,
    measure_fixed,
    plan_budget,
    tools_json,
)
from ctxflow.budget._policy import (
    DEFAULT_LENDING,
    DEFAULT_MODEL_ADJUSTMENTS,
    DEFAULT_PHASE_ADJUSTMENTS,
    DEFAULT_WITHHELD,
    LEND_USES,
    Adjustments,
    BudgetPolicy,
    LayerRatios,
    TierWeights,
)
from ctxflow.budget._render import ChooseMemory, RenderedContext, middle_trim, render_context
from ctxflow.budget._scoring import (
    DEFAULT_WEIGHTS,
    Category,
    Score,
    ScoreWeights,
    keywords,
    score_message,
)
from ctxflow.budget._selection import Exclusion, Selection, placeholder_text, select
from ctxflow.budget._window import LayerUsage, Window, WindowReport, build_window, window_measure

__all__ = [
    "DEFAULT_LENDING",
    "DEFAULT_MODEL_ADJUSTMENTS",
    "DEFAULT_PHASE_ADJUSTMENTS",
    "DEFAULT_POLICY",
    "DEFAULT_WEIGHTS",
    "DEFAULT_WITHHELD",
    "LEND_USES",
    "Adjustments",
    "Allocation",
    "BudgetPolicy",
    "Category",
    "ChooseMemory",
    "Exclusion",
    "FixedCosts",
    "LayerRatios",
    "LayerUsage",
    "RenderedContext",
    "Score",
    "ScoreWeights",
    "Selection",
    "TierWeights",
    "Window",
    "WindowReport",
    "allocate",
    "build_window",
    "keywords",
    "largest_remainder",
    "measure_fixed",
    "middle_trim",
    "placeholder_text",
    "plan_budget",
    "render_context",
    "score_message",
    "select",
    "tools_json",
    "window_measure",
]
