"""Phase changes: the status patch, conditions that keep their transition time, Events."""

from __future__ import annotations

from callboard.kube.resource.phases import Phase, Reason, Status, Transition, apply_transition, is_noop


def status_after(status: Status, transition: Transition, now: str) -> tuple[Status, dict[str, object]]:
    patch, event = apply_transition(status, transition, now=now, generation=1)
    merged = {**status.raw, **patch}
    return Status.from_dict(merged), {"patch": patch, "event": event}


def test_first_phase_sets_both_conditions_and_posts_an_event() -> None:
    patch, event = apply_transition(
        Status(), Transition(Phase.PENDING, Reason.NO_CAPACITY, "no node"), now="T1", generation=4
    )
    assert (
        patch["phase"] == "Pending" and patch["reason"] == "NoCapacity" and patch["observedGeneration"] == 4
    )
    conditions = {c["type"]: c for c in patch["conditions"]}  # type: ignore[union-attr]
    assert conditions["Placed"]["status"] == "False" and conditions["Ready"]["status"] == "False"
    assert conditions["Placed"]["lastTransitionTime"] == "T1"
    assert event is not None and event.type == "Normal" and event.reason == "NoCapacity"
    assert event.message == "Pending: no node"


def test_transition_times_move_only_when_a_condition_flips() -> None:
    s1, _ = status_after(Status(), Transition(Phase.SCHEDULED, Reason.START_REQUESTED, "on a"), "T1")
    s2, _out = status_after(s1, Transition(Phase.RUNNING, Reason.STARTED, "runs"), "T2")
    placed, ready = s2.condition("Placed"), s2.condition("Ready")
    assert placed is not None and placed.status == "True" and placed.last_transition_time == "T1"
    assert ready is not None and ready.status == "True" and ready.last_transition_time == "T2"
    s3, _ = status_after(s2, Transition(Phase.CLOSING, Reason.CLOSE_REQUESTED, "bye"), "T3")
    placed3 = s3.condition("Placed")
    assert placed3 is not None and placed3.status == "True" and placed3.last_transition_time == "T1"
    assert s3.condition("Ready").status == "False"  # type: ignore[union-attr]


def test_same_phase_is_no_event_and_identical_patch_is_a_noop() -> None:
    s1, _ = status_after(Status(), Transition(Phase.PENDING, Reason.NO_CAPACITY, "full"), "T1")
    patch, event = apply_transition(
        s1, Transition(Phase.PENDING, Reason.NO_CAPACITY, "full"), now="T9", generation=1
    )
    assert event is None
    assert is_noop(s1, patch)
    changed, _ = apply_transition(
        s1, Transition(Phase.PENDING, Reason.NO_CAPACITY, "still full"), now="T9", generation=1
    )
    assert not is_noop(s1, changed)


def test_failed_and_lost_are_warnings() -> None:
    for phase in (Phase.FAILED, Phase.LOST):
        _, event = apply_transition(Status(), Transition(phase, "Why", "msg"), now="T", generation=1)
        assert event is not None and event.type == "Warning"


def test_extra_fields_ride_along() -> None:
    patch, _ = apply_transition(
        Status(),
        Transition(Phase.SCHEDULED, "R", "m", fields={"sessionId": "s", "endedAt": None}),
        now="T",
        generation=1,
    )
    assert patch["sessionId"] == "s" and patch["endedAt"] is None
