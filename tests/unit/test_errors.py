"""Every error callboard raises on purpose is under one root, as ``callboard.errors`` draws it."""

from __future__ import annotations

import pytest

from callboard.errors import CallboardError
from callboard.kube.k8s.client import ConflictError, KubeApiError, NotFoundError
from callboard.kube.running.entrypoint import LeadershipLost


@pytest.mark.parametrize("error", [KubeApiError, NotFoundError, ConflictError, LeadershipLost])
def test_kube_api_errors_and_leadership_loss_are_callboard_errors(error: type[Exception]) -> None:
    assert issubclass(error, CallboardError)


def test_leadership_lost_stays_a_runtime_error() -> None:
    """Callers that caught it as RuntimeError before it joined the tree still do."""
    assert issubclass(LeadershipLost, RuntimeError)


def test_a_kube_api_error_keeps_its_status_and_reason() -> None:
    error = NotFoundError(404, "agentsessions 'a1' not found", reason="NotFound")
    assert (error.status, error.reason, error.message) == (404, "NotFound", "agentsessions 'a1' not found")
    assert str(error) == "404 NotFound: agentsessions 'a1' not found"
