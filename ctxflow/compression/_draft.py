"""A draft of a compression: the effective view as it would be, and the changes that make it.

The ladder never touches the conversation until it knows the result fits. Each
rung turns one :class:`Draft` into a smaller one (copy on write); only the
final draft is committed, with one batched call per kind of change
(overlays, summaries, hides). A run that raises therefore leaves the
conversation exactly as it was, and no orphan summary ever enters the
append-only log.

The structural helpers encode why a hidden span keeps the view valid: a span
``[i, b)`` may disappear when ``view[i]`` and ``view[b]`` are *safe
boundaries* (neither is a message of tool results, so no tool pair crosses
the cut) and have the same role (so alternation holds around the gap).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from ctxflow.layers import Episode, Fact
from ctxflow.model import Conversation, Message, Role

__all__ = ["Draft", "dialogue_start", "is_result", "tail_start"]


def is_result(message: Message) -> bool:
    """True for a user message carrying tool results (it belongs to the call before it)."""
    return bool(message.tool_results)  # only user messages may carry tool results


def dialogue_start(view: Sequence[Message]) -> int:
    """The index of the first non-system message."""
    return 1 if view and view[0].role is Role.SYSTEM else 0


def tail_start(view: Sequence[Message]) -> int:
    """Where the last complete turn begins: the last assistant message, with its question.

    A view without an assistant message has no earlier turn to give up, so the
    tail is everything after the system prompt.
    """
    first = dialogue_start(view)
    for index in range(len(view) - 1, first - 1, -1):
        if view[index].role is Role.ASSISTANT:
            if index - 1 >= first and not is_result(view[index - 1]):
                return index - 1
            return index
    return first


class Draft:
    """The effective view a run would produce, with the changes that produce it.

    ``view`` and ``tokens`` run in parallel; ``overlays`` maps message ids to
    replacements, ``hidden`` maps ids to their truncation event, ``summaries``
    lists new summary messages with the ids they cover. ``facts`` and
    ``episodes`` are memory entries to add to the layered state on commit.
    ``original`` gives a message as appended, by id (a shown one may be an
    overlay); a draft built by hand without it treats the view as original.
    """

    __slots__ = (
        "episodes",
        "facts",
        "hidden",
        "measure",
        "original",
        "overlay_counts",
        "overlays",
        "summaries",
        "tokens",
        "total",
        "view",
    )

    def __init__(
        self,
        *,
        view: list[Message],
        tokens: list[int],
        measure: Callable[[Message], int],
        overlays: dict[str, Message] | None = None,
        overlay_counts: dict[str, int] | None = None,
        hidden: dict[str, str] | None = None,
        summaries: tuple[tuple[Message, tuple[str, ...]], ...] = (),
        facts: tuple[Fact, ...] = (),
        episodes: tuple[Episode, ...] = (),
        total: int | None = None,
        original: Callable[[str], Message] | None = None,
    ) -> None:
        self.view = view
        self.original = original
        self.tokens = tokens
        self.measure = measure
        self.overlays = overlays or {}
        self.overlay_counts = overlay_counts or {}
        self.hidden = hidden or {}
        self.summaries = summaries
        self.facts = facts
        self.episodes = episodes
        self.total = sum(tokens) if total is None else total

    @classmethod
    def of(cls, conversation: Conversation) -> Draft:
        """The draft of a conversation as it stands (no changes yet)."""
        return cls(
            view=conversation.effective(),
            tokens=conversation.effective_counts(),
            measure=conversation.measure,
            total=conversation.effective_tokens,
            original=conversation.original,
        )

    def _copy(self, **changes: object) -> Draft:
        values: dict[str, object] = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        if "tokens" in changes and "total" not in changes:
            values["total"] = None
        return Draft(**values)  # type: ignore[arg-type]

    @property
    def changed(self) -> bool:
        """True when the draft differs from the conversation it came from."""
        return bool(self.overlays or self.hidden or self.summaries)

    def with_overlays(
        self, replacements: Mapping[int, Message], counts: Mapping[int, int] | None = None
    ) -> Draft:
        """Show replacements at view indices (same id, role and tool ids); ``counts`` if known."""
        if not replacements:
            return self
        view = list(self.view)
        tokens = list(self.tokens)
        overlays = dict(self.overlays)
        overlay_counts = dict(self.overlay_counts)
        total = self.total
        for index, message in replacements.items():
            count = counts[index] if counts is not None else self.measure(message)
            total += count - tokens[index]
            view[index] = message
            tokens[index] = count
            overlays[message.id] = message
            overlay_counts[message.id] = count
        return self._copy(
            view=view, tokens=tokens, overlays=overlays, overlay_counts=overlay_counts, total=total
        )

    def without(self, indices: Iterable[int], tag: str, facts: Sequence[Fact] = ()) -> Draft:
        """Hide the messages at view indices under truncation event ``tag``."""
        drop = set(indices)
        if not drop:
            return self
        hidden = dict(self.hidden)
        removed = 0
        fresh = {summary.id: covers for summary, covers in self.summaries}
        dropped: set[str] = set()
        for index in drop:
            message_id = self.view[index].id
            removed += self.tokens[index]
            if message_id in fresh:
                # A summary planned in this run and hidden again is never written:
                # what it covers is hidden under this tag instead (no orphan in the log).
                dropped.add(message_id)
                hidden.update(dict.fromkeys(fresh[message_id], tag))
            else:
                hidden[message_id] = tag
        summaries = tuple(s for s in self.summaries if s[0].id not in dropped)
        view: list[Message] = []
        tokens: list[int] = []
        start = 0
        for index in sorted(drop):  # copy the kept runs between the hidden ones
            if index > start:
                view += self.view[start:index]
                tokens += self.tokens[start:index]
            start = index + 1
        view += self.view[start:]
        tokens += self.tokens[start:]
        return self._copy(
            view=view,
            tokens=tokens,
            hidden=hidden,
            summaries=summaries,
            total=self.total - removed,
            facts=(*self.facts, *facts),
        )

    def with_summary(
        self,
        start: int,
        stop: int,
        summary: Message,
        *,
        episode: Episode | None = None,
        facts: Sequence[Fact] = (),
    ) -> Draft:
        """Replace ``view[start:stop]`` by ``summary``, which covers those messages."""
        covers = tuple(m.id for m in self.view[start:stop])
        count = self.measure(summary)
        removed = sum(self.tokens[start:stop])
        view = [*self.view[:start], summary, *self.view[stop:]]
        tokens = [*self.tokens[:start], count, *self.tokens[stop:]]
        return self._copy(
            view=view,
            tokens=tokens,
            total=self.total - removed + count,
            summaries=(*self.summaries, (summary, covers)),
            facts=(*self.facts, *facts),
            episodes=(*self.episodes, episode) if episode is not None else self.episodes,
        )

    def covered_ids(self) -> set[str]:
        """Every id a new summary of this draft covers."""
        return {i for _, covers in self.summaries for i in covers}

    def commit(self, conversation: Conversation, *, keep_valid: bool = False) -> None:
        """Apply the changes to ``conversation`` in one call (one view rebuild).

        With ``keep_valid``, a result the conversation finds invalid raises
        :class:`~ctxflow.errors.InvalidConversation` and changes nothing.
        """
        gone = self.covered_ids() | set(self.hidden)
        conversation.apply(
            overlays={i: m for i, m in self.overlays.items() if i not in gone},
            overlay_counts=self.overlay_counts,
            summaries=self.summaries,
            hidden=self.hidden,
            keep_valid=keep_valid,
        )
