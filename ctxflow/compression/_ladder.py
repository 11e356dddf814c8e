"""The compression ladder: run rungs cheapest first until the context is at or below target.

The budget comes in plain token numbers: ``budget`` is the flexible budget,
``fixed`` the part of the conversation's effective tokens that are fixed
costs (the system message, the task, pinned items — pass 0 when they live
outside the conversation). With the default policy the guard fires above
``fixed + 0.75 * budget``, the ladder aims at ``fixed + 0.50 * budget``, and
the hard limit is ``fixed + 1.0 * budget``.

How a run stays safe:

* it plans on a :class:`~ctxflow.compression._draft.Draft` and commits only
  when the result is known to be within the hard limit, so a
  :class:`~ctxflow.errors.BudgetExceeded` leaves the conversation untouched
  (the same effective view, tags and overlays, and no orphan summary);
* a rung whose draft is not smaller, or not valid for every API, is skipped
  (monotonic shrink), and the report says why; the commit itself is checked
  by the conversation around what changed (``apply(keep_valid=True)``), which
  refuses a result that would break an API rule and changes nothing;
* a summarizer failure is recorded and the ladder falls through to the next
  rung;
* firing again within ``thrash_window`` turns of the last firing starts at
  the rung after the highest one used then (escalation), with the cheaper
  rungs still tried afterwards.

A run that ends above the target but within the hard limit succeeds: its
report's ``warnings`` says so, and it warns once
(:class:`~ctxflow.errors.CtxflowWarning`, attributed to the caller outside
ctxflow).

``run`` drives a sync summarizer; ``arun`` also accepts an async one.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Awaitable, Generator, Mapping, Sequence
from typing import cast

import attrs

from ctxflow._checks import number_field
from ctxflow._log import warn
from ctxflow.compression import _rungs as r
from ctxflow.compression._draft import Draft, dialogue_start, tail_start
from ctxflow.compression._rungs import NeedsSummary, Rung
from ctxflow.compression._summarizers import ExtractiveSummarizer, checked_summary
from ctxflow.compression._trim import TrimOversized, latest_user_text
from ctxflow.errors import BudgetExceeded, CompressionError, InvalidConversation, PolicyError
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation, Message, Role, check, facts_of
from ctxflow.protocols import AsyncSummarizer, Summarizer

__all__ = [
    "CompressionReport",
    "CompressionResult",
    "Ladder",
    "LadderPolicy",
    "RungOutcome",
    "default_rungs",
    "fixed_tokens",
    "guard",
]


@attrs.frozen(kw_only=True)
class LadderPolicy:
    """The ladder's thresholds (fractions of the flexible budget) and escalation window."""

    threshold: float = attrs.field(default=0.75, validator=number_field("positive"))
    target: float = attrs.field(default=0.50, validator=number_field("positive"))
    hard_limit: float = attrs.field(default=1.0, validator=number_field("positive"))
    thrash_window: int = attrs.field(default=2, validator=number_field("non-negative integer"))

    def __attrs_post_init__(self) -> None:
        if self.target > self.hard_limit:
            raise PolicyError(
                f"'target' must be at most 'hard_limit' (got {self.target} > {self.hard_limit})",
                rule="target_above_hard_limit",
            )
        if self.threshold < self.target:
            raise PolicyError(
                f"'threshold' must be at least 'target' (got {self.threshold} < {self.target})",
                rule="threshold_below_target",
            )


def default_rungs(
    *,
    keep_results: int = 3,
    pinned_tools: Sequence[str] = (),
    keep_recent: int = 6,
    result_share: float = 0.5,
) -> tuple[Rung, ...]:
    """Trim, clear, truncate, condense, reset — cheapest first."""
    return (
        TrimOversized(share=result_share),
        r.ClearToolResults(keep_results=keep_results, pinned_tools=frozenset(pinned_tools)),
        r.Truncate(),
        r.Condense(keep_recent=keep_recent),
        r.HardReset(),
    )


