"""CtxflowMiddleware in a real ``create_agent`` loop driven by a scripted chat model."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

pytest.importorskip("langchain.agents", reason="needs the [langchain] extra")

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool

from ctxflow.budget import Window
from ctxflow.errors import PolicyError
from ctxflow.integrations.langchain import CtxflowMiddleware, from_ctxflow, to_ctxflow
from ctxflow.model import check


class ScriptedChat(BaseChatModel):
    """A chat model that answers from a script (a list, or a function of the messages)
    and records every request it gets, with the window it was built from."""

    script: Any
    seen: list[list[BaseMessage]]
    windows: list[Window | None]
    window_of: Any = None

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChat:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.seen.append(list(messages))
        self.windows.append(self.window_of() if self.window_of else None)
        script = self.script
        reply = script(messages) if callable(script) else script[len(self.seen) - 1]
        return ChatResult(generations=[ChatGeneration(message=reply)])


@tool
def read_file(path: str) -> str:
    """Read a source file."""
    return f"# {path}\n" + "".join(f"line {i} of {path}\n" for i in range(200))


def reading(n: int) -> list[AIMessage]:
    """The model reads ``n`` files one by one, then answers."""
    calls = [
        AIMessage(
            content=f"Reading f{i}.py." if i == 0 else "",
            tool_calls=[{"name": "read_file", "args": {"path": f"f{i}.py"}, "id": f"call_{i}"}],
        )
        for i in range(n)
    ]
    return [*calls, AIMessage(content=f"Read {n} files.")]


def agent_with(
    script: Any, budget: int, **options: Any
) -> tuple[Any, ScriptedChat, CtxflowMiddleware]:
    middleware = CtxflowMiddleware(budget=budget, **options)
    model = ScriptedChat(script=script, seen=[], windows=[])
    model.window_of = lambda: middleware.window("t")
    agent = create_agent(
        model, tools=[read_file], middleware=[middleware], system_prompt="You read files."
    )
    return agent, model, middleware


CONFIG = {"configurable": {"thread_id": "t"}}


def assert_valid_and_within(model: ScriptedChat, budget: int) -> None:
    """Every request the model got is API-valid, and its window was within the budget."""
    for sent, window in zip(model.seen, model.windows, strict=True):
        assert isinstance(sent[0], SystemMessage)
        converted = to_ctxflow(sent[1:])
        for api in ("anthropic", "openai"):
            report = check(converted, api=api)
            assert report.ok, report.violations
        assert window is not None
        assert window.tokens <= window.input_budget == budget
        assert [m.model_dump() for m in sent[1 : 1 + len(window.messages)]] == [
            m.model_dump() for m in from_ctxflow(window.messages)
        ] or len(from_ctxflow(window.messages)) != len(window.messages)


def test_a_tool_loop_runs_to_completion_under_a_budget_smaller_than_its_history() -> None:
    """Twelve file reads (over twice the budget) finish; every call is valid and within budget;
    the agent's state keeps the whole history."""
    agent, model, _middleware = agent_with(reading(12), budget=5000)
    out = agent.invoke({"messages": [{"role": "user", "content": "Read twelve files."}]}, CONFIG)
    assert out["messages"][-1].content == "Read 12 files."
    assert len(out["messages"]) == 26
    history = sum(len(str(m.content)) for m in out["messages"]) // 4
    assert history > 2 * 5000
    assert len(model.seen) == 13
    assert_valid_and_within(model, 5000)
    # Older results were trimmed, older turns condensed; the latest result stays whole.
    said = [str(m.content) for request in model.seen for m in request]
    assert any("trimmed by ctxflow; recall the whole result by its call id" in t for t in said)
    assert any("[Summary of" in text for text in said)
    results = [m for m in model.seen[-1] if isinstance(m, ToolMessage)]
    assert "line 199 of f11.py" in str(results[-1].content)


def test_the_chart_follows_the_agents_steps() -> None:
    """start, plan_ready at the first answer, a step per tool round, reflection every 4."""
    agent, _model, middleware = agent_with(reading(9), budget=6000, reflect_every=4)
    agent.invoke({"messages": [{"role": "user", "content": "Read nine files."}]}, CONFIG)
    engine = middleware.engine("t")
    assert engine is not None
    triggers = [r.trigger for r in engine.records]
    assert triggers[:2] == ["start", "plan_ready"]
    assert triggers.count("step") == 9
    assert triggers.count("reflect") == 2 and triggers.count("execute") == 2
    assert engine.state.work.plan == "Reading f0.py."


def test_recall_gives_back_a_cleared_result() -> None:
    """The model recalls a trimmed result, whole, by the call id its marker names."""

    calls = iter(range(100))

    def script(messages: list[BaseMessage]) -> AIMessage:
        done = [m for m in messages if isinstance(m, ToolMessage)]
        recalled = [m for m in done if m.name == "recall"]
        if recalled:
            return AIMessage(content=f"recalled {len(str(recalled[-1].content))} chars")
        cleared = [m for m in done if "by ctxflow" in str(m.content)]
        if cleared:
            call = {"name": "recall", "args": {"id": cleared[0].tool_call_id}, "id": "call_r"}
            return AIMessage(content="", tool_calls=[call])
        n = next(calls)
        call = {"name": "read_file", "args": {"path": f"g{n}.py"}, "id": f"call_{n}"}
        return AIMessage(content="", tool_calls=[call])

    agent, model, _middleware = agent_with(script, budget=5000)
    out = agent.invoke({"messages": [{"role": "user", "content": "Read until cleared."}]}, CONFIG)
    answer = out["messages"][-1].content
    assert answer == f"recalled {len(read_file.invoke({'path': 'g0.py'}))} chars"
    assert_valid_and_within(model, 5000)


def test_async_agent_gets_the_same_windows() -> None:
    """``ainvoke`` runs the async hook and sends the same requests as ``invoke``."""
    agent, model, _ = agent_with(reading(6), budget=5000)
    agent.invoke({"messages": [{"role": "user", "content": "Read six files."}]}, CONFIG)
    async_agent, async_model, _ = agent_with(reading(6), budget=5000)
    asyncio.run(
        async_agent.ainvoke({"messages": [{"role": "user", "content": "Read six files."}]}, CONFIG)
    )

    def shapes(seen: list[list[BaseMessage]]) -> list[list[tuple[str, str]]]:
        """Each request as (type, tool call id) pairs: summaries carry fresh random ids."""
        return [[(m.type, getattr(m, "tool_call_id", "")) for m in request] for request in seen]

    assert shapes(async_model.seen) == shapes(model.seen)
    assert_valid_and_within(async_model, 5000)


def test_threads_get_their_own_windows() -> None:
    """Two threads of one agent do not share a conversation."""
    agent, _model, middleware = agent_with(lambda m: AIMessage(content="ok"), budget=5000)
    for thread in ("a", "b"):
        agent.invoke(
            {"messages": [{"role": "user", "content": f"hello from {thread}"}]},
            {"configurable": {"thread_id": thread}},
        )
    for thread in ("a", "b"):
        engine = middleware.engine(thread)
        assert engine is not None
        assert engine.conversation.messages[0].text == f"hello from {thread}"


@pytest.mark.parametrize(
    ("options", "rule"),
    [({"budget": 0}, "budget"), ({"budget": 10, "reflect_every": -1}, "reflect_every")],
)
def test_bad_options_raise_policy_errors(options: dict[str, Any], rule: str) -> None:
    """A budget below one token or a negative reflection period is refused by name."""
    with pytest.raises(PolicyError) as raised:
        CtxflowMiddleware(**options)
    assert raised.value.rule == rule
