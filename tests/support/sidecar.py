"""Real processes for sidecar tests: ``callboard sidecar`` and agent apps that talk to it.

- :class:`SidecarProcess` runs the real command (the console script of this virtualenv) on a
  free loopback port, with short intervals so the tier takes seconds;
- :class:`AppProcess` runs an agent app (the Python one in :mod:`agent_app`, or the Node.js
  one in ``tests/apps``) that prints one JSON object per line and takes commands on stdin.

Used by the integration tier and by the e2e operator harness. Waits poll with a deadline
(:func:`tests.support.waiting.wait_until`); nothing sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.paths import REPO_ROOT
from tests.support.processes import ChildProcess, free_port
from tests.support.waiting import wait_until

ROOT = REPO_ROOT
NODE_APP = ROOT / "tests" / "apps" / "node-app.mjs"
NODE_HINT = (
    "node (Node.js >= 18, for its built-in fetch) is needed to run the non-Python test app "
    f"{NODE_APP.relative_to(ROOT)}: install it with `apt-get install -y nodejs` or from "
    "https://nodejs.org, or set CALLBOARD_NODE to its path."
)

#: Short timings: a heartbeat every 0.3 s within a 2 s TTL, so expiry tests take seconds.
FAST = {
    "CALLBOARD_TTL": "2",
    "CALLBOARD_HEARTBEAT_INTERVAL": "0.3",
    "CALLBOARD_EVENT_GRACE": "0",
    "CALLBOARD_DRAIN_TIMEOUT": "15",
    "CALLBOARD_CAPACITY": "4",
}


def callboard_command() -> list[str]:
    script = Path(sys.executable).parent / "callboard"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from callboard.cli import main; main()"]


def node_binary() -> str:
    binary = os.environ.get("CALLBOARD_NODE") or shutil.which("node")
    if not binary:
        pytest.fail(NODE_HINT, pytrace=False)
    return binary


class SidecarProcess:
    """One ``callboard sidecar`` process; the same port and node id survive :meth:`restart`."""

    def __init__(
        self, *, redis_url: str, node_id: str, log_dir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.node_id = node_id
        self.port = free_port()
        # free_port() closes its probe socket, so two calls may name the same port.
        self.probe_port = free_port()
        while self.probe_port == self.port:
            self.probe_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.probe_url = f"http://127.0.0.1:{self.probe_port}"
        self.log_path = log_dir / f"sidecar-{node_id}.log"
        self.env = {
            **os.environ,
            **FAST,
            "CALLBOARD_REDIS_URL": redis_url,
            "CALLBOARD_NODE_ID": node_id,
            "CALLBOARD_LISTEN": f"127.0.0.1:{self.port}",
            "CALLBOARD_PROBE_LISTEN": f"127.0.0.1:{self.probe_port}",
            "CALLBOARD_LOG_LEVEL": "debug",
            **(env or {}),
        }
        self.process = ChildProcess(
            [*callboard_command(), "sidecar"], name=f"sidecar {node_id}", log_path=self.log_path, env=self.env
        )
        self.http = httpx.AsyncClient(base_url=self.url, timeout=5)

    async def start(self, *, ready: bool = True) -> None:
        await self.process.start()
        if ready:
            await self.wait_ready()

    async def wait_ready(self, timeout: float = 20.0) -> None:
        async def ready() -> bool:
            self.process.check_alive()
            try:
                return (await self.http.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(ready, timeout=timeout, what=f"sidecar {self.node_id} to be ready")

    @property
    def running(self) -> bool:
        return self.process.running

    def signal(self, sig: int) -> None:
        self.process.signal(sig)

    async def wait(self, timeout: float) -> int:
        return await self.process.wait(timeout)

    async def kill(self) -> None:
        await self.process.kill()

    async def restart(self) -> None:
        await self.kill()
        await self.start()

    async def get(self, path: str) -> Any:
        response = await self.http.get(path)
        response.raise_for_status()
        return response.json()

    async def session_ids(self) -> list[str]:
        return sorted(s["session_id"] for s in await self.get("/v1/sessions"))

    def log(self) -> str:
        return self.process.log()

    async def aclose(self) -> None:
        await self.kill()  # the drain has tests of its own; teardown needs no grace
        await self.http.aclose()


class AppProcess:
    """An agent app: JSON lines out (``{"kind": ...}``), JSON commands in (``{"op": ...}``)."""

    def __init__(
        self, argv: list[str], *, name: str, log_dir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.argv = argv
        self.name = name
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_dir / f"app-{name}.log"
        self.messages: list[dict[str, Any]] = []
        self.process = ChildProcess(argv, name=f"app {name}", log_path=self.log_path, env=self.env, cwd=ROOT)
        self.proc: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await self.process.start(pipes=True)
        self._reader = asyncio.create_task(self._read(), name=f"read:{self.name}")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                message = {"kind": "unparsed", "line": line.decode(errors="replace")}
            self.messages.append(message)
            self._changed.set()

    async def send(self, **command: Any) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.proc.stdin.drain()

    def find(self, kind: str, **fields: Any) -> dict[str, Any] | None:
        for message in self.messages:
            if message.get("kind") == kind and all(_get(message, k) == v for k, v in fields.items()):
                return message
        return None

    async def expect(self, kind: str, *, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """The first message of ``kind`` whose fields (``data__call_id`` reaches into ``data``) match."""
        deadline = time.monotonic() + timeout
        while (found := self.find(kind, **fields)) is None:
            if (
                self.proc is not None
                and self.proc.returncode is not None
                and self._reader
                and self._reader.done()
            ):
                pytest.fail(
                    f"app {self.name} exited ({self.proc.returncode}) before {kind} {fields}: {self.messages}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"app {self.name}: no {kind} {fields} within {timeout}s; got {self.messages}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
        return found

    async def wait(self, timeout: float) -> int:
        code = await self.process.wait(timeout, after=f"; said {self.messages}")
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        await self.process.kill()
        if self._reader is not None:
            await self._reader

    def log(self) -> str:
        return self.process.log()

    async def aclose(self) -> None:
        await self.kill()
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self.proc.stdin.wait_closed()


def _get(message: Mapping[str, Any], path: str) -> Any:
    value: Any = message
    for part in path.split("__"):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def python_app(sidecar: SidecarProcess, *args: str, log_dir: Path, name: str = "py") -> AppProcess:
    argv = [sys.executable, "-m", "tests.support.agent_app", "--sidecar", sidecar.url, *args]
    return AppProcess(argv, name=name, log_dir=log_dir)


def node_app(sidecar: SidecarProcess, *, call_id: str, session_id: str, log_dir: Path) -> AppProcess:
    env = {"SIDECAR_URL": sidecar.url, "CALL_ID": call_id, "SESSION_ID": session_id}
    return AppProcess([node_binary(), str(NODE_APP)], name="node", log_dir=log_dir, env=env)


async def metric(sidecar: SidecarProcess, name: str) -> float:
    """The value of the sidecar's ``callboard_sidecar_<name>`` metric (0 when not exported yet)."""
    text = (await sidecar.http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(f"callboard_sidecar_{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
