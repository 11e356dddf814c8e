"""Rendered bodies validate against the official SDKs' request types, over the whole corpus."""

from __future__ import annotations

from typing import Any

import pytest

from ctxflow.adapters import CachePolicy, anthropic_body, openai_body
from ctxflow.layers import ToolDef
from ctxflow.model import (
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    Transcript,
)


def _tools(transcript: Transcript) -> list[ToolDef]:
    names = sorted({u.name for m in transcript.messages for u in m.tool_uses})
    return [ToolDef(name=n, description=f"The {n} tool.") for n in names]


@pytest.mark.corpus
def test_every_corpus_conversation_validates(
    corpus: list[Transcript], anthropic_types: Any, openai_types: Any
) -> None:
    """Every corpus conversation renders to bodies both SDKs' request types accept."""
    policy = CachePolicy(stable_messages=2, last_message=True)
    for transcript in corpus:
        tools = _tools(transcript)
        body = anthropic_body(
            system="Context layers.",
            messages=transcript.messages,
            tools=tools,
            model="claude-x",
            max_tokens=1024,
            cache=policy,
        )
        anthropic_types(body)
        assert body["messages"][0]["role"] == "user"
        openai_types(
            openai_body(
                system="Context layers.",
                messages=transcript.messages,
                tools=tools,
                model="gpt-x",
                max_tokens=1024,
            )
        )


def test_every_block_kind_validates(anthropic_types: Any, openai_types: Any) -> None:
    """Thinking, redacted thinking, images and error results render to valid bodies."""
    image = ImageBlock(source={"type": "url", "url": "https://example.com/a.png"})
    messages = [
        Message(role="user", content=(TextBlock(text="Look:"), image)),
        Message(
            role="assistant",
            content=(
                ThinkingBlock(thinking="hm", signature="sig"),
                RedactedThinkingBlock(data="opaque"),
                ToolUseBlock(id="toolu_1", name="bash", input={"command": "ls"}),
            ),
        ),
        Message(
            role="user",
            content=(
                ToolResultBlock(
                    tool_use_id="toolu_1", content=(TextBlock(text="no"), image), is_error=True
                ),
            ),
        ),
        Message.assistant("Failed."),
    ]
    tools = [ToolDef(name="bash")]
    anthropic_types(
        anthropic_body(messages=messages, tools=tools, model="m", max_tokens=8, cache=CachePolicy())
    )
    openai_types(openai_body(messages=messages, tools=tools, model="m"))
