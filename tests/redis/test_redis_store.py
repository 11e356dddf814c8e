"""The Redis store against the shared conformance suite and its own rules."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_support import delete_tenant

from ctxflow.errors import CorruptCheckpoint
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


def test_a_damaged_body_is_written_again_not_reused(redis_url: str, tenant: str) -> None:
    """A put carrying a body whose stored copy is damaged rewrites it: both checkpoints restore."""
    import attrs

    from ctxflow.model import Conversation, Message
    from ctxflow.persistence import CheckpointDraft, Checkpointer, MemoryStore, new_checkpoint_id

    drafts: list[CheckpointDraft] = []

    class Recording(MemoryStore):
        def put(self, draft: CheckpointDraft, *, expected_parent: str | None) -> Any:
            drafts.append(draft)
            return super().put(draft, expected_parent=expected_parent)

    conversation = Conversation([Message.user(f"turn {i}", id=f"u{i}") for i in range(5)])
    Checkpointer(Recording(), "ses_damaged").capture(conversation)
    first = drafts[0]
    store = RedisStore.from_url(redis_url, tenant=tenant)
    try:
        store.put(first, expected_parent=None)
        key = store.keys.session("ses_damaged", "body")
        for digest in store.client.hkeys(key):
            store.client.hset(key, digest, b"\x00damaged")
        with pytest.raises(CorruptCheckpoint):
            store.load("ses_damaged", first.id)
        again = attrs.evolve(first, id=new_checkpoint_id(), parent_id=first.id)
        store.put(again, expected_parent=first.id)
        for checkpoint_id in (first.id, again.id):
            assert len(store.load("ses_damaged", checkpoint_id).bodies) == 5
    finally:
        store.close()
