"""LangGraph's own checkpointer conformance suite, run against CtxflowSaver on ctxflow's stores."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis

pytest.importorskip("langgraph.checkpoint.conformance", reason="needs the [langgraph] extra")

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES

from ctxflow.integrations.langgraph import CtxflowSaver
from ctxflow.persistence import Store
from ctxflow.stores import MemoryStore, SQLiteStore
from ctxflow.stores import open_store as open_url

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_or_skip() -> redis.Redis:
    """A client of the local Redis server; skips (fails with CTXFLOW_REQUIRE_REDIS=1) when
    none answers."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        reason = f"no Redis answers at {REDIS_URL} ({exc})"
        if os.environ.get("CTXFLOW_REQUIRE_REDIS") == "1":
            pytest.fail(f"{reason} and CTXFLOW_REQUIRE_REDIS=1")
        pytest.skip(reason)
    return client


def _drop_redis_tenants(client: redis.Redis, prefix: str) -> None:
    """Delete every key of the tenants starting with ``prefix``, then close the client."""
    keys = list(client.scan_iter(match=f"ctxflow:{prefix}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


def _report(name: str, open_store: Callable[[], Store]) -> dict[str, object]:
    """Run the whole suite on fresh savers over ``open_store`` and return its report."""

    async def factory() -> AsyncIterator[CtxflowSaver]:
        store = open_store()
        try:
            yield CtxflowSaver(store)
        finally:
            store.close()

    registered = checkpointer_test(name=name)(factory)
    report = asyncio.run(validate(registered))
    return {"report": report, "failures": {k: r.failures for k, r in report.results.items()}}


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis", "postgres"])
def test_conformance_base_capabilities_pass(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every base capability of LangGraph's conformance suite passes, and so does every
    extended one the saver implements, on every store (Redis and PostgreSQL: the local
    servers, each fresh saver in a tenant of its own)."""
    counter = iter(range(1000))
    run = uuid.uuid4().hex[:8]
    if backend == "redis":
        server = _redis_or_skip()
        request.addfinalizer(lambda: _drop_redis_tenants(server, f"lg-{run}-"))
        base = f"{REDIS_URL}?tenant=lg-{run}-"
    elif backend == "postgres":
        pg_url, schema = request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema")
        base = f"{pg_url}?schema={schema}&tenant=lg-{run}-"

    def open_store() -> Store:
        if backend == "memory":
            return MemoryStore()
        if backend == "sqlite":
            return SQLiteStore(tmp_path / f"lg-{next(counter)}.db")
        return open_url(f"{base}{next(counter)}")

    result = _report(f"CtxflowSaver[{backend}]", open_store)
    report = result["report"]
    failures = result["failures"]
    for capability in BASE_CAPABILITIES:
        outcome = report.results[capability.value]  # type: ignore[attr-defined]
        assert outcome.detected, capability
        assert outcome.passed is True, (capability, failures)
        assert outcome.tests_passed > 0
    assert report.passed_all(), failures  # type: ignore[attr-defined]
