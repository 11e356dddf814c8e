"""The engine's own collaborators: the window builder, the compression guard and its
ladders, the memory consolidator and the budget planner over ``ctxflow.budget`` and
``ctxflow.compression`` (a part of the engine's core)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, TypedDict, cast

from ctxflow.budget import DEFAULT_POLICY, BudgetPolicy, Window, build_window, plan_budget
from ctxflow.compression import CompressionResult, Ladder, fixed_tokens
from ctxflow.errors import BudgetExceeded, PolicyError
from ctxflow.layers import Layer, LayeredState
from ctxflow.memory import Consolidator, MemoryLimits, Retriever
from ctxflow.memory._choosing import memory_query, relevance_chooser
from ctxflow.model import Conversation
from ctxflow.protocols import TokenCounter
from ctxflow.tokens import ModelProfile

if TYPE_CHECKING:
    from ctxflow._critical import CriticalLock
    from ctxflow.engine._charts import Chart, PhaseConfig
    from ctxflow.engine._seams import AllocationLike, WindowBuilder
    from ctxflow.protocols import AsyncSummarizer, Measure, Summarizer, TokenCounter
    from ctxflow.tokens import ModelProfile

__all__ = ["DefaultSeams"]


class _Sizing(TypedDict):
    counter: TokenCounter
    profile: ModelProfile
    budget: int | None
    policy: BudgetPolicy


class DefaultSeams:
    """The window and the engine's default collaborators."""

    # what the core provides
    _async: bool
    lock: CriticalLock
    chart: Chart
    phases: dict[str, PhaseConfig]
    summarizer: Summarizer | AsyncSummarizer | None
    memory_limits: MemoryLimits | None
    retriever: Retriever | None
    _consolidator: Consolidator | None
    counter: TokenCounter
    profile: ModelProfile
    budget: int | None
    measure: Measure
    window_builder: WindowBuilder
    _ladders: dict[str, Ladder]
    _conversation: Conversation
    _state: LayeredState
    _phase: str

    if TYPE_CHECKING:

        def _budget_policy(self, phase: str) -> object: ...

        def _in_phase(self, state: LayeredState, phase: str) -> LayeredState: ...

    def window(self, phase: str | None = None) -> Window:
        """The window for the next model call (within its budget).

        ``phase`` (default: the current one) builds the window a call would get
        in another phase of the chart — its budget policy, allocation and tool
        set — without moving the chart: what a phase would show, for tests,
        tools such as ``ctxflow window``, and comparisons.
        """
        with self.lock:
            state = self._state
            if phase is None:
                phase = self._phase
            elif phase != self._phase:
                if phase not in self.chart.phases:
                    raise PolicyError(
                        f"'phase' must be a phase of chart {self.chart.name!r} "
                        f"({', '.join(self.chart.phases)}) (got {phase!r})",
                        rule="unknown_phase",
                        phase=phase,
                    )
                state = self._in_phase(state, phase)
            return self.window_builder(
                self._conversation, state, phase=phase, policy=self._budget_policy(phase)
            )

    def ladder(self, phase: str) -> Ladder:
        """The compression ladder of ``phase`` (its own policy, or the default one)."""
        ladder = self._ladders.get(phase)
        if ladder is None:
            config = self.phases.get(phase)
            policy = config.compression_policy if config is not None else None
            if isinstance(policy, Ladder):
                ladder = policy
            else:
                ladder = Ladder(policy=policy, summarizer=self.summarizer)
            self._ladders[phase] = ladder
        return ladder

    def _guard(
        self,
        conversation: Conversation,
        state: LayeredState,
        allocation: AllocationLike,
        *,
        phase: str,
        policy: object,
    ) -> CompressionResult | Awaitable[CompressionResult | None] | None:
        flexible = getattr(allocation, "flexible", None)
        if not isinstance(flexible, int) or flexible <= 0:
            return None
        # The flexible budget holds the messages the ladder never compresses (``fixed``: the
        # original request, pinned and system messages) and what long-term memory renders;
        # the ladder's fractions are of what is left for the rest, so it fires before the
        # window's selector would have to leave turns out. When even its hard limit cannot be
        # met that way, the ladder runs against the whole flexible budget, if that needs it at
        # all (and the selector fits the rest), as it would without the room taken first.
        fixed = fixed_tokens(conversation)
        room = max(1, flexible - fixed - _memory_tokens(state, allocation))
        ladder = self.ladder(phase)
        if not ladder.guard(conversation, budget=room, fixed=fixed):
            return None
        turn = state.runtime.step
        if self._async:
            return _arun_with_fallback(ladder, conversation, state, room, flexible, fixed, turn)
        try:
            return ladder.run(conversation, state, budget=room, fixed=fixed, turn=turn)
        except BudgetExceeded:
            if room >= flexible:
                raise
            if not ladder.guard(conversation, budget=flexible, fixed=fixed):
                return None
            return ladder.run(conversation, state, budget=flexible, fixed=fixed, turn=turn)

    def _consolidate(
        self, conversation: Conversation, state: LayeredState
    ) -> LayeredState | Awaitable[LayeredState]:
        """Consolidate the span since the last consolidation (see :mod:`ctxflow.memory`).

        An episode, the facts stated, the procedures learned, all bounded; in a
        final state, the session's episode over the whole conversation.
        """
        consolidator = self._consolidator
        if consolidator is None:
            consolidator = self._consolidator = Consolidator(
                counter=self.counter, summarizer=self.summarizer, limits=self.memory_limits
            )
        final = state.runtime.phase in self.chart.finals
        return consolidator(conversation, state, final=final)

    def _plan_budget(self, state: LayeredState, *, phase: str, policy: object) -> AllocationLike:
        return plan_budget(state, phase=phase, **self._sizing(policy))

    def _build_window(
        self, conversation: Conversation, state: LayeredState, *, phase: str, policy: object
    ) -> Window:
        memory = state.memory
        choose = None
        if memory.episodic or memory.semantic or memory.procedural:
            choose = relevance_chooser(
                memory_query(state, conversation),
                stable_query=memory_query(state, conversation, latest=False),
                retriever=self.retriever,
            )
        return build_window(
            state,
            conversation,
            phase=phase,
            measure=self.measure,
            choose_memory=choose,
            **self._sizing(policy),
        )

    def _sizing(self, policy: object) -> _Sizing:
        """The counter, model, budget and budget policy every allocation and window uses."""
        return {
            "counter": self.counter,
            "profile": self.profile,
            "budget": self.budget,
            "policy": cast(BudgetPolicy, DEFAULT_POLICY if policy is None else policy),
        }


def _memory_tokens(state: LayeredState, allocation: AllocationLike) -> int:
    """The tokens long-term memory renders at most: its items' cached counts, capped."""
    memory = state.memory
    total = sum(e.tokens for e in memory.episodic)
    total += sum(f.tokens for f in memory.semantic) + sum(p.tokens for p in memory.procedural)
    layers = getattr(allocation, "layers", None)
    cap = layers.get(Layer.MEMORY) if isinstance(layers, Mapping) else None
    return min(total, cap) if isinstance(cap, int) else total


async def _arun_with_fallback(
    ladder: Ladder,
    conversation: Conversation,
    state: LayeredState,
    room: int,
    flexible: int,
    fixed: int,
    turn: int,
) -> CompressionResult | None:
    """The async guard's run (see ``DefaultSeams._guard``)."""
    try:
        return await ladder.arun(conversation, state, budget=room, fixed=fixed, turn=turn)
    except BudgetExceeded:
        if room >= flexible:
            raise
        if not ladder.guard(conversation, budget=flexible, fixed=fixed):
            return None
        return await ladder.arun(conversation, state, budget=flexible, fixed=fixed, turn=turn)
