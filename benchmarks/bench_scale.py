"""Stores side by side: turns per second and turn latency with a checkpoint per turn.

One :class:`~ctxflow.persistence.Checkpointer` drives a growing conversation
(a user and an assistant message from the corpus per turn, then a checkpoint)
on each backend in turn, in one run: SQLite (a file in a temporary folder),
Redis (the local server, 127.0.0.1:6379), Redis Cluster (three masters on
loopback ports, started for the run with the test suite's helper,
``tests/redis/cluster_support.py``) and PostgreSQL (the local server,
127.0.0.1:5432, a schema of its own dropped afterwards; and again with
``synchronous_commit=off``, which acknowledges a commit before its WAL is on
disk: a server crash may lose the last fraction of a second of checkpoints,
never consistency). Each backend runs the
same turns ``ROUNDS`` times, each round a new session; recorded per backend:
turns per second over all rounds, and the median and 99th percentile of one
turn's time. A backend whose server does not answer is recorded as 0 with a
note.

:data:`BACKENDS` is the list to extend: a name and a function that opens a
fresh store (and returns what cleans it up), or says why it cannot.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from benchmarks.harness import Harness
from ctxflow.model import Conversation, Message
from ctxflow.persistence import BaseStore, Checkpointer
from ctxflow.stores import open_store

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
ROUNDS = 3


class Opened(NamedTuple):
    """A fresh store and what removes everything it wrote."""

    store: BaseStore
    cleanup: Callable[[], None]


class Backend(NamedTuple):
    """A store to measure: its name, and how to open a fresh one (a str: why it cannot)."""

    name: str
    open: Callable[[], Opened | str]


def _sqlite() -> Opened | str:
    folder = tempfile.TemporaryDirectory(prefix="ctxflow-bench-scale-")
    return Opened(open_store(Path(folder.name) / "scale.sqlite"), folder.cleanup)


def _redis() -> Opened | str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        return f"Redis not reachable at {REDIS_URL} ({exc})"
    tenant = f"bench-{uuid.uuid4().hex[:8]}"

    def cleanup() -> None:
        keys = list(client.scan_iter(match=f"ctxflow:{tenant}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()

    return Opened(open_store(f"{REDIS_URL}?tenant={tenant}"), cleanup)


def _postgres(options: str = "") -> Opened | str:
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        return "PostgreSQL needs the 'postgres' extra (psycopg)"

    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {POSTGRES_URL} ({str(exc).strip()})"
    schema = f"bench_{uuid.uuid4().hex[:8]}"

    def cleanup() -> None:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    return Opened(open_store(f"{POSTGRES_URL}?schema={schema}{options}"), cleanup)


def _redis_cluster() -> Opened | str:
    """A private three-master Redis Cluster on loopback ports, started for the run (the
    test suite's start-up helper, read from the checkout)."""
    import importlib.util
    import shutil

    support = Path(__file__).resolve().parents[1] / "tests" / "redis" / "cluster_support.py"
    spec = importlib.util.spec_from_file_location("ctxflow_cluster_support", support)
    if spec is None or spec.loader is None or not support.is_file():
        return f"a private Redis Cluster needs the checkout's {support.name}"
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return "a private Redis Cluster needs redis-server and redis-cli"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = tempfile.TemporaryDirectory(prefix="ctxflow-bench-cluster-")
    cluster = module.LocalCluster(Path(folder.name)).start()

    def cleanup() -> None:
        cluster.stop()
        folder.cleanup()

    try:
        return Opened(open_store(f"{cluster.url}?tenant=bench"), cleanup)
    except BaseException:
        cleanup()
        raise


#: The backends measured, in order (a new one is one more line).
BACKENDS: list[Backend] = [
    Backend("sqlite", _sqlite),
    Backend("redis", _redis),
    Backend("redis_cluster", _redis_cluster),
    Backend("postgres", _postgres),
    # The same, each commit acknowledged before its WAL reaches the disk (libpq options).
    Backend("postgres_async_commit", lambda: _postgres("&options=-c%20synchronous_commit%3Doff")),
]


def _session(store: BaseStore, messages: list[Message]) -> list[float]:
    """One session: two messages and a checkpoint per turn; each turn's time in ms."""
    writer = Checkpointer(store)
    conversation = Conversation()
    times: list[float] = []
    for turn in range(len(messages) // 2):
        start = time.perf_counter()
        conversation.append(messages[2 * turn])
        conversation.append(messages[2 * turn + 1])
        writer.capture(conversation, state={"turn": turn}, phase="execution", trigger="step")
        times.append((time.perf_counter() - start) * 1000)
    return times


def run(h: Harness) -> None:
    """Record turns/s and p50/p99 turn time on every backend of :data:`BACKENDS`."""
    turns = h.size(400, 10)
    rounds = h.size(ROUNDS, 1)
    messages = h.workload(2 * turns)
    for backend in BACKENDS:
        opened = backend.open()
        if isinstance(opened, str):
            h.record(f"scale.{backend.name}.turns_per_s", 0.0, "turns/s", note=opened)
            continue
        try:
            _session(opened.store, messages[:4])  # warm-up: connections, prepared paths
            times: list[float] = []
            started = time.perf_counter()
            for _ in range(rounds):
                times.extend(_session(opened.store, messages))
            wall = time.perf_counter() - started
        finally:
            opened.store.close()
            opened.cleanup()
        quantiles = statistics.quantiles(times, n=100)
        note = f"{turns} turns x {rounds} sessions, one writer, a checkpoint per turn"
        h.record(f"scale.{backend.name}.turns_per_s", len(times) / wall, "turns/s", note=note)
        h.record(f"scale.{backend.name}.turn_p50_ms", statistics.median(times), "ms")
        h.record(f"scale.{backend.name}.turn_p99_ms", quantiles[98], "ms")
