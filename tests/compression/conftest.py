"""Fixtures for the compression tests: the shared corpus and a fast fixed-rate measure."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from ctxflow.model import Message
from ctxflow.testing import FixedCounter, corpus_path, load_corpus
from ctxflow.tokens import message_measure


@pytest.fixture(scope="session")
def measure() -> Callable[[Message], int]:
    """A fixed four-characters-a-token measure with 4 tokens of overhead per message."""
    return message_measure(FixedCounter(), overhead=4)


@pytest.fixture(scope="session")
def transcripts() -> list[object]:
    """Every transcript of the shared corpus (skip, or fail under CTXFLOW_REQUIRE_CORPUS=1)."""
    if corpus_path() is None:
        if os.environ.get("CTXFLOW_REQUIRE_CORPUS") == "1":
            pytest.fail("the corpus is required (CTXFLOW_REQUIRE_CORPUS=1) but was not found")
        pytest.skip("the shared corpus of agent conversations is not available")
    return list(load_corpus())
