"""An agent loop against the Anthropic Messages API, or a scripted stand-in without a key.

Run it: ``python examples/anthropic_loop.py``. With ``ANTHROPIC_API_KEY`` set
it talks to the real API (``pip install anthropic``; the model comes from
``CTXFLOW_ANTHROPIC_MODEL``, default ``claude-sonnet-4-5``); without it a
:class:`~ctxflow.testing.ScriptedLLM` answers in the Anthropic shape, so the
script runs offline. Either way it prints the phases, the turns, the answer
and the calibration factor learned from the reported usage.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ctxflow.adapters import AnthropicAdapter
from ctxflow.engine import Engine, PhaseConfig
from ctxflow.layers import LayeredState, SystemLayer, ToolDef
from ctxflow.loop import run_agent
from ctxflow.testing import ScriptedLLM, text_response, tool_call_response
from ctxflow.tokens import Calibration

MODEL = os.environ.get("CTXFLOW_ANTHROPIC_MODEL", "claude-sonnet-4-5")
WORD_COUNT = ToolDef(
    name="word_count",
    description="Count the words of a text.",
    input_schema={
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
)
TASK = "How many words are in 'the quick brown fox jumps'? Use the word_count tool."


def word_count(arguments: Mapping[str, Any]) -> str:
    """The tool: the number of words in ``text``."""
    return str(len(str(arguments["text"]).split()))


def client() -> tuple[Any, str]:
    """The real SDK client when a key is set (imported lazily), else a scripted model."""
    if os.environ.get("ANTHROPIC_API_KEY"):
        from ctxflow.adapters import AnthropicClient

        return AnthropicClient(), "anthropic"
    script = [
        text_response("Plan: call word_count on the sentence, then answer."),
        tool_call_response("word_count", {"text": "the quick brown fox jumps"}),
        text_response("The sentence has 5 words."),
    ]
    return ScriptedLLM(script), "scripted"


def main() -> None:
    """Run the task and print the outcome."""
    engine = Engine(
        model=MODEL,
        state=LayeredState(
            system=SystemLayer(prompt="You are a precise assistant.", tools=(WORD_COUNT,))
        ),
        phases={"planning": PhaseConfig(tools=()), "execution": PhaseConfig(tools=("word_count",))},
    )
    llm, source = client()
    calibration = Calibration()
    result = run_agent(
        engine,
        llm,
        {"word_count": word_count},
        adapter=AnthropicAdapter(model=MODEL, max_tokens=1024),
        task=TASK,
        max_turns=8,
        calibration=calibration,
    )
    print(f"model: {source}")
    print("phases:", " -> ".join(result.phases))
    print(f"turns: {result.turns} prompt tokens: {result.usage.prompt_tokens}")
    print(f"calibration factor: {calibration.factor(engine.profile.name):.2f}")
    print("answer:", result.text)


if __name__ == "__main__":
    main()
