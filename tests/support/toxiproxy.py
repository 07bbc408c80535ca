"""A real Toxiproxy (Shopify's TCP fault proxy) for the chaos tier, and a typed client.

The server binary is built from the Go module proxy by ``tests/k8s/build-tools.sh
toxiproxy`` (pinned by ``tests/k8s/toxiproxy/go.mod``) into ``$CALLBOARD_K8S_TOOLS_DIR``
(default ``.cache/k8s-tools/bin``), like the Kubernetes test tools. :class:`ToxiproxyServer`
starts it on a free loopback port; :class:`ToxiproxyClient` speaks its HTTP API
(https://github.com/Shopify/toxiproxy#http-api): proxies are created between a listen
address and an upstream, and *toxics* (latency, bandwidth, timeout, reset_peer, ...)
are added to a proxy and removed again to inject and end a fault.

A stall that delivers afterwards is :meth:`ToxiproxyClient.hold`: a latency toxic that only
its removal ends (requests wait, none is lost, no connection closes). A "black hole" has
two forms: a ``timeout`` toxic with ``timeout=0`` keeps connections open and drops every
byte (the client waits for its socket timeout; removing the toxic closes the connections
it held); ``enabled: false`` closes every connection and refuses new ones (a server that
is gone).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import httpx

from tests.support.redis_server import free_port

__all__ = [
    "BUILD_SCRIPT",
    "Proxy",
    "Stream",
    "Toxic",
    "ToxiproxyClient",
    "ToxiproxyError",
    "ToxiproxyServer",
    "ensure_toxiproxy",
    "toxiproxy_binary",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tests" / "k8s" / "build-tools.sh"
BINARY = "toxiproxy-server"
#: Latency of :meth:`ToxiproxyClient.hold`, ms: longer than any test, so only removing the
#: toxic ends the stall.
HOLD_MS = 600_000


class ToxiproxyError(RuntimeError):
    """The Toxiproxy API refused a request (status and body in the message)."""


class Stream(StrEnum):
    """Direction a toxic acts on: bytes towards the upstream, or back to the client."""

    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"


@dataclass(frozen=True, slots=True)
class Toxic:
    """A toxic as the API reports it."""

    name: str
    type: str
    stream: Stream
    toxicity: float
    attributes: dict[str, Any]

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Toxic:
        return cls(
            name=data["name"],
            type=data["type"],
            stream=Stream(data["stream"]),
            toxicity=float(data["toxicity"]),
            attributes=dict(data.get("attributes") or {}),
        )


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy as the API reports it; ``port`` is where clients connect."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: list[Toxic] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Proxy:
        return cls(
            name=data["name"],
            listen=data["listen"],
            upstream=data["upstream"],
            enabled=bool(data["enabled"]),
            toxics=[Toxic.from_api(t) for t in data.get("toxics") or []],
        )


class ToxiproxyClient:
    """Typed calls of the Toxiproxy HTTP API (synchronous: each call is a loopback round trip)."""

    def __init__(self, api_url: str, *, timeout: float = 5.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._http = httpx.Client(base_url=self.api_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        response = self._http.request(method, path, json=json)
        if response.status_code >= 400:
            raise ToxiproxyError(f"{method} {path}: {response.status_code} {response.text.strip()}")
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # -- server -------------------------------------------------------------------------

    def version(self) -> str:
        """The server's version, e.g. ``v2.12.0``."""
        data = self._call("GET", "/version")
        return str(data["version"]) if isinstance(data, dict) else str(data)

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset")

    # -- proxies ------------------------------------------------------------------------

    def create_proxy(self, name: str, *, upstream: str, listen: str = "127.0.0.1:0") -> Proxy:
        """A new proxy from ``listen`` (port 0: Toxiproxy picks a free one) to ``upstream``."""
        data = self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream})
        return Proxy.from_api(data)

    def get_proxy(self, name: str) -> Proxy:
        return Proxy.from_api(self._call("GET", f"/proxies/{name}"))

    def list_proxies(self) -> list[Proxy]:
        data: dict[str, Any] = self._call("GET", "/proxies")
        return [Proxy.from_api(p) for p in data.values()]

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")

    def set_enabled(self, name: str, enabled: bool) -> Proxy:
        """Disabled: every connection is closed and new ones are refused (the server is gone)."""
        return Proxy.from_api(self._call("POST", f"/proxies/{name}", {"enabled": enabled}))

    # -- toxics -------------------------------------------------------------------------

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        name: str | None = None,
        stream: Stream = Stream.DOWNSTREAM,
        toxicity: float = 1.0,
        **attributes: Any,
    ) -> Toxic:
        body = {
            "name": name or f"{type}_{stream.value}",
            "type": type,
            "stream": stream.value,
            "toxicity": toxicity,
            "attributes": attributes,
        }
        return Toxic.from_api(self._call("POST", f"/proxies/{proxy}/toxics", body))

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def list_toxics(self, proxy: str) -> list[Toxic]:
        return [Toxic.from_api(t) for t in self._call("GET", f"/proxies/{proxy}/toxics")]

    def latency(
        self, proxy: str, ms: int, *, jitter_ms: int = 0, stream: Stream = Stream.DOWNSTREAM
    ) -> Toxic:
        """Delay every chunk of data by ``ms`` (± ``jitter_ms``) milliseconds."""
        return self.add_toxic(proxy, "latency", stream=stream, latency=ms, jitter=jitter_ms)

    def bandwidth(self, proxy: str, kb_per_s: int, *, stream: Stream = Stream.DOWNSTREAM) -> Toxic:
        """Limit the rate to ``kb_per_s`` kilobytes per second."""
        return self.add_toxic(proxy, "bandwidth", stream=stream, rate=kb_per_s)

    def timeout(self, proxy: str, ms: int, *, stream: Stream = Stream.DOWNSTREAM) -> Toxic:
        """Drop all data; close the connection after ``ms`` (0: never, a black hole).

        Removing the toxic closes the connections it held too.
        """
        return self.add_toxic(proxy, "timeout", stream=stream, timeout=ms)

    def reset_peer(self, proxy: str, ms: int = 0, *, stream: Stream = Stream.DOWNSTREAM) -> Toxic:
        """Reset the connection (TCP RST) after ``ms`` milliseconds."""
        return self.add_toxic(proxy, "reset_peer", stream=stream, timeout=ms)

    def black_hole(self, proxy: str) -> list[Toxic]:
        """Stall both directions: connections stay open, no byte passes (``timeout`` 0)."""
        return [self.timeout(proxy, 0, stream=s) for s in Stream]

    def hold(self, proxy: str) -> Toxic:
        """Hold every request until the toxic goes, then deliver it (nothing dropped or closed).

        A latency toxic of 10 minutes on the upstream: Redis sees nothing while it is there,
        as if it stalled (a slow fork, a long script), and answers everything at once after.
        """
        return self.latency(proxy, HOLD_MS, stream=Stream.UPSTREAM)

    @contextmanager
    def held(self, proxy: str) -> Iterator[None]:
        """:meth:`hold` for the duration of the ``with`` block."""
        toxic = self.hold(proxy)
        try:
            yield
        finally:
            self.remove_toxic(proxy, toxic.name)

    def heal(self, proxy: str) -> None:
        """Remove every toxic of ``proxy`` and enable it again."""
        for toxic in self.list_toxics(proxy):
            self.remove_toxic(proxy, toxic.name)
        self.set_enabled(proxy, True)

    @contextmanager
    def stalled(self, proxy: str) -> Iterator[None]:
        """A black hole for the duration of the ``with`` block."""
        self.black_hole(proxy)
        try:
            yield
        finally:
            self.heal(proxy)


