"""The extension points of ctxflow, as ``typing.Protocol`` classes.

Protocols hold no logic. Each has a test double in :mod:`ctxflow.testing`.
Sync and async variants stand side by side; an implementation picks one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ctxflow.model import Message
from ctxflow.model._conversation import Measure

__all__ = [
    "AsyncLLMClient",
    "AsyncSummarizer",
    "Codec",
    "LLMClient",
    "Measure",
    "Summarizer",
    "TokenCounter",
]


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the tokens of a text with one encoding."""

    @property
    def name(self) -> str:
        """The encoding's name (``cl100k_base``, ``heuristic``, ...)."""
        ...

    def count(self, text: str) -> int:
        """The number of tokens of ``text``."""
        ...


@runtime_checkable
class Summarizer(Protocol):
    """Turns a span of messages into one summary text."""

    def summarize(self, messages: Sequence[Message], *, max_tokens: int) -> str:
        """A summary of ``messages`` of at most about ``max_tokens`` tokens."""
        ...


@runtime_checkable
class AsyncSummarizer(Protocol):
    """The async form of :class:`Summarizer`."""

    async def summarize(self, messages: Sequence[Message], *, max_tokens: int) -> str:
        """A summary of ``messages`` of at most about ``max_tokens`` tokens."""
        ...


@runtime_checkable
class LLMClient(Protocol):
    """Sends one request body to a model and returns the raw response body."""

    def complete(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """The provider's response to ``request``."""
        ...


@runtime_checkable
class AsyncLLMClient(Protocol):
    """The async form of :class:`LLMClient`."""

    async def complete(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """The provider's response to ``request``."""
        ...


@runtime_checkable
class Codec(Protocol):
    """Turns plain data into bytes and back; wrappers compose (compress, encrypt)."""

    def encode(self, value: Any) -> bytes:
        """The bytes of ``value``."""
        ...

    def decode(self, data: bytes) -> Any:
        """The value of ``data``; raises ``CorruptCheckpoint`` on anything wrong."""
        ...
