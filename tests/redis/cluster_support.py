"""Private Redis Cluster and primary/replica set-ups for tests and benchmarks.

Importable on its own (it needs only redis-py and the ``redis-server`` and
``redis-cli`` binaries): :class:`LocalCluster` starts a cluster of masters on
free loopback ports, :class:`ReplicaPair` a primary with one replica. Every
server runs in a temporary directory of the caller's and is SIGKILLed by
``stop``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

__all__ = ["LocalCluster", "ReplicaPair", "Server", "binaries_missing", "free_ports"]


def binaries_missing() -> str | None:
    """Why a private cluster cannot be started here (None when it can)."""
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            return f"the {binary} binary is not installed"
    return None


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports nothing listens on right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _until(condition: Callable[[], object], what: str, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > end:
            raise RuntimeError(f"{what}: not the case after {deadline} s")
        time.sleep(0.05)


def _online(replica: object) -> bool:
    return isinstance(replica, dict) and replica.get("state") == "online"


class Server:
    """One ``redis-server`` process on a loopback port, in a directory of its own."""

    def __init__(self, directory: Path, port: int, *extra: str) -> None:
        self.directory = directory
        self.port = port
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **options: object) -> redis.Redis:
        """A plain client of this one server."""
        return redis.Redis(host="127.0.0.1", port=self.port, **options)  # type: ignore[arg-type]

    def start(self) -> Server:
        """Start the server and wait until it answers PING."""
        binary = shutil.which("redis-server")
        assert binary is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = self.client(socket_connect_timeout=0.3, socket_timeout=0.3)
        try:
            _until(probe.ping, f"redis-server on port {self.port} answering", 10.0)
        finally:
            probe.close()
        return self

    def kill(self) -> None:
        """SIGKILL the server and reap it."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        """SIGSTOP the server (it neither answers nor acknowledges replication)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the server."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class LocalCluster:
    """A Redis Cluster of ``masters`` masters (no replicas) on free loopback ports."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        ports = free_ports(2 * masters)
        self.servers = [
            Server(
                directory / f"node{i}",
                ports[2 * i],
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                str(ports[2 * i + 1]),
                "--cluster-node-timeout",
                "5000",
            )
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL of the first node (a seed: the client finds the others)."""
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}"

    @property
    def seed_url(self) -> str:
        """``redis://`` URL of the first node, as redis-py's own cluster client takes it."""
        return self.servers[0].url

    def client(self, **options: object) -> redis.RedisCluster:
        """A cluster client seeded with the first node."""
        return redis.RedisCluster(host="127.0.0.1", port=self.servers[0].port, **options)  # type: ignore[arg-type]

    def start(self) -> LocalCluster:
        """Start every node, join them and spread the slots; wait until the cluster is ok."""
        try:
            for server in self.servers:
                server.start()
            nodes = [f"127.0.0.1:{s.port}" for s in self.servers]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *nodes, "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )
            for server in self.servers:
                probe = server.client(socket_timeout=1)
                try:
                    _until(
                        lambda p=probe: p.cluster("info")["cluster_state"] == "ok",  # type: ignore[misc]
                        f"cluster node {server.port} reporting cluster_state:ok",
                    )
                finally:
                    probe.close()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGKILL every node."""
        for server in self.servers:
            server.kill()


class ReplicaPair:
    """A primary and one replica of it, both plain (non-cluster) servers."""

    def __init__(self, directory: Path) -> None:
        primary, replica = free_ports(2)
        self.primary = Server(directory / "primary", primary, "--repl-diskless-sync-delay", "0")
        self.replica = Server(
            directory / "replica", replica, "--replicaof", "127.0.0.1", str(primary)
        )

    def start(self) -> ReplicaPair:
        """Start both and wait until the primary sees its replica online."""
        try:
            self.primary.start()
            self.replica.start()
            probe = self.primary.client(socket_timeout=1)
            try:
                _until(
                    lambda: _online(probe.info("replication").get("slave0")),
                    "the replica online at the primary",
                )
            finally:
                probe.close()
        except BaseException:
            self.stop()
            raise
        return self

    def promote(self) -> None:
        """Make the replica a primary (``REPLICAOF NO ONE``), as a failover does."""
        client = self.replica.client(socket_timeout=2)
        try:
            client.execute_command("REPLICAOF", "NO", "ONE")
            _until(lambda: client.info("replication")["role"] == "master", "the replica promoted")
        finally:
            client.close()

    def stop(self) -> None:
        """SIGKILL both servers."""
        self.primary.kill()
        self.replica.kill()
