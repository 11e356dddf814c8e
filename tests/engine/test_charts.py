"""Loading charts: the default chart's shape, the allowlist, and hostile documents refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctxflow.engine import (
    ACTIONS,
    GUARDS,
    Engine,
    PhaseConfig,
    chart_names,
    chart_path,
    load_chart,
)
from ctxflow.errors import ChartError


def default_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(chart_path("agent_loop").read_text())
    return doc


def with_state(state: str, body: Any) -> dict[str, Any]:
    doc = default_doc()
    doc["states"] = {**doc["states"], state: body}
    return doc


def test_default_chart_structure_matches_the_event_table() -> None:
    """agent_loop has the table's phases, events, history state and final state."""
    chart = load_chart()
    assert chart.name == "agent_loop"
    assert set(chart.phases) == {"idle", "planning", "execution", "reflection", "paused", "failed"}
    assert chart.finals == ("done",)
    assert chart.compounds == ("active",)
    assert chart.history == {"resume_point": "active"}
    assert chart.initial == "idle"
    assert set(chart.events) == {
        "start", "plan_ready", "step", "reflect", "execute", "replan",
        "finish", "fail", "recover", "pause", "resume",
    }  # fmt: skip
    table = {(t.source, t.event, t.target) for t in chart.transitions}
    assert ("execution", "step", None) in table
    assert ("active", "fail", "failed") in table
    assert ("paused", "resume", "resume_point") in table


def test_shipped_charts_are_found_by_name() -> None:
    """chart_path finds shipped charts; chart_names lists them."""
    assert {"agent_loop", "review_loop"} <= set(chart_names())
    assert chart_path("agent_loop").name == "agent_loop.json"
    assert chart_path("agent_loop.json") == chart_path("agent_loop")


@pytest.mark.parametrize("name", ["../etc/passwd", "", ".hidden", "nope"])
def test_bad_chart_names_fail(name: str) -> None:
    """Path-like or unknown chart names are refused with ChartError."""
    with pytest.raises(ChartError):
        chart_path(name)


def test_yaml_chart_loads_like_json(tmp_path: Path) -> None:
    """A YAML document loads with the same meaning as its JSON twin (on/off stay strings)."""
    yaml = pytest.importorskip("yaml")
    doc = default_doc()
    doc["states"]["off"] = {"transitions": [{"event": "on", "target": "idle"}]}
    doc["states"]["idle"]["transitions"].append({"event": "off", "target": "off"})
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(doc))
    chart = load_chart(path)
    assert "off" in chart.phases
    assert {"on", "off"} <= set(chart.events)


HOSTILE_YAML = {
    "python_object": "name: x\nstates: !!python/object/apply:os.system ['echo hi']\n",
    "python_name": "name: x\nstates:\n  a: !!python/name:os.system\n",
    "alias_bomb": (
        "a: &a ['x','x','x','x','x','x','x','x','x']\n"
        "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "states: {idle: {}}\n"
    ),
    "not_yaml": "states: [unclosed\n",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
def test_hostile_yaml_is_refused(tmp_path: Path, case: str) -> None:
    """Python tags, alias bombs and broken YAML are refused with ChartError."""
    pytest.importorskip("yaml")
    path = tmp_path / "evil.yaml"
    path.write_text(HOSTILE_YAML[case])
    with pytest.raises(ChartError):
        load_chart(path)


HOSTILE_STATES: dict[str, Any] = {
    "script_action": {"enter": [{"script": "import os; os.system('id')"}]},
    "assign_action": {"enter": [{"assign": {"location": "x", "expr": "1"}}]},
    "invoke_src": {"invoke": {"src": "/etc/passwd"}},
    "unknown_key": {"onenter": ["consolidate_memory"]},
    "unknown_action": {"enter": ["delete_everything"]},
    "engine_method_as_action": {"enter": ["send"]},
    "guard_call": {"transitions": [{"event": "go", "target": "idle", "cond": "has_task()"}]},
    "guard_dunder": {
        "transitions": [{"event": "go", "target": "idle", "cond": "has_task.__class__"}]
    },
    "unknown_guard": {"transitions": [{"event": "go", "target": "idle", "cond": "is_admin"}]},
    "unknown_target": {"transitions": [{"event": "go", "target": "nowhere"}]},
    "eventless": {"transitions": [{"target": "idle"}]},
    "private_event": {"transitions": [{"event": "_go", "target": "idle"}]},
    "history_not_mapping": {"states": {"a": {}}, "history": {"h": "shallow"}},
    "history_bad_type": {"states": {"a": {}}, "history": {"h": {"type": "sideways"}}},
    "history_list": {"states": {"a": {}}, "history": ["h"]},
    "parallel": {"parallel": True, "states": {"a": {}, "b": {}}},
    "transitions_not_list": {"transitions": {"event": "go"}},
    "state_not_mapping": ["not", "a", "mapping"],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_STATES))
