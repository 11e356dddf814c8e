"""Merging several contexts into one, and splitting one context in two.

Merging interleaves the contexts' messages by time, one *turn unit* at a time
(an assistant message with the user message answering its tool calls never
comes apart), keeps the first system prompt, and joins adjacent messages of the
same role into one so the result alternates as every API requires. The
originals are untouched: a merge builds a new context.

Layers and user data merge by a chosen strategy:

- ``last`` (last write wins): later contexts override earlier ones;
- ``first`` (first write wins): earlier contexts keep their values;
- ``deep``: mappings merge key by key (recursively), memories are unioned
  (facts by key, last wins; episodes and procedures de-duplicated).

A tool id used in two contexts cannot be merged (the result would have two
calls with one id): :class:`~ctxflow.errors.SessionError` names the id and
both contexts. Splitting at a message that would cut a tool pair, or leave the
second half starting with an assistant message, is refused the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from ctxflow.errors import SessionError
from ctxflow.layers import LayeredState
from ctxflow.model import SUMMARY_OF, Conversation, Message, Role, new_id

__all__ = ["MergeStrategy", "Part", "merge_parts", "originals", "split_messages"]

MergeStrategy = Literal["last", "first", "deep"]
STRATEGIES: tuple[MergeStrategy, ...] = ("last", "first", "deep")


@attrs.frozen(kw_only=True)
class Part:
    """What one context brings to a merge."""

    id: str
    messages: tuple[Message, ...]
    state: LayeredState
    data: Mapping[str, Any] = attrs.field(factory=dict)


def originals(conversation: Conversation) -> list[Message]:
    """The log without compression artefacts: tags cleared, summary messages left out.

    Merges and splits work on these, so no half refers to a summary the other
    half holds; every original message is kept.
    """
    return [
        attrs.evolve(m, condense_parent=None, truncation_parent=None)
        for m in conversation.messages
        if SUMMARY_OF not in m.metadata
    ]


def _units(messages: Sequence[Message]) -> list[list[Message]]:
    """Turn units: an assistant message with tool calls and the user message answering them."""
    units: list[list[Message]] = []
    for message in messages:
        if message.role is Role.SYSTEM:
            continue
        if units and message.tool_results and units[-1][-1].tool_uses:
            units[-1].append(message)
        else:
            units.append([message])
    return units


def _deep(a: Any, b: Any) -> Any:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = dict(a)
        for key, value in b.items():
            out[key] = _deep(out[key], value) if key in out else value
        return out
    return b


def _merge_states(states: Sequence[LayeredState], strategy: MergeStrategy) -> LayeredState:
    if strategy == "last":
        return states[-1]
    if strategy == "first":
        return states[0]
    merged = states[0]
    for state in states[1:]:
        merged = merged.with_facts(state.memory.semantic)
        for procedure in state.memory.procedural:
            merged = merged.with_procedure(procedure)
        known = {e.id for e in merged.memory.episodic}
        for episode in state.memory.episodic:
            if episode.id not in known:
                merged = merged.with_episode(episode)
        documents = {d.id: d for d in (*merged.evidence.documents, *state.evidence.documents)}
        merged = attrs.evolve(
            merged,
            evidence=attrs.evolve(merged.evidence, documents=tuple(documents.values())),
            work=attrs.evolve(
                merged.work,
                scratchpad="\n".join(
                    s for s in (merged.work.scratchpad, state.work.scratchpad) if s
                ),
                results={**merged.work.results, **state.work.results},
            ),
        )
    return merged


def _merge_data(datas: Sequence[Mapping[str, Any]], strategy: MergeStrategy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for data in datas if strategy != "first" else list(reversed(datas)):
        out = _deep(out, data) if strategy == "deep" else {**out, **data}
    return out


def _join(a: Message, b: Message) -> Message:
    """One message holding a's blocks then b's (tool results kept first, as APIs require)."""
    blocks = (*a.content, *b.content)
    results = tuple(x for x in blocks if x.type == "tool_result")
    rest = tuple(x for x in blocks if x.type != "tool_result")
    return Message(
        role=a.role,
        content=(*results, *rest),
        id=new_id(),
        timestamp=a.timestamp,
        metadata={"ctxflow.joined": [a.id, b.id]},
        important=a.important or b.important,
    )


def merge_parts(
    parts: Sequence[Part], *, strategy: MergeStrategy = "last"
) -> tuple[list[Message], LayeredState, dict[str, Any]]:
    """Merge parts into one message list (valid, alternating), one state and one data map."""
    if strategy not in STRATEGIES:
        raise SessionError(
            f"'strategy' must be one of {', '.join(STRATEGIES)} (got {strategy!r})",
            rule="merge_strategy",
        )
    if len(parts) < 2:
        raise SessionError("a merge needs at least two contexts", rule="merge_arity")
    owners: dict[str, str] = {}
    seen_ids: dict[str, str] = {}
    for part in parts:
        for message in part.messages:
            if message.id in seen_ids and seen_ids[message.id] != part.id:
                raise SessionError(
                    f"message id {message.id!r} is in contexts {seen_ids[message.id]!r} and "
                    f"{part.id!r}",
                    rule="merge_message_conflict",
                    message_id=message.id,
                )
            seen_ids[message.id] = part.id
            for use in message.tool_uses:
                if use.id in owners:
                    raise SessionError(
                        f"tool id {use.id!r} is used in contexts {owners[use.id]!r} and "
                        f"{part.id!r}; they cannot be merged",
                        rule="merge_tool_conflict",
                        tool_use_id=use.id,
                        contexts=(owners[use.id], part.id),
                    )
                owners[use.id] = part.id
    system = next((m for p in parts for m in p.messages if m.role is Role.SYSTEM), None)
    # Stable interleaving by time: units without a timestamp keep their context's order.
    keyed = []
    for rank, part in enumerate(parts):
        last_time = float("-inf")
        for position, unit in enumerate(_units(part.messages)):
            stamp = unit[0].timestamp
            last_time = stamp if stamp is not None else last_time
            keyed.append(((last_time, rank, position), unit))
    keyed.sort(key=lambda item: item[0])
    out: list[Message] = [system] if system is not None else []
    for _, unit in keyed:
        for message in unit:
            previous = out[-1] if out else None
            if previous is not None and previous.role is message.role:
                if previous.role is Role.USER and message.tool_results:
                    raise SessionError(  # pragma: no cover - units keep results after calls
                        f"message {message.id!r} would lose its tool call", rule="merge_pairs"
                    )
                out[-1] = _join(previous, message)
            else:
                if message.role is Role.ASSISTANT and (
                    previous is None or previous.role is Role.SYSTEM
                ):
                    # The dialogue must open with a user turn.
                    out.append(Message.user("(merged context)", id=new_id()))
                out.append(message)
    state = _merge_states([p.state for p in parts], strategy)
    data = _merge_data([p.data for p in parts], strategy)
    Conversation(out, measure=lambda m: 0)  # the log's own rules hold for the result
    return out, state, data


def split_messages(
    conversation: Conversation, at: str, *, context_id: str = ""
) -> tuple[list[Message], list[Message]]:
    """Split the log before message ``at``: (system + messages before, system + from ``at``).

    ``at`` must start a user turn (a user message answering no tool call), so
    neither half cuts a tool pair and the second half starts as APIs require.
    """
    if at not in conversation:
        raise SessionError(
            f"context {context_id!r} has no message {at!r}",
            rule="split_unknown_message",
            message_id=at,
        )
    message = conversation.original(at)
    index = conversation.index_of(at)
    if message.role is not Role.USER or message.tool_results:
        what = (
            "answers a tool call"
            if message.tool_results
            else f"is not a user message ({message.role})"
        )
        raise SessionError(
            f"context {context_id!r}: cannot split at message {at!r} (index {index}): it {what}; "
            "a split point must start a user turn",
            rule="split_inside_pair" if message.tool_results else "split_point",
            message_id=at,
        )
    log = originals(conversation)
    index = next(i for i, m in enumerate(log) if m.id == at)
    system = [log[0]] if log and log[0].role is Role.SYSTEM else []
    head = log[:index]
    tail = system + log[index:]
    if not [m for m in head if m.role is not Role.SYSTEM]:
        raise SessionError(
            f"context {context_id!r}: splitting at {at!r} leaves the first part empty",
            rule="split_point",
            message_id=at,
        )
    return head, tail
