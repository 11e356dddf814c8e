"""A manager that keeps its sessions' memory in bounds, and what its stats say.

Past the soft threshold the manager saves and evicts its largest idle
sessions; at the hard threshold it refuses to load one more until something
goes idle. Evicted sessions come back from the store as they were.

Run: python examples/sessions_memory.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ctxflow import ContextManager, Message
from ctxflow.errors import MemoryLimitExceeded
from ctxflow.model import ToolResultBlock, ToolUseBlock
from ctxflow.sessions import MemoryThresholds
from ctxflow.stores import SQLiteStore


class Clock:
    """The manager's clock, moved by hand so 'idle' is visible in a short script."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def session(task: str, output_chars: int) -> list[Message]:
    """A task and one tool round whose output is ``output_chars`` long."""
    call = ToolUseBlock(id=f"{task}-1", name="cat", input={"path": "build.log"})
    result = ToolResultBlock(tool_use_id=f"{task}-1", content="line\n" * (output_chars // 5))
    return [
        Message.user(f"task {task}"),
        Message(role="assistant", content=(call,)),
        Message(role="user", content=(result,)),
    ]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteStore(Path(folder) / "sessions.sqlite")
        clock = Clock()
        memory = MemoryThresholds(max_bytes=200_000, soft=0.8, target=0.5, idle=60.0)
        manager = ContextManager(store, memory=memory, clock=clock)
        sizes = {"small": 5_000, "large": 90_000, "medium": 40_000}
        for name, chars in sizes.items():
            manager.create(name, messages=session(name, chars))
        manager.append("large", [Message.assistant("noted"), Message.user("go on")])
        held = manager.stats().bytes_in_memory
        print(f"held: {held // 1000} kB of {memory.max_bytes // 1000} kB, level ok")

        clock.now += 120  # the three go idle; a new session crosses the soft threshold
        manager.create("new", messages=session("new", 40_000))
        stats = manager.stats()
        print(f"evicted for memory: {stats.memory_evictions} (the largest idle session, saved)")
        print(f"held after: {stats.bytes_in_memory // 1000} kB, live: {stats.live}")
        large = manager.get("large")  # back from the store; the largest idle one goes instead
        last = large.conversation.messages[-1].text
        print(f"reloaded 'large': {len(large.conversation)} messages, the last {last!r}")

        # Fill up with sessions in use (not idle): the next load is refused.
        for i in range(6):
            try:
                manager.create(f"busy{i}", messages=session(f"busy{i}", 30_000))
            except MemoryLimitExceeded as refused:
                held = refused.details["held_bytes"]
                print(f"refused busy{i}: {refused.rule}, held {held // 1000} kB")
                break
        clock.now += 120
        check = manager.check_memory()
        print(f"after idling: level {check.level}, evicted {len(check.evicted)}")

        latency = manager.stats().latency
        calls = ", ".join(f"{op} {figures.count}" for op, figures in latency.items())
        print(f"calls timed: {calls}")
        save = latency["save"]
        print(f"save latency: p50 {save.p50_ms:.2f} ms, p99 {save.p99_ms:.2f} ms")
        print(f"closed: unsaved={manager.close()}")
        store.close()


if __name__ == "__main__":
    main()
