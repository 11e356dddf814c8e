"""How a user tests an agent built on ctxflow with the pytest plugin (installed with ctxflow).

Run it: ``pytest examples/test_my_agent.py``. The fixtures ``ctxflow_engine``,
``ctxflow_recorder`` and ``ctxflow_chart`` come from the plugin; overriding
``ctxflow_chart`` points them at your own chart.
"""

from __future__ import annotations

import pytest

from ctxflow.engine import Chart, Engine, load_chart
from ctxflow.testing import (
    TransitionRecorder,
    assert_transition,
    event_paths,
    expected_phases,
    transition_cover,
)

REVIEW = load_chart("review_loop")


def test_planning_to_execution(ctxflow_engine: Engine) -> None:
    """plan_ready moves planning to execution and takes a checkpoint."""
    ctxflow_engine.send("start", task="ship it")
    ctxflow_engine.send("plan_ready")
    assert_transition(
        ctxflow_engine, "plan_ready", from_="planning", to="execution", checkpoint=True
    )


def test_step_stays_in_execution(
    ctxflow_engine: Engine, ctxflow_recorder: TransitionRecorder
) -> None:
    """A step is internal: no phase change, no checkpoint, pairs intact."""
    for event in ("start", "plan_ready", "step"):
        ctxflow_engine.send(event)
    assert_transition(ctxflow_engine, "step", to="execution", checkpoint=False, pairs_intact=True)
    assert ctxflow_recorder.phases == ["planning", "execution"]


@pytest.mark.parametrize("path", event_paths("agent_loop", depth=4), ids="-".join)
def test_every_path_of_the_default_chart(ctxflow_engine: Engine, path: tuple[str, ...]) -> None:
    """Every event path up to depth 4 lands where the chart says."""
    for event, phase in zip(path, expected_phases(ctxflow_engine.chart, path), strict=True):
        ctxflow_engine.send(event)
        assert ctxflow_engine.phase == phase


class TestMyReviewChart:
    """Tests on a custom chart: override the plugin's chart fixture."""

    @pytest.fixture
    def ctxflow_chart(self) -> Chart:
        """This class's engines run the review chart."""
        return REVIEW

    @pytest.mark.parametrize("path", transition_cover(REVIEW), ids="-".join)
    def test_every_transition(self, ctxflow_engine: Engine, path: tuple[str, ...]) -> None:
        """Each transition of the review chart fires and records a step."""
        for event in path:
            ctxflow_engine.send(event)
        assert_transition(ctxflow_engine, path[-1])
        assert ctxflow_engine.records[-1].trigger == path[-1]
