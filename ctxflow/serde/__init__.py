"""Compatibility re-exports; import from ctxflow.persistence (or ctxflow.stores)."""

from ctxflow.persistence import (
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
