"""Hypothesis strategies for random valid conversations (tool pairs, batches, pins)."""

from __future__ import annotations

from hypothesis import strategies as st

from ctxflow.model import (
    Message,
    Role,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

WORDS = ("alpha", "beta", "gamma", "delta", "file.py", "Error", "value", "port", "42")
TOOLS = ("bash", "read", "search", "memory")


def _text(draw: st.DrawFn, low: int = 1, high: int = 60) -> str:
    n = draw(st.integers(low, high))
    seed = draw(st.integers(0, len(WORDS) - 1))
    return " ".join(WORDS[(seed + i) % len(WORDS)] for i in range(n))


@st.composite
def conversations(draw: st.DrawFn, max_turns: int = 14, text_high: int = 60) -> list[Message]:
    """A valid conversation: optional system, a first user request, then whole turns.

    ``text_high`` is the most words a user's or assistant's text may have (a
    few thousand makes messages other than tool results oversized).
    """
    out: list[Message] = []
    counter = 0

    def mid() -> str:
        nonlocal counter
        counter += 1
        return f"m{counter}"

    if draw(st.booleans()):
        out.append(Message.system(_text(draw, 5, 80), id=mid()))
    out.append(
        Message.user("Please " + _text(draw, 1, text_high), id=mid(), important=draw(st.booleans()))
    )
    turns = draw(st.integers(0, max_turns))
    call = 0
    for _ in range(turns):
        kind = draw(st.sampled_from(("chat", "tool", "tool", "batch")))
        pin_a = draw(st.integers(0, 9)) == 0
        pin_u = draw(st.integers(0, 9)) == 0
        if kind == "chat":
            out.append(Message.assistant(_text(draw, 1, text_high), id=mid(), important=pin_a))
            text = _text(draw, 1, text_high)
            if draw(st.integers(0, 4)) == 0:
                text = f"Decision: {text}"
            out.append(Message.user(text, id=mid(), important=pin_u))
            continue
        width = 1 if kind == "tool" else draw(st.integers(2, 3))
        blocks: list[object] = []
        if draw(st.integers(0, 5)) == 0:
            blocks.append(ThinkingBlock(thinking=_text(draw), signature="sig"))
        if draw(st.booleans()):
            blocks.append(TextBlock(text=_text(draw, 1, text_high)))
        uses = []
        for _ in range(width):
            call += 1
            uses.append(
                ToolUseBlock(
                    id=f"call{call}",
                    name=draw(st.sampled_from(TOOLS)),
                    input={"q": _text(draw, 1, 5)},
                )
            )
        out.append(
            Message(role=Role.ASSISTANT, content=(*blocks, *uses), id=mid(), important=pin_a)
        )
        results: list[object] = []
        for use in uses:
            size = draw(st.sampled_from((3, 40, 200, 1500)))
            results.append(
                ToolResultBlock(
                    tool_use_id=use.id,
                    content=_text(draw, size, size),
                    is_error=draw(st.integers(0, 6)) == 0,
                )
            )
        if draw(st.integers(0, 6)) == 0:
            results.append(TextBlock(text="Remember: " + _text(draw, 2, 8)))
        out.append(Message(role=Role.USER, content=tuple(results), id=mid(), important=pin_u))
    ending = draw(st.sampled_from(("none", "answer", "pending")))
    if ending == "answer":
        out.append(Message.assistant(_text(draw, 1, text_high), id=mid()))
    elif ending == "pending":
        call += 1
        out.append(
            Message(
                role=Role.ASSISTANT,
                content=(ToolUseBlock(id=f"call{call}", name="bash", input={}),),
                id=mid(),
            )
        )
    return out
