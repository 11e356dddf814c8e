"""The validity checker: does a message sequence pass a provider's rules?

This encodes DESIGN.md invariant 1 in its conservative form, which every API
accepts: after an optional leading system message the first message is a user
message and roles alternate; each tool_result answers a tool_use of the
immediately preceding assistant message, and every tool_use is answered in the
immediately following user message (a trailing pending call is reported as
*pending*, not as a violation); tool results come first in their message;
thinking blocks come first in theirs; no empty text; tool definitions are
present whenever tool blocks are (when the caller says which tools it sends).

:func:`check` returns every violation with its message index, rule and ids;
:func:`validate` raises :class:`~ctxflow.errors.InvalidConversation` instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from typing import Literal, Protocol

import attrs

from ctxflow.errors import InvalidConversation
from ctxflow.model import _messages as m
from ctxflow.model._messages import Message, Role

__all__ = ["API", "ValidityReport", "Violation", "check", "local_ok", "validate"]

API = Literal["anthropic", "openai"]
_NONE: frozenset[str] = frozenset()
APIS: tuple[API, ...] = ("anthropic", "openai")


@attrs.frozen(kw_only=True)
class Violation:
    """One broken rule: where (message index), which rule, which ids."""

    index: int
    rule: str
    detail: str
    ids: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"message {self.index}: {self.rule}: {self.detail}"


@attrs.frozen(kw_only=True)
class ValidityReport:
    """The outcome of :func:`check`."""

    api: API
    violations: tuple[Violation, ...]
    pending: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when there is no violation (pending calls are allowed)."""
        return not self.violations

    def rules(self) -> set[str]:
        """The set of rules broken."""
        return {v.rule for v in self.violations}


def check(
    messages: Sequence[Message],
    *,
    api: API = "anthropic",
    tools: Sequence[object] | None = None,
) -> ValidityReport:
    """Check ``messages`` against ``api``'s rules and return every violation.

    ``tools`` is the list of tool definitions sent with the messages; pass it
    to also check that tool blocks never travel without definitions.
    """
    if api not in APIS:
        raise ValueError(f"'api' must be one of {APIS} (got {api!r})")
    out: list[Violation] = []
    pending: tuple[str, ...] = ()
    seen_messages: set[str] = set()
    seen_uses: dict[str, int] = {}
    has_tool_blocks = False

    def add(index: int, rule: str, detail: str, *ids: str) -> None:
        out.append(Violation(index=index, rule=rule, detail=detail, ids=tuple(ids)))

    previous: Message | None = None
    first_dialog = True
    system, user = Role.SYSTEM, Role.USER
    # The set of call ids the previous message opened (empty unless it was an
    # assistant message with tool_use blocks); the loop runs once per message
    # of long histories, so it reads each message's fields once.
    expected: Set[str] = _NONE
    for index, message in enumerate(messages):
        message_id, role, content = message.id, message.role, message.content
        if message_id in seen_messages:
            add(index, "duplicate_message_id", f"id {message_id!r} appears twice", message_id)
        seen_messages.add(message_id)
        if not content:
            add(index, "empty_content", "message has no content blocks", message_id)
        elif len(content) > 1 or (isinstance(content[0], m.TextBlock) and not content[0].text):
            _check_blocks(index, message, add)  # one non-empty block is in place by definition

        if role is system:
            if index != 0:
                add(index, "system_position", "a system message may only come first", message_id)
            continue

        if first_dialog and role is not user:
            add(index, "first_not_user", "the first message after the system prompt must be user")
        first_dialog = False
        if previous is not None and previous.role is role:
            add(
                index,
                "role_alternation",
                f"two {role.value} messages in a row",
                previous.id,
                message_id,
            )

        uses = message.tool_uses
        results = message.tool_results
        opened = expected
        expected = _NONE
        previous = message
        if uses:
            has_tool_blocks = True
            for use in uses:
                if use.id in seen_uses:
                    add(index, "duplicate_tool_use_id", f"tool_use id {use.id!r} reused", use.id)
                seen_uses[use.id] = index
            if role is not user:
                expected = {u.id for u in uses}
        if not results and not opened:
            continue
        if results:
            has_tool_blocks = True
        answered = set()
        for result in results:
            if result.tool_use_id in opened:
                answered.add(result.tool_use_id)
            elif result.tool_use_id in seen_uses:
                add(
                    index,
                    "result_not_adjacent",
                    f"tool_result {result.tool_use_id!r} does not follow its tool_use "
                    f"(message {seen_uses[result.tool_use_id]})",
                    result.tool_use_id,
                )
            else:
                add(
                    index,
                    "orphan_tool_result",
                    f"tool_result {result.tool_use_id!r} answers no tool_use",
                    result.tool_use_id,
                )
        if len(answered) < len(opened):  # a subset of the calls: some are unanswered
            missing = sorted(opened - answered)
            if answered:
                add(
                    index,
                    "batch_split",
                    f"only {len(answered)} of {len(opened)} parallel calls answered here",
                    *missing,
                )
            else:
                add(
                    index - 1,
                    "unanswered_tool_use",
                    f"tool_use {', '.join(map(repr, missing))} not answered in the next message",
                    *missing,
                )

    if previous is not None and previous.role is Role.ASSISTANT and previous.tool_uses:
        pending = tuple(u.id for u in previous.tool_uses)
    if tools is not None and has_tool_blocks and not tools:
        add(len(messages) - 1, "tools_missing", "tool blocks are present but no tool definitions")
    if api == "openai":
        for index, message in enumerate(messages):
            for result in message.tool_results:
                if not isinstance(result.content, str) and any(
                    isinstance(b, m.ImageBlock) for b in result.content
                ):
                    add(
                        index,
                        "tool_result_non_text",
                        f"OpenAI tool messages carry text only ({result.tool_use_id!r})",
                        result.tool_use_id,
                    )
    out.sort(key=lambda v: v.index)
    return ValidityReport(api=api, violations=tuple(out), pending=pending)


