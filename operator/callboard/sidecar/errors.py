"""Errors of the sidecar's local API, in callboard's one exception tree::

    CallboardError
    ├── UnknownStartRequestError    no pending start request has this id (also LookupError)
    ├── StartRequestMismatchError   a registration names a start request for another
    │                               call or session (also ValueError)
    ├── AppInstanceReplacedError    a request from an app instance a newer one replaced
    ├── SidecarUnavailableError     the client could not reach the sidecar in time
    └── SidecarRequestError         the sidecar refused a request and no class above fits
                                    (e.g. a body that is not valid); has ``status_code``

The API maps the whole tree to status codes in one place (:mod:`callboard.sidecar.api`); the
client maps them back to the same classes, so an app sees the errors an in-process node would.
"""

from __future__ import annotations

from callboard.errors import CallboardError

__all__ = [
    "AppInstanceReplacedError",
    "SidecarRequestError",
    "SidecarUnavailableError",
    "StartRequestMismatchError",
    "UnknownStartRequestError",
]


class UnknownStartRequestError(CallboardError, LookupError):
    """No pending start request has this id: answered already, expired, or never sent here."""


class StartRequestMismatchError(CallboardError, ValueError):
    """A registration answers a start request that names another call or session."""


class AppInstanceReplacedError(CallboardError):
    """A request names an app instance that a newer one replaced (409).

    One app instance per sidecar: the first request of a new instance removes the sessions
    of the one before (reason ``app_restarted``), so a request still arriving from that one
    (a process that lingers) is refused rather than allowed to remove the new one's.
    """


class SidecarUnavailableError(CallboardError):
    """The client could not reach the sidecar within its retry budget."""


class SidecarRequestError(CallboardError):
    """The sidecar refused a request and no more specific error class fits."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code
