"""Test doubles for ctxflow's protocols."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

from ctxflow.model import Message
from ctxflow.protocols import TokenCounter
from ctxflow.tokens import message_measure

__all__ = ["CountingCounter", "CountingMeasure", "FixedCounter"]


class FixedCounter:
    """A deterministic counter: one token per ``chars_per_token`` characters (default 4)."""

    def __init__(self, chars_per_token: int = 4) -> None:
        self.chars_per_token = chars_per_token

    @property
    def name(self) -> str:
        """``fixed``."""
        return "fixed"

    def count(self, text: str) -> int:
        """``ceil(len(text) / chars_per_token)``."""
        return math.ceil(len(text) / self.chars_per_token)


class CountingCounter:
    """Wraps a counter and records every text it was asked to count."""

    def __init__(self, inner: TokenCounter | None = None) -> None:
        self.inner: TokenCounter = inner or FixedCounter()
        self.calls = 0
        self.texts: Counter[str] = Counter()

    @property
    def name(self) -> str:
        """The inner counter's name."""
        return self.inner.name

    def count(self, text: str) -> int:
        """Count with the inner counter and record the call."""
        self.calls += 1
        self.texts[text] += 1
        return self.inner.count(text)


class CountingMeasure:
    """A message measure with a ``key`` that records how many messages it counted.

    Keyed, so a checkpoint stores its counts: a test can assert that a restore
    with it took them instead of counting again (``calls`` stays 0).
    """

    def __init__(
        self, inner: Callable[[Message], int] | None = None, *, key: str = "test/counting"
    ) -> None:
        self.inner = inner or message_measure(FixedCounter())
        self.key = key
        self.calls = 0

    def __call__(self, message: Message) -> int:
        """Count with the inner measure and record the call."""
        self.calls += 1
        return self.inner(message)