# ------------------------------------------------------------------------------- server


def _tools_dir() -> Path:
    override = os.environ.get("CALLBOARD_K8S_TOOLS_DIR")
    return Path(override).resolve() if override else REPO_ROOT / ".cache" / "k8s-tools" / "bin"


def toxiproxy_binary() -> Path:
    """Where ``toxiproxy-server`` is (built or not)."""
    return _tools_dir() / BINARY


def ensure_toxiproxy() -> Path:
    """Build ``toxiproxy-server`` if missing (idempotent; a no-op run checks its version)."""
    binary = toxiproxy_binary()
    if os.access(binary, os.X_OK):
        return binary
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "toxiproxy"],
        capture_output=True,
        text=True,
        errors="replace",
        stdin=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        check=False,
    )
    if result.returncode != 0 or not os.access(binary, os.X_OK):
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise RuntimeError(
            f"could not build {binary} (exit {result.returncode}):\n{tail}\n"
            "Build it with `tests/k8s/build-tools.sh toxiproxy` (needs Go >= 1.26 and the Go module proxy)."
        )
    return binary


class ToxiproxyServer:
    """One ``toxiproxy-server`` on a free loopback port; :attr:`client` talks to it."""

    def __init__(self, binary: Path | None = None, *, port: int | None = None) -> None:
        self.binary = binary or toxiproxy_binary()
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="callboard-toxiproxy-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = ToxiproxyClient(self.api_url)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.client = ToxiproxyClient(self.api_url)
        log = (self.dir / "toxiproxy.log").open("ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "-host", "127.0.0.1", "-port", str(self.port)],
            cwd=self.dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"toxiproxy-server exited: {self.log_tail()}")
            try:
                self.client.version()
                return
            except httpx.HTTPError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"toxiproxy-server did not answer on port {self.port} within {timeout}s")

    def log_tail(self, chars: int = 2000) -> str:
        path = self.dir / "toxiproxy.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
