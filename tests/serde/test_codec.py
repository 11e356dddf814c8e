"""The envelope codec: round trips, typed errors on damaged bytes, limits, layers, migrations."""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
import tracemalloc
from typing import Any

import lz4.frame
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.errors import CheckpointError, CorruptCheckpoint
from ctxflow.persistence import FORMAT_VERSION, MAGIC, EnvelopeCodec, Lz4Layer, default_codec
from ctxflow.persistence._codec import DEFAULT_MAX_OBJECTS, MAX_DEPTH

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


class XorLayer:
    """A toy cipher layer: XOR with a repeating key (stands in for encryption at rest)."""

    tag = "xor"

    def __init__(self, key: bytes) -> None:
        self.key = key

    def wrap(self, data: bytes) -> bytes:
        """XOR ``data`` with the key."""
        return bytes(b ^ self.key[i % len(self.key)] for i, b in enumerate(data))

    def unwrap(self, data: bytes, *, max_size: int) -> bytes:
        """XOR is its own inverse."""
        return self.wrap(data)


class HmacLayer:
    """Prefixes an HMAC-SHA256 of the data and checks it on the way back."""

    tag = "hmac"

    def __init__(self, key: bytes) -> None:
        self.key = key

    def wrap(self, data: bytes) -> bytes:
        """Prefix the MAC."""
        return hmac.new(self.key, data, hashlib.sha256).digest() + data

    def unwrap(self, data: bytes, *, max_size: int) -> bytes:
        """Check and strip the MAC."""
        mac, body = data[:32], data[32:]
        if not hmac.compare_digest(mac, hmac.new(self.key, body, hashlib.sha256).digest()):
            raise CorruptCheckpoint("the HMAC must match (wrong key or forged)", rule="hmac")
        return body


@settings(max_examples=60, deadline=None)
@given(plain)
def test_round_trip_of_plain_data(value: Any) -> None:
    """Any plain value decodes to itself."""
    codec = default_codec()
    assert codec.decode(codec.encode(value)) == value


def _outcome(data: bytes | bytearray) -> Any:
    try:
        return ("value", default_codec().decode(data))  # type: ignore[arg-type]
    except CorruptCheckpoint as exc:
        return ("corrupt", exc.rule)


@settings(max_examples=300, deadline=None)
@given(value=plain, at=st.integers(min_value=0), flip=st.integers(1, 255), cut=st.booleans())
def test_damage_gives_the_same_error_on_both_header_paths(
    value: Any, at: int, flip: int, cut: bool
) -> None:
    """A changed or cut byte gives the same outcome whether the quick header check runs or not."""
    data = bytearray(default_codec().encode(value))
    at %= len(data)
    if cut:
        del data[at:]
    else:
        data[at] ^= flip
    # bytes take the quick check first; a bytearray always takes the full one
    assert _outcome(bytes(data)) == _outcome(data)
    assert _outcome(bytes(data))[0] == "corrupt"


def test_header_layout() -> None:
    """The envelope starts with the magic, the version and the codec tags."""
    data = default_codec().encode({"a": 1})
    assert data.startswith(MAGIC)
    assert struct.unpack(">H", data[4:6])[0] == FORMAT_VERSION
    assert data[7 : 7 + data[6]] == b"msgpack+lz4"


def test_non_plain_value_is_refused() -> None:
    """A value that is not plain data raises a CheckpointError on encode."""
    with pytest.raises(CheckpointError, match="plain data"):
        default_codec().encode({"x": object()})


@pytest.mark.parametrize(
    ("damage", "rule"),
    [
        (lambda b: b"XXXX" + b[4:], "magic"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b[:-3], "truncated"),
        (lambda b: b + b"extra", "truncated"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "checksum"),
        (lambda b: b"", "magic"),
    ],
)
def test_damaged_bytes_raise_corrupt(damage: Any, rule: str) -> None:
    """Damaged, truncated or padded bytes raise CorruptCheckpoint naming the rule."""
    data = default_codec().encode({"messages": ["hello"] * 20})
    with pytest.raises(CorruptCheckpoint) as info:
        default_codec().decode(damage(data))
    assert info.value.rule == rule


def test_not_bytes_is_refused() -> None:
    """Decoding something that is not bytes raises CorruptCheckpoint."""
    with pytest.raises(CorruptCheckpoint):
        default_codec().decode("text")  # type: ignore[arg-type]


def test_newer_version_is_refused() -> None:
    """Bytes of a newer format version raise CorruptCheckpoint naming the version."""
    newer = EnvelopeCodec((Lz4Layer(),), version=FORMAT_VERSION + 1).encode([1])
    with pytest.raises(CorruptCheckpoint, match="newer") as info:
        default_codec().decode(newer)
    assert info.value.rule == "newer_version"


