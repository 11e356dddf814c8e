"""The Redis store behaves like the in-memory store under any sequence of operations."""

from __future__ import annotations

import uuid

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_support import delete_tenant

from ctxflow.errors import CheckpointNotFound
from ctxflow.model import Conversation, Message
from ctxflow.persistence import Checkpointer, restore
from ctxflow.stores import BaseStore, MemoryStore, RedisStore

pytestmark = pytest.mark.redis

SESSIONS = ("s0", "s1", "s2")
operations = st.lists(
    st.tuples(
        st.sampled_from(["turn", "turn", "turn", "prune", "fork", "erase"]),
        st.sampled_from(SESSIONS),
        st.integers(min_value=1, max_value=4),
    ),
    max_size=25,
)


def _view(store: BaseStore) -> dict[str, list[tuple[int, int, bool]]]:
    out = {}
    for session_id in store.sessions():
        records = store.checkpoints(session_id)
        out[session_id] = [(r.seq, r.message_count, r.full) for r in records]
        assert len(restore(store, session_id).conversation) == records[-1].message_count
    return out


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_redis_matches_memory(client: redis.Redis, ops: list[tuple[str, str, int]]) -> None:
    """Turns, retention, forks and erasure leave the same sessions, records and contents."""
    tenant = f"test-{uuid.uuid4().hex[:12]}"
    stores: list[BaseStore] = [MemoryStore(), RedisStore(client, tenant=tenant)]
    writers: list[dict[str, tuple[Checkpointer, Conversation]]] = [{}, {}]
    try:
        for step, (op, session_id, n) in enumerate(ops):
            for store, mine in zip(stores, writers, strict=True):
                if op == "turn":
                    writer, conversation = mine.setdefault(
                        session_id,
                        (
                            Checkpointer(store, session_id, full_every=3, full_ratio=0),
                            Conversation(),
                        ),
                    )
                    role = Message.user if len(conversation) % 2 == 0 else Message.assistant
                    conversation.append(role(f"turn {step}", id=f"m{step}"))
                    writer.capture(conversation)
                elif session_id not in store.sessions():
                    with pytest.raises(CheckpointNotFound):
                        store.prune(session_id, keep_last=n)
                elif op == "prune":
                    store.prune(session_id, keep_last=n)
                elif op == "fork":
                    store.fork(session_id, store.latest(session_id).id, new_session_id=f"f{step}")
                else:
                    store.erase(session_id)
                    mine.pop(session_id, None)
        assert _view(stores[0]) == _view(stores[1])
    finally:
        delete_tenant(client, tenant)
