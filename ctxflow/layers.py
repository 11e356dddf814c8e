"""The layered state: what an agent's context is made of, layer by layer.

====  ===========  ==========================================================
L0    system       the system prompt and the tool definitions
L1    task         the task statement and pinned items
L2    runtime      phase, step, the tools projected for the phase, permissions
L3    memory       short-term (the recent message stream, kept in the
                   Conversation), episodic, semantic and procedural tiers
L4    evidence     tool-result content in the stream, retrieved documents
L5    work         scratchpad and intermediate results
====  ===========  ==========================================================

Every value here is frozen; a change makes a new state (``attrs.evolve`` or
the ``with_*`` helpers), which is what lets a checkpoint capture the state by
reference and a failed transition leave it untouched. ``to_plain`` and
``from_plain`` give the plain-data form checkpoints store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

import attrs

from ctxflow._kept import KeptWhileAlive
from ctxflow._plain import Sealed
from ctxflow.errors import FormatError

__all__ = [
    "SCOPES",
    "Document",
    "Episode",
    "EvidenceLayer",
    "Fact",
    "Layer",
    "LayeredState",
    "MemoryLayer",
    "Procedure",
    "RuntimeLayer",
    "SystemLayer",
    "TaskLayer",
    "Tier",
    "ToolDef",
    "WorkBuffer",
    "memory_digest",
    "memory_line",
]


class Layer(StrEnum):
    """The six layers, in the order a window renders them."""

    SYSTEM = "system"
    TASK = "task"
    RUNTIME = "runtime"
    MEMORY = "memory"
    EVIDENCE = "evidence"
    WORK = "work"


class Tier(StrEnum):
    """The four tiers of the memory layer."""

    SHORT_TERM = "short_term"
    EPISODIC = "episodic"
    SEMANTIC = "semantic"
    PROCEDURAL = "procedural"


def _dict(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value) if value else {}


@attrs.frozen(kw_only=True)
class ToolDef:
    """A tool the model may call: name, description and JSON-schema input."""

    name: str
    description: str = ""
    input_schema: Mapping[str, Any] = attrs.field(
        factory=lambda: {"type": "object", "properties": {}}, converter=_dict
    )


@attrs.frozen(kw_only=True)
class SystemLayer:
    """L0: the system prompt and every tool definition the agent has."""

    prompt: str = ""
    tools: tuple[ToolDef, ...] = ()


@attrs.frozen(kw_only=True)
class TaskLayer:
    """L1: the task statement and items pinned into every window."""

    statement: str = ""
    pinned: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class RuntimeLayer:
    """L2: where the agent loop is: phase, step, projected tools, permissions."""

    phase: str = "idle"
    step: int = 0
    tools: tuple[str, ...] | None = None  # None: every tool of L0
    permissions: tuple[str, ...] = ()


#: Where a memory item lives: this session only, or shared by a user's or a project's sessions.
SCOPES = ("session", "user", "project")


def _scope(value: object) -> str:
    if value not in SCOPES:
        raise FormatError(
            f"a memory item's scope must be one of {list(SCOPES)} (got {value!r})",
            rule="memory_scope",
        )
    return str(value)


def _ids(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _importance(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise FormatError(
            f"a memory item's importance must be a number in [0, 1] (got {value!r})",
            rule="memory_importance",
        )
    return float(value)


@attrs.frozen(kw_only=True, cache_hash=True)
class Episode:
    """An episodic memory: a summary and the span of message ids it covers.

    ``step`` is the runtime step it was written at (recency); ``tokens`` its
    rendered line's count, cached when it was written (0: not counted yet).
    """

    id: str
    summary: str
    span: tuple[str, ...] = attrs.field(default=(), converter=_ids)
    step: int = 0
    importance: float = attrs.field(default=0.5, converter=_importance)
    tokens: int = 0


@attrs.frozen(kw_only=True, cache_hash=True)
class Fact:
    """A semantic memory: a keyed fact and the message it came from.

    ``scope`` says whether it outlives the session (``"user"``,
    ``"project"``: kept in the shared memory store). ``step``, ``importance``
    and ``tokens`` rank and size it (see :class:`Episode`).
    """

    key: str
    value: str
    source: str | None = None
    scope: str = attrs.field(default="session", converter=_scope)
    step: int = 0
    importance: float = attrs.field(default=0.5, converter=_importance)
    tokens: int = 0


@attrs.frozen(kw_only=True, cache_hash=True)
class Procedure:
    """A procedural memory: how to do something, learned along the way or given.

    ``evidence`` holds the ids of the messages it was learned from and
    ``seen`` how many times the sequence succeeded.
    """

    name: str
    steps: str
    source: str | None = None
    evidence: tuple[str, ...] = attrs.field(default=(), converter=_ids)
    seen: int = 0
    scope: str = attrs.field(default="session", converter=_scope)
    step: int = 0
    importance: float = attrs.field(default=0.5, converter=_importance)
    tokens: int = 0


def memory_digest(item: Episode | Fact | Procedure) -> str:
    """A short digest of a memory item's rendered line (what ``MemoryLayer.settled`` holds).

    Kept with the item (items are frozen): every window asks for every item's digest.
    """
    return _DIGESTS(item)


def _digest(item: Episode | Fact | Procedure) -> str:
    return hashlib.blake2b(memory_line(item).encode(), digest_size=8).hexdigest()


# Every window asks for each item's digest until the item is retired.
_DIGESTS: KeptWhileAlive[str] = KeptWhileAlive(_digest)


def memory_line(item: Episode | Fact | Procedure) -> str:
    """The text a memory item renders as in the window's memory sections."""
    if isinstance(item, Episode):
        return f"- [{item.id}] {item.summary}"
    if isinstance(item, Fact):
        return f"- {item.key}: {item.value}"
    return f"### {item.name}\n{item.steps}"


