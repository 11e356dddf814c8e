"""The envelope codec: header, checksum, then a chain of byte layers around msgpack.

Layout of an encoded value::

    magic "CXFL" | version u16 | tag length u8 | codec tags (ascii) | body length u32
    | blake2b-64 of everything before it and of the body | body

The body is msgpack of plain data, passed through each :class:`ByteLayer` in
order (lz4 by default; a user adds encryption at rest as one more layer). The
layer tags are written into the header, so bytes written with another chain
are refused by name instead of decoded as garbage.

Decoding checks, in this order and before any decompression: the magic, the
format version, the codec tags, the body length against the size limit, and
the checksum. The lz4 layer then checks the frame's declared content size and
decompresses with a hard output limit, so a crafted frame cannot expand past
``max_size``; its output buffer grows as the frame yields data, so a frame
that declares much (or nothing) and holds little reserves little. Every
failure is a :class:`~ctxflow.errors.CorruptCheckpoint` whose ``rule`` names
what was wrong.

The checksum is not keyed: anyone can write a valid envelope, so the msgpack
body is bounded too, before objects are built from it. One msgpack byte can
become a Python object of tens of bytes (an empty list), so a body of empty
lists that compresses to almost nothing would cost gigabytes. The decoder
takes at most ``max_objects`` items (every key, value and element counts): a
body shorter than that cannot hold more, and a longer one is first walked
header by header without building anything (:func:`_scan`). Nesting is bounded by msgpack's own
decoder stack (:data:`MAX_DEPTH` levels, no recursion; the walk applies the
same bound). Extension types are refused, timestamps (type -1, which msgpack
decodes itself, without the ``ext_hook``) included.

Format versions: 2 lets the lz4 layer keep a body that compression would not
shrink as it is, behind a zero byte (a frame starts with its magic number): a
small manifest delta is then smaller and decodes in half the time. 3 stores
the layered state in parts (see :mod:`ctxflow.persistence._manifest`): the
envelope is unchanged, but code that knows only version 2 would take a
manifest's skeleton for the whole state, so it is told to refuse. 4 writes a
full manifest's tags as columns over its message index (see
:func:`ctxflow.persistence._manifest.pack_tag_columns`): code that knows only
version 3 would find no tags and show every hidden message, so it is told to
refuse too. 5 writes a full manifest's token counts packed and the calls of
its message index as columns (see
:func:`ctxflow.persistence._manifest.call_columns`): code that knows only
version 4 would find no tool calls and break the tool pairs it restores, so
it refuses. Values of versions 1 to 4 read unchanged (built-in migrations).

Gotcha: msgpack turns tuples into lists; a round trip gives lists back.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import lz4.frame
import msgpack

from ctxflow.errors import CheckpointError, CorruptCheckpoint

__all__ = [
    "DEFAULT_MAX_OBJECTS",
    "DEFAULT_MAX_SIZE",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_DEPTH",
    "ByteLayer",
    "Envelope",
    "EnvelopeCodec",
    "Lz4Layer",
    "Migration",
    "default_codec",
    "pack_plain",
    "read_envelope",
]

#: The first four bytes of every encoded value.
MAGIC = b"CXFL"
#: The format version this code writes.
FORMAT_VERSION = 5
#: Largest body (stored or decompressed) a codec accepts by default: 256 MiB.
DEFAULT_MAX_SIZE = 256 * 1024 * 1024
#: Most msgpack items (keys, values, elements) a codec decodes from one body by default.
#: A full manifest holds about four per message of the session (a count, a tool call's
#: id and name, an overlay), so this reads sessions of about two million messages;
#: a crafted body can make the decoder build at most this many objects (about 0.5 GB).
DEFAULT_MAX_OBJECTS = 2**23
#: Deepest nesting of lists and maps a body may hold: the msgpack decoder's own stack.
MAX_DEPTH = 1024
_HARD_LIMIT = 2**32 - 1

#: Upgrades a decoded value of version ``v`` to version ``v + 1``.
Migration = Callable[[Any], Any]

_HEAD = struct.Struct(">4sHB")
_LENGTH = struct.Struct(">I")
_DIGEST = 8


@runtime_checkable
class ByteLayer(Protocol):
    """One reversible transformation of the body bytes (compression, encryption)."""

    @property
    def tag(self) -> str:
        """A short ascii name written into the envelope (no ``+``)."""
        ...

    def wrap(self, data: bytes) -> bytes:
        """The transformed bytes of ``data``."""
        ...

    def unwrap(self, data: bytes, *, max_size: int) -> bytes:
        """The original bytes; raise ``CorruptCheckpoint`` if they would exceed ``max_size``."""
        ...


#: Leads a body the lz4 layer kept as it was (an lz4 frame starts with its magic number).
_KEPT = b"\x00"
#: A frame declaring at most this much is decompressed in one call; a larger or undeclared
#: one in chunks that start at _FIRST_CHUNK and double up to _MAX_CHUNK.
_ONE_CALL = 1 << 20
_FIRST_CHUNK = 1 << 16
_MAX_CHUNK = 1 << 24


def _decompress_growing(
    decompressor: lz4.frame.LZ4FrameDecompressor, data: bytes | memoryview, limit: int
) -> bytes:
    """At most ``limit`` bytes of ``data``'s frame, the buffer growing as output arrives."""
    size = min(limit, _FIRST_CHUNK)
    piece = bytes(decompressor.decompress(data, max_length=size))
    pieces = [piece]
    total = len(piece)
    while piece and total < limit and not decompressor.eof and not decompressor.needs_input:
        size = min(limit - total, size * 2, _MAX_CHUNK)
        piece = bytes(decompressor.decompress(b"", max_length=size))
        pieces.append(piece)
        total += len(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class Lz4Layer:
    """lz4 frame compression with the content size stored in the frame header.

    A body whose frame would not be shorter is kept as it is, behind a zero
    byte (format version 2 on).
    """

    tag = "lz4"

    def __init__(self, *, level: int = 0) -> None:
        self.level = level

    def wrap(self, data: bytes) -> bytes:
        """Compress ``data`` into one lz4 frame (or keep it, when that is shorter)."""
        frame = bytes(lz4.frame.compress(data, compression_level=self.level, store_size=True))
        return frame if len(frame) <= len(data) else _KEPT + data

    def unwrap(self, data: bytes, *, max_size: int) -> bytes:
        """Decompress one frame, refusing frames that declare or produce too much."""
        out = self.unwrap_view(data, max_size=max_size)
        return out if isinstance(out, bytes) else bytes(out)

    def unwrap_view(self, data: bytes | memoryview, *, max_size: int) -> bytes | memoryview:
        """:meth:`unwrap` of a view as well as of bytes, copying nothing it need not: a
        kept body comes back as a view of ``data``."""
        if data[:1] == _KEPT:
            if len(data) - 1 > max_size:
                raise CorruptCheckpoint(
                    f"the body must be at most {max_size} bytes (got {len(data) - 1})",
                    rule="too_large",
                    limit=max_size,
                )
            return data[1:]
        try:
            info = lz4.frame.get_frame_info(data)
        except (RuntimeError, ValueError) as exc:
            raise CorruptCheckpoint(
                f"the lz4 frame header must be valid ({exc})", rule="lz4_header"
            ) from None
        declared = int(info.get("content_size") or 0)
        if declared > max_size:
            raise CorruptCheckpoint(
                f"the lz4 frame must declare at most {max_size} bytes (got {declared})",
                rule="too_large",
                size=declared,
                limit=max_size,
            )
        # Bounded by the declared size when there is one: a frame holding more than it
        # declares stops there (and fails the completeness check below). A small declared
        # value is one call; anything else grows its buffer as the frame yields data, so
        # neither a false declaration nor a missing one reserves memory up front.
        decompressor = lz4.frame.LZ4FrameDecompressor()
        try:
            if 0 < declared <= _ONE_CALL:
                out = bytes(decompressor.decompress(data, max_length=declared))
            else:
                out = _decompress_growing(decompressor, data, declared or max_size + 1)
        except RuntimeError as exc:
            raise CorruptCheckpoint(
                f"the lz4 frame must decompress ({exc})", rule="lz4_frame"
            ) from None
        if len(out) > max_size:
            raise CorruptCheckpoint(
                f"the body must decompress to at most {max_size} bytes (got more)",
                rule="too_large",
                limit=max_size,
            )
        if not decompressor.eof or decompressor.unused_data:
            raise CorruptCheckpoint(
                "the lz4 frame must be complete and alone (truncated or trailing bytes)",
                rule="lz4_frame",
            )
        return out


@attrs.frozen(kw_only=True)
class Envelope:
    """The parsed header of an encoded value (what ``read_envelope`` returns)."""

    version: int
    tags: tuple[str, ...]
    body: bytes


def read_envelope(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Envelope:
    """Parse and verify the header and checksum of ``data`` (no decompression)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CorruptCheckpoint(
            f"checkpoint data must be bytes (got {type(data).__name__})", rule="not_bytes"
        )
    data = bytes(data)
    if len(data) < _HEAD.size or data[:4] != MAGIC:
        raise CorruptCheckpoint(
            f"checkpoint data must start with {MAGIC!r} (got {data[:4]!r})", rule="magic"
        )
    _, version, tag_length = _HEAD.unpack_from(data)
    offset = _HEAD.size
    end_of_header = offset + tag_length + _LENGTH.size + _DIGEST
    if len(data) < end_of_header:
        raise CorruptCheckpoint(
            f"checkpoint header must be {end_of_header} bytes (got {len(data)}: truncated)",
            rule="truncated",
        )
    try:
        tags = tuple(data[offset : offset + tag_length].decode("ascii").split("+"))
    except UnicodeDecodeError:
        raise CorruptCheckpoint("codec tags must be ascii", rule="tags") from None
    offset += tag_length
    (length,) = _LENGTH.unpack_from(data, offset)
    offset += _LENGTH.size
    if length > max_size:
        raise CorruptCheckpoint(
            f"checkpoint body must be at most {max_size} bytes (got {length})",
            rule="too_large",
            size=length,
            limit=max_size,
        )
    digest = data[offset : offset + _DIGEST]
    body = data[end_of_header:]
    if len(body) != length:
        raise CorruptCheckpoint(
            f"checkpoint body must be {length} bytes (got {len(body)}: truncated or padded)",
            rule="truncated",
        )
    expected = hashlib.blake2b(data[:offset], digest_size=_DIGEST)
    expected.update(body)
    if expected.digest() != digest:
        raise CorruptCheckpoint(
            "checkpoint checksum must match its content (bytes were changed)", rule="checksum"
        )
    return Envelope(version=version, tags=tags, body=body)


def pack_plain(value: Any, *, what: str = "a checkpoint value") -> bytes:
    """The msgpack bytes of plain ``value``; ``CheckpointError`` naming ``what`` if it is not."""
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True, datetime=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(
            f"{what} must be plain data (dict, list, str, bytes, int, float, bool, None) ({exc})",
            rule="not_plain",
        ) from None
    return packed


def _unchanged(value: Any) -> Any:
    """Version 1 to 2: only the lz4 layer's bytes changed, not the values."""
    return value


def _ext_refused(code: int) -> CorruptCheckpoint:
    kind = " (a timestamp)" if code == -1 else ""
    return CorruptCheckpoint(
        f"checkpoint body must hold plain data only (got msgpack extension type {code}{kind})",
        rule="ext_type",
        code=code,
    )


#: What a partial read (``decode_entry``, ``decode_items``) leaves to a whole decode.
_PARTIAL_FAULTS = (
    ValueError,
    TypeError,
    OverflowError,
    msgpack.UnpackException,
    CorruptCheckpoint,
)


def _refuse_ext(code: int, data: bytes) -> Any:
    raise _ext_refused(code)


def _fixed_sizes() -> tuple[int, ...]:
    """The whole length of an item from its first byte, for items of fixed length (else 0)."""
    sizes = [0] * 256
    for first in [*range(0x00, 0x80), 0x80, 0x90, 0xC0, 0xC2, 0xC3, *range(0xE0, 0x100)]:
        sizes[first] = 1  # fixints, nil, bools, and empty maps and arrays (leaves to msgpack)
    for first in range(0xA0, 0xC0):
        sizes[first] = 1 + (first & 0x1F)  # fixstr
    for first, size in {0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}.items():
        sizes[first] = size  # floats and unsigned ints
    for first, size in {0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9}.items():
        sizes[first] = size  # signed ints
    return tuple(sizes)


_FIXED = _fixed_sizes()
#: str8/16/32 and bin8/16/32: the width of their length field.
_SIZED = {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC4: 1, 0xC5: 2, 0xC6: 4}
#: array16/32 and map16/32: the width of their count field and items per count.
_COUNTED = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}
#: ext8/16/32 and fixext: where their type byte is.
_EXT_TYPE_AT = {0xC7: 2, 0xC8: 3, 0xC9: 5, 0xD4: 1, 0xD5: 1, 0xD6: 1, 0xD7: 1, 0xD8: 1}


def _scan(body: bytes | memoryview, max_objects: int) -> None:
    """Walk the first msgpack item of ``body`` header by header, building nothing.

    Raises ``CorruptCheckpoint`` when the items its containers declare exceed
    ``max_objects``, when lists and maps nest deeper than ``MAX_DEPTH``, or at
    an extension type. Anything else malformed (truncation, an invalid byte)
    ends the walk quietly: msgpack refuses it by name, having built no more
    objects than the walk counted.
    """
    fixed, end = _FIXED, len(body)
    pos, left, declared = 0, 1, 1
    stack: list[int] = []
    while True:
        if not left:
            if not stack:
                return
            left = stack.pop()
            continue
        if pos >= end:
            return
        first = body[pos]
        left -= 1
        size = fixed[first]
        if size:
            pos += size
            continue
        if 0x81 <= first <= 0x8F or 0x91 <= first <= 0x9F:
            count = (first & 0x0F) * (2 if first < 0x90 else 1)
            pos += 1
        elif first in _COUNTED:
            width, per = _COUNTED[first]
            count = int.from_bytes(body[pos + 1 : pos + 1 + width], "big") * per
            pos += 1 + width
            if not count:
                continue
        elif first in _SIZED:
            width = _SIZED[first]
            pos += 1 + width + int.from_bytes(body[pos + 1 : pos + 1 + width], "big")
            continue
        elif first in _EXT_TYPE_AT:
            at = pos + _EXT_TYPE_AT[first]
            if at >= end:
                return
            raise _ext_refused(int.from_bytes(body[at : at + 1], "big", signed=True))
        else:
            return  # 0xc1, never used: msgpack names it
        declared += count
        if declared > max_objects:
            raise _too_many(max_objects)
        stack.append(left)
        left = count
        if len(stack) > MAX_DEPTH:
            raise _too_deep()


def _too_many(max_objects: int) -> CorruptCheckpoint:
    return CorruptCheckpoint(
        f"checkpoint body must hold at most {max_objects} msgpack items (got more)",
        rule="too_many_objects",
        limit=max_objects,
    )


def _too_deep() -> CorruptCheckpoint:
    return CorruptCheckpoint(
        f"checkpoint body must nest lists and maps at most {MAX_DEPTH} levels deep (got deeper)",
        rule="too_deep",
        limit=MAX_DEPTH,
    )


class EnvelopeCodec:
    """Plain data ⇄ bytes: msgpack body, a chain of byte layers, a checked envelope.

    ``layers`` run in order on encode (default: lz4) and in reverse on decode.
    ``migrations`` maps an older format version ``v`` to a function upgrading a
    decoded value to ``v + 1`` (1 to 2 up to 4 to 5 are built in); bytes of a newer version
    are refused. ``max_size`` bounds a body's bytes and ``max_objects`` the
    msgpack items decoded from it.
    """

    def __init__(
        self,
        layers: Sequence[ByteLayer] = (),
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        max_objects: int = DEFAULT_MAX_OBJECTS,
        version: int = FORMAT_VERSION,
        migrations: Mapping[int, Migration] | None = None,
    ) -> None:
        for layer in layers:
            if not layer.tag or "+" in layer.tag or not layer.tag.isascii():
                raise CheckpointError(
                    f"a layer tag must be non-empty ascii without '+' (got {layer.tag!r})",
                    rule="layer_tag",
                )
        if not 0 < max_size <= _HARD_LIMIT:
            raise CheckpointError(
                f"'max_size' must be in 1..{_HARD_LIMIT} (got {max_size})", rule="limit"
            )
        if not 0 < max_objects <= _HARD_LIMIT:
            raise CheckpointError(
                f"'max_objects' must be in 1..{_HARD_LIMIT} (got {max_objects})", rule="limit"
            )
        self.layers = tuple(layers)
        self.max_size = max_size
        self.max_objects = max_objects
        self.version = version
        self.migrations = {
            1: _unchanged,
            2: _unchanged,
            3: _unchanged,
            4: _unchanged,
            **dict(migrations or {}),
        }
        self.tags = ("msgpack", *(layer.tag for layer in self.layers))
        self._tag_bytes = "+".join(self.tags).encode("ascii")
        self._prefix = _HEAD.pack(MAGIC, self.version, len(self._tag_bytes)) + self._tag_bytes

    def __repr__(self) -> str:
        return f"<EnvelopeCodec v{self.version} {'+'.join(self.tags)}>"

    def with_layer(self, layer: ByteLayer) -> EnvelopeCodec:
        """A codec with ``layer`` added at the end of the chain (e.g. encryption)."""
        return EnvelopeCodec(
            (*self.layers, layer),
            max_size=self.max_size,
            max_objects=self.max_objects,
            version=self.version,
            migrations=self.migrations,
        )

    def encode(self, value: Any) -> bytes:
        """The envelope bytes of the plain ``value``."""
        return self.seal(pack_plain(value))

    def seal(self, body: bytes) -> bytes:
        """The envelope bytes of a msgpack ``body`` (what :meth:`encode` packs)."""
        if len(body) > self.max_size:
            raise CheckpointError(
                f"a checkpoint body must be at most {self.max_size} bytes (got {len(body)})",
                rule="too_large",
                size=len(body),
                limit=self.max_size,
            )
        for layer in self.layers:
            body = layer.wrap(body)
        head = (
            _HEAD.pack(MAGIC, self.version, len(self._tag_bytes))
            + self._tag_bytes
            + _LENGTH.pack(len(body))
        )
        digest = hashlib.blake2b(head, digest_size=_DIGEST)
        digest.update(body)
        return head + digest.digest() + body

    def _own_body(self, data: bytes) -> memoryview | None:
        """The checked body of an envelope in this codec's own version and tags, else None.

        The common case of :meth:`decode`, with the same checks in a few operations;
        anything else (another version, damage) takes the full path, which names it.
        """
        prefix = self._prefix
        start = len(prefix) + _LENGTH.size + _DIGEST
        if type(data) is not bytes or len(data) < start or not data.startswith(prefix):
            return None
        (length,) = _LENGTH.unpack_from(data, len(prefix))
        if length > self.max_size or len(data) - start != length:
            return None
        body = memoryview(data)[start:]  # not a copy: at a long session's size, megabytes
        expected = hashlib.blake2b(data[: len(prefix) + _LENGTH.size], digest_size=_DIGEST)
        expected.update(body)
        return body if expected.digest() == data[start - _DIGEST : start] else None

    def decode(self, data: bytes) -> Any:
        """The plain value of ``data``; raise ``CorruptCheckpoint`` naming what is wrong."""
        own = self._own_body(data)
        if own is not None:
            return self._unpack(own, self.version)
        envelope = read_envelope(data, max_size=self.max_size)
        if envelope.version > self.version:
            raise CorruptCheckpoint(
                f"checkpoint format version must be at most {self.version} "
                f"(got {envelope.version}: written by a newer ctxflow)",
                rule="newer_version",
                version=envelope.version,
            )
        if envelope.tags != self.tags:
            raise CorruptCheckpoint(
                f"codec tags must be {'+'.join(self.tags)!r} (got {'+'.join(envelope.tags)!r})",
                rule="tags",
                tags=envelope.tags,
            )
        return self._unpack(envelope.body, envelope.version)

    def _unwrapped(self, body: bytes | memoryview) -> bytes | memoryview:
        """A checked body through the layers' ``unwrap``, last layer first. The lz4 layer
        reads a view of the envelope; any other layer is given bytes."""
        for layer in reversed(self.layers):
            if isinstance(layer, Lz4Layer):
                body = layer.unwrap_view(body, max_size=self.max_size)
            else:
                body = layer.unwrap(bytes(body), max_size=self.max_size)
        return body

    def decode_entry(self, data: bytes, key: str) -> Any:
        """The value under ``key`` of the map ``data`` holds (None when it has no such
        key), without building the rest: the other entries are skipped unread.

        Only an envelope in this codec's own version and tags is read this way;
        any other (an earlier format to migrate, damage to name) is decoded whole
        by :meth:`decode`, with the same errors.
        """
        unpacker = self._partial_reader(data)
        if unpacker is not None:
            try:
                for _ in range(unpacker.read_map_header()):
                    if unpacker.unpack() == key:
                        return unpacker.unpack()
                    unpacker.skip()
                return None
            except _PARTIAL_FAULTS:
                pass  # not a map, or damaged: decode() says which
        value = self.decode(data)
        return value.get(key) if isinstance(value, dict) else None

    def decode_items(self, data: bytes, wanted: Collection[int]) -> Any:
        """The list ``data`` holds with only its ``wanted`` positions and its last item
        built (None stands at the others, skipped unread): a segment read for a few of
        its bodies.

        As :meth:`decode_entry`, only an envelope in this codec's own version and
        tags is read this way; any other is decoded whole by :meth:`decode` (its
        value returned as it is, with the same errors).
        """
        unpacker = self._partial_reader(data)
        if unpacker is not None:
            try:
                size = unpacker.read_array_header()
                items: list[Any] = []
                for at in range(size):
                    if at in wanted or at == size - 1:
                        items.append(unpacker.unpack())
                    else:
                        unpacker.skip()
                        items.append(None)
                return items
            except _PARTIAL_FAULTS:
                pass  # not a list, or damaged: decode() says which
        return self.decode(data)

    def _partial_reader(self, data: bytes) -> msgpack.Unpacker | None:
        """An unpacker over the body of ``data``, read in place, when it is an envelope
        in this codec's own version and tags and within the item bound (None: read it
        whole with :meth:`decode`, which migrates, scans or names the damage)."""
        own = self._own_body(data)
        if own is None:
            return None
        body = self._unwrapped(own)
        if len(body) > self.max_objects:  # decode() scans it and names what it holds
            return None
        return msgpack.Unpacker(  # read from the body: no copy of it
            io.BytesIO(body),
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_ext_len=0,
            max_buffer_size=max(len(body), 1),
        )

    def _unpack(self, body: bytes | memoryview, version: int) -> Any:
        """The value of a checked envelope body written in format ``version``."""
        body = self._unwrapped(body)
        # Every item takes a byte at least: only a longer body can hold too many.
        scanned = len(body) > self.max_objects
        if scanned:
            _scan(body, self.max_objects)
        try:
            # msgpack bounds each length by the body's and the nesting by its stack;
            # max_ext_len=0 refuses timestamps, which never reach the ext_hook.
            value = msgpack.unpackb(
                body,
                raw=False,
                use_list=True,
                strict_map_key=True,
                ext_hook=_refuse_ext,
                max_ext_len=0,
            )
        except CorruptCheckpoint:
            raise
        except msgpack.StackError:
            raise _too_deep() from None
        except (ValueError, TypeError, OverflowError) as exc:
            if not scanned:
                _scan(body, len(body) + 1)  # names an extension type (in bounded time)
            raise CorruptCheckpoint(
                f"checkpoint body must be valid msgpack ({type(exc).__name__}: {exc})",
                rule="msgpack",
            ) from None
        for older in range(version, self.version):
            migrate = self.migrations.get(older)
            if migrate is None:
                raise CorruptCheckpoint(
                    f"format version {older} must have a migration to {older + 1} "
                    f"(none registered)",
                    rule="no_migration",
                    version=older,
                )
            value = migrate(value)
        return value


def default_codec(
    *, max_size: int = DEFAULT_MAX_SIZE, max_objects: int = DEFAULT_MAX_OBJECTS
) -> EnvelopeCodec:
    """The codec ctxflow writes by default: msgpack + lz4 in a version-5 envelope.

    lz4 runs at level 3 (high compression): about 20% smaller on the stores'
    body segments and still fast on small values; decoding is the same speed.
    """
    return EnvelopeCodec((Lz4Layer(level=3),), max_size=max_size, max_objects=max_objects)


def encode_readable(codec: Any, value: Any) -> bytes:
    """``codec.encode(value)``, refusing a value ``codec`` could not decode again: one of
    more than its ``max_objects`` msgpack items (``CheckpointError``, rule
    ``too_many_objects``; a codec other than an :class:`EnvelopeCodec` encodes
    anything).

    Stores encode manifests, heads and packs this way, so a session that outgrows
    the bound gets a typed error at its checkpoint, not a checkpoint it cannot load.
    """
    limit = getattr(codec, "max_objects", None)
    if not isinstance(codec, EnvelopeCodec) or not isinstance(limit, int):
        data: bytes = codec.encode(value)
        return data
    body = pack_plain(value)  # packed once: checked, then sealed
    if len(body) > limit:  # only then can it hold more items than decode takes
        try:
            _scan(body, limit)
        except CorruptCheckpoint:
            raise CheckpointError(
                f"a checkpoint value must hold at most {limit} msgpack items, the most its "
                "codec decodes (got more: it could not be read back; a codec with a larger "
                "max_objects reads and writes it)",
                rule="too_many_objects",
                limit=limit,
            ) from None
    return codec.seal(body)
