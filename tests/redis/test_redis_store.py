"""The Redis store against the shared conformance suite and its own rules."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis_support import delete_tenant

from ctxflow.stores import BaseStore, RedisStore, StoreConformance

pytestmark = pytest.mark.redis


class TestRedisStore(StoreConformance):
    """The Redis store conforms."""

    @pytest.fixture(autouse=True)
    def _server(self, redis_url: str, client: redis.Redis) -> Iterator[None]:
        self.url = redis_url
        self.tenant = f"test-{uuid.uuid4().hex[:12]}"
        yield
        delete_tenant(client, self.tenant)

    def make_store(self, tmp_path: Path) -> BaseStore:
        """A fresh Redis store in its own tenant."""
        return RedisStore.from_url(self.url, tenant=self.tenant)
