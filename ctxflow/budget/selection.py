"""Budgeted selection: which turns of the effective view go into one window.

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
3. *recency*: walking back from the newest unit, each unit is taken whole
   while the evidence allowance lasts, else with its tool results masked (a
   short placeholder naming the tool and the size withheld); the walk stops
   at the first unit that does not fit even masked;
4. *gap fill*: older units that still fit, best score first (see
   :mod:`ctxflow.budget.scoring`), masked;
5. *lending*: whatever budget is left unmasks masked units, newest first.

Adjacent same-role messages at unit boundaries (a gap, a summary standing
next to a user turn) are merged into one message in the window.

Counts come from the conversation's cache (``Conversation.tokens``); the
masked and merged forms are measured once and cached per conversation (keyed
weakly, checked against the view by identity), so repeated builds never
re-tokenize the history.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable

import attrs

from ctxflow.budget.render import middle_trim
from ctxflow.budget.scoring import DEFAULT_WEIGHTS, Category, ScoreWeights, keywords, score_message
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
        self.system_text = ""
        self.tool_blocks = False
        self.first = 0  # first dialogue index (1 when the view starts with a system message)
        self.units: list[tuple[int, int]] = []
        self.valid: list[bool] = []
        self.full: list[int] = []
        self.reduced: list[int] = []
        self.statics: dict[int, tuple[float, bool, bool]] = {}  # id(message) -> score parts
        self.task_words: frozenset[str] | None = None
        self.merged: dict[tuple[int, int], tuple[Message, Message, Message, int]] = {}
        self.costs: dict[int, tuple[Message, int]] = {}
        self.trims: dict[tuple[int, int, int], tuple[Message, list[Message] | None, int]] = {}

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
        del self.valid[keep_units:]
        del self.full[keep_units:]
        del self.reduced[keep_units:]
        start = self.units[-1][1] if self.units else self.first
        self._build_units(view, start)

    def _closed(self, unit: int, view: list[Message]) -> bool:
        # A unit is final only when the message after it starts a new unit.
        end = self.units[unit][1]
        return end < len(view) and _starts_unit(view, end)

    def _add_masked(self, conversation: Conversation, view: list[Message], i: int) -> None:
        message = view[i]
        results = message.tool_results
        if not results or message.role is not Role.USER:
            self.masked.append(None)
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
            self.masked_tokens.append(self.tokens[i])
        else:
            self.masked.append(masked)
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
        if cached is None:
            score = score_message(message, position=0, count=1, task_words=words, weights=weights)
            cached = (score.value, score.category is Category.CRITICAL, False)
            self.statics[key] = cached
        return cached[0], cached[1]

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

    critical = [lead]
    for u in range(lead + 1, last):
        a, b = units[u]
        if valid[u] and any(view[i].important for i in range(a, b)):
            critical.append(u)
    # mode per unit: 1 full, 0 masked; a trimmed unit has replacement messages
    mode: dict[int, int] = {}
    reserved = 0
    for u in critical:
        mode[u] = 0
        reserved += reduced[u]
    trims: dict[int, tuple[list[Message], int]] = {}
    last_cost = full[last]
    if last != lead:
        if reserved + last_cost > budget:
            room = budget - reserved
            trimmed, last_cost = _trim_unit(index, units[last], room, counter)
            if trimmed is not None:
                trims[last] = (trimmed, last_cost)
            else:
                raise BudgetExceeded(
                    f"critical messages and the last turn must fit the message budget of {budget} "
                    f"tokens (got critical={reserved}, last turn={full[last]} before trimming)",
                    rule="critical_exceeds",
                    budget=budget,
                    critical=reserved,
                    last_turn=full[last],
                )
        mode[last] = 1
    else:
        if full[lead] <= budget:
            mode[lead] = 1
            reserved = full[lead]
            last_cost = 0
        else:
            room = budget
            trimmed, reserved = _trim_unit(index, units[lead], room, counter)
            if trimmed is not None:
                trims[lead] = (trimmed, reserved)
            else:
                raise BudgetExceeded(
                    f"the task turn must fit the message budget of {budget} tokens "
                    f"(got {reduced[lead]} at least)",
                    rule="critical_exceeds",
                    budget=budget,
                    critical=reduced[lead],
                )
            mode[lead] = 1
            last_cost = 0
    if reserved > budget - last_cost:
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
    ev_left = evidence - max(0, last_cost - reduced[last]) if last != lead else evidence

    stop = lead
    for u in range(last - 1, lead, -1):
        if not valid[u]:
            continue
        ev = full[u] - reduced[u]
        if u in mode:  # critical, reserved masked
            if ev and ev <= ev_left and ev <= left:
                mode[u] = 1
                left -= ev
                ev_left -= ev
            continue
        if ev <= ev_left and full[u] <= left:
            mode[u] = 1
            left -= full[u]
            ev_left -= ev
        elif reduced[u] <= left:
            mode[u] = 0
            left -= reduced[u]
        else:
            stop = u
            break

    if stop > lead and left > 0:
        words = keywords(task) if task else frozenset()
        count = len(view)
        candidates: list[tuple[float, int]] = []
        for u in range(lead + 1, stop + 1):
            if u in mode or not valid[u] or reduced[u] > left:
                continue
            a, b = units[u]
            best = None
            for i in range(a, b):
                value, _ = index.static_score(view[i], words, weights)
                value += weights.recency * i / max(1, count - 1)
                best = value if best is None or value > best else best
            if best is not None:
                candidates.append((-best, -u))
        candidates.sort()
        for _, neg in candidates:
            u = -neg
            if reduced[u] <= left:
                mode[u] = 0
                left -= reduced[u]

    if left > 0:
        partial = -1
        for u in sorted(mode, reverse=True):
            if mode[u] == 0:
                ev = full[u] - reduced[u]
                if 0 < ev <= left:
                    mode[u] = 1
                    left -= ev
                elif ev > left and partial < 0:
                    partial = u
        # Fill a worthwhile remainder with the newest masked result, middle-trimmed.
        if partial >= 0 and left >= max(_MIN_PARTIAL, budget // 50):
            cut, cost = _trim_unit(index, units[partial], reduced[partial] + left, counter)
            if cut is not None and cost > reduced[partial]:
                trims[partial] = (cut, cost)
                mode[partial] = 1
                left -= cost - reduced[partial]

    chosen = sorted(mode)
    while True:
        messages, total, ev_total = _assemble(index, chosen, mode, trims)
        if total <= budget:
            break
        # A measure charging merged messages more than their parts: drop the oldest optional unit.
        optional = [u for u in chosen if u not in critical and u != last]
        if not optional:
            raise BudgetExceeded(
                f"the selected messages must fit the message budget of {budget} tokens "
                f"(got {total})",
                rule="critical_exceeds",
                budget=budget,
            )
        chosen.remove(optional[0])
        del mode[optional[0]]
        trims.pop(optional[0], None)

    taken = set(chosen)
    for u in range(lead + 1, last):
        if u not in taken and valid[u]:
            a, b = units[u]
            _add(excluded, "older_than_window", 1, b - a, full[u])
        elif u not in taken:
            a, b = units[u]
            _add(excluded, "broken_pair", 1, b - a, full[u])
    for u in chosen:
        a, b = units[u]
        if u in trims:
            _add(excluded, "trimmed_results", 1, b - a, full[u] - trims[u][1])
        elif mode[u] == 0 and full[u] > reduced[u]:
            _add(excluded, "masked_results", 1, b - a, full[u] - reduced[u])
    return Selection(
        messages=tuple(messages),
        tokens=total,
        memory_tokens=total - ev_total,
        evidence_tokens=ev_total,
        excluded=_freeze(excluded),
    )


def _freeze(excluded: dict[str, list[int]]) -> dict[str, Exclusion]:
    return {
        reason: Exclusion(units=row[0], messages=row[1], tokens=row[2])
        for reason, row in sorted(excluded.items())
    }


def _assemble(
    index: _Index,
    chosen: Iterable[int],
    mode: dict[int, int],
    trims: dict[int, tuple[list[Message], int]],
) -> tuple[list[Message], int, int]:
    view = index.view
    units = index.units
    out: list[Message] = []
    costs: list[int] = []
    total = 0
    ev_total = 0
    for u in chosen:
        a, b = units[u]
        if u in trims:
            part = trims[u][0]
            part_costs = [index.cost_of(m) for m in part]
            ev_total += max(0, sum(part_costs) - index.reduced[u])
        elif mode[u]:
            part = view[a:b]
            part_costs = index.tokens[a:b]
            ev_total += index.full[u] - index.reduced[u]
        else:
            part = [m if m is not None else view[a + k] for k, m in enumerate(index.masked[a:b])]
            part_costs = index.masked_tokens[a:b]
        if out and out[-1].role is part[0].role:
            merged, cost = index.merged_message(out[-1], part[0])
            total += cost - costs[-1]
            out[-1] = merged
            costs[-1] = cost
            out.extend(part[1:])
            costs.extend(part_costs[1:])
            total += sum(part_costs[1:])
        else:
            out.extend(part)
            costs.extend(part_costs)
            total += sum(part_costs)
    return out, total, ev_total


def _trim_unit(
    index: _Index, unit: tuple[int, int], room: int, counter: TokenCounter
) -> tuple[list[Message] | None, int]:
    """The unit's messages with their largest tool results middle-trimmed to fit ``room``."""
    a, b = unit
    key = (a, b, room)
    hit = index.trims.get(key)
    if hit is not None and hit[0] is index.view[a]:
        return hit[1], hit[2]
    if len(index.trims) > 256:
        index.trims.clear()
    found, cost = _trim_unit_uncached(index, unit, room, counter)
    index.trims[key] = (index.view[a], found, cost)
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
