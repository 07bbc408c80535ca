"""Authorization hooks of the node API, named and shaped as Vision Agents' ``ServeOptions``.

Four FastAPI dependencies decide, per request, whether the caller may act on a call:

| hook | guards |
| --- | --- |
| ``can_start_session`` | ``POST /calls/{call_id}/sessions`` |
| ``can_close_session`` | ``DELETE /calls/{call_id}/sessions/{session_id}``, ``POST .../close`` |
| ``can_view_session`` | ``GET /calls/{call_id}/sessions[/{session_id}]``, ``GET /sessions`` |
| ``can_view_metrics`` | ``GET /calls/{call_id}/sessions/{session_id}/metrics`` |

As in Vision Agents, each route depends on a placeholder (:func:`can_start_session`, ...) and
the app replaces it with the configured callable through ``app.dependency_overrides``, so a
hook is an ordinary FastAPI dependency: it may take ``call_id`` (filled from the path), read a
header (``x_user: str = Header()``), ``Depends()`` on anything, and be sync or async. Its
return value is ignored; it denies by raising, typically ``HTTPException(403, "why")``, which
the client receives as it is. The defaults allow everything, as there.

``GET /sessions`` has no ``call_id`` in its path: a hook that takes ``call_id`` reads it from
the query, so with such a hook the cluster-wide listing needs ``?call_id=`` (422 without) and
lists only a call the caller may view. ``/nodes`` and the Prometheus ``/metrics`` carry no
session data and sit behind the bearer token only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any

from fastapi import Path, Query

from callboard.registry import MAX_ID_LENGTH
from callboard.server.models import ID_PATTERN
from callboard.server.node import load_callable
from callboard.server.settings import ServerSettings

__all__ = [
    "AuthorizationHooks",
    "allow_all",
    "can_close_session",
    "can_start_session",
    "can_view_listing",
    "can_view_metrics",
    "can_view_session",
]


def allow_all() -> None:
    """The default hook: every caller may do everything (Vision Agents' default too)."""
    return None


# The placeholders routes depend on; the app overrides each with the configured hook. Their
# bodies never run in an app built by create_app, but their parameters make the OpenAPI
# document, so ``call_id`` carries the route's own id rule (else it would hide it).
CallId = Annotated[
    str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, description="Call id")
]
CallFilter = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, description="Only this call"),
]


def can_start_session(call_id: CallId) -> None:
    """Placeholder of the hook that decides who may start a session on ``call_id``."""


def can_close_session(call_id: CallId) -> None:
    """Placeholder of the hook that decides who may close a session of ``call_id``."""


def can_view_session(call_id: CallId) -> None:
    """Placeholder of the hook that decides who may see the sessions of ``call_id``."""


def can_view_metrics(call_id: CallId) -> None:
    """Placeholder of the hook that decides who may read the metrics of ``call_id``'s sessions."""


def can_view_listing(call_id: CallFilter = None) -> None:
    """Placeholder of ``can_view_session`` on ``GET /sessions``, where ``call_id`` is optional.

    A placeholder of its own, so the OpenAPI document keeps the filter optional; the
    configured ``can_view_session`` replaces it (and may then require the filter).
    """


_PLACEHOLDERS: dict[str, Callable[..., Any]] = {
    "can_start_session": can_start_session,
    "can_close_session": can_close_session,
    "can_view_session": can_view_session,
    "can_view_metrics": can_view_metrics,
}


@dataclass(frozen=True, slots=True)
class AuthorizationHooks:
    """The four hooks of one app; each is a FastAPI dependency (see the module docstring)."""

    can_start_session: Callable[..., Any] = allow_all
    can_close_session: Callable[..., Any] = allow_all
    can_view_session: Callable[..., Any] = allow_all
    can_view_metrics: Callable[..., Any] = allow_all

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> AuthorizationHooks:
        """The hooks named by ``module:function`` paths in the settings (``--can-start-session``)."""
        chosen: dict[str, Callable[..., Any]] = {}
        for name in _PLACEHOLDERS:
            spec = getattr(settings, name)
            if spec:
                chosen[name] = load_callable(spec, f"--{name.replace('_', '-')}")
        return cls(**chosen)

    def overrides(self) -> dict[Callable[..., Any], Callable[..., Any]]:
        """``app.dependency_overrides`` entries: each placeholder to its hook."""
        found = {_PLACEHOLDERS[f.name]: getattr(self, f.name) for f in fields(self)}
        found[can_view_listing] = self.can_view_session
        return found
