"""The agent-loop helpers, sync and async, with scripted models: phases, recovery, bad responses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import pytest

from ctxflow.adapters import Adapter, AnthropicAdapter, OpenAIAdapter
from ctxflow.budget import BudgetPolicy
from ctxflow.engine import AsyncEngine, Engine, PhaseConfig
from ctxflow.errors import ContextOverflow, PolicyError, ResponseError, StoreError
from ctxflow.layers import LayeredState, SystemLayer, ToolDef
from ctxflow.loop import AgentResult, Tools, arun_agent, run_agent
from ctxflow.testing import (
    AsyncScriptedLLM,
    ScriptedLLM,
    capture_events,
    prompt_too_long,
    text_response,
    tool_call_response,
)
from ctxflow.tokens import Calibration

READ = ToolDef(
    name="read",
    description="Read a file.",
    input_schema={
        "type": "object",
        "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["path"],
    },
)
PHASES = {
    "planning": PhaseConfig(tools=()),
    "execution": PhaseConfig(tools=("read",)),
    "reflection": PhaseConfig(tools=()),
}
ANTHROPIC = AnthropicAdapter(model="scripted-model")


def state() -> LayeredState:
    """A layered state with a system prompt and the one tool."""
    return LayeredState(system=SystemLayer(prompt="You are a careful agent.", tools=(READ,)))


def read(arguments: Mapping[str, Any]) -> str:
    """A stand-in file reader."""
    return f"contents of {arguments['path']}"


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Run each test on the sync and the async loop."""
    return str(request.param)


