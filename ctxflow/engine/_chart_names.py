"""The names in a chart: what a state, event or callback may be called.

State ids and event names become attributes of the machine class, and
python-statemachine looks callbacks up by name on the machine and on its
model (:class:`~ctxflow.engine._machine.Binder`). So a state or event called
``states``, ``model``, ``send`` or ``has_task``, a Python keyword, a private
name, or a name the library looks up by convention (``on_enter_idle`` for a
state ``idle``, ``before_start`` for an event ``start``, ``on_transition``)
would load and then break the engine, or run where nobody asked it to. The
reserved names are learnt from the library's own classes and a probe machine
(:func:`reserved_names`), not listed by hand, so a new attribute in a new
release of the library is reserved without a change here.

A state and an event may share a name (the event then shadows the state as a
class attribute; the engine reaches states through ``states_map`` only).
"""

from __future__ import annotations

import functools
import inspect
import json
import keyword
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ctxflow.errors import ChartError

__all__ = [
    "ACTIONS",
    "GUARDS",
    "MAX_NAME_CHARS",
    "Callback",
    "check_callbacks",
    "check_names",
    "identifier",
    "reserved_names",
    "short",
]

#: Action names a chart may use, each bound to an engine effect.
ACTIONS: Mapping[str, str] = {
    "consolidate_memory": "flush condensed context into episodic/semantic/procedural memory",
    "restore_last_good": "restore the latest checkpoint taken outside a failure",
    "checkpoint": "take an extra checkpoint (trigger 'chart')",
}

#: Guard names a chart may use, each bound to an engine predicate.
GUARDS: Mapping[str, str] = {
    "has_task": "the task layer holds a statement",
    "has_checkpoint": "a checkpoint exists for this session",
}

#: The longest state id, event name, callback name or chart name.
MAX_NAME_CHARS = 64

Callback = Callable[[Any], Any]


def short(value: object) -> str:
    """``repr(value)``, cut short for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


_PROBE_STATE = "ctxflow_probe_state"
_PROBE_EVENT = "ctxflow_probe_event"


@attrs.frozen
class _LibraryNames:
    """Names python-statemachine resolves on a machine and its model."""

    machine: frozenset[str]
    model: frozenset[str]
    conventions: frozenset[str]
    state_conventions: tuple[str, ...]
    event_conventions: tuple[str, ...]


@functools.cache
def _library_names() -> _LibraryNames:
    """What python-statemachine's machines and their models use, learnt from a probe machine."""
    from statemachine import StateChart, StateMachine
    from statemachine.io import load

    doc = {
        "states": {
            _PROBE_STATE: {
                "initial": True,
                "transitions": [{"event": _PROBE_EVENT, "target": _PROBE_STATE}],
            }
        }
    }
    probe = load(json.dumps(doc), format="json", name="ChartProbe")
    machine = probe()
    names = {*dir(StateChart), *dir(StateMachine), *dir(probe), *dir(machine)}
    state = probe.states_map[_PROBE_STATE]
    transition = state.transitions[0]
    groups = (state.enter, state.exit, state.invoke, transition.before, transition.on)
    conventions = {
        spec.func
        for group in (*groups, transition.after)
        for spec in group
        if spec.is_convention and isinstance(spec.func, str)
    }
    return _LibraryNames(
        machine=frozenset(names - {_PROBE_STATE, _PROBE_EVENT}),
        # The model holds the configuration in ``state_field`` and the allowlisted names.
        model=frozenset({machine.state_field, *ACTIONS, *GUARDS}),
        conventions=frozenset(
            c for c in conventions if _PROBE_STATE not in c and _PROBE_EVENT not in c
        ),
        state_conventions=_templates(conventions, _PROBE_STATE),
        event_conventions=_templates(conventions, _PROBE_EVENT),
    )


def _templates(conventions: set[str], probe: str) -> tuple[str, ...]:
    return tuple(sorted(c.replace(probe, "{}") for c in conventions if probe in c))


def reserved_names() -> frozenset[str]:
    """Names no state, event or callback may take: the machine's and its model's attributes."""
    library = _library_names()
    return library.machine | library.model | library.conventions | frozenset(keyword.kwlist)


def _reserved_reason(name: str) -> str | None:
    library = _library_names()
    if keyword.iskeyword(name):
        return "a Python keyword"
    if name.startswith("_"):
        return "a private name"
    if name in library.machine:
        return "an attribute of the chart's machine"
    if name in library.model:
        return "a callback name of the chart's model"
    if name in library.conventions:
        return "a callback name python-statemachine looks up by convention"
    return None


def identifier(name: object, kind: str, where: str, rule: str) -> str:
    """``name`` when it is a short public identifier (ChartError naming ``kind`` if not)."""
    if (
        not isinstance(name, str)
        or not name.isidentifier()
        or name.startswith("_")
        or len(name) > MAX_NAME_CHARS
    ):
        raise ChartError(
            f"{where}: {kind} must be identifiers of at most {MAX_NAME_CHARS} characters "
            f"without a leading underscore (got {short(name)})",
            rule=rule,
        )
    return name


def check_callbacks(callbacks: Mapping[str, Callback]) -> None:
    """Fail when a caller's callback name or function cannot be bound to the chart's model."""
    for key, fn in callbacks.items():
        if (
            not isinstance(key, str)
            or not key.isidentifier()
            or key.startswith("_")
            or len(key) > MAX_NAME_CHARS
            or not callable(fn)
        ):
            raise ChartError(
                f"callbacks must map identifiers of at most {MAX_NAME_CHARS} characters to "
                f"callables (got {short(key)}: {short(fn)})",
                rule="chart_callback",
            )
        if inspect.iscoroutinefunction(fn):
            raise ChartError(
                f"chart callbacks must be synchronous (got async {key!r}); put async work "
                "in the engine's collaborators",
                rule="chart_callback",
            )
        reason = _reserved_reason(key)
        if reason is not None:
            raise ChartError(
                f"callback names must not shadow built-in names (got {key!r}: {reason})",
                rule="chart_callback",
                name=key,
            )


def check_names(
    where: str, states: Iterable[str], events: Iterable[str], callbacks: Mapping[str, Callback]
) -> None:
    """Fail when a state id, event name or callback name is a name the machine or model uses."""
    library = _library_names()
    states = list(states)
    events = list(events)
    conventions = {
        template.format(state): f"python-statemachine's convention callback for state {state!r}"
        for state in states
        for template in library.state_conventions
    } | {
        template.format(event): f"python-statemachine's convention callback for event {event!r}"
        for event in events
        for template in library.event_conventions
    }
    named = [("state", s) for s in states] + [("event", e) for e in events]
    named += [("callback", c) for c in callbacks]
    for kind, name in named:
        reason = _reserved_reason(name) or conventions.get(name)
        if reason is None and kind != "callback" and name in callbacks:
            reason = "a callback name"
        if reason is not None:
            raise ChartError(
                f"{where}: state ids, event names and callback names must not be names "
                f"the machine or its model already use (got {kind} {name!r}: {reason})",
                rule="reserved_name",
                chart=where,
                name=name,
                kind=kind,
            )
