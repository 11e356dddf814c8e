"""The ctxflow pytest plugin, registered by entry point: installed with ctxflow, no set-up.

Fixtures:

- ``ctxflow_counter``: a deterministic :class:`~ctxflow.testing.FixedCounter`.
- ``ctxflow_counting_counter``: a :class:`~ctxflow.testing.CountingCounter` that
  records every text it counted (assert that nothing is tokenized twice).
"""

from __future__ import annotations

import pytest

from ctxflow.testing.doubles import CountingCounter, FixedCounter


@pytest.fixture
def ctxflow_counter() -> FixedCounter:
    """A deterministic token counter (one token per four characters)."""
    return FixedCounter()


@pytest.fixture
def ctxflow_counting_counter() -> CountingCounter:
    """A counter that records what it counted."""
    return CountingCounter()
