"""The operator's view of every AgentSession it watches, fed by kopf's watch events.

One dict keyed by ``(namespace, name)`` plus an index by uid and one by session, so the
sync loop answers "which object claims this session" in O(1) for 1,000s of objects.
Writes of the operator itself (PATCH answers) go in too; a watch event older than what
the cache holds is ignored (see :func:`~callboard.kube.resource.objects.resource_version_newer`).

:meth:`ObjectCache.expect` and :attr:`ObjectCache.primed` form the start-up barrier: the
operator lists the objects once, and the cache is primed when the watch delivered each
of them (or their deletion). Until then an unclaimed session may belong to an object not
seen yet, so nothing is adopted or closed as an orphan.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from callboard.kube.resource.objects import AgentSessionObject, Key, resource_version_newer
from callboard.kube.resource.phases import Phase

__all__ = ["ObjectCache"]


class ObjectCache:
    def __init__(self) -> None:
        self._objects: dict[Key, AgentSessionObject] = {}
        self._by_uid: dict[str, Key] = {}
        self._by_session: dict[tuple[str, str], Key] = {}
        self._expected: set[str] | None = None
        self.primed = asyncio.Event()
        self.version = 0
        """Moves on with every change of the objects held: a reader that derived something
        from all of them (the sync loop's unclaimed sessions, the phase metrics) at one
        version need not derive it again while the version stays."""

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[AgentSessionObject]:
        return iter(list(self._objects.values()))

    def get(self, key: Key) -> AgentSessionObject | None:
        return self._objects.get(key)

    def by_uid(self, uid: str) -> AgentSessionObject | None:
        key = self._by_uid.get(uid)
        return None if key is None else self._objects.get(key)

    def claiming(self, call_id: str, session_id: str) -> AgentSessionObject | None:
        """The object that stands for this session, if any."""
        key = self._by_session.get((call_id, session_id))
        return None if key is None else self._objects.get(key)

    def pending(self, pool: str = "") -> int:
        """Objects waiting for room (Pending) that a node of ``pool`` could take: those of that
        pool and those of no pool ("" counts every Pending object). The autoscaler's demand."""
        return sum(
            1
            for obj in self._objects.values()
            if obj.status.phase is Phase.PENDING and (not pool or obj.spec.pool in (None, "", pool))
        )

    def uids(self) -> set[str]:
        return set(self._by_uid)

    def put(self, obj: AgentSessionObject) -> AgentSessionObject:
        """Store ``obj`` unless the cache holds a newer version; return what the cache holds."""
        current = self._objects.get(obj.key)
        if (
            current is not None
            and current.uid == obj.uid
            and not resource_version_newer(obj.resource_version, current.resource_version)
        ):
            return current
        if current is not None:
            self._unindex(current)
        if current is None or (current.uid, current.resource_version) != (obj.uid, obj.resource_version):
            self.version += 1  # the same resourceVersion again (a re-delivered event) is no change
        self._objects[obj.key] = obj
        self._by_uid[obj.uid] = obj.key
        if obj.session is not None:
            self._by_session[obj.session] = obj.key
        self._seen(obj.uid)
        return obj

    def put_body(self, body: Mapping[str, Any]) -> AgentSessionObject:
        return self.put(AgentSessionObject.from_body(body))

    def remove(self, key: Key, uid: str | None = None) -> AgentSessionObject | None:
        current = self._objects.get(key)
        if current is None or (uid is not None and current.uid != uid):
            if uid is not None:
                self._seen(uid)
            return None
        del self._objects[key]
        self.version += 1
        self._unindex(current)
        self._seen(current.uid)
        return current

    def _unindex(self, obj: AgentSessionObject) -> None:
        if self._by_uid.get(obj.uid) == obj.key:
            del self._by_uid[obj.uid]
        if obj.session is not None and self._by_session.get(obj.session) == obj.key:
            del self._by_session[obj.session]

    # -- start-up barrier -------------------------------------------------------------------

    def expect(self, uids: Iterable[str]) -> None:
        """The uids an initial list returned: primed once the watch delivered each one."""
        self._expected = set(uids) - set(self._by_uid)
        if not self._expected:
            self.primed.set()

    def _seen(self, uid: str) -> None:
        if self._expected is not None and uid in self._expected:
            self._expected.discard(uid)
            if not self._expected:
                self.primed.set()

    def mark_gone(self, uids: Iterable[str]) -> None:
        """Stop waiting for objects known to be deleted meanwhile."""
        for uid in uids:
            self._seen(uid)