def test_older_version_is_migrated() -> None:
    """An older version is read through its registered migration hook."""
    old = default_codec().encode({"n": 1})
    upgraded = EnvelopeCodec(
        (Lz4Layer(),),
        version=FORMAT_VERSION + 1,
        migrations={FORMAT_VERSION: lambda v: {**v, "m": 2}},
    )
    assert upgraded.decode(old) == {"n": 1, "m": 2}
    without = EnvelopeCodec((Lz4Layer(),), version=FORMAT_VERSION + 1)
    with pytest.raises(CorruptCheckpoint, match="migration"):
        without.decode(old)


#: Written by format version 1 (every body an lz4 frame), before small bodies were kept.
VERSION_1 = {
    "4358464c00010b6d73677061636b2b6c7a340000003f9c159fa3eba33d9904224d1868403200000000000000"
    "8428000000fb0783a46b696e64a564656c7461a6686173686573c410010100d0a5737461746581a4737465"
    "700700000000": {"kind": "delta", "hashes": b"\x01" * 16, "state": {"step": 7}},
    "4358464c00010b6d73677061636b2b6c7a340000002ada89e95ff48cef7a04224d186840b700000000000000"
    "87130000009f91d9b4776f72647320060096506f7264732000000000": ["words " * 30],
}


def test_version_one_bytes_still_read() -> None:
    """Values written by format version 1 decode to the same values."""
    for data, value in VERSION_1.items():
        assert bytes.fromhex(data)[4:6] == b"\x00\x01"
        assert default_codec().decode(bytes.fromhex(data)) == value


def test_small_bodies_are_kept_and_large_ones_framed() -> None:
    """A body lz4 would not shrink is kept behind a zero byte; a compressible one is framed."""
    layer = Lz4Layer(level=3)
    small = msgpack.packb({"kind": "delta", "hashes": b"\x02" * 16})
    assert layer.wrap(small) == b"\x00" + small
    large = msgpack.packb(["words " * 30])
    assert layer.wrap(large)[:4] == b"\x04\x22\x4d\x18"
    assert len(default_codec().encode({"n": 1})) < len(_forge(lz4.frame.compress(b"\x81\xa1n\x01")))
    for value in ({"n": 1}, ["words " * 30]):
        assert default_codec().decode(default_codec().encode(value)) == value
    with pytest.raises(CorruptCheckpoint) as info:
        layer.unwrap(b"\x00" + b"x" * 11, max_size=10)
    assert info.value.rule == "too_large"


def test_version_one_reader_refuses_version_two() -> None:
    """A reader of format version 1 refuses what this one writes, by version, not as garbage."""
    with pytest.raises(CorruptCheckpoint) as info:
        EnvelopeCodec((Lz4Layer(),), version=1).decode(default_codec().encode({"n": 1}))
    assert info.value.rule == "newer_version"


def test_stored_size_limit() -> None:
    """A body larger than the limit is refused before decompression."""
    data = default_codec().encode("x" * 5000)
    small = EnvelopeCodec((), max_size=100)
    with pytest.raises(CorruptCheckpoint) as info:
        EnvelopeCodec((Lz4Layer(),), max_size=10).decode(data)
    assert info.value.rule == "too_large"
    with pytest.raises(CheckpointError, match="at most"):
        small.encode("y" * 200)


def _forge(body: bytes, tags: bytes = b"msgpack+lz4") -> bytes:
    head = (
        struct.pack(">4sHB", MAGIC, FORMAT_VERSION, len(tags)) + tags + struct.pack(">I", len(body))
    )
    digest = hashlib.blake2b(head, digest_size=8)
    digest.update(body)
    return head + digest.digest() + body


def test_decompression_bomb_with_declared_size() -> None:
    """A small frame declaring a huge content size is refused from its header."""
    bomb = lz4.frame.compress(msgpack.packb("a" * 2_000_000), store_size=True)
    assert len(bomb) < 20_000
    with pytest.raises(CorruptCheckpoint, match="declare") as info:
        EnvelopeCodec((Lz4Layer(),), max_size=100_000).decode(_forge(bomb))
    assert info.value.rule == "too_large"


def test_decompression_bomb_without_declared_size() -> None:
    """A frame that hides its size still stops at the limit while decompressing."""
    bomb = lz4.frame.compress(msgpack.packb("a" * 2_000_000), store_size=False)
    with pytest.raises(CorruptCheckpoint, match="decompress") as info:
        EnvelopeCodec((Lz4Layer(),), max_size=100_000).decode(_forge(bomb))
    assert info.value.rule == "too_large"


