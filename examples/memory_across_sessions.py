"""Memory the model keeps, that reaches the window and outlives the session.

Run it: ``python examples/memory_across_sessions.py``. In a first session a
scripted model reads a config file and saves what it learned with the memory
tool, scoped to the user; the fact is in the next request's memory section.
A second session for the same user starts with it (the shared memory lives in
the same SQLite file as the checkpoints); after the user is erased, a third
session starts empty. Offline: a scripted model answers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ctxflow.adapters import AnthropicAdapter
from ctxflow.engine import Engine, PhaseConfig
from ctxflow.layers import LayeredState, SystemLayer, ToolDef
from ctxflow.loop import run_agent
from ctxflow.memory import Owner, shared_memory_for
from ctxflow.stores import SQLiteStore
from ctxflow.testing import ScriptedLLM, text_response, tool_call_response

READ = ToolDef(
    name="read",
    description="Read a file.",
    input_schema={
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
)
ALICE = Owner.user("acme", "alice")
PHASES = {"planning": PhaseConfig(tools=()), "execution": PhaseConfig(tools=("read",))}


def read(arguments: Mapping[str, Any]) -> str:
    """The tool: a stand-in config file."""
    return "database: postgres at db-stg-07.internal:5432" if arguments["path"] else ""


def session(store: SQLiteStore) -> Engine:
    """A new session for alice over the store (her shared memory comes with it)."""
    return Engine(
        state=LayeredState(system=SystemLayer(prompt="You are a careful agent.", tools=(READ,))),
        phases=PHASES,
        store=store,
        shared_memory=shared_memory_for(store),
        owners=[ALICE],
    )


def main() -> None:
    """Three sessions: learn and save, start with it, forget."""
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteStore(Path(folder) / "agent.sqlite")
        first = session(store)
        model = ScriptedLLM(
            [
                text_response("Plan: read the config, remember the database for alice."),
                tool_call_response("read", {"path": "config.yaml"}),
                tool_call_response(
                    "memory",
                    {
                        "command": "write",
                        "kind": "fact",
                        "key": "staging-db",
                        "value": "postgres at db-stg-07.internal:5432",
                        "scope": "user",
                    },
                ),
                text_response("The staging database is postgres at db-stg-07.internal:5432."),
            ]
        )
        run_agent(
            first,
            model,
            {"read": read},
            adapter=AnthropicAdapter(model="claude-sonnet-4-5"),
            task="Which database does staging use?",
            memory_tool=True,
            reflect_every=0,
        )
        last_request = model.requests[-1]["messages"][-1]["content"][-1]["text"]
        print("memory in the last request:", "staging-db" in last_request)

        second = session(store)
        fact = second.state.memory.fact("staging-db")
        print("a new session of alice starts with:", fact.value if fact else None)

        removed = shared_memory_for(store).erase(ALICE)
        third = session(store)
        print(
            f"erased {removed} item(s); the next session has it:",
            bool(third.state.memory.fact("staging-db")),
        )
        store.close()


if __name__ == "__main__":
    main()
