"""What every provider adapter shares: the window shape it renders, parsed responses, usage.

Adapters are the outer ring: they import the model, the tokens and the layers,
and nothing in the core imports them. A renderer takes anything with
``system``, ``messages`` and ``tools`` (:class:`WindowLike`), so the budget's
``Window`` works without this module importing it.

Usage is normalised across providers. ``prompt_tokens`` is everything the
provider read as input, cached or not: Anthropic reports uncached
``input_tokens`` apart from ``cache_creation_input_tokens`` and
``cache_read_input_tokens`` (their sum is the prompt), OpenAI reports
``prompt_tokens`` with the cached part inside it. Calibration must compare a
local estimate of the whole prompt with that sum, never with Anthropic's
``input_tokens`` alone, or every cache hit would look like a 10x overestimate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Protocol, TypedDict

import attrs

from ctxflow._checks import number_field
from ctxflow.errors import InvalidMessage, PolicyError, ResponseError
from ctxflow.layers import ToolDef
from ctxflow.model import Block, Message, Role, ToolUseBlock, new_id
from ctxflow.tokens import Calibration

__all__ = [
    "ParsedResponse",
    "StopReason",
    "Usage",
    "WindowLike",
    "observe_usage",
    "usage_count",
    "usage_object",
]


class WindowLike(Protocol):
    """Anything a renderer can turn into a request: a system text, messages and tools."""

    @property
    def system(self) -> str:
        """The system prompt with the rendered context layers."""
        ...

    @property
    def messages(self) -> Sequence[Message]:
        """The messages of the window, oldest first."""
        ...

    @property
    def tools(self) -> Sequence[ToolDef]:
        """The tools offered to the model in this window."""
        ...


class WindowParts(TypedDict):
    """A window's parts as the keyword arguments of a body builder."""

    system: str
    messages: Sequence[Message]
    tools: Sequence[ToolDef]
    context: str


def window_parts(window: WindowLike) -> WindowParts:
    """A window's ``system``, ``messages``, ``tools`` and late ``context``, as keyword arguments.

    ``context`` is ``""`` for a window type that has none.
    """
    context = getattr(window, "context", "")
    return {
        "system": window.system,
        "messages": window.messages,
        "tools": window.tools,
        "context": context if isinstance(context, str) else "",
    }


def append_context(messages: list[dict[str, Any]], context: str) -> None:
    """Add a window's late context after every conversation message of a rendered body.

    The context becomes the last text block of a trailing user message (a
    final user message gets it as one more block or paragraph; otherwise a
    user message of its own), so roles still alternate and every block of the
    conversation renders exactly as it will next turn — a cacheable prefix.
    """
    last = messages[-1] if messages else None
    if last is None or last.get("role") != "user":
        messages.append({"role": "user", "content": context})
    elif isinstance(last.get("content"), list):
        last["content"] = [*last["content"], {"type": "text", "text": context}]
    else:
        last["content"] = f"{last.get('content') or ''}\n\n{context}".lstrip()


class StopReason(StrEnum):
    """Why the model stopped, in provider-neutral terms."""

    END_TURN = "end_turn"
    TOOL_USE = "tool_use"
    MAX_TOKENS = "max_tokens"
    STOP_SEQUENCE = "stop_sequence"
    REFUSAL = "refusal"
    PAUSE = "pause"
    CONTEXT_FULL = "context_full"
    OTHER = "other"


_COUNT = number_field("non-negative integer", rule="usage_value", error=ResponseError)


@attrs.frozen(kw_only=True)
class Usage:
    """Token usage one response reports, normalised across providers.

    ``prompt_tokens`` includes the cached part (``cache_read_tokens`` read from
    the cache, ``cache_write_tokens`` written to it).
    """

    prompt_tokens: int = attrs.field(default=0, validator=_COUNT)
    output_tokens: int = attrs.field(default=0, validator=_COUNT)
    cache_read_tokens: int = attrs.field(default=0, validator=_COUNT)
    cache_write_tokens: int = attrs.field(default=0, validator=_COUNT)
    reasoning_tokens: int = attrs.field(default=0, validator=_COUNT)

    @property
    def uncached_prompt_tokens(self) -> int:
        """Prompt tokens that were neither read from nor written to the cache."""
        return max(self.prompt_tokens - self.cache_read_tokens - self.cache_write_tokens, 0)

    @property
    def total_tokens(self) -> int:
        """Prompt plus output tokens."""
        return self.prompt_tokens + self.output_tokens


