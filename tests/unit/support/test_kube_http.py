"""The control-plane harness's HTTP probes close every answer, errors included.

An ``urllib.error.HTTPError`` holds the open response; left unclosed, its socket is
collected later inside whatever test runs then and fails it with a ``ResourceWarning``
(seen on a fresh machine, where the API server answers errors while it starts). The
tests keep each HTTPError alive, as such a cycle does, and check the helper closed it.
"""

from __future__ import annotations

import email.message
import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import IO, NoReturn

import pytest

from tests.support import kube as kh


class _Answer500(http.server.BaseHTTPRequestHandler):
    def _fail(self) -> None:
        body = b'{"kind":"Status","code":500}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _fail

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[str]:
    """A local HTTP server that answers 500 to everything."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _KeepErrors(urllib.request.HTTPDefaultErrorHandler):
    """Keeps every HTTPError it raises alive, as a reference cycle does until the collector runs."""

    def __init__(self) -> None:
        self.errors: list[urllib.error.HTTPError] = []

    def http_error_default(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        hdrs: email.message.Message,
    ) -> NoReturn:
        err = urllib.error.HTTPError(req.full_url, code, msg, hdrs, fp)
        self.errors.append(err)
        raise err


@pytest.fixture
def kept() -> Iterator[list[urllib.error.HTTPError]]:
    """The HTTPErrors urlopen raised (plain HTTP, no SSL context: the global opener)."""
    keep = _KeepErrors()
    urllib.request.install_opener(urllib.request.build_opener(keep))
    try:
        yield keep.errors
    finally:
        urllib.request.install_opener(None)  # type: ignore[arg-type]
        for err in keep.errors:
            err.close()


def test_http_probe_closes_an_error_answer(failing_server: str, kept: list[urllib.error.HTTPError]) -> None:
    assert kh.http_ok(failing_server + "/readyz") is False
    assert len(kept) == 1
    assert kept[0].fp.closed, "the 500 answer's socket stays open until the garbage collector finds it"


def test_api_call_closes_an_error_answer(failing_server: str, kept: list[urllib.error.HTTPError]) -> None:
    status, body = kh.api_call(failing_server, "GET", "/api/v1/nodes")
    assert status == 500
    assert "Status" in body
    assert len(kept) == 1
    assert kept[0].fp.closed, "the 500 answer's socket stays open until the garbage collector finds it"
