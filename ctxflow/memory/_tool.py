"""The memory tool: the model reads and writes its own memory with one tool call.

:data:`MEMORY_TOOL` is the tool definition; :func:`handle_memory` answers one
call against a :class:`~ctxflow.layers.LayeredState` and returns the new
state with the text of the tool result. It is pure and engine-free: the loop
(``run_agent(..., memory_tool=True)``) hands the new state to the engine, so
a write shows in the next window's memory sections and in the next
checkpoint.

Commands (``command`` plus the fields named):

==========  ================================================================
``view``    list memory; optional ``kind`` ("fact", "procedure", "note",
            "episode"); with ``key``/``name`` show that one item in full
``search``  ``query``; optional ``kind`` and ``limit`` (1..50, default 5)
``write``   ``kind`` ("fact", "procedure", "note"), ``key`` and ``value``
            (a procedure: ``name`` and ``steps``, a string or a list of
            strings); optional ``scope`` ("session", "user", "project") and
            ``importance`` (0..1). Creates the item, or changes the one
            already there (what is not given is kept)
``update``  as ``write``, but the item must exist and only ``key``/``name``
            is required
``delete``  ``kind`` and ``key``/``name``; the item must exist
==========  ================================================================

A note is a fact whose key is ``note:<name>``; ``<name>`` keeps letters,
digits, ``.``, ``_`` and ``-`` (other runs become ``-``), so ``"my todo"``
is saved as ``my-todo``. Episodes are read-only here (consolidation writes
them).

The command shape of Anthropic's memory tool is accepted too, over a flat
``/memories`` directory whose files are the notes: ``view`` of ``/memories``
(the notes) or of ``/memories/<name>`` (numbered lines; ``view_range``),
``create`` (``file_text``; an existing note is overwritten), ``str_replace``
(``old_str`` must occur once), ``insert`` (``insert_line``, ``insert_text``),
``delete`` and ``rename`` (``old_path``, ``new_path``). Subdirectories,
deleting ``/memories`` itself and any other path are answered with an error.

Gotcha: nothing the model sends raises. Every bad argument — an unknown
command or kind, a missing or mistyped field, a text over
``max_write_chars``, an unknown key on ``update``/``delete``, a bad scope,
a new item past ``max_items`` — comes back as ``is_error=True`` with a
message naming the field, and the state unchanged. Only bad *parameters*
of :func:`handle_memory` itself (the developer's) raise ``PolicyError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeAlias, TypeVar

import attrs

from ctxflow._checks import check_number
from ctxflow.adapters import tool_to_anthropic, tool_to_openai
from ctxflow.errors import PolicyError
from ctxflow.layers import SCOPES, Fact, LayeredState, Procedure, ToolDef

__all__ = [
    "MEMORY_TOOL",
    "NOTE_PREFIX",
    "MemoryOutcome",
    "Rank",
    "anthropic_memory_tool",
    "handle_memory",
    "keyword_rank",
    "openai_memory_tool",
]

Rank: TypeAlias = Callable[[Sequence[str], str], list[int]]
"""A ranking: (documents, query) → the indexes of the matching documents, best first."""

#: The key prefix that makes a fact a note.
NOTE_PREFIX: Final = "note:"

_COMMANDS = ("view", "search", "write", "update", "delete")
_FILE_COMMANDS = ("view", "create", "str_replace", "insert", "delete", "rename")
_WRITABLE = ("fact", "procedure", "note")
_READABLE = ("fact", "procedure", "note", "episode")
_ROOT = "/memories"
#: A fact or a procedure: what the tool writes.
_Written = TypeVar("_Written", Fact, Procedure)
_MAX_NAME_CHARS = 100
_MAX_LIMIT = 50
_PREVIEW_CHARS = 120

#: The tool through which a model keeps its memory (``run_agent(..., memory_tool=True)``).
MEMORY_TOOL = ToolDef(
    name="memory",
    description=(
        "Read and write your long-lived memory: facts (key → value), procedures (how to do "
        "something, as steps) and notes (free text). Memory is shown to you on later turns and "
        "kept across checkpoints; scope 'user' or 'project' marks what should outlive this "
        "session. Commands: 'view' lists memory (optional 'kind'; with 'key'/'name' one item "
        "in full); 'search' finds items by keywords ('query', optional 'kind', 'limit'); "
        "'write' saves an item (kind 'fact' or 'note': 'key' and 'value'; kind 'procedure': "
        "'name' and 'steps'), replacing one with the same key; 'update' changes an existing "
        "item; 'delete' removes one ('kind' and 'key'/'name'). Write what you will need later "
        "and cannot read again cheaply: decisions, constraints, paths, how a task was done."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "command": {
                "type": "string",
                "enum": list(_COMMANDS),
                "description": "what to do",
            },
            "kind": {
                "type": "string",
                "enum": [*_WRITABLE, "episode"],
                "description": "the kind of item ('episode' only for view and search)",
            },
            "key": {"type": "string", "description": "a fact's or a note's key"},
            "value": {"type": "string", "description": "a fact's or a note's text"},
            "name": {"type": "string", "description": "a procedure's name"},
            "steps": {
                "type": ["string", "array"],
                "items": {"type": "string"},
                "description": "a procedure's steps, as text or a list of steps",
            },
            "scope": {
                "type": "string",
                "enum": list(SCOPES),
                "description": "who the item is for: this session (default), the user, the project",
            },
            "importance": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "how much the item matters, 0 to 1 (default 0.5)",
            },
            "query": {"type": "string", "description": "keywords to search for"},
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": _MAX_LIMIT,
                "description": "at most this many search results (default 5)",
            },
        },
        "required": ["command"],
    },
)


def anthropic_memory_tool() -> dict[str, Any]:
    """:data:`MEMORY_TOOL` as an entry of an Anthropic request's ``tools``."""
    return tool_to_anthropic(MEMORY_TOOL)


