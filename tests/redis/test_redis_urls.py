"""Opening the Redis store from a URL: one server, a cluster, the store's options, bad URLs."""

from __future__ import annotations

import pytest
import redis
from cluster_support import LocalCluster

from ctxflow.errors import StoreError
from ctxflow.persistence._redis.url import parse_redis_url
from ctxflow.stores import RedisStore


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "non-empty"),
        ("http://127.0.0.1:6379", "scheme"),
        ("127.0.0.1:6379", "scheme"),
        ("redis://127.0.0.1:notaport/0", "port"),
        ("redis://127.0.0.1:6379/zero", "database"),
        ("redis:///0", "host"),
        ("redis+cluster://127.0.0.1:7000/3", "database 0"),
        ("redis+cluster://127.0.0.1:7000?db=2", "database 0"),
        ("redis+cluster://:7000", "host"),
        ("redis://127.0.0.1/0?replicas=two", "'replicas' must be an integer"),
        ("redis://127.0.0.1/0?replica_timeout=soon", "'replica_timeout' must be a number"),
        ("redis://127.0.0.1/0?ttl=x", "'ttl' must be a number"),
        ("redis://127.0.0.1/0?tenant=a&tenant=b", "twice"),
        ("redis://127.0.0.1/0?tenant=a:b", "tenant"),
        ("redis://127.0.0.1/0?replicas=-1", "replicas"),
        ("redis://127.0.0.1/0?ttl=0", "ttl"),
        ("redis://127.0.0.1/0?&&=", "query"),
    ],
)
def test_bad_urls_are_refused_before_connecting(url: str, why: str) -> None:
    """Each malformed URL or option raises StoreError naming the fault, with no server
    contacted (port 1 would refuse)."""
    with pytest.raises(StoreError) as caught:
        RedisStore.from_url(url.replace("6379", "1"))
    assert why in str(caught.value)
    assert caught.value.rule in {"redis_url", "tenant", "replicas", "ttl"}


def test_an_option_in_the_url_and_a_keyword_is_refused() -> None:
    """``?tenant=`` and ``tenant=`` together are ambiguous: refused."""
    with pytest.raises(StoreError) as caught:
        RedisStore.from_url("redis://127.0.0.1:1/0?tenant=a", tenant="b")
    assert caught.value.details["option"] == "tenant"


def test_a_password_never_shows_in_the_error() -> None:
    """A refused URL's message hides its password."""
    with pytest.raises(StoreError) as caught:
        RedisStore.from_url("redis+cluster://user:s3cret@127.0.0.1:1/5")
    assert "s3cret" not in str(caught.value)
    assert "***" in str(caught.value)


def test_the_parts_ctxflow_reads_and_what_redis_py_gets() -> None:
    """Store options leave the URL; redis-py's own query and the database stay; a cluster
    URL becomes its seed node's URL."""
    parsed = parse_redis_url("rediss://u:p@h:6380/2?tenant=app&socket_timeout=3&replicas=1")
    assert parsed.redis_url == "rediss://u:p@h:6380/2?socket_timeout=3"
    assert parsed.options == {"tenant": "app", "replicas": "1"}
    assert not parsed.cluster
    seed = parse_redis_url("redis+cluster://h")
    assert (seed.redis_url, seed.cluster) == ("redis://h:6379", True)
    assert parse_redis_url("rediss+cluster://h:7000/0").redis_url == "rediss://h:7000"
    assert parse_redis_url("unix:///run/redis.sock?db=1").redis_url == "unix:///run/redis.sock?db=1"


@pytest.mark.redis
def test_a_server_url_carries_the_store_options(redis_url: str) -> None:
    """``redis://...?tenant=&ttl=`` opens a one-server store with those options."""
    store = RedisStore.from_url(f"{redis_url}?tenant=url-options&ttl=30&replica_timeout=2")
    try:
        assert isinstance(store.client, redis.Redis)
        assert (store.tenant, store.ttl, store.replicas) == ("url-options", 30.0, 0)
        assert store.replication.timeout == 2.0
        assert store.sessions() == []
    finally:
        store.close()
    default = RedisStore.from_url(redis_url)
    assert default.tenant == "default"
    default.close()


@pytest.mark.redis
def test_a_cluster_url_opens_a_cluster_client(redis_cluster: LocalCluster) -> None:
    """``redis+cluster://seed`` finds every master of the cluster."""
    store = RedisStore.from_url(f"{redis_cluster.url}/0?tenant=url-cluster")
    try:
        assert isinstance(store.client, redis.RedisCluster)
        assert len(store.client.get_primaries()) == 3
        assert store.tenant == "url-cluster"
    finally:
        store.close()


def test_an_unreachable_server_is_a_store_error() -> None:
    """A cluster seed nobody answers on: StoreError(rule='redis'), not a redis-py error."""
    with pytest.raises(StoreError) as caught:
        RedisStore.from_url("redis+cluster://127.0.0.1:1", socket_connect_timeout=0.2)
    assert caught.value.rule == "redis"
