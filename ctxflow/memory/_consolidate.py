"""Consolidation: what a span of the conversation leaves in long-term memory, kept bounded.

The engine consolidates on entering a phase whose chart action asks for it
(``consolidate_memory``: the default chart's ``reflection`` and ``done``).
One consolidation, over the messages since the previous one:

1. **an episode** — the span summarised (what was tried, what came back, what
   was decided) by the offline extractive summarizer, or by the configured
   summarizer (an LLM one, sync or async); its span is the first and last
   message id it covers. Entering a final state writes the session's episode
   over the whole conversation instead;
2. **facts** — the decisions, constraints and details stated in the span's
   text (:func:`ctxflow.compression.extract_facts`), superseding earlier ones
   by key;
3. **procedures** — tool-call sequences that ended in a success signal and
   were seen at least twice (:func:`learn_procedures`), kept with the ids of
   their evidence, merged by name;
4. **bounds** (:func:`bound`) — facts with the same value under another key
   merge into the newest, and each tier keeps at most its limit: the least
   important, then the oldest items retire (the oldest two episodes merge
   into one). Each new item's token count is measured once and kept with it.

Pure: every step returns a new state and leaves the conversation alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

from ctxflow._checks import number_field
from ctxflow.compression import ExtractiveSummarizer, extract_facts
from ctxflow.layers import Episode, Fact, LayeredState, MemoryLayer, Procedure, memory_line
from ctxflow.memory._procedures import ProcedureLearner, learn_procedures
from ctxflow.model import Conversation, Message, Role
from ctxflow.protocols import AsyncSummarizer, Summarizer, TokenCounter

__all__ = [
    "CONSOLIDATION_PREFIX",
    "SESSION_EPISODE",
    "Consolidator",
    "MemoryLimits",
    "bound",
    "with_counts",
]

#: Consolidation episodes' ids start with this, then the step (``episode-12``).
CONSOLIDATION_PREFIX = "episode-"
#: The id of the episode a final state writes over the whole session.
SESSION_EPISODE = "session"


@attrs.frozen(kw_only=True)
class MemoryLimits:
    """How large long-term memory may grow, per tier, and how long one episode may be."""

    facts: int = attrs.field(default=200, validator=number_field("positive integer"))
    episodes: int = attrs.field(default=32, validator=number_field("positive integer"))
    procedures: int = attrs.field(default=32, validator=number_field("positive integer"))
    episode_tokens: int = attrs.field(default=240, validator=number_field("positive integer"))


def with_counts(memory: MemoryLayer, counter: TokenCounter) -> MemoryLayer:
    """``memory`` with every item's token count measured (items already counted are kept)."""

    def counted(items: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            item if item.tokens else attrs.evolve(item, tokens=counter.count(memory_line(item)) + 1)
            for item in items
        )

    return MemoryLayer(
        episodic=counted(memory.episodic),
        semantic=counted(memory.semantic),
        procedural=counted(memory.procedural),
        settled=memory.settled,
    )


def bound(memory: MemoryLayer, limits: MemoryLimits) -> MemoryLayer:
    """Merge duplicate facts and retire the least valuable items beyond ``limits``."""
    return MemoryLayer(
        episodic=_bound_episodes(memory.episodic, limits.episodes),
        semantic=_bound_facts(memory.semantic, limits.facts),
        procedural=_keep_best(memory.procedural, limits.procedures),
        settled=memory.settled,
    )


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def _bound_facts(facts: Sequence[Fact], limit: int) -> tuple[Fact, ...]:
    """The newest fact per value (a restated fact under another key merges into it), bounded."""
    newest: dict[str, int] = {}
    for at, fact in enumerate(facts):
        newest[_normal(fact.value)] = at
    unique = [fact for at, fact in enumerate(facts) if newest[_normal(fact.value)] == at]
    return _keep_best(unique, limit)


def _keep_best(items: Sequence[Any], limit: int) -> tuple[Any, ...]:
    """At most ``limit`` items: the least important, then the oldest, retire; order kept."""
    if len(items) <= limit:
        return tuple(items)
    ranked = sorted(range(len(items)), key=lambda k: (items[k].importance, items[k].step, k))
    retired = set(ranked[: len(items) - limit])
    return tuple(item for k, item in enumerate(items) if k not in retired)


def _bound_episodes(episodes: Sequence[Episode], limit: int) -> tuple[Episode, ...]:
    """At most ``limit`` episodes: the oldest two merge into one until they fit."""
    kept = list(episodes)
    while len(kept) > limit and len(kept) >= 2:
        first, second = kept[0], kept[1]
        summary = f"{first.summary} Then: {second.summary}"
        if len(summary) > 2_000:
            summary = summary[:1_000] + " [...] " + summary[-990:]
        span = (first.span[:1] + second.span[-1:]) if first.span or second.span else ()
        merged = Episode(
            id=first.id,
            summary=summary,
            span=span,
            step=second.step,
            importance=max(first.importance, second.importance),
        )
        kept[:2] = [merged]
    return tuple(kept)


Learn = Callable[[Sequence[Message], int], Sequence[Procedure]]


