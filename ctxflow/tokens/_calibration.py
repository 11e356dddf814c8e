"""Calibration: learn how far local counts are from what the provider bills.

Counts made with a stand-in encoding (Anthropic and Google models counted with
cl100k_base) drift from the provider's own. Feeding the usage a response
reports (``observe(estimated, actual)``) lets ctxflow correct its estimates, so
compression fires when the real window fills, not 10% early or late.
"""

from __future__ import annotations

import math
import threading

import attrs

from ctxflow.errors import PolicyError
from ctxflow.protocols import TokenCounter

__all__ = ["CalibratedCounter", "Calibration"]


@attrs.define
class Calibration:
    """A per-model correction factor, an exponential moving average of actual/estimated.

    The factor is clamped to ``[low, high]`` so one odd response cannot wreck
    every later budget.
    """

    alpha: float = 0.3
    low: float = 0.5
    high: float = 2.0
    _factors: dict[str, float] = attrs.field(factory=dict, alias="_factors")
    _samples: dict[str, int] = attrs.field(factory=dict, alias="_samples")
    _lock: threading.Lock = attrs.field(factory=threading.Lock, alias="_lock")

    def observe(self, model: str, estimated: int, actual: int) -> float:
        """Record one (estimate, billed) pair for ``model``; return the new factor."""
        if estimated <= 0 or actual <= 0:
            raise PolicyError(
                f"calibration needs positive token counts (got estimated={estimated}, "
                f"actual={actual})",
                rule="calibration_input",
            )
        ratio = min(max(actual / estimated, self.low), self.high)
        with self._lock:
            if model not in self._factors:
                self._factors[model] = ratio
            else:
                old = self._factors[model]
                self._factors[model] = (1 - self.alpha) * old + self.alpha * ratio
            self._samples[model] = self._samples.get(model, 0) + 1
            return self._factors[model]

    def factor(self, model: str) -> float:
        """The current factor for ``model`` (1.0 before any observation)."""
        return self._factors.get(model, 1.0)

    def samples(self, model: str) -> int:
        """How many observations shaped ``model``'s factor."""
        return self._samples.get(model, 0)

    def adjust(self, model: str, tokens: int) -> int:
        """``tokens`` corrected by ``model``'s factor (rounded up)."""
        # Rounded first so 100 × 1.2 is 120, not 121 from float error.
        return math.ceil(round(tokens * self.factor(model), 6))


class CalibratedCounter:
    """A counter whose counts are scaled by a model's calibration factor."""

    def __init__(self, inner: TokenCounter, calibration: Calibration, model: str) -> None:
        self.inner = inner
        self.calibration = calibration
        self.model = model

    @property
    def name(self) -> str:
        """The inner counter's name, marked as calibrated."""
        return f"{self.inner.name}+calibrated"

    def count(self, text: str) -> int:
        """The inner count scaled by the current factor."""
        return self.calibration.adjust(self.model, self.inner.count(text))

    def observe(self, estimated: int, actual: int) -> float:
        """Record provider-reported usage for this counter's model."""
        return self.calibration.observe(self.model, estimated, actual)
