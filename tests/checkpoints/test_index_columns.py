"""A manifest's columns read in one pass each: the same values and refusals as entry by entry."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest

from ctxflow.errors import InvalidMessage
from ctxflow.model import (
    Conversation,
    Facts,
    Message,
    OverlayPlaceholder,
    Placeholder,
    Role,
    TextBlock,
)
from ctxflow.persistence._manifest import (
    _unpack_ids,
    pack_index,
    unpack_hashes,
    unpack_index,
    unpack_tag_columns,
)


def _ids_one_by_one(prefixes: list[str], packed: bytes) -> list[str]:
    text = packed.hex()
    return [
        f"{prefixes[int(text[i : i + 2], 16)]}_{text[i + 2 : i + 34]}"
        for i in range(0, len(text), 34)
    ]


@pytest.mark.parametrize(
    "prefixes",
    [
        ["msg"],
        ["msg", "tool"],
        ["01", "00", "0a"],
        ["a b", "c"],
        ["x\ny", "z"],
        [str(i) for i in range(40)],
    ],
)
@pytest.mark.parametrize("n", [0, 1, 2, 37])
def test_packed_ids_read_as_their_prefix_and_digits(prefixes: list[str], n: int) -> None:
    """Prefixes that look like prefix numbers, or hold a space or a line break, name
    their ids as any other."""
    packed = b"".join(bytes([i % len(prefixes)]) + os.urandom(16) for i in range(n))
    assert _unpack_ids({"prefixes": prefixes, "packed": packed}, n) == _ids_one_by_one(
        prefixes, packed
    )


@pytest.mark.parametrize("n", [0, 1, 3, 100])
def test_packed_hashes_read_as_base64_text(n: int) -> None:
    digests = [os.urandom(16) for _ in range(n)]
    expected = [base64.urlsafe_b64encode(d).decode()[:22] for d in digests]
    assert unpack_hashes(b"".join(digests)) == expected


def test_an_index_with_several_calls_a_message_reads_entry_by_entry() -> None:
    """Messages making two calls, answered together or one by one, and summaries."""
    entries = [
        Facts("s", Role.SYSTEM, (), (), False),
        Facts("a1", Role.ASSISTANT, (("c1", "read"), ("c2", "grep")), (), False),
        Facts("u1", Role.USER, (), ("c1", "c2"), False),
        Facts("a2", Role.ASSISTANT, (("c3", "read"),), (), False),
        Facts("u2", Role.USER, (), ("c3",), True),
        Facts("a3", Role.ASSISTANT, (("c4", "read"), ("c5", "read")), (), False),
        Facts("u3", Role.USER, (), ("c5",), False),
    ]
    plain = pack_index(entries)
    assert unpack_index(plain, len(entries)) == entries
    assert all(type(e) is Facts for e in unpack_index(plain, len(entries)))


@pytest.mark.parametrize("answers", [[0], [2], [9], [True], ["1"]])
def test_a_damaged_answer_is_refused(answers: list[Any]) -> None:
    entries = [
        Facts("a1", Role.ASSISTANT, (("c1", "read"),), (), False),
        Facts("u1", Role.USER, (), ("c1",), False),
        Facts("u2", Role.USER, (), (), False),
    ]
    plain = pack_index(entries)
    assert plain["answers"] == [1]
    with pytest.raises(ValueError, match="index"):
        unpack_index({**plain, "answers": answers}, 3)


def test_tag_columns_read_by_marks_and_parent_numbers() -> None:
    ids = ["m0", "m1", "m2", "m3"]
    data = {
        "parents": ["s1", "t1"],
        "marks": bytes([0b1011]),
        "pairs": bytes([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]),
    }
    assert unpack_tag_columns(data, ids) == {
        "m0": ("s1", None),
        "m1": (None, "t1"),
        "m3": ("s1", "t1"),
    }


def test_many_placeholders_are_those_of_builds_one_by_one() -> None:
    facts = [Facts(f"m{i}", Role.USER, (), (), False) for i in range(3)]
    tags = [("s", None), (None, "t"), (None, None)]
    source: Any = object()
    many = Placeholder.many(facts, ["k0", "k1", "k2"], tags, source)
    for made, fact, (condense, truncation), key in zip(
        many, facts, tags, ["k0", "k1", "k2"], strict=True
    ):
        one = Placeholder.of(
            fact, key=key, source=source, condense_parent=condense, truncation_parent=truncation
        )
        assert type(made) is Placeholder
        assert (made.id, made.role, made.condense_parent, made.truncation_parent) == (
            one.id,
            one.role,
            one.condense_parent,
            one.truncation_parent,
        )
        assert (made.facts, made.key, made._source, made.loaded) == (
            one.facts,
            one.key,
            one._source,
            False,
        )
    overlay = OverlayPlaceholder.many(facts[:1], ["o"], [(None, None)], source)[0]
    assert type(overlay) is OverlayPlaceholder and overlay.key == "o" and not overlay.loaded


def _message(ident: str, role: Role = Role.USER) -> Message:
    return Message(role=role, content=(TextBlock(text=ident),), id=ident)


@pytest.mark.parametrize(
    ("batch", "rule", "index"),
    [
        (["a", "b", "a", "s"], "duplicate_message_id", 3),
        (["a", "s", "b", "b"], "system_position", 2),
        (["a", "b", "c", "known"], "duplicate_message_id", 4),
    ],
)
def test_a_batch_is_refused_at_its_first_offender(batch: list[str], rule: str, index: int) -> None:
    """A batch checked rule by rule over its columns still names its first offender."""
    conversation = Conversation([_message("known")])
    messages = [_message(i, Role.SYSTEM if i == "s" else Role.USER) for i in batch]
    with pytest.raises(InvalidMessage) as caught:
        conversation.extend(messages)
    assert caught.value.rule == rule
    assert caught.value.details["index"] == index
    assert len(conversation) == 1
