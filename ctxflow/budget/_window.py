"""The Window: what one model call is sent, built within its budget.

:func:`build_window` runs the budget contract end to end: measure the fixed
costs, set the headroom aside, allocate the flexible budget for the phase and
the model, render the stored layers into the system text (see
:mod:`ctxflow.budget._render`), and select messages from the conversation's
effective view (see :mod:`ctxflow.budget._selection`).

Counting: a window's tokens are ``count(system) + count(tools JSON) + sum of
measure(message)``. Messages are counted by the conversation's cached counts,
so build the conversation with the measure the builder uses —
``window_measure(counter, overhead=profile.per_message_overhead)`` (the
default), or pass ``measure=`` explicitly. A conversation counted with
another measure (one without a key, e.g. the default chars/4 estimate, or one
with another key) is recounted with the builder's measure — a copy kept per
conversation and brought up to date incrementally — never trusted, since its
counts would overrun the budget.

What each layer decides in the messages: the work allocation (less the
rendered plan) is the latest tool rounds shown whole; the evidence allocation
(less the rendered documents) the older rounds shown condensed; the memory
allocation is the rest of the history, older rounds masked (see
:mod:`ctxflow.budget._selection`).

Lending: a layer that cannot use its allocation lends it on. Everything the
rendered context blocks do not use flows to the message stream (the message
budget is what is left after the system text and tools are counted); the
stream's leftover goes to the phase's uses in order (``BudgetPolicy.lending``:
execution shows more rounds whole, planning and reflection condense more of
the older ones first); and when the whole stream needs less than the
short-term, evidence and work allocations, the surplus is lent to the first
late-context section that had to drop content, in the order work,
documents, runtime (never to memory, which renders in the system text and
must stay the same from step to step).

Tools: the window carries ``state.projected_tools()``; when the phase
projects no tools but the history holds tool blocks, it carries every L0 tool
(Anthropic rejects tool blocks without tool definitions).

Building never changes the state or the conversation; the same inputs give the
same window.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping

import attrs

from ctxflow.budget._allocation import (
    DEFAULT_POLICY,
    Allocation,
    FixedCosts,
    plan_budget,
    tools_json,
)
from ctxflow.budget._policy import BudgetPolicy
from ctxflow.budget._render import ChooseMemory, render_context
from ctxflow.budget._scoring import DEFAULT_WEIGHTS, ScoreWeights
from ctxflow.budget._selection import Exclusion, _index, _select
from ctxflow.errors import BudgetExceeded
from ctxflow.layers import Layer, LayeredState, Tier, ToolDef
from ctxflow.model import Conversation, Message
from ctxflow.protocols import Measure, TokenCounter
from ctxflow.tokens import ModelProfile, message_measure

__all__ = ["LayerUsage", "Window", "WindowReport", "build_window", "window_measure"]


#: Late-context sections a surplus is lent to, in order. Memory is not: it renders in the
#: system text, which must stay the same from step to step for the prompt cache.
_SECTIONS_LEND_ORDER = ("work", "documents", "runtime")


@attrs.frozen(kw_only=True)
class LayerUsage:
    """Tokens a layer (or tier) was allocated and how many it used."""

    allocated: int
    used: int


@attrs.frozen(kw_only=True)
class WindowReport:
    """How a window's budget was spent and what was left out."""

    allocation: Allocation
    layers: Mapping[str, LayerUsage]
    tiers: Mapping[str, LayerUsage]
    message_budget: int
    excluded: Mapping[str, Exclusion]
    dropped_blocks: Mapping[str, int]
    #: per memory tier chosen by relevance, why each kept item was chosen
    memory_chosen: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    #: the order the window lent leftover message budget in (``BudgetPolicy.lending``)
    lending: tuple[str, ...] = ()

    @property
    def flexible_used(self) -> int:
        """Tokens used beyond the fixed costs."""
        return sum(u.used for u in self.layers.values())


def _all_names(window: Window) -> tuple[str, ...]:
    return tuple(t.name for t in window.tools)


