"""How a node's shutdown fits in the pod's grace period: every step a budget, all from one setting.

Kubernetes kills a pod ``terminationGracePeriodSeconds`` after SIGTERM, whatever it is doing.
A node that is killed mid-shutdown never deregisters: its records linger until the TTL and
its sessions' ends are never written. So the steps of a shutdown each get a bounded share of
the grace period, and the shares are checked to fit when the node starts (not found out when
a pod is killed):

1. **drain**: live sessions get this long to end by themselves (default: what the others leave);
2. **close**: the sessions left are closed, agents and registry removals concurrently, under
   one deadline (against a black-holed Redis each removal would otherwise take ~15 s);
3. **stop**: background tasks and deregistration of the node record;
4. **margin**: signal delivery, process exit, what the runtime needs after the last step.
"""

from __future__ import annotations

from dataclasses import dataclass

from callboard.errors import ConfigurationError

__all__ = ["ShutdownBudget"]


@dataclass(frozen=True, slots=True)
class ShutdownBudget:
    """The budgets of a shutdown, derived from the pod's grace period (seconds)."""

    grace_period: float = 30.0
    """The pod's ``terminationGracePeriodSeconds``: Kubernetes' default, 30 s."""
    close: float = 5.0
    """Closing the sessions left after the drain: agent close and registry removal, all at once.
    A healthy Redis removes thousands of sessions in well under a second; an agent that needs
    longer than this to leave its call is abandoned (logged) and its record expires by TTL."""
    stop: float = 3.0
    """Stopping background tasks and removing the node record (each bounded by 2 s)."""
    margin: float = 2.0
    """Left for the process to exit after the last step."""

    def __post_init__(self) -> None:
        for name in ("grace_period", "close", "stop", "margin"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"shutdown budget {name} must be >= 0")
        if self.fixed > self.grace_period:
            raise ConfigurationError(
                f"a grace period of {self.grace_period:g}s leaves no time to drain: closing "
                f"({self.close:g}s), stopping ({self.stop:g}s) and the margin ({self.margin:g}s) "
                f"need {self.fixed:g}s. Raise terminationGracePeriodSeconds."
            )

    @property
    def fixed(self) -> float:
        """Seconds every shutdown needs besides the drain."""
        return self.close + self.stop + self.margin

    @property
    def drain(self) -> float:
        """The longest drain that fits: the grace period minus the other steps (20 s of 30)."""
        return self.grace_period - self.fixed

    def check_drain(self, drain_timeout: float) -> None:
        """Raise :class:`~callboard.errors.ConfigurationError` when ``drain_timeout`` does not fit."""
        if drain_timeout > self.drain + 1e-9:
            raise ConfigurationError(
                f"drain timeout {drain_timeout:g}s does not fit the grace period of "
                f"{self.grace_period:g}s: closing the sessions left, stopping and exiting take "
                f"{self.fixed:g}s more, so the drain may take at most {self.drain:g}s. Lower the "
                "drain timeout or raise terminationGracePeriodSeconds (and the grace period setting)."
            )
