"""Checkpoints in SQLite: stop a loop mid-task, restore it in a new engine, fork a branch.

Run it: ``python examples/checkpoint_restore_fork.py``. The first engine runs
two turns of a scripted task and stops (``max_turns``); every phase change
wrote a checkpoint to a SQLite file in a temporary directory, and one more is
taken by hand after the last turn. A second engine
is restored from the latest checkpoint and finishes the task; a fork of the
same checkpoint starts a new session that takes a different answer.
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
from ctxflow.stores import SQLiteStore
from ctxflow.testing import ScriptedLLM, text_response, tool_call_response

LOOKUP = ToolDef(
    name="lookup",
    description="Look up a city's population.",
    input_schema={"type": "object", "properties": {"city": {"type": "string"}}},
)
ADAPTER = AnthropicAdapter(model="claude-sonnet-4-5")


def lookup(arguments: Mapping[str, Any]) -> str:
    """The tool: a fixed population table."""
    return {"Lyon": "522,000", "Nantes": "320,000"}.get(str(arguments.get("city")), "unknown")


def options(store: SQLiteStore) -> dict[str, Any]:
    """The engine options every engine of this example shares."""
    return {
        "store": store,
        "state": LayeredState(system=SystemLayer(prompt="You answer briefly.", tools=(LOOKUP,))),
        "phases": {"planning": PhaseConfig(tools=()), "execution": PhaseConfig(tools=("lookup",))},
    }


def main() -> None:
    """Run, stop, restore, fork; print each engine's phases and answer."""
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteStore(Path(folder) / "checkpoints.db")
        first = Engine(**options(store))
        partial = run_agent(
            first,
            ScriptedLLM([text_response("Plan: look up Lyon."), tool_call_response("lookup", {})]),
            {"lookup": lookup},
            adapter=ADAPTER,
            task="How many people live in Lyon?",
            max_turns=2,
        )
        first.checkpoint()  # phase changes checkpoint on their own; this keeps the last turn
        latest = store.latest(first.session_id)
        print(f"stopped: phase={first.phase} finished={partial.finished} checkpoint={latest.id}")

        restored = Engine.from_checkpoint(latest.id, session_id=first.session_id, **options(store))
        print(f"restored: phase={restored.phase} messages={len(restored.conversation)}")
        resumed = run_agent(
            restored,
            ScriptedLLM(
                [tool_call_response("lookup", {"city": "Lyon"}), text_response("About 522,000.")]
            ),
            {"lookup": lookup},
            adapter=ADAPTER,
        )
        print(f"resumed: {' -> '.join(resumed.phases)} answer={resumed.text!r}")

        fork = store.fork(first.session_id, latest.id)
        branch = Engine.from_checkpoint(fork.id, session_id=fork.session_id, **options(store))
        forked = run_agent(
            branch,
            ScriptedLLM(
                [
                    tool_call_response("lookup", {"city": "Nantes"}),
                    text_response("Nantes: 320,000."),
                ]
            ),
            {"lookup": lookup},
            adapter=ADAPTER,
        )
        print(f"forked: session={fork.session_id != first.session_id} answer={forked.text!r}")
        print(f"sessions in store: {len(store.sessions())}")
        store.close()


if __name__ == "__main__":
    main()