def openai_memory_tool() -> dict[str, Any]:
    """:data:`MEMORY_TOOL` as an entry of an OpenAI chat request's ``tools``."""
    return tool_to_openai(MEMORY_TOOL)


@attrs.frozen(kw_only=True)
class MemoryOutcome:
    """One memory call's answer: the state after it, the tool result's text, and how it went."""

    state: LayeredState = attrs.field(repr=False)
    text: str
    is_error: bool = False
    changed: bool = False


_WORD = re.compile(r"\w+")


def keyword_rank(documents: Sequence[str], query: str) -> list[int]:
    """The default :data:`Rank`: documents sharing words with ``query``, most shared first.

    Case-insensitive word overlap; among equal overlaps the document whose
    words are more of them query words comes first (a short fact before a
    long episode), then the later (newer) one.
    """
    wanted = set(_WORD.findall(query.lower()))
    scored = []
    for at, document in enumerate(documents):
        words = set(_WORD.findall(document.lower()))
        shared = len(wanted & words)
        if shared:
            scored.append((-shared, -shared / len(words), -at))
    return [-at for *_, at in sorted(scored)]


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


class _Bad(Exception):
    """A bad argument from the model: becomes an ``is_error`` result, never leaves this module."""


@attrs.frozen
class _Item:
    """One memory item as the tool shows it."""

    kind: str
    ident: str
    body: str
    scope: str | None
    importance: float
    step: int

    @property
    def label(self) -> str:
        return f"scope: {self.scope}, " if self.scope else ""

    def line(self) -> str:
        flat = " ".join(self.body.split())
        if len(flat) > _PREVIEW_CHARS:
            flat = flat[: _PREVIEW_CHARS - 1] + "…"
        return f"- {self.ident}: {flat}  ({self.label}importance: {self.importance:g})"

    def full(self) -> str:
        head = f"{self.kind} {self.ident!r} ({self.label}importance: {self.importance:g}, "
        return f"{head}step: {self.step})\n{self.body}"


