"""Many agent sessions in one process: each one an engine the manager holds.

The manager creates, caches, evicts (saving first), reloads, merges and
splits sessions; every one of them is an Engine with its own phase, layered
state and conversation, and nothing of it is lost on the way.

Run: python examples/sessions_manager.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ctxflow import ContextManager, LayeredState, Message
from ctxflow.layers import SystemLayer
from ctxflow.model import ToolResultBlock, ToolUseBlock
from ctxflow.sessions import Limits
from ctxflow.stores import SQLiteStore


def turn(tool_id: str, output: str) -> list[Message]:
    """One tool round: the assistant's call and its result."""
    call = Message(
        role="assistant", content=(ToolUseBlock(id=tool_id, name="bash", input={"cmd": "ls"}),)
    )
    result = Message(role="user", content=(ToolResultBlock(tool_use_id=tool_id, content=output),))
    return [call, result]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sessions.sqlite"
        store = SQLiteStore(path)
        # At most 2 sessions live in memory; the rest are saved and unloaded.
        manager = ContextManager(store, max_live=2, limits=Limits(max_tokens=20_000))
        state = LayeredState(system=SystemLayer(prompt="You keep the build green."))
        ids = [
            manager.create(
                messages=[Message.user(f"task {i}")],
                state=state.with_fact("owner", f"u{i}"),
                data={"user": f"u{i}"},
            ).session_id
            for i in range(3)
        ]
        manager.append(ids[0], turn("a1", "README.md setup.py"), actor="agent")
        manager.update(ids[0], lambda e: e.set_data("status", "working", actor="agent"))
        stats = manager.stats()
        print(f"live: {stats.live} of {len(ids)} (evictions: {stats.evictions})")
        again = manager.get(ids[1])  # evicted earlier: reloaded from the store
        print(f"reloaded: {again.conversation.messages[0].text} data={dict(again.data)}")
        events = [(e.kind, e.actor) for e in manager.get(ids[0]).audit.events]
        print(f"audit: {events}")

        # Each session is its own phase machine: drive one through its phases.
        engine = manager.get(ids[0])
        engine.send("start", task="keep the build green")
        engine.send("plan_ready")
        manager.append(ids[0], turn("a2", "2 tests failed"))
        engine = manager.get(ids[0])
        engine.send("step")
        engine.send("pause")
        print(f"session 0: {engine.phase}, resumes in {engine.history['resume_point']}")
        for extra in ("one more", "and another"):  # evicts session 0 (saved first)
            manager.create(messages=[Message.user(extra)])
        print(f"evicted engine refuses changes: {engine.retired}")

        manager.append(ids[1], turn("b1", "tests/ src/"))
        merged = manager.merge([ids[0], ids[1]], strategy="deep")
        print(
            f"merged: {len(merged.conversation)} messages, valid={merged.conversation.check().ok}"
            f", phase={merged.phase}"
        )
        log = [Message.user("first"), *turn("c1", "ok"), Message.assistant("done")]
        log += [Message.user("second", id="second"), *turn("c2", "ok")]
        whole = manager.create(messages=log)
        head, tail = manager.split(whole.session_id, "second")
        print(f"split: {len(head.conversation)} + {len(tail.conversation)} messages")
        failed = manager.close()  # flushes every dirty session
        print(f"closed: unsaved={failed} sessions in store={len(store.sessions())}")
        store.close()

        # A new process (here: a new manager over the same file) gets it all back.
        fresh = ContextManager(SQLiteStore(path)).get(ids[0])
        facts = [f.value for f in fresh.state.memory.semantic]
        print(
            f"new manager: {fresh.phase}, {len(fresh.conversation)} messages, "
            f"system prompt {fresh.state.system.prompt!r}, facts {facts}"
        )
        fresh.send("resume")
        print(f"resumed in: {fresh.phase}")


if __name__ == "__main__":
    main()