def test_frame_holding_more_than_it_declares() -> None:
    """A frame whose blocks hold more than its header declares is refused, not decompressed."""
    packed = msgpack.packb("a" * 50_000)
    small = lz4.frame.compress(msgpack.packb("b" * 10), store_size=True)
    large = lz4.frame.compress(packed, store_size=True)
    # lz4 frame header: magic, FLG, BD, 8-byte content size, header checksum (15 bytes).
    lying = small[:15] + large[15:]
    assert lz4.frame.get_frame_info(lying)["content_size"] < 20
    with pytest.raises(CorruptCheckpoint) as info:
        default_codec().decode(_forge(lying))
    assert info.value.rule == "lz4_frame"
    assert default_codec().decode(_forge(large)) == "a" * 50_000


def test_garbage_frame_and_msgpack() -> None:
    """A valid envelope around a broken frame or broken msgpack raises CorruptCheckpoint."""
    with pytest.raises(CorruptCheckpoint):
        default_codec().decode(_forge(b"not an lz4 frame at all"))
    with pytest.raises(CorruptCheckpoint, match="msgpack"):
        default_codec().decode(_forge(lz4.frame.compress(b"\xc1\xc1")))


def test_ext_types_are_refused() -> None:
    """A msgpack extension type (which could rebuild objects) is refused."""
    body = lz4.frame.compress(msgpack.packb(msgpack.ExtType(42, b"obj")))
    with pytest.raises(CorruptCheckpoint, match="extension") as info:
        default_codec().decode(_forge(body))
    assert info.value.rule == "ext_type"


def test_encryption_layer_is_recorded_and_required() -> None:
    """An extra layer is recorded in the tags; bytes without it (or another key) are refused."""
    secret = default_codec().with_layer(XorLayer(b"k3y")).with_layer(HmacLayer(b"mac"))
    data = secret.encode({"secret": "value" * 10})
    assert b"msgpack+lz4+xor+hmac" in data[:40]
    assert b"value" not in data
    assert secret.decode(data) == {"secret": "value" * 10}
    with pytest.raises(CorruptCheckpoint, match="codec tags"):
        default_codec().decode(data)
    wrong = default_codec().with_layer(XorLayer(b"k3y")).with_layer(HmacLayer(b"bad"))
    with pytest.raises(CorruptCheckpoint, match="HMAC"):
        wrong.decode(data)


def test_bad_layer_tag() -> None:
    """A layer tag with a '+' is refused when the codec is built."""

    class Bad(XorLayer):
        tag = "a+b"

    with pytest.raises(CheckpointError, match="tag"):
        EnvelopeCodec((Bad(b"k"),))


def _peak_while(run: Any) -> int:
    """The peak bytes allocated (tracemalloc) while ``run()`` runs, whatever it raises."""
    tracemalloc.start()
    try:
        run()
    except CorruptCheckpoint:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _items(value: Any) -> int:
    """How many msgpack items ``value`` packs to (every key, value and element)."""
    if isinstance(value, dict):
        return 1 + sum(_items(k) + _items(v) for k, v in value.items())
    if isinstance(value, list):
        return 1 + sum(_items(v) for v in value)
    return 1


def test_millions_of_empty_lists_are_refused_before_they_are_built() -> None:
    """A 66 KB envelope of 16 million empty lists is refused by count, without building them."""
    count = 16_000_000
    body = b"\xdd" + count.to_bytes(4, "big") + b"\x90" * count
    data = _forge(lz4.frame.compress(body, store_size=True))
    del body
    assert len(data) < 70_000

    def decode() -> None:
        with pytest.raises(CorruptCheckpoint) as info:
            default_codec().decode(data)
        assert info.value.rule == "too_many_objects"

    # the 16 MB body itself, not 16 million lists of 56 bytes each
    assert _peak_while(decode) < 64 * 1024 * 1024


def test_items_are_counted_across_containers() -> None:
    """The item bound counts every key, value and element, in however many containers."""
    codec = EnvelopeCodec((Lz4Layer(),), max_objects=1000)
    many = [[None] * 15 for _ in range(100)]
    with pytest.raises(CorruptCheckpoint, match="at most 1000") as info:
        codec.decode(codec.encode(many))
    assert info.value.rule == "too_many_objects"
    fewer = [[None] * 9 for _ in range(90)]
    assert codec.decode(codec.encode(fewer)) == fewer
    assert codec.decode(codec.encode({"text": "x" * 50_000})) == {"text": "x" * 50_000}
    assert codec.with_layer(XorLayer(b"k")).max_objects == 1000
    with pytest.raises(CheckpointError) as limit:
        EnvelopeCodec(max_objects=0)
    assert limit.value.rule == "limit"


