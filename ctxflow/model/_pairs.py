"""The tool-pair index: where each tool call was made and where it was answered.

It follows the log, not the view: hiding a call or its result changes
neither. Summaries carry no tool blocks, so a change after the append never
touches the index and there is nothing here to undo.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import attrs

from ctxflow.errors import InvalidMessage
from ctxflow.model._lazy import Facts, IndexFacts, Placeholder
from ctxflow.model._log import refusal
from ctxflow.model._messages import Message

__all__ = ["PairBatch", "PairIndex", "ToolPair"]


@attrs.frozen(kw_only=True)
class ToolPair:
    """A tool_use and where it was answered (``result_message`` is None while pending)."""

    tool_use_id: str
    name: str
    use_message: str
    result_message: str | None


class PairIndex:
    """Tool calls by id, in call order, with the messages that made and answered them."""

    __slots__ = ("results", "uses")

    def __init__(self) -> None:
        self.uses: dict[str, tuple[str, str]] = {}  # tool_use id -> (message id, tool name)
        self.results: dict[str, str] = {}  # tool_use id -> message id of the result

    def pair(self, tool_use_id: str) -> ToolPair:
        """Where a tool call was made and answered."""
        try:
            message_id, name = self.uses[tool_use_id]
        except KeyError:
            raise InvalidMessage(
                f"no tool_use with id {tool_use_id!r}",
                rule="unknown_tool_use",
                tool_use_id=tool_use_id,
            ) from None
        return ToolPair(
            tool_use_id=tool_use_id,
            name=name,
            use_message=message_id,
            result_message=self.results.get(tool_use_id),
        )

    def __iter__(self) -> Iterator[ToolPair]:
        for tool_use_id in self.uses:
            yield self.pair(tool_use_id)

    def admit(self, batch: Sequence[Message | IndexFacts], base: int) -> PairBatch | None:
        """The tool blocks of ``batch`` (its first message at log position ``base``), all checked.

        A call's id must be new; a result must answer a call made before it
        (in the index or earlier in the batch) and not answered yet. Nothing
        is added to the index until :meth:`add`. None when no message of the
        batch carries a tool block. An entry may be a message's index facts (a
        lazy restore's unbuilt message).
        """
        used, answered = self.uses, self.results
        new = PairBatch()
        new_uses, new_results = new.uses, new.results
        for at, message in enumerate(batch, base):
            kind = type(message)
            if kind is Facts:  # an unbuilt message's facts (a restore reads many)
                ident, _, calls, answers, _ = message  # type: ignore[misc]
            elif kind is Placeholder:  # its facts, without a body
                ident, calls, answers = message.id, message.uses, message.results  # type: ignore[union-attr]
            else:
                uses, results = message.tool_uses, message.tool_results  # type: ignore[union-attr]
                if not (uses or results):
                    continue
                ident = message.id
                calls = tuple((u.id, u.name) for u in uses)
                answers = tuple(r.tool_use_id for r in results)
            for use_id, name in calls:
                if use_id in used or use_id in new_uses:
                    raise refusal(
                        at,
                        "duplicate_tool_use_id",
                        f"tool_use id {use_id!r} is already used",
                        tool_use_id=use_id,
                    )
                new_uses[use_id] = (ident, name)
            for answer in answers:
                if answer not in used and answer not in new_uses:
                    raise refusal(
                        at,
                        "orphan_tool_result",
                        f"tool_result {answer!r} answers no tool_use",
                        tool_use_id=answer,
                    )
                if answer in answered or answer in new_results:
                    raise refusal(
                        at,
                        "duplicate_tool_result",
                        f"tool_use {answer!r} is already answered",
                        tool_use_id=answer,
                    )
                new_results[answer] = ident
        return new if new_uses or new_results else None

    def add(self, admitted: PairBatch | None) -> None:
        """Index the tool blocks of an admitted batch (once its messages are in the log)."""
        if admitted is not None:
            self.uses.update(admitted.uses)
            self.results.update(admitted.results)


class PairBatch:
    """The calls and results of messages being appended, checked but not yet indexed."""

    __slots__ = ("results", "uses")

    def __init__(self) -> None:
        self.uses: dict[str, tuple[str, str]] = {}
        self.results: dict[str, str] = {}
