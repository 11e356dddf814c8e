"""Agent-loop helpers: plan → execute → reflect, with the engine deciding the context.

:func:`run_agent` (sync) and :func:`arun_agent` (async) drive one task::

    result = run_agent(engine, client, {"read_file": read_file},
                       adapter=AnthropicAdapter(model="claude-sonnet-4-5"), task="Fix the bug")
    result.text, result.turns, result.records

Each turn asks the engine for the window, renders it with the adapter, calls
the client (``complete(request) -> response body``), parses the response
with the window's tool names as the allowed tools, adds the assistant
message, runs its tool calls and adds their results. The phase decides which
event follows a reply:

=============  ===========================  ===============================
phase          reply with tool calls        reply with text only
=============  ===========================  ===============================
planning       run them, stay               ``plan_ready`` (the plan)
execution      run them, ``step``; every    ``finish`` (the final answer)
               ``reflect_every`` steps
               ``reflect``
reflection     run them, stay               ``execute`` (the reflection)
=============  ===========================  ===============================

After a text reply that does not finish, a short user message (``prompts``)
keeps the roles alternating so no request ends with an assistant message.
Events the chart does not allow in the current phase are skipped, so a
custom chart without ``reflect`` still runs.

Recovery, each logged under a stable event name on the ``ctxflow.loop`` logger:

- ``agent.context_overflow`` — the provider refused the prompt as too long
  (:class:`~ctxflow.errors.ContextOverflow`): the provider's count, when it
  gives one, is fed to the calibration; the phase's conversation is
  compressed with a forced ladder aiming at ``overflow_target`` of the
  flexible budget (``agent.overflow_compressed``) and the call is retried
  once. A second overflow on the same turn is raised.
- ``agent.recover`` — a tool or a collaborator raised a
  :class:`~ctxflow.errors.CtxflowError` mid-turn (the engine's state is not
  trusted any more): the loop sends ``fail`` then ``recover`` (the chart
  restores the latest good checkpoint and lands in planning), adds the
  ``recover`` prompt naming the error and goes on; more than
  ``max_recoveries`` times in one run, the error is raised.
- ``agent.bad_response`` — the response cannot be accepted: a tool not
  projected in the current phase, tool arguments that are not a JSON object,
  or arguments missing a required field or of the wrong JSON type for the
  tool's ``input_schema``. The loop **stops** by raising the
  :class:`~ctxflow.errors.ResponseError` (its ``field`` names the place);
  nothing was added to the conversation, so the caller may retry or answer.
- ``agent.tool_error`` — a tool raised an ordinary exception: the model gets
  an ``is_error`` tool result with the exception's text and the loop goes on.
- ``agent.memory_error`` — a call of the memory tool (``memory_tool=True``)
  had bad arguments: the model gets :func:`~ctxflow.memory._tool.handle_memory`'s
  ``is_error`` tool result naming the field and the loop goes on (the
  memory tool's arguments are checked by its handler, not against its schema).

Gotcha: the sync and async helpers share one generator core that yields the
effects (send an event, call the model, run a tool, compress); the two
drivers only differ in awaiting them, so their behaviour cannot drift.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from typing import Any, TypeAlias, TypedDict, Unpack

import attrs

from ctxflow._checks import check_number
from ctxflow._log import get_logger
from ctxflow.adapters import Adapter, ParsedResponse, Usage, observe_usage
from ctxflow.adapters._schema import check_arguments
from ctxflow.compression import CompressionResult, Ladder, LadderPolicy, fixed_tokens
from ctxflow.engine import AsyncEngine, Engine, StepRecord
from ctxflow.errors import ContextOverflow, CtxflowError, PolicyError, ResponseError
from ctxflow.layers import ToolDef
from ctxflow.memory._tool import MEMORY_TOOL, handle_memory
from ctxflow.model import Message, Role, ToolResultBlock, ToolUseBlock
from ctxflow.tokens import Calibration

__all__ = [
    "PLAN_TOOL",
    "PROMPTS",
    "AgentResult",
    "LoopOptions",
    "Tools",
    "arun_agent",
    "run_agent",
]

log = get_logger("ctxflow.loop")

Tools: TypeAlias = (
    Mapping[str, Callable[[Mapping[str, Any]], Any]] | Callable[[str, Mapping[str, Any]], Any]
)
"""Tool executors: a mapping name → callable(input), or one callable(name, input)."""

#: The tool through which a model keeps its plan (``run_agent(..., plan_tool=True)``).
PLAN_TOOL = ToolDef(
    name="update_plan",
    description=(
        "Write or revise your plan for the task: the steps, what is done and what is next. "
        "The plan replaces the previous one and is shown to you on every turn."
    ),
    input_schema={
        "type": "object",
        "properties": {"plan": {"type": "string", "description": "the whole plan, as text"}},
        "required": ["plan"],
    },
)
_PLAN_SAVED = "Plan saved; it is shown to you on every turn."

PROMPTS: Mapping[str, str] = {
    "plan_ready": "Plan noted. Carry it out step by step with the tools.",
    "reflect": "Reflect: what has worked, what is left, and whether the plan still holds.",
    "execute": "Continue with the plan.",
    "recover": "The last step failed ({error}). The context was restored to the last good "
    "checkpoint; plan again from here.",
}
"""The user messages the loop adds after a phase change (``recover`` gets ``{error}``)."""

_ANTHROPIC_COUNTS = re.compile(r"(\d+) tokens > (\d+)")
_OPENAI_COUNTS = re.compile(r"maximum context length is (\d+) tokens.*?resulted in (\d+) tokens")


@attrs.frozen(kw_only=True)
class AgentResult:
    """What a run gave back: the final text, how it went and every step record."""

    text: str
    finished: bool
    turns: int
    records: tuple[StepRecord, ...] = attrs.field(repr=False)
    usage: Usage
    recoveries: int = 0
    overflows: int = 0

    @property
    def phases(self) -> list[str]:
        """The phases entered, in order (phase changes only)."""
        return [r.target for r in self.records if r.phase_changed]


# -- effects the core asks its driver to perform ------------------------------------


@attrs.frozen
class _Send:
    event: str
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class _Call:
    request: Mapping[str, Any]


@attrs.frozen
class _Tool:
    call: ToolUseBlock


@attrs.frozen
class _Compress:
    ladder: Ladder
    budget: int
    fixed: int


_Effect: TypeAlias = _Send | _Call | _Tool | _Compress


def _overflow_counts(error: ContextOverflow) -> tuple[int, int] | None:
    """(prompt tokens, limit) as the provider's message states them, if it does."""
    text = str(error)
    found = _ANTHROPIC_COUNTS.search(text)
    if found:
        return int(found.group(1)), int(found.group(2))
    found = _OPENAI_COUNTS.search(text)
    if found:
        return int(found.group(2)), int(found.group(1))
    return None


