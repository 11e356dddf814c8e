"""Small hand-built conversations for the compression tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ctxflow.model import Conversation, Message, Role, TextBlock, ToolResultBlock, ToolUseBlock


def tool_loop(
    sizes: Sequence[int],
    *,
    measure: Callable[[Message], int],
    tools: Sequence[str] = (),
    request: str = "Please fix the failing test in app/models.py",
    pin_request: bool = False,
    extra_user_text: dict[int, str] | None = None,
) -> Conversation:
    """system, a request, one bash round per size (result of that many chars), a final answer."""
    messages = [
        Message.system("You are a careful coding agent.", id="sys"),
        Message.user(request, id="req", important=pin_request),
    ]
    for n, size in enumerate(sizes):
        name = tools[n] if n < len(tools) else "bash"
        messages.append(
            Message(
                role=Role.ASSISTANT,
                id=f"a{n}",
                content=(
                    TextBlock(text=f"Step {n}: run a command"),
                    ToolUseBlock(id=f"t{n}", name=name, input={"command": f"cmd {n}"}),
                ),
            )
        )
        blocks: list[TextBlock | ToolResultBlock] = [
            ToolResultBlock(tool_use_id=f"t{n}", content=(f"line {n} " * size)[:size] or "ok")
        ]
        if extra_user_text and n in extra_user_text:
            blocks.append(TextBlock(text=extra_user_text[n]))
        messages.append(Message(role=Role.USER, id=f"r{n}", content=tuple(blocks)))
    messages.append(Message.assistant("All done: the test passes now.", id="final"))
    return Conversation(messages, measure=measure)


def chat(
    turns: int, *, measure: Callable[[Message], int], words: int = 40, decision_at: int = -1
) -> Conversation:
    """system, then plain user/assistant turns (a customer-service style chat)."""
    messages = [Message.system("You are a helpful airline agent.", id="sys")]
    for n in range(turns):
        text = f"Customer message {n}: " + "please help with my booking " * (words // 5)
        if n == decision_at:
            text = "Decision: use port 8231 for the staging proxy."
        messages.append(Message.user(text, id=f"u{n}"))
        messages.append(
            Message.assistant(
                f"Agent reply {n}: " + "certainly, let me check " * (words // 5), id=f"b{n}"
            )
        )
    return Conversation(messages, measure=measure)
