"""Optional bearer-token auth: off unless a token is configured.

The token is compared in constant time. It is a shared secret for machine clients (the
operator, a web backend, the CLI): per-user auth belongs in front of the node.
"""

# No ``from __future__ import annotations``: FastAPI must resolve the local ``scheme``.

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import HTTPException, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["bearer_auth"]


def bearer_auth(token: str) -> Callable[..., Awaitable[None]]:
    """A dependency that lets a request through only with ``Authorization: Bearer <token>``."""
    expected = token.encode()
    scheme = HTTPBearer(auto_error=False, description="The node's API token (CALLBOARD_API_TOKEN)")

    async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(scheme)]) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not given or not secrets.compare_digest(given, expected):
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="Missing or invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check
