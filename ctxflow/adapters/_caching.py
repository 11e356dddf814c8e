"""Anthropic prompt caching: where the breakpoints go, and whether a prefix survived.

Anthropic caches a request's prefix in the order tools → system → messages,
up to each block marked ``cache_control``; at most four marks per request.
A cache read needs the new request to start with exactly the cached bytes, so
the stable part must render the same way every turn: renderers here build
every dict in a fixed key order, never put a volatile value (a step counter,
a time) before a breakpoint, and never reorder earlier blocks.

Gotchas:

- A mark does not belong to the prefix: moving the "last message" mark one
  message on does not invalidate the cache. :func:`cached_prefix` therefore
  strips every ``cache_control`` before comparing.
- Thinking blocks (and empty text) cannot carry a mark; the mark moves back
  to the last block of the same message that can.
- A top-level ``cache_control`` (Anthropic's automatic mark on the last
  cacheable block) takes one of the four slots too.
- A system prompt given as a string is the same prefix as one text block of
  that string; both fingerprint alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, Literal

import attrs

from ctxflow.errors import PolicyError

__all__ = [
    "MAX_BREAKPOINTS",
    "CachePolicy",
    "CachePrices",
    "PrefixMeter",
    "PrefixReuse",
    "apply_breakpoints",
    "cached_prefix",
    "canonical_json",
    "count_breakpoints",
    "prefix_fingerprint",
    "prefix_preserved",
    "prefix_reuse",
]

#: Anthropic accepts at most this many ``cache_control`` marks per request.
MAX_BREAKPOINTS = 4

_UNMARKABLE = frozenset({"thinking", "redacted_thinking"})


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise PolicyError(
            f"'{attribute.name}' must be >= 0 (got {value})", rule="cache_policy", field="stable"
        )


@attrs.frozen(kw_only=True)
class CachePolicy:
    """Which breakpoints to mark.

    ``tools`` marks the last tool, ``system`` the last system block,
    ``stable_messages`` (when > 0) the end of the first that many input
    messages, ``last_message`` the end of the last message (so the next turn
    reads the whole conversation so far from the cache). ``ttl`` is
    Anthropic's cache lifetime (``"5m"`` or ``"1h"``; None: the default).
    """

    tools: bool = True
    system: bool = True
    stable_messages: int = attrs.field(default=0, validator=_non_negative)
    last_message: bool = False
    ttl: Literal["5m", "1h"] | None = None

    def mark(self) -> dict[str, Any]:
        """The ``cache_control`` object this policy puts on a block."""
        out: dict[str, Any] = {"type": "ephemeral"}
        if self.ttl is not None:
            out["ttl"] = self.ttl
        return out


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _system_blocks(system: Any) -> list[Any]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"type": "text", "text": system}]
    return list(system)


def _marked(item: Any) -> bool:
    return isinstance(item, Mapping) and item.get("cache_control") is not None


def _blocks(body: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every prefix item of ``body`` in cache order, with a stable label."""
    for i, tool in enumerate(body.get("tools") or ()):
        yield f"tools[{i}]", tool
    for i, block in enumerate(_system_blocks(body.get("system"))):
        yield f"system[{i}]", block
    for m, message in enumerate(body.get("messages") or ()):
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        for b, block in enumerate(content or ()):
            yield f"messages[{m}].{message.get('role')}[{b}]", block


def count_breakpoints(body: Mapping[str, Any]) -> int:
    """How many breakpoints ``body`` marks (blocks, plus a top-level automatic mark)."""
    return int(_marked(body)) + sum(1 for _, item in _blocks(body) if _marked(item))


def _item_bytes(label: str, item: Any) -> bytes:
    if isinstance(item, Mapping):
        item = {k: v for k, v in item.items() if k != "cache_control"}
    return label.encode() + b"=" + canonical_json(item)


def _items(body: Mapping[str, Any], *, cached_only: bool) -> list[bytes]:
    pairs = list(_blocks(body))
    if cached_only:
        last = max((i for i, (_, item) in enumerate(pairs) if _marked(item)), default=-1)
        pairs = pairs[: last + 1]
    return [_item_bytes(label, item) for label, item in pairs]