def run(
    mode: str,
    script: Sequence[Any],
    tools: Tools | None = None,
    *,
    adapter: Adapter = ANTHROPIC,
    engine_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[Engine | AsyncEngine, Any, AgentResult]:
    """One run with a fresh engine and scripted model; returns engine, model and result."""
    options = {"state": state(), "phases": PHASES, **(engine_kwargs or {})}
    tools = tools if tools is not None else {"read": read}
    kwargs.setdefault("task", "Read a and b, then report.")
    if mode == "sync":
        engine = Engine(**options)
        llm: Any = ScriptedLLM(script)
        return engine, llm, run_agent(engine, llm, tools, adapter=adapter, **kwargs)
    aengine = AsyncEngine(**options)
    allm = AsyncScriptedLLM(script)
    result = asyncio.run(arun_agent(aengine, allm, tools, adapter=adapter, **kwargs))
    return aengine, allm, result


def happy_script(api: str = "anthropic") -> list[Any]:
    """Plan, two tool calls, a reflection, two more, the answer."""
    a: Any = api
    return [
        text_response("Plan: read a, read b.", api=a),
        tool_call_response("read", {"path": "a"}, api=a),
        tool_call_response("read", {"path": "b"}, api=a),
        text_response("Both read; nothing left but the report.", api=a),
        text_response("Report: a and b read.", api=a, prompt_tokens=40),
    ]


def test_plan_execute_reflect_finish(mode: str) -> None:
    """A scripted run goes planning → execution → reflection → execution → done."""
    engine, llm, result = run(mode, happy_script(), reflect_every=2)
    assert result.finished and result.text == "Report: a and b read."
    assert result.turns == 5 and llm.remaining == 0
    assert result.phases == ["planning", "execution", "reflection", "execution", "done"]
    assert [r.trigger for r in result.records] == [
        "start",
        "plan_ready",
        "step",
        "step",
        "reflect",
        "execute",
        "finish",
    ]
    assert result.usage.prompt_tokens == 10 * 4 + 40
    tool_results = [b for m in engine.conversation for b in m.tool_results]
    assert [b.text for b in tool_results] == ["contents of a", "contents of b"]


def test_window_tools_are_the_allowed_tools(mode: str) -> None:
    """Under ``tool_definitions="phase"`` planning offers no tools and execution the phase's."""
    narrow = BudgetPolicy(tool_definitions="phase")
    phases = {name: attrs.evolve(config, budget_policy=narrow) for name, config in PHASES.items()}
    _, llm, _ = run(mode, happy_script(), reflect_every=0, engine_kwargs={"phases": phases})
    assert "tools" not in llm.requests[0]
    assert [t["name"] for t in llm.requests[1]["tools"]] == ["read"]
    assert all(m["role"] == "user" for m in (r["messages"][-1] for r in llm.requests))


def test_every_request_carries_the_same_tools_and_states_the_allowed_ones(mode: str) -> None:
    """By default every request carries every tool alike; the late context names the allowed."""
    _, llm, _ = run(mode, happy_script(), reflect_every=0)
    assert len({json.dumps(r["tools"], sort_keys=True) for r in llm.requests}) == 1
    late = [r["messages"][-1]["content"][-1]["text"] for r in llm.requests]
    assert "phase: planning" in late[0] and "tools: none" in late[0]
    assert "phase: execution" in late[1] and "tools: read" in late[1]


def test_openai_adapter_runs_the_same_loop(mode: str) -> None:
    """The loop is provider-neutral: the OpenAI adapter drives the same phases."""
    _, llm, result = run(
        mode, happy_script("openai"), adapter=OpenAIAdapter(model="scripted-model")
    )
    assert result.finished and result.phases[-1] == "done"
    assert llm.requests[1]["tools"][0]["function"]["name"] == "read"


def test_usage_feeds_calibration(mode: str) -> None:
    """Every response's reported prompt tokens are observed against the window's estimate."""
    calibration = Calibration()
    engine, _, result = run(mode, happy_script(), calibration=calibration)
    assert calibration.samples(engine.profile.name) == result.turns
    assert calibration.factor(engine.profile.name) != 1.0


def test_callable_tool_executor_and_tool_errors(mode: str) -> None:
    """One callable serves every tool; an ordinary exception becomes an is_error result."""

    def tools(name: str, arguments: Mapping[str, Any]) -> str:
        if arguments["path"] == "b":
            raise FileNotFoundError("b")
        return f"{name}:{arguments['path']}"

    with capture_events() as logs:
        engine, _, result = run(mode, happy_script(), tools)
    results = [b for m in engine.conversation for b in m.tool_results]
    assert [(b.text, b.is_error) for b in results] == [
        ("read:a", False),
        ("FileNotFoundError: b", True),
    ]
    assert result.finished
    assert [e["tool"] for e in logs if e["event"] == "agent.tool_error"] == ["read"]


def test_max_turns_stops_unfinished(mode: str) -> None:
    """Hitting max_turns returns an unfinished result and logs it."""
    with capture_events() as logs:
        engine, _, result = run(mode, happy_script(), max_turns=2)
    assert not result.finished and result.turns == 2 and engine.phase == "execution"
    assert any(e["event"] == "agent.max_turns" for e in logs)


# -- recovery ---------------------------------------------------------------------


def big_read(arguments: Mapping[str, Any]) -> str:
    """A file reader whose results are large (so the ladder has something to clear)."""
    return f"{arguments['path']}: " + " ".join(f"line{i}" for i in range(600))


def test_overflow_compresses_and_retries_once(mode: str) -> None:
    """A 'prompt is too long' refusal forces the ladder lower, records the count, retries."""
    calibration = Calibration()
    script = [
        text_response("Plan."),
        tool_call_response("read", {"path": "a"}),
        tool_call_response("read", {"path": "b"}),
        tool_call_response("read", {"path": "c"}),
        prompt_too_long(prompt_tokens=210_000, limit=200_000),
        text_response("Done."),
    ]
    with capture_events() as logs:
        engine, llm, result = run(
            mode,
            script,
            {"read": big_read},
            engine_kwargs={"budget": 9_000},
            calibration=calibration,
            reflect_every=0,
        )
    assert result.finished and result.overflows == 1
    refused, retried = llm.requests[-2], llm.requests[-1]
    assert len(json.dumps(retried)) < len(json.dumps(refused)) / 2
    overflow = next(e for e in logs if e["event"] == "agent.context_overflow")
    assert (overflow["reported"], overflow["limit"]) == (210_000, 200_000)
    # One sample per answered call plus the provider's count of the refused prompt.
    assert calibration.samples(engine.profile.name) == result.turns + 1
    compressed = next(e for e in logs if e["event"] == "agent.overflow_compressed")
    assert compressed["tokens_after"] < compressed["tokens_before"]


def test_second_overflow_is_raised(mode: str) -> None:
    """The retry after an overflow happens once; a second refusal is raised."""
    script = [prompt_too_long(), prompt_too_long()]
    with pytest.raises(ContextOverflow):
        run(mode, script)


def test_typed_error_mid_turn_fails_and_recovers(mode: str) -> None:
    """A tool raising a ctxflow error sends fail, restores the last good checkpoint, goes on."""
    calls: list[str] = []

    def flaky(arguments: Mapping[str, Any]) -> str:
        calls.append(arguments["path"])
        if len(calls) == 2:
            raise StoreError("the store went away", rule="store_down")
        return read(arguments)

    script = [
        text_response("Plan."),
        tool_call_response("read", {"path": "a"}),
        tool_call_response("read", {"path": "b"}),
        text_response("Plan again."),
        tool_call_response("read", {"path": "b"}),
        text_response("Done."),
    ]
    with capture_events() as logs:
        engine, llm, result = run(mode, script, {"read": flaky}, reflect_every=0)
    assert result.finished and result.recoveries == 1
    triggers = [r.trigger for r in result.records]
    assert triggers[triggers.index("fail") :] == ["fail", "recover", "plan_ready", "step", "finish"]
    recover = next(r for r in result.records if r.trigger == "recover")
    assert recover.restored_from is not None and recover.target == "planning"
    # The call that failed is gone: no tool_use is left without its result.
    uses = [b.id for m in engine.conversation.effective() for b in m.tool_uses]
    answered = [b.tool_use_id for m in engine.conversation.effective() for b in m.tool_results]
    assert uses == answered
    event = next(e for e in logs if e["event"] == "agent.recover")
    assert event["rule"] == "store_down" and event["phase"] == "execution"
    assert "store went away" in llm.requests[3]["messages"][-1]["content"][-2]["text"]


def test_recoveries_are_bounded(mode: str) -> None:
    """Past max_recoveries the typed error is raised."""

    def broken(arguments: Mapping[str, Any]) -> str:
        raise StoreError("down", rule="store_down")

    script = [text_response("Plan."), tool_call_response("read", {"path": "a"})]
    with pytest.raises(StoreError):
        run(mode, script, {"read": broken}, max_recoveries=0)


# -- bad responses ----------------------------------------------------------------------


def test_tool_not_projected_in_phase_stops_with_conversation_unchanged(mode: str) -> None:
    """A call to a tool the planning phase does not offer raises and adds nothing."""
    script = [tool_call_response("read", {"path": "a"})]
    with capture_events() as logs, pytest.raises(ResponseError) as caught:
        run(mode, script)
    assert caught.value.rule == "unknown_tool"
    assert caught.value.field == "content[0].name"
    assert next(e for e in logs if e["event"] == "agent.bad_response")["rule"] == "unknown_tool"


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({}, "tool_calls[0].input.path"),
        ({"path": "a", "limit": "ten"}, "tool_calls[0].input.limit"),
    ],
)
def test_arguments_breaking_the_schema_name_the_field(
    mode: str, arguments: dict[str, Any], field: str
) -> None:
    """Missing or mistyped arguments raise a ResponseError naming the field; nothing is added."""
    engine = Engine(state=state(), phases=PHASES)
    llm = ScriptedLLM([text_response("Plan."), tool_call_response("read", arguments)])
    with pytest.raises(ResponseError) as caught:
        run_agent(engine, llm, {"read": read}, adapter=ANTHROPIC, task="t")
    assert caught.value.field == field and caught.value.rule == "tool_arguments"
    assert len(engine.conversation) == 3  # task, plan, the plan_ready prompt
    assert engine.phase == "execution"


