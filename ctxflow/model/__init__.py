"""The data model of a conversation: messages, blocks, the Conversation, validity, formats.

This room knows nothing of budgets, charts or storage.
"""

from ctxflow.model._anthropic import messages_from_anthropic, messages_to_anthropic
from ctxflow.model._conversation import SUMMARY_OF, Conversation, ToolPair
from ctxflow.model._lazy import (
    Facts,
    IndexFacts,
    OverlayPlaceholder,
    Placeholder,
    Source,
    facts_of,
    page_in,
)
from ctxflow.model._messages import (
    Block,
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    Role,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    new_id,
)
from ctxflow.model._openai import from_openai, to_openai
from ctxflow.model._transcripts import (
    Transcript,
    dump_transcript,
    load_transcript,
    read_transcripts,
    write_transcripts,
)
from ctxflow.model._validity import API, ValidityReport, Violation, check, validate

__all__ = [
    "API",
    "SUMMARY_OF",
    "Block",
    "Conversation",
    "Facts",
    "ImageBlock",
    "IndexFacts",
    "Message",
    "OverlayPlaceholder",
    "Placeholder",
    "RedactedThinkingBlock",
    "Role",
    "Source",
    "TextBlock",
    "ThinkingBlock",
    "ToolPair",
    "ToolResultBlock",
    "ToolUseBlock",
    "Transcript",
    "ValidityReport",
    "Violation",
    "check",
    "dump_transcript",
    "facts_of",
    "from_openai",
    "load_transcript",
    "messages_from_anthropic",
    "messages_to_anthropic",
    "new_id",
    "page_in",
    "read_transcripts",
    "to_openai",
    "validate",
    "write_transcripts",
]
