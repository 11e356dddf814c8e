"""Checkpoint bytes: a versioned envelope around msgpack, an lz4 frame and a checksum.

Only plain data crosses this boundary (dicts with string keys, lists, str,
bytes, int, float, bool, None). There is no pickle and no msgpack extension
type that rebuilds Python classes, so decoding hostile bytes can at worst
raise :class:`~ctxflow.errors.CorruptCheckpoint`.
"""

from ctxflow.serde.codec import (
    DEFAULT_MAX_SIZE,
    FORMAT_VERSION,
    MAGIC,
    ByteLayer,
    Envelope,
    EnvelopeCodec,
    Lz4Layer,
    Migration,
    default_codec,
    read_envelope,
)

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
    "read_envelope",
]
