"""Middle-trimming a unit's tool results to fit a room (the selector's oversized turns).

The largest results go first, each cut in the middle (head and tail kept, with
a marker; see :func:`ctxflow.budget._render.middle_trim`) to its share of the
room by characters. A trimmed message is measured, not estimated: when the
measure says it is still too large, the room is narrowed and the cut tried
again, a few times at most. Trims are cached per unit and room on the index.
"""

from __future__ import annotations

from ctxflow.budget._render import middle_trim
from ctxflow.budget._selection_index import SelectionIndex, Trim, with_results
from ctxflow.model import Message, ToolResultBlock
from ctxflow.protocols import TokenCounter

_ATTEMPTS = 6
_CACHED_TRIMS = 256


def trim_unit(index: SelectionIndex, unit: int, room: int, counter: TokenCounter) -> Trim | None:
    """The unit's messages with their largest tool results middle-trimmed to fit ``room``.

    None when even trimmed they do not fit.
    """
    first, end = index.units.first[unit], index.units.end[unit]
    key = (first, end, room)
    current = tuple(index.view[first:end])
    hit = index.trims.get(key)
    if hit is not None and all(x is y for x, y in zip(hit[0], current, strict=True)):
        return hit[1]
    if len(index.trims) > _CACHED_TRIMS:
        index.trims.clear()
    found = _trim_uncached(index, first, end, room, counter)
    index.trims[key] = (current, found)
    return found


def _trim_uncached(
    index: SelectionIndex, first: int, end: int, room: int, counter: TokenCounter
) -> Trim | None:
    messages = list(index.view[first:end])
    costs = list(index.tokens[first:end])
    masked = index.masked_tokens
    order = sorted(range(end - first), key=lambda k: -(costs[k] - masked[first + k]))
    for k in order:
        total = sum(costs)
        if total <= room:
            break
        if not messages[k].tool_results:
            continue
        allowed = room - (total - costs[k])
        fitted = _trim_message(index, messages[k], costs[k], masked[first + k], allowed, counter)
        if fitted is not None:
            messages[k], costs[k] = fitted
    total = sum(costs)
    return Trim(messages, total) if total <= room else None


def _trim_message(
    index: SelectionIndex,
    message: Message,
    tokens: int,
    fixed: int,
    allowed: int,
    counter: TokenCounter,
) -> tuple[Message, int] | None:
    """``message`` (``tokens``; ``fixed`` with its results masked) trimmed to ``allowed``."""
    content_room = allowed - fixed
    if content_room <= 0:
        return None
    weight = tokens - fixed
    for _ in range(_ATTEMPTS):
        candidate = _with_trimmed_results(message, weight, content_room, counter)
        cost = index.measure(candidate)
        if cost <= allowed:
            return candidate, cost
        content_room -= cost - allowed + 8
        if content_room <= 0:
            break
    return None


def _with_trimmed_results(
    message: Message, weight: int, content_room: int, counter: TokenCounter
) -> Message:
    """``message`` with each result cut to its share of ``content_room`` by characters."""
    chars = max(1, sum(len(r.text) for r in message.tool_results))

    def cut(block: ToolResultBlock) -> str:
        size = len(block.text)
        estimate = max(1, weight * size // chars)
        share = max(1, content_room * size // chars)
        found = middle_trim(block.text, share, counter, known_tokens=estimate)
        return found if found is not None else "[trimmed]"

    return with_results(message, cut, edit="trimmed")