def _executor(tools: Tools) -> Callable[[str, Mapping[str, Any]], Any]:
    if callable(tools) and not isinstance(tools, Mapping):
        return tools
    if not isinstance(tools, Mapping):
        raise PolicyError(
            f"'tools' must be a mapping of name to callable, or a callable "
            f"(got {type(tools).__name__})",
            rule="tools",
        )
    table = dict(tools)

    def run(name: str, arguments: Mapping[str, Any]) -> Any:
        fn = table.get(name)
        if fn is None:
            raise LookupError(f"no executor for tool {name!r} (have: {sorted(table)})")
        return fn(arguments)

    return run


def _offer(engine: Engine | AsyncEngine, tool: ToolDef) -> None:
    """Add ``tool`` to the engine's tool definitions (L0) unless one has its name."""
    system = engine.state.system
    if tool.name not in {t.name for t in system.tools}:
        tools = (*system.tools, tool)
        engine.set_state(attrs.evolve(engine.state, system=attrs.evolve(system, tools=tools)))


def _remember(
    engine: Engine | AsyncEngine, call: ToolUseBlock, source: str | None
) -> ToolResultBlock:
    """Answer a memory-tool call; a change of memory goes to the engine's state."""
    state = engine.state
    outcome = handle_memory(state, call.input, step=state.runtime.step, source=source)
    if outcome.changed:
        engine.set_state(outcome.state)
    if outcome.is_error:
        log.warning("agent.memory_error", error=outcome.text, session=engine.session_id)
    return ToolResultBlock(tool_use_id=call.id, content=outcome.text, is_error=outcome.is_error)


