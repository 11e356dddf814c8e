"""The memory tool: its handler on plain states, and the agent loop wired to it (sync and async)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from ctxflow.adapters import AnthropicAdapter, OpenAIAdapter, tool_to_anthropic
from ctxflow.engine import AsyncEngine, Engine, PhaseConfig
from ctxflow.errors import PolicyError
from ctxflow.layers import Episode, Fact, LayeredState, Procedure, SystemLayer, ToolDef
from ctxflow.loop import AgentResult, arun_agent, run_agent
from ctxflow.memory._tool import (
    MEMORY_TOOL,
    NOTE_PREFIX,
    MemoryOutcome,
    anthropic_memory_tool,
    handle_memory,
    keyword_rank,
    openai_memory_tool,
)
from ctxflow.persistence import MemoryStore
from ctxflow.testing import (
    AsyncScriptedLLM,
    ScriptedLLM,
    capture_events,
    text_response,
    tool_call_response,
)


def ok(state: LayeredState, **arguments: Any) -> MemoryOutcome:
    """One call that must succeed."""
    outcome = handle_memory(state, arguments, step=2)
    assert not outcome.is_error, outcome.text
    return outcome


def bad(state: LayeredState, arguments: Any, **options: Any) -> MemoryOutcome:
    """One call that must come back as an error, the state untouched."""
    outcome = handle_memory(state, arguments, **options)
    assert outcome.is_error and not outcome.changed and outcome.state is state
    assert outcome.text.startswith("Error: ")
    return outcome


def stocked() -> LayeredState:
    """A state holding a fact, a note, a procedure and an episode."""
    state = LayeredState()
    state = ok(state, command="write", kind="fact", key="db", value="postgres on port 5432").state
    state = ok(state, command="write", kind="note", key="todo", value="read a\nread b").state
    state = ok(
        state, command="write", kind="procedure", name="deploy", steps=["build", "push"]
    ).state
    return state.with_episode(Episode(id="e1", summary="fixed the failing login test"))


# -- the definition ------------------------------------------------------------------


def test_the_definition_renders_through_the_adapters() -> None:
    """Both API shapes come from the adapters' tool renderers, with the same schema."""
    anthropic = anthropic_memory_tool()
    openai = openai_memory_tool()
    assert anthropic == tool_to_anthropic(MEMORY_TOOL)
    assert anthropic["name"] == "memory" and anthropic["input_schema"]["required"] == ["command"]
    assert openai["type"] == "function" and openai["function"]["name"] == "memory"
    assert openai["function"]["parameters"] == anthropic["input_schema"]
    commands = anthropic["input_schema"]["properties"]["command"]["enum"]
    assert commands == ["view", "search", "write", "update", "delete"]


# -- commands ------------------------------------------------------------------------


def test_write_creates_each_kind_with_scope_importance_step_and_source() -> None:
    """write makes a fact, a note (a fact keyed note:<name>) and a procedure, stamped."""
    state = LayeredState()
    outcome = handle_memory(
        state,
        {"command": "write", "kind": "fact", "key": "db", "value": "pg", "scope": "project"},
        step=7,
        source="m1",
    )
    assert outcome.changed and outcome.text == "Saved fact 'db'."
    assert outcome.state.memory.fact("db") == Fact(
        key="db", value="pg", source="m1", scope="project", step=7
    )
    state = ok(
        outcome.state, command="write", kind="note", key="My Todo!", value="x", importance=0.9
    ).state
    note = state.memory.fact(NOTE_PREFIX + "My-Todo")
    assert note is not None and note.importance == 0.9 and note.scope == "session"
    state = ok(state, command="write", kind="procedure", name="deploy", steps="1. build").state
    assert state.memory.procedural == (Procedure(name="deploy", steps="1. build", step=2),)


