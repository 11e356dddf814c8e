"""Every example script runs offline in a subprocess, exits 0 and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

EXPECTED = {
    "minimal_loop.py": [
        "phases: planning -> execution -> reflection -> execution -> done",
        "answer: 2 + 3 + 4 = 9",
    ],
    "checkpoint_restore_fork.py": [
        "stopped: phase=execution finished=False",
        "restored: phase=execution messages=5",
        "resumed: done answer='About 522,000.'",
        "forked: session=True answer='Nantes: 320,000.'",
        "sessions in store: 2",
    ],
    "anthropic_loop.py": ["model: scripted", "answer: The sentence has 5 words."],
    "openai_loop.py": ["model: scripted", "answer: The sentence has 5 words."],
    "custom_chart.py": ["approve:     review -> done"],
    "memory_across_sessions.py": [
        "memory in the last request: True",
        "a new session of alice starts with: postgres at db-stg-07.internal:5432",
        "erased 1 item(s); the next session has it: False",
    ],
    "compress_and_recall.py": [
        "rungs used: trim, clear, truncate",
        "within target: True",
        "valid: anthropic=True openai=True",
        "placeholder: [str_replace_editor result cleared by ctxflow: 1.6k characters;",
        "recalled: 1,626 characters by its call id",
        "undone: 100 messages, view restored=True",
        "kept: Sure, my user ID is mia_li_3668.",
    ],
    "sessions_manager.py": [
        "live: 2 of 3 (evictions: 2)",
        "reloaded: task 1 data={'user': 'u1'}",
        "audit: [('append', 'agent'), ('data', 'agent')]",
        "session 0: paused, resumes in ['execution']",
        "evicted engine refuses changes: True",
        "merged: 7 messages, valid=True, phase=paused",
        "split: 4 + 3 messages",
        "closed: unsaved=[]",
        "new manager: paused, 5 messages, system prompt 'You keep the build green.', facts ['u0']",
        "resumed in: execution",
    ],
    "long_session.py": [
        "messages: 3301, in the last window: 101",
        "records kept: 200 of 1802",
        "memory: 32 episodes, 149 facts (limits 32, 200)",
        "hidden messages paged out to the store: 3200 of 3200, read: 0",
        "a paged-out result reads back on request: 666 characters, loaded: True",
        "reopened: 3301 messages, heap frozen: True",
    ],
    "sessions_memory.py": [
        "held: 145 kB of 200 kB, level ok",
        "evicted for memory: 1 (the largest idle session, saved)",
        "held after: 93 kB, live: 3",
        "reloaded 'large': 5 messages, the last 'go on'",
        "refused busy2: memory_hard_limit, held 203 kB",
        "after idling: level ok, evicted 2",
        "calls timed: add 1, get 1, update 0, save 7, load 1",
        "save latency: p50 ",
        "closed: unsaved=[]",
    ],
    "langchain_middleware.py": [
        "answer: 16 modules read; mod0.py has 61 lines.",
        "history: 36 messages, 49,315 characters",
        "model calls: 18, all valid for both APIs: True",
        "every window within 4,000 tokens: True",
        "chart: start plan_ready step ... 17 steps, 3 reflections",
    ],
    "langgraph_checkpointer.py": [
        "answer: Nantes: 320,000; Lille: 236,000",
        "reopened: 14 messages, 17 checkpoints",
        "answer: Lille: 236,000",
        "messages: 18, each stored once: True",
        "checkpoints stored: 22, each delta under 1 KB: True",
    ],
    "redis_sessions.py": [
        "node-a owns the session",
        "node-a handed it to node-b (a newer fencing token: True)",
        "node-a's late write refused: lease_lost",
        "node-b wrote checkpoint 2; messages=2",
    ],
}


def run_example(name: str) -> subprocess.CompletedProcess[str]:
    """Run one example with no API keys in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_every_script_is_covered() -> None:
    """Each runnable example in examples/ has expectations here."""
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("test_")}
    assert scripts == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    """The example exits 0 and prints its expected lines."""
    done = run_example(name)
    assert done.returncode == 0, done.stderr
    if name == "redis_sessions.py" and "not reachable" in done.stdout:
        if os.environ.get("CTXFLOW_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis is required (CTXFLOW_REQUIRE_REDIS=1): {done.stdout}")
        pytest.skip(done.stdout.strip())
    for line in EXPECTED[name]:
        assert line in done.stdout, f"{name}: missing {line!r} in\n{done.stdout}"


def test_readme_lists_every_example() -> None:
    """examples/README.md names every script."""
    readme = (EXAMPLES / "README.md").read_text()
    for path in EXAMPLES.glob("*.py"):
        assert f"`{path.name}`" in readme
