"""A ``create_agent`` middleware that sends the model a ctxflow window instead of the history.

Each agent thread (the ``thread_id`` of the run's config; one shared thread
without one) gets an :class:`~ctxflow.engine.Engine`. Before every model call
the middleware appends the messages the agent's state gained since the last
call (converted by :func:`~ctxflow.integrations.langchain.to_ctxflow`), moves
the engine's phase chart from what they show, and replaces the request's
messages and system message with the engine's window:

- the window is pair-safe and within the input budget (``budget`` tokens, the
  system prompt and tool definitions included), laid out for the prompt cache;
- after every tool round the compression guard runs the ladder (old tool
  results cleared to a placeholder first): nothing is deleted, and the
  ``recall`` tool this middleware registers gives a cleared result back by the
  call id its placeholder names;
- the chart follows the agent's own steps: the first model call plans
  (``start``), the model's first answer ends planning (``plan_ready``; its text
  becomes the plan), every finished tool round is a ``step``, every
  ``reflect_every`` steps the next call reflects (``reflect``) and the one after
  it continues (``execute``). The chart stays in execution between user turns.

The agent's state is not changed: the history stays whole in LangGraph's
state (and its checkpointer); only what the model is sent is the window. The
late context (phase, plan, memory) goes in a final human message.

Gotcha: the conversation is followed by position. When something else rewrites
the state's messages (another middleware that summarizes or trims them), the
thread's engine starts again from the new history.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.config import get_config

from ctxflow.budget import Window
from ctxflow.compression import recall
from ctxflow.engine import Engine, PhaseConfig
from ctxflow.errors import CtxflowError, PolicyError
from ctxflow.integrations.langchain._messages import from_ctxflow, to_ctxflow
from ctxflow.layers import LayeredState, SystemLayer, ToolDef
from ctxflow.model import Message, Role, ToolResultBlock, ToolUseBlock
from ctxflow.protocols import Summarizer

__all__ = ["CtxflowMiddleware"]

_SHARED = "__shared__"


@attrs.define
class _Thread:
    """One agent thread: its engine, how many state messages it has taken in, its steps."""

    engine: Engine
    seen: int = 0
    last_id: str | None = None
    steps: int = 0
    window: Window | None = None


def _tool_def(tool: BaseTool | Mapping[str, Any]) -> ToolDef:
    """A ctxflow tool definition for a LangChain tool (its JSON schema, as providers get it)."""
    spec = convert_to_openai_tool(tool)["function"]
    return ToolDef(
        name=spec["name"],
        description=spec.get("description") or "",
        input_schema=spec.get("parameters") or {"type": "object", "properties": {}},
    )


class CtxflowMiddleware(AgentMiddleware):
    """Gives a ``create_agent`` model a pair-safe ctxflow window within a token budget.

    ``budget`` is the input budget of every call in tokens (system prompt,
    tool definitions and messages); ``model`` names the ctxflow model profile
    whose counter measures it. ``reflect_every`` (0: never) makes every that
    many tool rounds end in a reflection call. ``phases`` and ``summarizer``
    go to each thread's :class:`~ctxflow.engine.Engine`.
    """

    def __init__(
        self,
        *,
        budget: int,
        model: str = "claude-sonnet-4-5",
        reflect_every: int = 0,
        phases: Mapping[str, PhaseConfig] | None = None,
        summarizer: Summarizer | None = None,
    ) -> None:
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise PolicyError(
                f"'budget' must be a positive number of tokens (got {budget!r})", rule="budget"
            )
        if not isinstance(reflect_every, int) or reflect_every < 0:
            raise PolicyError(
                f"'reflect_every' must be an integer >= 0 (got {reflect_every!r})",
                rule="reflect_every",
            )
        super().__init__()
        self.budget = budget
        self.model = model
        self.reflect_every = reflect_every
        self.phases = dict(phases or {})
        self.summarizer = summarizer
        self._threads: dict[str, _Thread] = {}
        self._lock = threading.RLock()
        self.tools = [
            StructuredTool.from_function(
                func=self._recall,
                name="recall",
                description=(
                    "Give back a tool result or message the context manager cleared or "
                    "condensed, by the call id (or message id) its placeholder names."
                ),
            )
        ]

    # -- what the model gets ---------------------------------------------------

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any]:
        """Send the model the thread's window instead of the whole history."""
        return handler(self._prepare(request))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any]:
        """See :meth:`wrap_model_call`."""
        return await handler(self._prepare(request))

    def window(self, thread_id: str | None = None) -> Window | None:
        """The window the thread's last model call was given (None before its first)."""
        with self._lock:
            thread = self._threads.get(thread_id or _SHARED)
            return thread.window if thread is not None else None

    def engine(self, thread_id: str | None = None) -> Engine | None:
        """The engine of a thread (None before its first model call)."""
        with self._lock:
            thread = self._threads.get(thread_id or _SHARED)
            return thread.engine if thread is not None else None

    def _prepare(self, request: ModelRequest[Any]) -> ModelRequest[Any]:
        key = _thread_key()
        with self._lock:
            thread = self._threads.get(key)
            messages = list(request.messages)
            if thread is None or not self._follows(thread, messages):
                thread = self._start(request)
                self._threads[key] = thread
            self._take(thread, messages[thread.seen :])
            thread.seen = len(messages)
            thread.last_id = messages[-1].id if messages else None
            window = thread.engine.window()
            thread.window = window
        sent: list[AnyMessage] = list(from_ctxflow(window.messages))  # type: ignore[arg-type]
        if window.context:
            sent.append(HumanMessage(content=window.context))
        return request.override(
            messages=sent,
            system_message=SystemMessage(content=window.system) if window.system else None,
        )

    def _follows(self, thread: _Thread, messages: Sequence[BaseMessage]) -> bool:
        """Whether the state's messages still extend what the thread took in."""
        if len(messages) < thread.seen:
            return False
        return thread.seen == 0 or messages[thread.seen - 1].id == thread.last_id

    def _start(self, request: ModelRequest[Any]) -> _Thread:
        tools = tuple(_tool_def(t) for t in request.tools)
        prompt = request.system_prompt or ""
        state = LayeredState(system=SystemLayer(prompt=prompt, tools=tools))
        engine = Engine(
            model=self.model,
            state=state,
            budget=self.budget,
            phases=self.phases,
            summarizer=self.summarizer,
        )
        return _Thread(engine=engine)

    def _take(self, thread: _Thread, new: Sequence[BaseMessage]) -> None:
        """Append the new state messages and move the chart as they show."""
        engine = thread.engine
        converted = to_ctxflow(new)
        if converted and engine.conversation.messages:
            last = engine.conversation.messages[-1]
            if converted[0].role is last.role:
                # A turn that continues the last message's role (two user turns in a row)
                # joins it as a message of its own only where the API allows: otherwise
                # a short bridge keeps the roles alternating.
                bridge = Role.ASSISTANT if last.role is Role.USER else Role.USER
                engine.add_message(Message(role=bridge, content="(continued)"))
        for message in converted:
            if message.role is Role.SYSTEM:
                continue  # the request's system message is the window's fixed cost
            if engine.phase == "idle" and message.role is Role.USER:
                engine.send("start", task=message.text or "(task)")
            engine.add_message(message)
            self._advance(thread, message)

    def _advance(self, thread: _Thread, message: Message) -> None:
        """Move the chart after one appended message (see the module docstring)."""
        engine = thread.engine
        allowed = engine.allowed_events
        if message.role is Role.ASSISTANT:
            if engine.phase == "planning" and "plan_ready" in allowed:
                text = message.text.strip()
                if text:
                    engine.set_plan(text)
                engine.send("plan_ready")
            elif engine.phase == "reflection" and "execute" in allowed:
                engine.send("execute")
            return
        rounds = any(isinstance(b, ToolResultBlock) for b in message.content)
        if rounds and engine.phase == "execution" and "step" in allowed:
            engine.send("step")
            thread.steps += 1
            if (
                self.reflect_every
                and thread.steps % self.reflect_every == 0
                and "reflect" in engine.allowed_events
            ):
                engine.send("reflect")

    # -- the recall tool --------------------------------------------------------

    def _recall(self, id: str) -> str:
        """Give back a cleared tool result or message by its call id or message id."""
        with self._lock:
            thread = self._threads.get(_thread_key())
            if thread is None:
                return f"nothing to recall: no conversation holds {id!r}"
            try:
                original = recall(thread.engine.conversation, id)
            except CtxflowError:
                return f"nothing to recall: no message or tool call has the id {id!r}"
        for block in original.content:
            if isinstance(block, ToolResultBlock) and block.tool_use_id == id:
                return block.text
        parts = [
            block.text if isinstance(block, ToolResultBlock) else getattr(block, "text", "")
            for block in original.content
            if not isinstance(block, ToolUseBlock)
        ]
        return "\n".join(p for p in parts if p) or original.text


def _thread_key() -> str:
    """The thread id of the running graph's config (one shared key outside a run)."""
    try:
        config = get_config()
    except RuntimeError:
        return _SHARED
    thread = (config.get("configurable") or {}).get("thread_id")
    return _SHARED if thread is None else str(thread)
