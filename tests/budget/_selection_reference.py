"""A frozen copy of ``ctxflow/budget/selection.py`` before its restructuring (do not edit).

The differential test (``test_selection_differential.py``) checks that the
restructured selector chooses exactly what this one chose. Below is the
original module docstring.

Budgeted selection: which turns of the effective view go into one window.

The unit of selection is atomic: an assistant message together with the user
message holding its results (a parallel batch with all of its results; with
thinking blocks, the whole tool loop until the next plain user turn). A user
message that carries no tool results is a unit of its own. Nothing ever splits
a unit, so a window can never hold an orphan result or an unanswered call.

How a build chooses (deterministic, in this order):

1. units before the first plain user message cannot lead a window and are
   left out (``before_first_user``); units whose pairs are broken in the view
   are left out (``broken_pair``);
2. *mandatory*: the first user unit (the task), every unit holding an
   ``important`` message, and the newest unit (the last turn). Critical units
   are reserved at their masked cost; if the newest unit does not fit, its
   largest tool results are middle-trimmed (head and tail kept, with a
   marker); if that still cannot fit, :class:`BudgetExceeded` is raised with
   the numbers;
3. *recency*: the newest units are taken whole while the evidence allowance
   lasts, older ones with their tool results masked (a short placeholder
   naming the tool and the size withheld), back to the oldest unit that still
   fits. Both cuts are found by binary search over prefix sums, so a build
   costs O(log n) plus the pieces it assembles; when even the unmasked tail
   does not fit, a unit-by-unit walk decides instead;
4. *gap fill*: older units that still fit (looking back at most 256 units
   from the cut), best score first (see :mod:`ctxflow.budget.scoring`), masked;
5. *lending*: whatever budget is left unmasks masked units, newest first, and
   a worthwhile remainder shows the next masked result middle-trimmed.

Adjacent same-role messages at unit boundaries (a gap, a summary standing
next to a user turn) are merged into one message in the window.

Counts come from the conversation's cache (``Conversation.tokens``); the
masked and merged forms are measured once and cached per conversation (keyed
weakly, checked against the view by identity), so repeated builds never
re-tokenize the history. Like the Conversation itself, the cache is not
meant for concurrent builds on one conversation from several threads.
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Callable

import attrs

from ctxflow.budget._render import middle_trim
from ctxflow.budget._scoring import DEFAULT_WEIGHTS, Category, ScoreWeights, keywords, score_message
from ctxflow.errors import BudgetExceeded, InvalidMessage
from ctxflow.model import (
    Block,
    Conversation,
    Message,
    RedactedThinkingBlock,
    Role,
    ThinkingBlock,
    ToolResultBlock,
)
from ctxflow.protocols import TokenCounter

__all__ = ["Exclusion", "Selection", "placeholder_text", "select"]

Measure = Callable[[Message], int]

#: Metadata key on a merged window message: the ids of the messages merged.
MERGED_FROM = "ctxflow.merged_from"
#: Metadata key on a window message whose tool results were masked or trimmed.
WINDOW_EDIT = "ctxflow.window_edit"


_MIN_PARTIAL = 64


def placeholder_text(tool: str, chars: int) -> str:
    """The text standing in for a masked tool result."""
    return f"[{tool} result withheld from this window: {chars:,} chars]"


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


class _Index:
    """Per-conversation, per-measure cached facts about the effective view."""

    def __init__(self, measure: Measure) -> None:
        self.measure = measure
        self.view: list[Message] = []
        self.tokens: list[int] = []
        self.masked_tokens: list[int] = []
        self.masked: list[Message | None] = []
        self.alt: list[Message] = []  # the masked form where there is one, else the message
        self.system_text = ""
        self.tool_blocks = False
        self.first = 0  # first dialogue index (1 when the view starts with a system message)
        self.units: list[tuple[int, int]] = []
        self.starts: list[int] = []
        self.valid: list[bool] = []
        # prefix sums over units (length units + 1)
        self.cum_full: list[int] = [0]
        self.cum_red: list[int] = [0]
        self.cum_ev: list[int] = [0]
        self.cum_ev_units: list[int] = [0]
        self.cum_ev_msgs: list[int] = [0]
        self.cum_valid: list[int] = [0]
        self.cum_valid_msgs: list[int] = [0]
        self.cum_valid_full: list[int] = [0]
        self.important: list[int] = []
        self.invalid: list[int] = []
        self.clash: list[int] = []  # units whose first role equals the previous unit's last
        self.full: list[int] = []
        self.reduced: list[int] = []
        self.statics: dict[int, tuple[Message, float, bool]] = {}  # id(message) -> score parts
        self.task_words: frozenset[str] | None = None
        self.score_weights: ScoreWeights | None = None
        self.unit_scores: dict[tuple[int, int], tuple[Message, float]] = {}
        self.merged: dict[tuple[int, int], tuple[Message, Message, Message, int]] = {}
        self.costs: dict[int, tuple[Message, int]] = {}
        self.trims: dict[
            tuple[int, int, int], tuple[tuple[Message, ...], list[Message] | None, int]
        ] = {}

    # -- building ------------------------------------------------------------

    def sync(self, conversation: Conversation) -> None:
        view = conversation.effective()
        old = len(self.view)
        if old and len(view) >= old and view[:old] == self.view:
            keep_units = len(self.units) - 1 if self.units else 0
            while keep_units > 0 and not self._closed(keep_units - 1, view):
                keep_units -= 1
        else:
            old = 0
            keep_units = 0
            self.tokens = []
            self.masked_tokens = []
            self.masked = []
            self.alt = []
            self.trims.clear()
            self.unit_scores.clear()
            self.system_text = ""
            self.tool_blocks = False
            self.first = 1 if view and view[0].role is Role.SYSTEM else 0
            if self.first:
                self.system_text = view[0].text
        for position in range(old, len(view)):
            message = view[position]
            self.tokens.append(conversation.tokens(message.id))
            if not self.tool_blocks and (message.tool_uses or message.tool_results):
                self.tool_blocks = True
            self._add_masked(conversation, view, position)
        self.view = view
        del self.units[keep_units:]
        del self.starts[keep_units:]
        del self.valid[keep_units:]
        del self.full[keep_units:]
        del self.reduced[keep_units:]
        for prefix in (
            self.cum_full,
            self.cum_red,
            self.cum_ev,
            self.cum_ev_units,
            self.cum_ev_msgs,
            self.cum_valid,
            self.cum_valid_msgs,
            self.cum_valid_full,
        ):
            del prefix[keep_units + 1 :]
        self.important = [u for u in self.important if u < keep_units]
        self.clash = [u for u in self.clash if u < keep_units]
        self.invalid = [u for u in self.invalid if u < keep_units]
        start = self.units[-1][1] if self.units else self.first
        self._build_units(view, start)
        self._extend_prefix(view, keep_units)

    def _extend_prefix(self, view: list[Message], begin: int) -> None:
        for u in range(begin, len(self.units)):
            a, b = self.units[u]
            ok = self.valid[u]
            full = self.full[u] if ok else 0
            red = self.reduced[u] if ok else 0
            ev = full - red
            if not ok:
                self.invalid.append(u)
            self.cum_full.append(self.cum_full[-1] + full)
            self.cum_red.append(self.cum_red[-1] + red)
            self.cum_ev.append(self.cum_ev[-1] + ev)
            self.cum_ev_units.append(self.cum_ev_units[-1] + (1 if ev > 0 else 0))
            self.cum_ev_msgs.append(self.cum_ev_msgs[-1] + (b - a if ev > 0 else 0))
            self.cum_valid.append(self.cum_valid[-1] + (1 if ok else 0))
            self.cum_valid_msgs.append(self.cum_valid_msgs[-1] + (b - a if ok else 0))
            self.cum_valid_full.append(self.cum_valid_full[-1] + (full if ok else 0))
            if any(view[i].important for i in range(a, b)):
                self.important.append(u)
            if u > 0 and view[self.units[u - 1][1] - 1].role is view[a].role:
                self.clash.append(u)

    def _closed(self, unit: int, view: list[Message]) -> bool:
        # A unit is final only when the message after it starts a new unit.
        end = self.units[unit][1]
        return end < len(view) and _starts_unit(view, end)

    def _add_masked(self, conversation: Conversation, view: list[Message], i: int) -> None:
        message = view[i]
        results = message.tool_results
        if not results or message.role is not Role.USER:
            self.masked.append(None)
            self.alt.append(message)
            self.masked_tokens.append(self.tokens[i])
            return
        names: dict[str, str] = {}
        if i > 0:
            names = {u.id: u.name for u in view[i - 1].tool_uses}
        blocks: list[Block] = []
        for block in message.content:
            if isinstance(block, ToolResultBlock):
                name = names.get(block.tool_use_id) or _tool_name(conversation, block.tool_use_id)
                blocks.append(
                    ToolResultBlock(
                        tool_use_id=block.tool_use_id,
                        content=placeholder_text(name, len(block.text)),
                        is_error=block.is_error,
                    )
                )
            else:
                blocks.append(block)
        masked = attrs.evolve(
            message, content=tuple(blocks), metadata={**message.metadata, WINDOW_EDIT: "masked"}
        )
        cost = self.measure(masked)
        if cost >= self.tokens[i]:
            self.masked.append(None)
            self.alt.append(message)
            self.masked_tokens.append(self.tokens[i])
        else:
            self.masked.append(masked)
            self.alt.append(masked)
            self.masked_tokens.append(cost)

    def _build_units(self, view: list[Message], start: int) -> None:
        n = len(view)
        i = start
        while i < n:
            begin = i
            message = view[i]
            i += 1
            ok = True
            if message.role is Role.USER and message.tool_results:
                ok = False  # results that answer nothing right before them
            elif message.role is Role.ASSISTANT:
                thinking = any(
                    isinstance(b, ThinkingBlock | RedactedThinkingBlock) for b in message.content
                )
                current = message
                while current.tool_uses:
                    if i >= n:
                        break  # a trailing pending call
                    answer = view[i]
                    expected = {u.id for u in current.tool_uses}
                    got = {r.tool_use_id for r in answer.tool_results}
                    if answer.role is not Role.USER or got != expected:
                        ok = False
                        if answer.role is Role.USER and got and got <= expected:
                            i += 1
                        break
                    i += 1
                    if thinking and i < n and view[i].role is Role.ASSISTANT:
                        current = view[i]
                        i += 1
                        continue
                    break
            self.units.append((begin, i))
            self.starts.append(begin)
            self.valid.append(ok)
            self.full.append(sum(self.tokens[begin:i]))
            self.reduced.append(sum(self.masked_tokens[begin:i]))

    # -- scoring -------------------------------------------------------------

    def static_score(
        self, message: Message, words: frozenset[str], weights: ScoreWeights
    ) -> tuple[float, bool]:
        if self.task_words != words:
            self.statics.clear()
            self.task_words = words
        key = id(message)
        cached = self.statics.get(key)
        if cached is None or cached[0] is not message:
            score = score_message(message, position=0, count=1, task_words=words, weights=weights)
            cached = (message, score.value, score.category is Category.CRITICAL)
            self.statics[key] = cached
        return cached[1], cached[2]

    def unit_score(self, a: int, b: int, words: frozenset[str], weights: ScoreWeights) -> float:
        """The best static score of the messages ``view[a:b]`` (cached per unit)."""
        if self.task_words != words or self.score_weights is not weights:
            self.statics.clear()
            self.unit_scores.clear()
            self.task_words = words
            self.score_weights = weights
        hit = self.unit_scores.get((a, b))
        if hit is not None and hit[0] is self.view[a]:
            return hit[1]
        best = max(self.static_score(self.view[i], words, weights)[0] for i in range(a, b))
        self.unit_scores[(a, b)] = (self.view[a], best)
        return best

    def cost_of(self, message: Message) -> int:
        hit = self.costs.get(id(message))
        if hit is not None and hit[0] is message:
            return hit[1]
        if len(self.costs) > 1024:
            self.costs.clear()
        cost = self.measure(message)
        self.costs[id(message)] = (message, cost)
        return cost

    def merged_message(self, a: Message, b: Message) -> tuple[Message, int]:
        key = (id(a), id(b))
        hit = self.merged.get(key)
        if hit is not None and hit[0] is a and hit[1] is b:
            return hit[2], hit[3]
        message = _merge(a, b)
        cost = self.measure(message)
        self.merged[key] = (a, b, message, cost)
        return message, cost


def _starts_unit(view: list[Message], i: int) -> bool:
    message = view[i]
    if message.role is Role.USER and message.tool_results and i > 0:
        previous = view[i - 1]
        if previous.role is Role.ASSISTANT and previous.tool_uses:
            return False
    if message.role is Role.ASSISTANT and i > 1:
        before = view[i - 2]
        if any(isinstance(b, ThinkingBlock | RedactedThinkingBlock) for b in before.content):
            return not (view[i - 1].role is Role.USER and view[i - 1].tool_results)
    return True


def _tool_name(conversation: Conversation, tool_use_id: str) -> str:
    try:
        return conversation.tool_name(tool_use_id)
    except InvalidMessage:
        return "tool"


def _merge(a: Message, b: Message) -> Message:
    blocks: list[Block] = [*a.content, *b.content]
    if a.role is Role.ASSISTANT:
        first = [x for x in blocks if isinstance(x, ThinkingBlock | RedactedThinkingBlock)]
        blocks = first + [
            x for x in blocks if not isinstance(x, ThinkingBlock | RedactedThinkingBlock)
        ]
    else:
        first_r = [x for x in blocks if isinstance(x, ToolResultBlock)]
        blocks = first_r + [x for x in blocks if not isinstance(x, ToolResultBlock)]
    merged_from = [*a.metadata.get(MERGED_FROM, [a.id]), *b.metadata.get(MERGED_FROM, [b.id])]
    return Message(
        role=a.role,
        content=tuple(blocks),
        id=a.id,
        timestamp=a.timestamp,
        metadata={**a.metadata, MERGED_FROM: merged_from},
        important=a.important or b.important,
    )


_INDEXES: weakref.WeakKeyDictionary[Conversation, dict[int, _Index]] = weakref.WeakKeyDictionary()


def _index(conversation: Conversation, measure: Measure) -> _Index:
    per = _INDEXES.setdefault(conversation, {})
    index = per.get(id(measure))
    if index is None or index.measure is not measure:
        index = _Index(measure)
        per[id(measure)] = index
    index.sync(conversation)
    return index


def system_text_of(conversation: Conversation, measure: Measure) -> str:
    """The text of the conversation's leading system message ('' when it has none)."""
    return _index(conversation, measure).system_text


