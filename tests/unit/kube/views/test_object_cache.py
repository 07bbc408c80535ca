"""The cache of watched objects: newest version wins, indexes, and its priming barrier."""

from __future__ import annotations

from callboard.kube.views.object_cache import ObjectCache


def body(name: str, uid: str, rv: str, session_id: str | None = None) -> dict[str, object]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": uid, "resourceVersion": rv},
        "spec": {"callId": "c"},
        "status": {"sessionId": session_id} if session_id else {},
    }


def test_cache_keeps_the_newest_version_and_indexes_sessions() -> None:
    cache = ObjectCache()
    cache.put_body(body("a", "u1", "5", "s1"))
    stale = cache.put_body(body("a", "u1", "4"))
    assert stale.resource_version == "5"
    assert cache.claiming("c", "s1") is not None
    cache.put_body(body("a", "u1", "6", "s2"))
    assert cache.claiming("c", "s1") is None and cache.claiming("c", "s2") is not None
    # Same name, new object (deleted and created again): replaced whatever the version.
    cache.put_body(body("a", "u2", "1"))
    assert cache.by_uid("u1") is None and cache.by_uid("u2") is not None
    assert cache.remove(("ns", "a"), "u1") is None
    assert cache.remove(("ns", "a"), "u2") is not None
    assert len(cache) == 0


async def test_primed_when_every_listed_object_was_seen() -> None:
    cache = ObjectCache()
    cache.put_body(body("a", "u1", "1"))
    cache.expect(["u1", "u2", "u3"])
    assert not cache.primed.is_set()
    cache.put_body(body("b", "u2", "1"))
    cache.remove(("ns", "c"), "u3")  # deleted before the watch showed it
    assert cache.primed.is_set()
    empty = ObjectCache()
    empty.expect([])
    assert empty.primed.is_set()


def test_the_cache_version_moves_with_every_change_and_only_then() -> None:
    cache = ObjectCache()
    body = {
        "apiVersion": "callboard.dev/v1alpha1",
        "kind": "AgentSession",
        "metadata": {"name": "a1", "namespace": "ns", "uid": "u1", "resourceVersion": "5"},
        "spec": {"callId": "call-1"},
    }
    start = cache.version
    cache.put_body(body)
    assert cache.version == start + 1
    cache.put_body(body)  # the same resourceVersion again: nothing changed
    assert cache.version == start + 1
    cache.put_body(body | {"metadata": {**body["metadata"], "resourceVersion": "6"}})
    assert cache.version == start + 2
    cache.remove(("ns", "a1"))
    assert cache.version == start + 3
    cache.remove(("ns", "a1"))
    assert cache.version == start + 3
