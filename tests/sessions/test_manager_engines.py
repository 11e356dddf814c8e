"""The manager holds engines: one agent context, nothing lost under evictions and signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ctxflow import Engine
from ctxflow.errors import SessionEvicted
from ctxflow.layers import LayeredState, SystemLayer
from ctxflow.model import Message, ToolResultBlock, ToolUseBlock
from ctxflow.sessions._manager import ContextManager, retry
from ctxflow.stores import MemoryStore, SQLiteStore

REPO = Path(__file__).resolve().parents[2]


def turn(tag: str) -> list[Message]:
    call = Message(
        role="assistant",
        id=f"{tag}-call",
        content=(ToolUseBlock(id=f"t-{tag}", name="bash", input={"n": tag}),),
    )
    result = Message(
        role="user",
        id=f"{tag}-result",
        content=(ToolResultBlock(tool_use_id=f"t-{tag}", content=f"ran {tag}"),),
    )
    return [call, result]


def seeded_state() -> LayeredState:
    state = LayeredState(system=SystemLayer(prompt="You fix failing builds."))
    return state.with_fact("repo", "ponyc").with_fact("branch", "main")


def test_manager_shows_an_engines_session_whole() -> None:
    """get() of an engine's session shows its phase and layered state; saves keep them."""
    store = MemoryStore()
    engine = Engine(store=store, state=seeded_state())
    engine.send("start", task="fix the build")
    engine.add_messages([Message.user("the build fails")])
    engine.send("plan_ready")
    manager = ContextManager(store)
    live = manager.get(engine.session_id)
    assert live.phase == "execution"
    assert live.state.system.prompt == "You fix failing builds."
    assert live.state.memory.fact("repo") is not None
    manager.append(engine.session_id, turn("a"))
    manager.save(engine.session_id)
    again = Engine.from_checkpoint(store=store, session_id=engine.session_id)
    assert again.state.system.prompt == "You fix failing builds."
    assert [f.key for f in again.state.memory.semantic] == ["repo", "branch"]
    assert again.phase == "execution"
    assert [m.id for m in again.conversation.messages][-2:] == ["a-call", "a-result"]


def test_a_session_survives_evict_reload_merge_and_a_new_manager(tmp_path: Path) -> None:
    """An engine paused in execution comes back whole from a new manager, and resumes there."""
    path = tmp_path / "sessions.db"
    manager = ContextManager(SQLiteStore(path), max_live=1)
    engine = manager.create(messages=[Message.user("the build fails")], state=seeded_state())
    sid = engine.session_id
    engine.send("start", task="fix the build")
    engine.send("plan_ready")
    manager.append(sid, turn("a"))
    engine = manager.get(sid)
    engine.send("step")
    engine.send("pause")
    expected = (
        engine.phase,
        engine.history,
        engine.state,
        list(engine.conversation.messages),
        engine.conversation.log_counts(),
    )
    other = manager.create(messages=[Message.user("another task"), *turn("b")])
    assert engine.retired  # evicted: max_live is 1
    merged = manager.merge([sid, other.session_id], strategy="deep")
    assert merged.phase == "paused" and merged.history == {"resume_point": ["execution"]}
    assert manager.close() == []
    fresh = ContextManager(SQLiteStore(path)).get(sid)
    got = (
        fresh.phase,
        fresh.history,
        fresh.state,
        list(fresh.conversation.messages),
        fresh.conversation.log_counts(),
    )
    assert got == expected
    assert fresh.conversation.measure_key == engine.conversation.measure_key
    fresh.send("resume")
    assert fresh.phase == "execution"


def test_an_evicted_engine_refuses_changes() -> None:
    """An engine handed out and then evicted refuses changes; get() gives the live one."""
    manager = ContextManager(MemoryStore(), max_live=1)
    first = manager.create(messages=[Message.user("one")])
    manager.create(messages=[Message.user("two")])
    with pytest.raises(SessionEvicted, match=first.session_id):
        first.add_messages(turn("late"))
    with pytest.raises(SessionEvicted):
        first.send("start", task="x")
    assert len(first.conversation) == 1
    live = manager.get(first.session_id)
    assert live is not first and not live.retired
    live.add_messages(turn("ok"))
    assert manager.get(first.session_id) is live


def test_a_lost_session_is_dropped_even_with_unsaved_changes() -> None:
    """drop_lost retires the engine, unsaved changes and all; get() loads the saved session."""
    manager = ContextManager(MemoryStore())
    engine = manager.create(messages=[Message.user("one")])
    manager.save(engine.session_id)
    engine.add_messages(turn("unsaved"))
    assert manager.invalidate(engine.session_id) is False  # a changed copy is kept ...
    assert manager.drop_lost(engine.session_id) is True  # ... a lost one is not
    assert engine.retired
    with pytest.raises(SessionEvicted):
        engine.add_messages(turn("later"))
    reloaded = manager.get(engine.session_id)
    assert [m.text for m in reloaded.conversation] == ["one"]
    assert manager.drop_lost("ses_unknown") is False


def test_get_returns_the_same_live_engine_while_cached() -> None:
    """Each session is its own phase machine, and get() returns the same object."""
    manager = ContextManager(MemoryStore())
    a, b = manager.create(), manager.create()
    a.send("start", task="a")
    assert manager.get(a.session_id) is a
    assert (a.phase, b.phase) == ("planning", "idle")