def test_write_over_an_existing_item_keeps_what_is_not_given() -> None:
    """A second write with the same key changes the value and keeps scope and importance."""
    state = ok(LayeredState(), command="write", kind="fact", key="k", value="a", scope="user").state
    outcome = ok(state, command="write", kind="fact", key="k", value="b")
    assert outcome.text == "Updated fact 'k'."
    assert [(f.value, f.scope) for f in outcome.state.memory.semantic] == [("b", "user")]
    same = ok(outcome.state, command="write", kind="fact", key="k", value="b")
    assert not same.changed and "nothing changed" in same.text


def test_update_changes_only_existing_items() -> None:
    """update changes scope alone or steps alone; an unknown key is an error naming it."""
    state = stocked()
    state = ok(state, command="update", kind="fact", key="db", scope="project").state
    fact = state.memory.fact("db")
    assert fact is not None and fact.scope == "project" and fact.value == "postgres on port 5432"
    state = ok(state, command="update", kind="procedure", name="deploy", steps=["test"]).state
    assert state.memory.procedural[0].steps == "1. test"
    state = ok(state, command="update", kind="note", key="todo", value="done").state
    assert state.memory.fact("note:todo") is not None
    missing = bad(state, {"command": "update", "kind": "fact", "key": "nope", "value": "v"})
    assert "'key'" in missing.text and "nope" in missing.text
    nothing = bad(state, {"command": "update", "kind": "fact", "key": "db"})
    assert "'value', 'scope', 'importance'" in nothing.text
    no_proc = bad(state, {"command": "update", "kind": "procedure", "name": "x", "steps": "s"})
    assert "'name'" in no_proc.text


def test_delete_removes_each_kind_and_refuses_unknown_ones() -> None:
    """delete drops a fact, a note and a procedure; a missing one names the field."""
    state = stocked()
    state = ok(state, command="delete", kind="fact", key="db").state
    state = ok(state, command="delete", kind="note", key="todo").state
    state = ok(state, command="delete", kind="procedure", name="deploy").state
    assert state.memory.semantic == () and state.memory.procedural == ()
    assert len(state.memory.episodic) == 1
    assert "'key'" in bad(state, {"command": "delete", "kind": "fact", "key": "db"}).text
    assert "'name'" in bad(state, {"command": "delete", "kind": "procedure", "name": "x"}).text
    episode = bad(state, {"command": "delete", "kind": "episode", "key": "e1"})
    assert "'kind'" in episode.text


def test_view_lists_by_kind_and_shows_one_item_in_full() -> None:
    """view lists every kind in sections, filters by kind, and shows one item by key."""
    state = stocked()
    listing = ok(state, command="view").text
    assert "## Facts (1)\n- db: postgres on port 5432" in listing
    assert "## Procedures (1)\n- deploy: 1. build 2. push" in listing
    assert "## Notes (1)\n- todo: read a read b" in listing
    assert "## Episodes (1)\n- e1: fixed the failing login test" in listing
    notes = ok(state, command="view", kind="note").text
    assert "todo" in notes and "db" not in notes
    full = ok(state, command="view", kind="note", key="todo").text
    assert full.endswith("read a\nread b") and "step: 2" in full
    assert ok(LayeredState(), command="view").text == "Memory is empty."
    assert ok(LayeredState(), command="view", kind="fact").text == "No facts in memory."
    assert "'key'" in bad(state, {"command": "view", "key": "nope"}).text


def test_view_lists_long_values_trimmed() -> None:
    """A listing shows a long value cut short; the full view shows all of it."""
    state = ok(LayeredState(), command="write", kind="fact", key="k", value="word " * 200).state
    line = ok(state, command="view").text.splitlines()[1]
    assert line.endswith("(scope: session, importance: 0.5)") and len(line) < 200
    assert len(ok(state, command="view", key="k").text) > 900


