"""Request checks every callboard HTTP entry point shares: a bounded body of finite JSON.

The node API (:mod:`callboard.server`) and the sidecar API (:mod:`callboard.sidecar`) put this
middleware in front of their routes, so a request is refused with 422 and a message, before
any route or model sees it, when:

- its body is larger than the limit (``Content-Length`` says so, or the bytes that arrive
  do): a huge body would otherwise be read into memory whole and, for metrics, written to
  the registry and heartbeated forever;
- its JSON body holds ``NaN``, ``Infinity`` or a number too large for a float (``1e999``):
  Python's ``json`` reads them, but they are not JSON, and a record that carried one would be
  unreadable to every other client of the registry (Vision Agents nodes, JavaScript apps).

Strings inside the body are bounded by the body limit; ids and reasons have their own lengths
in the models. 422 (not 413) is what every other bad input of these APIs answers, so a client
has one status to handle for "fix the request".
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_MAX_BODY_BYTES", "RequestLimits", "finite_json"]

#: Bytes a request body may have by default: a start request, a registration with its metrics
#: or a rejection is well under 4 KiB; 64 KiB leaves room for rich metrics and nothing more.
DEFAULT_MAX_BODY_BYTES = 64 * 1024


class NotFiniteError(ValueError):
    """A JSON number that is NaN or infinite (or overflows to infinity)."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotFiniteError(f"number {text} is too large to be a finite float")
    return value


def _no_constant(name: str) -> float:
    raise NotFiniteError(f"{name} is not valid JSON: numbers must be finite")


def finite_json(body: bytes) -> Any:
    """``json.loads`` that refuses NaN, Infinity and numbers that overflow a float."""
    return json.loads(body, parse_float=_finite_float, parse_constant=_no_constant)


class RequestLimits:
    """ASGI middleware: refuse oversized bodies and non-finite JSON numbers with 422.

    ``error_body`` shapes the JSON answer from the message, so each API keeps its own error
    format (the node API's ``{"detail": ...}``, the sidecar's ``{"error", "detail"}``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        error_body: Callable[[str], dict[str, Any]],
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.error_body = error_body

    async def _refuse(self, send: Send, detail: str) -> None:
        payload = json.dumps(self.error_body(detail)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 422,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        too_large = f"request body larger than {self.max_body_bytes} bytes"
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_body_bytes:
                    await self._refuse(send, too_large)
                    return
            except ValueError:
                await self._refuse(send, "Content-Length is not a number")
                return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS") and declared is None:
            await self.app(scope, receive, send)  # no body; the SSE stream must not be buffered
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._refuse(send, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        # FastAPI reads a body without a Content-Type as JSON too.
        if body and (not content_type or content_type.endswith(b"json")):
            try:
                finite_json(body)
            except NotFiniteError as exc:
                await self._refuse(send, str(exc))
                return
            except ValueError:
                pass  # not JSON at all: the route's own parser answers with its message
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
