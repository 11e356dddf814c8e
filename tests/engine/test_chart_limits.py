"""Chart limits: deep, huge, non-regular or crowded documents and reserved names are refused."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from ctxflow.engine import Engine, chart_path, load_chart
from ctxflow.engine._chart_document import MAX_EVENTS, MAX_STATES, MAX_TRANSITIONS
from ctxflow.engine._chart_files import MAX_BYTES, MAX_DEPTH, MAX_YAML_NODES
from ctxflow.engine._chart_names import MAX_NAME_CHARS, reserved_names
from ctxflow.engine._machine import Binder
from ctxflow.errors import ChartError
from ctxflow.testing import FixedCounter


def default_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(chart_path("agent_loop").read_text())
    return doc


def nested_states_text(depth: int) -> str:
    """JSON text of a chart whose states nest ``depth`` compound states deep."""
    opening = "".join(f'{{"s{i}": {{"initial": true, "states": ' for i in range(depth))
    return '{"name": "deep", "states": ' + opening + '{"leaf": {}}' + "}}" * depth + "}"


def flat_doc(states: int) -> dict[str, Any]:
    """A chart of ``states`` states in a ring, one event each."""
    body = {f"s{i}": {"transitions": [{"event": "go", "target": f"s{(i + 1) % states}"}]}
            for i in range(states)}  # fmt: skip
    body["s0"]["initial"] = True
    return {"name": "flat", "states": body}


# -- nesting ------------------------------------------------------------------------


def test_a_json_chart_nested_3000_deep_is_a_chart_error(tmp_path: Path) -> None:
    """A file nesting states 3,000 deep (under 1 MB) fails with ChartError, not recursion."""
    path = tmp_path / "deep.json"
    path.write_text(nested_states_text(3000))
    assert path.stat().st_size < MAX_BYTES
    with pytest.raises(ChartError, match=r"deep\.json.*at most 32 deep") as caught:
        load_chart(path)
    assert caught.value.rule == "chart_too_deep"


def test_deep_lists_are_refused_before_json_parses_them(tmp_path: Path) -> None:
    """Brackets nested 100,000 deep are measured without parsing and refused."""
    path = tmp_path / "lists.json"
    path.write_text('{"states": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ChartError, match="got 100001") as caught:
        load_chart(path)
    assert caught.value.rule == "chart_too_deep"


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path: Path) -> None:
    """Brackets and escaped quotes inside JSON strings leave the nesting depth alone."""
    doc = default_doc()
    doc["description"] = '[[[[{{{{ \\" "' * 40
    path = tmp_path / "strings.json"
    path.write_text(json.dumps(doc))
    assert load_chart(path).name == "agent_loop"


def test_a_yaml_chart_nested_3000_deep_is_a_chart_error(tmp_path: Path) -> None:
    """A YAML file nesting 3,000 deep fails with ChartError while it is composed."""
    pytest.importorskip("yaml")
    path = tmp_path / "deep.yaml"
    path.write_text("states: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ChartError, match=r"deep\.yaml") as caught:
        load_chart(path)
    assert caught.value.rule == "chart_too_deep"


def test_a_deep_or_cyclic_mapping_is_a_chart_error() -> None:
    """A parsed mapping nested 3,000 deep, or one that contains itself, fails with ChartError."""
    leaf: dict[str, Any] = {"leaf": {}}
    for i in range(3000):
        leaf = {f"s{i}": {"states": leaf}}
    with pytest.raises(ChartError) as caught:
        load_chart({"name": "deep", "states": leaf})
    assert caught.value.rule == "chart_too_deep"
    states: dict[str, Any] = {}
    states["a"] = {"states": states}
    with pytest.raises(ChartError) as caught:
        load_chart({"name": "cycle", "states": states})
    assert caught.value.rule == "chart_too_deep"


def test_compound_states_twelve_deep_still_load(tmp_path: Path) -> None:
    """Nesting well inside the limit loads: the limit leaves room for real charts."""
    path = tmp_path / "nested.json"
    path.write_text(nested_states_text(12))
    chart = load_chart(path)
    assert chart.phases == ("leaf",)
    assert chart.initial == "leaf"
    assert MAX_DEPTH >= 2 * 12 + 2


# -- the file itself ----------------------------------------------------------------


def test_a_huge_file_is_refused_from_its_size_before_reading(tmp_path: Path) -> None:
    """A 700 MB file is refused from its size alone (its last byte is never decoded)."""
    path = tmp_path / "huge.json"
    with path.open("wb") as file:  # sparse: no disk is used
        file.seek(700_000_000 - 1)
        file.write(b"\xff")
    with pytest.raises(
        ChartError, match=r"huge\.json.*at most 1000000 bytes \(got 700000000\)"
    ) as caught:
        load_chart(path)
    assert caught.value.rule == "chart_too_large"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_named_like_a_chart_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO named x.json is refused as not a regular file instead of blocking the open."""
    fifo = tmp_path / "x.json"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            load_chart(fifo)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=30)  # a guard against hanging the suite, not a timing check
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the blocked open return
        thread.join()
        pytest.fail("load_chart blocked opening a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], ChartError)
    assert outcome[0].rule == "chart_not_a_file"
    assert "x.json" in str(outcome[0]) and "FIFO" in str(outcome[0])


def test_devices_and_directories_named_like_charts_are_refused(tmp_path: Path) -> None:
    """A link to a device, or a directory, named like a chart is refused as not a regular file."""
    folder = tmp_path / "folder.json"
    folder.mkdir()
    targets = [folder]
    if Path(os.devnull).exists() and hasattr(os, "symlink"):
        device = tmp_path / "null.json"
        device.symlink_to(os.devnull)
        targets.append(device)
    for target in targets:
        with pytest.raises(ChartError, match=target.name) as caught:
            load_chart(target)
        assert caught.value.rule == "chart_not_a_file"


# -- counts -------------------------------------------------------------------------


def test_seventy_thousand_states_are_refused_before_building(tmp_path: Path) -> None:
    """A file of 70,000 states is refused for its state count, before any machine is built."""
    path = tmp_path / "many.json"
    body = ",".join(f'"s{i}": {{}}' for i in range(70_000))
    path.write_text('{"name": "many", "states": {' + body + "}}")
    assert path.stat().st_size < MAX_BYTES
    with pytest.raises(ChartError, match=rf"many\.json.*at most {MAX_STATES} states") as caught:
        load_chart(path)
    assert caught.value.rule == "chart_too_many_states"


def test_a_yaml_chart_of_seventy_thousand_states_is_cut_short(tmp_path: Path) -> None:
    """A YAML file of 70,000 states stops being composed once it passes the node limit."""
    pytest.importorskip("yaml")
    path = tmp_path / "many.yaml"
    path.write_text("states:\n" + "".join(f"  s{i}: {{}}\n" for i in range(70_000)))
    assert path.stat().st_size < MAX_BYTES
    with pytest.raises(ChartError, match=rf"many\.yaml.*at most {MAX_YAML_NODES} nodes") as caught:
        load_chart(path)
    assert caught.value.rule == "chart_too_large"


def test_a_yaml_chart_at_the_other_limits_loads(tmp_path: Path) -> None:
    """A YAML chart of the most states, transitions and events stays under the node limit."""
    yaml = pytest.importorskip("yaml")
    doc = flat_doc(MAX_STATES)
    for i, state in enumerate(doc["states"].values()):
        state["transitions"] = [
            {"event": f"e{(2 * i + k) % MAX_EVENTS}", "target": "s0", "cond": "has_task"}
            for k in range(MAX_TRANSITIONS // MAX_STATES)
        ]
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(doc))
    chart = load_chart(path)
    assert (len(chart.states), len(chart.transitions)) == (MAX_STATES, MAX_TRANSITIONS)


def test_the_state_limit_is_inclusive() -> None:
    """A chart of exactly the most states loads; one more is refused."""
    assert len(load_chart(flat_doc(MAX_STATES)).states) == MAX_STATES
    with pytest.raises(ChartError) as caught:
        load_chart(flat_doc(MAX_STATES + 1))
    assert caught.value.rule == "chart_too_many_states"


def test_too_many_transitions_or_events_are_refused() -> None:
    """More transitions or distinct events than the limits allow are refused by count."""
    doc = flat_doc(2)
    doc["states"]["s0"]["transitions"] = [{"event": "go", "target": "s1"}] * (MAX_TRANSITIONS + 1)
    with pytest.raises(ChartError) as caught:
        load_chart(doc)
    assert caught.value.rule == "chart_too_many_transitions"
    doc["states"]["s0"]["transitions"] = [
        {"event": f"e{i}", "target": "s1"} for i in range(MAX_EVENTS + 1)
    ]
    with pytest.raises(ChartError) as caught:
        load_chart(doc)
    assert caught.value.rule == "chart_too_many_events"


@pytest.mark.parametrize(
    "transition",
    [
        {"event": "go", "target": "idle", "cond": "not " * 3000 + "has_task"},
        {"event": "go", "target": "idle", "cond": ["has_task"] * 17},
        {"event": "go", "target": "idle", "before": ["checkpoint"] * 17},
        {"event": "e" * (MAX_NAME_CHARS + 1), "target": "idle"},
    ],
    ids=["long_guard", "many_guards", "many_actions", "long_event"],
)
def test_long_guards_lists_and_names_are_refused(transition: dict[str, Any]) -> None:
    """A guard too long to parse safely, over-long callback lists and names are refused."""
    doc = default_doc()
    doc["states"]["paused"]["transitions"].append(transition)
    with pytest.raises(ChartError):
        load_chart(doc)


# -- reserved names -----------------------------------------------------------------


RESERVED = ["states", "model", "configuration", "send", "history_values", "name",
            "has_task", "checkpoint", "state", "class", "on_enter_idle", "before_start",
            "on_transition"]  # fmt: skip


@pytest.mark.parametrize("name", RESERVED)
def test_a_state_with_a_reserved_name_is_refused(name: str) -> None:
    """A state id the machine or its model already uses is refused at load, named."""
    doc = default_doc()
    doc["states"][name] = {"transitions": [{"event": "back", "target": "idle"}]}
    with pytest.raises(ChartError, match=f"state '{name}'") as caught:
        load_chart(doc)
    assert caught.value.rule == "reserved_name"


@pytest.mark.parametrize("name", RESERVED)
def test_an_event_with_a_reserved_name_is_refused(name: str) -> None:
    """An event name the machine or its model already uses is refused at load, named."""
    doc = default_doc()
    doc["states"]["idle"]["transitions"].append({"event": name, "target": "paused"})
    with pytest.raises(ChartError, match=f"event '{name}'") as caught:
        load_chart(doc)
    assert caught.value.rule == "reserved_name"


def test_private_state_ids_are_refused() -> None:
    """A state id with a leading underscore is refused like a private event name."""
    doc = default_doc()
    doc["states"]["_engine"] = {}
    with pytest.raises(ChartError, match="_engine") as caught:
        load_chart(doc)
    assert caught.value.rule == "chart_state_id"


def test_callbacks_with_reserved_or_taken_names_are_refused() -> None:
    """A caller's callback may not take a machine name, a convention name or a chart name."""
    doc = default_doc()
    doc["states"]["paused"]["enter"] = ["notify"]
    with pytest.raises(ChartError, match="'send'"):
        load_chart(doc, callbacks={"send": print})
    with pytest.raises(ChartError, match="'on_enter_idle'"):
        load_chart(doc, callbacks={"notify": print, "on_enter_idle": print})
    doc["states"]["idle"]["transitions"].append({"event": "notify", "target": "paused"})
    with pytest.raises(ChartError, match="event 'notify'") as caught:
        load_chart(doc, callbacks={"notify": print})
    assert caught.value.rule == "reserved_name"


def test_reserved_names_cover_the_machine_and_its_model() -> None:
    """Every public attribute of a driven machine and of the chart's model is reserved."""
    chart = load_chart("review_loop", callbacks={"notify": lambda engine: None})
    engine = Engine(chart=chart, counter=FixedCounter())
    binder = Binder(engine, chart, engine)
    machine = chart.machine_class(model=binder)
    machine.send(chart.transitions_from(chart.initial)[0].event)
    own = {*chart.states, *chart.events}
    assert {n for n in dir(machine) if not n.startswith("_")} - own <= reserved_names()
    model = {n for n in dir(binder) if not n.startswith("_")} - set(chart.callbacks)
    assert model <= reserved_names()
    assert {"states", "model", "send", "has_task", "state", "on_transition"} <= reserved_names()


def test_unusual_but_free_names_load_and_drive_an_engine() -> None:
    """Names near reserved ones (on_hold, sender, models) load and the engine runs them."""
    calls: list[str] = []
    doc = default_doc()
    doc["states"]["on_hold"] = {
        "enter": ["notify"],
        "transitions": [{"event": "sender", "target": "models"}],
    }
    doc["states"]["models"] = {"transitions": [{"event": "configure", "target": "idle"}]}
    doc["states"]["idle"]["transitions"].append({"event": "wait", "target": "on_hold"})
    chart = load_chart(doc, callbacks={"notify": lambda engine: calls.append("notify")})
    engine = Engine(chart=chart, counter=FixedCounter())
    for event, phase in [("wait", "on_hold"), ("sender", "models"), ("configure", "idle")]:
        engine.send(event)
        assert engine.phase == phase
    assert calls == ["notify"]
    engine.send("start", task="t")
    assert engine.phase == "planning"
