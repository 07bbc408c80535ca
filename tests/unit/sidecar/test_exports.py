"""The sidecar package's public names: ``__all__`` is exact, and the client stays light."""

from __future__ import annotations

import subprocess
import sys
import types

import callboard.sidecar as sidecar


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(sidecar).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(sidecar.__all__) == public
    assert len(sidecar.__all__) == len(set(sidecar.__all__))


def test_the_client_does_not_pull_in_the_server_stack() -> None:
    """An agent app importing the client must not pay for FastAPI, uvicorn or Prometheus."""
    heavy = ("fastapi", "uvicorn", "prometheus_client", "sse_starlette")
    code = f"import sys, callboard.sidecar; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