@attrs.frozen(kw_only=True)
class RungOutcome:
    """What one rung did in a run: applied or skipped (with the reason), and the tokens."""

    name: str
    applied: bool
    tokens_before: int
    tokens_after: int
    reason: str = ""


@attrs.frozen(kw_only=True)
class CompressionReport:
    """The record of one ladder run (frozen; ``undo`` needs only this and the conversation)."""

    turn: int | None
    tokens_before: int
    tokens_after: int
    target: int
    threshold: int
    hard_limit: int
    rungs_used: tuple[str, ...]
    outcomes: tuple[RungOutcome, ...]
    hidden: tuple[str, ...]
    overlaid: tuple[str, ...]
    previous_overlays: Mapping[str, Message]
    summaries: tuple[str, ...]
    covered: tuple[str, ...]
    facts_flushed: tuple[str, ...]
    episodes: tuple[str, ...]
    warnings: tuple[str, ...]
    escalated: bool
    first_changed_index: int | None
    cache_invalidated: bool

    @property
    def messages_affected(self) -> int:
        """How many messages this run hid, covered by a summary or overlaid."""
        return len(set(self.hidden) | set(self.covered) | set(self.overlaid))

    @property
    def reached_target(self) -> bool:
        """True when the effective tokens are at or below the target."""
        return self.tokens_after <= self.target

    @property
    def changed(self) -> bool:
        """True when the run changed the conversation."""
        return bool(self.hidden or self.overlaid or self.summaries)


@attrs.frozen(kw_only=True)
class CompressionResult:
    """The new layered state (memory flushed) and the run's report."""

    state: LayeredState
    report: CompressionReport


def fixed_tokens(conversation: Conversation) -> int:
    """The tokens of the visible system message, original request and pinned messages."""
    view = conversation.effective()
    request = _original_request(conversation)
    return sum(
        conversation.tokens(m.id)
        for m in view
        if m.role is Role.SYSTEM or m.important or m.id == request
    )


