"""The local PostgreSQL server for tests: its URL, whether it answers, and private schemas."""

from __future__ import annotations

import os
import uuid

import psycopg
from psycopg import sql

#: The server the tests use (``CTXFLOW_POSTGRES_URL`` overrides it).
LOCAL_URL = os.environ.get("CTXFLOW_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("CTXFLOW_REQUIRE_POSTGRES") == "1"


def answers(url: str = LOCAL_URL) -> str | None:
    """None when a PostgreSQL server answers at ``url``, else why not."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL answers at {url} ({str(exc).strip()})"
    return None


def new_schema() -> str:
    """A fresh schema name no other test uses."""
    return f"ctxflow_test_{uuid.uuid4().hex[:12]}"


def drop_schema(schema: str, url: str = LOCAL_URL) -> None:
    """Drop a test's schema and everything in it (nothing else is touched)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
