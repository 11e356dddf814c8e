"""Token counting: append-with-counting and counting from scratch, vs the peers."""

from __future__ import annotations

import json
from typing import Any

from benchmarks.harness import Harness
from ctxflow.model import Conversation, Message, ToolResultBlock, ToolUseBlock
from ctxflow.tokens import TiktokenCounter, message_measure


def _texts(messages: list[Message]) -> list[str]:
    out = []
    for m in messages:
        for b in m.content:
            if isinstance(b, ToolUseBlock):
                out += [b.name, json.dumps(b.input, separators=(",", ":"))]
            elif isinstance(b, ToolResultBlock):
                out.append(b.text)
            else:
                out.append(getattr(b, "text", "") or getattr(b, "thinking", ""))
    return out


def _langchain(messages: list[Message]) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    out: list[Any] = []
    for m in messages:
        if m.role.value == "system":
            out.append(SystemMessage(m.text))
        elif m.role.value == "assistant":
            calls = [{"id": u.id, "name": u.name, "args": dict(u.input)} for u in m.tool_uses]
            out.append(AIMessage(m.text, tool_calls=calls))
        else:
            out += [ToolMessage(r.text, tool_call_id=r.tool_use_id) for r in m.tool_results]
            if m.text:
                out.append(HumanMessage(m.text))
    return out


def run(h: Harness) -> None:
    n = h.size(10_000, 300)
    messages = h.workload(n)
    counter = TiktokenCounter("cl100k_base")
    measure = message_measure(counter)

    def append_all() -> None:
        conversation = Conversation(measure=measure)
        for message in messages:
            conversation.append(message)

    append_ms = h.median_ms(append_all, runs=5)
    texts = _texts(messages)
    encode = counter._encoding.encode_ordinary

    def plain_tiktoken() -> None:
        sum(len(encode(t)) for t in texts)

    plain_ms = h.median_ms(plain_tiktoken, runs=5)
    h.record(
        f"tokens.append_with_counting.{n}",
        append_ms,
        "ms",
        peer="plain tiktoken encode_ordinary loop",
        peer_value=plain_ms,
    )
    conversation = Conversation(messages, measure=measure)
    total_ms = h.median_ms(lambda: conversation.effective_tokens, runs=9)
    if not h.has("langchain_core"):
        h.record(f"tokens.total_after_append.{n}", total_ms, "ms", note="peer not installed")
        return
    from langchain_core.messages.utils import count_tokens_approximately

    lc = _langchain(messages)
    lc_ms = h.median_ms(lambda: count_tokens_approximately(lc), runs=5)
    # ctxflow keeps an exact running total, so "how big is the context now" is a read.
    h.record(
        f"tokens.total_after_append.{n}",
        total_ms,
        "ms",
        peer="langchain count_tokens_approximately (from scratch)",
        peer_value=lc_ms,
    )
    h.record(
        f"tokens.count_from_scratch_exact.{n}",
        plain_ms,
        "ms",
        peer="langchain count_tokens_approximately",
        peer_value=lc_ms,
        note="exact tiktoken counts cost this once, at append; never again",
    )
