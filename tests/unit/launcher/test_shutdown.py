"""launcher/shutdown.py: every shutdown step's budget comes out of the one grace period."""

from __future__ import annotations

import pytest

from callboard.errors import ConfigurationError
from callboard.launcher.shutdown import ShutdownBudget


def test_the_drain_gets_what_closing_stopping_and_the_margin_leave() -> None:
    budget = ShutdownBudget()
    assert (budget.grace_period, budget.fixed, budget.drain) == (30.0, 10.0, 20.0)
    assert ShutdownBudget(grace_period=60.0, close=10.0, stop=4.0, margin=1.0).drain == 45.0


def test_a_grace_period_that_the_fixed_steps_fill_exactly_leaves_a_zero_drain() -> None:
    assert ShutdownBudget(grace_period=10.0).drain == 0.0


def test_a_grace_period_shorter_than_the_fixed_steps_is_refused_naming_each_step() -> None:
    with pytest.raises(ConfigurationError, match="leaves no time to drain") as err:
        ShutdownBudget(grace_period=9.0)
    assert "closing (5s), stopping (3s) and the margin (2s) need 10s" in str(err.value)


@pytest.mark.parametrize("field", ["grace_period", "close", "stop", "margin"])
def test_a_negative_budget_is_refused(field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{field} must be >= 0"):
        ShutdownBudget(**{field: -1.0})


def test_a_drain_timeout_up_to_the_drain_budget_fits() -> None:
    budget = ShutdownBudget()
    budget.check_drain(0.0)
    budget.check_drain(20.0)
    # Float arithmetic of the settings (e.g. 30 - 5 - 3 - 2 computed otherwise) is not a refusal.
    budget.check_drain(20.0 + 1e-12)


def test_a_drain_timeout_past_the_budget_is_refused_with_the_most_that_fits() -> None:
    with pytest.raises(ConfigurationError, match="does not fit the grace period of 30s") as err:
        ShutdownBudget().check_drain(20.5)
    assert "the drain may take at most 20s" in str(err.value)