@attrs.frozen(kw_only=True)
class MemoryLayer:
    """L3's stored tiers (the short-term tier is the conversation itself).

    ``settled`` holds the digests (:func:`memory_digest`) of the items as
    they were when memory was last settled (at a compression, where the
    prompt-cache prefix breaks anyway): those render in front of the
    messages (the system text, cached with them); items written or changed
    since render after them (the late context) until the next settle.
    """

    episodic: tuple[Episode, ...] = ()
    semantic: tuple[Fact, ...] = ()
    procedural: tuple[Procedure, ...] = ()
    settled: tuple[str, ...] = attrs.field(default=(), converter=_ids)

    def settle(self) -> MemoryLayer:
        """This memory with every item settled (see the class docstring)."""
        items: list[Episode | Fact | Procedure] = [*self.episodic, *self.semantic]
        items += self.procedural
        return attrs.evolve(self, settled=tuple(sorted({memory_digest(i) for i in items})))

    def fact(self, key: str) -> Fact | None:
        """The latest fact stored under ``key``."""
        for fact in reversed(self.semantic):
            if fact.key == key:
                return fact
        return None


_NO_MEMORY = MemoryLayer()


def _item_plain(item: Episode | Fact | Procedure) -> Sealed:
    """A memory item as a sealed plain mapping, the same object while the item lives."""
    return _PLAINS(item)


def _plain_of(item: Episode | Fact | Procedure) -> Sealed:
    return Sealed({f.name: getattr(item, f.name) for f in attrs.fields(type(item))})


_PLAINS: KeptWhileAlive[Sealed] = KeptWhileAlive(_plain_of)


@attrs.frozen(kw_only=True)
class Document:
    """A retrieved document offered to the model as evidence."""

    id: str
    text: str
    title: str = ""
    source: str | None = None


@attrs.frozen(kw_only=True)
class EvidenceLayer:
    """L4's documents (tool-result content lives in the conversation)."""

    documents: tuple[Document, ...] = ()


@attrs.frozen(kw_only=True)
class WorkBuffer:
    """L5: the agent's plan, its scratchpad and named intermediate results."""

    scratchpad: str = ""
    results: Mapping[str, str] = attrs.field(factory=dict, converter=_dict)
    plan: str = ""


