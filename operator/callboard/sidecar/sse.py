"""A small incremental reader of Server-Sent Events (the WHATWG ``text/event-stream`` format).

Fed one line at a time (without its line break), it returns each complete event. Only what
the sidecar's stream uses is kept: ``event``, ``data`` (multi-line), ``id`` and ``retry``;
comments (keep-alive pings) are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RawEvent", "SSEDecoder"]


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One dispatched event: ``id`` is None when the event carried no ``id:`` field."""

    event: str
    data: str
    id: str | None


class SSEDecoder:
    """Turns lines into events; :attr:`last_event_id` and :attr:`retry` persist across events."""

    def __init__(self) -> None:
        self.last_event_id: str | None = None
        self.retry: int | None = None
        """The reconnection delay the server asked for, milliseconds."""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> RawEvent | None:
        """Take one line; return the event it completes, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> RawEvent | None:
        event, data, event_id = self._event or "message", self._data, self._id
        self._event, self._data, self._id = "", [], None
        if not data:
            return None
        return RawEvent(event=event, data="\n".join(data), id=event_id)