def _core(
    engine: Engine | AsyncEngine,
    adapter: Adapter,
    *,
    task: str | None,
    max_turns: int,
    reflect_every: int,
    calibration: Calibration,
    prompts: Mapping[str, str],
    overflow_target: float,
    max_recoveries: int,
    plan_tool: bool = False,
    memory_tool: bool = False,
) -> Generator[_Effect, Any, AgentResult]:
    """The loop as a generator of effects; the drivers perform them (sync or awaited)."""
    model = engine.profile.name
    if plan_tool:
        _offer(engine, PLAN_TOOL)
    if memory_tool:
        _offer(engine, MEMORY_TOOL)
    prompt_total = output_total = turns = recoveries = overflows = steps = 0
    if "start" in engine.allowed_events:
        if not isinstance(task, str) or not task.strip():
            raise PolicyError(
                f"'task' must be a non-empty string to start the loop (got {task!r})",
                rule="task",
            )
        yield _Send("start", {"task": task})
        engine.add_message(Message.user(task))

    def done(text: str, finished: bool) -> AgentResult:
        return AgentResult(
            text=text,
            finished=finished,
            turns=turns,
            records=tuple(engine.records),
            usage=Usage(prompt_tokens=prompt_total, output_tokens=output_total),
            recoveries=recoveries,
            overflows=overflows,
        )

    def allowed(event: str) -> bool:
        return event in engine.allowed_events

    def nudge(event: str, **values: str) -> None:
        text = prompts.get(event)
        if text:
            engine.add_message(Message.user(text.format(**values)))

    last_text = ""
    while turns < max_turns and not engine.is_final:
        phase = engine.phase
        try:
            window = engine.window()
            try:
                body = yield _Call(adapter.render(window))
            except ContextOverflow as exc:
                overflows += 1
                counts = _overflow_counts(exc)
                factor = None
                if counts is not None and window.tokens > 0:
                    factor = calibration.observe(model, window.tokens, counts[0])
                log.warning(
                    "agent.context_overflow",
                    phase=phase,
                    estimated=window.tokens,
                    reported=counts[0] if counts else None,
                    limit=counts[1] if counts else None,
                    factor=factor,
                    session=engine.session_id,
                )
                yield from _force_ladder(engine, overflow_target)
                window = engine.window()
                body = yield _Call(adapter.render(window))
            turns += 1
            permitted = getattr(window, "allowed_tools", None)
            names = list(permitted) if permitted is not None else [t.name for t in window.tools]
            if plan_tool:  # the plan tool is every phase's
                names.append(PLAN_TOOL.name)
            checked = window.tools
            if memory_tool:  # so is the memory tool, whose handler checks its own arguments
                names.append(MEMORY_TOOL.name)
                checked = tuple(t for t in checked if t.name != MEMORY_TOOL.name)
            try:
                parsed: ParsedResponse = adapter.parse(body, allowed_tools=names)
                check_arguments(parsed.tool_calls, checked)
            except ResponseError as exc:
                log.warning(
                    "agent.bad_response",
                    phase=phase,
                    rule=exc.rule,
                    field=getattr(exc, "field", None),
                    session=engine.session_id,
                )
                raise
            prompt_total += parsed.usage.prompt_tokens
            output_total += parsed.usage.output_tokens
            if window.tokens > 0:
                observe_usage(calibration, model, window.tokens, parsed.usage)
            said = engine.add_message(parsed.message)
            last_text = parsed.message.text
            calls = parsed.tool_calls
            if calls:
                results = []
                for call in calls:
                    if plan_tool and call.name == PLAN_TOOL.name:
                        engine.set_plan(str(call.input["plan"]))
                        results.append(ToolResultBlock(tool_use_id=call.id, content=_PLAN_SAVED))
                        continue
                    if memory_tool and call.name == MEMORY_TOOL.name:
                        results.append(_remember(engine, call, said.id))
                        continue
                    try:
                        output = yield _Tool(call)
                        results.append(ToolResultBlock(tool_use_id=call.id, content=str(output)))
                    except CtxflowError:
                        raise
                    except Exception as exc:
                        log.warning(
                            "agent.tool_error",
                            tool=call.name,
                            error=f"{type(exc).__name__}: {exc}",
                            session=engine.session_id,
                        )
                        results.append(
                            ToolResultBlock(
                                tool_use_id=call.id,
                                content=f"{type(exc).__name__}: {exc}",
                                is_error=True,
                            )
                        )
                engine.add_message(Message(role=Role.USER, content=tuple(results)))
                if phase == "execution" and allowed("step"):
                    yield _Send("step")
                    steps += 1
                    if reflect_every and steps % reflect_every == 0 and allowed("reflect"):
                        yield _Send("reflect")
                        nudge("reflect")
            elif phase == "planning" and allowed("plan_ready"):
                yield _Send("plan_ready")
                nudge("plan_ready")
            elif phase == "reflection" and allowed("execute"):
                yield _Send("execute")
                nudge("execute")
            elif allowed("finish"):
                yield _Send("finish")
                log.info("agent.finished", turns=turns, session=engine.session_id)
                return done(last_text, True)
            else:
                return done(last_text, False)
        except (ContextOverflow, ResponseError):
            raise
        except CtxflowError as exc:
            if recoveries >= max_recoveries or not allowed("fail"):
                raise
            recoveries += 1
            log.warning(
                "agent.recover",
                phase=engine.phase,
                rule=exc.rule,
                error=f"{type(exc).__name__}: {exc}",
                session=engine.session_id,
            )
            yield _Send("fail")
            yield _Send("recover")
            steps = 0
            nudge("recover", error=f"{type(exc).__name__}: {exc}")
    if not engine.is_final:
        log.warning("agent.max_turns", turns=turns, phase=engine.phase, session=engine.session_id)
    return done(last_text, engine.is_final)