@pytest.mark.parametrize("write_through", [False, True])
def test_threads_appending_through_a_small_cache_lose_nothing(
    tmp_path: Path, write_through: bool
) -> None:
    """8 threads x 150 appends over 8 sessions, 2 live: every acknowledged message is kept."""
    path = tmp_path / "s.db"
    manager = ContextManager(SQLiteStore(path), max_live=2, write_through=write_through)
    ids = [manager.create(messages=[Message.user(f"task {i}")]).session_id for i in range(8)]
    acknowledged: list[tuple[str, str]] = []
    refused: list[str] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        for i in range(150):
            sid = ids[(i + k) % 8]
            tag = f"{k}-{i}"
            try:
                manager.append(sid, turn(tag))
            except SessionEvicted:
                with lock:
                    refused.append(tag)
                continue
            with lock:
                acknowledged.append((sid, tag))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(refused) <= 12  # at most 1% of 1,200
    assert manager.close() == []
    reloaded = ContextManager(SQLiteStore(path))
    kept = {sid: {m.id for m in reloaded.get(sid).conversation.messages} for sid in ids}
    lost = [tag for sid, tag in acknowledged if f"{tag}-call" not in kept[sid]]
    assert lost == []
    assert len(acknowledged) + len(refused) == 1_200


def test_retry_gets_past_an_eviction() -> None:
    """retry() by default retries SessionEvicted as well as conflicts."""
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise SessionEvicted("evicted", rule="engine_retired")
        return "ok"

    assert retry(flaky, sleep=lambda _: None) == "ok"


SIGTERM_CHILD = """
import os, signal, sys
from ctxflow.model import Message, ToolResultBlock, ToolUseBlock
from ctxflow.sessions._manager import ContextManager
from ctxflow.stores import SQLiteStore

path, fire_at = sys.argv[1], int(sys.argv[2])
store = SQLiteStore(path)
manager = ContextManager(store, max_live=2)
manager.install_signal_handlers()
ids = [manager.create(messages=[Message.user(f"task {i}")]).session_id for i in range(6)]
statements = [0]

def trace(statement):
    # Counted only inside a transaction, so the signal lands inside one.
    if store._db.in_transaction:
        statements[0] += 1
        if statements[0] == fire_at:
            os.kill(os.getpid(), signal.SIGTERM)

store._db.set_trace_callback(trace)
for i in range(100_000):
    sid = ids[i % 6]
    use = ToolUseBlock(id=f"t{i}", name="x", input={})
    call = Message(role="assistant", id=f"c{i}", content=(use,))
    done = ToolResultBlock(tool_use_id=f"t{i}", content="ok")
    result = Message(role="user", id=f"r{i}", content=(done,))
    manager.append(sid, [call, result])
    print(sid, i, flush=True)
"""


@pytest.mark.slow
def test_sigterm_inside_a_sqlite_transaction_loses_no_acknowledged_message(
    tmp_path: Path,
) -> None:
    """30 rounds of SIGTERM inside the store's transaction: nothing acknowledged lost, exit 143."""
    for round_ in range(30):
        path = tmp_path / f"round{round_}.db"
        fire_at = 20 + 23 * round_  # statements into transactions: lands in evictions' saves
        child = subprocess.run(
            [sys.executable, "-c", SIGTERM_CHILD, str(path), str(fire_at)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert child.returncode == 128 + signal.SIGTERM, child.stderr
        assert child.stderr == ""
        acknowledged = [line.split() for line in child.stdout.splitlines()]
        assert acknowledged, "the signal must land after some appends"
        manager = ContextManager(SQLiteStore(path))
        kept = {
            sid: {m.id for m in manager.get(sid).conversation.messages}
            for sid in {sid for sid, _ in acknowledged}
        }
        lost = [i for sid, i in acknowledged if f"c{i}" not in kept[sid]]
        assert lost == [], f"round {round_}: lost {lost}"


FAILING_CHILD = """
import os, signal, sys, time
from ctxflow.errors import StoreError
from ctxflow.model import Message
from ctxflow.sessions._manager import ContextManager
from ctxflow.stores import SQLiteStore

class Failing(SQLiteStore):
    broken = False
    def put(self, draft, *, expected_parent):
        if self.broken:
            raise StoreError("disk unplugged", rule="test")
        return super().put(draft, expected_parent=expected_parent)

store = Failing(sys.argv[1])
manager = ContextManager(store)
manager.install_signal_handlers()
engine = manager.create(messages=[Message.user("task")])
manager.append(engine.session_id, [Message.assistant("working")])
store.broken = True
print(engine.session_id, flush=True)
while True:
    time.sleep(0.05)
"""


def test_sigterm_with_an_incomplete_flush_names_the_sessions_and_exits_1(tmp_path: Path) -> None:
    """When the flush cannot save a session, the exit status is 1 and the session is named."""
    with subprocess.Popen(
        [sys.executable, "-c", FAILING_CHILD, str(tmp_path / "s.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        sid = child.stdout.readline().strip()
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 1
        err = child.stderr.read()
    assert sid in err and "could not be saved" in err
    assert "Traceback" not in err
