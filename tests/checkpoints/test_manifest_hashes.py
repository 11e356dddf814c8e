"""Manifest records: packed body hashes (and the earlier list form), stored token counts."""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.errors import CheckpointError, CorruptCheckpoint
from ctxflow.model import Conversation, Message
from ctxflow.persistence import CheckpointDraft, Checkpointer, Manifest, body_hash, mentions
from ctxflow.persistence._manifest import PARENT_DELTA, new_mentions, pack_hashes, unpack_hashes
from ctxflow.stores import MemoryStore


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=8), max_size=40))
def test_packed_hashes_round_trip(values: list[str]) -> None:
    """Packing body hashes to digests and back gives the same strings in order."""
    hashes = [body_hash({"v": v}) for v in values]
    packed = pack_hashes(hashes)
    assert isinstance(packed, bytes)
    assert len(packed) == 16 * len(hashes)
    assert unpack_hashes(packed) == hashes


def _reference_pack(hashes: list[str]) -> bytes | list[str]:
    """Packing defined hash by hash: decode each, keep it only if it encodes back the same."""
    try:
        raw = [base64.urlsafe_b64decode(h + "==") for h in hashes]
    except (binascii.Error, ValueError, TypeError):
        return list(hashes)
    if any(
        len(d) != 16 or base64.urlsafe_b64encode(d).rstrip(b"=").decode() != h
        for d, h in zip(raw, hashes, strict=True)
    ):
        return list(hashes)
    return b"".join(raw)


_URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=16, max_size=16), max_size=40))
def test_unpack_matches_base64_per_digest(digests: list[bytes]) -> None:
    """Unpacking digests gives each one's unpadded urlsafe base64, in order."""
    expected = [base64.urlsafe_b64encode(d).rstrip(b"=").decode() for d in digests]
    assert unpack_hashes(b"".join(digests)) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet=_URLSAFE, min_size=22, max_size=22)
        | st.text(alphabet=_URLSAFE + "+/=\n é", min_size=20, max_size=24),
        max_size=6,
    )
)
def test_pack_matches_the_per_hash_definition(hashes: list[str]) -> None:
    """Packing any strings agrees with decoding them one by one (non-canonical ones: a list)."""
    assert pack_hashes(hashes) == _reference_pack(hashes)


def test_non_digest_hashes_stay_a_list() -> None:
    """A hash that is not a 16-byte digest keeps the whole field a list of strings."""
    assert pack_hashes([body_hash({}), "not-a-digest"]) == [body_hash({}), "not-a-digest"]


def test_list_records_still_read() -> None:
    """A record whose hashes are a list of strings (the earlier form) loads the same."""
    hashes = [body_hash({"v": i}) for i in range(3)]
    manifest = Manifest(hashes=list(hashes))
    old = {**manifest.to_plain(), "hashes": list(hashes)}
    assert Manifest.from_plain(old) == Manifest.from_plain(manifest.to_plain())
    assert mentions(old) == mentions(manifest.to_plain()) == set(hashes)


def test_truncated_packed_hashes_are_corrupt() -> None:
    """Packed hashes that are not whole digests give CorruptCheckpoint."""
    record = {"kind": "full", "hashes": b"\x00" * 17}
    with pytest.raises(CorruptCheckpoint, match="multiple of 16"):
        Manifest.from_plain(record)


def _counted(**changes: object) -> dict[str, object]:
    hashes = [body_hash({"v": i}) for i in range(2)]
    manifest = Manifest(
        hashes=hashes,
        overlays={"a": hashes[0]},
        measure="m",
        counts=[3, 4],
        overlay_counts={"a": 1},
    )
    return {**manifest.to_plain(), **changes}


def test_counts_round_trip_in_full_and_delta() -> None:
    """Counts, their measure and overlay counts survive a full record and a delta."""
    parent = Manifest.from_plain(_counted())
    assert (parent.measure, parent.counts, parent.overlay_counts) == ("m", [3, 4], {"a": 1})
    child = parent.copy()
    hashes_b = body_hash({"v": 9})
    child.hashes.append(hashes_b)
    child.counts.append(7)
    child.overlays, child.overlay_counts = {"b": hashes_b}, {"b": 2}
    delta = child.delta_from(parent)
    assert delta is not None
    assert (delta["counts"], delta["overlay_counts"]) == ([7], {"b": 2})
    again = parent.copy()
    again.apply(delta)
    assert again == child
    other = child.copy()
    other.measure = "n"
    assert other.delta_from(parent) is None
    uncounted = child.copy()
    uncounted.overlay_counts = {}
    assert uncounted.delta_from(child) is None


@pytest.mark.parametrize(
    "changes",
    [
        {"counts": [3]},
        {"counts": [3, -1]},
        {"counts": [3, True]},
        {"counts": "34"},
        {"measure": 5},
        {"measure": None},
        {"overlay_counts": {"a": "1"}},
    ],
)
def test_bad_counts_are_corrupt(changes: dict[str, object]) -> None:
    """Counts of the wrong length or type, or without a measure, give CorruptCheckpoint."""
    with pytest.raises(CorruptCheckpoint) as info:
        Manifest.from_plain(_counted(**changes))
    assert info.value.rule == "manifest"


def test_a_full_record_carrying_its_delta_brings_what_the_delta_names() -> None:
    """A write of a full manifest with the delta it replaces checks and references only
    the delta's bodies (its parent holds the rest); any other record names itself."""
    old = [body_hash({"v": i}) for i in range(50)]
    new = body_hash({"v": "new"})
    delta = {"kind": "delta", "hashes": pack_hashes([new])}
    full = {"kind": "full", "hashes": pack_hashes([*old, new]), PARENT_DELTA: delta}
    assert new_mentions(full, parent="ckpt-1") == {new}
    assert new_mentions(full, parent=None) == {*old, new}  # no parent: the record itself
    assert new_mentions({**full, PARENT_DELTA: "damaged"}, parent="ckpt-1") == {*old, new}
    assert new_mentions(delta, parent="ckpt-1") == mentions(delta) == {new}


def test_a_full_record_whose_delta_names_a_missing_body_is_refused() -> None:
    """The bodies the carried delta names must be stored or given, as for a delta."""
    store = MemoryStore()
    writer = Checkpointer(store, "s")
    conversation = Conversation([Message.user("first", id="u0")])
    first = writer.capture(conversation)
    missing = body_hash({"v": "never stored"})
    delta = {"kind": "delta", "hashes": pack_hashes([missing])}
    loaded = store.load("s").manifest.to_plain()
    record = {**loaded, "hashes": pack_hashes([*unpack_hashes(loaded["hashes"]), missing])}
    draft = CheckpointDraft(
        id="ckpt-full",
        session_id="s",
        parent_id=first.id,
        created_at=0.0,
        manifest={**record, PARENT_DELTA: delta},
        tokens=0,
        message_count=2,
    )
    with pytest.raises(CheckpointError) as info:
        store.put(draft, expected_parent=first.id)
    assert info.value.rule == "missing_body"
    assert [r.id for r in store.checkpoints("s")] == [first.id]
