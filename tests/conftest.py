"""Shared fixtures: the real-agent corpus (skipped or required), counters, and a real
PostgreSQL server with a schema per test (skipped or required)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
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


# -- PostgreSQL: the local server, and a schema of its own for every test ---------------

#: The server the PostgreSQL tests use (``CTXFLOW_POSTGRES_URL`` overrides it).
POSTGRES_URL = os.environ.get("CTXFLOW_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("CTXFLOW_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The URL of a real PostgreSQL server; skips (or fails when required) when none answers."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = f"no PostgreSQL answers at {POSTGRES_URL} ({str(exc).strip()})"
        if REQUIRE_POSTGRES:
            pytest.fail(f"{reason} and CTXFLOW_REQUIRE_POSTGRES=1")
        pytest.skip(reason)
    return POSTGRES_URL


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh schema name (``ctxflow_test_<uuid>``), dropped with everything in it after
    the test; nothing else of the server is touched."""
    import psycopg
    from psycopg import sql

    schema = f"ctxflow_test_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
