"""Rendering the stored layers as context blocks (the one place), split for a prompt cache.

Every layer that is not the message stream is rendered as text with a ``## ``
heading per section, in two parts:

- the **task** section (statement and pinned items) — stable for a whole
  session — goes into the system text, after the system prompt, so it sits in
  the prefix a provider's prompt cache can serve;
- everything that changes as the agent works — ``runtime`` (phase, step,
  the tools the phase allows, permissions), ``episodic`` / ``semantic`` /
  ``procedural`` memory, ``documents`` (L4's retrieved documents), ``work``
  (scratchpad and results) — goes into one ``<context>`` element that the
  window places **after** the messages (see :mod:`ctxflow.budget._window`),
  so a new step or phase never changes the bytes before it.

Each section is filled up to an allowance: memory entries newest first (shown
in chronological order), documents in their given order, and the work
scratchpad middle-trimmed. What did not fit is counted in ``dropped``. The
task statement and pinned items are fixed costs and are always rendered.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import attrs

from ctxflow.layers import Episode, Fact, LayeredState, Procedure, memory_digest, memory_line
from ctxflow.protocols import TokenCounter

MemoryItem = Episode | Fact | Procedure


class ChooseMemory(Protocol):
    """Picks a memory tier's items for a window when they do not all fit.

    Given the tier, its items, their lines and sizes, and the allowance, it
    returns the indexes kept, in render order, each with why it was kept.
    ``settled`` says the items render in front of the messages, where the
    choice must not move from step to step.
    """

    def __call__(
        self,
        tier: str,
        items: Sequence[MemoryItem],
        lines: Sequence[str],
        sizes: Sequence[int],
        allowance: int,
        *,
        settled: bool,
    ) -> list[tuple[int, str]]:
        """The kept indexes and why."""
        ...


__all__ = ["RenderedContext", "middle_trim", "render_context", "trim_marker"]


def trim_marker(removed_chars: int) -> str:
    """The marker that stands where a middle-trim removed text."""
    return f"\n[... {removed_chars:,} chars trimmed ...]\n"


def middle_trim(
    text: str, max_tokens: int, counter: TokenCounter, *, known_tokens: int | None = None
) -> str | None:
    """``text`` with its middle cut (head and tail kept, marker between) to fit ``max_tokens``.

    Returns None when not even the marker fits. ``known_tokens`` is an
    estimate of the text's count (avoids counting a huge text; the result is
    always counted).
    """
    tokens = counter.count(text) if known_tokens is None else known_tokens
    if tokens <= max_tokens and (known_tokens is None or counter.count(text) <= max_tokens):
        return text
    ratio = max_tokens / max(tokens, 1)
    keep = int(len(text) * ratio * 0.95)
    for _ in range(12):
        keep = max(0, min(keep, len(text) - 1))
        head = keep * 2 // 3
        tail = keep - head
        candidate = text[:head] + trim_marker(len(text) - keep) + (text[-tail:] if tail else "")
        size = counter.count(candidate)
        if size <= max_tokens:
            return candidate
        if keep == 0:
            return None
        keep = int(keep * max_tokens / size * 0.9)
    return None


@attrs.frozen(kw_only=True)
class RenderedContext:
    """The rendered context blocks: the stable task text, the late context, use and drops."""

    #: The ``<context>`` element placed after the messages ("" when empty).
    text: str
    used: Mapping[str, int]
    dropped: Mapping[str, int]
    #: The stable sections, for the system text: the task, then settled long-term memory
    #: (see ``MemoryLayer.settled``), which changes only at a compression ("" when empty).
    task: str = ""
    #: Per memory tier that was chosen by relevance, why each kept item was chosen.
    chosen: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)


def _fill(
    entries: Sequence[str],
    allowance: int,
    counter: TokenCounter,
    *,
    newest_first: bool,
    sizes: Sequence[int] | None = None,
) -> tuple[list[str], int, int]:
    """The entries that fit ``allowance`` (skipping those that do not), their cost, how many not.

    ``sizes``: the entries' counts when known (else counted here).
    """
    known = sizes if sizes is not None else [counter.count(entry) + 1 for entry in entries]
    pairs = list(zip(entries, known, strict=True))
    order = list(reversed(pairs)) if newest_first else pairs
    kept: list[str] = []
    used = 0
    dropped = 0
    for entry, size in order:
        if used + size <= allowance:
            kept.append(entry)
            used += size
        else:
            dropped += 1
    if newest_first:
        kept.reverse()
    return kept, used, dropped


class _Part(NamedTuple):
    """Items of a memory tier, their rendered lines and their sizes (parallel tuples)."""

    items: tuple[MemoryItem, ...]
    entries: tuple[str, ...]
    sizes: tuple[int, ...]


class _Kept(NamedTuple):
    items: Sequence[MemoryItem]
    settled: Sequence[str]
    counter: TokenCounter
    first: _Part
    newer: _Part


class _TierParts:
    """A memory tier split into its settled and newer parts, kept while the tier is.

    Memory changes at a consolidation, not at every window; between two, every
    window would render, count and digest each item again. A tier and the
    settled digests are immutable tuples, so the split is kept by their
    identity (the entry holds them, so an identity cannot be reused while it is
    kept). A few entries: the tiers of the engines a process runs at once.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._kept: OrderedDict[tuple[int, int, int], _Kept] = OrderedDict()
        self._lock = threading.Lock()

    def parts(
        self, items: Sequence[MemoryItem], settled: Sequence[str], counter: TokenCounter
    ) -> tuple[_Part, _Part]:
        key = (id(items), id(settled), id(counter))
        with self._lock:
            found = self._kept.get(key)
            if (
                found is not None
                and found.items is items
                and found.settled is settled
                and found.counter is counter
            ):
                self._kept.move_to_end(key)
                return found.first, found.newer
        entries = [memory_line(item) for item in items]
        sizes = [
            item.tokens or counter.count(entry) + 1
            for item, entry in zip(items, entries, strict=True)
        ]
        known = set(settled)
        first = [memory_digest(item) in known for item in items]
        first_part, newer_part = (
            _Part(
                tuple(i for i, s in zip(items, first, strict=True) if s is side),
                tuple(e for e, s in zip(entries, first, strict=True) if s is side),
                tuple(n for n, s in zip(sizes, first, strict=True) if s is side),
            )
            for side in (True, False)
        )
        if isinstance(items, tuple) and isinstance(settled, tuple):
            with self._lock:
                self._kept[key] = _Kept(items, settled, counter, first_part, newer_part)
                while len(self._kept) > self.size:
                    self._kept.popitem(last=False)
        return first_part, newer_part