def test_search_ranks_by_keyword_overlap_and_honours_kind_and_limit() -> None:
    """search finds items sharing words with the query, most shared first, within the limit."""
    state = stocked()
    state = ok(state, command="write", kind="fact", key="port", value="the app port is 8080").state
    found = ok(state, command="search", query="postgres port").text
    lines = found.splitlines()
    assert lines[0] == "2 matches for 'postgres port':"
    assert lines[1].startswith("- [fact] db:") and lines[2].startswith("- [fact] port:")
    assert len(ok(state, command="search", query="port", limit=1).text.splitlines()) == 2
    episodes = ok(state, command="search", query="login", kind="episode").text
    assert "[episode] e1" in episodes
    assert ok(state, command="search", query="kubernetes").text.startswith("Nothing in memory")
    assert "'limit'" in bad(state, {"command": "search", "query": "x", "limit": 0}).text
    assert "'query'" in bad(state, {"command": "search"}).text


def test_keyword_rank_breaks_ties_by_recency() -> None:
    """More shared words first, then the denser document, then the later; no overlap: left out."""
    assert keyword_rank(["a b", "b c", "a", "z", "a x y"], "A b") == [0, 2, 1, 4]
    assert keyword_rank(["b", "b"], "b") == [1, 0]


def test_search_takes_a_ranking_callable() -> None:
    """A passed rank decides the order; a rank returning bad indexes is a PolicyError."""
    state = stocked()
    seen: list[tuple[Sequence[str], str]] = []

    def last_first(documents: Sequence[str], query: str) -> list[int]:
        seen.append((documents, query))
        return list(reversed(range(len(documents))))

    text = handle_memory(state, {"command": "search", "query": "q"}, rank=last_first).text
    assert seen[0][1] == "q" and seen[0][0][0] == "db: postgres on port 5432"
    assert text.splitlines()[1].startswith("- [episode] e1")
    with pytest.raises(PolicyError) as caught:
        handle_memory(state, {"command": "search", "query": "q"}, rank=lambda d, q: [99])
    assert caught.value.rule == "memory_rank"


# -- Anthropic's memory-tool shape ---------------------------------------------------


def test_anthropic_commands_work_on_notes() -> None:
    """create, view, str_replace, insert, rename and delete act on notes under /memories."""
    state = LayeredState()
    state = ok(state, command="create", path="/memories/plan.md", file_text="one\ntwo").state
    assert state.memory.fact("note:plan.md") is not None
    assert ok(state, command="view", path="/memories").text == (
        "/memories (1 file)\n- /memories/plan.md (7 characters)"
    )
    assert ok(state, command="view", path="/memories/plan.md").text == (
        "/memories/plan.md:\n     1\tone\n     2\ttwo"
    )
    ranged = ok(state, command="view", path="/memories/plan.md", view_range=[2, -1]).text
    assert ranged == "/memories/plan.md:\n     2\ttwo"
    state = ok(
        state, command="str_replace", path="/memories/plan.md", old_str="two", new_str="2"
    ).state
    state = ok(
        state, command="insert", path="/memories/plan.md", insert_line=1, insert_text="1.5"
    ).state
    fact = state.memory.fact("note:plan.md")
    assert fact is not None and fact.value == "one\n1.5\n2"
    state = ok(
        state, command="rename", old_path="/memories/plan.md", new_path="/memories/p.md"
    ).state
    assert state.memory.fact("note:plan.md") is None
    assert ok(state, command="view", kind="note", key="p.md").text.endswith("one\n1.5\n2")
    state = ok(state, command="delete", path="/memories/p.md").state
    assert state.memory.semantic == ()


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"command": "create", "path": "/etc/passwd", "file_text": "x"}, "'path'"),
        ({"command": "create", "path": "/memories/a/b.md", "file_text": "x"}, "subdirectories"),
        ({"command": "create", "path": "/memories/../x", "file_text": "x"}, "subdirectories"),
        ({"command": "create", "path": "/memories/x.md"}, "'file_text'"),
        ({"command": "delete", "path": "/memories"}, "'path'"),
        ({"command": "view", "path": "/memories/none.md"}, "'path'"),
        ({"command": "str_replace", "path": "/memories/n.md", "old_str": "zz"}, "'old_str'"),
        ({"command": "insert", "path": "/memories/n.md", "insert_line": 9}, "'insert_line'"),
        ({"command": "view", "path": "/memories/n.md", "view_range": [0, 1]}, "'view_range'"),
        (
            {"command": "rename", "old_path": "/memories/n.md", "new_path": "/memories/n2.md"},
            "'new_path'",
        ),
        (
            {"command": "rename", "old_path": "/memories/x.md", "new_path": "/memories/y"},
            "'old_path'",
        ),
        ({"command": "str_replace", "path": "/memories/n.md", "old_str": "a\nb"}, "empty"),
    ],
)
def test_anthropic_commands_refuse_what_they_cannot_do(
    arguments: dict[str, Any], field: str
) -> None:
    """Paths outside a flat /memories, missing notes and failed edits are errors, named."""
    state = ok(LayeredState(), command="create", path="/memories/n.md", file_text="a\nb").state
    state = ok(state, command="create", path="/memories/n2.md", file_text="c").state
    assert field in bad(state, arguments).text


