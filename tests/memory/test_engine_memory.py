"""Memory through the engine: consolidation on transitions, bounds, and memory across sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctxflow.adapters import AnthropicAdapter
from ctxflow.compression import HardReset, Ladder
from ctxflow.engine import Engine, PhaseConfig
from ctxflow.errors import PolicyError
from ctxflow.layers import Fact, LayeredState, SystemLayer, ToolDef
from ctxflow.loop import run_agent
from ctxflow.memory import (
    CONSOLIDATION_PREFIX,
    SESSION_EPISODE,
    Consolidator,
    InMemorySharedMemory,
    MemoryLimits,
    Owner,
    SQLiteSharedMemory,
    bound,
    shared_memory_for,
)
from ctxflow.model import Message
from ctxflow.persistence import MemoryStore
from ctxflow.stores import SQLiteStore
from ctxflow.testing import ScriptedLLM, text_response, tool_call_response
from ctxflow.tokens import counter_for

READ = ToolDef(name="read", description="Read a file.", input_schema={"type": "object"})
PHASES = {
    "planning": PhaseConfig(tools=()),
    "execution": PhaseConfig(tools=("read",)),
    "reflection": PhaseConfig(tools=()),
}
ALICE = Owner.user("acme", "alice")
BOB = Owner.user("acme", "bob")


def _read(arguments: Any) -> str:
    return f"contents of {arguments.get('path')}"


def _engine(shared: Any = None, owners: tuple[Owner, ...] = (), **kwargs: Any) -> Engine:
    return Engine(
        state=LayeredState(system=SystemLayer(prompt="Be careful.", tools=(READ,))),
        phases=PHASES,
        store=kwargs.pop("store", MemoryStore()),
        shared_memory=shared,
        owners=owners,
        **kwargs,
    )


def _memory_text(request: Any) -> str:
    """Where an Anthropic request carries long-term memory: settled memory in the system
    text, memory written since in the late context (the last user message's last block)."""
    system = "\n".join(block["text"] for block in request["system"])
    return system + "\n" + str(request["messages"][-1]["content"][-1]["text"])


def _shown(window: Any) -> str:
    return f"{window.system}\n{window.context}"


def _write_run(engine: Engine) -> tuple[Any, ScriptedLLM]:
    script = [
        text_response("Plan: find the database and remember it for alice."),
        tool_call_response(
            "memory",
            {
                "command": "write",
                "kind": "fact",
                "key": "db",
                "value": "postgres at db:5432",
                "scope": "user",
            },
        ),
        tool_call_response("read", {"path": "config"}),
        text_response("The database is postgres at db:5432."),
    ]
    llm = ScriptedLLM(script)
    result = run_agent(
        engine,
        llm,
        {"read": _read},
        adapter=AnthropicAdapter(model="scripted-model"),
        memory_tool=True,
        task="Find the database.",
        reflect_every=0,
    )
    return result, llm


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_users_fact_outlives_the_session_and_erasure_removes_it(
    backend: str, tmp_path: Path
) -> None:
    """Written through the memory tool, scoped to the user: in the next window, through a hard
    reset and a restore, in a new session of that user (not another's), gone once erased."""
    if backend == "memory":
        store: Any = MemoryStore()
        shared: Any = shared_memory_for(store)
    else:
        store = SQLiteStore(tmp_path / "agent.sqlite")
        shared = SQLiteSharedMemory(tmp_path / "agent.sqlite")
    engine = _engine(shared, (ALICE,), store=store)
    result, llm = _write_run(engine)
    assert result.finished
    assert "db: postgres at db:5432" in _memory_text(llm.requests[2])
    fact = engine.state.memory.fact("db")
    assert fact is not None and fact.scope == "user"
    assert shared.load(ALICE).facts[0].value == "postgres at db:5432"

    # a hard reset hides the conversation; memory is state and stays
    ladder = Ladder(rungs=[HardReset()])
    before = len(engine.conversation.effective())
    engine.compress(
        lambda c, s: ladder.run(c, s, budget=c.effective_tokens // 2).state, reason="reset"
    )
    assert len(engine.conversation.effective()) < before
    assert engine.state.memory.fact("db") == fact
    assert "db: postgres at db:5432" in _shown(engine.window())

    # a restore of the latest checkpoint has it too
    again = Engine.from_checkpoint(store=store, session_id=engine.session_id, phases=PHASES)
    assert again.state.memory.fact("db") == fact

    # a new session of the same user starts with it; another user's does not
    fresh = _engine(shared, (ALICE,), store=store)
    assert fresh.state.memory.fact("db") is not None
    assert "db: postgres at db:5432" in fresh.window().system  # loaded: settled
    assert _engine(shared, (BOB,), store=store).state.memory.fact("db") is None

    # erasing the user removes it from every later session
    assert shared.erase(ALICE) >= 1
    assert _engine(shared, (ALICE,), store=store).state.memory.fact("db") is None


def test_session_items_never_reach_the_shared_store() -> None:
    """Only user- or project-scoped items are pushed; deleting one deletes it there too."""
    shared = InMemorySharedMemory()
    engine = _engine(shared, (ALICE,))
    state = engine.state.with_facts(
        [Fact(key="a", value="session only"), Fact(key="b", value="alice's", scope="user")]
    )
    engine.set_state(state)
    assert [f.key for f in shared.load(ALICE).facts] == ["b"]
    kept = tuple(f for f in engine.state.memory.semantic if f.key != "b")
    engine.set_state(
        LayeredState(
            system=engine.state.system,
            memory=type(engine.state.memory)(semantic=kept),
        )
    )
    assert shared.load(ALICE).facts == ()


def test_owners_need_a_shared_memory_and_one_per_kind() -> None:
    """Bad shared-memory settings are refused before the engine exists."""
    with pytest.raises(PolicyError, match="shared_memory"):
        _engine(None, (ALICE,))
    with pytest.raises(PolicyError, match="one user"):
        _engine(InMemorySharedMemory(), (ALICE, BOB))
    with pytest.raises(PolicyError, match="at least one owner"):
        _engine(InMemorySharedMemory(), ())
    with pytest.raises(PolicyError, match=r"memory_limits|MemoryLimits"):
        _engine(memory_limits={"facts": 3})


def _tool_round(n: int, output: str) -> list[Message]:
    from ctxflow.model import Role, ToolResultBlock, ToolUseBlock

    return [
        Message(
            role=Role.ASSISTANT,
            content=(ToolUseBlock(id=f"c{n}", name="read", input={"path": f"f{n}"}),),
            id=f"a{n}",
        ),
        Message(
            role=Role.USER,
            content=(ToolResultBlock(tool_use_id=f"c{n}", content=output),),
            id=f"r{n}",
        ),
    ]


def test_reflection_writes_an_episode_for_the_span_and_finishing_the_sessions() -> None:
    """Each reflection consolidates the span since the last one; done writes the session's."""
    engine = _engine()
    engine.add_message(Message.user("Fix the parser. Decision: keep the public API unchanged."))
    engine.send("start")
    engine.send("plan_ready")
    for n in range(3):
        engine.add_messages(_tool_round(n, f"read {n}: ok"))
        engine.send("step")
    engine.send("reflect")
    first = engine.state.memory.episodic[-1]
    assert first.id.startswith(CONSOLIDATION_PREFIX) and first.span[-1] == "r2"
    assert any("public API" in f.value for f in engine.state.memory.semantic)
    engine.send("execute")
    engine.add_messages(_tool_round(3, "read 3: ok"))
    engine.send("step")
    engine.send("reflect")
    second = engine.state.memory.episodic[-1]
    assert second.span == ("a3", "r3")
    engine.send("finish")
    session = engine.state.memory.episodic[-1]
    assert session.id == SESSION_EPISODE and session.span[0] != "a3"
    assert all(item.tokens > 0 for item in engine.state.memory.episodic)


def test_memory_stays_within_its_limits_over_many_consolidations() -> None:
    """A long session consolidating again and again keeps each tier within MemoryLimits."""
    limits = MemoryLimits(facts=20, episodes=5, procedures=5)
    consolidate = Consolidator(counter=counter_for("cl100k_base"), limits=limits)
    state = LayeredState()
    messages: list[Message] = [Message.user("start")]
    for k in range(200):
        messages += [
            Message.assistant(f"Decision: setting number {k} is {k * 7}."),
            Message.user(f"Note: value {k} confirmed."),
        ]
        if k % 5 == 4:
            from ctxflow.model import Conversation

            state = state.with_runtime(step=k)
            got = consolidate(Conversation(messages), state)
            assert isinstance(got, LayeredState)
            state = got
            memory = state.memory
            assert len(memory.semantic) <= 20
            assert len(memory.episodic) <= 5
            assert len(memory.procedural) <= 5
    assert any("199" in f.value for f in state.memory.semantic)  # the newest are kept


def test_bound_merges_restated_facts_and_retires_the_least_important() -> None:
    """The same value under two keys merges into the newest; the least important go first."""
    from ctxflow.layers import MemoryLayer

    memory = MemoryLayer(
        semantic=(
            Fact(key="a", value="Port  8080"),
            Fact(key="b", value="port 8080"),
            Fact(key="c", value="x", importance=0.1),
            Fact(key="d", value="y", importance=0.9),
        )
    )
    kept = bound(memory, MemoryLimits(facts=2)).semantic
    assert [f.key for f in kept] == ["b", "d"]


def test_the_window_keeps_the_memory_relevant_to_the_task_when_not_all_fits() -> None:
    """With more facts than the memory allocation holds, the window keeps the relevant one
    (BM25 over the task and the latest user turn) and the report says why."""
    facts = [
        Fact(key=f"service-{k}", value=f"the {name} service listens on port {8000 + k}", step=k)
        for k, name in enumerate(["billing", "search", "auth", "mail", "queue"] * 60)
    ]
    facts.append(
        Fact(key="staging-db", value="the staging database host is db-stg-07.internal", step=0)
    )
    engine = Engine(
        state=LayeredState(system=SystemLayer(prompt="Be careful.")).with_facts(facts),
        budget=4_000,
    )
    engine.add_message(Message.user("Connect to the staging database and check the schema."))
    window = engine.window(phase="execution")
    assert "db-stg-07.internal" in _shown(window)
    assert window.tokens <= 4_000
    reasons = window.report.memory_chosen["semantic"]
    assert any(r.startswith("staging-db: relevance") for r in reasons)
    assert len(reasons) < len(facts)