@attrs.frozen(kw_only=True)
class ParsedResponse:
    """A provider response read back: the assistant message, usage and why it stopped.

    ``stop_reason`` is the provider's own word (``end_turn``, ``tool_calls``,
    ...); ``stop`` is its neutral form.
    """

    message: Message
    usage: Usage
    stop: StopReason
    stop_reason: str | None = None
    model: str | None = None
    id: str | None = None
    api: str = "anthropic"

    @property
    def tool_calls(self) -> tuple[ToolUseBlock, ...]:
        """The tool_use blocks the model asked for, in order."""
        return self.message.tool_uses


def tool_names(tools: Iterable[str | ToolDef] | None) -> frozenset[str] | None:
    """The set of tool names of ``tools`` (names or definitions); None stays None."""
    if tools is None:
        return None
    return frozenset(t if isinstance(t, str) else t.name for t in tools)


def check_options(options: Mapping[str, Any] | None, rendered: frozenset[str]) -> None:
    """A PolicyError when ``options`` would replace a request field the renderer sets."""
    clash = sorted(rendered & set(options or ()))
    if clash:
        raise PolicyError(
            f"'options' may not set fields the renderer owns (got {', '.join(clash)})",
            rule="option_clash",
            fields=clash,
        )


def response_object(body: Any) -> Mapping[str, Any]:
    """A response body as a mapping, or a ResponseError when it is not an object."""
    return _object(body, "body", "a response body")


def check_tool_name(name: object, allowed: frozenset[str] | None, field: str) -> None:
    """A ResponseError at ``field`` when a tool call names a tool the request did not offer."""
    if allowed is not None and name not in allowed:
        raise ResponseError(
            f"'{field}' must name a tool offered in the request "
            f"(got {name!r}; offered: {', '.join(sorted(allowed)) or 'none'})",
            rule="unknown_tool",
            field=field,
            tool=name,
        )


def assistant_message(blocks: Sequence[Block], message_id: str | None, field: str) -> Message:
    """The assistant message of a response's blocks; an invalid one is a ResponseError."""
    try:
        return Message(role=Role.ASSISTANT, content=tuple(blocks), id=message_id or new_id())
    except InvalidMessage as exc:
        raise ResponseError(exc.message, rule=exc.rule, field=field) from None


def parsed_response(
    body: Mapping[str, Any],
    message: Message,
    usage: Usage,
    *,
    stop: StopReason,
    raw_stop: object,
    api: str,
) -> ParsedResponse:
    """A :class:`ParsedResponse`, with the body's ``model`` and ``id`` when they are strings."""
    return ParsedResponse(
        message=message,
        usage=usage,
        stop=stop,
        stop_reason=raw_stop if isinstance(raw_stop, str) else None,
        model=body.get("model") if isinstance(body.get("model"), str) else None,
        id=body.get("id") if isinstance(body.get("id"), str) else None,
        api=api,
    )


def observe_usage(
    calibration: Calibration, model: str, estimated_prompt_tokens: int, usage: Usage
) -> float | None:
    """Feed a response's prompt usage to ``calibration``; return the new factor.

    Returns None (and records nothing) when the provider reported no prompt
    tokens, which some gateways do; a non-positive estimate is the caller's
    mistake and raises :class:`~ctxflow.errors.PolicyError`.
    """
    if usage.prompt_tokens <= 0:
        return None
    return calibration.observe(model, estimated_prompt_tokens, usage.prompt_tokens)


def get_path(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``body[key]`` checked against ``kind``; a ResponseError naming ``where.key`` otherwise."""
    value = body.get(key)
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        field = f"{where}.{key}" if where else key
        raise ResponseError(
            f"'{field}' must be {names} (got {type(value).__name__})",
            rule="response_shape",
            field=field,
        )
    return value


def usage_count(data: Mapping[str, Any], key: str, where: str = "usage") -> int:
    """A token count from a provider's usage object (absent: 0; anything odd: an error)."""
    value = data.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ResponseError(
            f"'{where}.{key}' must be a non-negative integer (got {value!r})",
            rule="usage_value",
            field=f"{where}.{key}",
        )
    return value


def usage_object(usage: Any) -> Mapping[str, Any]:
    """The response's ``usage`` as a mapping (empty when absent), or a typed error."""
    return {} if usage is None else _object(usage, "usage", "'usage'")


def _object(value: Any, field: str, name: str) -> Mapping[str, Any]:
    """``value`` when it is an object (a mapping); a ResponseError at ``field`` otherwise."""
    if isinstance(value, Mapping):
        return value
    raise ResponseError(
        f"{name} must be an object (got {type(value).__name__})", rule="response_shape", field=field
    )