@attrs.frozen(kw_only=True)
class LayeredState:
    """The whole layered state of one agent context."""

    system: SystemLayer = SystemLayer()
    task: TaskLayer = TaskLayer()
    runtime: RuntimeLayer = RuntimeLayer()
    memory: MemoryLayer = MemoryLayer()
    evidence: EvidenceLayer = EvidenceLayer()
    work: WorkBuffer = WorkBuffer()

    # -- convenience updates (each returns a new state) ----------------------

    def with_fact(self, key: str, value: str, source: str | None = None) -> LayeredState:
        """Add a semantic fact (a later fact with the same key supersedes it)."""
        kept = tuple(f for f in self.memory.semantic if f.key != key)
        fact = Fact(key=key, value=value, source=source)
        return attrs.evolve(self, memory=attrs.evolve(self.memory, semantic=(*kept, fact)))

    def with_facts(self, facts: Iterable[Fact]) -> LayeredState:
        """Add many semantic facts at once, as ``with_fact`` would one by one.

        A fact supersedes an earlier one with its key, among the new ones too;
        the survivors keep the order of their last addition.
        """
        incoming = list(facts)
        if not incoming:
            return self
        for at, fact in enumerate(incoming):
            if not isinstance(fact, Fact):
                raise FormatError(
                    f"facts[{at}] must be a Fact (got {type(fact).__name__})", rule="not_a_fact"
                )
        last = {fact.key: at for at, fact in enumerate(incoming)}
        kept = [f for f in self.memory.semantic if f.key not in last]
        kept += [fact for at, fact in enumerate(incoming) if last[fact.key] == at]
        return attrs.evolve(self, memory=attrs.evolve(self.memory, semantic=tuple(kept)))

    def with_episode(self, episode: Episode) -> LayeredState:
        """Add an episodic memory."""
        memory = attrs.evolve(self.memory, episodic=(*self.memory.episodic, episode))
        return attrs.evolve(self, memory=memory)

    def with_procedure(self, procedure: Procedure) -> LayeredState:
        """Add (or replace by name) a procedural memory."""
        kept = tuple(p for p in self.memory.procedural if p.name != procedure.name)
        memory = attrs.evolve(self.memory, procedural=(*kept, procedure))
        return attrs.evolve(self, memory=memory)

    def with_runtime(self, **changes: Any) -> LayeredState:
        """Change runtime fields (phase, step, tools, permissions)."""
        return attrs.evolve(self, runtime=attrs.evolve(self.runtime, **changes))

    def with_plan(self, plan: str) -> LayeredState:
        """The state with the agent's plan (in the work buffer) replaced by ``plan``."""
        if not isinstance(plan, str):
            raise FormatError(f"a plan must be a string (got {type(plan).__name__})", rule="plan")
        return attrs.evolve(self, work=attrs.evolve(self.work, plan=plan))

    def projected_tools(self) -> tuple[ToolDef, ...]:
        """The tool definitions the current phase may use, in L0's order."""
        allowed = self.runtime.tools
        if allowed is None:
            return self.system.tools
        names = set(allowed)
        return tuple(t for t in self.system.tools if t.name in names)

    # -- plain data for checkpoints -----------------------------------------

    def to_plain(self) -> dict[str, Any]:
        """The state as plain dicts, lists and scalars (msgpack- and JSON-safe).

        A memory item's plain form is a :class:`~ctxflow._plain.Sealed` mapping
        (its sequences are tuples), the same object for the same item each
        time: a checkpoint writer digests an unchanged item once.
        """
        memory = self.memory
        plain = attrs.asdict(attrs.evolve(self, memory=_NO_MEMORY))
        plain["memory"] = {
            "episodic": [_item_plain(item) for item in memory.episodic],
            "semantic": [_item_plain(item) for item in memory.semantic],
            "procedural": [_item_plain(item) for item in memory.procedural],
            "settled": list(memory.settled),
        }
        return plain

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> LayeredState:
        """Rebuild a state from :meth:`to_plain`'s output."""
        try:
            system = data.get("system", {})
            memory = data.get("memory", {})
            runtime = dict(data.get("runtime", {}))
            if runtime.get("tools") is not None:
                runtime["tools"] = tuple(runtime["tools"])
            runtime["permissions"] = tuple(runtime.get("permissions", ()))
            return cls(
                system=SystemLayer(
                    prompt=system.get("prompt", ""),
                    tools=tuple(ToolDef(**t) for t in system.get("tools", ())),
                ),
                task=TaskLayer(
                    statement=data.get("task", {}).get("statement", ""),
                    pinned=tuple(data.get("task", {}).get("pinned", ())),
                ),
                runtime=RuntimeLayer(**runtime),
                memory=MemoryLayer(
                    episodic=tuple(Episode(**e) for e in memory.get("episodic", ())),
                    semantic=tuple(Fact(**f) for f in memory.get("semantic", ())),
                    procedural=tuple(Procedure(**p) for p in memory.get("procedural", ())),
                    settled=tuple(memory.get("settled", ())),
                ),
                evidence=EvidenceLayer(
                    documents=tuple(
                        Document(**d) for d in data.get("evidence", {}).get("documents", ())
                    )
                ),
                work=WorkBuffer(**data.get("work", {})),
            )
        except (TypeError, KeyError, AttributeError) as exc:
            raise FormatError(
                f"layered state data is malformed: {exc}", rule="layers_plain"
            ) from None
