"""HTTP probes of the control plane's components (readiness, one JSON call)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any


def http_ok(url: str, *, context: ssl.SSLContext | None = None, timeout: float = 2) -> bool:
    """True when ``url`` answers 200; False on any error answer or connection failure.

    An error answer arrives as an ``HTTPError`` that holds the open response: it is closed
    here, not left to the garbage collector (which would report the socket as a
    ``ResourceWarning`` inside whatever test runs then).
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError as err:
        err.close()
        return False
    except (OSError, urllib.error.URLError):
        return False


def api_call(
    server: str, method: str, path: str, body: Any = None, *, context: ssl.SSLContext | None = None
) -> tuple[int, Any]:
    """One JSON call: (status, decoded body), (status, error text), or (0, why it failed)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        server + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        with err:  # holds the open response (see http_ok)
            return err.code, err.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as err:
        return 0, str(err)
