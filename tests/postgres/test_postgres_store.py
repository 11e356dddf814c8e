"""The PostgreSQL store: the conformance suite on a real server, then what only it has
(schemas and versions, tenants, fencing, concurrent writers, failures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxflow.persistence._base import BaseStore
from ctxflow.stores import PostgresStore, StoreConformance


class TestPostgresStore(StoreConformance):
    """The store conformance suite against the local PostgreSQL server."""

    @pytest.fixture(autouse=True)
    def _schema(self, pg_url: str, pg_schema: str) -> None:
        self.url, self.schema = pg_url, pg_schema

    def make_store(self, tmp_path: Path) -> BaseStore:
        return PostgresStore.from_url(self.url, schema=self.schema, max_size=4)
