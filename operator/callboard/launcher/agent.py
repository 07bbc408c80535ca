"""What the launcher expects of an agent and of the two callbacks that make and run one.

These are structural types (:class:`typing.Protocol`): an agent class never inherits from
them, it only has the members. They follow the documented Vision Agents launcher, so a
Vision Agents ``Agent`` and its ``create_agent``/``join_call`` functions fit unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from callboard.errors import CallboardError

__all__ = ["Agent", "AgentStartError", "AgentT", "CreateAgent", "JoinCall", "SupportsToDict", "agent_metrics"]

logger = logging.getLogger(__name__)


class AgentStartError(CallboardError):
    """``create_agent`` failed or returned something that is not an agent (cause chained)."""


@runtime_checkable
class Agent(Protocol):
    """One agent: it joins one call and is closed when its session ends.

    ``metrics`` is optional and not part of the protocol: when an agent has it (a mapping,
    or an object with ``to_dict()``), the launcher publishes it to the registry each cycle.
    """

    @property
    def id(self) -> str:
        """Unique id; it is the session id unless the start request chose one."""
        ...

    async def close(self) -> None:
        """Leave the call and release resources. Must be idempotent: it may run twice."""
        ...

    def idle_for(self) -> float:
        """Seconds the agent has been alone on its call (0.0 while anyone else is there)."""
        ...

    def on_call_for(self) -> float:
        """Seconds since the agent joined its call (0.0 before it joined)."""
        ...


AgentT = TypeVar("AgentT", bound=Agent)
_AgentT_co = TypeVar("_AgentT_co", bound=Agent, covariant=True)
_AgentT_contra = TypeVar("_AgentT_contra", bound=Agent, contravariant=True)


class CreateAgent(Protocol[_AgentT_co]):
    """``create_agent(**kwargs)``: a new agent, returned directly or by a coroutine.

    Keyword arguments come from the start request's ``params`` (none for an HTTP start).
    """

    def __call__(self, *args: Any, **kwargs: Any) -> _AgentT_co | Awaitable[_AgentT_co]: ...


class JoinCall(Protocol[_AgentT_contra]):
    """``join_call(agent, call_type, call_id)``: the coroutine that *is* the session.

    It returns when the call is over (the session then ends with reason ``finished``); the
    launcher cancels it to close the session early (idle, max duration, close request).
    """

    def __call__(self, agent: _AgentT_contra, call_type: str, call_id: str, /) -> Awaitable[None]: ...


@runtime_checkable
class SupportsToDict(Protocol):
    """A metrics object that can describe itself as a JSON-ready mapping."""

    def to_dict(self) -> Mapping[str, Any]: ...


def agent_metrics(agent: object) -> dict[str, Any] | None:
    """The agent's ``metrics`` as a plain dict, or None when it has none.

    Raises whatever the agent's own ``metrics``/``to_dict()`` raises: the caller decides
    how loudly to report one misbehaving agent.
    """
    metrics = getattr(agent, "metrics", None)
    if metrics is None:
        return None
    if isinstance(metrics, Mapping):
        return dict(metrics)
    if isinstance(metrics, SupportsToDict):
        return dict(metrics.to_dict())
    raise TypeError(f"agent metrics must be a mapping or have to_dict(), not {type(metrics).__name__}")