def _limits(policy: LadderPolicy, budget: int, fixed: int) -> tuple[int, int, int]:
    for name, value in (("budget", budget), ("fixed", fixed)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PolicyError(
                f"'{name}' must be a non-negative integer number of tokens (got {value!r})",
                rule=name,
            )
    if budget == 0:
        raise PolicyError("'budget' must be above zero (got 0)", rule="budget")
    return (
        fixed + int(policy.threshold * budget),
        fixed + int(policy.target * budget),
        fixed + int(policy.hard_limit * budget),
    )


def guard(
    conversation: Conversation,
    *,
    budget: int,
    fixed: int = 0,
    policy: LadderPolicy | None = None,
) -> bool:
    """True when the effective tokens are over the threshold: the ladder must fire."""
    threshold, _, _ = _limits(policy or LadderPolicy(), budget, fixed)
    return conversation.effective_tokens > threshold


def _original_request(conversation: Conversation) -> str | None:
    for message in conversation:
        # facts_of: a hidden message paged out to the store answers without its body
        if message.role is Role.USER and not facts_of(message).summary:
            return message.id
        if message.role is Role.ASSISTANT:
            return None
    return None


class Ladder:
    """Runs compression rungs cheapest first; keeps a short history to detect thrash.

    ``validate=False`` skips the validity check of the input and of the final
    view (each is a pass over the whole view), for callers that check every
    window they send anyway; the built-in rungs keep the view valid by
    construction.
    """

    def __init__(
        self,
        *,
        policy: LadderPolicy | None = None,
        summarizer: Summarizer | AsyncSummarizer | None = None,
        rungs: Sequence[Rung] | None = None,
        validate: bool = True,
    ) -> None:
        self.policy = policy or LadderPolicy()
        self.summarizer: Summarizer | AsyncSummarizer = summarizer or ExtractiveSummarizer()
        self.rungs: tuple[Rung, ...] = tuple(rungs) if rungs is not None else default_rungs()
        if not self.rungs:
            raise PolicyError("a ladder needs at least one rung (got none)", rule="no_rungs")
        self.validate = validate
        self.history: deque[tuple[int, int]] = deque(maxlen=8)

    def guard(self, conversation: Conversation, *, budget: int, fixed: int = 0) -> bool:
        """True when the conversation is over this ladder's threshold."""
        return guard(conversation, budget=budget, fixed=fixed, policy=self.policy)

    # -- running ---------------------------------------------------------------

    def run(
        self,
        conversation: Conversation,
        state: LayeredState,
        *,
        budget: int,
        fixed: int = 0,
        turn: int | None = None,
    ) -> CompressionResult:
        """Compress ``conversation`` to the target; return the new state and the report.

        ``turn`` (the caller's step counter) enables thrash detection: firing
        again within ``policy.thrash_window`` turns escalates; ``None`` disables it.

        Raises :class:`BudgetExceeded` (changing nothing) when even the last
        rung leaves more than the hard limit, :class:`InvalidConversation`
        when the conversation is invalid before compression, and
        :class:`PolicyError` for unusable numbers.
        """
        if inspect.iscoroutinefunction(getattr(self.summarizer, "summarize", None)):
            raise PolicyError(
                "this ladder's summarizer is async: call 'arun' instead of 'run'",
                rule="async_summarizer",
            )
        steps = self._steps(conversation, state, budget=budget, fixed=fixed, turn=turn)
        summarizer = cast(Summarizer, self.summarizer)
        try:
            request = next(steps)
            while True:
                try:
                    text: str | CompressionError = checked_summary(
                        summarizer.summarize(request.messages, max_tokens=request.max_tokens)
                    )
                except CompressionError as error:
                    text = error
                request = steps.send(text)
        except StopIteration as stop:
            return cast(CompressionResult, stop.value)

    async def arun(
        self,
        conversation: Conversation,
        state: LayeredState,
        *,
        budget: int,
        fixed: int = 0,
        turn: int | None = None,
    ) -> CompressionResult:
        """Like :meth:`run`, with a sync or async summarizer."""
        steps = self._steps(conversation, state, budget=budget, fixed=fixed, turn=turn)
        try:
            request = next(steps)
            while True:
                try:
                    produced = self.summarizer.summarize(
                        request.messages, max_tokens=request.max_tokens
                    )
                    if inspect.isawaitable(produced):
                        produced = await cast(Awaitable[str], produced)
                    text: str | CompressionError = checked_summary(produced)
                except CompressionError as error:
                    text = error
                request = steps.send(text)
        except StopIteration as stop:
            return cast(CompressionResult, stop.value)

    def _order(self, turn: int | None) -> tuple[list[int], bool]:
        indices = list(range(len(self.rungs)))
        if self.history and turn is not None:
            last_turn, highest = self.history[-1]
            if 0 <= turn - last_turn <= self.policy.thrash_window and highest + 1 < len(indices):
                start = highest + 1
                return indices[start:] + indices[:start], True
        return indices, False

    def _steps(
        self,
        conversation: Conversation,
        state: LayeredState,
        *,
        budget: int,
        fixed: int,
        turn: int | None,
    ) -> Generator[NeedsSummary, str | CompressionError, CompressionResult]:
        threshold, target, hard = _limits(self.policy, budget, fixed)
        start = Draft.of(conversation)
        openai_ok = True
        if self.validate:
            openai_ok = _check_input(conversation)
        ctx = r.RungContext(
            target=target,
            hard_limit=hard,
            budget=budget,
            fixed=fixed,
            original_request=_original_request(conversation),
            turn=turn if turn is not None else 0,
        )
        order, escalated = self._order(turn)
        draft = start
        outcomes: list[RungOutcome] = []
        used: list[int] = []
        warnings: list[str] = []
        if escalated:
            warnings.append(
                f"fired again within {self.policy.thrash_window} turns: escalated to "
                f"'{self.rungs[order[0]].name}' first"
            )
        for index in order:
            if draft.total <= target:
                break
            rung = self.rungs[index]
            proposal = rung.propose(draft, ctx)
            if isinstance(proposal, NeedsSummary):
                text = yield proposal
                if isinstance(text, CompressionError):
                    outcomes.append(_skipped(rung, draft, f"summarizer failed: {text}"))
                    continue
                proposal = proposal.finish(text)
            if isinstance(proposal, r.Skip):
                outcomes.append(_skipped(rung, draft, proposal.reason))
                continue
            if proposal.total >= draft.total:
                outcomes.append(_skipped(rung, draft, f"not smaller ({proposal.total:,} tokens)"))
                continue
            if not isinstance(rung, _BUILT_IN):
                problems = _problems(proposal.view, openai_ok)
                if problems:
                    outcomes.append(
                        _skipped(rung, draft, f"result invalid for {', '.join(problems)}; undone")
                    )
                    continue
            outcomes.append(
                RungOutcome(
                    name=rung.name,
                    applied=True,
                    tokens_before=draft.total,
                    tokens_after=proposal.total,
                )
            )
            used.append(index)
            draft = proposal
        if draft.total > hard:
            if self.validate and draft.changed and _problems(draft.view, openai_ok):
                raise CompressionError(
                    "the compressed view must be valid for every API (it is not after "
                    f"{[o.name for o in outcomes if o.applied]})",
                    rule="invalid_result",
                )
            raise BudgetExceeded(
                _too_large(draft, hard, fixed, budget, self.policy),
                rule="hard_limit",
                tokens=draft.total,
                hard_limit=hard,
            )
        soft = draft.total > target
        if soft:
            warnings.append(
                f"reached {draft.total:,} tokens, above the target {target:,} but within the "
                f"hard limit {hard:,}"
            )
        result = self._commit(
            conversation,
            state,
            start,
            draft,
            outcomes=tuple(outcomes),
            used=tuple(used),
            warnings=tuple(warnings),
            escalated=escalated,
            limits=(threshold, target, hard),
            turn=turn,
            openai_ok=openai_ok,
        )
        if soft:
            warn(
                f"compression stopped at {draft.total:,} tokens (from {start.total:,}): above "
                f"its target of {target:,} but within the hard limit of {hard:,}"
            )
        return result

    def _commit(
        self,
        conversation: Conversation,
        state: LayeredState,
        start: Draft,
        draft: Draft,
        *,
        outcomes: tuple[RungOutcome, ...],
        used: tuple[int, ...],
        warnings: tuple[str, ...],
        escalated: bool,
        limits: tuple[int, int, int],
        turn: int | None,
        openai_ok: bool,
    ) -> CompressionResult:
        covered = draft.covered_ids()
        gone = covered | set(draft.hidden)
        overlaid = tuple(i for i in draft.overlays if i not in gone)
        previous = {i: o for i in overlaid if (o := conversation.overlay(i)) is not None}
        changed = gone | set(overlaid)
        first_changed = next((i for i, m in enumerate(start.view) if m.id in changed), None)
        try:
            draft.commit(conversation, keep_valid=self.validate)
        except InvalidConversation as error:
            applied = [o.name for o in outcomes if o.applied]
            raise CompressionError(
                f"the compressed view must be valid for every API ({error.message} after "
                f"{applied})",
                rule="invalid_result",
            ) from None
        new_state = state.with_facts(draft.facts)
        for episode in draft.episodes:
            new_state = new_state.with_episode(episode)
        if used and turn is not None:
            self.history.append((turn, max(used)))
        threshold, target, hard = limits
        report = CompressionReport(
            turn=turn,
            tokens_before=start.total,
            tokens_after=draft.total,
            target=target,
            threshold=threshold,
            hard_limit=hard,
            rungs_used=tuple(self.rungs[i].name for i in used),
            outcomes=outcomes,
            hidden=tuple(draft.hidden),
            overlaid=overlaid,
            previous_overlays=previous,
            summaries=tuple(s.id for s, _ in draft.summaries),
            covered=tuple(i for _, covers in draft.summaries for i in covers),
            facts_flushed=tuple(dict.fromkeys(f.key for f in draft.facts)),
            episodes=tuple(e.id for e in draft.episodes),
            warnings=warnings,
            escalated=escalated,
            first_changed_index=first_changed,
            cache_invalidated=first_changed is not None,
        )
        return CompressionResult(state=new_state, report=report)


_BUILT_IN = (TrimOversized, r.ClearToolResults, r.Truncate, r.Condense, r.HardReset)
_OPENAI_ONLY = "tool_result_non_text"


def _check_input(conversation: Conversation) -> bool:
    """Raise InvalidConversation for an invalid view; say whether OpenAI accepts it too.

    The conversation knows its view's validity incrementally, so this walks
    only what was appended or changed since the view was last checked.
    """
    if not conversation.valid_for("anthropic"):
        violations = conversation.check(api="anthropic").violations
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise InvalidConversation(
            f"the conversation must be valid before compression (got {violations[0]}{more})",
            rule="invalid_before_compression",
            violations=violations,
            api="anthropic",
        )
    return conversation.valid_for("openai")


def _problems(view: list[Message], openai_ok: bool) -> list[str]:
    report = check(view, api="openai")
    problems = []
    if any(v.rule != _OPENAI_ONLY for v in report.violations):
        problems.append("anthropic")
    if openai_ok and not report.ok:
        problems.append("openai")
    return problems


def _skipped(rung: Rung, draft: Draft, reason: str) -> RungOutcome:
    return RungOutcome(
        name=rung.name,
        applied=False,
        tokens_before=draft.total,
        tokens_after=draft.total,
        reason=reason,
    )


def _too_large(draft: Draft, hard: int, fixed: int, budget: int, policy: LadderPolicy) -> str:
    """Why the context cannot fit, in plain words: what could not be cut or hidden, by part.

    Only the fixed costs (system, pinned messages) and the latest user text
    turn are untouchable; when they alone are over the limit, that is what the
    message says. Otherwise it names what else stayed (blocks that are never
    cut, such as thinking and tool_use inputs, and messages no rung may hide).
    """
    view, tokens = draft.view, draft.tokens
    first = dialogue_start(view)
    system = sum(tokens[:first])
    pinned = [(m.id, tokens[i]) for i, m in enumerate(view) if i >= first and m.important]
    latest = latest_user_text(view)
    if latest is not None and view[latest].important:
        latest = None
    user = tokens[latest] if latest is not None else 0
    untouchable = system + sum(t for _, t in pinned) + user
    parts = [f"system {system:,}"]
    if pinned:
        parts.append(
            f"pinned {sum(t for _, t in pinned):,} ({', '.join(i for i, _ in pinned[:5])})"
        )
    if latest is not None:
        parts.append(f"the latest user turn {user:,} ({view[latest].id})")
    limit = (
        f"the hard limit of {hard:,} tokens (fixed {fixed:,} + {policy.hard_limit:g} x "
        f"budget {budget:,})"
    )
    if untouchable > hard:
        return (
            f"the fixed costs and the latest user turn must fit {limit}; they cannot be "
            f"trimmed or hidden (got {untouchable:,}: {'; '.join(parts)})"
        )
    tail = tail_start(view)
    last = [m.id for i, m in enumerate(view[tail:], tail) if i != latest and not m.important]
    parts.append(
        f"other messages {draft.total - untouchable:,}, trimmed and hidden as far as allowed "
        f"(last turn: {', '.join(last[:4]) or 'none'})"
    )
    return (
        f"the compressed context must fit {limit} (got {draft.total:,} after every rung: "
        f"{'; '.join(parts)})"
    )
