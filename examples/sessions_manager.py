"""Many agent contexts in one process: create, update, evict, reload, merge, split.

Run: python examples/sessions_manager.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ctxflow.model import Message, ToolResultBlock, ToolUseBlock
from ctxflow.sessions.manager import ContextManager, Limits
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
        store = SQLiteStore(Path(folder) / "contexts.sqlite")
        # At most 2 contexts live in memory; the rest are saved and unloaded.
        manager = ContextManager(store, max_live=2, limits=Limits(max_tokens=20_000))
        ids = [
            manager.create(messages=[Message.user(f"task {i}")], data={"user": f"u{i}"}).id
            for i in range(3)
        ]
        manager.append(ids[0], turn("a1", "README.md setup.py"), actor="agent")
        manager.update(ids[0], lambda c: c.set_data("status", "working", actor="agent"))
        stats = manager.stats()
        print(f"live: {stats.live} of {len(ids)} (evictions: {stats.evictions})")
        again = manager.get(ids[1])  # evicted earlier: reloaded from the store
        print(f"reloaded: {again.conversation.messages[0].text} data={again.data}")
        events = [(e.kind, e.actor) for e in manager.get(ids[0]).audit.events]
        print(f"audit: {events}")
        manager.append(ids[1], turn("b1", "tests/ src/"))
        merged = manager.merge([ids[0], ids[1]], strategy="deep")
        print(
            f"merged: {len(merged.conversation)} messages, valid={merged.conversation.check().ok}"
        )
        log = [Message.user("first"), *turn("c1", "ok"), Message.assistant("done")]
        log += [Message.user("second", id="second"), *turn("c2", "ok")]
        whole = manager.create(messages=log)
        head, tail = manager.split(whole.id, "second")
        print(f"split: {len(head.conversation)} + {len(tail.conversation)} messages")
        failed = manager.close()  # flushes every dirty context
        print(f"closed: unsaved={failed} sessions in store={len(store.sessions())}")
        store.close()


if __name__ == "__main__":
    main()
