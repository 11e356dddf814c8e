"""A full manifest's calls as columns and its counts packed (format 5): the same facts
as the lists they replace, the lists kept where columns cannot hold them, damage refused,
and stores written in format 4 still read."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.errors import CorruptCheckpoint
from ctxflow.model import Facts, Role
from ctxflow.persistence import EnvelopeCodec, Lz4Layer
from ctxflow.persistence._manifest import (
    CALL_SEPARATOR,
    Manifest,
    call_columns,
    pack_counts,
    pack_index,
    read_counts,
    unpack_index,
)
from ctxflow.persistence._manifest_plain import concat_index

SEVERAL = [
    Facts("s", Role.SYSTEM, (), (), False),
    Facts("a1", Role.ASSISTANT, (("c1", "read"), ("c2", "grep")), (), False),
    Facts("u1", Role.USER, (), ("c1", "c2"), False),
    Facts("a2", Role.ASSISTANT, (("c3", "read"),), (), False),
    Facts("u2", Role.USER, (), ("c3",), True),
    Facts("a3", Role.ASSISTANT, (("c4", "read"), ("c5", "read")), (), False),
    Facts("u3", Role.USER, (), ("c5",), False),
    Facts("a4", Role.ASSISTANT, (("c6", "edit"),), (), False),
    Facts("u4", Role.USER, (), ("c6",), False),
]


def _facts(draw: st.DrawFn) -> list[Facts]:
    out: list[Facts] = []
    previous: tuple[str, ...] = ()
    for at in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(["plain", "calls", "answer", "partial"]))
        uses: tuple[tuple[str, str], ...] = ()
        results: tuple[str, ...] = ()
        if kind == "calls":
            uses = tuple(
                (f"call_{at}_{k}", draw(st.sampled_from(["read", "grep", "edit"])))
                for k in range(draw(st.integers(1, 3)))
            )
        elif kind == "answer" and previous:
            results = previous
        elif kind == "partial" and previous:
            results = previous[-1:]
        role = Role.ASSISTANT if uses else Role.USER
        out.append(Facts(f"m{at}", role, uses, results, draw(st.booleans())))
        previous = tuple(u for u, _ in uses)
    return out


facts_lists = st.composite(_facts)()


@settings(max_examples=60, deadline=None)
@given(entries=facts_lists)
def test_columns_read_as_the_lists_do(entries: list[Facts]) -> None:
    columns = pack_index(entries, columns=True)
    assert "uses" not in columns and "answers" not in columns
    assert unpack_index(columns, len(entries)) == entries
    assert unpack_index(pack_index(entries), len(entries)) == entries


def test_several_calls_a_message_read_from_columns() -> None:
    plain = pack_index(SEVERAL, columns=True)
    assert plain["calls"] == bytes([0, 2, 0, 1, 0, 2, 0, 1, 0])
    assert plain["call_ids"] == CALL_SEPARATOR.join(["c1", "c2", "c3", "c4", "c5", "c6"])
    assert plain["call_names"] == bytes([0, 1, 0, 0, 0, 2])
    assert plain["answered"] == bytes([0, 0, 1, 0, 1, 0, 0, 0, 1])
    assert plain["results"] == [[6, "c5"]]
    assert unpack_index(plain, len(SEVERAL)) == SEVERAL
    assert all(type(e) is Facts for e in unpack_index(plain, len(SEVERAL)))


@pytest.mark.parametrize(
    "entries",
    [
        [Facts("a", Role.ASSISTANT, tuple((f"c{k}", "read") for k in range(256)), (), False)],
        [Facts(f"a{k}", Role.ASSISTANT, ((f"c{k}", f"tool{k}"),), (), False) for k in range(257)],
        [Facts("a", Role.ASSISTANT, (("c\x001", "read"),), (), False)],
    ],
    ids=["256 calls in a message", "257 tool names", "a separator in a call id"],
)
def test_what_columns_cannot_hold_keeps_the_lists(entries: list[Facts]) -> None:
    assert call_columns(entries) is None
    plain = pack_index(entries, columns=True)
    assert "uses" in plain and "calls" not in plain
    assert unpack_index(plain, len(entries)) == entries
    # Joined with column runs, such a run takes the path that reads every form.
    assert concat_index([(_packed(entries), len(entries))]) is None


def _packed(entries: list[Facts]) -> dict[str, Any]:
    ids = [f"msg_{k:032x}" for k in range(len(entries))]
    renamed = [Facts(i, *e[1:]) for i, e in zip(ids, entries, strict=True)]
    return pack_index(renamed)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("calls", bytes([0, 2, 0])),  # wrong length
        ("calls", [0, 2, 0, 1, 0, 2, 0, 1, 0]),
        ("call_ids", "c1\x00c2"),  # fewer ids than calls
        ("call_ids", 7),
        ("call_names", bytes([0, 1, 0, 0, 0, 9])),  # no tool 9
        ("call_names", bytes([0, 1])),
        ("answered", bytes([0, 0, 2, 0, 1, 0, 0, 0, 1])),
        ("answered", bytes([1, 0, 0, 0, 0, 0, 0, 0, 0])),  # answers before any call
        ("uses", [[1, "c1", 0]]),  # both forms
    ],
)
def test_damaged_columns_are_refused(field: str, value: Any) -> None:
    plain = pack_index(SEVERAL, columns=True)
    with pytest.raises(ValueError, match="index"):
        unpack_index({**plain, field: value}, len(SEVERAL))


@settings(max_examples=40, deadline=None)
@given(runs=st.lists(st.tuples(facts_lists, st.booleans()), min_size=1, max_size=4))
def test_runs_in_either_form_join_into_columns(runs: list[tuple[list[Facts], bool]]) -> None:
    parts: list[tuple[dict[str, Any], int]] = []
    every: list[Facts] = []
    for number, (entries, as_columns) in enumerate(runs):
        ids = [f"msg_{number:08x}{k:024x}" for k in range(len(entries))]
        # Call ids unique across runs, as a log's are.
        renamed = [
            Facts(
                i,
                e.role,
                tuple((f"r{number}{u}", n) for u, n in e.uses),
                tuple(f"r{number}{r}" for r in e.results),
                e.summary,
            )
            for i, e in zip(ids, entries, strict=True)
        ]
        parts.append((pack_index(renamed, columns=as_columns), len(renamed)))
        every += renamed
    joined = concat_index(parts)
    assert joined is not None and "uses" not in joined and "answers" not in joined
    assert unpack_index(joined, len(every)) == every


@pytest.mark.parametrize("counts", [[], [0], [3, 70_000, 2**32 - 1]])
def test_counts_pack_and_read_back(counts: list[int]) -> None:
    packed = pack_counts(counts)
    assert isinstance(packed, bytes) and len(packed) == 4 * len(counts)
    assert read_counts(packed, len(counts)) == counts


def test_counts_past_four_bytes_stay_a_list() -> None:
    assert pack_counts([1, 2**32]) == [1, 2**32]
    assert read_counts([1, 2**32], 2) == [1, 2**32]


@pytest.mark.parametrize("value", [b"\x01\x00\x00", b"\x01\x00\x00\x00" * 3, "abcd"])
def test_damaged_packed_counts_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="counts"):
        read_counts(value, 2)


def test_a_full_manifest_writes_columns_and_reads_back() -> None:
    ids = [f"msg_{k:032x}" for k in range(len(SEVERAL))]
    manifest = Manifest(measure="m")
    manifest.hashes = [f"{k:022d}" for k in range(len(SEVERAL))]
    manifest.index = [Facts(i, *e[1:]) for i, e in zip(ids, SEVERAL, strict=True)]
    manifest.counts = [5, 7, 9, 11, 13, 15, 17, 19, 21]
    plain = manifest.to_plain()
    assert isinstance(plain["counts"], bytes) and "calls" in plain["index"]
    again = Manifest.from_plain(plain)
    assert again.counts == manifest.counts and again.index == manifest.index
    with pytest.raises(CorruptCheckpoint, match="counts"):
        Manifest.from_plain({**plain, "counts": plain["counts"][:-4]})


def test_a_format_4_envelope_reads_and_a_format_4_reader_refuses_format_5() -> None:
    value = {"kind": "full", "hashes": b""}
    old = EnvelopeCodec((Lz4Layer(),), version=4)
    new = EnvelopeCodec((Lz4Layer(),))
    assert new.version == 5
    assert new.decode(old.encode(value)) == value
    with pytest.raises(CorruptCheckpoint) as refused:
        old.decode(new.encode(value))
    assert refused.value.rule == "newer_version"


def test_hidden_messages_share_one_tag_pair() -> None:
    """A compression hides many messages under one pair: the manifest keeps one tuple."""
    manifest = Manifest()
    ids = [f"msg_{k:032x}" for k in range(50)]
    manifest.apply({"kind": "delta", "hashes": b"", "tags": {i: ["sum_1", None] for i in ids}})
    manifest.apply({"kind": "delta", "hashes": b"", "tags": {ids[0]: ["sum_2", "t_1"]}})
    assert manifest.tags[ids[1]] == ("sum_1", None) and manifest.tags[ids[0]] == ("sum_2", "t_1")
    assert len({id(pair) for i, pair in manifest.tags.items() if i != ids[0]}) == 1
