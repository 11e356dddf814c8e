"""``ctxflow run`` on a conversation with one huge earlier assistant message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctxflow.cli import main
from ctxflow.compression import OVERLAY_KIND, TRIMMED, recall, undo
from ctxflow.engine import Engine, load_chart
from ctxflow.layers import LayeredState
from ctxflow.model import Role, TextBlock, check, messages_from_anthropic
from ctxflow.replay.inputs import read_run_input
from ctxflow.replay.runner import replay
from ctxflow.stores import MemoryStore

BIG = 54_000
THINKING = {
    "type": "thinking",
    "thinking": "The fix is long; explain it in full.",
    "signature": "s1",
}
CALL = {"type": "tool_use", "id": "call_9", "name": "bash", "input": {"command": "pytest -x"}}


def _transcript(path: Path) -> Path:
    """A 41-message tool loop whose tenth assistant message thinks, writes 54k characters, calls."""
    explain = ("The change touches the query compiler and its tests. " * 1_100)[:BIG]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": "You are a coding agent."}]},
        {"role": "user", "content": [{"type": "text", "text": "Fix the failing test."}]},
    ]
    for n in range(19):
        if n == 9:
            content = [THINKING, {"type": "text", "text": explain}, CALL]
        else:
            call = {"type": "tool_use", "id": f"call_{n}", "name": "bash", "input": {"n": n}}
            content = [{"type": "text", "text": f"Step {n}: run a command."}, call]
        messages.append({"role": "assistant", "content": content})
        result = {"type": "tool_result", "tool_use_id": f"call_{n}", "content": f"ok {n} " * 200}
        messages.append({"role": "user", "content": [result]})
    messages.append({"role": "assistant", "content": [{"type": "text", "text": "Done."}]})
    line = {"id": "oversized", "source": "test", "messages": messages}
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    return path


def test_run_trims_an_oversized_earlier_assistant_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """At 12k every window is valid and in budget; the 54k message shows trimmed, blocks intact."""
    source = _transcript(tmp_path / "t.jsonl")
    report, windows = tmp_path / "r.json", tmp_path / "w.jsonl"
    status = main(
        [
            "run",
            str(source),
            "--budget",
            "12000",
            "--store",
            "memory",
            "--quiet",
            "--report",
            str(report),
            "--windows",
            str(windows),
        ]
    )
    assert status == 0, capsys.readouterr().out
    turns = json.loads(report.read_text())["turns"]
    assert all(t["window_tokens"] <= 12_000 and t["valid"] for t in turns)
    shown = []
    for line in windows.read_text().splitlines():
        body = json.loads(line)
        messages = messages_from_anthropic(body["messages"])
        assert check(messages, tools=body.get("tools", [])).ok
        shown += [m for m in messages if any(u.id == "call_9" for u in m.tool_uses)]
    assert shown, "the trimmed message stays in some window"
    for message in shown:
        assert message.content[0].thinking == THINKING["thinking"]  # type: ignore[union-attr]
        assert message.content[0].signature == THINKING["signature"]  # type: ignore[union-attr]
        assert message.tool_uses[0].input == CALL["input"]
    assert any("trimmed by ctxflow; recall the whole message" in m.text for m in shown)


def test_recall_and_undo_give_the_oversized_message_back_after_a_replay(tmp_path: Path) -> None:
    """After a 12k replay the message shows trimmed; recall and undo give the original back."""
    run = read_run_input(str(_transcript(tmp_path / "t.jsonl")))
    original = next(
        m for m in run.transcript.messages if any(u.id == "call_9" for u in m.tool_uses)
    )
    engines: list[Engine] = []

    def factory(state: LayeredState) -> Engine:
        engine = Engine(load_chart("agent_loop"), state=state, budget=12_000, store=MemoryStore())
        engines.append(engine)
        return engine

    result = replay(run, engine_factory=factory)
    assert result.ok
    conversation = engines[0].conversation
    shown = conversation.get(original.id)
    assert shown.metadata[OVERLAY_KIND] == TRIMMED
    assert f"recall the whole message by its id {original.id}" in shown.text
    assert len(shown.text) < BIG // 4
    assert shown.content[0] == original.content[0] and shown.tool_uses == original.tool_uses
    assert recall(conversation, original.id) == original
    undo(conversation, original.id)
    restored = conversation.get(original.id)
    assert restored.content == original.content
    assert isinstance(restored.content[1], TextBlock) and len(restored.content[1].text) == BIG
    assert restored.role is Role.ASSISTANT
