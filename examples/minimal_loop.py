"""The smallest agent loop: one tool, a scripted model, the engine deciding the context.

Run it: ``python examples/minimal_loop.py``. A scripted model plans, calls the
``add`` tool twice, reflects, and answers; ``run_agent`` sends the phase
events and the script prints the phases and the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ctxflow.adapters import AnthropicAdapter
from ctxflow.engine import Engine, PhaseConfig
from ctxflow.layers import LayeredState, SystemLayer, ToolDef
from ctxflow.loop import run_agent
from ctxflow.testing import ScriptedLLM, text_response, tool_call_response

ADD = ToolDef(
    name="add",
    description="Add two integers.",
    input_schema={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)


def add(arguments: Mapping[str, Any]) -> str:
    """The tool: the sum of ``a`` and ``b`` as text."""
    return str(arguments["a"] + arguments["b"])


def main() -> None:
    """Run the scripted task and print what happened."""
    engine = Engine(
        state=LayeredState(system=SystemLayer(prompt="You are a calculator.", tools=(ADD,))),
        phases={"planning": PhaseConfig(tools=()), "execution": PhaseConfig(tools=("add",))},
    )
    model = ScriptedLLM(
        [
            text_response("Plan: add 2 and 3, then add 4 to the result."),
            tool_call_response("add", {"a": 2, "b": 3}),
            tool_call_response("add", {"a": 5, "b": 4}),
            text_response("Two additions done; the plan holds."),
            text_response("2 + 3 + 4 = 9"),
        ]
    )
    result = run_agent(
        engine,
        model,
        {"add": add},
        adapter=AnthropicAdapter(model="claude-sonnet-4-5"),
        task="What is 2 + 3 + 4?",
        reflect_every=2,
    )
    print("phases:", " -> ".join(result.phases))
    print("turns:", result.turns)
    print("answer:", result.text)


if __name__ == "__main__":
    main()
