"""Pure logic of :mod:`callboard.registry.start_requests`: the one start-request de-duplication."""

from __future__ import annotations

from callboard.registry import SeenRequests


def test_seen_requests_drops_repeats_until_they_are_forgotten() -> None:
    now = [0.0]
    seen = SeenRequests(10.0, clock=lambda: now[0])
    assert seen.first_time("r-1") and "r-1" in seen
    assert not seen.first_time("r-1")
    seen.forget("r-1")
    assert seen.first_time("r-1")
    now[0] = 11.0
    assert seen.first_time("r-2")  # the pass that records r-2 drops r-1, seen 11 s ago
    assert "r-1" not in seen and seen.first_time("r-1")


def test_seen_requests_forgets_only_the_expired_ids_oldest_first() -> None:
    now = [0.0]
    seen = SeenRequests(10.0, clock=lambda: now[0])
    for i in range(5):
        now[0] = float(i)
        assert seen.first_time(f"r-{i}")
    seen.forget("r-1")
    now[0] = 12.5  # r-0, r-2 are older than 10 s; r-3 and r-4 are not
    assert seen.first_time("r-5")
    assert [r for r in ("r-0", "r-1", "r-2", "r-3", "r-4", "r-5") if r in seen] == ["r-3", "r-4", "r-5"]
