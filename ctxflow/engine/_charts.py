"""Charts as documents: find, read, check and load the statecharts that drive an agent loop.

A chart is a JSON or YAML document in python-statemachine's native format
(``states`` keyed by id, ``transitions`` lists, ``enter``/``exit``/``before``/
``on``/``after`` callback names, ``cond``/``unless`` guards, ``history``
pseudo-states). ctxflow reads it in two passes:

1. its own strict pass over the parsed document: callback names must be on the
   allowlist (:data:`ACTIONS`, :data:`GUARDS`, plus the ``callbacks`` the caller
   passes), guards are names joined by ``and``/``or``/``not``, and executable
   content (``script``, ``assign``, ``send`` ...), ``invoke``, ``datamodel``,
   external ``src`` and parallel states are refused — effects belong to the
   engine, not to the document;
2. python-statemachine's loader in its secure default (``trusted=False``),
   which builds the chart class.

Every failure of either pass, whatever the library raised (``InvalidDefinition``,
``KeyError``, ``AttributeError`` for a malformed ``history`` shape, a YAML
error), becomes a :class:`~ctxflow.errors.ChartError` naming the document and
the offending part.

YAML is read with ``yaml.safe_load`` semantics (no Python tags), with anchors
and aliases refused outright (a "billion laughs" document cannot expand), and
with ``on``/``off``/``yes``/``no`` kept as strings so they can be state ids.
PyYAML is only needed for YAML charts; JSON charts need nothing extra.

Gotcha: ``statecharts/`` lives outside the package. A wheel ships it as
``ctxflow/_statecharts`` while an editable install reads the repository folder;
:func:`chart_path` looks in both.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

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

_MAX_BYTES = 1_000_000
_SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
_DOCUMENT_KEYS = frozenset({"name", "description", "states"})
_STATE_KEYS = frozenset({"initial", "final", "enter", "exit", "transitions", "states", "history"})
_TRANSITION_KEYS = frozenset(
    {"event", "target", "cond", "unless", "internal", "on", "before", "after"}
)
_HISTORY_KEYS = frozenset({"type"})
_ACTION_SLOTS = ("enter", "exit")
_TRANSITION_ACTION_SLOTS = ("before", "on", "after")

Callback = Callable[[Any], Any]


# -- finding charts -------------------------------------------------------------


def _folders() -> Iterator[Path]:
    try:
        shipped = resources.files("ctxflow") / "_statecharts"
        if shipped.is_dir():
            yield Path(str(shipped))
    except (ModuleNotFoundError, NotADirectoryError):  # pragma: no cover
        pass
    repo = Path(__file__).resolve().parent.parent.parent / "statecharts"
    if repo.is_dir():
        yield repo


def chart_path(name: str) -> Path:
    """The document of the chart ``name``: from the installed wheel, else the repository."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ChartError(
            f"a chart name must be a plain name like 'agent_loop' (got {name!r})",
            rule="chart_name",
            chart=name,
        )
    stem = Path(name).stem if Path(name).suffix in _SUFFIXES else name
    for folder in _folders():
        for suffix in _SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    raise ChartError(
        f"no chart named {name!r} (known: {', '.join(chart_names()) or 'none'})",
        rule="chart_not_found",
        chart=name,
    )


def chart_names() -> list[str]:
    """The names of the charts shipped with ctxflow."""
    names: set[str] = set()
    for folder in _folders():
        names.update(p.stem for p in folder.iterdir() if p.suffix in _SUFFIXES)
    return sorted(names)


# -- reading documents ----------------------------------------------------------


@functools.cache
def _yaml_loader() -> Any:
    try:
        yaml = importlib.import_module("yaml")
    except ModuleNotFoundError:
        raise ChartError(
            "YAML charts need PyYAML (pip install pyyaml); JSON charts need nothing",
            rule="yaml_unavailable",
        ) from None

    safe: Any = yaml.SafeLoader

    def compose_node(self: Any, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases are not allowed in charts", event.start_mark
            )
        return safe.compose_node(self, parent, index)

    loader: Any = type("ChartLoader", (safe,), {"compose_node": compose_node})
    # Keep on/off/yes/no as strings (they are fine state ids), as python-statemachine does.
    loader.yaml_implicit_resolvers = {
        first: [
            (tag, regexp)
            for tag, regexp in resolvers
            if not (tag == "tag:yaml.org,2002:bool" and first not in "tTfF")
        ]
        for first, resolvers in safe.yaml_implicit_resolvers.items()
    }
    return loader


def _parse(text: str, fmt: str, where: str) -> Any:
    if len(text) > _MAX_BYTES:
        raise ChartError(
            f"{where}: a chart document must be at most {_MAX_BYTES} characters (got {len(text)})",
            rule="chart_too_large",
            chart=where,
        )
    if fmt == "json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ChartError(f"{where}: not valid JSON: {exc}", rule="chart_syntax") from None
    loader = _yaml_loader()
    yaml = importlib.import_module("yaml")

    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise ChartError(
            f"{where}: not a safe YAML chart: {exc}", rule="chart_syntax", chart=where
        ) from None


