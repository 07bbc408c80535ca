"""A real ``redis-server`` on a free loopback port, for the integration tier.

Built on the demo's :class:`~callboard.demo.redis.LocalRedis` (same start and readiness
check), plus what fault injection needs: stop keeping the port, kill, restart empty, flush.
When the binary is missing the fixture fails with how to get it (``make test`` installs
it by itself; see ``tests/support/ensure-redis.sh``).
"""

from __future__ import annotations

import os
import socket

from callboard.demo.redis import LocalRedis, free_port

__all__ = ["RedisServer", "free_port"]

INSTALL_HINT = (
    "redis-server is not installed. Run `make test` (it installs it), or "
    "`apt-get install -y redis-server`, or set CALLBOARD_REDIS_SERVER to its path."
)


class RedisServer(LocalRedis):
    """One redis-server process with no persistence, bound to 127.0.0.1."""

    def __init__(self, port: int | None = None, extra_args: list[str] | None = None) -> None:
        try:
            super().__init__(os.environ.get("CALLBOARD_REDIS_SERVER"), port=port, extra_args=extra_args)
        except FileNotFoundError:
            raise RuntimeError(INSTALL_HINT) from None

    def stop(self) -> None:
        """Stop the server (data is lost: no persistence); the port can be started again."""
        self.terminate()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port, empty."""
        self.stop()
        self.start()

    def flushall(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            sock.recv(16)
