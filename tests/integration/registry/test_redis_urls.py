"""Connection URLs against real servers: ACL user/password, unix sockets, TLS."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from callboard import StoreError, StoreUnavailableError
from callboard.registry import SessionRegistry, store_from_url
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away CA and a server certificate for 127.0.0.1, made with openssl."""
    d = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", "san.ext", "-out", "server.crt")  # fmt: skip
    return d


@pytest.fixture(scope="module")
def special_server(tls_dir: Path) -> Iterator[RedisServer]:
    tls_port = free_port()
    server = RedisServer(
        extra_args=[
            "--user", "alice", "on", ">s3cret", "~*", "&*", "+@all",
            "--unixsocket", "", "--tls-port", str(tls_port),
            "--tls-cert-file", str(tls_dir / "server.crt"), "--tls-key-file", str(tls_dir / "server.key"),
            "--tls-ca-cert-file", str(tls_dir / "ca.crt"), "--tls-auth-clients", "no",
        ]
    )  # fmt: skip
    sock = server.dir / "redis.sock"
    server.extra_args[server.extra_args.index("--unixsocket") + 1] = str(sock)
    server.tls_port = tls_port  # type: ignore[attr-defined]
    server.start()
    yield server
    server.stop()


async def _roundtrip(url: str) -> None:
    async with SessionRegistry(store_from_url(url), node_id="n") as registry:
        await registry.register("call", "sess")
        assert [s.session_id for s in await registry.get_for_call("call")] == ["sess"]


async def test_acl_user_and_password(special_server: RedisServer) -> None:
    await _roundtrip(f"redis://alice:s3cret@127.0.0.1:{special_server.port}/0")


async def test_wrong_password_is_a_clear_error(special_server: RedisServer) -> None:
    store = store_from_url(f"redis://alice:wrong@127.0.0.1:{special_server.port}/0")
    with pytest.raises(StoreError, match="refused the credentials") as info:
        await store.start()
    assert not isinstance(info.value, StoreUnavailableError)
    await store.close()


async def test_unix_socket(special_server: RedisServer) -> None:
    await _roundtrip(f"unix://{special_server.dir / 'redis.sock'}?db=0")


async def test_tls(special_server: RedisServer, tls_dir: Path) -> None:
    port = special_server.tls_port  # type: ignore[attr-defined]
    await _roundtrip(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tls_dir / 'ca.crt'}")