def _force_ladder(engine: Engine | AsyncEngine, target: float) -> Generator[_Effect, Any, None]:
    """Compress the conversation to ``target`` of the flexible budget, whatever the guard says."""
    flexible = getattr(engine.allocation, "flexible", None)
    if not isinstance(flexible, int) or flexible <= 0:
        return
    policy = LadderPolicy(target=target, threshold=target)
    ladder = Ladder(policy=policy, summarizer=engine.summarizer)
    before = engine.conversation.effective_tokens
    result: CompressionResult = yield _Compress(
        ladder, budget=flexible, fixed=fixed_tokens(engine.conversation)
    )
    engine.set_state(result.state)
    log.info(
        "agent.overflow_compressed",
        phase=engine.phase,
        tokens_before=before,
        tokens_after=result.report.tokens_after,
        rungs=list(result.report.rungs_used),
        session=engine.session_id,
    )


class LoopOptions(TypedDict, total=False):
    """The options of :func:`run_agent` and :func:`arun_agent`, as keyword arguments.

    ``task`` starts an engine still in its initial phase (an engine restored
    mid-task just continues); ``max_turns`` (20) bounds the model calls;
    ``reflect_every`` (3; 0 never) sends ``reflect`` after that many steps;
    usage goes to ``calibration`` (a new one when None) under the engine's
    model name; ``prompts`` override :data:`PROMPTS`; on a provider's
    context-overflow error the ladder compresses to ``overflow_target`` (0.3)
    of the flexible budget, at most ``max_recoveries`` (1) times per turn.
    ``plan_tool`` (False) offers the model :data:`PLAN_TOOL` in every phase:
    a call replaces the engine's plan (``Engine.set_plan``), which every
    window shows in the work buffer. ``memory_tool`` (False) offers the
    memory tool (``ctxflow.memory._tool.MEMORY_TOOL``) in every phase: its
    calls are answered by ``handle_memory`` and a change of memory replaces
    the engine's state (``Engine.set_state``), so it shows in the next
    window's memory sections and goes into the next checkpoint; bad arguments
    come back as an ``is_error`` tool result.
    """

    task: str | None
    max_turns: int
    reflect_every: int
    calibration: Calibration | None
    prompts: Mapping[str, str] | None
    overflow_target: float
    max_recoveries: int
    plan_tool: bool
    memory_tool: bool