def _items(state: LayeredState, kind: str | None) -> list[_Item]:
    """The items of ``kind`` (all kinds for None), oldest first within each kind."""
    memory = state.memory
    found: list[_Item] = []
    if kind in (None, "fact", "note"):
        for f in memory.semantic:
            is_note = f.key.startswith(NOTE_PREFIX)
            if kind is None or (kind == "note") == is_note:
                ident = f.key.removeprefix(NOTE_PREFIX) if is_note else f.key
                note_kind = "note" if is_note else "fact"
                found.append(_Item(note_kind, ident, f.value, f.scope, f.importance, f.step))
    if kind in (None, "procedure"):
        found += [
            _Item("procedure", p.name, p.steps, p.scope, p.importance, p.step)
            for p in memory.procedural
        ]
    if kind in (None, "episode"):
        found += [
            _Item("episode", e.id, e.summary, None, e.importance, e.step) for e in memory.episodic
        ]
    return found


# -- argument checks (each raises _Bad naming the field) -----------------------------


def _keys(arguments: Mapping[str, Any]) -> list[str]:
    return sorted(str(k) for k in arguments)


def _string(
    arguments: Mapping[str, Any], field: str, limit: int, *, why: str = "", empty: bool = False
) -> str:
    if field not in arguments:
        raise _Bad(f"'{field}' is required{why} (got keys {_keys(arguments)})")
    value = arguments[field]
    if not isinstance(value, str):
        raise _Bad(f"'{field}' must be a string (got {type(value).__name__})")
    if not empty and not value.strip():
        raise _Bad(f"'{field}' must not be empty")
    if len(value) > limit:
        raise _Bad(f"'{field}' must be at most {limit} characters (got {len(value)})")
    return value


def _choice(arguments: Mapping[str, Any], field: str, choices: Sequence[str], why: str) -> str:
    value = _string(arguments, field, 100, why=why)
    if value not in choices:
        raise _Bad(f"'{field}' must be one of {list(choices)}{why} (got {value!r})")
    return value


def _optional_kind(arguments: Mapping[str, Any]) -> str | None:
    if arguments.get("kind") is None:
        return None
    return _choice(arguments, "kind", _READABLE, "")


def _integer(arguments: Mapping[str, Any], field: str, low: int, high: int, default: int) -> int:
    value = arguments.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Bad(f"'{field}' must be an integer from {low} to {high} (got {value!r})")
    return value


def _scope(arguments: Mapping[str, Any]) -> str | None:
    value = arguments.get("scope")
    if value is None:
        return None
    if value not in SCOPES:
        raise _Bad(f"'scope' must be one of {list(SCOPES)} (got {value!r})")
    return str(value)


def _importance(arguments: Mapping[str, Any]) -> float | None:
    value = arguments.get("importance")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _Bad(f"'importance' must be a number from 0 to 1 (got {value!r})")
    return float(value)


