"""One engine's python-statemachine instance: the only code that touches the library's machine.

The chart's model (:class:`Binder`) exposes only the allowlisted callback
names. A chart action never does the work itself: it marks an *intent* on
the event being applied (consolidate memory, restore the last good
checkpoint, take a checkpoint), which the engine's core carries out after
the microstep — so the machine stays synchronous and the async engine can
await async collaborators with the same chart.

Gotcha: restoring a chart needs the configuration *and* the history values
(as state ids). Setting the configuration alone loses the history, and a
later ``resume`` would land nowhere.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
from statemachine.exceptions import TransitionNotAllowed
from statemachine.orderedset import OrderedSet

from ctxflow import errors
from ctxflow.engine._charts import ACTIONS, Chart
from ctxflow.layers import LayeredState

__all__ = [
    "EVENT_ARGUMENTS",
    "Binder",
    "ChartMachine",
    "Intents",
    "MachineSnapshot",
    "NotAllowed",
    "checked_event",
]

#: Keyword arguments each built-in event accepts (other events take none).
EVENT_ARGUMENTS: Mapping[str, frozenset[str]] = {"start": frozenset({"task"})}


class NotAllowed(errors.EventNotAllowed, TransitionNotAllowed):
    """:class:`ctxflow.errors.EventNotAllowed` that is also python-statemachine's
    ``TransitionNotAllowed``, so code written against the library keeps catching it."""

    def __init__(self, message: str, *, rule: str = "event_not_allowed", **details: Any) -> None:
        # TransitionNotAllowed.__init__ takes (event, configuration): bypass it.
        Exception.__init__(self, message)
        self.message = message
        self.rule = rule
        self.details = details
        self.phase = details.get("phase")
        self.event = details.get("event")
        self.configuration = details.get("configuration", ())


@attrs.define
class Intents:
    """What the chart's actions asked for while an event was being applied."""

    consolidate: bool = False
    restore: bool = False
    checkpoint: bool = False


class _Host(Protocol):
    """What the chart's model reads of its engine."""

    @property
    def intents(self) -> Intents | None: ...

    @property
    def staged_state(self) -> LayeredState: ...

    @property
    def has_checkpoints(self) -> bool: ...


class Binder:
    """The chart's model: the allowlisted callback names, bound to one engine."""

    def __init__(self, host: _Host, chart: Chart, engine: object) -> None:
        self.state: Any = None  # python-statemachine writes the configuration value here
        for name in ACTIONS:
            setattr(self, name, _intent(host, name))
        self.has_task = lambda: bool(host.staged_state.task.statement)
        self.has_checkpoint = lambda: host.has_checkpoints
        for name, fn in chart.callbacks.items():
            setattr(self, name, _user_callback(engine, fn))


def _intent(host: _Host, name: str) -> Callable[[], None]:
    def mark() -> None:
        intents = host.intents
        if intents is None:
            return
        if name == "consolidate_memory":
            intents.consolidate = True
        elif name == "restore_last_good":
            intents.restore = True
        else:
            intents.checkpoint = True

    mark.__name__ = name
    return mark


def _user_callback(engine: object, fn: Callable[[Any], Any]) -> Callable[[], Any]:
    def call() -> Any:
        return fn(engine)

    call.__name__ = getattr(fn, "__name__", "callback")
    return call


@attrs.frozen
class MachineSnapshot:
    """The machine's configuration and history values, to roll an event back to.

    Held as the library's own objects (copied, not converted): taken before
    every event, so it must cost next to nothing.
    """

    configuration: Any
    history: Any


#: Each chart's initial configuration, learnt from the first machine built for it.
_INITIAL: weakref.WeakKeyDictionary[Chart, tuple[str, ...]] = weakref.WeakKeyDictionary()


