"""The strict pass over a parsed chart document: its shape, allowlists and limits.

It runs before python-statemachine sees the document, so that whatever the
document holds, the answer is a :class:`~ctxflow.errors.ChartError` naming
the document and the rule, and no machine is built for a chart that is
refused:

- callback names must be on the allowlist (:data:`ACTIONS`, :data:`GUARDS`,
  plus the ``callbacks`` the caller passes); guards are names joined by
  ``and``/``or``/``not``; executable content (``script``, ``assign``,
  ``send`` ...), ``invoke``, ``datamodel``, external ``src`` and parallel
  states are refused — effects belong to the engine, not to the document;
- the size of a chart is bounded (:data:`MAX_STATES`, :data:`MAX_TRANSITIONS`,
  :data:`MAX_EVENTS`, nesting at :data:`~ctxflow.engine._chart_files.MAX_DEPTH`),
  and counting stops at the first item over a limit, so a huge document is
  refused in the time it takes to reach it — building a machine is not linear
  in its size;
- state ids, event names and callback names are checked against the names
  the machine and its model already use (``_chart_names``).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

import attrs

from ctxflow.engine._chart_files import MAX_DEPTH, too_deep
from ctxflow.engine._chart_names import ACTIONS, GUARDS, identifier, short
from ctxflow.errors import ChartError

__all__ = [
    "MAX_EVENTS",
    "MAX_STATES",
    "MAX_TRANSITIONS",
    "Scan",
    "TransitionSpec",
    "check_nesting",
    "scan_document",
]

#: The most states (history pseudo-states included) a chart may have.
MAX_STATES = 1_000
#: The most transitions a chart may have (a transition on several events counts once per event).
MAX_TRANSITIONS = 2_000
#: The most distinct event names a chart may have.
MAX_EVENTS = 1_000
#: The longest guard expression.
MAX_GUARD_CHARS = 200
#: The most names in one action or guard list.
MAX_LIST_NAMES = 16
#: The most values (mappings, lists and scalars) in a document: bounds a shared or cyclic mapping.
MAX_VALUES = 1_000_000

_DOCUMENT_KEYS = frozenset({"name", "description", "states"})
_STATE_KEYS = frozenset({"initial", "final", "enter", "exit", "transitions", "states", "history"})
_TRANSITION_KEYS = frozenset(
    {"event", "target", "cond", "unless", "internal", "on", "before", "after"}
)
_HISTORY_KEYS = frozenset({"type"})
_ACTION_SLOTS = ("enter", "exit")
_TRANSITION_ACTION_SLOTS = ("before", "on", "after")
_GUARD_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Name)

# -- the document as a whole ------------------------------------------------------


def check_nesting(doc: object, where: str) -> None:
    """Fail when a parsed document nests deeper than MAX_DEPTH or holds too many values.

    A walk with its own stack, so that a deep, shared or cyclic mapping handed
    in by a caller fails here rather than as ``RecursionError`` further on.
    """
    stack: list[tuple[object, int]] = [(doc, 0)]
    values = 0
    while stack:
        node, depth = stack.pop()
        values += 1
        if values > MAX_VALUES:
            raise ChartError(
                f"{where}: a chart document must hold at most {MAX_VALUES} values "
                f"(got at least {MAX_VALUES + 1})",
                rule="chart_too_large",
                chart=where,
            )
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth + 1 > MAX_DEPTH:
            raise too_deep(where)
        stack.extend((child, depth + 1) for child in children)


# -- the strict pass --------------------------------------------------------------


def _names(value: object, where: str, what: str) -> list[object]:
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_LIST_NAMES:
        raise ChartError(
            f"{where}: a list of {what} must hold at most {MAX_LIST_NAMES} names "
            f"(got {len(items)})",
            rule="chart_too_large",
        )
    return items


def _guard_names(expr: object, where: str) -> list[str]:
    names: list[str] = []
    for item in _names(expr, where, "guards"):
        rule = f"{where}: a guard must be a name or names joined by and/or/not"
        if not isinstance(item, str):
            raise ChartError(f"{rule} (got {short(item)})", rule="chart_guard")
        if len(item) > MAX_GUARD_CHARS:
            # ast.parse recurses: a long chain of 'not' would raise RecursionError.
            raise ChartError(
                f"{where}: a guard must be at most {MAX_GUARD_CHARS} characters (got {len(item)})",
                rule="chart_guard",
            )
        try:
            tree = ast.parse(item, mode="eval")
        except (SyntaxError, RecursionError, MemoryError):
            tree = None
        nodes = list(ast.walk(tree)) if tree is not None else []
        if tree is None or not all(isinstance(n, (*_GUARD_NODES, ast.Load)) for n in nodes):
            raise ChartError(f"{rule} (got {short(item)})", rule="chart_guard")
        names += [n.id for n in nodes if isinstance(n, ast.Name)]
    return names


def _action_names(value: object, where: str) -> list[str]:
    names = []
    for item in _names(value, where, "actions"):
        if not isinstance(item, str):
            raise ChartError(
                f"{where}: actions must be callback names (got {short(item)}); executable "
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
            f"{where}: keys must be among {sorted(allowed)} (got {short(unknown)})",
            rule="chart_unknown_key",
            keys=unknown,
        )
    return node


def _too_many(where: str, what: str, limit: int) -> ChartError:
    return ChartError(
        f"{where}: a chart must have at most {limit} {what} (got at least {limit + 1})",
        rule=f"chart_too_many_{what}",
        chart=where,
        limit=limit,
    )


@attrs.frozen(kw_only=True)
class TransitionSpec:
    """One transition of a chart: source state, event, target state (None: targetless)."""

    source: str
    event: str
    target: str | None


@attrs.define
class Scan:
    """What the strict pass learnt of a document: its states, structure and transitions."""

    where: str
    callbacks: frozenset[str]
    states: list[str] = attrs.Factory(list)
    parents: dict[str, str | None] = attrs.Factory(dict)
    atomic: list[str] = attrs.Factory(list)
    finals: list[str] = attrs.Factory(list)
    histories: dict[str, str] = attrs.Factory(dict)
    history_types: dict[str, str] = attrs.Factory(dict)
    transitions: list[TransitionSpec] = attrs.Factory(list)
    events: set[str] = attrs.Factory(set)
    used_actions: set[str] = attrs.Factory(set)
    used_guards: set[str] = attrs.Factory(set)

    def name_ok(self, name: str, allowed: Mapping[str, str], kind: str, where: str) -> None:
        """Fail when ``name`` is neither allowlisted nor one of the caller's callbacks."""
        if name not in allowed and name not in self.callbacks:
            known = sorted({*allowed, *self.callbacks})
            raise ChartError(
                f"{self.where}: {where}: {kind} {short(name)} is not a known name "
                f"(known: {', '.join(known)})",
                rule=f"unknown_{kind}",
                name=name,
            )

    def _counted(self) -> None:
        if len(self.parents) + len(self.histories) > MAX_STATES:
            raise _too_many(self.where, "states", MAX_STATES)

    def state(self, state_id: object, node: object, parent: str | None) -> None:
        """Check one state and, depth first, its children and transitions."""
        state_id = identifier(state_id, "state ids", self.where, "chart_state_id")
        if state_id in self.parents or state_id in self.histories:
            raise ChartError(
                f"{self.where}: state ids must be unique (got {state_id!r} twice)",
                rule="chart_state_id",
            )
        where = f"state {state_id!r}"
        body = _check_keys(node, _STATE_KEYS, f"{self.where}: {where}")
        self.states.append(state_id)
        self.parents[state_id] = parent
        self._counted()
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
            spec = _check_keys(hist, _HISTORY_KEYS, f"{self.where}: history {short(hist_id)}")
            kind = spec.get("type", "shallow")
            if kind not in ("shallow", "deep"):
                raise ChartError(
                    f"{self.where}: history {short(hist_id)} type must be 'shallow' or "
                    f"'deep' (got {short(kind)})",
                    rule="chart_history",
                )
            hist_id = identifier(hist_id, "history ids", self.where, "chart_state_id")
            self.histories[hist_id] = state_id
            self.history_types[hist_id] = kind
            self._counted()
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
        """Check one transition of ``source``: its event names, target, guards and actions."""
        body = _check_keys(node, _TRANSITION_KEYS, f"{self.where}: {where}")
        event = body.get("event")
        if not isinstance(event, str) or not event.strip():
            raise ChartError(
                f"{self.where}: {where}: every transition needs an 'event' "
                f"(eventless transitions are not supported; got {short(event)})",
                rule="chart_event",
            )
        target = body.get("target")
        if target is not None and (not isinstance(target, str) or not target.isidentifier()):
            raise ChartError(
                f"{self.where}: {where}: 'target' must be one state id (got {short(target)})",
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
            name = identifier(name, f"{where}: event names", self.where, "chart_event")
            self.transitions.append(TransitionSpec(source=source, event=name, target=target))
            self.events.add(name)
            if len(self.transitions) > MAX_TRANSITIONS:
                raise _too_many(self.where, "transitions", MAX_TRANSITIONS)
            if len(self.events) > MAX_EVENTS:
                raise _too_many(self.where, "events", MAX_EVENTS)


def scan_document(doc: object, where: str, callbacks: frozenset[str]) -> Scan:
    """The strict pass over a parsed document (ChartError at the first thing refused)."""
    check_nesting(doc, where)
    body = _check_keys(doc, _DOCUMENT_KEYS, f"{where}: document")
    states = body.get("states")
    if not isinstance(states, Mapping) or not states:
        raise ChartError(f"{where}: a chart needs a non-empty 'states' mapping", rule="chart_shape")
    scan = Scan(where=where, callbacks=callbacks)
    for state_id, node in states.items():
        scan.state(state_id, node, None)
    known = set(scan.states) | set(scan.histories)
    for spec in scan.transitions:
        if spec.target is not None and spec.target not in known:
            raise ChartError(
                f"{where}: transition {spec.event!r} from {spec.source!r} targets an unknown "
                f"state {short(spec.target)}",
                rule="chart_target",
                target=spec.target,
            )
    return scan
