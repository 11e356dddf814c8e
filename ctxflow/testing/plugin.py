"""The ctxflow pytest plugin, registered by entry point: installed with ctxflow, no set-up.

Fixtures:

- ``ctxflow_counter``: a deterministic :class:`~ctxflow.testing.FixedCounter`.
- ``ctxflow_counting_counter``: a :class:`~ctxflow.testing.CountingCounter` that
  records every text it counted (assert that nothing is tokenized twice).
- ``ctxflow_chart``: the chart the engine fixtures run (``agent_loop``);
  override it in your ``conftest.py`` to test your own chart.
- ``ctxflow_store``: an in-memory checkpoint store (:class:`~ctxflow.stores.MemoryStore`).
- ``ctxflow_recorder``: a :class:`~ctxflow.testing._engine.TransitionRecorder`.
- ``ctxflow_llm``: a :class:`~ctxflow.testing._llm.ScriptedLLM` with an empty
  script (``ctxflow_llm.add(...)`` the responses your test expects).
- ``ctxflow_engine`` / ``ctxflow_async_engine``: an engine on ``ctxflow_chart``
  with the fixed counter, the in-memory store and the recorder attached.

Helpers to use with them live in :mod:`ctxflow.testing._engine`
(``assert_transition``, ``event_paths``, ``transition_cover``).
"""

from __future__ import annotations

from typing import Any

import pytest

from ctxflow.engine import AsyncEngine, Chart, Engine, load_chart
from ctxflow.stores import MemoryStore
from ctxflow.testing._doubles import CountingCounter, FixedCounter
from ctxflow.testing._engine import TransitionRecorder
from ctxflow.testing._llm import ScriptedLLM


@pytest.fixture
def ctxflow_counter() -> FixedCounter:
    """A deterministic token counter (one token per four characters)."""
    return FixedCounter()


@pytest.fixture
def ctxflow_counting_counter() -> CountingCounter:
    """A counter that records what it counted."""
    return CountingCounter()


@pytest.fixture
def ctxflow_chart() -> Chart | str:
    """The chart the engine fixtures run; override to test your own chart."""
    return "agent_loop"


@pytest.fixture
def ctxflow_store() -> MemoryStore:
    """An in-memory checkpoint store."""
    return MemoryStore()


@pytest.fixture
def ctxflow_recorder() -> TransitionRecorder:
    """A listener recording every step, checkpoint and compression."""
    return TransitionRecorder()


@pytest.fixture
def ctxflow_llm() -> ScriptedLLM:
    """A scripted model client with an empty script."""
    return ScriptedLLM([])


def _engine_kwargs(
    chart: Chart | str, counter: FixedCounter, store: Any, recorder: TransitionRecorder
) -> dict[str, Any]:
    return {
        "chart": chart if isinstance(chart, Chart) else load_chart(chart),
        "counter": counter,
        "store": store,
        "listeners": [recorder],
    }


@pytest.fixture
def ctxflow_engine(
    ctxflow_chart: Chart | str,
    ctxflow_counter: FixedCounter,
    ctxflow_store: MemoryStore,
    ctxflow_recorder: TransitionRecorder,
) -> Engine:
    """A synchronous engine on ``ctxflow_chart`` with test doubles attached."""
    return Engine(**_engine_kwargs(ctxflow_chart, ctxflow_counter, ctxflow_store, ctxflow_recorder))


@pytest.fixture
def ctxflow_async_engine(
    ctxflow_chart: Chart | str,
    ctxflow_counter: FixedCounter,
    ctxflow_store: MemoryStore,
    ctxflow_recorder: TransitionRecorder,
) -> AsyncEngine:
    """An asynchronous engine on ``ctxflow_chart`` with test doubles attached."""
    return AsyncEngine(
        **_engine_kwargs(ctxflow_chart, ctxflow_counter, ctxflow_store, ctxflow_recorder)
    )
