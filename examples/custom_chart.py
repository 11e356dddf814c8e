"""A custom chart with a review phase, its own tool set and budget per phase.

Run it: ``python examples/custom_chart.py``. It loads ``review_loop`` (shipped
in ``statecharts/``), gives each phase its tools, drives one task through
planning, execution and review, and prints what every event did.
"""

from __future__ import annotations

from typing import Any

from ctxflow.engine import Engine, PhaseConfig, load_chart
from ctxflow.layers import LayeredState, SystemLayer, ToolDef
from ctxflow.model import Message

PHASES = {
    "planning": PhaseConfig(tools=("read_file", "search")),
    "execution": PhaseConfig(tools=("read_file", "edit_file", "run_tests")),
    "review": PhaseConfig(tools=("read_file", "run_tests")),
}

STATE = LayeredState(
    system=SystemLayer(
        prompt="You are a careful coding agent.",
        tools=tuple(ToolDef(name=n) for n in ("read_file", "search", "edit_file", "run_tests")),
    )
)


def share(state: LayeredState, *, phase: str, policy: Any) -> dict[str, int]:
    """A stand-in allocator: review keeps more evidence, execution more memory."""
    evidence = {"review": 6000, "execution": 3000}.get(phase, 2000)
    return {"memory": 10000 - evidence, "evidence": evidence}


def build() -> Engine:
    """An engine on the review chart with per-phase tools and budgets."""
    chart = load_chart("review_loop", phases=PHASES)
    return Engine(chart, phases=PHASES, state=STATE, allocator=share)


def main() -> None:
    """Drive one task through the chart and print each step."""
    engine = build()
    engine.send("start", task="Make the failing date-parsing test pass.")
    engine.send("plan_ready")
    engine.add_message(Message.user("The test in tests/test_dates.py fails."))
    engine.send("step")
    engine.send("submit")
    engine.send("request_changes")
    engine.send("submit")
    engine.send("approve")
    for record in engine.records:
        layers = ",".join(record.allocation_after) or "-"
        print(
            f"{record.trigger:>16}: {record.source:>10} -> {record.target:<10} "
            f"checkpoint={record.checkpoint_id} layers={layers}"
        )


if __name__ == "__main__":
    main()
