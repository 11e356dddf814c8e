"""PostgreSQL store fixtures (the server and the per-test schema come from tests/conftest.py).

Every test works in its own schema (``ctxflow_test_<uuid>``), dropped
afterwards; nothing here touches another schema of the server. Without a server
the tests skip, unless ``CTXFLOW_REQUIRE_POSTGRES=1`` makes that a failure.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ctxflow.stores import PostgresStore


@pytest.fixture
def pg_store(pg_url: str, pg_schema: str) -> Iterator[PostgresStore]:
    """A PostgreSQL store in the test's own schema, closed afterwards."""
    store = PostgresStore.from_url(pg_url, schema=pg_schema, max_size=4)
    yield store
    store.close()