def test_unparseable_arguments_name_the_field(mode: str) -> None:
    """OpenAI tool arguments that are not JSON raise a ResponseError naming the field."""
    bad = tool_call_response("read", {"path": "a"}, api="openai")
    bad["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = "{path: a"
    script = [text_response("Plan.", api="openai"), bad]
    with pytest.raises(ResponseError) as caught:
        run(mode, script, adapter=OpenAIAdapter(model="m"))
    assert caught.value.field == "choices[0].message.tool_calls[0].function.arguments"


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_turns", 0), ("reflect_every", -1), ("overflow_target", 1.5), ("max_recoveries", True)],
)
def test_bad_options_are_typed_errors(option: str, value: Any) -> None:
    """Unusable loop options raise PolicyError before anything runs."""
    engine = Engine(state=state(), phases=PHASES)
    llm = ScriptedLLM([])
    with pytest.raises(PolicyError, match=option):
        run_agent(engine, llm, {"read": read}, adapter=ANTHROPIC, task="t", **{option: value})
    assert engine.phase == "idle" and not llm.requests


def test_start_needs_a_task() -> None:
    """An engine in its initial phase cannot start without a task."""
    with pytest.raises(PolicyError, match="'task'"):
        run_agent(Engine(), ScriptedLLM([]), {}, adapter=ANTHROPIC)


# -- the plan -----------------------------------------------------------------------


def test_a_model_keeps_its_plan_through_the_plan_tool(mode: str) -> None:
    """update_plan in planning sets the engine's plan; every later request shows it late."""
    script = [
        tool_call_response("update_plan", {"plan": "1. read a\n2. read b"}),
        text_response("Plan ready."),
        tool_call_response("read", {"path": "a"}),
        tool_call_response("update_plan", {"plan": "1. read a (done)\n2. read b"}),
        text_response("Report: a read."),
    ]
    engine, llm, result = run(mode, script, reflect_every=0, plan_tool=True)
    assert result.finished and llm.remaining == 0
    assert engine.plan == "1. read a (done)\n2. read b"
    late = [r["messages"][-1]["content"][-1]["text"] for r in llm.requests]
    assert "Plan:" not in late[0]
    assert all("Plan:\n1. read a" in text for text in late[1:])
    assert "read a (done)" in late[-1] and "read a (done)" not in late[2]
    names = [t["name"] for t in llm.requests[0]["tools"]]
    assert names == ["read", "update_plan"]
    saved = [b for m in engine.conversation for b in m.tool_results if "Plan saved" in b.text]
    assert len(saved) == 2


def test_the_plan_tool_is_off_unless_asked(mode: str) -> None:
    """Without plan_tool a call to update_plan is an unknown tool, and no definition is sent."""
    script = [tool_call_response("update_plan", {"plan": "x"})]
    with pytest.raises(ResponseError) as caught:
        run(mode, script)
    assert caught.value.rule == "unknown_tool"


# -- memory -------------------------------------------------------------------------


def test_the_memory_tool_is_off_unless_asked(mode: str) -> None:
    """Without memory_tool a call to memory is an unknown tool, and no definition is sent."""
    script = [tool_call_response("memory", {"command": "view"})]
    with pytest.raises(ResponseError) as caught:
        run(mode, script)
    assert caught.value.rule == "unknown_tool"


def test_plan_and_memory_tools_together(mode: str) -> None:
    """Both loop tools are offered at once, each answered by its own handler."""
    script = [
        tool_call_response("update_plan", {"plan": "1. read a"}),
        tool_call_response(
            "memory", {"command": "write", "kind": "fact", "key": "a", "value": "to read"}
        ),
        text_response("Plan ready."),
        text_response("Done."),
    ]
    engine, llm, result = run(mode, script, reflect_every=0, plan_tool=True, memory_tool=True)
    assert result.finished and engine.plan == "1. read a"
    assert engine.state.memory.fact("a") is not None
    assert [t["name"] for t in llm.requests[0]["tools"]] == ["read", "update_plan", "memory"]
