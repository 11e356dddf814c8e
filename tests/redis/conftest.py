"""Redis fixtures: the local server when one answers, else a private one, else skip.

Every test works in its own tenant (``test-<uuid>``) and deletes that tenant's
keys afterwards; nothing here flushes a shared server.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from cluster_support import LocalCluster, ReplicaPair, binaries_missing
from redis_support import LOCAL_URL, RedisServer, answers, delete_tenant

REQUIRE_REDIS = os.environ.get("CTXFLOW_REQUIRE_REDIS") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRE_REDIS:
        pytest.fail(f"{reason} and CTXFLOW_REQUIRE_REDIS=1")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real Redis: the local server, else a private one; skips when neither."""
    if answers(LOCAL_URL):
        yield LOCAL_URL
        return
    if shutil.which("redis-server") is None:
        _unavailable("no Redis answers on 127.0.0.1:6379 and redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.kill()


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start private redis-server processes (killed after the test)."""
    if shutil.which("redis-server") is None:
        pytest.skip(
            "the redis-server binary is absent, so no private server can be started "
            "(skipped even with CTXFLOW_REQUIRE_REDIS=1)"
        )
    servers: list[RedisServer] = []

    def make(*extra: str) -> RedisServer:
        server = RedisServer(tmp_path, *extra)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A private three-master Redis Cluster for the whole run (killed at the end); skips
    (fails with CTXFLOW_REQUIRE_REDIS=1) when redis-server or redis-cli is missing."""
    missing = binaries_missing()
    if missing is not None:
        _unavailable(f"no Redis Cluster can be started: {missing}")
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def replica_pair(tmp_path: Path) -> Iterator[ReplicaPair]:
    """A private primary with one replica (both killed after the test); skips (fails with
    CTXFLOW_REQUIRE_REDIS=1) when redis-server is missing."""
    if shutil.which("redis-server") is None:
        _unavailable("no primary and replica can be started: redis-server is not installed")
    pair = ReplicaPair(tmp_path).start()
    yield pair
    pair.stop()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A redis-py client of the test server."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def tenant(client: redis.Redis) -> Iterator[str]:
    """A fresh tenant name whose keys are deleted after the test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    delete_tenant(client, name)