def test_hostile_or_malformed_states_are_refused(case: str) -> None:
    """Executable content, unknown names or keys and malformed shapes fail with ChartError."""
    with pytest.raises(ChartError):
        load_chart(with_state("extra", HOSTILE_STATES[case]))


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"states": {}},
        {"states": {"a": {}}, "datamodel": {"x": "1"}},
        {"name": "x y", "states": {"a": {}}},
        {"states": {"done": {"final": True}}},
        {"states": {"a": {"states": {"a": {}}}}},
    ],
)
def test_malformed_documents_are_refused(doc: Any) -> None:
    """Documents without states, with a datamodel, bad names or duplicate ids are refused."""
    with pytest.raises(ChartError):
        load_chart(doc)


def test_unknown_names_are_named_in_the_error() -> None:
    """The error names the unknown callback and the known ones."""
    with pytest.raises(ChartError, match="'delete_everything'") as caught:
        load_chart(with_state("extra", {"enter": ["delete_everything"]}))
    assert caught.value.rule == "unknown_action"
    assert "consolidate_memory" in str(caught.value)


def test_json_syntax_errors_and_wrong_suffixes_are_chart_errors(tmp_path: Path) -> None:
    """Broken JSON and unknown file types fail with ChartError naming the file."""
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ChartError, match=r"broken\.json"):
        load_chart(broken)
    other = tmp_path / "chart.xml"
    other.write_text("<scxml/>")
    with pytest.raises(ChartError, match=r"\.json"):
        load_chart(other)


def test_library_failures_are_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any exception from python-statemachine's loader becomes a ChartError."""
    import statemachine.io

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise AttributeError("'str' object has no attribute 'get'")

    monkeypatch.setattr(statemachine.io, "load", explode)
    with pytest.raises(ChartError, match="AttributeError"):
        load_chart()


def test_user_callbacks_extend_the_allowlist() -> None:
    """Callbacks passed at load are allowed names; built-in names cannot be shadowed."""
    doc = with_state("extra", {"enter": ["notify"]})
    chart = load_chart(doc, callbacks={"notify": lambda engine: None})
    assert "notify" in chart.callbacks
    with pytest.raises(ChartError, match="shadow"):
        load_chart(doc, callbacks={"notify": print, "has_task": print})
    with pytest.raises(ChartError):
        load_chart(doc, callbacks={"notify": "not callable"})  # type: ignore[dict-item]

    async def later(engine: Any) -> None:
        return None

    with pytest.raises(ChartError, match="synchronous"):
        load_chart(doc, callbacks={"notify": later})


def test_phase_configs_are_checked_at_load() -> None:
    """A phase configuration naming a phase the chart lacks fails at load."""
    load_chart(phases={"execution": PhaseConfig(tools=("a",))})
    with pytest.raises(ChartError, match="review"):
        load_chart(phases={"review": PhaseConfig()})
    load_chart("review_loop", phases={"review": PhaseConfig()})


def test_allowlists_are_documented() -> None:
    """Every allowlisted name has a description."""
    assert all(ACTIONS.values()) and all(GUARDS.values())


def test_resuming_before_the_compound_was_entered_lands_in_its_initial_phase(
    tmp_path: Path,
) -> None:
    """A history state with nothing recorded enters its parent's initial child, not nothing."""
    import json

    doc = json.loads(
        (Path(__file__).resolve().parents[2] / "statecharts/agent_loop.json").read_text()
    )
    doc["name"] = "hold_first"
    doc["states"]["idle"]["transitions"].append({"event": "hold", "target": "paused"})
    path = tmp_path / "hold_first.json"
    path.write_text(json.dumps(doc))
    engine = Engine(chart=load_chart(path), budget=8_000)
    engine.send("hold")
    engine.send("resume")
    assert engine.phase == "planning"
    assert engine.configuration == ("active", "planning")
