"""Thin LLM clients over the official ``anthropic`` and ``openai`` SDKs.

Each implements :class:`ctxflow.protocols.LLMClient` (or the async form):
``complete(request)`` sends a rendered body and returns the response as plain
JSON data (the SDK model's ``model_dump(mode="json")``), which the parsers in
this package read. The SDKs are optional: they are imported when a client is
built, never when ctxflow is imported. An error status from the provider is
raised as :class:`~ctxflow.errors.ProviderError`, or
:class:`~ctxflow.errors.ContextOverflow` when the prompt was too long, with
the SDK's exception as its ``__cause__``; connection errors and timeouts pass
through as the SDK raised them (its retry settings apply).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from ctxflow.adapters._errors import provider_error

__all__ = ["AnthropicClient", "AsyncAnthropicClient", "AsyncOpenAIClient", "OpenAIClient"]


def _sdk(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"the {name} client needs the {name!r} package (pip install {name})", name=name
        ) from exc


def _dump(response: Any) -> dict[str, Any]:
    data = response.model_dump(mode="json")
    if not isinstance(data, dict):  # pragma: no cover - SDK models always dump to dicts
        raise TypeError(f"the SDK response dumped to {type(data).__name__}, not a dict")
    return data


class AnthropicClient:
    """Sends Anthropic Messages request bodies with an ``anthropic.Anthropic`` client.

    Pass a configured ``client``, or keyword arguments to build one.
    """

    api = "anthropic"

    def __init__(self, client: Any | None = None, **kwargs: Any) -> None:
        self._module = _sdk("anthropic")
        self.client = client if client is not None else self._module.Anthropic(**kwargs)

    def complete(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """The provider's response to ``request``, as plain data."""
        try:
            response = self.client.messages.create(**request)
        except self._module.APIStatusError as exc:
            raise provider_error(exc.body, api=self.api, status=exc.status_code) from exc
        return _dump(response)


class AsyncAnthropicClient:
    """The async form of :class:`AnthropicClient` (``anthropic.AsyncAnthropic``)."""

    api = "anthropic"

    def __init__(self, client: Any | None = None, **kwargs: Any) -> None:
        self._module = _sdk("anthropic")
        self.client = client if client is not None else self._module.AsyncAnthropic(**kwargs)

    async def complete(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """The provider's response to ``request``, as plain data."""
        try:
            response = await self.client.messages.create(**request)
        except self._module.APIStatusError as exc:
            raise provider_error(exc.body, api=self.api, status=exc.status_code) from exc
        return _dump(response)


class OpenAIClient:
    """Sends Chat Completions request bodies with an ``openai.OpenAI`` client.

    Pass a configured ``client``, or keyword arguments to build one.
    """

    api = "openai"

    def __init__(self, client: Any | None = None, **kwargs: Any) -> None:
        self._module = _sdk("openai")
        self.client = client if client is not None else self._module.OpenAI(**kwargs)

    def complete(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """The provider's response to ``request``, as plain data."""
        try:
            response = self.client.chat.completions.create(**request)
        except self._module.APIStatusError as exc:
            raise provider_error(exc.body, api=self.api, status=exc.status_code) from exc
        return _dump(response)


class AsyncOpenAIClient:
    """The async form of :class:`OpenAIClient` (``openai.AsyncOpenAI``)."""

    api = "openai"

    def __init__(self, client: Any | None = None, **kwargs: Any) -> None:
        self._module = _sdk("openai")
        self.client = client if client is not None else self._module.AsyncOpenAI(**kwargs)

    async def complete(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """The provider's response to ``request``, as plain data."""
        try:
            response = await self.client.chat.completions.create(**request)
        except self._module.APIStatusError as exc:
            raise provider_error(exc.body, api=self.api, status=exc.status_code) from exc
        return _dump(response)
