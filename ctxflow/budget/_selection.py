"""Budgeted selection: which turns of the effective view go into one window.

The unit of selection is atomic: an assistant message together with the user
message holding its results (a parallel batch with all of its results; with
thinking blocks, the whole tool loop until the next plain user turn). A user
message that carries no tool results is a unit of its own. Nothing ever splits
a unit, so a window can never hold an orphan result or an unanswered call.

A build takes these steps, in this order, each a function of its own over the
index's unit table (a row per unit: where it stands, its cost whole and with
its tool results masked, whether its pairs are intact):

1. *leading and trailing units* (``leading_unit``, ``newest_unit``):
   units before the first plain user message cannot lead a window and are
   left out (``before_first_user``); broken units after the newest valid one
   are left out (``broken_pair``), as are broken units anywhere (step 7);
2. *mandatory units* (``reserve_mandatory``): the first user unit (the
   task) and every unit holding an ``important`` message are reserved at
   their masked cost, the newest unit (the last turn) whole; if the last turn
   does not fit, its largest tool results are middle-trimmed (head and tail
   kept, with a marker); if that still cannot fit, :class:`BudgetExceeded` is
   raised with the numbers;
3. *recency* (``take_recent``): the newest units are taken whole while the
   work allowance lasts (the latest tool rounds, the current step's working
   set); older ones condensed (each round's tool results middle-trimmed to
   a quarter of the evidence allowance, at least 128 tokens) while the
   evidence allowance lasts; older still with their tool results masked (a
   short placeholder naming the tool and the size withheld), back to the
   oldest unit that still fits. With no evidence allowance, what is left
   unmasks the newest masked units of that run. The whole and masked cuts
   are found by binary search over prefix sums, so a build costs O(log n)
   plus the condensed rounds and the pieces it assembles; when even the
   whole tail does not fit, a unit-by-unit walk decides instead;
4. *gap fill* (``fill_gaps``): older units that still fit (looking back at
   most 256 units from the cut), best score first (see
   :mod:`ctxflow.budget._scoring`), masked;
5. *lending* (``lend_leftover``): whatever budget is left goes to the
   phase's uses (its intent; see ``BudgetPolicy.lending``), shared by the
   work and evidence allowances: ``"recent"`` shows more rounds whole,
   newest first, and a worthwhile remainder shows the newest masked result
   that did not fit, middle-trimmed; ``"condensed"`` raises one cap over
   every taken round's results; ``"relevant"`` shows rounds whole by
   relevance to the task and the latest turn;
6. *assembly* (``assemble_within_budget``): adjacent same-role messages
   at unit boundaries (a gap, a summary standing next to a user turn) are
   merged into one message; should merging cost more than the parts, the
   oldest optional units are dropped until the window fits;
7. *accounts* (``account``): what was masked, trimmed, left out as older
   than the window, or broken, counted per reason (``Exclusion``).

Counts come from the conversation's cache (``Conversation.tokens``); the
masked and merged forms are measured once and cached per conversation (see
:mod:`ctxflow.budget._selection_index`), so repeated builds never re-tokenize
the history.
"""

from __future__ import annotations

import attrs

from ctxflow.budget._scoring import DEFAULT_WEIGHTS, ScoreWeights
from ctxflow.budget._selection_assembly import account, assemble_within_budget
from ctxflow.budget._selection_index import _INDEXES as _INDEXES
from ctxflow.budget._selection_index import MERGED_FROM as MERGED_FROM
from ctxflow.budget._selection_index import WINDOW_EDIT as WINDOW_EDIT
from ctxflow.budget._selection_index import SelectionIndex, index_for, placeholder_text
from ctxflow.budget._selection_steps import (
    LEND_USES,
    Plan,
    Tally,
    fill_gaps,
    leading_unit,
    lend_leftover,
    newest_unit,
    reserve_mandatory,
    take_recent,
)
from ctxflow.errors import PolicyError
from ctxflow.model import Conversation, Message
from ctxflow.protocols import Measure, TokenCounter

__all__ = ["Exclusion", "Selection", "placeholder_text", "select"]

_index = index_for  # the window builder's name for it


@attrs.frozen(kw_only=True)
class Exclusion:
    """Aggregated count of what one reason left out (or masked/trimmed)."""

    units: int = 0
    messages: int = 0
    tokens: int = 0


@attrs.frozen(kw_only=True)
class Selection:
    """The selected messages and what was left out, per reason."""

    messages: tuple[Message, ...]
    tokens: int
    memory_tokens: int
    evidence_tokens: int
    excluded: dict[str, Exclusion]
    #: the part of ``evidence_tokens`` shown in the latest rounds whole (the work buffer's)
    work_tokens: int = 0