@pytest.mark.parametrize("max_objects", [DEFAULT_MAX_OBJECTS, 1100])
def test_nesting_deeper_than_the_decoder_stack_is_refused(max_objects: int) -> None:
    """Lists nested deeper than MAX_DEPTH are refused as too deep, whether the body is walked
    first (longer than the item bound) or not."""
    codec = EnvelopeCodec((Lz4Layer(),), max_objects=max_objects)
    padding = b"\xd9\xff" + b"p" * 255  # a str8 of 255 bytes: one item, many bytes
    for depth, ok in ((MAX_DEPTH, True), (MAX_DEPTH + 6, False)):
        body = b"\x91" * depth + padding
        assert (len(body) > max_objects) == (max_objects == 1100)
        data = _forge(lz4.frame.compress(body))
        if ok:
            value = codec.decode(data)
            for _ in range(depth):
                (value,) = value
            assert value == "p" * 255
        else:
            with pytest.raises(CorruptCheckpoint, match="levels deep") as info:
                codec.decode(data)
            assert info.value.rule == "too_deep"


@pytest.mark.parametrize(
    "stamp",
    [msgpack.Timestamp(1, 0), msgpack.Timestamp(2**33, 5), msgpack.Timestamp(-1, 0)],
    ids=["32-bit", "64-bit", "96-bit"],
)
@pytest.mark.parametrize("max_objects", [DEFAULT_MAX_OBJECTS, 5])
def test_timestamps_are_refused(stamp: msgpack.Timestamp, max_objects: int) -> None:
    """A msgpack timestamp (extension type -1, decoded without the ext hook) is refused."""
    body = msgpack.packb({"pad": "x" * 40, "at": stamp})
    codec = EnvelopeCodec((Lz4Layer(),), max_objects=max_objects)
    with pytest.raises(CorruptCheckpoint, match="timestamp") as info:
        codec.decode(_forge(lz4.frame.compress(body)))
    assert (info.value.rule, info.value.details["code"]) == ("ext_type", -1)


def test_a_frame_without_a_declared_size_reserves_little() -> None:
    """A frame that hides its size grows its buffer as it yields data: no limit-sized reserve."""
    small = _forge(lz4.frame.compress(msgpack.packb("x" * 3000), store_size=False))
    assert _peak_while(lambda: default_codec().decode(small)) < 1024 * 1024
    assert default_codec().decode(small) == "x" * 3000
    large = "y" * 3_000_000  # several chunks, joined
    assert default_codec().decode(_forge(lz4.frame.compress(msgpack.packb(large)))) == large
    unsized = _forge(lz4.frame.compress(msgpack.packb(large), store_size=False))
    assert default_codec().decode(unsized) == large


def test_a_frame_declaring_more_than_it_holds_reserves_little() -> None:
    """A frame declaring 200 MB and holding two bytes is refused without reserving 200 MB."""
    compressor = lz4.frame.LZ4FrameCompressor(auto_flush=True)
    header = compressor.begin(source_size=200_000_000)
    frame = header + compressor.compress(msgpack.packb("ab")) + b"\x00\x00\x00\x00"
    data = _forge(frame)

    def decode() -> None:
        with pytest.raises(CorruptCheckpoint) as info:
            default_codec().decode(data)
        assert info.value.rule == "lz4_frame"

    assert _peak_while(decode) < 1024 * 1024


@settings(max_examples=200, deadline=None)
@given(value=plain, slack=st.integers(-3, 3))
def test_the_walk_counts_items_as_msgpack_builds_them(value: Any, slack: int) -> None:
    """Decoding with an item bound refuses exactly the values with more items than the bound."""
    items = _items(value)
    bound = max(1, items + slack)
    codec = EnvelopeCodec((Lz4Layer(),), max_objects=bound)
    data = codec.encode(value)
    if items > bound:
        with pytest.raises(CorruptCheckpoint) as info:
            codec.decode(data)
        assert info.value.rule == "too_many_objects"
    else:
        assert codec.decode(data) == value


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=64), max_objects=st.integers(1, 16))
def test_any_body_decodes_within_the_bound_or_is_refused(body: bytes, max_objects: int) -> None:
    """Arbitrary msgpack bytes give a value of at most max_objects items, or CorruptCheckpoint."""
    codec = EnvelopeCodec((Lz4Layer(),), max_objects=max_objects)
    try:
        value = codec.decode(_forge(lz4.frame.compress(body)))
    except CorruptCheckpoint:
        return
    assert _items(value) <= max_objects


