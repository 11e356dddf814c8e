"""Middle-trimming oversized messages: the ladder's cheapest rung.

Any message larger than its share of the target is cut in the middle, its
head and tail kept around a marker that says how much was cut and how to get
it back. Only the latest user text turn is untouchable (it is what the model
must answer): a tool result, an earlier user message, an assistant's text may
all be trimmed. What is never cut:

* the system message and pinned messages: they are fixed costs;
* the text of the latest user message that has text (its tool results, if it
  carries any, may still be cut);
* summaries, which are already bounded;
* thinking blocks (a provider checks them against their signature) and
  tool_use inputs (JSON the API parses): only text blocks and the text of
  tool results are cut, so a message whose weight is in those stays larger
  than its share.

A trimmed message is an overlay, like a cleared result: :func:`recall` gives
the original back by its id (a result's also by the call id its marker
names), and :func:`undo` removes the overlay. A message trimmed by an earlier
run is trimmed again from its original, so the marker always counts what the
original lost.

The cut is measured, not estimated: when the trimmed message is still over
its share (its blocks that are never cut weigh too), the characters kept
shrink and the cut is made again, a few times at most.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ctxflow.compression._draft import Draft, dialogue_start, is_result
from ctxflow.compression._rungs import (
    CLEARED,
    OVERLAY_KIND,
    TRIMMED,
    Proposal,
    RungContext,
    Skip,
    is_summary,
)
from ctxflow.model import Block, Message, Role, TextBlock, ToolResultBlock

__all__ = ["TrimOversized", "latest_user_text"]

_ATTEMPTS = 4


def latest_user_text(view: Sequence[Message]) -> int | None:
    """The view index of the latest user message with text (summaries aside), or None."""
    for index in range(len(view) - 1, dialogue_start(view) - 1, -1):
        message = view[index]
        if message.role is not Role.USER or is_summary(message):
            continue
        if any(isinstance(b, TextBlock) and b.text for b in message.content):
            return index
    return None


def _pieces(message: Message, keep_text: bool) -> list[int]:
    """The lengths of the texts that may be cut, in content order (see :func:`_rebuild`)."""
    sizes: list[int] = []
    for block in message.content:
        if isinstance(block, TextBlock) and not keep_text:
            sizes.append(len(block.text))
        elif isinstance(block, ToolResultBlock):
            if isinstance(block.content, str):
                sizes.append(len(block.content))
            else:
                sizes.extend(len(b.text) for b in block.content if isinstance(b, TextBlock))
    return sizes


def _caps(sizes: Sequence[int], allowed: int) -> int:
    """The largest per-text cap ``c`` with ``sum(min(size, c)) <= allowed``.

    Short texts stay whole; the long ones share what is left equally.
    """
    left = allowed
    remaining = len(sizes)
    for size in sorted(sizes):
        if size * remaining > left:
            return left // remaining
        left -= size
        remaining -= 1
    return max(sizes, default=0)


def _cut(text: str, cap: int, marker: str, per_char: float) -> str:
    if len(text) <= cap:
        return text
    cut = len(text) - cap
    head = cap * 3 // 5
    tail = cap - head
    note = (
        f"\n[… {cut:,} characters (≈{round(cut * per_char):,} tokens) trimmed by ctxflow; "
        f"{marker} …]\n"
    )
    return f"{text[:head]}{note}{text[len(text) - tail :] if tail else ''}"


def _rebuild(message: Message, cap: int, keep_text: bool, per_char: float) -> Message:
    """``message`` with every text that may be cut kept to ``cap`` characters."""
    recall_text = f"recall the whole message by its id {message.id}"
    recall_result = "recall the whole result by its call id"
    blocks: list[Block] = []
    for block in message.content:
        if isinstance(block, TextBlock) and not keep_text:
            if len(block.text) > cap:
                block = attrs.evolve(block, text=_cut(block.text, cap, recall_text, per_char))
        elif isinstance(block, ToolResultBlock):
            if isinstance(block.content, str):
                if len(block.content) > cap:
                    content = _cut(block.content, cap, recall_result, per_char)
                    block = attrs.evolve(block, content=content)
            else:
                inner: list[Block] = []
                for part in block.content:
                    if isinstance(part, TextBlock) and len(part.text) > cap:
                        part = attrs.evolve(
                            part, text=_cut(part.text, cap, recall_result, per_char)
                        )
                    inner.append(part)
                block = attrs.evolve(block, content=tuple(inner))
        blocks.append(block)
    return message.with_content(blocks, metadata={**message.metadata, OVERLAY_KIND: TRIMMED})


@attrs.frozen(kw_only=True)
class TrimOversized:
    """Middle-trims any message larger than ``share`` of the target's flexible part (tokens).

    Tool results, earlier user messages and assistant text alike; never the
    latest user text turn, the system message, pinned messages, summaries,
    thinking blocks or tool_use inputs (see the module docstring).
    """

    share: float = 0.5
    min_tokens: int = 256
    name: str = "trim"

    def propose(self, draft: Draft, ctx: RungContext) -> Proposal:
        """Trim every oversized message that may be cut to its share."""
        limit = max(self.min_tokens, int(self.share * (ctx.target - ctx.fixed)))
        view = draft.view
        latest = latest_user_text(view)
        replacements: dict[int, Message] = {}
        counts: dict[int, int] = {}
        for index in range(dialogue_start(view), len(view)):
            count = draft.tokens[index]
            message = view[index]
            if count <= limit or message.important or is_summary(message):
                continue
            if message.metadata.get(OVERLAY_KIND) == CLEARED:
                continue
            keep_text = index == latest
            if keep_text and not is_result(message):
                continue
            trimmed = self._trimmed(draft, message, count, limit, keep_text)
            if trimmed is not None:
                replacements[index], counts[index] = trimmed
        if not replacements:
            return Skip(reason=f"no message that may be cut is over its share of {limit:,} tokens")
        return draft.with_overlays(replacements, counts)

    def _trimmed(
        self, draft: Draft, message: Message, count: int, limit: int, keep_text: bool
    ) -> tuple[Message, int] | None:
        """``message`` cut from its original to fit ``limit`` and its count (None: no gain)."""
        shown = sum(_pieces(message, keep_text))
        if shown == 0:
            return None
        source = message
        if draft.original is not None and message.metadata.get(OVERLAY_KIND) == TRIMMED:
            source = draft.original(message.id)
        sizes = _pieces(source, keep_text)
        per_char = count / shown
        allowed = int(shown * limit / count)
        best: tuple[Message, int] | None = None
        for _ in range(_ATTEMPTS):
            candidate = _rebuild(source, _caps(sizes, allowed), keep_text, per_char)
            measured = draft.measure(candidate)
            if measured < count and (best is None or measured < best[1]):
                best = (candidate, measured)
            if measured <= limit or allowed == 0:
                break
            allowed = int(allowed * limit / measured * 0.9)
        return best
