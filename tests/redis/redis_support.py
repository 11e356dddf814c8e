"""Helpers of the Redis tests: find or start a server, delete one tenant's keys, wait for a
condition, drive a worker process."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis
from cluster_support import Server, free_ports

from ctxflow.model import Conversation, Message
from ctxflow.persistence import CheckpointDraft, Checkpointer, new_checkpoint_id
from ctxflow.sessions._ownership import Lease, SessionCoordinator
from ctxflow.stores import RedisStore

LOCAL_URL = "redis://127.0.0.1:6379/0"
WORKER = Path(__file__).with_name("redis_worker.py")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    return free_ports(1)[0]


def answers(url: str) -> bool:
    """True when a Redis server at ``url`` answers PING."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.3, socket_timeout=0.3)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RedisServer(Server):
    """A private ``redis-server`` process on a free port (started and killed by tests)."""

    def __init__(self, directory: Path, *extra: str) -> None:
        super().__init__(directory, free_port(), *extra)


def coordinator(
    client: redis.Redis,
    tenant: str,
    node: str,
    *,
    ttl: float = 1.0,
    beat: float = 0.2,
    claim: float = 0.2,
    **kwargs: object,
) -> SessionCoordinator:
    """A coordinator of ``tenant`` over a Redis store of its own, not started."""
    return SessionCoordinator(
        client,
        tenant=tenant,
        node_id=node,
        store=RedisStore(client, tenant=tenant),
        lease_ttl=ttl,
        heartbeat_interval=beat,
        claim_interval=claim,
        **kwargs,  # type: ignore[arg-type]
    )


def delete_tenant(client: redis.Redis, tenant: str) -> None:
    """Delete every key of one tenant (never anything else)."""
    keys = list(client.scan_iter(match=f"ctxflow:{tenant}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


def wait_for(condition: Callable[[], object], what: str, deadline: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after a generous ``deadline``."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: still not the case after {deadline} s")
        time.sleep(0.02)


class HoldWorker:
    """A ``redis_worker.py hold`` process: one session's owner, driven line by line.

    Its output is read on a thread, so no read blocks a test past its deadline.
    """

    def __init__(self, url: str, tenant: str, node: str, ttl: float, session_id: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), "hold", url, tenant, node, str(ttl), session_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lost: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            ready = self._next("ready")
        except AssertionError:
            self.kill()
            raise
        self.token = int(ready[1])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("lost "):
                self.lost.append(line.split()[1])
            else:
                self._lines.put(line)

    def _next(self, word: str, deadline: float = 60.0) -> list[str]:
        end = time.monotonic() + deadline
        while True:
            try:
                fields = self._lines.get(timeout=max(0.0, end - time.monotonic())).split()
            except queue.Empty:
                missing = f"the worker printed no {word!r} line in {deadline} s"
                raise AssertionError(missing) from None
            if fields and fields[0] == word:
                return fields

    def run(self, command: str) -> tuple[str, str]:
        """Run one command; its outcome: ``("ok", detail)`` or ``(error class, rule)``."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        fields = self._next("did")
        assert fields[1] == command, fields
        return fields[2], fields[3] if len(fields) > 3 else ""

    def pause(self) -> None:
        """SIGSTOP the worker (its heartbeat stops too, as in a long GC pause)."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the worker."""
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the worker and reap it."""
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def lease_expired(
    client: redis.Redis, node: SessionCoordinator, session_id: str, *, hasten: bool = False
) -> None:
    """Wait until the session's lease key is gone (the lease ran out); with ``hasten``, its
    remaining time is cut to 50 ms first (Redis still expires it)."""
    owner = node.keys.session(session_id, "owner")
    if hasten:
        client.pexpire(owner, 50)
    wait_for(lambda: not client.exists(owner), f"the lease of {session_id} expiring")


def write_turns(node: SessionCoordinator, lease: Lease, turns: int) -> Checkpointer:
    """The leased session's checkpointer after ``turns`` more acknowledged checkpoints."""
    writer = Checkpointer(node.fenced(lease), lease.session_id)
    conversation = Conversation()
    if node.store is not None and lease.session_id in node.store.sessions():
        conversation = writer.restore().conversation
    for _ in range(turns):
        i = len(conversation)
        role = Message.user if i % 2 == 0 else Message.assistant
        conversation.append(role(f"turn {i}", id=f"m{i}"))
        writer.capture(conversation)
    return writer


def full_draft(
    store: RedisStore, session_id: str, parent: str, *, source: str | None = None
) -> CheckpointDraft:
    """A full draft of checkpoint ``source`` (default: ``parent``) to be written on ``parent``."""
    snapshot = store.load(session_id, parent if source is None else source)
    return CheckpointDraft(
        id=new_checkpoint_id(),
        session_id=session_id,
        parent_id=parent,
        created_at=time.time(),
        manifest=snapshot.manifest.to_plain(),
        message_count=snapshot.record.message_count,
    )
