"""Keeping a session's user- and project-scoped memory in the shared memory store.

An engine given ``shared_memory`` and ``owners`` (a user, a project, or both)
starts with what earlier sessions of those owners learned: their facts and
procedures merge into its layered state, scoped as the owner's kind. After
every change of the state, the items scoped ``"user"`` or ``"project"`` that
changed since the last push are merged into the store, and those removed from
the state are deleted from it; session-scoped items never leave the session.
Erasing an owner (``shared_memory.erase(owner)``) removes what later sessions
start with.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ctxflow.errors import PolicyError
from ctxflow.layers import Fact, LayeredState, Procedure
from ctxflow.memory._shared import Owner, SharedMemory

__all__ = ["SharedSync"]

_Key = tuple[str, str]  # (kind of item, key or name)


class SharedSync:
    """One engine's link to the shared memory store, for its owners (at most one per kind)."""

    def __init__(self, shared: SharedMemory, owners: Sequence[Owner]) -> None:
        if not isinstance(shared, SharedMemory):
            raise PolicyError(
                f"'shared_memory' must be a SharedMemory (got {type(shared).__name__})",
                rule="shared_memory",
            )
        by_kind: dict[str, Owner] = {}
        for owner in owners:
            if not isinstance(owner, Owner):
                raise PolicyError(
                    f"'owners' must hold Owner values (got {type(owner).__name__})",
                    rule="shared_memory",
                )
            if owner.kind in by_kind:
                raise PolicyError(
                    f"'owners' may hold one {owner.kind} (got {by_kind[owner.kind]} and {owner})",
                    rule="shared_memory",
                )
            by_kind[owner.kind] = owner
        if not by_kind:
            raise PolicyError("'shared_memory' needs at least one owner", rule="shared_memory")
        self.shared = shared
        self.owners = by_kind
        self._pushed: dict[_Key, Fact | Procedure] = {}

    def load_into(self, state: LayeredState) -> LayeredState:
        """``state`` with its owners' shared facts and procedures merged in (theirs win)."""
        memory = state.memory
        facts = {f.key: f for f in memory.semantic}
        procedures = {p.name: p for p in memory.procedural}
        for kind, owner in self.owners.items():
            items = self.shared.load(owner)
            for fact in items.facts:
                facts.pop(fact.key, None)
                facts[fact.key] = attrs.evolve(fact, scope=kind)
            for procedure in items.procedures:
                procedures.pop(procedure.name, None)
                procedures[procedure.name] = attrs.evolve(procedure, scope=kind)
        memory = attrs.evolve(
            memory, semantic=tuple(facts.values()), procedural=tuple(procedures.values())
        ).settle()
        state = attrs.evolve(state, memory=memory)
        self._pushed = dict(self._scoped(state))
        return state

    def push(self, state: LayeredState) -> None:
        """Merge the scoped items that changed since the last push; delete those removed."""
        now = dict(self._scoped(state))
        if now == self._pushed:
            return
        for kind, owner in self.owners.items():
            changed = [
                item
                for key, item in now.items()
                if item.scope == kind and self._pushed.get(key) != item
            ]
            gone = [
                key
                for key, item in self._pushed.items()
                if item.scope == kind and (key not in now or now[key].scope != kind)
            ]
            facts = [i for i in changed if isinstance(i, Fact)]
            procedures = [i for i in changed if isinstance(i, Procedure)]
            if facts or procedures:
                self.shared.merge(owner, facts=facts, procedures=procedures)
            if gone:
                self.shared.delete(
                    owner,
                    facts=[k for t, k in gone if t == "fact"],
                    procedures=[k for t, k in gone if t == "procedure"],
                )
        self._pushed = now

    def _scoped(self, state: LayeredState) -> list[tuple[_Key, Fact | Procedure]]:
        """The state's items whose scope has an owner here."""
        memory = state.memory
        out: list[tuple[_Key, Fact | Procedure]] = [
            (("fact", f.key), f) for f in memory.semantic if f.scope in self.owners
        ]
        out += [(("procedure", p.name), p) for p in memory.procedural if p.scope in self.owners]
        return out
