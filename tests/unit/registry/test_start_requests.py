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
