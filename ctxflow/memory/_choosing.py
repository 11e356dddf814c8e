"""Choosing memory for a window by relevance: the engine's ``choose_memory``.

When a memory tier's items do not all fit its allocation, the window keeps
those most relevant to the task and the latest user turn (BM25 over the
items' lines, :func:`ctxflow.memory._retrieval.choose`), then the most
important and the most recent; ``ctxflow window --explain`` prints why each
was kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from ctxflow.budget import ChooseMemory
from ctxflow.layers import Episode, Fact, LayeredState, Procedure
from ctxflow.memory._retrieval import BM25Retriever, Retriever, choose
from ctxflow.model import Conversation, Role

__all__ = ["memory_query", "relevance_chooser"]

#: One retriever for every engine: it caches the indexes of the memories it ranked last.
_SHARED = BM25Retriever(cache_size=16)


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
        newest = max((item.step for item in items), default=0) or 1
        chosen = choose(
            lines,
            stable_query if settled and stable_query is not None else query,
            sizes=sizes,
            allowance=allowance,
            importance=[item.importance for item in items],
            recency=[min(1.0, max(0.0, item.step / newest)) for item in items],
            retriever=ranker,
        )
        return [
            (ranked.index, f"{_label(items[ranked.index])}: {ranked.reason}") for ranked in chosen
        ]

    return pick


def _label(item: Episode | Fact | Procedure) -> str:
    if isinstance(item, Episode):
        return item.id
    if isinstance(item, Fact):
        return item.key
    return item.name
