"""Packed body hashes in manifest records, and records written before they were packed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.checkpoints.bodies import body_hash
from ctxflow.checkpoints.manifest import Manifest, mentions, pack_hashes, unpack_hashes
from ctxflow.errors import CorruptCheckpoint


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=8), max_size=40))
def test_packed_hashes_round_trip(values: list[str]) -> None:
    """Packing body hashes to digests and back gives the same strings in order."""
    hashes = [body_hash({"v": v}) for v in values]
    packed = pack_hashes(hashes)
    assert isinstance(packed, bytes)
    assert len(packed) == 16 * len(hashes)
    assert unpack_hashes(packed) == hashes


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
