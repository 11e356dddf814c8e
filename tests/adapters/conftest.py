"""Fixtures for the adapter tests: the SDK request types as strict validators, sample windows."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import pytest

from ctxflow.layers import ToolDef
from ctxflow.model import Message, TextBlock, ToolResultBlock, ToolUseBlock


def _force(value: Any) -> Any:
    """Consume pydantic's lazy iterators so every nested item is validated."""
    if isinstance(value, Mapping):
        return {k: _force(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_force(v) for v in value]
    if isinstance(value, Iterator) or type(value).__name__ == "ValidatorIterator":
        return [_force(v) for v in value]
    return value


def _strict(type_: Any) -> Callable[[Mapping[str, Any]], None]:
    pydantic = pytest.importorskip("pydantic")
    adapter = pydantic.TypeAdapter(type_)

    def check(body: Mapping[str, Any]) -> None:
        # TypedDict validation ignores unknown keys; comparing catches them.
        assert _force(adapter.validate_python(body)) == body

    return check


@pytest.fixture(scope="session")
def anthropic_types() -> Callable[[Mapping[str, Any]], None]:
    """A check that a body validates as the anthropic SDK's non-streaming request type."""
    module = pytest.importorskip("anthropic.types.message_create_params")
    return _strict(module.MessageCreateParamsNonStreaming)


@pytest.fixture(scope="session")
def openai_types() -> Callable[[Mapping[str, Any]], None]:
    """A check that a body validates as the openai SDK's non-streaming request type."""
    module = pytest.importorskip("openai.types.chat.completion_create_params")
    return _strict(module.CompletionCreateParamsNonStreaming)


@attrs.frozen(kw_only=True)
class FakeWindow:
    """The three attributes a renderer reads, as the budget's Window will carry them."""

    system: str
    messages: Sequence[Message]
    tools: Sequence[ToolDef]


TOOLS = (
    ToolDef(
        name="bash",
        description="Run a shell command.",
        input_schema={"type": "object", "properties": {"command": {"type": "string"}}},
    ),
    ToolDef(name="read", description="Read a file."),
)


def loop(turns: int = 2) -> list[Message]:
    """A tool loop: a user task, then ``turns`` call/result pairs, then a final answer."""
    out = [Message.user("List the files.")]
    for i in range(turns):
        out.append(
            Message(
                role="assistant",
                content=(
                    TextBlock(text=f"step {i}"),
                    ToolUseBlock(id=f"toolu_{i}", name="bash", input={"command": f"ls {i}"}),
                ),
            )
        )
        out.append(
            Message(role="user", content=(ToolResultBlock(tool_use_id=f"toolu_{i}", content="a"),))
        )
    out.append(Message.assistant("Done."))
    return out


@pytest.fixture
def window() -> FakeWindow:
    """A small window with a system prompt, two tools and a two-step tool loop."""
    return FakeWindow(system="You are terse.", messages=loop(), tools=TOOLS)


@pytest.fixture
def tools() -> tuple[ToolDef, ...]:
    """Two tool definitions: bash (with a schema) and read."""
    return TOOLS


@pytest.fixture
def make_loop() -> Callable[..., list[Message]]:
    """The builder of tool-loop conversations."""
    return loop


@pytest.fixture
def make_window() -> Callable[..., FakeWindow]:
    """The builder of window-shaped values."""
    return FakeWindow
