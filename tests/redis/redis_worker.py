"""Worker processes of the Redis tests and benchmark (run as a script, not collected).

``count URL TENANT N SID...``: N compare-and-set increments spread over the sessions.
``node URL TENANT NODE SID...``: own the sessions and write checkpoints forever,
printing ``ack SID CHECKPOINT MESSAGES`` after each acknowledged write.
``hold URL TENANT NODE TTL SID``: own one session, write three checkpoints, print
``ready TOKEN``, then run one write per line of standard input (see ``COMMANDS``),
printing ``did COMMAND ok DETAIL`` or ``did COMMAND ERROR RULE``; a lost lease
prints ``lost SID``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

import redis
from redis_support import full_draft

from ctxflow.errors import CtxflowError
from ctxflow.model import Conversation, Message
from ctxflow.persistence import CheckpointDraft, Checkpointer, CheckpointRecord
from ctxflow.persistence._redis.url import parse_redis_url
from ctxflow.sessions._ownership import Lease, SessionCoordinator
from ctxflow.stores import RedisStore

_SAY = threading.Lock()


def _say(*words: object) -> None:
    """Print one line in one write (threads' lines never interleave, as print's pieces can)."""
    with _SAY:
        sys.stdout.write(" ".join(str(w) for w in words) + "\n")
        sys.stdout.flush()


#: The writes a ``hold`` worker runs on command, each as this node's lease allows.
COMMANDS = (
    "put",
    "prune",
    "erase",
    "fork",
    "commit",
    "commit_with_retry",
    "commit_or_fork",
    "update",
    "update_with_retry",
    "update_or_fork",
)


def count(url: str, tenant: str, n: int, sessions: list[str]) -> None:
    """Increment each session's counter by CAS with retries, n times in all (``url`` may be
    a ``redis+cluster://`` URL)."""
    client = parse_redis_url(url).client()
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


def _writes(
    coordinator: SessionCoordinator, lease: Lease, writer: Checkpointer, conversation: Conversation
) -> dict[str, Callable[[], object]]:
    """Each command of ``COMMANDS`` as a call returning what it wrote."""
    store = coordinator.store
    assert store is not None
    fenced = coordinator.fenced(lease)
    sid = lease.session_id

    def put() -> CheckpointRecord:
        conversation.append(
            Message.user(f"late {len(conversation)}", id=f"late{len(conversation)}")
        )
        return writer.capture(conversation)

    def mine() -> str:
        assert writer.last_id is not None
        return writer.last_id

    def rebuild(latest: CheckpointRecord) -> CheckpointDraft:
        return full_draft(store, sid, latest.id)

    return {
        "put": put,
        "prune": lambda: fenced.prune(sid, keep_last=1),
        "erase": lambda: fenced.erase(sid),
        "fork": lambda: fenced.fork(sid, mine()),
        "commit": lambda: coordinator.commit(
            lease, full_draft(store, sid, mine()), expected_parent=mine()
        ),
        "commit_with_retry": lambda: coordinator.commit_with_retry(
            lease, full_draft(store, sid, mine()), expected_parent=mine(), rebuild=rebuild
        ),
        "commit_or_fork": lambda: coordinator.commit_or_fork(
            lease, full_draft(store, sid, mine()), expected_parent=mine()
        ),
        "update": lambda: coordinator.update(sid, lambda d: "late", lease=lease),
        "update_with_retry": lambda: coordinator.update_with_retry(
            sid, lambda d: "late", lease=lease
        ),
        "update_or_fork": lambda: coordinator.update_or_fork(sid, lambda d: "late", lease=lease),
        "owned": lambda: ",".join(sorted(coordinator.owned())) or "-",
        "sessions": lambda: ",".join(store.sessions()) or "-",
    }


def hold(url: str, tenant: str, node_id: str, ttl: float, session_id: str) -> None:
    """Own one session, write three checkpoints, then run the writes named on standard input."""
    client = redis.Redis.from_url(url)
    coordinator = SessionCoordinator(
        client,
        tenant=tenant,
        node_id=node_id,
        store=RedisStore(client, tenant=tenant),
        lease_ttl=ttl,
        heartbeat_interval=ttl / 5,
        claim_interval=3600,
        on_lost=lambda sid: _say("lost", sid),
    ).start()
    lease = coordinator.acquire(session_id)
    coordinator.update(session_id, lambda d: "first", lease=lease)
    writer, conversation = Checkpointer(coordinator.fenced(lease), session_id), Conversation()
    for step in range(3):
        role = Message.user if step % 2 == 0 else Message.assistant
        conversation.append(role(f"turn {step}", id=f"m{step}"))
        writer.capture(conversation)
    writes = _writes(coordinator, lease, writer, conversation)
    _say("ready", lease.token)
    for line in sys.stdin:
        command = line.strip()
        try:
            done = writes[command]()
        except CtxflowError as exc:
            _say("did", command, type(exc).__name__, exc.rule)
        else:
            detail = getattr(done, "session_id", done)
            _say("did", command, "ok", detail)


if __name__ == "__main__":
    mode, url, tenant, *rest = sys.argv[1:]
    if mode == "count":
        count(url, tenant, int(rest[0]), rest[1:])
    elif mode == "hold":
        hold(url, tenant, rest[0], float(rest[1]), rest[2])
    else:
        node(url, tenant, rest[0], rest[1:])