# -- the strict pass ------------------------------------------------------------


_GUARD_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Name)


def _guard_names(expr: object, where: str) -> list[str]:
    exprs = expr if isinstance(expr, list) else [expr]
    names: list[str] = []
    for item in exprs:
        if not isinstance(item, str):
            raise ChartError(
                f"{where}: a guard must be a name or names joined by and/or/not (got {item!r})",
                rule="chart_guard",
            )
        try:
            tree = ast.parse(item, mode="eval")
        except SyntaxError:
            tree = None
        nodes = list(ast.walk(tree)) if tree is not None else []
        if tree is None or not all(isinstance(n, (*_GUARD_NODES, ast.Load)) for n in nodes):
            raise ChartError(
                f"{where}: a guard must be a name or names joined by and/or/not (got {item!r})",
                rule="chart_guard",
            )
        names += [n.id for n in nodes if isinstance(n, ast.Name)]
    return names


def _action_names(value: object, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    names = []
    for item in items:
        if not isinstance(item, str):
            raise ChartError(
                f"{where}: actions must be callback names (got {item!r}); executable "
                "content (script, assign, send, raise, ...) is not allowed in ctxflow charts",
                rule="chart_action",
            )
        names.append(item)
    return names


def _check_keys(node: object, allowed: frozenset[str], where: str) -> Mapping[str, Any]:
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise ChartError(
            f"{where} must be a mapping (got {type(node).__name__})", rule="chart_shape"
        )
    unknown = sorted(str(k) for k in node if k not in allowed)
    if unknown:
        raise ChartError(
            f"{where}: keys must be among {sorted(allowed)} (got {unknown})",
            rule="chart_unknown_key",
            keys=unknown,
        )
    return node


@attrs.frozen(kw_only=True)
class TransitionSpec:
    """One transition of a chart: source state, event, target state (None: targetless)."""

    source: str
    event: str
    target: str | None


@attrs.define
class _Scan:
    where: str
    callbacks: frozenset[str]
    states: list[str] = attrs.Factory(list)
    parents: dict[str, str | None] = attrs.Factory(dict)
    atomic: list[str] = attrs.Factory(list)
    finals: list[str] = attrs.Factory(list)
    histories: dict[str, str] = attrs.Factory(dict)
    history_types: dict[str, str] = attrs.Factory(dict)
    transitions: list[TransitionSpec] = attrs.Factory(list)
    used_actions: set[str] = attrs.Factory(set)
    used_guards: set[str] = attrs.Factory(set)

    def name_ok(self, name: str, allowed: Mapping[str, str], kind: str, where: str) -> None:
        if name not in allowed and name not in self.callbacks:
            known = sorted({*allowed, *self.callbacks})
            raise ChartError(
                f"{self.where}: {where}: {kind} {name!r} is not a known name "
                f"(known: {', '.join(known)})",
                rule=f"unknown_{kind}",
                name=name,
            )

    def state(self, state_id: object, node: object, parent: str | None) -> None:
        if not isinstance(state_id, str) or not state_id.isidentifier():
            raise ChartError(
                f"{self.where}: state ids must be identifiers (got {state_id!r})",
                rule="chart_state_id",
            )
        if state_id in self.parents or state_id in self.histories:
            raise ChartError(
                f"{self.where}: state ids must be unique (got {state_id!r} twice)",
                rule="chart_state_id",
            )
        where = f"state {state_id!r}"
        body = _check_keys(node, _STATE_KEYS, f"{self.where}: {where}")
        self.states.append(state_id)
        self.parents[state_id] = parent
        for slot in _ACTION_SLOTS:
            if slot in body:
                for name in _action_names(body[slot], f"{self.where}: {where} {slot}"):
                    self.name_ok(name, ACTIONS, "action", f"{where} {slot}")
                    self.used_actions.add(name)
        children = body.get("states") or {}
        if not isinstance(children, Mapping):
            raise ChartError(
                f"{self.where}: {where} 'states' must be a mapping", rule="chart_shape"
            )
        if bool(body.get("final")) and children:
            raise ChartError(
                f"{self.where}: {where}: a final state cannot have children", rule="chart_shape"
            )
        histories = body.get("history") or {}
        if not isinstance(histories, Mapping):
            raise ChartError(
                f"{self.where}: {where} 'history' must be a mapping of id to {{type: ...}}",
                rule="chart_shape",
            )
        for hist_id, hist in histories.items():
            spec = _check_keys(hist, _HISTORY_KEYS, f"{self.where}: history {hist_id!r}")
            kind = spec.get("type", "shallow")
            if kind not in ("shallow", "deep"):
                raise ChartError(
                    f"{self.where}: history {hist_id!r} type must be 'shallow' or 'deep' "
                    f"(got {kind!r})",
                    rule="chart_history",
                )
            if not isinstance(hist_id, str) or not hist_id.isidentifier():
                raise ChartError(
                    f"{self.where}: history ids must be identifiers (got {hist_id!r})",
                    rule="chart_state_id",
                )
            self.histories[hist_id] = state_id
            self.history_types[hist_id] = kind
        for child_id, child in children.items():
            self.state(child_id, child, state_id)
        if not children:
            (self.finals if body.get("final") else self.atomic).append(state_id)
        transitions = body.get("transitions") or []
        if not isinstance(transitions, list):
            raise ChartError(
                f"{self.where}: {where} 'transitions' must be a list", rule="chart_shape"
            )
        for index, item in enumerate(transitions):
            self.transition(state_id, item, f"{where} transition {index}")

    def transition(self, source: str, node: object, where: str) -> None:
        body = _check_keys(node, _TRANSITION_KEYS, f"{self.where}: {where}")
        event = body.get("event")
        if not isinstance(event, str) or not event.strip():
            raise ChartError(
                f"{self.where}: {where}: every transition needs an 'event' "
                f"(eventless transitions are not supported; got {event!r})",
                rule="chart_event",
            )
        target = body.get("target")
        if target is not None and (not isinstance(target, str) or not target.isidentifier()):
            raise ChartError(
                f"{self.where}: {where}: 'target' must be one state id (got {target!r})",
                rule="chart_target",
            )
        for key in ("cond", "unless"):
            if key in body:
                for name in _guard_names(body[key], f"{self.where}: {where} {key}"):
                    self.name_ok(name, GUARDS, "guard", f"{where} {key}")
                    self.used_guards.add(name)
        for slot in _TRANSITION_ACTION_SLOTS:
            if slot in body:
                for name in _action_names(body[slot], f"{self.where}: {where} {slot}"):
                    self.name_ok(name, ACTIONS, "action", f"{where} {slot}")
                    self.used_actions.add(name)
        for name in event.split():
            if not name.isidentifier() or name.startswith("_"):
                raise ChartError(
                    f"{self.where}: {where}: event names must be identifiers without a "
                    f"leading underscore (got {name!r})",
                    rule="chart_event",
                )
            self.transitions.append(TransitionSpec(source=source, event=name, target=target))


def _scan(doc: object, where: str, callbacks: frozenset[str]) -> _Scan:
    body = _check_keys(doc, _DOCUMENT_KEYS, f"{where}: document")
    states = body.get("states")
    if not isinstance(states, Mapping) or not states:
        raise ChartError(f"{where}: a chart needs a non-empty 'states' mapping", rule="chart_shape")
    scan = _Scan(where=where, callbacks=callbacks)
    for state_id, node in states.items():
        scan.state(state_id, node, None)
    known = set(scan.states) | set(scan.histories)
    for spec in scan.transitions:
        if spec.target is not None and spec.target not in known:
            raise ChartError(
                f"{where}: transition {spec.event!r} from {spec.source!r} targets an unknown "
                f"state {spec.target!r}",
                rule="chart_target",
                target=spec.target,
            )
    return scan


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


def _machine_class(doc: Mapping[str, Any], name: str, where: str) -> type[Any]:
    from statemachine.io import load

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
    for key, fn in extra.items():
        if not key.isidentifier() or key.startswith("_") or not callable(fn):
            raise ChartError(
                f"callbacks must map identifiers to callables (got {key!r}: {fn!r})",
                rule="chart_callback",
            )
        if inspect.iscoroutinefunction(fn):
            raise ChartError(
                f"chart callbacks must be synchronous (got async {key!r}); put async work "
                "in the engine's collaborators",
                rule="chart_callback",
            )
        if key in ACTIONS or key in GUARDS:
            raise ChartError(
                f"callback names must not shadow built-in names (got {key!r})",
                rule="chart_callback",
            )
    if not isinstance(source, (str, os.PathLike, Mapping)):
        raise ChartError(
            f"a chart must be a name, a file path or a mapping (got {type(source).__name__})",
            rule="chart_source",
        )
    if isinstance(source, Mapping):
        doc: Any = source
        name = name or source.get("name")
        where = str(name or "chart")
    else:
        path = Path(source)
        if path.suffix not in _SUFFIXES and not path.exists():
            path = chart_path(str(source))
        where = str(path)
        fmt = _SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise ChartError(
                f"{where}: a chart file must end in .json, .yaml or .yml", rule="chart_format"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ChartError(f"{where}: cannot read the chart: {exc}", rule="chart_read") from None
        doc = _parse(text, fmt, where)
        name = name or (doc.get("name") if isinstance(doc, Mapping) else None) or path.stem
    scan = _scan(doc, where, frozenset(extra))
    chart_name = str(name or scan.states[0])
    if not chart_name.isidentifier():
        raise ChartError(
            f"{where}: a chart name must be an identifier (got {chart_name!r})",
            rule="chart_name",
        )
    if not scan.atomic:
        raise ChartError(f"{where}: a chart needs at least one non-final state", rule="chart_shape")
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