def _add(
    excluded: dict[str, list[int]], reason: str, units: int, messages: int, tokens: int
) -> None:
    row = excluded.setdefault(reason, [0, 0, 0])
    row[0] += units
    row[1] += messages
    row[2] += tokens


def select(
    conversation: Conversation,
    *,
    budget: int,
    evidence: int,
    measure: Measure,
    counter: TokenCounter,
    task: str = "",
    weights: ScoreWeights = DEFAULT_WEIGHTS,
) -> Selection:
    """Choose one window's messages: at most ``budget`` tokens, results past ``evidence`` masked.

    ``measure`` must be the measure the conversation counts with. Raises
    :class:`BudgetExceeded` when the critical units and the last turn,
    trimmed, cannot fit.
    """
    index = _index(conversation, measure)
    return _select(
        index, budget=budget, evidence=evidence, counter=counter, task=task, weights=weights
    )


def _select(
    index: _Index,
    *,
    budget: int,
    evidence: int,
    counter: TokenCounter,
    task: str,
    weights: ScoreWeights,
) -> Selection:
    view = index.view
    units = index.units
    full = index.full
    reduced = index.reduced
    valid = index.valid
    excluded: dict[str, list[int]] = {}
    n_units = len(units)

    lead = 0
    while lead < n_units and not (valid[lead] and view[units[lead][0]].role is Role.USER):
        lead += 1
    for u in range(lead):
        a, b = units[u]
        _add(excluded, "before_first_user", 1, b - a, full[u])
    if lead >= n_units:
        return Selection(
            messages=(), tokens=0, memory_tokens=0, evidence_tokens=0, excluded=_freeze(excluded)
        )

    last = n_units - 1
    while last > lead and not valid[last]:
        a, b = units[last]
        _add(excluded, "broken_pair", 1, b - a, full[last])
        last -= 1

    lo, hi = lead + 1, last  # the units the recency walk may take
    inner = [u for u in index.important if lo <= u < hi and valid[u]]
    critical = [lead, *inner]
    # sparse: unit -> 1 full / 0 masked, for units outside the contiguous run
    sparse: dict[int, int] = {}
    trims: dict[int, tuple[list[Message], int]] = {}
    reserved = sum(reduced[u] for u in inner)
    if last != lead:
        reserved += reduced[lead]
        sparse[lead] = 0
        last_cost = full[last]
        if reserved + last_cost > budget:
            cut, last_cost = _trim_unit(index, units[last], budget - reserved, counter)
            if cut is None:
                raise BudgetExceeded(
                    f"critical messages and the last turn must fit the message budget of {budget} "
                    f"tokens (got critical={reserved}, last turn={full[last]} before trimming)",
                    rule="critical_exceeds",
                    budget=budget,
                    critical=reserved,
                    last_turn=full[last],
                )
            trims[last] = (cut, last_cost)
        sparse[last] = 1
        ev_left = evidence - max(0, last_cost - reduced[last])
    else:
        last_cost = 0
        if full[lead] <= budget:
            reserved += full[lead]
        else:
            cut, cost = _trim_unit(index, units[lead], budget, counter)
            if cut is None:
                raise BudgetExceeded(
                    f"the latest user turn (here the task) must fit the {budget} tokens the "
                    "input budget leaves after the system text, the tools and the headroom; "
                    f"it is the one turn never trimmed or hidden (got {reduced[lead]} tokens "
                    "at least)",
                    rule="critical_exceeds",
                    budget=budget,
                    critical=reduced[lead],
                )
            trims[lead] = (cut, cost)
            reserved += cost
        sparse[lead] = 1
        ev_left = evidence
    if reserved + last_cost > budget:
        raise BudgetExceeded(
            f"critical messages must fit the message budget of {budget} tokens "
            f"(got {reserved} for {len(critical)} critical turns and {last_cost} for the "
            "last turn)",
            rule="critical_exceeds",
            budget=budget,
            critical=reserved,
            last_turn=last_cost,
        )
    left = budget - reserved - last_cost
    run = _contiguous(index, lo, hi, left, ev_left, inner)
    if run is not None:
        s, c, cost = run
        left -= cost
        for u in inner:
            if u < s:
                sparse[u] = 0
        # lending: leftover extends the unmasked region, then one partial result
        while c > s and full[c - 1] - reduced[c - 1] <= left:
            c -= 1
            if valid[c]:
                left -= full[c] - reduced[c]
        stop = s - 1
    else:
        s = c = hi
        stop, left = _greedy(index, lo, hi, left, ev_left, inner, sparse)

    if stop >= lo and left > 0:
        words = keywords(task) if task else frozenset()
        count = len(view)
        candidates: list[tuple[float, int]] = []
        for u in range(stop, max(lo, stop - _GAP_LOOKBACK) - 1, -1):
            if u in sparse or not valid[u] or reduced[u] > left:
                continue
            a, b = units[u]
            best = index.unit_score(a, b, words, weights)
            candidates.append((-(best + weights.recency * b / max(1, count - 1)), -u))
        candidates.sort()
        for _, neg in candidates:
            if reduced[-neg] <= left:
                sparse[-neg] = 0
                left -= reduced[-neg]

    if left > 0:
        partial = c - 1 if c > s else -1
        for u in sorted(sparse, reverse=True):
            if sparse[u] == 0 and u not in trims:
                ev = full[u] - reduced[u]
                if 0 < ev <= left:
                    sparse[u] = 1
                    left -= ev
                elif ev > left and partial < 0:
                    partial = u
        # Fill a worthwhile remainder with the newest masked result, middle-trimmed.
        if partial >= 0 and valid[partial] and left >= max(_MIN_PARTIAL, budget // 50):
            cut, cost = _trim_unit(index, units[partial], reduced[partial] + left, counter)
            if cut is not None and cost > reduced[partial]:
                trims[partial] = (cut, cost)
                left -= cost - reduced[partial]

    while True:
        pieces = _pieces(index, sparse, s, c, hi, trims)
        messages, total, ev_total = _assemble(index, pieces, trims)
        if total <= budget:
            break
        # A measure charging merged messages more than their parts: drop the oldest optional unit.
        optional = [u for u in sorted(sparse) if u not in critical and u != last]
        if optional:
            del sparse[optional[0]]
            trims.pop(optional[0], None)
        elif s < c:
            s += 1
        elif c < hi:
            c += 1
            s = c
        else:
            raise BudgetExceeded(
                f"the selected messages must fit the message budget of {budget} tokens "
                f"(got {total})",
                rule="critical_exceeds",
                budget=budget,
            )

    _account(index, excluded, pieces, trims, lo, hi)
    return Selection(
        messages=tuple(messages),
        tokens=total,
        memory_tokens=total - ev_total,
        evidence_tokens=ev_total,
        excluded=_freeze(excluded),
    )


def _contiguous(
    index: _Index, lo: int, hi: int, left: int, ev_left: int, inner: list[int]
) -> tuple[int, int, int] | None:
    """The run ``[s, c)`` masked + ``[c, hi)`` whole that fits ``left``, by prefix sums.

    Returns ``(s, c, cost)``, or None when even the unmasked tail does not fit
    (the caller then walks unit by unit).
    """
    if lo >= hi:
        return hi, hi, 0
    cum_full, cum_red, cum_ev = index.cum_full, index.cum_red, index.cum_ev
    reduced = index.reduced
    c = bisect.bisect_left(cum_ev, cum_ev[hi] - max(0, ev_left), lo, hi)

    def cost(s: int) -> int:
        base = cum_full[hi] - cum_full[c] + cum_red[c] - cum_red[s]
        return base - sum(reduced[u] for u in inner if u >= s)

    if cost(c) > left:
        return None
    low, high = lo, c  # smallest s in [lo, c] with cost(s) <= left
    while low < high:
        mid = (low + high) // 2
        if cost(mid) <= left:
            high = mid
        else:
            low = mid + 1
    return low, c, cost(low)


def _greedy(
    index: _Index,
    lo: int,
    hi: int,
    left: int,
    ev_left: int,
    inner: list[int],
    sparse: dict[int, int],
) -> tuple[int, int]:
    """Walk back unit by unit (whole while evidence lasts, else masked); return the stop unit."""
    full, reduced, valid = index.full, index.reduced, index.valid
    critical = set(inner)
    for u in range(hi - 1, lo - 1, -1):
        if not valid[u]:
            continue
        ev = full[u] - reduced[u]
        if u in critical:
            sparse[u] = 0
            if ev and ev <= ev_left and ev <= left:
                sparse[u] = 1
                left -= ev
                ev_left -= ev
            continue
        if ev <= ev_left and full[u] <= left:
            sparse[u] = 1
            left -= full[u]
            ev_left -= ev
        elif reduced[u] <= left:
            sparse[u] = 0
            left -= reduced[u]
        else:
            for k in inner:
                if k < u:
                    sparse[k] = 0
            return u, left
    return lo - 1, left


_TRIM = 2
_GAP_LOOKBACK = 256


def _pieces(
    index: _Index,
    sparse: dict[int, int],
    s: int,
    c: int,
    hi: int,
    trims: dict[int, tuple[list[Message], int]],
) -> list[tuple[int, int, int]]:
    """Chosen units as ordered runs ``(from, to, kind)`` split at trims, gaps and role clashes."""
    spans: list[tuple[int, int, int]] = []
    for u in sorted(k for k in sparse if k < s):
        spans.append((u, u + 1, _TRIM if u in trims else sparse[u]))
    for a, b, kind in ((s, c, 0), (c, hi, 1)):
        if a >= b:
            continue
        cuts = sorted(
            {u for u in trims if a <= u < b}
            | {u + 1 for u in trims if a <= u < b}
            | set(_between(index.clash, a, b))
            | set(_between(index.invalid, a, b))
            | {u + 1 for u in _between(index.invalid, a, b)}
        )
        start = a
        for point in [*cuts, b]:
            if point > start:
                if start in trims:
                    spans.append((start, start + 1, _TRIM))
                elif index.valid[start] or point - start > 1:
                    spans.append((start, point, kind))
                start = point
    for u in sorted(k for k in sparse if k >= hi):
        spans.append((u, u + 1, _TRIM if u in trims else sparse[u]))
    return [span for span in spans if index.valid[span[0]]]


def _between(points: list[int], a: int, b: int) -> list[int]:
    return points[bisect.bisect_left(points, a) : bisect.bisect_left(points, b)]


def _account(
    index: _Index,
    excluded: dict[str, list[int]],
    pieces: list[tuple[int, int, int]],
    trims: dict[int, tuple[list[Message], int]],
    lo: int,
    hi: int,
) -> None:
    """Aggregate what the chosen pieces left out, masked or trimmed (by prefix sums)."""
    cv, cvm, cvf = index.cum_valid, index.cum_valid_msgs, index.cum_valid_full
    taken_units = taken_msgs = taken_tokens = 0
    for a, b, kind in pieces:
        if a >= lo and b <= hi:
            taken_units += cv[b] - cv[a]
            taken_msgs += cvm[b] - cvm[a]
            taken_tokens += cvf[b] - cvf[a]
        masked_units = index.cum_ev_units[b] - index.cum_ev_units[a]
        if kind == 0 and masked_units:
            _add(
                excluded,
                "masked_results",
                masked_units,
                index.cum_ev_msgs[b] - index.cum_ev_msgs[a],
                index.cum_ev[b] - index.cum_ev[a],
            )
        elif kind == _TRIM:
            a_msg, b_msg = index.units[a]
            _add(excluded, "trimmed_results", 1, b_msg - a_msg, index.full[a] - trims[a][1])
    if hi > lo:
        older = (cv[hi] - cv[lo] - taken_units, cvm[hi] - cvm[lo] - taken_msgs)
        tokens = cvf[hi] - cvf[lo] - taken_tokens
        if older[0]:
            _add(excluded, "older_than_window", older[0], older[1], tokens)
    for u in _between(index.invalid, lo, hi):
        a, b = index.units[u]
        _add(excluded, "broken_pair", 1, b - a, index.full[u])


def _freeze(excluded: dict[str, list[int]]) -> dict[str, Exclusion]:
    return {
        reason: Exclusion(units=row[0], messages=row[1], tokens=row[2])
        for reason, row in sorted(excluded.items())
    }


def _assemble(
    index: _Index,
    pieces: list[tuple[int, int, int]],
    trims: dict[int, tuple[list[Message], int]],
) -> tuple[list[Message], int, int]:
    view, alt = index.view, index.alt
    starts, units = index.starts, index.units
    out: list[Message] = []
    last_cost = 0
    total = 0
    ev_total = 0
    for a, b, kind in pieces:
        first_msg = starts[a]
        end_msg = units[b - 1][1]
        if kind == _TRIM:
            part: list[Message] = trims[a][0]
            part_cost = trims[a][1]
            tail_cost = index.cost_of(part[-1])
            head_cost = index.cost_of(part[0])
            ev_total += max(0, part_cost - index.reduced[a])
        elif kind == 1:
            part = view[first_msg:end_msg]
            part_cost = index.cum_full[b] - index.cum_full[a]
            head_cost = index.tokens[first_msg]
            tail_cost = index.tokens[end_msg - 1]
            ev_total += index.cum_ev[b] - index.cum_ev[a]
        else:
            part = alt[first_msg:end_msg]
            part_cost = index.cum_red[b] - index.cum_red[a]
            head_cost = index.masked_tokens[first_msg]
            tail_cost = index.masked_tokens[end_msg - 1]
        if out and out[-1].role is part[0].role:
            merged, cost = index.merged_message(out[-1], part[0])
            total += cost - last_cost - head_cost
            out[-1] = merged
            if len(part) == 1:
                last_cost = cost
                total += part_cost
                continue
            out.extend(part[1:])
        else:
            out.extend(part)
        total += part_cost
        last_cost = tail_cost
    return out, total, ev_total


def _trim_unit(
    index: _Index, unit: tuple[int, int], room: int, counter: TokenCounter
) -> tuple[list[Message] | None, int]:
    """The unit's messages with their largest tool results middle-trimmed to fit ``room``."""
    a, b = unit
    key = (a, b, room)
    hit = index.trims.get(key)
    current = tuple(index.view[a:b])
    if hit is not None and all(x is y for x, y in zip(hit[0], current, strict=True)):
        return hit[1], hit[2]
    if len(index.trims) > 256:
        index.trims.clear()
    found, cost = _trim_unit_uncached(index, unit, room, counter)
    index.trims[key] = (current, found, cost)
    return found, cost


def _trim_unit_uncached(
    index: _Index, unit: tuple[int, int], room: int, counter: TokenCounter
) -> tuple[list[Message] | None, int]:
    a, b = unit
    view = index.view
    messages = list(view[a:b])
    costs = list(index.tokens[a:b])
    order = sorted(range(b - a), key=lambda k: -(costs[k] - index.masked_tokens[a + k]))
    for k in order:
        total = sum(costs)
        if total <= room:
            break
        message = messages[k]
        results = message.tool_results
        if not results:
            continue
        allowed = room - (total - costs[k])
        fixed = index.masked_tokens[a + k]
        content_room = allowed - fixed
        if content_room <= 0:
            continue
        weight = costs[k] - fixed
        for _ in range(6):
            blocks: list[Block] = []
            for block in message.content:
                if isinstance(block, ToolResultBlock):
                    text = block.text
                    estimate = max(
                        1, weight * len(text) // max(1, sum(len(r.text) for r in results))
                    )
                    share = max(
                        1, content_room * len(text) // max(1, sum(len(r.text) for r in results))
                    )
                    cut = middle_trim(text, share, counter, known_tokens=estimate)
                    blocks.append(
                        ToolResultBlock(
                            tool_use_id=block.tool_use_id,
                            content=cut if cut is not None else "[trimmed]",
                            is_error=block.is_error,
                        )
                    )
                else:
                    blocks.append(block)
            candidate = attrs.evolve(
                message,
                content=tuple(blocks),
                metadata={**message.metadata, WINDOW_EDIT: "trimmed"},
            )
            cost = index.measure(candidate)
            if cost <= allowed:
                messages[k] = candidate
                costs[k] = cost
                break
            content_room -= cost - allowed + 8
            if content_room <= 0:
                break
    total = sum(costs)
    if total > room:
        return None, total
    return messages, total
