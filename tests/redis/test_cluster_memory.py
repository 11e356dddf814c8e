"""The shared-memory suite of tests/memory run on the private Redis Cluster.

The suite's backend-neutral tests are collected here a second time, with a
``factory`` that opens ``RedisSharedMemory`` on a cluster client, plus the
hypothesis model check against the in-memory backend.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from cluster_support import LocalCluster
from hypothesis import HealthCheck, given, settings
from memory import test_shared_memory as suite

from ctxflow.memory._shared import Owner, SharedMemory
from ctxflow.memory._shared_redis import RedisSharedMemory

pytestmark = pytest.mark.redis

# Every test of the suite that runs on any backend through ``factory`` (and ``corrupt``).
_NEUTRAL = {
    name: fn
    for name, fn in vars(suite).items()
    if name.startswith("test_")
    and callable(fn)
    and "factory" in inspect.signature(fn).parameters
    and set(inspect.signature(fn).parameters) <= {"factory", "corrupt", "facts", "procedures"}
}
globals().update({f"{name}_on_the_cluster": fn for name, fn in _NEUTRAL.items()})


@pytest.fixture(scope="module")
def cluster_client(redis_cluster: LocalCluster) -> Iterator[redis.RedisCluster]:
    """One cluster client for the module."""
    client = redis_cluster.client()
    yield client
    client.close()


@pytest.fixture
def backend() -> str:
    """The backend under test: Redis (here a cluster)."""
    return "redis"


@pytest.fixture
def factory(cluster_client: redis.RedisCluster) -> Callable[..., SharedMemory]:
    """Opens shared memories on the cluster, all under one fresh prefix."""
    prefix = f"ctxflow-test-{uuid.uuid4().hex[:12]}:"

    def make(**options: Any) -> SharedMemory:
        return RedisSharedMemory(cluster_client, prefix=prefix, **options)

    return make


@pytest.fixture
def corrupt() -> Callable[..., None]:
    """Overwrites one stored item's bytes behind the memory's back."""

    def damage(memory: SharedMemory, owner: Owner, name: str, data: bytes) -> None:
        assert isinstance(memory, RedisSharedMemory)
        memory.client.hset(memory.owner_keys(owner)[0], name, data)

    return damage


def test_the_suite_is_collected_here() -> None:
    """The suite's backend-neutral tests are picked up (a rename there cannot silently drop
    them here)."""
    assert len(_NEUTRAL) >= 20


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=suite._ops)
def test_cluster_behaves_as_the_in_memory_model(
    cluster_client: redis.RedisCluster, ops: list[Any]
) -> None:
    """Any sequence of merges, deletes, erasures and prunes gives the cluster's answers and
    contents equal to the in-memory backend's."""
    prefix = f"ctxflow-test-{uuid.uuid4().hex[:12]}:"
    suite._same_as_in_memory(
        lambda clock: RedisSharedMemory(cluster_client, prefix=prefix, clock=clock, max_items=4),
        ops,
    )


def test_a_memory_opens_from_a_cluster_url(redis_cluster: LocalCluster) -> None:
    """``redis+cluster://`` opens a cluster client the memory owns."""
    prefix = f"ctxflow-test-{uuid.uuid4().hex[:12]}:"
    alice = Owner.user("acme", "alice")
    with RedisSharedMemory(redis_cluster.url, prefix=prefix) as memory:
        assert isinstance(memory.client, redis.RedisCluster)
        memory.merge(alice, [suite._fact("tz", "UTC")])
        assert [f.key for f in memory.load(alice).facts] == ["tz"]
        assert memory.owners("acme") == [alice]