@attrs.frozen(kw_only=True)
class Window:
    """One model call's context: tools, system text, messages, late context, and their count.

    ``context`` is rendered after the messages (see the module's layout);
    ``allowed_tools`` names the tools the phase may call (default: all carried).
    """

    system: str
    tools: tuple[ToolDef, ...]
    messages: tuple[Message, ...]
    input_budget: int
    tokens: int
    report: WindowReport = attrs.field(repr=False, eq=False)
    context: str = ""
    allowed_tools: tuple[str, ...] = attrs.field(default=attrs.Factory(_all_names, takes_self=True))


#: Texts a window builder's counter remembers (least recently used first out), and
#: the characters they may hold in all (a long session's system texts are long).
COUNT_CACHE = 2048
COUNT_CACHE_CHARS = 1 << 20
#: A text longer than this missing from the cache is counted line by line through it
#: when the counter can cut it where counts add up (``TiktokenCounter.line_cuts``).
LINES_FROM = 2048


class _CachedCounter:
    """Counts through a small LRU cache: system prompts and tool JSON repeat on every
    build, while a step's own texts come and go (they push out the oldest entries, never
    the whole cache).

    A long text that changes a line at a time (the system text, whose settled
    memory changes by an item) is counted line by line through the cache when
    the counter allows it, so a change costs the lines it changed.
    """

    def __init__(self, inner: TokenCounter) -> None:
        self.inner = inner
        self.cache: OrderedDict[str, int] = OrderedDict()
        self.chars = 0
        #: Late-context sizes by (measure, text): the same context repeats until a step.
        self.late: dict[tuple[Measure, str], int] = {}
        cuts = getattr(inner, "line_cuts", None)
        self.line_cuts: Callable[[str], list[str]] | None = cuts if callable(cuts) else None

    @property
    def name(self) -> str:
        return self.inner.name

    def count(self, text: str) -> int:
        cache = self.cache
        hit = cache.get(text)
        if hit is None:
            if self.line_cuts is not None and len(text) > LINES_FROM:
                cuts = self.line_cuts(text)
                hit = (
                    sum(self.count(cut) for cut in cuts)
                    if len(cuts) > 1
                    else self.inner.count(text)
                )
            else:
                hit = self.inner.count(text)
            if len(text) > COUNT_CACHE_CHARS // 4:
                return hit  # too long to keep
            self.chars += len(text)
            while cache and (len(cache) >= COUNT_CACHE or self.chars > COUNT_CACHE_CHARS):
                self.chars -= len(cache.popitem(last=False)[0])
            cache[text] = hit
        else:
            cache.move_to_end(text)
        return hit


_COUNTERS: weakref.WeakKeyDictionary[TokenCounter, _CachedCounter] = weakref.WeakKeyDictionary()
_MEASURES: weakref.WeakKeyDictionary[TokenCounter, dict[int, Measure]] = weakref.WeakKeyDictionary()


def _cached(counter: TokenCounter) -> TokenCounter:
    try:
        found = _COUNTERS.get(counter)
        if found is None:
            found = _CachedCounter(counter)
            _COUNTERS[counter] = found
        return found
    except TypeError:  # neither hashable nor weak-referenceable
        return counter


def window_measure(counter: TokenCounter, *, overhead: int = 4) -> Measure:
    """The message measure :func:`build_window` uses by default (one per counter and overhead).

    Build the conversation with it (``Conversation(measure=window_measure(c))``)
    so its cached counts are the counts the window is checked against.
    """
    try:
        per = _MEASURES.setdefault(counter, {})
    except TypeError:
        return message_measure(counter, overhead=overhead)
    if overhead not in per:
        per[overhead] = message_measure(counter, overhead=overhead)
    return per[overhead]


_last_tools: list[tuple[tuple[ToolDef, ...], str]] = []


#: Recounted copies of conversations counted with another measure than the builder's.
_RECOUNTED: weakref.WeakKeyDictionary[Conversation, tuple[Measure, int, int, Conversation]] = (
    weakref.WeakKeyDictionary()
)


