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
import operator
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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


class _SDKClient:
    """What the four clients share: the SDK client they wrap, and its error statuses as ours."""

    api: str
    _sdk_class: str  # the SDK's client class, built from keyword arguments when none is given
    _create: str  # the SDK client's method that sends a request body, as a dotted path

    def __init__(self, client: Any | None = None, **kwargs: Any) -> None:
        self._module = _sdk(self.api)
        self.client = (
            client if client is not None else getattr(self._module, self._sdk_class)(**kwargs)
        )

    @contextmanager
    def _provider_errors(self) -> Iterator[None]:
        """The SDK's error status as a :class:`~ctxflow.errors.ProviderError` (or overflow)."""
        try:
            yield
        except self._module.APIStatusError as exc:
            raise provider_error(exc.body, api=self.api, status=exc.status_code) from exc


class _SyncClient(_SDKClient):
    def complete(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """The provider's response to ``request``, as plain data."""
        with self._provider_errors():
            response = operator.attrgetter(self._create)(self.client)(**request)
        return _dump(response)


class _AsyncClient(_SDKClient):
    async def complete(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """The provider's response to ``request``, as plain data."""
        with self._provider_errors():
            response = await operator.attrgetter(self._create)(self.client)(**request)
        return _dump(response)


class AnthropicClient(_SyncClient):
    """Sends Anthropic Messages request bodies with an ``anthropic.Anthropic`` client.

    Pass a configured ``client``, or keyword arguments to build one.
    """

    api = "anthropic"
    _sdk_class = "Anthropic"
    _create = "messages.create"


class AsyncAnthropicClient(_AsyncClient):
    """The async form of :class:`AnthropicClient` (``anthropic.AsyncAnthropic``)."""

    api = "anthropic"
    _sdk_class = "AsyncAnthropic"
    _create = "messages.create"


class OpenAIClient(_SyncClient):
    """Sends Chat Completions request bodies with an ``openai.OpenAI`` client.

    Pass a configured ``client``, or keyword arguments to build one.
    """

    api = "openai"
    _sdk_class = "OpenAI"
    _create = "chat.completions.create"


class AsyncOpenAIClient(_AsyncClient):
    """The async form of :class:`OpenAIClient` (``openai.AsyncOpenAI``)."""

    api = "openai"
    _sdk_class = "AsyncOpenAI"
    _create = "chat.completions.create"