def cached_prefix(body: Mapping[str, Any]) -> bytes:
    """The canonical bytes of ``body``'s prefix up to its last breakpoint (marks stripped)."""
    return b"\n".join(_items(body, cached_only=True))


def prefix_fingerprint(body: Mapping[str, Any]) -> str | None:
    """A SHA-256 of :func:`cached_prefix`; None when ``body`` marks no breakpoint."""
    items = _items(body, cached_only=True)
    if not items:
        return None
    return hashlib.sha256(b"\n".join(items)).hexdigest()


def prefix_preserved(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """True when ``after`` still starts with the prefix ``before`` cached.

    A compression report uses this to say whether rewriting the window
    invalidated the provider's cache. False when ``before`` cached nothing.
    """
    cached = _items(before, cached_only=True)
    if not cached:
        return False
    return _items(after, cached_only=False)[: len(cached)] == cached


def _mark_last(blocks: Sequence[MutableMapping[str, Any]], end: int, mark: dict[str, Any]) -> bool:
    for position in range(end, -1, -1):
        block = blocks[position]
        if block.get("type") in _UNMARKABLE:
            continue
        if block.get("type") == "text" and not str(block.get("text", "")).strip():
            continue
        block["cache_control"] = dict(mark)
        return True
    return False


def apply_breakpoints(
    body: MutableMapping[str, Any],
    policy: CachePolicy,
    *,
    stable_end: tuple[int, int] | None = None,
) -> MutableMapping[str, Any]:
    """Mark ``body``'s breakpoints per ``policy``, in place, and return it.

    ``stable_end`` is the (message, block) position where the stable message
    prefix ends; renderers compute it from ``policy.stable_messages``. Raises
    :class:`~ctxflow.errors.PolicyError` when the marks (with any the blocks
    already carried) would exceed :data:`MAX_BREAKPOINTS`; the body is then
    left unchanged.
    """
    mark = policy.mark()
    plan: list[tuple[list[MutableMapping[str, Any]], int]] = []
    tools = body.get("tools")
    if policy.tools and tools:
        plan.append((tools, len(tools) - 1))
    system: list[MutableMapping[str, Any]] | None = None
    if policy.system and body.get("system"):
        system = _system_blocks(body["system"])
        plan.append((system, len(system) - 1))
    messages = body.get("messages") or []
    ends: list[tuple[int, int]] = []
    if stable_end is not None:
        ends.append(stable_end)
    if policy.last_message and messages:
        last = (len(messages) - 1, len(messages[-1]["content"]) - 1)
        if last not in ends:
            ends.append(last)
    plan.extend((messages[m]["content"], b) for m, b in ends)
    existing = count_breakpoints(body)
    if existing + len(plan) > MAX_BREAKPOINTS:
        raise PolicyError(
            f"a request may carry at most {MAX_BREAKPOINTS} cache breakpoints "
            f"(got {existing} already marked + {len(plan)} from the policy)",
            rule="too_many_breakpoints",
            existing=existing,
            planned=len(plan),
        )
    if system is not None:
        body["system"] = system
    for blocks, end in plan:
        _mark_last(blocks, end, mark)
    return body


#: What a window's late context starts with (``ctxflow.adapters._base.context_message``).
_CONTEXT_START = "<context>"


@attrs.frozen(kw_only=True)
class PrefixReuse:
    """How much of a request a prefix cache could serve from the request before it.

    Items are compared whole, in cache order — each tool, each system block,
    each message's fields and each of its content blocks (providers cache up
    to a block boundary) — with ``cache_control`` marks stripped. ``served`` counts
    the tokens of the leading items identical to the previous request's;
    ``written`` those after them up to the late context (what a cache would
    store for the next turn); ``total`` the whole request. ``broke_at`` names
    the first item of the previous request (its late context aside) that this
    one no longer repeats, None when it repeats all of them.
    """

    served: int
    written: int
    total: int
    broke_at: str | None

    def cost(self, prices: CachePrices) -> float:
        """The request's input cost in uncached-token units under ``prices``."""
        fresh = self.total - self.served - self.written
        return self.served * prices.read + self.written * prices.write + fresh


@attrs.frozen(kw_only=True)
class CachePrices:
    """What cached input costs, as multiples of an uncached input token's price.

    ``read``: a token served from the cache; ``write``: a token written to it.
    :meth:`for_api` gives the providers' published multiples: Anthropic reads
    at 0.1 and writes (5-minute cache) at 1.25; OpenAI reads at 0.5 (the
    GPT-4o family; newer models discount more) and charges nothing extra to write.
    """

    read: float
    write: float

    @classmethod
    def for_api(cls, api: str) -> CachePrices:
        """The multiples for ``"anthropic"`` or ``"openai"``."""
        if api == "anthropic":
            return cls(read=0.1, write=1.25)
        if api == "openai":
            return cls(read=0.5, write=1.0)
        raise PolicyError(f"'api' must be 'anthropic' or 'openai' (got {api!r})", rule="api")


def _strip_marks(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_marks(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_marks(v) for v in value]
    return value


def _late(item: Any) -> bool:
    if isinstance(item, Mapping):
        item = item.get("text") if item.get("type") == "text" else None
    return isinstance(item, str) and item.startswith(_CONTEXT_START)


def _request_items(body: Mapping[str, Any]) -> tuple[list[tuple[str, bytes]], int]:
    """Labelled canonical items of ``body`` in cache order; how many precede its late context.

    A message is its fields other than the content, then each content block
    (a string content is one block): a provider caches up to a block boundary.
    """
    tools = body.get("tools") or ()
    items = [(f"tools[{i}]", canonical_json(_strip_marks(t))) for i, t in enumerate(tools)]
    items += [
        (f"system[{i}]", canonical_json(_strip_marks(b)))
        for i, b in enumerate(_system_blocks(body.get("system")))
    ]
    late = None
    for m, message in enumerate(body.get("messages") or ()):
        content = message.get("content")
        head = {k: v for k, v in message.items() if k != "content"}
        items.append((f"messages[{m}]", canonical_json(_strip_marks(head))))
        blocks = content if isinstance(content, list) else [content]
        for b, block in enumerate(blocks):
            late = len(items) if _late(block) else None
            items.append((f"messages[{m}].content[{b}]", canonical_json(_strip_marks(block))))
        if late is not None and len(blocks) == 1:
            late -= 1  # the late context's own message: its head goes with it
    return items, len(items) if late is None else late


def prefix_reuse(
    previous: Mapping[str, Any] | None,
    body: Mapping[str, Any],
    count: Callable[[str], int],
) -> PrefixReuse:
    """What of ``body`` a prefix cache filled by ``previous`` could serve (None: nothing).

    ``count`` gives an item's tokens from its canonical JSON text (pass a
    counter's ``count``). Works for Anthropic and OpenAI bodies alike. To
    measure a sequence of requests, use :class:`PrefixMeter`, which reads
    each request once.
    """
    meter = PrefixMeter(count)
    if previous is not None:
        meter.measure(previous)
    return meter.measure(body)


class PrefixMeter:
    """Measures each request of a sequence against the one before it (see :func:`prefix_reuse`).

    Keeps the previous request's items and their token counts, so each
    request is serialized and each new item counted once.
    """

    def __init__(self, count: Callable[[str], int]) -> None:
        self._count = count
        self._items: list[tuple[str, bytes]] = []
        self._stable = 0
        self._sizes: dict[bytes, int] = {}
        self._measured = False

    def measure(self, body: Mapping[str, Any]) -> PrefixReuse:
        """The reuse of ``body`` against the request measured before it (none for the first)."""
        items, stable = _request_items(body)
        known, sizes = self._sizes, {}
        for _, data in items:
            if data not in sizes:
                sizes[data] = known[data] if data in known else self._count(data.decode())
        shared = 0
        broke_at = None
        if self._measured:
            before = self._items
            limit = min(len(items), self._stable)
            while shared < limit and items[shared][1] == before[shared][1]:
                shared += 1
            if shared < self._stable:
                broke_at = before[shared][0]
        counts = [sizes[data] for _, data in items]
        self._items, self._stable, self._sizes, self._measured = items, stable, sizes, True
        return PrefixReuse(
            served=sum(counts[:shared]),
            written=sum(counts[shared:stable]) if shared < stable else 0,
            total=sum(counts),
            broke_at=broke_at,
        )