# -- bad input never raises ----------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ("write", "the arguments must be an object"),
        ({}, "'command'"),
        ({"command": 3}, "'command'"),
        ({"command": "forget"}, "'command'"),
        ({"command": "write"}, "'kind'"),
        ({"command": "write", "kind": "thought", "key": "k", "value": "v"}, "'kind'"),
        ({"command": "write", "kind": "fact", "value": "v"}, "'key'"),
        ({"command": "write", "kind": "fact", "key": "k"}, "'value'"),
        ({"command": "write", "kind": "fact", "key": "k", "value": 5}, "'value'"),
        ({"command": "write", "kind": "fact", "key": " ", "value": "v"}, "'key'"),
        ({"command": "write", "kind": "fact", "key": "note:x", "value": "v"}, "'key'"),
        ({"command": "write", "kind": "note", "key": "!!", "value": "v"}, "'key'"),
        ({"command": "write", "kind": "fact", "key": "k", "value": "v", "scope": "all"}, "'scope'"),
        (
            {"command": "write", "kind": "fact", "key": "k", "value": "v", "importance": 2},
            "'importance'",
        ),
        (
            {"command": "write", "kind": "fact", "key": "k", "value": "v", "importance": True},
            "'importance'",
        ),
        ({"command": "write", "kind": "procedure", "name": "p"}, "'steps'"),
        ({"command": "write", "kind": "procedure", "name": "p", "steps": []}, "'steps'"),
        ({"command": "write", "kind": "procedure", "steps": "s"}, "'name'"),
        ({"command": "view", "kind": "feeling"}, "'kind'"),
        ({"command": "search", "query": 4}, "'query'"),
        ({"command": "search", "query": "q", "limit": "3"}, "'limit'"),
        ({"command": "delete", "kind": "fact"}, "'key'"),
    ],
)
def test_bad_arguments_come_back_as_errors_naming_the_field(arguments: Any, field: str) -> None:
    """Every bad argument is an is_error outcome naming the field; nothing raises."""
    assert field in bad(LayeredState(), arguments).text


def test_sizes_are_bounded() -> None:
    """Texts over max_write_chars and new items past max_items are refused; replacing is not."""
    state = LayeredState()
    long = bad(
        state,
        {"command": "write", "kind": "fact", "key": "k", "value": "x" * 41},
        max_write_chars=40,
    )
    assert "'value' must be at most 40 characters (got 41)" in long.text
    steps = {"command": "write", "kind": "procedure", "name": "p", "steps": ["x" * 30] * 2}
    assert "'steps'" in bad(state, steps, max_write_chars=40).text
    created = {"command": "create", "path": "/memories/n", "file_text": "x" * 41}
    assert "'file_text'" in bad(state, created, max_write_chars=40).text
    state = ok(state, command="create", path="/memories/n", file_text="x" * 40).state
    grow = {"command": "insert", "path": "/memories/n", "insert_line": 0, "insert_text": "y"}
    assert "over the limit of 40" in bad(state, grow, max_write_chars=40).text
    assert (
        "'key'"
        in bad(state, {"command": "write", "kind": "fact", "key": "k" * 200, "value": "v"}).text
    )
    full = handle_memory(
        state, {"command": "write", "kind": "fact", "key": "a", "value": "v"}, max_items=1
    )
    assert full.is_error and "memory is full (1 items, at most 1)" in full.text
    again = {"command": "create", "path": "/memories/n", "file_text": "z"}
    assert not handle_memory(state, again, max_items=1).is_error