@attrs.frozen(kw_only=True)
class _Options:
    """The loop's options, checked when made."""

    task: str | None = None
    max_turns: int = 20
    reflect_every: int = 3
    calibration: Calibration | None = None
    prompts: Mapping[str, str] | None = None
    overflow_target: float = 0.3
    max_recoveries: int = 1
    plan_tool: bool = False
    memory_tool: bool = False

    def __attrs_post_init__(self) -> None:
        check_number(self.max_turns, "'max_turns'", kind="finite", rule="max_turns", low=1)
        check_number(
            self.reflect_every, "'reflect_every'", kind="finite", rule="reflect_every", low=0
        )
        check_number(
            self.overflow_target,
            "'overflow_target'",
            kind="finite",
            rule="overflow_target",
            low=0.01,
            high=1.0,
        )
        check_number(
            self.max_recoveries, "'max_recoveries'", kind="finite", rule="max_recoveries", low=0
        )

    def core(self, engine: Any, adapter: Adapter) -> Generator[_Effect, Any, AgentResult]:
        """The loop core for ``engine`` under these options (sync and async share it)."""
        return _core(
            engine,
            adapter,
            task=self.task,
            max_turns=self.max_turns,
            reflect_every=self.reflect_every,
            calibration=self.calibration if self.calibration is not None else Calibration(),
            prompts={**PROMPTS, **(self.prompts or {})},
            overflow_target=self.overflow_target,
            max_recoveries=self.max_recoveries,
            plan_tool=self.plan_tool,
            memory_tool=self.memory_tool,
        )


def _perform(effect: _Effect, engine: Any, client: Any, execute: Any, *, awaited: bool) -> Any:
    """Carry out one effect; under ``awaited`` the result may be awaitable (the async driver)."""
    if isinstance(effect, _Send):
        return engine.send(effect.event, **effect.kwargs)
    if isinstance(effect, _Call):
        return client.complete(effect.request)
    if isinstance(effect, _Tool):
        return execute(effect.call.name, effect.call.input)
    run = effect.ladder.arun if awaited else effect.ladder.run
    return run(engine.conversation, engine.state, budget=effect.budget, fixed=effect.fixed)


class _Driver:
    """Steps a loop core: iterate for its effects, hand back each one's value or error."""

    def __init__(self, core: Generator[_Effect, Any, AgentResult]) -> None:
        self._core = core
        self._value: Any = None
        self._error: Exception | None = None
        self.result: AgentResult | None = None

    def __iter__(self) -> Iterator[_Effect]:
        while True:
            try:
                if self._error is None:
                    effect = self._core.send(self._value)
                else:
                    effect = self._core.throw(self._error)
            except StopIteration as stop:
                self.result = stop.value
                return
            self._value, self._error = None, None
            yield effect

    def give(self, perform: Callable[[], Any]) -> None:
        """Run ``perform``; its value or its error goes back to the core."""
        try:
            self._value = perform()
        except Exception as exc:
            self._error = exc

    async def agive(self, perform: Callable[[], Any]) -> None:
        """:meth:`give`, awaiting what ``perform`` returns when it is awaitable."""
        try:
            self._value = await _maybe_await(perform())
        except Exception as exc:
            self._error = exc

    def finish(self) -> AgentResult:
        """The core's result (after the iteration ended)."""
        assert self.result is not None
        return self.result


def run_agent(
    engine: Engine,
    client: Any,
    tools: Tools,
    *,
    adapter: Adapter,
    **options: Unpack[LoopOptions],
) -> AgentResult:
    """Run one task through ``engine`` with ``client`` until the model answers without a tool.

    ``client`` has ``complete(request) -> response body`` (an SDK client from
    :mod:`ctxflow.adapters` or :class:`ctxflow.testing.ScriptedLLM`);
    ``adapter`` renders windows and parses bodies; the options (``task``,
    ``max_turns``, ``reflect_every``, ...) are :class:`LoopOptions`.
    """
    checked = _Options(**options)
    execute = _executor(tools)
    driver = _Driver(checked.core(engine, adapter))
    for effect in driver:
        driver.give(functools.partial(_perform, effect, engine, client, execute, awaited=False))
    return driver.finish()


async def _maybe_await(value: Any | Awaitable[Any]) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


async def arun_agent(
    engine: AsyncEngine,
    client: Any,
    tools: Tools,
    *,
    adapter: Adapter,
    **options: Unpack[LoopOptions],
) -> AgentResult:
    """The async form of :func:`run_agent`: awaits the engine, the client and async tools.

    ``client.complete`` must be a coroutine function; tools may be sync or async.
    """
    checked = _Options(**options)
    execute = _executor(tools)
    driver = _Driver(checked.core(engine, adapter))
    for effect in driver:
        await driver.agive(
            functools.partial(_perform, effect, engine, client, execute, awaited=True)
        )
    return driver.finish()
