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
``max_size``. Every failure is a :class:`~ctxflow.errors.CorruptCheckpoint`
whose ``rule`` names what was wrong.

Format versions: 2 lets the lz4 layer keep a body that compression would not
shrink as it is, behind a zero byte (a frame starts with its magic number): a
small manifest delta is then smaller and decodes in half the time. Version 1
values read unchanged (a built-in migration).

Gotcha: msgpack turns tuples into lists; a round trip gives lists back.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import lz4.frame
import msgpack

from ctxflow.errors import CheckpointError, CorruptCheckpoint

__all__ = [
    "DEFAULT_MAX_SIZE",
    "FORMAT_VERSION",
    "MAGIC",
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
FORMAT_VERSION = 2
#: Largest body (stored or decompressed) a codec accepts by default: 256 MiB.
DEFAULT_MAX_SIZE = 256 * 1024 * 1024
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
        # declares stops there (and fails the completeness check below), and the output
        # buffer is sized to the value instead of to the limit.
        decompressor = lz4.frame.LZ4FrameDecompressor()
        try:
            out = bytes(decompressor.decompress(data, max_length=declared or max_size + 1))
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


def _refuse_ext(code: int, data: bytes) -> Any:
    raise CorruptCheckpoint(
        f"checkpoint body must hold plain data only (got msgpack extension type {code})",
        rule="ext_type",
    )


class EnvelopeCodec:
    """Plain data ⇄ bytes: msgpack body, a chain of byte layers, a checked envelope.

    ``layers`` run in order on encode (default: lz4) and in reverse on decode.
    ``migrations`` maps an older format version ``v`` to a function upgrading a
    decoded value to ``v + 1`` (1 to 2 is built in); bytes of a newer version
    are refused.
    """

    def __init__(
        self,
        layers: Sequence[ByteLayer] = (),
        *,
        max_size: int = DEFAULT_MAX_SIZE,
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
        self.layers = tuple(layers)
        self.max_size = max_size
        self.version = version
        self.migrations = {1: _unchanged, **dict(migrations or {})}
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
            version=self.version,
            migrations=self.migrations,
        )

    def encode(self, value: Any) -> bytes:
        """The envelope bytes of the plain ``value``."""
        body = pack_plain(value)
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

    def _own_body(self, data: bytes) -> bytes | None:
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
        body = data[start:]
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

    def _unpack(self, body: bytes, version: int) -> Any:
        """The value of a checked envelope body written in format ``version``."""
        for layer in reversed(self.layers):
            body = layer.unwrap(body, max_size=self.max_size)
        try:
            value = msgpack.unpackb(
                body, raw=False, use_list=True, strict_map_key=True, ext_hook=_refuse_ext
            )
        except CorruptCheckpoint:
            raise
        except (ValueError, TypeError, OverflowError) as exc:
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


def default_codec(*, max_size: int = DEFAULT_MAX_SIZE) -> EnvelopeCodec:
    """The codec ctxflow writes by default: msgpack + lz4 in a version-2 envelope.

    lz4 runs at level 3 (high compression): about 20% smaller on the stores'
    body segments and still fast on small values; decoding is the same speed.
    """
    return EnvelopeCodec((Lz4Layer(level=3),), max_size=max_size)