def test_one_entry_reads_as_a_whole_decode_would() -> None:
    """``decode_entry`` gives the value under a key (None without it) without the rest."""
    value = {"hashes": b"\x01" * 50_000, "parent_delta": {"kind": "delta", "n": [1, 2]}, "x": 1}
    data = default_codec().encode(value)
    codec = default_codec()
    assert codec.decode_entry(data, "parent_delta") == {"kind": "delta", "n": [1, 2]}
    assert codec.decode_entry(data, "x") == 1
    assert codec.decode_entry(data, "missing") is None
    assert codec.decode_entry(default_codec().encode([1, 2]), "x") is None  # not a map


def test_one_entry_of_damaged_or_older_bytes_reads_through_a_whole_decode() -> None:
    """Damage raises what ``decode`` raises; an older version is migrated first."""
    data = default_codec().encode({"messages": ["hello"] * 20, "k": 3})
    with pytest.raises(CorruptCheckpoint) as info:
        default_codec().decode_entry(data[:-1] + bytes([data[-1] ^ 1]), "k")
    assert info.value.rule == "checksum"
    upgraded = EnvelopeCodec(
        (Lz4Layer(),),
        version=FORMAT_VERSION + 1,
        migrations={FORMAT_VERSION: lambda v: {**v, "k": 4}},
    )
    assert upgraded.decode_entry(data, "k") == 4
    # a map whose value holds an extension type is refused as decode refuses it
    body = msgpack.packb({"k": msgpack.ExtType(5, b"x")})
    sealed = default_codec().seal(body)
    with pytest.raises(CorruptCheckpoint) as refused:
        default_codec().decode(sealed)
    with pytest.raises(CorruptCheckpoint) as same:
        default_codec().decode_entry(sealed, "k")
    assert same.value.rule == refused.value.rule


def test_some_items_read_as_a_whole_decode_would_the_rest_skipped() -> None:
    """``decode_items`` builds the wanted positions and the last item, None elsewhere."""
    value = [{"id": f"m{i}", "text": "x" * i} for i in range(40)] + [b"\x07" * 16]
    data = default_codec().encode(value)
    read = default_codec().decode_items(data, {3, 17})
    assert len(read) == len(value)
    assert read[3] == value[3] and read[17] == value[17] and read[-1] == value[-1]
    assert [i for i, item in enumerate(read) if item is not None] == [3, 17, 40]
    assert default_codec().decode_items(default_codec().encode({"k": 1}), {0}) == {"k": 1}


def test_some_items_of_damaged_or_older_bytes_read_through_a_whole_decode() -> None:
    """Damage raises what ``decode`` raises; an older version is decoded whole, migrated."""
    data = default_codec().encode([["a"] * 20, ["b"], b"end"])
    with pytest.raises(CorruptCheckpoint) as info:
        default_codec().decode_items(data[:-1] + bytes([data[-1] ^ 1]), {0})
    assert info.value.rule == "checksum"
    upgraded = EnvelopeCodec(
        (Lz4Layer(),),
        version=FORMAT_VERSION + 1,
        migrations={FORMAT_VERSION: lambda v: [*v[:-1], b"new"]},
    )
    assert upgraded.decode_items(data, {1}) == [["a"] * 20, ["b"], b"new"]
    sealed = default_codec().seal(msgpack.packb([msgpack.ExtType(5, b"x"), 1]))
    with pytest.raises(CorruptCheckpoint) as refused:
        default_codec().decode(sealed)
    with pytest.raises(CorruptCheckpoint) as same:
        default_codec().decode_items(sealed, {0})
    assert same.value.rule == refused.value.rule


def test_a_large_envelope_is_read_without_a_copy_of_its_body() -> None:
    """Decoding reads the envelope's body where it lies: it holds the decompressed body
    and the value, not a copy of the frame as well (megabytes at a long session's size)."""
    rng = random.Random(5)
    for value in (  # framed (half compresses), and kept as it is (nothing compresses)
        {"hashes": rng.randbytes(750_000) + bytes(750_000), "n": 1},
        {"hashes": rng.randbytes(1_500_000), "n": 2},
    ):
        data = default_codec().encode(value)
        peak = _peak_while(lambda data=data: default_codec().decode(data))
        assert peak < 2.2 * 1_500_000, (len(data), peak)
        assert default_codec().decode(data) == value
