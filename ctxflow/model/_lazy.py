"""Placeholders: hidden messages whose bodies stay in the store until something reads them.

A long session hides most of its log behind summaries and truncations. A
lazy restore builds those hidden positions as :class:`Placeholder` messages:
each holds its id, role, compression tags and the *facts* the conversation's
indexes need (its tool calls and results, whether it is a summary), and a
:class:`Source` that can fetch its body. Reading any body field (content,
metadata, timestamp, text, tool blocks...) fetches the body once; every
later read uses the fetched message.

Gotchas: a placeholder compares and hashes as the message it stands for (so
reading equality pages it in); ``with_tags`` keeps it a placeholder; and
``attrs.evolve`` on one gives a plain :class:`Message`, since a placeholder
cannot be built from fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ctxflow.model._messages import Block, Message, Role, ToolResultBlock, ToolUseBlock

__all__ = [
    "SUMMARY_OF",
    "Facts",
    "IndexFacts",
    "OverlayPlaceholder",
    "Placeholder",
    "Source",
    "facts_of",
    "page_in",
]


class Facts(NamedTuple):
    """What a conversation's indexes need of a message without its body."""

    id: str
    role: Role
    uses: tuple[tuple[str, str], ...]  # (tool_use id, tool name)
    results: tuple[str, ...]  # the tool_use ids its results answer
    summary: bool  # whether its metadata names what it summarizes


