"""The exception tree of callboard.

Every error raised on purpose by callboard derives from one root, so callers can catch at
the level they need::

    CallboardError
    ├── ConfigurationError          bad settings or arguments, unknown store URL scheme
    │                               (also ValueError)
    ├── InvalidIdError              a call/session/node id that is empty, too long or has
    │                               characters outside the allowed set (also ValueError)
    ├── InvalidValueError           a value the registry would store is out of bounds: NaN,
    │                               inf or a huge number, non-JSON or oversized metrics or
    │                               params (also ValueError)
    ├── SessionConflictError        the session is registered by another live node
    ├── NodeIdInUseError            another live process heartbeats under this node id
    ├── StoreError                  the key-value store failed
    │   └── StoreUnavailableError   it cannot be reached (connection refused, timeout)
    ├── MalformedRecordError        a stored record is not JSON of the right shape (also ValueError)
    ├── SessionNotFoundError        no such session (also KeyError)
    ├── StartRequestGoneError       a start request was withdrawn, expired or claimed by
    │                               another node: it must not start
    ├── DeposedLeaderError          a request carried a fencing token below the registry's
    │                               fence: its sender no longer leads (refused, not sent)
    └── CapacityError               a limit refuses a new session
        ├── MaxConcurrentSessionsExceeded
        ├── MaxSessionsPerCallExceeded
        └── NodeDrainingError       the node is draining and takes no new sessions

Subsystems add their own leaves under the same root, next to the code that raises them:
``callboard.launcher.agent.AgentStartError`` (the agent factory or join failed),
``callboard.server.client.NodeApiError`` (a node's HTTP API answered with an error), and in
``callboard.sidecar.errors`` the sidecar client's ``SidecarUnavailableError``,
``SidecarRequestError``, ``UnknownStartRequestError`` and ``StartRequestMismatchError``.
The operator adds two::

    CallboardError
    ├── callboard.kube.k8s.client.KubeApiError     the Kubernetes API answered an error or
    │   │                                          could not be reached
    │   ├── NotFoundError                          404
    │   └── ConflictError                          409: exists, or a resourceVersion race
    └── callboard.kube.running.entrypoint.LeadershipLost
                                                   another replica holds the leader Lease
                                                   (also RuntimeError)

Errors of the underlying client library (redis-py) are translated at the store boundary and
chained with ``raise ... from``, so the original stays available as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "CallboardError",
    "CapacityError",
    "ConfigurationError",
    "DeposedLeaderError",
    "InvalidIdError",
    "InvalidValueError",
    "MalformedRecordError",
    "MaxConcurrentSessionsExceeded",
    "MaxSessionsPerCallExceeded",
    "NodeDrainingError",
    "NodeIdInUseError",
    "SessionConflictError",
    "SessionNotFoundError",
    "StartRequestGoneError",
    "StoreError",
    "StoreUnavailableError",
]


class CallboardError(Exception):
    """Root of every error callboard raises on purpose."""


class ConfigurationError(CallboardError, ValueError):
    """A setting is invalid: fix the configuration, retrying will not help."""


class InvalidIdError(CallboardError, ValueError):
    """An id is not acceptable as part of a store key."""


class InvalidValueError(CallboardError, ValueError):
    """A value given to the registry cannot be stored as it is (its message says which and why).

    Raised before anything is written, so a bad value never reaches the store, where it
    would break every later reader or heartbeat of the record (G12).
    """


class SessionConflictError(CallboardError):
    """The session is registered by another node whose record is live: it is not ours to take.

    A second node (or a second process with the same id) must never overwrite a record it
    does not own; it may register the session once the owner removed it or its record expired.
    """


class NodeIdInUseError(CallboardError):
    """Another live process heartbeats under this node id: two processes must never share one.

    Raised at start when the node record keeps being refreshed by someone else. A process
    that died leaves a record that expires within one TTL; the id is free again after that.
    """


class StoreError(CallboardError):
    """The session store failed to perform an operation."""


class StoreUnavailableError(StoreError):
    """The session store cannot be reached; the operation may succeed later."""


class MalformedRecordError(CallboardError, ValueError):
    """A record read from the store does not decode to the expected shape."""


class SessionNotFoundError(CallboardError, KeyError):
    """The session does not exist (or no longer exists) in the registry."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable.
        return str(self.args[0]) if self.args else "session not found"


class CapacityError(CallboardError):
    """A limit refuses a new session."""


class MaxConcurrentSessionsExceeded(CapacityError):
    """The node already runs its maximum number of concurrent sessions."""


class MaxSessionsPerCallExceeded(CapacityError):
    """The call already has its maximum number of sessions, counted across all nodes."""


class NodeDrainingError(CapacityError):
    """The node is draining: it finishes its sessions and accepts no new ones."""


class StartRequestGoneError(CallboardError):
    """A start request can no longer be accepted: withdrawn, expired or another node's.

    Raised where a node would start its session; the node must not start it (the
    requester has given up on it, or someone else runs it). ``state`` says which:
    ``withdrawn``, ``expired`` or ``taken``.
    """

    def __init__(self, message: str, *, state: str = "withdrawn") -> None:
        super().__init__(message)
        self.state = state


class DeposedLeaderError(CallboardError):
    """A request's fencing token is below the registry's fence: a newer leader took over.

    Raised by :meth:`SessionRegistry.request_close` (the close is neither written nor
    pushed) and when a leader publishes a fence lower than the registry's. The sender must
    stop acting: only the current leader may start or close sessions (G8). ``token`` is the
    sender's, ``fence`` the registry's.
    """

    def __init__(self, message: str, *, token: int, fence: int) -> None:
        super().__init__(message)
        self.token = token
        self.fence = fence