@pytest.mark.parametrize(
    ("option", "value"),
    [("step", -1), ("max_write_chars", 0), ("max_items", True), ("rank", "bm25")],
)
def test_bad_handler_parameters_are_policy_errors(option: str, value: Any) -> None:
    """The developer's parameters (not the model's arguments) raise PolicyError."""
    with pytest.raises(PolicyError):
        handle_memory(LayeredState(), {"command": "view"}, **{option: value})


# -- the loop ------------------------------------------------------------------------

READ = ToolDef(
    name="read",
    description="Read a file.",
    input_schema={
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
)
PHASES = {
    "planning": PhaseConfig(tools=()),
    "execution": PhaseConfig(tools=("read",)),
    "reflection": PhaseConfig(tools=()),
}
ANTHROPIC = AnthropicAdapter(model="scripted-model")


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Run each loop test on the sync and the async loop."""
    return str(request.param)


def read(arguments: Mapping[str, Any]) -> str:
    """A stand-in file reader."""
    return f"contents of {arguments['path']}"


def run(
    mode: str, script: Sequence[Any], *, store: MemoryStore | None = None, **kwargs: Any
) -> tuple[Engine | AsyncEngine, Any, AgentResult]:
    """One run with a fresh engine (over ``store``) and a scripted model."""
    options: dict[str, Any] = {
        "state": LayeredState(system=SystemLayer(prompt="Be careful.", tools=(READ,))),
        "phases": PHASES,
        "store": store if store is not None else MemoryStore(),
    }
    kwargs.setdefault("task", "Find the database, remember it, report.")
    kwargs.setdefault("reflect_every", 0)
    kwargs.setdefault("adapter", ANTHROPIC)
    if mode == "sync":
        engine = Engine(**options)
        llm: Any = ScriptedLLM(script)
        return engine, llm, run_agent(engine, llm, {"read": read}, memory_tool=True, **kwargs)
    aengine = AsyncEngine(**options)
    allm = AsyncScriptedLLM(script)
    coroutine = arun_agent(aengine, allm, {"read": read}, memory_tool=True, **kwargs)
    return aengine, allm, asyncio.run(coroutine)


def late(request: Mapping[str, Any]) -> str:
    """The late context of an Anthropic request (the last user message's last block)."""
    return str(request["messages"][-1]["content"][-1]["text"])


def results(engine: Engine | AsyncEngine) -> list[Any]:
    """Every tool result in the engine's conversation."""
    return [b for m in engine.conversation for b in m.tool_results]


WRITE_DB = {"command": "write", "kind": "fact", "key": "db", "value": "postgres at db:5432"}


def test_a_fact_written_by_the_model_is_in_the_next_window_and_checkpoint(mode: str) -> None:
    """A write in execution shows in the next request's memory section and the final checkpoint,
    and a new engine opened from the store has it."""
    store = MemoryStore()
    script = [
        text_response("Plan: read the config, remember the database."),
        tool_call_response("read", {"path": "config"}),
        tool_call_response("memory", {**WRITE_DB, "scope": "project"}),
        text_response("The database is postgres at db:5432."),
    ]
    engine, llm, result = run(mode, script, store=store)
    assert result.finished and llm.remaining == 0
    assert all("db: postgres" not in late(r) for r in llm.requests[:3])
    assert "## Semantic memory\n- db: postgres at db:5432" in late(llm.requests[3])
    fact = engine.state.memory.fact("db")
    assert fact is not None and fact.scope == "project" and fact.source is not None
    assert [b.text for b in results(engine)][-1] == "Saved fact 'db'."
    assert [t["name"] for t in llm.requests[0]["tools"]] == ["read", "memory"]
    reopened = Engine.from_checkpoint(store=store, session_id=engine.session_id, phases=PHASES)
    assert reopened.state.memory.fact("db") == fact
    again = Engine(store=store, session_id=engine.session_id, phases=PHASES)
    again.restore(engine.checkpoint_ids[-1])
    assert again.state.memory.fact("db") == fact


def test_the_memory_tool_is_offered_in_every_phase(mode: str) -> None:
    """Memory calls work in planning and reflection too, where no other tool is allowed."""
    script = [
        tool_call_response("memory", WRITE_DB),
        text_response("Plan ready."),
        tool_call_response("read", {"path": "a"}),
        tool_call_response("memory", {"command": "search", "query": "database db"}),
        tool_call_response("memory", {"command": "view", "kind": "fact"}),
        text_response("Reflected."),
        text_response("Done."),
    ]
    engine, llm, result = run(mode, script, reflect_every=1)
    assert result.finished and llm.remaining == 0
    assert "reflection" in result.phases
    texts = [b.text for b in results(engine)]
    assert texts[0] == "Saved fact 'db'."
    assert texts[2].splitlines()[1].startswith("- [fact] db: postgres")
    assert texts[3] == "## Facts (1)\n- db: postgres at db:5432  (scope: session, importance: 0.5)"
    assert all("db: postgres" in late(r) for r in llm.requests[1:])


def test_bad_memory_arguments_answer_with_an_error_and_the_loop_goes_on(mode: str) -> None:
    """A call missing fields or deleting an unknown key gets an is_error result; the run ends."""
    script = [
        text_response("Plan."),
        tool_call_response("memory", {"kind": "fact"}),
        tool_call_response("memory", {"command": "write", "kind": "fact", "key": 3}),
        tool_call_response("memory", {"command": "delete", "kind": "fact", "key": "ghost"}),
        tool_call_response(
            "memory", {"command": "create", "path": "/memories/a/b", "file_text": "x"}
        ),
        text_response("Giving up on memory."),
    ]
    with capture_events() as events:
        engine, llm, result = run(mode, script)
    assert result.finished and result.recoveries == 0 and llm.remaining == 0
    errors = [b for b in results(engine) if b.is_error]
    assert len(errors) == 4
    assert "'command'" in errors[0].text and "'key'" in errors[1].text
    assert "ghost" in errors[2].text and "subdirectories" in errors[3].text
    assert engine.state.memory.semantic == ()
    assert sum(e.get("event") == "agent.memory_error" for e in events) == 4


def test_the_anthropic_command_shape_runs_through_the_loop(mode: str) -> None:
    """create and view over /memories through the loop keep a note the next window shows."""
    script = [
        text_response("Plan."),
        tool_call_response(
            "memory", {"command": "create", "path": "/memories/notes.md", "file_text": "a is done"}
        ),
        tool_call_response("memory", {"command": "view", "path": "/memories"}),
        text_response("Done."),
    ]
    engine, llm, result = run(mode, script)
    assert result.finished
    assert [b.text for b in results(engine)] == [
        "Saved /memories/notes.md.",
        "/memories (1 file)\n- /memories/notes.md (9 characters)",
    ]
    assert "- note:notes.md: a is done" in late(llm.requests[2])


def test_the_openai_adapter_runs_the_memory_tool(mode: str) -> None:
    """The same write through the OpenAI adapter lands in memory."""
    script = [
        text_response("Plan.", api="openai"),
        tool_call_response("memory", WRITE_DB, api="openai"),
        text_response("Done.", api="openai"),
    ]
    engine, llm, result = run(mode, script, adapter=OpenAIAdapter(model="scripted-model"))
    assert result.finished and engine.state.memory.fact("db") is not None
    names = [t["function"]["name"] for t in llm.requests[0]["tools"]]
    assert names == ["read", "memory"]