class ChartMachine:
    """A chart's machine instance: send events, read and set the configuration and history.

    The library's machine costs about a millisecond and 20 KiB to build, and a
    session loaded only to be read or appended to never needs it. So once one
    machine of a chart was built, a new one starts as plain state ids and is
    built on the first event (then set to those ids). A chart with callbacks of
    its own is always built at once: they may run on entering the initial state.
    """

    def __init__(self, chart: Chart, model: Binder) -> None:
        self.chart = chart
        self._model = model
        self._machine: Any = None
        self._ids: tuple[tuple[str, ...], dict[str, list[str]]] = ((), {})
        initial = _INITIAL.get(chart)
        if initial is None or chart.callbacks:
            self._built()
            _INITIAL.setdefault(chart, self.configuration)
        else:
            self._ids = (initial, {})

    def _built(self) -> Any:
        """The library's machine, built (and set to the state ids kept so far) on first use."""
        if self._machine is None:
            configuration, history = self._ids
            self._machine = self.chart.machine_class(model=self._model)
            if (configuration and configuration != self.configuration) or history:
                self._apply(configuration, history)
        return self._machine

    @property
    def configuration(self) -> tuple[str, ...]:
        """Every active state id, outermost first."""
        if self._machine is None:
            return self._ids[0]
        return tuple(str(v) for v in self._machine.configuration_values)

    @property
    def history(self) -> dict[str, list[str]]:
        """History pseudo-state → remembered state ids."""
        if self._machine is None:
            return {k: list(v) for k, v in self._ids[1].items()}
        return {k: [str(s.id) for s in v] for k, v in self._machine.history_values.items()}

    def leaf(self, configuration: Sequence[str]) -> str:
        """The phase (active atomic state) of a configuration."""
        parents = self.chart.parents
        for state_id in reversed(configuration):
            if state_id not in self.chart.compounds and state_id in parents:
                return state_id
        return configuration[-1] if configuration else ""

    def snapshot(self) -> MachineSnapshot:
        """The configuration and history values as they are now."""
        machine = self._built()
        return MachineSnapshot(OrderedSet(machine.configuration), dict(machine.history_values))

    def send(self, event: str) -> None:
        """Run the event's microstep (``TransitionNotAllowed`` when it has no transition)."""
        self._built().send(event)

    def set(self, configuration: Sequence[str], history: Mapping[str, Sequence[str]]) -> None:
        """Put the machine in ``configuration`` with ``history`` (state ids, checked first)."""
        states_map = self.chart.machine_class.states_map
        unknown = [s for s in configuration if s not in states_map] + [
            s for ids in history.values() for s in ids if s not in states_map
        ]
        unknown += [h for h in history if h not in self.chart.history]
        if unknown or not configuration:
            raise errors.CheckpointError(
                f"a chart configuration must name states of chart {self.chart.name!r} "
                f"(got {list(configuration)}, history {dict(history)})",
                rule="chart_configuration",
                unknown=unknown,
            )
        if self._machine is None:
            self._ids = (tuple(configuration), {h: list(ids) for h, ids in history.items()})
            return
        if self._machine.is_terminated:
            self._machine = self.chart.machine_class(model=self._model)
        self._apply(configuration, history)

    def _apply(self, configuration: Sequence[str], history: Mapping[str, Sequence[str]]) -> None:
        states_map = self.chart.machine_class.states_map
        self._machine.configuration = OrderedSet(states_map[s] for s in configuration)
        self._machine.history_values = {
            h: [states_map[s] for s in ids] for h, ids in history.items()
        }

    def rollback(self, snapshot: MachineSnapshot) -> None:
        """Back to a snapshot taken before an event."""
        machine = self._built()
        if machine.is_terminated:  # a final state ended the machine: start a new one
            history = {k: [str(s.id) for s in v] for k, v in snapshot.history.items()}
            self.set([str(s.id) for s in snapshot.configuration], history)
            return
        machine.configuration = snapshot.configuration
        machine.history_values = snapshot.history


def checked_event(
    chart: Chart, state: LayeredState, event: str, kwargs: Mapping[str, object]
) -> LayeredState:
    """The event's arguments checked; the layered state they give (a ``start`` task)."""
    if not isinstance(event, str) or event not in chart.events:
        raise errors.EventError(
            f"the event must be one of chart {chart.name!r}'s events "
            f"({', '.join(chart.events)}) (got {event!r})",
            rule="unknown_event",
            trigger=event,
        )
    allowed = EVENT_ARGUMENTS.get(event, frozenset())
    unexpected = sorted(set(kwargs) - allowed)
    if unexpected:
        raise errors.EventError(
            f"event {event!r} accepts the keyword arguments "
            f"{sorted(allowed) or 'none'} (got {unexpected})",
            rule="event_arguments",
            trigger=event,
            unexpected=unexpected,
        )
    if event == "start" and "task" in kwargs:
        task = kwargs["task"]
        if not isinstance(task, str) or not task.strip():
            raise errors.EventError(
                f"'task' must be a non-empty string (got {task!r})",
                rule="event_arguments",
                trigger=event,
            )
        state = attrs.evolve(state, task=attrs.evolve(state.task, statement=task))
    return state
