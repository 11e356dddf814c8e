"""Shared builders for the budget tests: random but valid agent conversations."""

from __future__ import annotations

from hypothesis import strategies as st

from ctxflow.layers import LayeredState, SystemLayer, TaskLayer, ToolDef
from ctxflow.model import (
    Block,
    Message,
    Role,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    Transcript,
)

TOOLS = ("bash", "read", "grep")


def corpus_state(transcript: Transcript) -> tuple[LayeredState, list[Message]]:
    """A corpus conversation's system prompt and tool names as a layered state, and its dialogue."""
    system = "\n".join(m.text for m in transcript.messages if m.role is Role.SYSTEM)
    dialogue = [m for m in transcript.messages if m.role is not Role.SYSTEM]
    tools = tuple(ToolDef(name=n) for n in sorted({u.name for m in dialogue for u in m.tool_uses}))
    return LayeredState(system=SystemLayer(prompt=system, tools=tools)), dialogue


def state_for(statement: str = "fix the parser bug in module io") -> LayeredState:
    """A layered state with a prompt, the test tools and a task."""
    return LayeredState(
        system=SystemLayer(
            prompt="You are a careful coding agent.", tools=tuple(ToolDef(name=n) for n in TOOLS)
        ),
        task=TaskLayer(statement=statement),
    )


@st.composite
def conversations(draw: st.DrawFn, max_tasks: int = 4) -> list[Message]:
    """A valid conversation: tasks of tool rounds, parallel batches, thinking, important turns."""
    out: list[Message] = []
    counter = 0
    for task in range(draw(st.integers(1, max_tasks))):
        size = draw(st.integers(1, 400))
        important = draw(st.booleans()) and task > 0 and draw(st.booleans())
        if out and out[-1].role is Role.USER:
            out.append(Message.assistant("ok", id=f"bridge{task}"))
        out.append(Message.user(f"task {task}: " + "u" * size, id=f"u{task}", important=important))
        for rnd in range(draw(st.integers(0, 4))):
            counter += 1
            width = draw(st.integers(1, 3))
            blocks: list[Block] = []
            if draw(st.booleans()):
                blocks.append(ThinkingBlock(thinking="think " * draw(st.integers(1, 20))))
            if draw(st.booleans()):
                blocks.append(TextBlock(text="doing " * draw(st.integers(1, 20))))
            ids = [f"t{counter}_{k}" for k in range(width)]
            blocks += [
                ToolUseBlock(id=i, name=TOOLS[k % 3], input={"k": k}) for k, i in enumerate(ids)
            ]
            out.append(Message(role=Role.ASSISTANT, content=tuple(blocks), id=f"a{counter}"))
            results = tuple(
                ToolResultBlock(
                    tool_use_id=i, content="r" * draw(st.integers(0, 3_000)) or "(empty)"
                )
                for i in ids
            )
            out.append(Message(role=Role.USER, content=results, id=f"r{counter}"))
            del rnd
        if draw(st.booleans()):
            out.append(Message.assistant("done " * draw(st.integers(1, 30)), id=f"f{task}"))
    return out