def _default_learn(messages: Sequence[Message], step: int) -> Sequence[Procedure]:
    """Stands for "a :class:`ProcedureLearner` of the consolidator's own"."""
    return learn_procedures(messages, step=step)


class Consolidator:
    """The engine's default memory consolidator (see the module docstring).

    ``summarizer`` writes the episodes (None: the offline extractive one); an
    async summarizer makes the consolidator return an awaitable, which the
    async engine awaits. ``learn`` finds procedures (None: none are learned).
    """

    def __init__(
        self,
        *,
        counter: TokenCounter,
        summarizer: Summarizer | AsyncSummarizer | None = None,
        limits: MemoryLimits | None = None,
        learn: Learn | None = _default_learn,
    ) -> None:
        self.counter = counter
        self.summarizer = summarizer if summarizer is not None else ExtractiveSummarizer()
        self.limits = limits if limits is not None else MemoryLimits()
        if learn is _default_learn:  # one learner per consolidator: it reads the log once
            learn = ProcedureLearner()
        self.learn = learn

    def __call__(
        self, conversation: Conversation, state: LayeredState, *, final: bool = False
    ) -> LayeredState | Awaitable[LayeredState]:
        """The state with the span since the last consolidation consolidated."""
        view = conversation.effective()
        span = view if final else _since_last(view, state.memory.episodic)
        step = state.runtime.step
        if not any(m.role is Role.ASSISTANT for m in span):
            return self._finish(conversation, state, None, span, step)
        budget = self.limits.episode_tokens
        summary = self.summarizer.summarize(span, max_tokens=budget)
        if inspect.isawaitable(summary):
            return self._finish_async(conversation, state, summary, span, step, final)
        return self._finish(
            conversation, state, self._episode(summary, span, step, final), span, step
        )

    async def _finish_async(
        self,
        conversation: Conversation,
        state: LayeredState,
        summary: Awaitable[str],
        span: Sequence[Message],
        step: int,
        final: bool,
    ) -> LayeredState:
        episode = self._episode(await summary, span, step, final)
        return self._finish(conversation, state, episode, span, step)

    def _episode(
        self, summary: object, span: Sequence[Message], step: int, final: bool
    ) -> Episode | None:
        text = summary.strip() if isinstance(summary, str) else ""
        if not text:
            return None
        return Episode(
            id=SESSION_EPISODE if final else f"{CONSOLIDATION_PREFIX}{step}",
            summary=text,
            span=(span[0].id, span[-1].id),
            step=step,
            importance=0.7 if final else 0.5,
        )

    def _finish(
        self,
        conversation: Conversation,
        state: LayeredState,
        episode: Episode | None,
        span: Sequence[Message],
        step: int,
    ) -> LayeredState:
        memory = state.memory
        episodes = memory.episodic
        if episode is not None and episode.id == SESSION_EPISODE:
            episodes = (*(e for e in episodes if e.id != SESSION_EPISODE), episode)
        elif episode is not None:
            taken = {e.id for e in episodes}
            name, n = episode.id, 1
            while name in taken:  # a second consolidation in one step
                n += 1
                name = f"{episode.id}-{n}"
            episodes = (*episodes, attrs.evolve(episode, id=name))
        facts = [attrs.evolve(f, step=step) for f in extract_facts(span)]
        semantic = _merge_facts(memory.semantic, facts)
        procedural = memory.procedural
        if self.learn is not None:
            procedural = _merge_procedures(procedural, self.learn(conversation.history, step))
        merged = MemoryLayer(
            episodic=episodes, semantic=semantic, procedural=procedural, settled=memory.settled
        )
        memory = with_counts(bound(merged, self.limits), self.counter)
        return attrs.evolve(state, memory=memory)


def _since_last(view: Sequence[Message], episodes: Sequence[Episode]) -> Sequence[Message]:
    """The messages after the last consolidation episode's span (all of them when none)."""
    last = next(
        (
            e
            for e in reversed(episodes)
            if e.span and (e.id.startswith(CONSOLIDATION_PREFIX) or e.id == SESSION_EPISODE)
        ),
        None,
    )
    if last is None:
        return view
    end = last.span[-1]
    for at in range(len(view) - 1, -1, -1):
        if view[at].id == end:
            return view[at + 1 :]
    return view


def _merge_facts(old: Sequence[Fact], new: Sequence[Fact]) -> tuple[Fact, ...]:
    """``old`` with ``new`` superseding by key (as :meth:`LayeredState.with_facts`)."""
    if not new:
        return tuple(old)
    last = {fact.key: at for at, fact in enumerate(new)}
    kept = [f for f in old if f.key not in last]
    kept += [fact for at, fact in enumerate(new) if last[fact.key] == at]
    return tuple(kept)


def _merge_procedures(
    old: Sequence[Procedure], learned: Sequence[Procedure]
) -> tuple[Procedure, ...]:
    """Learned procedures replace those of their name that were learned too; given ones stay."""
    by_name = {p.name: p for p in old}
    for procedure in learned:
        known = by_name.get(procedure.name)
        if known is not None and known.evidence == () and known.seen == 0:
            continue  # given by the user: what was learned does not overwrite it
        if known is not None and known.seen >= procedure.seen and known.evidence:
            continue
        by_name[procedure.name] = procedure
    return tuple(by_name.values())