class IndexFacts(Protocol):
    """What :class:`Facts` holds, as attributes: a :class:`Placeholder` has them too,
    so a writer's index can keep the placeholder instead of a Facts per message."""

    @property
    def id(self) -> str: ...
    @property
    def role(self) -> Role: ...
    @property
    def uses(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def results(self) -> tuple[str, ...]: ...
    @property
    def summary(self) -> bool: ...


class Source(Protocol):
    """Where placeholders fetch their bodies from (one read for many where it can)."""

    def fetch(self, wanted: Sequence[Placeholder]) -> list[Message]:
        """The messages ``wanted`` stand for (their tags kept), in order; a typed
        ``CtxflowError`` naming the message when one cannot be read."""
        ...


#: Metadata key on a summary message: the ids of the messages it covers.
SUMMARY_OF = "ctxflow.summary_of"


def facts_of(message: Message) -> Facts:
    """The index facts of ``message`` (a placeholder's own, without fetching)."""
    if isinstance(message, Placeholder):
        return message.facts
    return Facts(
        message.id,
        message.role,
        tuple((u.id, u.name) for u in message.tool_uses),
        tuple(r.tool_use_id for r in message.tool_results),
        bool(message.metadata) and SUMMARY_OF in message.metadata,
    )


def _loaded(self: Placeholder) -> Message:
    real = self._real
    if real is None:
        page_in((self,))
        real = self._real
        assert real is not None
    return real


def _body_field(name: str) -> Any:
    def get(self: Placeholder) -> Any:
        return getattr(_loaded(self), name)

    return property(get, doc=f"The message's {name} (fetches its body once).")


class Placeholder(Message):
    """A hidden message whose body is fetched from a :class:`Source` on first read."""

    # A placeholder's body fields are read through its body: the slots a message keeps
    # its tool blocks and pin in hold the placeholder's index facts instead (its tool
    # calls, the calls its results answer, whether it is a summary), so a hidden
    # message costs no Facts object of its own (see ``uses``, ``results``, ``summary``).
    __slots__ = ("_key", "_real", "_source")

    _key: str
    _real: Message | None
    _source: Source

    # Body fields: read through the fetched message.
    content = _body_field("content")
    timestamp = _body_field("timestamp")
    metadata = _body_field("metadata")
    important = _body_field("important")
    _uses = _body_field("_uses")
    _results = _body_field("_results")

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # attrs.evolve builds ``type(inst)(**fields)``: give it a plain message.
        return Message(*args, **kwargs)

    @classmethod
    def of(
        cls,
        facts: IndexFacts,
        *,
        key: str,
        source: Source,
        condense_parent: str | None,
        truncation_parent: str | None,
    ) -> Placeholder:
        """A placeholder for the message ``facts`` describe, its body under ``key``."""
        return cls.many((facts,), (key,), ((condense_parent, truncation_parent),), source)[0]

    @classmethod
    def many(
        cls,
        facts: Iterable[IndexFacts],
        keys: Iterable[str],
        tags: Iterable[tuple[str | None, str | None]],
        source: Source,
    ) -> list[Placeholder]:
        """Placeholders as :meth:`of` builds them, one for each of ``facts`` with the
        body key and (condense, truncation) tags of the same rank in ``keys`` and
        ``tags``, all fetching from ``source`` (a restore builds one per hidden message)."""
        new = object.__new__
        set_id, set_role, set_condense, set_truncation = _MESSAGE_SLOTS
        set_uses, set_results, set_summary = _FACT_SETTERS
        set_key, set_source, set_real = _PLACEHOLDER_SLOTS
        tagged = cls is Placeholder  # an overlay's tags are read through its body
        made: list[Placeholder] = []
        for fact, key, (condense, truncation) in zip(facts, keys, tags, strict=True):
            one = new(cls)
            if type(fact) is Facts:
                fact_id, role, uses, results, summary = fact
            else:
                fact_id, role = fact.id, fact.role
                uses, results, summary = fact.uses, fact.results, fact.summary
            set_id(one, fact_id)
            set_role(one, role)
            if tagged:
                set_condense(one, condense)
                set_truncation(one, truncation)
            set_uses(one, uses)
            set_results(one, results)
            set_summary(one, bool(summary))
            set_key(one, key)
            set_source(one, source)
            set_real(one, None)
            made.append(one)
        return made

    @property
    def key(self) -> str:
        """Where the body is kept in its source (a checkpoint store's body hash)."""
        return self._key

    if TYPE_CHECKING:

        @property
        def uses(self) -> tuple[tuple[str, str], ...]:
            """The (tool_use id, tool name) of its tool calls, known without the body."""

        @property
        def results(self) -> tuple[str, ...]:
            """The tool_use ids its tool results answer, known without the body."""

        @property
        def summary(self) -> bool:
            """Whether it is a summary (its metadata names what it covers), without the body."""

    else:  # the message slots themselves: read at C speed (a restore reads them all)
        uses, results, summary = (vars(Message)[n] for n in ("_uses", "_results", "important"))

    @property
    def facts(self) -> Facts:
        """Its index facts (:class:`Facts`), without the body."""
        return Facts(self.id, self.role, self.uses, self.results, self.summary)

    @property
    def loaded(self) -> bool:
        """True once the body was fetched."""
        return self._real is not None

    def message(self) -> Message:
        """The message this placeholder stands for (fetched on first call)."""
        return _loaded(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        if type(other) is Placeholder:
            other = _loaded(other)
        return _loaded(self) == other

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(_loaded(self))

    def __repr__(self) -> str:
        state = "loaded" if self._real is not None else "not loaded"
        return f"Placeholder(id={self.id!r}, role={self.role.value!r}, {state})"

    def __reduce__(self) -> str | tuple[Any, ...]:
        return _loaded(self).__reduce__()

    def with_content(
        self, content: Iterable[Block], *, metadata: Mapping[str, Any] | None = None
    ) -> Message:
        """See :meth:`Message.with_content` (fetches the body)."""
        return _loaded(self).with_content(content, metadata=metadata)

    def with_tags(self, *, condense_parent: str | None, truncation_parent: str | None) -> Message:
        """See :meth:`Message.with_tags`; an unfetched placeholder stays one."""
        if self._real is not None:
            return self._real.with_tags(
                condense_parent=condense_parent, truncation_parent=truncation_parent
            )
        # Checked as a message checks them (the probe's copy is dropped).
        _PROBE.with_tags(condense_parent=condense_parent, truncation_parent=truncation_parent)
        return Placeholder.of(
            self,
            key=self._key,
            source=self._source,
            condense_parent=condense_parent,
            truncation_parent=truncation_parent,
        )

    @property
    def tool_uses(self) -> tuple[ToolUseBlock, ...]:
        """The tool_use blocks, in order (fetches the body)."""
        return _loaded(self).tool_uses

    @property
    def tool_results(self) -> tuple[ToolResultBlock, ...]:
        """The tool_result blocks, in order (fetches the body)."""
        return _loaded(self).tool_results


_PROBE = Message(role=Role.USER, content=(), id="probe")

# The setters of the slots :meth:`Placeholder.many` fills (a frozen message refuses
# setattr; its slots' own setters are what ``object.__setattr__`` would reach).
_MESSAGE_SLOTS = tuple(
    vars(Message)[name].__set__ for name in ("id", "role", "condense_parent", "truncation_parent")
)
_PLACEHOLDER_SLOTS = tuple(vars(Placeholder)[name].__set__ for name in ("_key", "_source", "_real"))
# The message slots a placeholder keeps its index facts in (its uses, results, summary).
_FACT_SETTERS = tuple(vars(Message)[n].__set__ for n in ("_uses", "_results", "important"))


class OverlayPlaceholder(Placeholder):
    """An overlay laid over a hidden message, fetched on first read like a placeholder.

    Its compression tags are those its body holds (read through the body);
    its id, role and tool ids are its message's (an overlay keeps them).
    """

    __slots__ = ()

    condense_parent = _body_field("condense_parent")
    truncation_parent = _body_field("truncation_parent")

    def with_tags(self, *, condense_parent: str | None, truncation_parent: str | None) -> Message:
        """See :meth:`Message.with_tags` (fetches the body)."""
        return _loaded(self).with_tags(
            condense_parent=condense_parent, truncation_parent=truncation_parent
        )

    def __repr__(self) -> str:
        state = "loaded" if self._real is not None else "not loaded"
        return f"OverlayPlaceholder(id={self.id!r}, role={self.role.value!r}, {state})"


def page_in(messages: Iterable[Message]) -> None:
    """Fetch the bodies of the unfetched placeholders among ``messages``, one read per source."""
    by_source: dict[int, tuple[Source, list[Placeholder]]] = {}
    for message in messages:
        if isinstance(message, Placeholder) and message._real is None:
            source = message._source
            by_source.setdefault(id(source), (source, []))[1].append(message)
    for source, wanted in by_source.values():
        fetched = source.fetch(wanted)
        for placeholder, real in zip(wanted, fetched, strict=True):
            object.__setattr__(placeholder, "_real", real)
