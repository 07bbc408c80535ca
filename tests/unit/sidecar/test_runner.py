"""``callboard.sidecar.runner``: opening the listening socket."""

from __future__ import annotations

import gc
import socket
import warnings

import pytest

from callboard.errors import ConfigurationError
from callboard.sidecar.runner import bind
from callboard.sidecar.settings import SidecarSettings


def test_a_taken_port_is_a_configuration_error_and_leaks_no_socket() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = SidecarSettings.from_env({"CALLBOARD_LISTEN": f"127.0.0.1:{taken.getsockname()[1]}"})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with pytest.raises(ConfigurationError, match="cannot listen there"):
                bind(settings)
            gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