_TIERS = _TierParts()


def _pick(
    tier: str,
    items: Sequence[MemoryItem],
    entries: Sequence[str],
    sizes: Sequence[int],
    allowance: int,
    choose: ChooseMemory | None,
    counter: TokenCounter,
    *,
    settled: bool,
) -> tuple[list[str], int, list[str]]:
    """The entries kept within ``allowance`` (by ``choose`` when not all fit), their cost, why."""
    if choose is not None and sum(sizes) > allowance:
        picked = choose(tier, items, entries, sizes, max(0, allowance), settled=settled)
        return (
            [entries[k] for k, _ in picked],
            sum(sizes[k] for k, _ in picked),
            [reason for _, reason in picked],
        )
    kept, spent, _ = _fill(entries, allowance, counter, newest_first=True, sizes=sizes)
    return kept, spent, []


def render_context(
    state: LayeredState,
    *,
    counter: TokenCounter,
    allowances: Mapping[str, int],
    choose: ChooseMemory | None = None,
) -> RenderedContext:
    """Render ``state``'s context blocks within per-section ``allowances`` (tokens).

    Sections: ``runtime``, ``episodic``, ``semantic``, ``procedural``,
    ``documents``, ``work``; the task section is always rendered. The task
    and the settled memory (the items as ``MemoryLayer.settled`` holds them:
    at the last compression) form the stable part (``task``: the system text, in
    front of the messages); the rest — runtime, memory written since,
    documents, the work buffer — is the late context (``text``: after the
    messages, changing every step). A memory
    tier whose items do not all fit keeps the newest that do, or, given
    ``choose``, the items it picks (by relevance: the engine passes one).
    Each item's cached token count is used when it has one.
    """
    sections: list[str] = []
    used: dict[str, int] = {}
    dropped: dict[str, int] = {}
    chosen: dict[str, tuple[str, ...]] = {}
    #: settled long-term memory: it changes only when a compression settles memory
    stable: list[str] = []

    task_text = ""
    task = state.task
    if task.statement or task.pinned:
        lines = ["## Task"]
        if task.statement:
            lines.append(task.statement)
        if task.pinned:
            lines.append("Pinned:")
            lines.extend(f"- {item}" for item in task.pinned)
        task_text = "\n".join(lines)

    runtime = state.runtime
    tools = ", ".join(t.name for t in state.projected_tools()) or "none"
    runtime_text = f"## Runtime\nphase: {runtime.phase}\nstep: {runtime.step}\ntools: {tools}"
    if runtime.permissions:
        runtime_text += "\npermissions: " + ", ".join(runtime.permissions)
    size = counter.count(runtime_text)
    if size <= allowances.get("runtime", 0):
        sections.append(runtime_text)
        used["runtime"] = size
    else:
        dropped["runtime"] = 1

    memory = state.memory
    tiers: list[tuple[str, str, Sequence[MemoryItem]]] = [
        ("episodic", "## Episodic memory", memory.episodic),
        ("semantic", "## Semantic memory", memory.semantic),
        ("procedural", "## Procedural memory", memory.procedural),
    ]
    for name, heading, items in tiers:
        if not items:
            continue
        room = allowances.get(name, 0) - counter.count(heading) - 1
        spent = lost = 0
        reasons: list[str] = []
        # settled items first (they render in front of the messages and must not move),
        # then the newer ones with what is left
        settled, newer = _TIERS.parts(items, memory.settled, counter)
        for part, target in ((settled, stable), (newer, sections)):
            if not part.items:
                continue
            kept, cost, why = _pick(
                name,
                part.items,
                part.entries,
                part.sizes,
                room - spent,
                choose,
                counter,
                settled=target is stable,
            )
            if kept:
                target.append("\n".join([heading, *kept]))
                spent += cost
            lost += len(part.items) - len(kept)
            reasons += why
        if spent:
            used[name] = spent + counter.count(heading) + 1
        if lost:
            dropped[name] = lost
        if reasons:
            chosen[name] = tuple(reasons)

    documents = state.evidence.documents
    if documents:
        heading = "## Documents"
        allowance = allowances.get("documents", 0) - counter.count(heading) - 1
        texts = [f"### {d.title or d.id} ({d.id})\n{d.text}" for d in documents]
        kept, spent, lost = _fill(texts, allowance, counter, newest_first=False)
        if kept:
            sections.append("\n".join([heading, *kept]))
            used["documents"] = spent + counter.count(heading) + 1
        if lost:
            dropped["documents"] = lost

    work = state.work
    if work.scratchpad or work.results or work.plan:
        allowance = allowances.get("work", 0)
        parts = ["## Work buffer"]
        if work.plan:  # the plan first: it is what the current step works from
            plan = middle_trim(
                f"Plan:\n{work.plan}", allowance - counter.count(parts[0]) - 1, counter
            )
            if plan:
                parts.append(plan)
                allowance -= counter.count(plan) + 1
            else:
                dropped["work"] = dropped.get("work", 0) + 1
        results = [f"- {key}: {value}" for key, value in sorted(work.results.items())]
        kept, spent, lost = _fill(results, allowance // 2, counter, newest_first=False)
        pad_allowance = allowance - spent - counter.count(parts[0]) - 2
        if work.scratchpad and pad_allowance > 0:
            pad = middle_trim(work.scratchpad, pad_allowance, counter)
            if pad:
                parts.append(pad)
            else:
                dropped["work"] = dropped.get("work", 0) + 1
        elif work.scratchpad:
            dropped["work"] = dropped.get("work", 0) + 1
        if kept:
            parts.append("Results:")
            parts.extend(kept)
        if lost:
            dropped["work"] = dropped.get("work", 0) + lost
        if len(parts) > 1:
            text = "\n".join(parts)
            sections.append(text)
            used["work"] = counter.count(text)

    task_text = "\n\n".join(part for part in (task_text, *stable) if part)
    if not sections:
        return RenderedContext(text="", used=used, dropped=dropped, task=task_text, chosen=chosen)
    text = "<context>\n" + "\n\n".join(sections) + "\n</context>"
    return RenderedContext(text=text, used=used, dropped=dropped, task=task_text, chosen=chosen)
