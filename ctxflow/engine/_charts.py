"""Charts: load the statecharts that drive an agent loop, and the loaded chart.

A chart is a JSON or YAML document in python-statemachine's native format
(``states`` keyed by id, ``transitions`` lists, ``enter``/``exit``/``before``/
``on``/``after`` callback names, ``cond``/``unless`` guards, ``history``
pseudo-states). :func:`load_chart` takes it through three steps, each refusing
with a :class:`~ctxflow.errors.ChartError` naming the document and the rule,
before the next one starts:

1. reading (``_chart_files``): a regular file of at most 1 MB, nested at most
   32 deep, checked before the parser runs;
2. ctxflow's strict pass (``_chart_document``, ``_chart_names``): the allowlist, no
   executable content, bounded numbers of states, transitions and events, and
   no state or event name the machine or its model already uses;
3. python-statemachine's loader in its secure default (``trusted=False``),
   which builds the chart class.

Every failure of the last step, whatever the library raised
(``InvalidDefinition``, ``KeyError``, ``AttributeError`` for a malformed
``history`` shape), becomes a ChartError too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ctxflow.engine._chart_document import TransitionSpec, scan_document
from ctxflow.engine._chart_files import SUFFIXES, chart_names, chart_path, read_document
from ctxflow.engine._chart_names import (
    ACTIONS,
    GUARDS,
    MAX_NAME_CHARS,
    Callback,
    check_callbacks,
    check_names,
)
from ctxflow.errors import ChartError

__all__ = [
    "ACTIONS",
    "DEFAULT_CHART",
    "GUARDS",
    "Chart",
    "PhaseConfig",
    "TransitionSpec",
    "chart_names",
    "chart_path",
    "load_chart",
]

#: The chart the engine runs when none is given.
DEFAULT_CHART = "agent_loop"


# -- the chart ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class PhaseConfig:
    """What one phase may use: its tool set, budget policy and compression policy.

    ``tools=None`` lets the phase use every tool of the system layer; a tuple
    names the tools projected into the window while the phase is active. The
    policies are handed as they are to the allocator and the compression guard.
    """

    tools: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )
    budget_policy: Any = None
    compression_policy: Any = None


@attrs.frozen(kw_only=True, eq=False)
class Chart:
    """A loaded chart: its document, the python-statemachine class and its structure.

    ``phases`` are the atomic states (the leaves the engine can be in),
    ``compounds`` the states that group them, ``history`` maps each history
    pseudo-state to its parent.
    """

    name: str
    source: str
    document: Mapping[str, Any] = attrs.field(repr=False)
    machine_class: type[Any] = attrs.field(repr=False)
    phases: tuple[str, ...]
    finals: tuple[str, ...]
    compounds: tuple[str, ...]
    parents: Mapping[str, str | None] = attrs.field(repr=False)
    history: Mapping[str, str]
    history_types: Mapping[str, str] = attrs.field(repr=False)
    initial: str
    events: tuple[str, ...]
    transitions: tuple[TransitionSpec, ...] = attrs.field(repr=False)
    callbacks: Mapping[str, Callback] = attrs.field(factory=dict, repr=False)

    @property
    def states(self) -> tuple[str, ...]:
        """Every state id (compound, atomic and final), in document order."""
        return tuple(self.parents)

    def transitions_from(self, phase: str) -> list[TransitionSpec]:
        """The transitions that can fire in ``phase``, innermost state first."""
        chain: list[str] = []
        node: str | None = phase
        while node is not None:
            chain.append(node)
            node = self.parents.get(node)
        seen: set[str] = set()
        out = []
        for state in chain:
            for spec in self.transitions:
                if spec.source == state and spec.event not in seen:
                    out.append(spec)
            seen |= {s.event for s in self.transitions if s.source == state}
        return out

    def resolve_target(self, target: str, history: Mapping[str, Sequence[str]]) -> str:
        """The phase entered through ``target`` (a compound's initial leaf, a history value)."""
        if target in self.history:
            remembered = [s for s in history.get(target, ()) if s in self.parents]
            target = remembered[-1] if remembered else self.history[target]
        cls = self.machine_class
        state = cls.states_map[target]
        while state.states:
            initial = next((s for s in state.states if s.initial), state.states[0])
            state = initial
        return str(state.id)

    def check_phases(self, phases: Mapping[str, object]) -> None:
        """Fail with ChartError when a phase configuration names a state the chart lacks."""
        unknown = sorted(set(phases) - set(self.phases) - set(self.finals))
        if unknown:
            raise ChartError(
                f"phase configurations must name phases of chart {self.name!r} "
                f"(got {unknown}; phases: {', '.join(self.phases)})",
                rule="unknown_phase",
                chart=self.name,
                phases=unknown,
            )


def _with_history_defaults(states: Mapping[str, Any]) -> dict[str, Any]:
    """``states`` with each history pseudo-state entering its parent's initial child by default.

    python-statemachine enters a history state's recorded states, else its
    own transitions; with neither (resuming before the compound was ever
    entered) it would enter nothing and leave an empty configuration.
    """
    out: dict[str, Any] = {}
    for state_id, spec in states.items():
        if not isinstance(spec, Mapping) or not isinstance(spec.get("states"), Mapping):
            out[state_id] = spec
            continue
        children = spec["states"]
        first = next(
            (k for k, v in children.items() if isinstance(v, Mapping) and v.get("initial")),
            next(iter(children), None),
        )
        spec = {**spec, "states": _with_history_defaults(children)}
        histories = spec.get("history")
        if isinstance(histories, Mapping) and first is not None:
            spec["history"] = {
                h: {**(v or {}), "transitions": [{"target": first}]}
                if not (v or {}).get("transitions")
                else v
                for h, v in histories.items()
            }
        out[state_id] = spec
    return out


def _machine_class(doc: Mapping[str, Any], name: str, where: str) -> type[Any]:
    from statemachine.io import load

    if isinstance(doc.get("states"), Mapping):
        doc = {**doc, "states": _with_history_defaults(doc["states"])}
    try:
        cls = load(json.dumps(doc), format="json", name=name)
    except ChartError:
        raise
    except Exception as exc:  # the loader raises many types; every one is a chart error
        raise ChartError(
            f"{where}: the chart cannot be built: {type(exc).__name__}: {exc}",
            rule="chart_invalid",
            chart=name,
        ) from None
    # Strict on purpose: an exception in a callback propagates (it must not become a
    # vanishing error.execution event) and an event without a transition is an error.
    cls.catch_errors_as_events = False
    cls.allow_event_without_transition = False
    return cls


def load_chart(
    source: str | os.PathLike[str] | Mapping[str, Any] = DEFAULT_CHART,
    *,
    callbacks: Mapping[str, Callback] | None = None,
    phases: Mapping[str, object] | None = None,
    name: str | None = None,
) -> Chart:
    """Load a chart from a shipped name, a JSON/YAML file, or an already parsed mapping.

    ``callbacks`` adds names the document may use as actions or guards; each is
    called with the engine (a guard's result is its truth). ``phases`` (a
    mapping phase → :class:`PhaseConfig`) is checked against the chart's phases.
    """
    extra = dict(callbacks or {})
    check_callbacks(extra)
    if not isinstance(source, (str, os.PathLike, Mapping)):
        raise ChartError(
            f"a chart must be a name, a file path or a mapping (got {type(source).__name__})",
            rule="chart_source",
        )
    if isinstance(source, Mapping):
        doc: Any = source
        name = name or source.get("name")
        where = name if isinstance(name, str) and len(name) <= MAX_NAME_CHARS else "chart"
    else:
        path = Path(source)
        if path.suffix not in SUFFIXES and not path.exists():
            path = chart_path(str(source))
        where = str(path)
        doc = read_document(path)
        name = name or (doc.get("name") if isinstance(doc, Mapping) else None) or path.stem
    scan = scan_document(doc, where, frozenset(extra))
    chart_name = name or scan.states[0]
    if (
        not isinstance(chart_name, str)
        or not chart_name.isidentifier()
        or len(chart_name) > MAX_NAME_CHARS
    ):
        raise ChartError(
            f"{where}: a chart name must be an identifier of at most {MAX_NAME_CHARS} "
            f"characters (got {str(chart_name)[: MAX_NAME_CHARS + 1]!r})",
            rule="chart_name",
        )
    if not scan.atomic:
        raise ChartError(f"{where}: a chart needs at least one non-final state", rule="chart_shape")
    events = dict.fromkeys(t.event for t in scan.transitions)
    check_names(where, [*scan.states, *scan.histories], events, extra)
    cls = _machine_class(doc, chart_name, where)
    initial = cls.states_map[cls.initial_state.id]
    while initial.states:
        initial = next((s for s in initial.states if s.initial), initial.states[0])
    compounds = tuple(s for s in scan.states if s not in scan.atomic and s not in scan.finals)
    parents = {s: scan.parents[s] for s in scan.states}
    chart = Chart(
        name=chart_name,
        source=where,
        document=doc,
        machine_class=cls,
        phases=tuple(scan.atomic),
        finals=tuple(scan.finals),
        compounds=compounds,
        parents=parents,
        history=dict(scan.histories),
        history_types=dict(scan.history_types),
        initial=str(initial.id),
        events=tuple(dict.fromkeys(t.event for t in scan.transitions)),
        transitions=tuple(scan.transitions),
        callbacks=extra,
    )
    if phases:
        chart.check_phases(phases)
    return chart
