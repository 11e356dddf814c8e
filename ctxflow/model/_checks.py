"""Checks shared by the message model: field types, and text that is valid Unicode.

A Python ``str`` may hold a lone surrogate (``json.loads`` makes one from an
escaped ``"\\ud800"``). It cannot be encoded as UTF-8, so a message holding
one would fail much later, in a checkpoint or a provider request, and keep
failing there; the message model refuses it when a message is made.

The checks run on every message, so each starts with a fast path: an ascii
string (the common case) is valid, and only other strings are encoded, where
the ``UnicodeEncodeError`` gives the offset. Nested values (tool input,
metadata) are walked to at most :data:`MAX_NESTING` levels, which also ends
the walk of a value that contains itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from ctxflow.errors import InvalidMessage

__all__ = [
    "MAX_NESTING",
    "Fault",
    "checked_mapping",
    "nested",
    "text_fault",
    "to_extra",
    "to_metadata",
    "wrong_type",
]

#: How deep tool input, image sources, ``extra`` and metadata may nest (far below the
#: recursion limit, and below what a checkpoint can encode).
MAX_NESTING = 256

#: Where a bad string is (path parts, innermost first) and the offset of its lone
#: surrogate; offset -1: the value nests deeper than MAX_NESTING.
Fault: TypeAlias = tuple[list[str], int]

#: Types the walk skips without an isinstance check; and the types it walks into.
_LEAVES = frozenset({int, float, bool, type(None), bytes})
_NESTED = (dict, list, tuple, Mapping)


def wrong_type(owner: str, field: str, expected: str, value: object) -> InvalidMessage:
    """The error for a field of the wrong type: ``<owner> '<field>' must be <expected>``."""
    got = type(value).__name__
    return InvalidMessage(
        f"{owner} {field!r} must be {expected} (got {got})", rule="field_type", field=field, got=got
    )


def checked_mapping(value: object, field: str) -> dict[str, Any]:
    """A copy of ``value`` as a dict (None: empty); ``InvalidMessage`` unless it is a mapping
    with str keys."""
    if type(value) is dict:
        if not value:
            return {}
    elif value is None:
        return {}
    elif not isinstance(value, Mapping):
        raise _not_a_mapping(field, type(value).__name__, "")
    copy = dict(value)
    for key in copy:
        if not isinstance(key, str):
            raise _not_a_mapping(field, type(key).__name__, f" key {key!r}")
    return copy


def _not_a_mapping(field: str, got: str, key: str) -> InvalidMessage:
    where = f"the {got}{key}" if key else got
    return InvalidMessage(
        f"{field!r} must be a mapping with string keys (got {where})",
        rule="field_type",
        field=field,
        got=got,
    )


def to_extra(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A block's ``extra``, checked and copied."""
    if type(value) is dict and not value:
        return {}
    return checked_mapping(value, "extra")


def to_metadata(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A message's ``metadata``, checked and copied."""
    if type(value) is dict and not value:
        return {}
    return checked_mapping(value, "metadata")


def _lone_surrogate(text: str) -> int:
    """The offset of the first lone surrogate in ``text``, or -1 when there is none."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return -1


def text_fault(name: str, value: str) -> Fault | None:
    """The fault of string field ``name`` holding a lone surrogate, or None."""
    if value.isascii():
        return None
    at = _lone_surrogate(value)
    return None if at < 0 else ([name], at)


def nested(name: str, value: object) -> Fault | None:
    """The first string in field ``name`` (keys included) holding a lone surrogate, or None."""
    fault = _nested_fault(value, 1)
    if fault is not None:
        fault[0].append(name)
    return fault


def _nested_fault(value: object, depth: int) -> Fault | None:
    if depth > MAX_NESTING:
        return [], -1
    pairs: Iterable[tuple[str, object]]
    if type(value) is dict or isinstance(value, Mapping):
        for key in value:
            if type(key) is str and not key.isascii():
                at = _lone_surrogate(key)
                if at >= 0:
                    return [f" key {key!r}"], at
        pairs = ((f"[{key!r}]", item) for key, item in value.items())
    elif isinstance(value, list | tuple):
        pairs = ((f"[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for label, item in pairs:
        if isinstance(item, str):
            if item.isascii():
                continue
            at = _lone_surrogate(item)
            if at >= 0:
                return [label], at
        elif type(item) not in _LEAVES and isinstance(item, _NESTED):
            fault = _nested_fault(item, depth + 1)
            if fault is not None:
                fault[0].append(label)
                return fault
    return None