def _counted_with(conversation: Conversation, measure: Measure) -> Conversation:
    """``conversation`` when it counts with ``measure``'s key; else a recounted copy of it."""
    key = getattr(measure, "key", None)
    if not isinstance(key, str) or conversation.measure_key == key:
        return conversation
    kept = _RECOUNTED.get(conversation)
    if kept is not None and kept[0] is measure and kept[2] == conversation.epoch:
        _, length, _, copy = kept
        if len(conversation) > length:
            copy.extend(conversation.since(length))
    else:
        copy = Conversation(conversation.messages, measure=measure)
        if conversation.overlays:
            copy.set_overlays(conversation.overlays)
    _RECOUNTED[conversation] = (measure, len(conversation), conversation.epoch, copy)
    return copy


def _tools_text(tools: tuple[ToolDef, ...]) -> str:
    # The same tuple comes back on every build of a phase: skip re-encoding it.
    if _last_tools and _last_tools[0][0] is tools:
        return _last_tools[0][1]
    text = tools_json(tools)
    _last_tools[:] = [(tools, text)]
    return text


def build_window(
    state: LayeredState,
    conversation: Conversation,
    *,
    phase: str,
    counter: TokenCounter,
    profile: ModelProfile | None = None,
    budget: int | None = None,
    policy: BudgetPolicy = DEFAULT_POLICY,
    measure: Measure | None = None,
    weights: ScoreWeights = DEFAULT_WEIGHTS,
    choose_memory: ChooseMemory | None = None,
) -> Window:
    """Build the window for one call in ``phase``, within ``budget`` or the profile's input budget.

    ``choose_memory`` picks a memory tier's items when they do not all fit
    (None: the newest that fit; the engine passes a relevance ranking).

    Raises :class:`~ctxflow.errors.PolicyError` for an unknown phase (when the
    policy restricts phases) or an unusable budget, and
    :class:`~ctxflow.errors.BudgetExceeded` when fixed costs, or critical
    messages plus the last turn (trimmed), cannot fit.
    """
    if measure is None:
        overhead = profile.per_message_overhead if profile is not None else 4
        measure = window_measure(counter, overhead=overhead)
    policy.check_phase(phase)
    count = _cached(counter)
    conversation = _counted_with(conversation, measure)
    index = _index(conversation, measure)
    tools = policy.window_tools(state, history_has_tools=index.tool_blocks)
    prompt = state.system.prompt
    extra = index.system_text
    if extra and extra != prompt:
        prompt = f"{prompt}\n\n{extra}" if prompt else extra
    tools_text = _tools_text(tools)
    fixed = FixedCosts(
        system_prompt=count.count(prompt) if prompt else 0,
        tools=count.count(tools_text) if tools_text else 0,
        task=count.count(state.task.statement) if state.task.statement else 0,
        pinned=tuple(count.count(item) for item in state.task.pinned),
    )
    memory = state.memory
    present = [Tier.SHORT_TERM] if index.units else []
    present += [
        tier
        for tier, entries in (
            (Tier.EPISODIC, memory.episodic),
            (Tier.SEMANTIC, memory.semantic),
            (Tier.PROCEDURAL, memory.procedural),
        )
        if entries
    ]
    allocation = plan_budget(
        state,
        phase=phase,
        counter=count,
        profile=profile,
        budget=budget,
        policy=policy,
        tiers_present=present,
        fixed=fixed,
    )
    layers = allocation.layers
    allowances = {
        "runtime": layers[Layer.RUNTIME],
        "episodic": allocation.tiers[Tier.EPISODIC],
        "semantic": allocation.tiers[Tier.SEMANTIC],
        "procedural": allocation.tiers[Tier.PROCEDURAL],
        "documents": layers[Layer.EVIDENCE],
        "work": layers[Layer.WORK],
    }
    rendered = render_context(state, counter=count, allowances=allowances, choose=choose_memory)
    stream_demand = sum(index.full)
    surplus = (
        allocation.tiers[Tier.SHORT_TERM] + layers[Layer.EVIDENCE] + layers[Layer.WORK]
    ) - stream_demand
    if surplus > 0 and rendered.dropped:
        for name in _SECTIONS_LEND_ORDER:
            if name in rendered.dropped:
                allowances[name] += surplus
                rendered = render_context(
                    state, counter=count, allowances=allowances, choose=choose_memory
                )
                break
    system = _join(prompt, rendered.task)
    system_tokens = (count.count(system) if system else 0) + _late(count, measure, rendered.text)
    tools_tokens = fixed.tools
    message_budget = allocation.input_budget - allocation.headroom - system_tokens - tools_tokens
    if message_budget < 0:
        rendered = render_context(state, counter=count, allowances={})
        system_tokens = (count.count(system) if system else 0) + _late(
            count, measure, rendered.text
        )
        message_budget = (
            allocation.input_budget - allocation.headroom - system_tokens - tools_tokens
        )
        if message_budget < 0:
            raise BudgetExceeded(
                f"the system text and tools must fit the input budget of "
                f"{allocation.input_budget} tokens less headroom {allocation.headroom} "
                f"(got system={system_tokens}, tools={tools_tokens})",
                rule="fixed_costs",
                budget=allocation.input_budget,
                fixed=fixed.named(),
            )
    lending = policy.lend_for(phase, allocation.model_class)
    selection = _select(
        index,
        budget=message_budget,
        work=max(0, layers[Layer.WORK] - rendered.used.get("work", 0)),
        evidence=max(0, layers[Layer.EVIDENCE] - rendered.used.get("documents", 0)),
        memory=_history_allowance(allocation, rendered.used, policy),
        lend=lending,
        work_pays=policy.work_pays,
        counter=count,
        task=state.task.statement,
        weights=weights,
    )
    total = system_tokens + tools_tokens + selection.tokens
    if total > allocation.input_budget:  # pragma: no cover - selection guarantees this
        raise BudgetExceeded(
            f"window must fit the input budget of {allocation.input_budget} (got {total})",
            rule="window_overrun",
        )
    used = rendered.used
    blocks_used = sum(used.values())
    framing = max(
        0, system_tokens - fixed.system_prompt - fixed.task - sum(fixed.pinned) - blocks_used
    )
    tier_used = {
        Tier.SHORT_TERM: selection.memory_tokens,
        Tier.EPISODIC: used.get("episodic", 0),
        Tier.SEMANTIC: used.get("semantic", 0),
        Tier.PROCEDURAL: used.get("procedural", 0),
    }
    layer_used = {
        Layer.SYSTEM: framing,
        Layer.TASK: 0,
        Layer.RUNTIME: used.get("runtime", 0),
        Layer.MEMORY: sum(tier_used.values()),
        Layer.EVIDENCE: used.get("documents", 0)
        + selection.evidence_tokens
        - selection.work_tokens,
        Layer.WORK: used.get("work", 0) + selection.work_tokens,
    }
    report = WindowReport(
        allocation=allocation,
        layers={
            layer.value: LayerUsage(allocated=layers[layer], used=layer_used[layer])
            for layer in Layer
        },
        tiers={
            tier.value: LayerUsage(allocated=allocation.tiers[tier], used=tier_used[tier])
            for tier in Tier
        },
        message_budget=message_budget,
        excluded=selection.excluded,
        dropped_blocks=dict(rendered.dropped),
        lending=lending,
        memory_chosen=dict(rendered.chosen),
    )
    return Window(
        system=system,
        tools=tools,
        messages=selection.messages,
        input_budget=allocation.input_budget,
        tokens=total,
        report=report,
        context=rendered.text,
        allowed_tools=tuple(t.name for t in state.projected_tools()),
    )


def _history_allowance(
    allocation: Allocation, used: Mapping[str, int], policy: BudgetPolicy
) -> int | None:
    """What the memory layer leaves the message history (None: no limit but the budget)."""
    if policy.history_reach == "budget":
        return None
    tiers = sum(used.get(name, 0) for name in ("episodic", "semantic", "procedural"))
    return max(0, allocation.layers[Layer.MEMORY] - tiers)


def _late(count: TokenCounter, measure: Measure, context: str) -> int:
    """The tokens of the late context, counted as the user message it is rendered as."""
    if not context:
        return 0
    seen = count.late if isinstance(count, _CachedCounter) else {}
    try:
        size = seen.get((measure, context))
    except TypeError:  # an unhashable measure
        return measure(Message.user(context))
    if size is None:
        if len(seen) >= 64:
            seen.clear()
        size = seen[(measure, context)] = measure(Message.user(context))
    return size


def _join(prompt: str, context: str) -> str:
    if prompt and context:
        return f"{prompt}\n\n{context}"
    return prompt or context
