"""Choosing memory for a window by relevance: the engine's ``choose_memory``.

When a memory tier's items do not all fit its allocation, the window keeps
those most relevant to the task and the latest user turn (BM25 over the
items' lines, :func:`ctxflow.memory._retrieval.choose`), then the most
important and the most recent; ``ctxflow window --explain`` prints why each
was kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence

from ctxflow.budget import ChooseMemory
from ctxflow.layers import Episode, Fact, LayeredState, Procedure
from ctxflow.memory._retrieval import BM25Retriever, Retriever, choose
from ctxflow.model import Conversation, Role

__all__ = ["memory_query", "relevance_chooser"]

#: One retriever for every engine: it caches the indexes of the memories it ranked last.
_SHARED = BM25Retriever(cache_size=16)


class _Picks:
    """The latest choices by their inputs. Settled memory is ranked by a query that stays
    the same all session, so until memory or its allowance changes, every window asks
    the same question again."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._found: OrderedDict[Hashable, list[tuple[int, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> list[tuple[int, str]] | None:
        with self._lock:
            found = self._found.get(key)
            if found is not None:
                self._found.move_to_end(key)
            return found

    def put(self, key: Hashable, picked: list[tuple[int, str]]) -> None:
        with self._lock:
            self._found[key] = picked
            while len(self._found) > self.size:
                self._found.popitem(last=False)


_PICKS = _Picks()


class _Features:
    """Items' importance and recency, kept by the identity of an items tuple (a window
    renders the same tier tuple until memory changes; the entry holds it)."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._kept: OrderedDict[int, tuple[object, tuple[float, ...], tuple[float, ...]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def of(
        self, items: Sequence[Episode | Fact | Procedure]
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        with self._lock:
            found = self._kept.get(id(items))
            if found is not None and found[0] is items:
                self._kept.move_to_end(id(items))
                return found[1], found[2]
        newest = max((item.step for item in items), default=0) or 1
        importance = tuple(item.importance for item in items)
        recency = tuple(min(1.0, max(0.0, item.step / newest)) for item in items)
        if isinstance(items, tuple):
            with self._lock:
                self._kept[id(items)] = (items, importance, recency)
                while len(self._kept) > self.size:
                    self._kept.popitem(last=False)
        return importance, recency


_FEATURES = _Features()


def memory_query(state: LayeredState, conversation: Conversation, *, latest: bool = True) -> str:
    """What memory should be relevant to: the task statement and the latest user text.

    ``latest=False``: the task statement and the first user text, which stay
    the same all session (what settled memory, in front of the messages, is
    chosen by, so that a new user turn does not move it).
    """
    view = conversation.effective()
    order = reversed(view) if latest else iter(view)
    text = ""
    for message in order:
        if message.role is Role.USER and message.text and not message.tool_results:
            text = message.text
            break
    return f"{state.task.statement}\n{text[-4_000:]}".strip()


def relevance_chooser(
    query: str, *, stable_query: str | None = None, retriever: Retriever | None = None
) -> ChooseMemory:
    """A ``choose_memory`` for :func:`ctxflow.budget.build_window` ranking by ``query``.

    Settled items are ranked by ``stable_query`` (default: ``query``).
    """
    ranker = retriever if retriever is not None else _SHARED

    def pick(
        tier: str,
        items: Sequence[Episode | Fact | Procedure],
        lines: Sequence[str],
        sizes: Sequence[int],
        allowance: int,
        *,
        settled: bool,
    ) -> list[tuple[int, str]]:
        asked = stable_query if settled and stable_query is not None else query
        importance, recency = _FEATURES.of(items)
        key = (ranker, tier, asked, tuple(lines), tuple(sizes), allowance, importance, recency)
        cached = isinstance(ranker, Hashable)
        known = _PICKS.get(key) if cached else None
        if known is not None:
            return list(known)
        chosen = choose(
            lines,
            asked,
            sizes=sizes,
            allowance=allowance,
            importance=importance,
            recency=recency,
            retriever=ranker,
        )
        picked = [
            (ranked.index, f"{_label(items[ranked.index])}: {ranked.reason}") for ranked in chosen
        ]
        if cached:
            _PICKS.put(key, picked)
        return list(picked)

    return pick


def _label(item: Episode | Fact | Procedure) -> str:
    if isinstance(item, Episode):
        return item.id
    if isinstance(item, Fact):
        return item.key
    return item.name