def _check_blocks(index: int, message: Message, add: _Add) -> None:
    content = message.content
    if len(content) == 1:
        block = content[0]  # the usual message: one block, in its place by definition
        if not isinstance(block, m.TextBlock) or block.text:
            return
    seen_other = False
    for block in content:
        if isinstance(block, m.TextBlock) and not block.text:
            add(index, "empty_text", "text block is empty", message.id)
        if message.role is Role.ASSISTANT:
            if isinstance(block, m.ThinkingBlock | m.RedactedThinkingBlock):
                if seen_other:
                    add(index, "thinking_order", "thinking blocks must come first", message.id)
            else:
                seen_other = True
        elif message.role is Role.USER:
            if isinstance(block, m.ToolResultBlock):
                if seen_other:
                    add(
                        index,
                        "tool_result_order",
                        "tool_result blocks must come before other content",
                        block.tool_use_id,
                    )
            else:
                seen_other = True


class _Add(Protocol):
    def __call__(self, index: int, rule: str, detail: str, *ids: str) -> None: ...


def validate(
    messages: Sequence[Message],
    *,
    api: API = "anthropic",
    tools: Sequence[object] | None = None,
) -> ValidityReport:
    """Like :func:`check`, but raise :class:`InvalidConversation` on any violation."""
    report = check(messages, api=api, tools=tools)
    if not report.ok:
        first = report.violations[0]
        more = len(report.violations) - 1
        raise InvalidConversation(
            f"conversation is not valid for {api}: {first}"
            + (f" (and {more} more)" if more else ""),
            rule=first.rule,
            violations=report.violations,
            api=api,
        )
    return report


def _message_ok(message: Message) -> bool | None:
    """The rules one message must meet alone: None if broken, else whether OpenAI accepts it.

    (OpenAI tool messages carry text only: a tool result holding an image is
    the one rule of its own.)
    """
    if not message.content:
        return None
    role = message.role
    seen_other = False
    openai = True
    for block in message.content:
        if isinstance(block, m.TextBlock):
            if not block.text:
                return None
            seen_other = True
        elif role is Role.ASSISTANT:
            if isinstance(block, m.ThinkingBlock | m.RedactedThinkingBlock):
                if seen_other:
                    return None
            else:
                seen_other = True
        elif isinstance(block, m.ToolResultBlock):
            if seen_other:
                return None
            if not isinstance(block.content, str) and any(
                isinstance(b, m.ImageBlock) for b in block.content
            ):
                openai = False
        else:
            seen_other = True
    return openai


def local_ok(
    messages: Sequence[Message], indices: Iterable[int], *, pairs: bool = True
) -> tuple[bool, bool]:
    """Whether the messages at ``indices`` pass every rule that involves them: (Anthropic, OpenAI).

    Each rule of :func:`check` is local: about one message, a message and the
    one before it, or the first dialogue message (ids aside, which a
    :class:`~ctxflow.model.Conversation` keeps unique). So a sequence known to
    be valid stays valid after a change if the changed messages and the new
    neighbours around them pass: that is what this checks, without a pass
    over the rest. ``pairs=False`` checks the messages alone (for a change of
    content that keeps roles and tool ids).
    """
    first = 1 if messages and messages[0].role is Role.SYSTEM else 0
    size = len(messages)
    openai = True
    for index in indices:
        if not 0 <= index < size:
            continue
        message = messages[index]
        alone = _message_ok(message)
        if alone is None:
            return False, False
        openai = openai and alone
        if not pairs:
            continue
        if message.role is Role.SYSTEM:
            if index != 0:
                return False, False
            continue
        if index == first:
            if message.role is not Role.USER or message.tool_results:
                return False, False
            continue
        previous = messages[index - 1]
        if previous.role is message.role:
            return False, False
        expected = {u.id for u in previous.tool_uses} if previous.role is Role.ASSISTANT else set()
        if {r.tool_use_id for r in message.tool_results} != expected:
            return False, False
    return True, openai
