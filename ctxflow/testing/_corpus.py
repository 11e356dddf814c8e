"""Finding the shared corpus of real agent conversations and building long workloads.

The corpus lives outside the repository (``../shared/corpus/`` from the repo
root, or wherever ``CTXFLOW_CORPUS`` points). Tests that need it skip when it
is absent, and fail instead when ``CTXFLOW_REQUIRE_CORPUS=1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs

from ctxflow.model import (
    Message,
    Role,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    Transcript,
    read_transcripts,
)

__all__ = ["CORPUS_ENV", "concatenate", "corpus_path", "load_corpus"]

#: Environment variable naming the corpus JSONL file.
CORPUS_ENV = "CTXFLOW_CORPUS"
_NAME = "agent_trajectories.jsonl"


def corpus_path(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The corpus file: ``$CTXFLOW_CORPUS``, else ``../shared/corpus/`` above ``start``."""
    if os.environ.get(CORPUS_ENV):
        path = Path(os.environ[CORPUS_ENV])
        return path if path.is_file() else None
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "shared" / "corpus" / _NAME
        if candidate.is_file():
            return candidate
        if (folder / "pyproject.toml").is_file():
            sibling = folder.parent / "shared" / "corpus" / _NAME
            if sibling.is_file():
                return sibling
    return None


def load_corpus(path: str | os.PathLike[str] | None = None) -> list[Transcript]:
    """Every transcript of the corpus (raises FileNotFoundError when it is absent)."""
    found = Path(path) if path else corpus_path()
    if found is None or not found.is_file():
        raise FileNotFoundError(
            f"the corpus was not found; set {CORPUS_ENV} to {_NAME} "
            "or place it in ../shared/corpus/"
        )
    return list(read_transcripts(found))


def _renamed(message: Message, prefix: str) -> Message:
    blocks = []
    for block in message.content:
        if isinstance(block, ToolUseBlock):
            block = attrs.evolve(block, id=f"{prefix}{block.id}")
        elif isinstance(block, ToolResultBlock):
            block = attrs.evolve(block, tool_use_id=f"{prefix}{block.tool_use_id}")
        blocks.append(block)
    return attrs.evolve(message, id=f"{prefix}{message.id}", content=tuple(blocks))


def concatenate(transcripts: Iterable[Transcript], n_messages: int) -> list[Message]:
    """One long valid conversation of ``n_messages`` built from transcripts with fresh ids.

    The first transcript's system prompt leads; each transcript's dialogue
    follows with its message and tool ids prefixed by a round counter. A
    trailing pending call is answered with a "no result recorded" result and
    role alternation is kept with a short bridge message, so the result passes
    the validity checker.
    """
    source = list(transcripts)
    if not source:
        raise ValueError("concatenate needs at least one transcript")
    out: list[Message] = []
    system = next((m for m in source[0].messages if m.role is Role.SYSTEM), None)
    if system is not None:
        out.append(system)

    def stream() -> Iterator[Message]:
        rounds = 0
        while True:
            for t in source:
                rounds += 1
                prefix = f"r{rounds}-"
                dialogue = [_renamed(m, prefix) for m in t.messages if m.role is not Role.SYSTEM]
                if dialogue and dialogue[-1].role is Role.ASSISTANT and dialogue[-1].tool_uses:
                    dialogue.append(
                        Message(
                            role=Role.USER,
                            id=f"{prefix}pending-answer",
                            content=tuple(
                                ToolResultBlock(tool_use_id=u.id, content="[no result recorded]")
                                for u in dialogue[-1].tool_uses
                            ),
                        )
                    )
                yield from dialogue

    for message in stream():
        if len(out) >= n_messages:
            break
        last = out[-1] if out else None
        if last is not None and last.role is message.role and last.role is not Role.SYSTEM:
            bridge_role = Role.ASSISTANT if message.role is Role.USER else Role.USER
            out.append(
                Message(
                    role=bridge_role,
                    id=f"{message.id}-bridge",
                    content=(TextBlock(text="(next task)"),),
                )
            )
            if len(out) >= n_messages:
                break
        out.append(message)
    return out
