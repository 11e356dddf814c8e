"""PostgreSQL fixtures: the local server, and a schema of its own for every test.

Every test works in its own schema (``ctxflow_test_<uuid>``), dropped
afterwards; nothing here touches another schema of the server. Without a server
the tests skip, unless ``CTXFLOW_REQUIRE_POSTGRES=1`` makes that a failure.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pg_support import LOCAL_URL, REQUIRE_POSTGRES, answers, drop_schema, new_schema

from ctxflow.stores import PostgresStore


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The URL of a real PostgreSQL server; skips (or fails when required) when none answers."""
    reason = answers(LOCAL_URL)
    if reason is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(f"{reason} and CTXFLOW_REQUIRE_POSTGRES=1")
        pytest.skip(reason)
    return LOCAL_URL


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh schema name, dropped with everything in it after the test."""
    schema = new_schema()
    yield schema
    drop_schema(schema, pg_url)


@pytest.fixture
def pg_store(pg_url: str, pg_schema: str) -> Iterator[PostgresStore]:
    """A PostgreSQL store in the test's own schema, closed afterwards."""
    store = PostgresStore.from_url(pg_url, schema=pg_schema, max_size=4)
    yield store
    store.close()
