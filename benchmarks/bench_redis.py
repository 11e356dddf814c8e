"""Redis: turns per second and turn latency with a fenced checkpoint per turn.

Four worker processes share 1, 8 or 64 sessions (each session owned by one
worker, round robin; with one session only one worker has work, as single
writer demands). A turn appends a user and an assistant message and commits a
checkpoint through a fenced :class:`~ctxflow.sessions._ownership.SessionCoordinator`
commit (Lua: owner, token and parent check plus the write, then an
invalidation). Skipped with a recorded note when no Redis answers locally.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
import uuid
from typing import Any

from benchmarks.harness import Harness

URL = "redis://127.0.0.1:6379/0"
WORKERS = 4


def _worker(task: tuple[str, str, list[str], float]) -> list[float]:
    """Run turns on the given sessions for ``seconds``; return each turn's latency in ms."""
    import redis

    from ctxflow.model import Conversation, Message
    from ctxflow.persistence import Checkpointer
    from ctxflow.sessions._ownership import SessionCoordinator
    from ctxflow.stores import RedisStore

    url, tenant, sessions, seconds = task
    if not sessions:
        return []
    client = redis.Redis.from_url(url)
    node = SessionCoordinator(client, tenant=tenant, store=RedisStore(client, tenant=tenant))
    writers = [(Checkpointer(node.fenced(node.acquire(s)), s), Conversation()) for s in sessions]
    text = "lorem ipsum dolor sit amet " * 16
    latencies: list[float] = []
    step = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for writer, conversation in writers:
            start = time.perf_counter()
            conversation.append(Message.user(f"{step} {text}", id=f"u{step}"))
            conversation.append(Message.assistant(f"{step} {text}", id=f"a{step}"))
            writer.capture(conversation, state={"step": step})
            latencies.append((time.perf_counter() - start) * 1000)
        step += 1
    client.close()
    return latencies


def _reachable() -> bool:
    import redis

    client = redis.Redis.from_url(URL, socket_connect_timeout=0.3, socket_timeout=0.3)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _cleanup(tenant: str) -> None:
    import redis

    client = redis.Redis.from_url(URL)
    keys = list(client.scan_iter(match=f"ctxflow:{tenant}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


def run(h: Harness) -> None:
    """Record turns/s and p50/p99 turn latency for 1, 8 and 64 sessions over 4 processes."""
    if not _reachable():
        h.record("redis_turns_per_s_8_sessions", 0.0, "turns/s", note="Redis not reachable")
        return
    seconds = h.size(3, 0.3)
    context = multiprocessing.get_context("spawn")
    with context.Pool(WORKERS) as pool:
        pool.map(_worker, [(URL, "bench-warm", [], 0.0)] * WORKERS)  # start the workers
        for count in (1, 8, 64):
            tenant = f"bench-{uuid.uuid4().hex[:8]}"
            sessions = [f"ses_{i}" for i in range(count)]
            tasks: list[Any] = [
                (URL, tenant, sessions[w::WORKERS], float(seconds)) for w in range(WORKERS)
            ]
            started = time.perf_counter()
            results = pool.map(_worker, tasks)
            wall = time.perf_counter() - started
            _cleanup(tenant)
            latencies = sorted(x for r in results for x in r)
            quantiles = statistics.quantiles(latencies, n=100)
            h.record(
                f"redis_turns_per_s_{count}_sessions",
                len(latencies) / wall,
                "turns/s",
                note=f"{WORKERS} processes, fenced checkpoint per turn, local Redis",
            )
            h.record(f"redis_turn_p50_ms_{count}_sessions", quantiles[49], "ms")
            h.record(f"redis_turn_p99_ms_{count}_sessions", quantiles[98], "ms")
