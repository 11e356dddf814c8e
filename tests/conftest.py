"""Shared fixtures: the real-agent corpus (skipped or required) and counters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctxflow.model import Transcript
from ctxflow.testing import corpus_path, load_corpus

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_CORPUS = os.environ.get("CTXFLOW_REQUIRE_CORPUS") == "1"

_cache: list[Transcript] = []


@pytest.fixture(scope="session")
def corpus() -> list[Transcript]:
    """Every transcript of ../shared/corpus/; skips when absent unless it is required."""
    if not _cache:
        path = corpus_path(ROOT)
        if path is None:
            reason = "the shared corpus (../shared/corpus/agent_trajectories.jsonl) is absent"
            if REQUIRE_CORPUS:
                pytest.fail(f"{reason} and CTXFLOW_REQUIRE_CORPUS=1")
            pytest.skip(reason)
        _cache.extend(load_corpus(path))
    return _cache


@pytest.fixture(scope="session")
def transcripts(corpus: list[Transcript]) -> list[Transcript]:
    """The same corpus, under the name some test modules use."""
    return corpus
