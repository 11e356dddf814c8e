"""Worker processes of the Redis tests and benchmark (run as a script, not collected).

``count URL TENANT N SID...``: N compare-and-set increments spread over the sessions.
``node URL TENANT NODE SID...``: own the sessions and write checkpoints forever,
printing ``ack SID CHECKPOINT MESSAGES`` after each acknowledged write.
"""

from __future__ import annotations

import sys

import redis

from ctxflow.model import Conversation, Message
from ctxflow.persistence import Checkpointer
from ctxflow.sessions._ownership import SessionCoordinator
from ctxflow.stores import RedisStore


def count(url: str, tenant: str, n: int, sessions: list[str]) -> None:
    """Increment each session's counter by CAS with retries, n times in all."""
    client = redis.Redis.from_url(url)
    node = SessionCoordinator(client, tenant=tenant)
    for i in range(n):
        session_id = sessions[i % len(sessions)]
        node.update_with_retry(session_id, lambda d: {"n": (d or {"n": 0})["n"] + 1})
    print("done", flush=True)


def node(url: str, tenant: str, node_id: str, sessions: list[str]) -> None:
    """Own the sessions and append fenced checkpoints until killed."""
    client = redis.Redis.from_url(url)
    store = RedisStore(client, tenant=tenant)
    coordinator = SessionCoordinator(
        client,
        tenant=tenant,
        node_id=node_id,
        store=store,
        lease_ttl=1.0,
        heartbeat_interval=0.2,
        claim_interval=0.2,
    ).start()
    writers = []
    for session_id in sessions:
        lease = coordinator.acquire(session_id)
        writers.append((Checkpointer(coordinator.fenced(lease), session_id), Conversation()))
    step = 0
    while True:
        for writer, conversation in writers:
            role = Message.user if step % 2 == 0 else Message.assistant
            conversation.append(role(f"turn {step}", id=f"m{step}"))
            record = writer.capture(conversation, state={"step": step})
            print("ack", record.session_id, record.id, record.message_count, flush=True)
        step += 1


if __name__ == "__main__":
    mode, url, tenant, *rest = sys.argv[1:]
    if mode == "count":
        count(url, tenant, int(rest[0]), rest[1:])
    else:
        node(url, tenant, rest[0], rest[1:])
