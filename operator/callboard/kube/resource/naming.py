"""Names the operator derives: session ids of placed sessions, names of adopted objects.

A session the operator places gets the id ``ags.{namespace}.{uid}.{attempt}``:

- the object's uid makes it unique in time and space and ties it to one object, so a
  session whose object is gone (or whose attempt was superseded) is recognised and closed
  instead of adopted;
- the namespace tells which operator owns it when several watch different namespaces;
- the attempt number makes every retry a distinct session: a node that confirms late
  cannot collide with the session a second node runs.

Every part is made of characters :func:`callboard.registry.validate_id` accepts.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

__all__ = ["PlacedSessionId", "adopted_name", "parse_session_id", "session_id_for"]

_PREFIX = "ags"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")
#: Characters of the call id kept in an adopted object's name: readable in ``kubectl get``,
#: short enough that the whole name stays a DNS label (63).
_NAME_CALL_CHARS = 40
_NAME_HASH_CHARS = 10


class PlacedSessionId(NamedTuple):
    namespace: str
    uid: str
    attempt: int


def session_id_for(namespace: str, uid: str, attempt: int) -> str:
    """The session id of ``attempt`` (1-based) to place the object ``uid`` of ``namespace``."""
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    return f"{_PREFIX}.{namespace}.{uid}.{attempt}"


def parse_session_id(session_id: str) -> PlacedSessionId | None:
    """The parts of a session id made by :func:`session_id_for`; None for any other id."""
    parts = session_id.split(".")
    if len(parts) != 4 or parts[0] != _PREFIX or not parts[1] or not parts[2]:
        return None
    if not parts[3].isdigit() or parts[3].startswith("0"):
        return None
    return PlacedSessionId(parts[1], parts[2], int(parts[3]))


def adopted_name(call_id: str, session_id: str) -> str:
    """A stable object name for an adopted session (a valid DNS label, at most 63 chars).

    Stable, so that two attempts to adopt one session (a restart in between) meet as a
    409 Conflict instead of creating two objects.
    """
    slug = _NOT_DNS.sub("-", call_id.lower()).strip("-")[:_NAME_CALL_CHARS].strip("-") or "session"
    digest = hashlib.sha256(f"{call_id}/{session_id}".encode()).hexdigest()[:_NAME_HASH_CHARS]
    return f"{slug}-{digest}"
