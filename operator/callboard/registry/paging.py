"""Paging through the sessions of the whole cluster at a bounded cost per page.

``GET /sessions`` used to read every record of the cluster for every page. A page now
resumes after a position in one fixed order, node id first, then ``call_id/session_id``
within the node, and reads only what it returns: the node directory and the node index sets
that ``RedisSessionIndex`` keeps (see :mod:`callboard.registry.backends.redis_index`).

What a client paging from the first cursor to a null ``next`` gets (the README says it too):

- every session that lives through the whole paging exactly once;
- a session registered or removed meanwhile at most once (it may be missing);
- sessions of documented-layout (Vision Agents) nodes that write with their own Redis
  client, which no index knows, in a last phase that scans their keys (only while the
  fleet may have them, see :class:`~callboard.registry.FleetMode`): at least once, since a
  Redis SCAN may return a key twice.

A page may hold fewer than ``limit`` sessions (even none) and still have a next cursor. The
cursor is opaque to clients: a position, base64url-encoded JSON, checked when it comes back.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import NamedTuple

from callboard.errors import InvalidValueError
from callboard.registry.ids import MAX_ID_LENGTH, validate_id
from callboard.registry.models import SessionInfo

__all__ = [
    "MAX_CURSOR_LENGTH",
    "MAX_PAGE_SIZE",
    "PagePosition",
    "SessionPage",
    "decode_cursor",
    "encode_cursor",
    "member",
]

#: The largest page the registry reads in one go: the node API's ``max_page_size`` (1,000
#: by default) must not exceed it. One script call stays a short, bounded block of Redis.
MAX_PAGE_SIZE = 10_000
#: The longest cursor accepted: a position holds two ids and a node id (each at most
#: MAX_ID_LENGTH) and a SCAN cursor, well under this once encoded.
MAX_CURSOR_LENGTH = 4 * (3 * MAX_ID_LENGTH + 64) // 3


class SessionPage(NamedTuple):
    """One page of :meth:`~callboard.registry.SessionRegistry.list_sessions_page`."""

    sessions: list[SessionInfo]
    next_cursor: str | None
    """Where the next page starts; None on the last page."""


@dataclass(frozen=True)
class PagePosition:
    """Resume after ``member`` of ``node``; ``member`` "" means after all of ``node``.

    ``scan`` is not None in the last phase (sessions no index knows): the Redis SCAN
    cursor to go on with, ``member`` then the last place that step returned ("" none).
    """

    node: str = ""
    member: str = ""
    scan: int | None = None


def member(session: SessionInfo) -> str:
    """A session's place within its node: ``call_id/session_id`` (its node index member)."""
    return f"{session.call_id}/{session.session_id}"


def encode_cursor(position: PagePosition) -> str:
    raw = json.dumps([position.node, position.member, position.scan], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> PagePosition:
    """The position of a cursor this API gave out; InvalidValueError (422) for anything else."""
    bad = InvalidValueError("cursor is not one this API gave out (take it from the last page's `next`)")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        node, place, scan = json.loads(raw)
        if node:
            validate_id(node, "node_id")
        if place:
            call_id, sep, session_id = place.partition("/")
            if not sep:
                raise ValueError(place)
            validate_id(call_id, "call_id")
            validate_id(session_id, "session_id")
        if scan is not None and (type(scan) is not int or not 0 <= scan < 2**64):
            raise ValueError(scan)
        if not isinstance(node, str) or not isinstance(place, str) or (place and not node and scan is None):
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise bad from exc
    return PagePosition(node, place, scan)
