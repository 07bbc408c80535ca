"""Validation of the ids that become parts of store keys.

Ids are embedded in keys such as ``sessions/{call_id}/{session_id}`` and in SCAN patterns,
so an id must never contain ``/`` (it would shift the layout) nor a glob character
(``*?[]\\``, it would widen a SCAN). The allowed set is the one used by video-call
providers for call ids and by uuid4/ULID/pod names for session and node ids.
"""

from __future__ import annotations

import re

from callboard.errors import InvalidIdError

__all__ = ["MAX_ID_LENGTH", "validate_id"]

#: Longest accepted id, in characters. Call ids of common providers are ≤ 64; pod names ≤ 253
#: but node ids are pod names truncated by Kubernetes to 63. 128 leaves room for both.
MAX_ID_LENGTH = 128

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


def validate_id(value: object, kind: str = "id") -> str:
    """Return ``value`` if it is a valid id, else raise :class:`InvalidIdError`.

    ``kind`` names the id in the message (``"call_id"``, ``"session_id"``, ``"node_id"``).
    """
    if not isinstance(value, str):
        raise InvalidIdError(f"{kind} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidIdError(f"{kind} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(f"{kind} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    if _ID_RE.fullmatch(value) is None:
        raise InvalidIdError(
            f"{kind} {value!r} is invalid: use letters, digits and '_', '.', ':', '-' "
            "(starting with a letter or digit)"
        )
    return value