def _note_name(raw: str, field: str) -> str:
    """A note's name from what the model wrote: the prefix dropped, odd characters made ``-``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw.strip().removeprefix(NOTE_PREFIX)).strip("-")
    if not name or set(name) == {"."}:
        raise _Bad(f"'{field}' must name a note with letters or digits (got {raw!r})")
    if len(name) > _MAX_NAME_CHARS:
        raise _Bad(f"'{field}' must be at most {_MAX_NAME_CHARS} characters (got {len(name)})")
    return name


def _steps(arguments: Mapping[str, Any], limit: int) -> str:
    value = arguments.get("steps")
    if isinstance(value, list):
        if not value or not all(isinstance(s, str) and s.strip() for s in value):
            raise _Bad("'steps' must be a non-empty string or a list of non-empty strings")
        value = "\n".join(f"{n}. {s.strip()}" for n, s in enumerate(value, 1))
        if len(value) > limit:
            raise _Bad(f"'steps' must be at most {limit} characters (got {len(value)})")
        return value
    return _string(arguments, "steps", limit, why=" for kind 'procedure'")


# -- the handler ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Call:
    """One call's context: the state, the limits and the ranking."""

    state: LayeredState
    step: int
    source: str | None
    max_write_chars: int
    max_items: int
    rank: Rank

    def done(self, text: str, state: LayeredState | None = None) -> MemoryOutcome:
        if state is None or state == self.state:
            return MemoryOutcome(state=self.state, text=text)
        return MemoryOutcome(state=state, text=text, changed=True)

    def room(self) -> None:
        held = len(self.state.memory.semantic) + len(self.state.memory.procedural)
        if held >= self.max_items:
            raise _Bad(
                f"memory is full ({held} items, at most {self.max_items}): "
                "delete or update an item instead of writing a new one"
            )

    # -- writing an item: a fact (or note) or a procedure

    def fresh(self, must_exist: bool, field: str, shown: str) -> None:
        """Check that a new item may be written: not by 'update', and only with room."""
        if must_exist:
            raise _Bad(f"'{field}': no {shown} to update; write it first")
        self.room()

    def stamp(self, scope: str | None, importance: float | None) -> dict[str, Any]:
        """What a new item records of this call: source, scope, step and importance."""
        return {
            "source": self.source,
            "scope": scope or "session",
            "step": self.step,
            "importance": 0.5 if importance is None else importance,
        }

    def restamp(
        self, old: Fact | Procedure, scope: str | None, importance: float | None
    ) -> dict[str, Any]:
        """What an updated item takes of this call: the scope and importance given, the step."""
        return {
            "scope": old.scope if scope is None else scope,
            "importance": old.importance if importance is None else importance,
            "step": self.step,
        }

    def settle(
        self,
        old: _Written | None,
        new: _Written,
        shown: str,
        place: Callable[[_Written], LayeredState],
    ) -> MemoryOutcome:
        """The outcome of writing ``new`` over ``old`` (None for a new item)."""
        if old is None:
            return self.done(f"Saved {shown}.", place(new))
        if new == old:
            return self.done(f"{shown[0].upper()}{shown[1:]} already holds that; nothing changed.")
        return self.done(f"Updated {shown}.", place(new))

    # -- facts and notes share the semantic tier

    def put_fact(
        self,
        key: str,
        value: str | None,
        scope: str | None,
        importance: float | None,
        *,
        must_exist: bool,
        shown: str,
        field: str = "key",
    ) -> MemoryOutcome:
        old = self.state.memory.fact(key)
        if old is None:
            self.fresh(must_exist, field, shown)
            assert value is not None
            fact = Fact(key=key, value=value, **self.stamp(scope, importance))
        else:
            fact = attrs.evolve(
                old,
                value=old.value if value is None else value,
                source=self.source or old.source,
                tokens=0 if value is not None and value != old.value else old.tokens,
                **self.restamp(old, scope, importance),
            )
        return self.settle(old, fact, shown, lambda f: self.state.with_facts([f]))

    def drop_fact(self, key: str, shown: str, field: str = "key") -> MemoryOutcome:
        if self.state.memory.fact(key) is None:
            raise _Bad(f"'{field}': no {shown} to delete")
        kept = tuple(f for f in self.state.memory.semantic if f.key != key)
        memory = attrs.evolve(self.state.memory, semantic=kept)
        return self.done(f"Deleted {shown}.", attrs.evolve(self.state, memory=memory))

    # -- the tool's own commands

    def view(self, arguments: Mapping[str, Any]) -> MemoryOutcome:
        kind = _optional_kind(arguments)
        wanted = arguments.get("key", arguments.get("name"))
        if wanted is not None:
            field = "key" if "key" in arguments else "name"
            ident = _string(arguments, field, self.max_write_chars)
            if kind == "note" or (kind is None and ident.startswith(NOTE_PREFIX)):
                ident = _note_name(ident, field)
                kind = "note"
            matches = [i for i in _items(self.state, kind) if i.ident == ident]
            if not matches:
                where = f"{kind} " if kind else "item "
                raise _Bad(f"'{field}': no {where}named {ident!r} in memory")
            return self.done("\n\n".join(i.full() for i in matches))
        items = _items(self.state, kind)
        if not items:
            return self.done(f"No {kind}s in memory." if kind else "Memory is empty.")
        sections = []
        for each in ("fact", "procedure", "note", "episode"):
            group = [i for i in items if i.kind == each]
            if group:
                sections.append(
                    "\n".join(
                        [f"## {each.capitalize()}s ({len(group)})"] + [i.line() for i in group]
                    )
                )
        return self.done("\n".join(sections))

    def search(self, arguments: Mapping[str, Any]) -> MemoryOutcome:
        query = _string(arguments, "query", self.max_write_chars, why=" for 'search'")
        kind = _optional_kind(arguments)
        limit = _integer(arguments, "limit", 1, _MAX_LIMIT, 5)
        items = _items(self.state, kind)
        order = self.rank([f"{i.ident}: {i.body}" for i in items], query)
        if not isinstance(order, list) or any(
            isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < len(items)
            for at in order
        ):
            raise PolicyError(
                f"a memory rank must return a list of indexes below {len(items)} (got {order!r})",
                rule="memory_rank",
            )
        hits = [items[at] for at in dict.fromkeys(order)][:limit]
        if not hits:
            return self.done(f"Nothing in memory matches {query!r}.")
        lines = [f"- [{i.kind}] {i.line()[2:]}" for i in hits]
        return self.done(
            f"{_count(len(hits), 'match', 'matches')} for {query!r}:\n" + "\n".join(lines)
        )

    def write(self, arguments: Mapping[str, Any], *, must_exist: bool) -> MemoryOutcome:
        command = "update" if must_exist else "write"
        kind = _choice(arguments, "kind", _WRITABLE, f" for {command!r}")
        scope = _scope(arguments)
        importance = _importance(arguments)
        limit = self.max_write_chars
        if kind == "procedure":
            name = _string(arguments, "name", _MAX_NAME_CHARS, why=" for kind 'procedure'")
            steps = None
            if not must_exist or "steps" in arguments:
                steps = _steps(arguments, limit)
            elif scope is None and importance is None:
                raise _Bad("'update' needs at least one of 'steps', 'scope', 'importance'")
            return self.put_procedure(name, steps, scope, importance, must_exist=must_exist)
        why = f" for kind {kind!r}"
        key = _string(arguments, "key", _MAX_NAME_CHARS + len(NOTE_PREFIX), why=why)
        if kind == "note":
            name = _note_name(key, "key")
            key, shown = NOTE_PREFIX + name, f"note {name!r}"
        elif key.startswith(NOTE_PREFIX):
            raise _Bad(f"'key' of a fact must not start with {NOTE_PREFIX!r}; use kind 'note'")
        else:
            shown = f"fact {key!r}"
        value = None
        if not must_exist or "value" in arguments:
            value = _string(arguments, "value", limit, why=why)
        elif scope is None and importance is None:
            raise _Bad("'update' needs at least one of 'value', 'scope', 'importance'")
        return self.put_fact(key, value, scope, importance, must_exist=must_exist, shown=shown)

    def put_procedure(
        self,
        name: str,
        steps: str | None,
        scope: str | None,
        importance: float | None,
        *,
        must_exist: bool,
    ) -> MemoryOutcome:
        old = next((p for p in self.state.memory.procedural if p.name == name), None)
        if old is None:
            self.fresh(must_exist, "name", f"procedure {name!r}")
            assert steps is not None
            procedure = Procedure(name=name, steps=steps, **self.stamp(scope, importance))
        else:
            procedure = attrs.evolve(
                old,
                steps=old.steps if steps is None else steps,
                tokens=0 if steps is not None and steps != old.steps else old.tokens,
                **self.restamp(old, scope, importance),
            )
        return self.settle(
            old, procedure, f"procedure {name!r}", lambda p: self.state.with_procedure(p)
        )

    def delete(self, arguments: Mapping[str, Any]) -> MemoryOutcome:
        kind = _choice(arguments, "kind", _WRITABLE, " for 'delete'")
        if kind == "procedure":
            name = _string(arguments, "name", _MAX_NAME_CHARS, why=" for kind 'procedure'")
            kept = tuple(p for p in self.state.memory.procedural if p.name != name)
            if len(kept) == len(self.state.memory.procedural):
                raise _Bad(f"'name': no procedure {name!r} to delete")
            memory = attrs.evolve(self.state.memory, procedural=kept)
            return self.done(
                f"Deleted procedure {name!r}.", attrs.evolve(self.state, memory=memory)
            )
        key = _string(arguments, "key", _MAX_NAME_CHARS + len(NOTE_PREFIX), why=f" for {kind!r}")
        if kind == "note":
            name = _note_name(key, "key")
            return self.drop_fact(NOTE_PREFIX + name, f"note {name!r}")
        if key.startswith(NOTE_PREFIX):
            raise _Bad(f"'key' of a fact must not start with {NOTE_PREFIX!r}; use kind 'note'")
        return self.drop_fact(key, f"fact {key!r}")

    # -- Anthropic's memory-tool shape: files under /memories are notes

    def path(self, arguments: Mapping[str, Any], field: str = "path") -> str | None:
        """The note name a path names, or None for ``/memories`` itself."""
        raw = _string(arguments, field, 1_000, why=f" for {arguments.get('command')!r}")
        path = raw.strip().rstrip("/")
        if path == _ROOT:
            return None
        if not path.startswith(_ROOT + "/"):
            raise _Bad(f"'{field}' must be {_ROOT} or {_ROOT}/<name> (got {raw!r})")
        rest = path[len(_ROOT) + 1 :]
        if "/" in rest:
            raise _Bad(f"'{field}': subdirectories of {_ROOT} are not supported (got {raw!r})")
        return _note_name(rest, field)

    def note(self, name: str, field: str) -> Fact:
        fact = self.state.memory.fact(NOTE_PREFIX + name)
        if fact is None:
            raise _Bad(f"'{field}': {_ROOT}/{name} does not exist")
        return fact

    def file_command(self, command: str, arguments: Mapping[str, Any]) -> MemoryOutcome:
        if command == "rename":
            old = self.path(arguments, "old_path")
            new = self.path(arguments, "new_path")
            if old is None or new is None:
                raise _Bad(f"'old_path' and 'new_path' must both name files in {_ROOT}")
            fact = self.note(old, "old_path")
            if old == new:
                return self.done(f"{_ROOT}/{old} already has that name.")
            if self.state.memory.fact(NOTE_PREFIX + new) is not None:
                raise _Bad(f"'new_path': {_ROOT}/{new} already exists")
            kept = tuple(f for f in self.state.memory.semantic if f.key != fact.key)
            renamed = attrs.evolve(fact, key=NOTE_PREFIX + new, step=self.step)
            memory = attrs.evolve(self.state.memory, semantic=(*kept, renamed))
            state = attrs.evolve(self.state, memory=memory)
            return self.done(f"Renamed {_ROOT}/{old} to {_ROOT}/{new}.", state)
        name = self.path(arguments)
        if command == "view":
            if name is None:
                notes = _items(self.state, "note")
                lines = [f"- {_ROOT}/{i.ident} ({len(i.body)} characters)" for i in notes]
                return self.done(
                    "\n".join([f"{_ROOT} ({_count(len(notes), 'file', 'files')})", *lines])
                )
            return self.view_file(name, arguments)
        if name is None:
            raise _Bad(f"'path': {command!r} needs a file in {_ROOT}, not {_ROOT} itself")
        shown = f"{_ROOT}/{name}"
        key = NOTE_PREFIX + name
        if command == "delete":
            return self.drop_fact(key, shown, "path")
        if command == "create":
            text = _string(arguments, "file_text", self.max_write_chars, why=" for 'create'")
            return self.put_fact(key, text, None, None, must_exist=False, shown=shown, field="path")
        value = self.note(name, "path").value
        if command == "str_replace":
            old_str = _string(arguments, "old_str", self.max_write_chars, why=" for 'str_replace'")
            new_str = arguments.get("new_str", "")
            if not isinstance(new_str, str):
                raise _Bad(f"'new_str' must be a string (got {type(new_str).__name__})")
            count = value.count(old_str)
            if count != 1:
                raise _Bad(f"'old_str' must occur exactly once in {shown} (found {count} times)")
            value = value.replace(old_str, new_str, 1)
        else:  # insert
            lines = value.split("\n")
            at = _integer(arguments, "insert_line", 0, len(lines), -1)
            if at < 0:
                raise _Bad("'insert_line' is required for 'insert'")
            field = "insert_text" if "insert_text" in arguments else "new_str"
            text = _string(arguments, field, self.max_write_chars, why=" for 'insert'", empty=True)
            value = "\n".join([*lines[:at], *text.split("\n"), *lines[at:]])
        if not value.strip():
            raise _Bad(f"the edit would leave {shown} empty; delete it instead")
        if len(value) > self.max_write_chars:
            raise _Bad(
                f"the edit would make {shown} {len(value)} characters, "
                f"over the limit of {self.max_write_chars}"
            )
        return self.put_fact(key, value, None, None, must_exist=True, shown=shown, field="path")

    def view_file(self, name: str, arguments: Mapping[str, Any]) -> MemoryOutcome:
        lines = self.note(name, "path").value.split("\n")
        first, last = 1, len(lines)
        window = arguments.get("view_range")
        if window is not None:
            if (
                not isinstance(window, list | tuple)
                or len(window) != 2
                or not all(isinstance(n, int) and not isinstance(n, bool) for n in window)
                or not 1 <= window[0] <= len(lines)
                or not (window[1] == -1 or window[0] <= window[1] <= len(lines))
            ):
                raise _Bad(
                    f"'view_range' must be [start, end] with 1 <= start <= end <= {len(lines)} "
                    f"(end -1: to the last line) (got {window!r})"
                )
            first, last = window[0], len(lines) if window[1] == -1 else window[1]
        shown = [f"{n:6d}\t{lines[n - 1]}" for n in range(first, last + 1)]
        return self.done("\n".join([f"{_ROOT}/{name}:", *shown]))


