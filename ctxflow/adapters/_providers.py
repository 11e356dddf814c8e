"""One object per provider that renders windows and parses responses with fixed options.

The engine loop receives an :class:`Adapter` (and an LLM client) and never imports
this package; the frozen adapters here bundle a model name and request
options so that each turn only passes the window and the response.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import attrs

from ctxflow.adapters._anthropic import parse_anthropic, render_anthropic
from ctxflow.adapters._base import ParsedResponse, WindowLike
from ctxflow.adapters._caching import CachePolicy
from ctxflow.adapters._openai import parse_openai, render_openai
from ctxflow.layers import ToolDef

__all__ = ["Adapter", "AnthropicAdapter", "OpenAIAdapter"]


@runtime_checkable
class Adapter(Protocol):
    """Renders a window as a request body and reads the response body back."""

    def render(self, window: WindowLike) -> dict[str, Any]:
        """The request body for ``window``."""
        ...

    def parse(
        self, body: Mapping[str, Any], *, allowed_tools: Iterable[str | ToolDef] | None = None
    ) -> ParsedResponse:
        """The assistant message and usage of a response body."""
        ...


class _Parses:
    """The half both adapters share: a response body read by the class's parser."""

    _parser: ClassVar[Callable[..., ParsedResponse]]

    def parse(
        self, body: Mapping[str, Any], *, allowed_tools: Iterable[str | ToolDef] | None = None
    ) -> ParsedResponse:
        """The assistant message and usage of a response body."""
        return type(self)._parser(body, allowed_tools=allowed_tools)


@attrs.frozen(kw_only=True)
class AnthropicAdapter(_Parses):
    """The Anthropic Messages API for one model, with prompt caching by default.

    The default policy marks the tools, the system text and the end of the
    conversation, so each turn reads everything before its new messages from
    the cache (the window's late context comes after the last mark).
    """

    model: str
    max_tokens: int = 4096
    cache: CachePolicy | None = attrs.field(factory=lambda: CachePolicy(last_message=True))
    options: Mapping[str, Any] = attrs.field(factory=dict)

    def render(self, window: WindowLike) -> dict[str, Any]:
        """The request body for ``window``."""
        return render_anthropic(
            window,
            model=self.model,
            max_tokens=self.max_tokens,
            cache=self.cache,
            options=self.options,
        )

    _parser = staticmethod(parse_anthropic)


@attrs.frozen(kw_only=True)
class OpenAIAdapter(_Parses):
    """The OpenAI Chat Completions API for one model."""

    model: str
    max_tokens: int | None = None
    system_role: Literal["system", "developer"] = "system"
    options: Mapping[str, Any] = attrs.field(factory=dict)

    def render(self, window: WindowLike) -> dict[str, Any]:
        """The request body for ``window``."""
        return render_openai(
            window,
            model=self.model,
            max_tokens=self.max_tokens,
            system_role=self.system_role,
            options=self.options,
        )

    _parser = staticmethod(parse_openai)
