"""Logging set-up for the command line (the library itself never configures logging).

Context (``node_id``, ``call_id``, ``session_id``) passed through ``extra=`` shows as a
``[key=value ...]`` prefix in text and as fields in JSON.
"""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["CONTEXT_FIELDS", "configure_logging"]

CONTEXT_FIELDS = ("node_id", "call_id", "session_id", "pod", "resource")


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(
            f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name)
        )
        base = super().format(record)
        return f"{base} [{context}]" if context else base


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            if hasattr(record, name):
                data[name] = getattr(record, name)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(*, level: int = logging.INFO, fmt: str = "text") -> None:
    """Send logs to stderr as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
