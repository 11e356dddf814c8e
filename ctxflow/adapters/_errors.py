"""Provider error bodies as ctxflow errors, so callers never import an SDK to catch them.

The one refusal an agent loop must tell apart is "the prompt is too long":
it calls for compression and a retry, not a failure. Providers word it
differently (Anthropic: ``prompt is too long: N tokens > M maximum``, a 400, or
a 413 ``request_too_large``; OpenAI: code ``context_length_exceeded``), so
:func:`provider_error` reads both and returns
:class:`~ctxflow.errors.ContextOverflow` for any of them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ctxflow.errors import ContextOverflow, ProviderError

__all__ = ["is_overflow", "provider_error"]

_OVERFLOW_TEXT = re.compile(
    r"prompt is too long|maximum context length|context length|context window|too many tokens",
    re.IGNORECASE,
)
_OVERFLOW_CODES = frozenset(
    {"context_length_exceeded", "request_too_large", "string_above_max_length"}
)


def _inner(body: Any) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        error = body.get("error")
        return error if isinstance(error, Mapping) else body
    return {}


def is_overflow(status: int | None, body: Any) -> bool:
    """True when an error status and body say the prompt exceeded the model's window."""
    inner = _inner(body)
    code = inner.get("code") or inner.get("type")
    message = str(inner.get("message", ""))
    if code in _OVERFLOW_CODES or status == 413:
        return True
    return status in (None, 400) and bool(_OVERFLOW_TEXT.search(message))


def provider_error(body: Any, *, api: str, status: int | None = None) -> ProviderError:
    """The ctxflow error for a provider's error body (``ContextOverflow`` when it is one)."""
    inner = _inner(body)
    kind = inner.get("type") if isinstance(inner.get("type"), str) else None
    code = inner.get("code") if isinstance(inner.get("code"), str) else None
    text = str(inner.get("message") or "no message")
    overflow = is_overflow(status, body)
    cls = ContextOverflow if overflow else ProviderError
    where = f"{api} returned an error" + (f" ({status})" if status is not None else "")
    return cls(
        f"{where}: {text}",
        rule="context_overflow" if overflow else "provider_error",
        api=api,
        status=status,
        error_type=kind,
        code=code,
        body=dict(body) if isinstance(body, Mapping) else body,
    )
