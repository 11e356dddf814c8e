"""Fixtures for the checkpoint tests: the shared corpus, when it is present."""

from __future__ import annotations

import os

import pytest

from ctxflow.model import Transcript
from ctxflow.testing import corpus_path, load_corpus


@pytest.fixture(scope="session")
def transcripts() -> list[Transcript]:
    """Every corpus transcript; skip (or fail under CTXFLOW_REQUIRE_CORPUS=1) when absent."""
    path = corpus_path()
    if path is None:
        reason = "the shared corpus is absent (set CTXFLOW_CORPUS or place ../shared/corpus/)"
        if os.environ.get("CTXFLOW_REQUIRE_CORPUS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return load_corpus(path)
