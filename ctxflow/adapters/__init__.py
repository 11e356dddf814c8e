"""Adapter adapters: windows to request bodies, responses to messages, SDK clients.

An outer ring: the engine receives an adapter and a client and never imports
this package. Renderers accept anything with ``system``, ``messages`` and
``tools`` (:class:`WindowLike`). The official SDKs are optional and imported
only when a client in :mod:`ctxflow.adapters._clients` is built.
"""

from ctxflow.adapters._anthropic import (
    anthropic_body,
    anthropic_usage,
    parse_anthropic,
    render_anthropic,
    tool_to_anthropic,
)
from ctxflow.adapters._base import ParsedResponse, StopReason, Usage, WindowLike, observe_usage
from ctxflow.adapters._caching import (
    MAX_BREAKPOINTS,
    CachePolicy,
    CachePrices,
    PrefixMeter,
    PrefixReuse,
    apply_breakpoints,
    cached_prefix,
    canonical_json,
    count_breakpoints,
    prefix_fingerprint,
    prefix_preserved,
    prefix_reuse,
)
from ctxflow.adapters._clients import (
    AnthropicClient,
    AsyncAnthropicClient,
    AsyncOpenAIClient,
    OpenAIClient,
)
from ctxflow.adapters._errors import is_overflow, provider_error
from ctxflow.adapters._openai import (
    openai_body,
    openai_usage,
    parse_openai,
    render_openai,
    tool_to_openai,
)
from ctxflow.adapters._providers import Adapter, AnthropicAdapter, OpenAIAdapter

__all__ = [
    "MAX_BREAKPOINTS",
    "Adapter",
    "AnthropicAdapter",
    "AnthropicClient",
    "AsyncAnthropicClient",
    "AsyncOpenAIClient",
    "CachePolicy",
    "CachePrices",
    "OpenAIAdapter",
    "OpenAIClient",
    "ParsedResponse",
    "PrefixMeter",
    "PrefixReuse",
    "StopReason",
    "Usage",
    "WindowLike",
    "anthropic_body",
    "anthropic_usage",
    "apply_breakpoints",
    "cached_prefix",
    "canonical_json",
    "count_breakpoints",
    "is_overflow",
    "observe_usage",
    "openai_body",
    "openai_usage",
    "parse_anthropic",
    "parse_openai",
    "prefix_fingerprint",
    "prefix_preserved",
    "prefix_reuse",
    "provider_error",
    "render_anthropic",
    "render_openai",
    "tool_to_anthropic",
    "tool_to_openai",
]