def system_text_of(conversation: Conversation, measure: Measure) -> str:
    """The text of the conversation's leading system message ('' when it has none)."""
    return _index(conversation, measure).system_text


def select(
    conversation: Conversation,
    *,
    budget: int,
    work: int,
    evidence: int = 0,
    memory: int | None = None,
    lend: tuple[str, ...] = ("recent",),
    work_pays: str = "rounds",
    measure: Measure,
    counter: TokenCounter,
    task: str = "",
    weights: ScoreWeights = DEFAULT_WEIGHTS,
) -> Selection:
    """Choose one window's messages: at most ``budget`` tokens.

    Tool results are shown whole, newest first, while ``work`` lasts; older
    rounds condensed while ``evidence`` lasts; older still masked, as far
    back as ``memory`` allows (None: as far as the budget reaches). ``work``
    and ``evidence`` pay for whole rounds, or with ``work_pays="results"``
    for their tool results only. What is
    left is lent to the uses in ``lend`` (``"recent"``, ``"condensed"``,
    ``"relevant"``; see ``BudgetPolicy.lending``). ``measure`` must be the
    measure the conversation counts with.
    Raises :class:`BudgetExceeded` when the critical units and the last
    turn, trimmed, cannot fit, and :class:`PolicyError` for an unknown use.
    """
    check_lend(lend)
    index = _index(conversation, measure)
    return _select(
        index,
        budget=budget,
        work=work,
        evidence=evidence,
        memory=memory,
        lend=lend,
        work_pays=work_pays,
        counter=counter,
        task=task,
        weights=weights,
    )


def check_lend(lend: tuple[str, ...]) -> None:
    """Raise :class:`PolicyError` unless ``lend`` is a tuple of known uses."""
    if not isinstance(lend, tuple) or any(use not in LEND_USES for use in lend):
        raise PolicyError(
            f"'lend' must be a tuple of {list(LEND_USES)} (got {lend!r})",
            rule="policy_value",
            field="lend",
        )


def _select(
    index: SelectionIndex,
    *,
    budget: int,
    work: int,
    evidence: int,
    lend: tuple[str, ...],
    counter: TokenCounter,
    task: str,
    weights: ScoreWeights,
    memory: int | None = None,
    work_pays: str = "rounds",
) -> Selection:
    """The steps of a build, in order (see the module docstring)."""
    excluded = Tally()
    lead = leading_unit(index, excluded)
    if lead is None:
        return Selection(
            messages=(), tokens=0, memory_tokens=0, evidence_tokens=0, excluded=_freeze(excluded)
        )
    last = newest_unit(index, lead, excluded)
    reach_first = lend[:1] == ("memory",)
    plan = Plan(
        index,
        budget=budget,
        lead=lead,
        last=last,
        work=work,
        evidence=0 if reach_first else evidence,
        memory=None if reach_first else memory,
    )
    plan.evidence_share = max(0, evidence)
    plan.breadth = reach_first
    plan.unmask_in_run = evidence <= 0 and lend == ("recent",)
    plan.work_pays = work_pays
    reserve_mandatory(index, plan, work, counter)
    take_recent(index, plan, counter)
    fill_gaps(index, plan, task, weights)
    lend_leftover(index, plan, counter, lend, task=task, weights=weights)
    pieces, window = assemble_within_budget(index, plan)
    account(index, plan, pieces, excluded)
    return Selection(
        messages=tuple(window.messages),
        tokens=window.tokens,
        memory_tokens=window.tokens - window.evidence_tokens,
        evidence_tokens=window.evidence_tokens,
        excluded=_freeze(excluded),
        work_tokens=min(window.evidence_tokens, _latest_rounds(index, plan)),
    )


def _latest_rounds(index: SelectionIndex, plan: Plan) -> int:
    """Tool result tokens of the run's whole tail and the last turn, as shown."""
    units, evidence = index.units, index.prefix.evidence
    tokens = evidence[plan.history_end] - evidence[plan.whole_from]
    last = plan.last
    if last != plan.lead:
        trim = plan.trims.get(last)
        shown = trim.tokens if trim is not None else units.tokens[last]
        tokens += max(0, shown - units.masked[last])
    return tokens


def _freeze(excluded: Tally) -> dict[str, Exclusion]:
    return {
        reason: Exclusion(units=row[0], messages=row[1], tokens=row[2])
        for reason, row in sorted(excluded.rows.items())
    }
