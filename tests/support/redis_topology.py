"""Replicated and clustered Redis on loopback, built from :class:`RedisServer` processes.

- :class:`SentinelTopology`: a master, one replica and three sentinels (quorum 2,
  ``down-after-milliseconds`` 1000, a short ``failover-timeout``), so a ``kill -9`` of the
  master is followed by a promotion within a few seconds. Sentinels run as
  ``redis-server <conf> --sentinel`` (the ``redis-sentinel`` package only adds a symlink).
- :class:`ClusterTopology`: three masters with ``--cluster-enabled yes`` joined by
  ``redis-cli --cluster create ... --cluster-yes`` (no replicas): 16384 slots split in three.
- :func:`create_acl_user`: an ACL user restricted to a key and a channel pattern.

Valkey: Debian bookworm (this machine) has no ``valkey-server`` package (``apt-cache
policy valkey-server`` knows none); it arrives with trixie. Every helper here takes the
server binary from ``$CALLBOARD_REDIS_SERVER`` like :class:`RedisServer`, so pointing that
at a ``valkey-server`` runs the same topologies on Valkey.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Self

import redis

from tests.support.redis_server import RedisServer, free_port
from tests.support.waiting import wait_for

__all__ = [
    "MASTER_NAME",
    "ClusterTopology",
    "SentinelTopology",
    "create_acl_user",
]

#: The master name the sentinels monitor (the path of a ``redis+sentinel://`` URL).
MASTER_NAME = "callboard"
#: Sentinel timings: a dead master is noticed after 1 s; a failover that stalls is retried
#: after 3 s (the default is 3 min). Quorum 2 of 3, as any production setup.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
QUORUM = 2


def _wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.05) -> None:
    """Poll ``check`` until it is true; ``TimeoutError`` naming ``what`` otherwise.

    It runs outside a test too (fixture set-up), so it raises rather than fails
    a test, and a server that refuses connections while it starts counts as "not yet".
    """
    if not wait_for(
        check, timeout=timeout, interval=interval, fail=False, ignore=(redis.RedisError, OSError)
    ):
        raise TimeoutError(f"{what} not reached within {timeout:g}s")


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


def _ping(port: int) -> bool:
    with _client(port) as client:
        return bool(client.ping())


class _Sentinel:
    """One sentinel process: a config file it may rewrite, a port, a log."""

    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="callboard-sentinel-"))
        self.conf = self.dir / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, binary: str) -> None:
        log = (self.dir / "sentinel.log").open("ab")
        self.proc = subprocess.Popen(
            [binary, str(self.conf), "--sentinel"],
            cwd=self.dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelTopology:
    """Master + replica + three sentinels; :meth:`kill_master` and :meth:`wait_for_promotion`."""

    def __init__(self) -> None:
        self.master = RedisServer()
        self.replica = RedisServer()
        self.sentinels: list[_Sentinel] = []

    @property
    def sentinel_ports(self) -> list[int]:
        return [s.port for s in self.sentinels]

    def url(self, db: int = 0, *, scheme: str = "redis+sentinel") -> str:
        """The ``redis+sentinel://h:p,h:p,h:p/<master>/<db>`` URL of issue 12."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"{scheme}://{hosts}/{MASTER_NAME}/{db}"

    def start(self, timeout: float = 30.0) -> None:
        self.master.start()
        self.replica.extra_args = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica.start()
        _wait_until("replica in sync", lambda: self._link_up(self.replica.port), timeout)
        self.sentinels = [_Sentinel(self.master.port) for _ in range(3)]
        for sentinel in self.sentinels:
            sentinel.start(self.master.binary)
        for sentinel in self.sentinels:
            _wait_until(f"sentinel {sentinel.port} answers", lambda p=sentinel.port: _ping(p), timeout)
        # A failover needs every sentinel to know the replica and the other sentinels
        # (found through hello messages on the master, every 2 s).
        _wait_until("sentinels know each other and the replica", self._sentinels_ready, timeout)

    def _link_up(self, port: int) -> bool:
        with _client(port) as client:
            return client.info("replication").get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            with _client(sentinel.port) as client:
                if len(client.sentinel_sentinels(MASTER_NAME)) < len(self.sentinels) - 1:
                    return False
                if not client.sentinel_slaves(MASTER_NAME):
                    return False
        return True

    def master_addr(self) -> tuple[str, int]:
        """The master as the first sentinel that answers sees it."""
        for sentinel in self.sentinels:
            try:
                with _client(sentinel.port) as client:
                    host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                    return host.decode() if isinstance(host, bytes) else str(host), int(port)
            except (redis.RedisError, OSError):
                continue
        raise RuntimeError("no sentinel answers")

    def kill_master(self) -> RedisServer:
        """``kill -9`` the current master; returns the dead server (restartable as a replica)."""
        _, port = self.master_addr()
        dead = self.master if self.master.port == port else self.replica
        dead.kill()
        return dead

    def wait_for_promotion(self, old_port: int, timeout: float = 30.0) -> tuple[str, int]:
        """Wait until every sentinel names a master other than ``old_port`` and it accepts writes."""

        def promoted() -> bool:
            for sentinel in self.sentinels:
                with _client(sentinel.port) as client:
                    _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                    if int(port) == old_port:
                        return False
            _, port = self.master_addr()
            with _client(port) as client:
                return client.info("replication").get("role") == "master"

        _wait_until(f"promotion of a master other than :{old_port}", promoted, timeout)
        addr = self.master_addr()
        if addr[1] == self.replica.port:
            self.master, self.replica = self.replica, self.master
        return addr

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        self.sentinels = []
        for server in (self.master, self.replica):
            server.kill()
            shutil.rmtree(server.dir, ignore_errors=True)

    def processes(self) -> list[subprocess.Popen[bytes]]:
        """Every process of the topology that was started (for leak checks)."""
        procs = [s.proc for s in self.sentinels] + [self.master.proc, self.replica.proc]
        return [p for p in procs if p is not None]

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: A cluster node also listens on its port + 10000 (the cluster bus), so its port must be
#: at most 65535 - 10000 (redis-server refuses to start otherwise).
CLUSTER_BUS_OFFSET = 10_000


