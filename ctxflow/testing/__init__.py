"""Test kit for ctxflow and its users: test doubles, corpus helpers, assertions."""

from ctxflow.testing.corpus import (
    CORPUS_ENV,
    concatenate,
    corpus_path,
    load_corpus,
)
from ctxflow.testing.doubles import CountingCounter, FixedCounter

__all__ = [
    "CORPUS_ENV",
    "CountingCounter",
    "FixedCounter",
    "concatenate",
    "corpus_path",
    "load_corpus",
]
