"""Two nodes sharing agent sessions through Redis, with a single writer at a time.

Node A owns a session and checkpoints it through a lease-guarded store; it
hands the session to node B; A's next write — a paused former owner waking
up — is refused by its fencing token, and B carries on from A's checkpoint.

Run: python examples/redis_sessions.py   (REDIS_URL, default redis://127.0.0.1:6379/0)
Without a reachable Redis server it says so and exits 0.
"""

from __future__ import annotations

import os
import uuid

from ctxflow.errors import OwnershipLost
from ctxflow.model import Conversation, Message
from ctxflow.persistence import Checkpointer, new_session_id, restore


def main() -> None:
    try:
        import redis
    except ImportError:
        print("redis-py is not installed: pip install 'ctxflow[redis]'")
        return
    from ctxflow.sessions import SessionCoordinator
    from ctxflow.stores import RedisStore

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"Redis is not reachable at {url} ({exc}); nothing to show")
        return
    tenant = f"example-{uuid.uuid4().hex[:8]}"
    store = RedisStore(client, tenant=tenant)
    node_a = SessionCoordinator(client, tenant=tenant, node_id="node-a", store=store).start()
    node_b = SessionCoordinator(client, tenant=tenant, node_id="node-b", store=store).start()
    try:
        conversation = Conversation([Message.user("Summarise the incident report.")])
        session = new_session_id()
        lease = node_a.acquire(session)
        print("node-a owns the session")
        guarded = Checkpointer(node_a.fenced(lease), session_id=session)
        guarded.capture(conversation, phase="planning", trigger="phase")
        node_a.transfer(lease, "node-b")
        lease_b = node_b.acquire(session)
        newer = lease_b.fence.token > lease.fence.token
        print(f"node-a handed it to node-b (a newer fencing token: {newer})")
        conversation.append(Message.assistant("Reading the report now."))
        try:
            guarded.capture(conversation, phase="execution", trigger="phase")
        except OwnershipLost as exc:
            print(f"node-a's late write refused: {exc.rule}")
        restored = restore(store, session)
        writer_b = Checkpointer(node_b.fenced(lease_b), session_id=session)
        writer_b.restore()
        restored.conversation.append(Message.assistant("Reading the report now."))
        writer_b.capture(restored.conversation, phase="execution", trigger="phase")
        print(
            f"node-b wrote checkpoint {len(store.checkpoints(session))}; "
            f"messages={store.latest(session).message_count}"
        )
    finally:
        node_b.shutdown(handoff=False)
        node_a.shutdown(handoff=False)
        for key in client.scan_iter(match=f"ctxflow:{tenant}:*"):
            client.delete(key)
        store.close()


if __name__ == "__main__":
    main()
