"""A long session on SQLite: checkpoints that cost what changed, bounded records and memory.

Run it: ``python examples/long_session.py``. An engine with a 16,000-token
budget and a SQLite store takes 1,500 tool rounds (3,000 messages) of a
synthetic agent, reflecting every 10 steps with a decision. The script then
shows what stayed bounded (step records, memory tiers), the hidden messages
paged out to the store (placeholders that read their body back when asked),
what a checkpoint writes at the end, the store's bytes per message, and a
reopen in a new engine that freezes the restored heap for the collector
(``freeze_gc=True``).
"""

from __future__ import annotations

import gc
import random
import tempfile
from pathlib import Path

from ctxflow.engine import Engine
from ctxflow.model import Message, Placeholder, Role, TextBlock, ToolResultBlock, ToolUseBlock
from ctxflow.stores import SQLiteStore

ROUNDS = 1_500
WORDS = ("parser", "token", "window", "budget", "cache", "store", "session", "layer", "memory")


def tool_round(step: int, rng: random.Random) -> list[Message]:
    """One tool call and its result: a log excerpt no other round repeats."""
    call = Message(
        role=Role.ASSISTANT,
        content=(
            TextBlock(text=f"Step {step}: run the tests again."),
            ToolUseBlock(id=f"call_{step}", name="run_tests", input={"path": "tests/"}),
        ),
    )
    lines = [
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d} INFO "
        + " ".join(rng.choices(WORDS, k=6))
        for _ in range(rng.randint(3, 30))
    ]
    result = Message(
        role=Role.USER,
        content=(ToolResultBlock(tool_use_id=f"call_{step}", content="\n".join(lines)),),
    )
    return [call, result]


def main() -> None:
    """Drive the session in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="ctxflow-long-") as folder:
        run(Path(folder))


def run(folder: Path) -> None:
    """Drive the session, then print what stayed bounded and what it cost."""
    rng = random.Random(7)
    store = SQLiteStore(folder / "session.db")
    engine = Engine(store=store, budget=16_000, keep_records=200)
    engine.send("start", task="Keep the parser tests green.")
    engine.add_messages([Message.user("The parser tests fail on main; fix them.")])
    engine.send("plan_ready")
    for step in range(1, ROUNDS + 1):
        engine.window()
        batch = tool_round(step, rng)
        engine.add_messages(batch)
        engine.send("step")
        if step % 10 == 0:
            engine.send("reflect")
            batch += [
                Message.assistant(f"Decision: keep the fix of step {step} in src/parser.py."),
                Message.user("Carry on."),
            ]
            engine.add_messages(batch[-2:])
            engine.send("execute")
    engine.checkpoint("end")
    records = store.checkpoints(engine.session_id)
    memory = engine.state.memory
    print(
        f"messages: {len(engine.conversation)}, in the last window: {len(engine.window().messages)}"
    )
    print(f"records kept: {len(engine.records)} of {engine.records.total}")
    print(f"memory: {len(memory.episodic)} episodes, {len(memory.semantic)} facts (limits 32, 200)")
    hidden = [m for m in engine.conversation.history if m.hidden]
    paged = [m for m in hidden if isinstance(m, Placeholder)]
    read = sum(p.loaded for p in paged)
    print(f"hidden messages paged out to the store: {len(paged)} of {len(hidden)}, read: {read}")
    result = next(p for p in paged if p.role is Role.USER and p.tool_results)
    size = len(str(result.tool_results[0].content))  # reads the body back, checked
    print(f"a paged-out result reads back on request: {size} characters, loaded: {result.loaded}")
    last = sorted(r.size for r in records[-20:] if not r.full)
    print(f"a checkpoint at the end writes a manifest of {last[len(last) // 2]} bytes (median)")
    store.close()
    stored = sum(p.stat().st_size for p in folder.iterdir())
    print(f"store: {stored / len(engine.conversation):.0f} bytes per message")
    with SQLiteStore(folder / "session.db") as again:
        reopened = Engine.from_checkpoint(
            store=again, session_id=engine.session_id, budget=16_000, freeze_gc=True
        )
        frozen = gc.get_freeze_count() > 0
        print(f"reopened: {len(reopened.conversation)} messages, heap frozen: {frozen}")
        gc.unfreeze()


if __name__ == "__main__":
    main()