def handle_memory(
    state: LayeredState,
    arguments: Mapping[str, Any],
    *,
    step: int = 0,
    max_write_chars: int = 4_000,
    max_items: int = 500,
    rank: Rank | None = None,
    source: str | None = None,
) -> MemoryOutcome:
    """Answer one memory-tool call against ``state``; bad model input gives ``is_error``.

    ``step`` stamps what is written (recency); ``source`` (a message id) is
    kept on new items as where they came from; ``max_write_chars`` bounds any
    written text, ``max_items`` the facts, notes and procedures held; ``rank``
    orders ``search`` candidates (:func:`keyword_rank` by default). The
    arguments take this module's commands or Anthropic's memory-tool shape.
    ``PolicyError`` only for bad parameters of this function (or a ``rank``
    returning something other than a list of candidate indexes).
    """
    if not isinstance(state, LayeredState):
        raise PolicyError(
            f"'state' must be a LayeredState (got {type(state).__name__})", rule="memory_tool"
        )
    check_number(step, "'step'", kind="non-negative integer", rule="memory_tool")
    check_number(max_write_chars, "'max_write_chars'", kind="positive integer", rule="memory_tool")
    check_number(max_items, "'max_items'", kind="non-negative integer", rule="memory_tool")
    if rank is not None and not callable(rank):
        raise PolicyError(
            f"'rank' must be callable (got {type(rank).__name__})", rule="memory_tool"
        )
    call = _Call(
        state=state,
        step=step,
        source=source,
        max_write_chars=max_write_chars,
        max_items=max_items,
        rank=rank or keyword_rank,
    )
    try:
        return _dispatch(call, arguments)
    except _Bad as bad:
        return MemoryOutcome(state=state, text=f"Error: {bad}", is_error=True)


def _dispatch(call: _Call, arguments: Mapping[str, Any]) -> MemoryOutcome:
    if not isinstance(arguments, Mapping):
        raise _Bad(f"the arguments must be an object (got {type(arguments).__name__})")
    command = arguments.get("command")
    if not isinstance(command, str):
        known = sorted({*_COMMANDS, *_FILE_COMMANDS})
        got = "no 'command'" if command is None else f"{type(command).__name__}"
        raise _Bad(f"'command' must be a string, one of {known} (got {got})")
    if command in _FILE_COMMANDS and (command not in _COMMANDS or "path" in arguments):
        return call.file_command(command, arguments)
    if command == "view":
        return call.view(arguments)
    if command == "search":
        return call.search(arguments)
    if command == "write":
        return call.write(arguments, must_exist=False)
    if command == "update":
        return call.write(arguments, must_exist=True)
    if command == "delete":
        return call.delete(arguments)
    known = sorted({*_COMMANDS, *_FILE_COMMANDS})
    raise _Bad(f"'command' must be one of {known} (got {command!r})")
