"""Optional bearer-token auth of the node API and the sidecar API: off unless a token is set.

The token is compared in constant time. It is a shared secret for machine clients (the
operator, a web backend, the CLI, the agent app beside a sidecar): per-user decisions belong
in the node API's authorization hooks (:mod:`callboard.server.hooks`) or in front of the node.
"""

# No ``from __future__ import annotations``: FastAPI must resolve the local ``scheme``.

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import HTTPException, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["bearer_auth"]


def bearer_auth(token: str, *, what: str = "The node's API token") -> Callable[..., Awaitable[None]]:
    """A dependency that lets a request through only with ``Authorization: Bearer <token>``."""
    expected = token.encode()
    scheme = HTTPBearer(
        auto_error=False, description=f"{what} (CALLBOARD_API_TOKEN or CALLBOARD_API_TOKEN_FILE)"
    )

    async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(scheme)]) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not given or not secrets.compare_digest(given, expected):
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="Missing or invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check