def _cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) exists and is free too."""
    for _ in range(100):
        port = free_port()
        if port + CLUSTER_BUS_OFFSET > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair (port, port + 10000) for a cluster node")


class ClusterTopology:
    """Three cluster-enabled masters on loopback, slots split by ``redis-cli --cluster create``."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [RedisServer(port=_cluster_port()) for _ in range(size)]
        for node in self.nodes:
            node.extra_args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{node.port}.conf",  # in the server's own folder (its cwd)
                "--cluster-node-timeout",
                "2000",
            ]

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        """A plain URL of one node: what a managed "cluster mode" endpoint looks like."""
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (it comes with redis-server / redis-tools)")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )

        def all_ok() -> bool:
            for port in self.ports:
                with _client(port) as client:
                    if client.execute_command("CLUSTER", "INFO").find(b"cluster_state:ok") < 0:
                        return False
            return True

        _wait_until("cluster_state:ok on every node", all_ok, timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
            shutil.rmtree(node.dir, ignore_errors=True)

    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [n.proc for n in self.nodes if n.proc is not None]

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_acl_user(
    server: RedisServer,
    name: str,
    password: str,
    *,
    key_pattern: str = "vision_agents:*",
    channel_pattern: str | None = "vision_agents:*",
    commands: str = "+@all -@dangerous",
) -> str:
    """Create (or reset) ACL user ``name`` on ``server``; returns its ``redis://`` URL.

    ``channel_pattern`` None leaves the user without channel rights, as Redis 7 does for
    a new user (``resetchannels``): publishing and subscribing then fail with NOPERM.
    """
    rules = ["reset", "on", f">{password}", f"~{key_pattern}", *commands.split()]
    if channel_pattern is not None:
        rules.append(f"&{channel_pattern}")
    with _client(server.port) as client:
        client.execute_command("ACL", "SETUSER", name, *rules)
    return f"redis://{name}:{password}@127.0.0.1:{server.port}/0"
