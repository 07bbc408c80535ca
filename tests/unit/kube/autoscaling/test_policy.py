"""The buffer policy, pure: desired replicas, buffer parsing, cool-down, choice of idle pods."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callboard import config
from callboard.errors import ConfigurationError
from callboard.kube.autoscaling.policy import (
    DEFAULT_CAPACITY,
    VICTIM_COST,
    AutoscaleSettings,
    Buffer,
    PodView,
    ScaleDecision,
    ScalingMode,
    Stabilizer,
    assess,
    confirm_scale_down,
    decide_scale,
    desired_replicas,
)


def pod(
    name: str, sessions: int | None = 0, *, ready: bool = True, created: str = "", **kw: object
) -> PodView:
    return PodView(name=name, ready=ready, sessions=sessions, created=created or name, **kw)  # type: ignore[arg-type]


# -- buffer -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", Buffer(count=5)),
        (" 0 ", Buffer(count=0)),
        (7, Buffer(count=7)),
        ("20%", Buffer(percent=20.0)),
        ("12.5 %", Buffer(percent=12.5)),
        ("0%", Buffer(percent=0.0)),
    ],
)
def test_buffer_parse(text: str | int, expected: Buffer) -> None:
    assert Buffer.parse(text) == expected


@pytest.mark.parametrize("text", ["", "-1", -1, "1.5", "five", "%", "20%%", "1e3"])
def test_buffer_parse_rejects(text: str | int) -> None:
    with pytest.raises(ConfigurationError, match="count of free session slots"):
        Buffer.parse(text)


def test_buffer_slots() -> None:
    assert Buffer(count=3).slots(0) == 3
    assert Buffer(count=3).slots(100) == 3
    assert Buffer(percent=20).slots(0) == 0
    assert Buffer(percent=20).slots(10) == 2
    assert Buffer(percent=20).slots(11) == 3  # rounded up
    assert Buffer(percent=10).slots(30) == 3  # 30 * 0.1 is 3.0000000000000004 in floats
    assert str(Buffer(count=3)) == "3"
    assert str(Buffer(percent=12.5)) == "12.5%"


# -- desired replicas -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("live", "capacity", "buffer", "lo", "hi", "expected"),
    [
        (0, 10, Buffer(count=0), 0, 10, 0),
        (0, 10, Buffer(count=0), 1, 10, 1),
        (0, 10, Buffer(count=5), 0, 10, 1),
        (10, 10, Buffer(count=0), 1, 10, 1),
        (10, 10, Buffer(count=1), 1, 10, 2),
        (95, 10, Buffer(count=5), 1, 10, 10),
        (96, 10, Buffer(count=5), 1, 10, 10),  # 11 wanted, capped at max
        (40, 4, Buffer(percent=25), 1, 100, 13),  # (40 + 10) / 4 = 12.5
        (3, 1, Buffer(count=0), 5, 8, 5),
    ],
)
def test_desired_replicas(live: int, capacity: int, buffer: Buffer, lo: int, hi: int, expected: int) -> None:
    assert (
        desired_replicas(live, capacity=capacity, buffer=buffer, min_replicas=lo, max_replicas=hi) == expected
    )


@given(
    live=st.integers(0, 10_000),
    capacity=st.integers(1, 500),
    count=st.integers(0, 1_000),
    lo=st.integers(0, 50),
    span=st.integers(0, 500),
)
def test_desired_replicas_leaves_the_buffer_free(
    live: int, capacity: int, count: int, lo: int, span: int
) -> None:
    hi = max(lo, 1) + span
    n = desired_replicas(
        live, capacity=capacity, buffer=Buffer(count=count), min_replicas=lo, max_replicas=hi
    )
    assert lo <= n <= hi
    if lo < n < hi:
        # The smallest count that fits the sessions and the buffer: one pod fewer would not.
        assert n * capacity >= live + count > (n - 1) * capacity
    elif n == lo and n < hi:
        assert n * capacity >= live + count


def test_desired_replicas_needs_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        desired_replicas(1, capacity=0, buffer=Buffer(), min_replicas=0, max_replicas=1)


# -- assess -----------------------------------------------------------------------------------


def settings(**kw: object) -> AutoscaleSettings:
    base: dict[str, object] = {
        "mode": ScalingMode.SCALE,
        "deployment": "agents",
        "min_replicas": 1,
        "max_replicas": 10,
        "buffer": Buffer(count=2),
    }
    base.update(kw)
    return AutoscaleSettings(**base)  # type: ignore[arg-type]


def test_assess_counts_staying_pods_only() -> None:
    pods = [
        pod("a", 3, capacity=4),
        pod("b", 1, capacity=4),
        pod("c", 0, capacity=4),
        pod("gone", 4, capacity=4, terminating=True),
        pod("leaving", 2, capacity=4, draining=True),
        pod("new", None),  # no node record yet
        pod("starting", 0, ready=False, capacity=4),
    ]
    a = assess(pods, settings())
    assert a.capacity == 4
    assert a.live_sessions == 4
    # Free slots only on ready pods with a record: a=1, b=3, c=4.
    assert a.free_slots == 8
    assert a.idle_pods == 1
    assert a.desired == math.ceil((4 + 2) / 4)


def test_assess_capacity_from_settings_then_smallest_record_then_default() -> None:
    pods = [pod("a", 1, capacity=8), pod("b", 1, capacity=5)]
    assert assess(pods, settings(capacity=3)).capacity == 3
    assert assess(pods, settings()).capacity == 5
    assert assess([pod("a", None)], settings()).capacity == DEFAULT_CAPACITY


def test_assess_percentage_buffer() -> None:
    pods = [pod(f"p{i}", 10, capacity=10) for i in range(10)]
    a = assess(pods, settings(buffer=Buffer(percent=20), max_replicas=50))
    assert a.live_sessions == 100
    assert a.desired == 12


# -- stabilizer -------------------------------------------------------------------------------


def test_stabilizer_keeps_the_peak_of_the_window() -> None:
    s = Stabilizer(window=60)
    assert s.observe(0, 5) == 5
    assert s.observe(10, 2) == 5
    assert s.observe(59, 3) == 5
    assert s.observe(60, 2) == 3  # the peak at t=0 left the window
    assert s.observe(119, 1) == 2
    assert s.observe(200, 1) == 1
    s.reset()
    assert s.observe(201, 0) == 0


def test_stabilizer_without_window_follows_at_once() -> None:
    s = Stabilizer(window=0)
    assert s.observe(0, 5) == 5
    assert s.observe(0.001, 1) == 1


# -- decide_scale -------------------------------------------------------------------------------


def test_scale_up_is_immediate() -> None:
    pods = [pod("a", 10), pod("b", 10)]
    d = decide_scale(current=2, desired=4, stabilized=4, pods=pods)
    assert d.target == 4
    assert d.victims == ()


def test_no_change() -> None:
    d = decide_scale(current=3, desired=3, stabilized=3, pods=[pod("a"), pod("b"), pod("c")])
    assert (d.target, d.victims, d.reason) == (3, (), "")


def test_scale_down_waits_for_the_cool_down() -> None:
    pods = [pod("a", 0), pod("b", 0), pod("c", 1)]
    d = decide_scale(current=3, desired=1, stabilized=3, pods=pods)
    assert d.target == 3
    assert "cool-down" in d.reason
    # Part of the way: the window's peak is 2.
    d = decide_scale(current=3, desired=1, stabilized=2, pods=pods)
    assert d.target == 2
    assert len(d.victims) == 1


def test_scale_down_removes_only_idle_pods_newest_first() -> None:
    pods = [
        pod("old-idle", 0, created="2026-01-01T00:00:00Z"),
        pod("busy-new", 3, created="2026-01-01T00:05:00Z"),
        pod("new-idle", 0, created="2026-01-01T00:04:00Z"),
        pod("busy", 1, created="2026-01-01T00:02:00Z"),
    ]
    d = decide_scale(current=4, desired=1, stabilized=1, pods=pods)
    # Three pods should go, but only two are idle.
    assert d.target == 2
    assert d.victims == ("new-idle", "old-idle")
    assert "only 2 idle pods" in d.reason


def test_scale_down_by_one_picks_the_newest_idle_pod() -> None:
    pods = [pod("a", 0, created="1"), pod("b", 0, created="3"), pod("c", 2, created="2")]
    d = decide_scale(current=3, desired=2, stabilized=2, pods=pods)
    assert (d.target, d.victims) == (2, ("b",))


def test_unknown_and_draining_pods_are_not_idle() -> None:
    pods = [pod("unknown", None), pod("draining", 0, draining=True), pod("busy", 2)]
    d = decide_scale(current=3, desired=1, stabilized=1, pods=pods)
    assert d.target == 3
    assert d.victims == ()


def test_no_scale_down_while_not_steady() -> None:
    pods = [pod("a", 0), pod("b", 0), pod("c", 0, terminating=True)]
    d = decide_scale(current=3, desired=1, stabilized=1, pods=pods)
    assert d.target == 3
    assert "not steady" in d.reason
    d = decide_scale(current=1, desired=0, stabilized=0, pods=[pod("a", 0), pod("surge", 0)])
    assert d.target == 1


def test_no_scale_down_while_a_not_ready_pod_may_have_sessions() -> None:
    # The controller deletes not-ready pods first, whatever their cost.
    for sessions in (2, None):
        pods = [pod("a", 0), pod("b", 0), pod("flaky", sessions, ready=False)]
        d = decide_scale(current=3, desired=1, stabilized=1, pods=pods)
        assert d.target == 3
        assert "flaky" in d.reason


def test_pending_pods_without_a_record_do_not_block_a_scale_down() -> None:
    # Pending: nothing runs in it. Running but not ready without a record: its sidecar may
    # have lost Redis while its sessions go on, so it blocks.
    pods = [pod("a", 0, created="1"), pod("b", 0, created="2"), pod("new", None, ready=False, pending=True)]
    d = decide_scale(current=3, desired=1, stabilized=1, pods=pods)
    assert (d.target, d.victims) == (1, ("b",))
    pods[2] = pod("cut-off", None, ready=False)
    d = decide_scale(current=3, desired=1, stabilized=1, pods=pods)
    assert d.target == 3
    assert "cut-off" in d.reason


def test_sessionless_not_ready_pods_go_first_and_need_no_mark() -> None:
    pods = [pod("a", 0, created="1"), pod("b", 0, created="2"), pod("starting", 0, ready=False, created="3")]
    d = decide_scale(current=3, desired=2, stabilized=2, pods=pods)
    assert (d.target, d.victims) == (2, ())
    d = decide_scale(current=3, desired=1, stabilized=1, pods=pods)
    assert (d.target, d.victims) == (1, ("b",))


def test_stale_marks_are_reset_to_the_session_count() -> None:
    pods = [
        pod("was-victim-now-busy", 2, cost=-(2**31)),
        pod("was-victim-idle", 0, cost=-(2**31)),
        pod("unknown-marked", None, cost=-5),
        pod("busy", 1, cost=1),
    ]
    d = decide_scale(current=4, desired=4, stabilized=4, pods=pods)
    assert d.resets == {"was-victim-now-busy": 2, "was-victim-idle": 0, "unknown-marked": 0}
    # A pod chosen again keeps its mark.
    d = decide_scale(current=4, desired=3, stabilized=3, pods=pods)
    assert d.victims == ("was-victim-idle",)
    assert d.resets == {"was-victim-now-busy": 2, "unknown-marked": 0}


@given(
    sessions=st.lists(st.one_of(st.none(), st.integers(0, 5)), min_size=1, max_size=12),
    ready=st.lists(st.booleans(), min_size=12, max_size=12),
    desired=st.integers(0, 12),
    extra=st.integers(0, 3),
)
def test_a_scale_down_never_needs_a_busy_pod(
    sessions: list[int | None], ready: list[bool], desired: int, extra: int
) -> None:
    pods = [pod(f"p{i:02}", s, ready=r) for i, (s, r) in enumerate(zip(sessions, ready, strict=False))]
    current = len(pods)
    d = decide_scale(current=current, desired=desired, stabilized=min(desired + extra, current), pods=pods)
    if d.target >= current:
        return
    # Simulate the ReplicaSet controller: not-ready first, then the marked victims.
    removed = current - d.target
    order = [p for p in pods if not p.ready] + [p for p in pods if p.name in d.victims]
    assert len(order) >= removed
    for p in order[:removed]:
        assert p.sessions == 0, p
    assert d.target >= desired


# -- settings ---------------------------------------------------------------------------------


def from_env(environ: dict[str, str]) -> AutoscaleSettings:
    """The autoscale settings ``callboard operator`` builds from ``environ``, validated."""
    settings = config.build(AutoscaleSettings, config.from_environ(AutoscaleSettings, environ))
    settings.validate()
    return settings


# -- the check after the settle window -----------------------------------------------------


def victim(name: str, sessions: int | None = 0, **kw: object) -> PodView:
    return pod(name, sessions, cost=VICTIM_COST, **kw)


def test_g9_confirm_removes_victims_that_stayed_idle_and_marked() -> None:
    decision = ScaleDecision(target=2, victims=("c", "d"))
    fresh = [pod("a", 1, cost=1), pod("b", 1, cost=1), victim("c"), victim("d")]
    redo = ScaleDecision(target=2, victims=("c", "d"))
    check = confirm_scale_down(current=4, decision=decision, redo=redo, fresh=fresh, marked={"c", "d"})
    assert (check.target, check.removed, check.kept) == (2, ("c", "d"), ())


def test_g9_confirm_keeps_a_victim_that_got_a_session_during_the_settle_window() -> None:
    decision = ScaleDecision(target=2, victims=("c", "d"))
    fresh = [pod("a", 1), pod("b", 1), victim("c", 1), victim("d")]
    check = confirm_scale_down(current=4, decision=decision, redo=decision, fresh=fresh, marked={"c", "d"})
    assert (check.target, check.removed, check.kept) == (3, ("d",), ("c",))


@pytest.mark.parametrize(
    ("fresh_c", "marked"),
    [
        (victim("c", None), {"c"}),  # its node record is gone: sessions unknown
        (victim("c", ready=False), {"c"}),
        (victim("c", terminating=True), {"c"}),
        (victim("c", draining=True), {"c"}),
        (pod("c", 0, cost=0), {"c"}),  # the cost was rewritten
        (victim("c"), set()),  # the mark was never written (the pod was not found)
    ],
)
def test_g9_confirm_removes_no_victim_that_is_not_idle_ready_and_marked(
    fresh_c: PodView, marked: set[str]
) -> None:
    decision = ScaleDecision(target=1, victims=("c",))
    check = confirm_scale_down(
        current=2, decision=decision, redo=decision, fresh=[pod("a", 1), fresh_c], marked=marked
    )
    assert (check.target, check.removed, check.kept) == (2, (), ("c",))
    assert check.reason


def test_g9_confirm_keeps_every_pod_when_the_fresh_decision_keeps_them() -> None:
    decision = ScaleDecision(target=2, victims=("c", "d"))
    fresh = [pod("a", 1, ready=False), pod("b", 1), victim("c"), victim("d")]
    redo = ScaleDecision(target=4, reason="not-ready pods that may run sessions: a")
    check = confirm_scale_down(current=4, decision=decision, redo=redo, fresh=fresh, marked={"c", "d"})
    assert (check.target, check.removed, check.kept) == (4, (), ("c", "d"))
    assert "not-ready" in check.reason


def test_g9_confirm_removes_no_more_than_the_fresh_decision_wants() -> None:
    decision = ScaleDecision(target=2, victims=("c", "d"))
    fresh = [pod("a", 1), pod("b", 1), victim("c"), victim("d")]
    redo = ScaleDecision(target=3, victims=("d",))  # more demand meanwhile
    check = confirm_scale_down(current=4, decision=decision, redo=redo, fresh=fresh, marked={"c", "d"})
    assert (check.target, check.removed, check.kept) == (3, ("c",), ("d",))


def test_confirm_counts_the_sessionless_not_ready_pods_the_controller_takes_first() -> None:
    # 4 -> 2: one not-ready sessionless pod (no mark needed) and one victim.
    decision = ScaleDecision(target=2, victims=("d",))
    fresh = [pod("a", 1), pod("b", 0, ready=False), pod("c", 1), victim("d")]
    check = confirm_scale_down(current=4, decision=decision, redo=decision, fresh=fresh, marked={"d"})
    assert (check.target, check.removed) == (2, ("d",))
    redo = ScaleDecision(target=3)
    check = confirm_scale_down(current=4, decision=decision, redo=redo, fresh=fresh, marked={"d"})
    assert (check.target, check.removed, check.kept) == (3, (), ("d",))


def test_settings_from_env() -> None:
    s = from_env(
        {
            "CALLBOARD_AUTOSCALE": "scale",
            "CALLBOARD_AUTOSCALE_DEPLOYMENT": "cb-agents",
            "CALLBOARD_AUTOSCALE_POOL": "default",
            "CALLBOARD_AUTOSCALE_MIN": "2",
            "CALLBOARD_AUTOSCALE_MAX": "20",
            "CALLBOARD_AUTOSCALE_BUFFER": "25%",
            "CALLBOARD_AUTOSCALE_CAPACITY": "4",
            "CALLBOARD_AUTOSCALE_INTERVAL": "2.5",
            "CALLBOARD_AUTOSCALE_SCALE_DOWN_WINDOW": "60",
            "CALLBOARD_AUTOSCALE_SETTLE": "0.5",
            "CALLBOARD_AUTOSCALE_NAMESPACE": "",
            "POD_NAMESPACE": "agents",
        }
    )
    assert s == AutoscaleSettings(
        mode=ScalingMode.SCALE,
        namespace="agents",
        deployment="cb-agents",
        pool="default",
        min_replicas=2,
        max_replicas=20,
        buffer=Buffer(percent=25),
        capacity=4,
        interval=2.5,
        scale_down_window=60.0,
        settle=0.5,
    )


def test_settings_default_off() -> None:
    s = from_env({})
    assert s.mode is ScalingMode.OFF
    s.validate()  # nothing to check when off


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CALLBOARD_AUTOSCALE": "hpa"}, "use off, scale or metrics"),
        ({"CALLBOARD_AUTOSCALE": "scale"}, "Deployment's name"),
        ({"CALLBOARD_AUTOSCALE_MIN": "two"}, "CALLBOARD_AUTOSCALE_MIN='two' .*: must be a whole number"),
        ({"CALLBOARD_AUTOSCALE_INTERVAL": "nan"}, "CALLBOARD_AUTOSCALE_INTERVAL='nan' .*: must be a finite"),
        ({"CALLBOARD_AUTOSCALE_MIN": "5", "CALLBOARD_AUTOSCALE_MAX": "4"}, "max replicas must be >= min"),
        ({"CALLBOARD_AUTOSCALE_MIN": "-1"}, "min replicas must be >= 0"),
        ({"CALLBOARD_AUTOSCALE_MIN": "0", "CALLBOARD_AUTOSCALE_MAX": "0"}, ">= 1"),
        ({"CALLBOARD_AUTOSCALE_CAPACITY": "0"}, "capacity"),
        ({"CALLBOARD_AUTOSCALE_INTERVAL": "0"}, "interval must be > 0"),
        ({"CALLBOARD_AUTOSCALE_SETTLE": "-1"}, "settle must be > 0"),
        ({"CALLBOARD_AUTOSCALE_SCALE_DOWN_WINDOW": "-1"}, "window must be >= 0"),
        ({"CALLBOARD_AUTOSCALE_BUFFER": "lots"}, "percentage"),
        (
            {"CALLBOARD_AUTOSCALE_SETTLE": "5", "CALLBOARD_AUTOSCALE_DRAIN_MARK_TTL": "5"},
            r"drain-mark TTL \(5s\) must exceed the settle time",
        ),
    ],
)
def test_settings_errors(env: dict[str, str], message: str) -> None:
    full = {"CALLBOARD_AUTOSCALE": "metrics", "CALLBOARD_AUTOSCALE_DEPLOYMENT": "agents", **env}
    if env.get("CALLBOARD_AUTOSCALE") == "scale":
        del full["CALLBOARD_AUTOSCALE_DEPLOYMENT"]
    with pytest.raises(ConfigurationError, match=message):
        from_env(full)


def test_options_list_exactly_what_from_environ_reads() -> None:
    class Recorder(dict[str, str]):
        read: set[str] = set()

        def get(self, key: str, default: object = None) -> str:  # type: ignore[override]
            self.read.add(key)
            return super().get(key, "")

    env = Recorder(CALLBOARD_AUTOSCALE="metrics", CALLBOARD_AUTOSCALE_DEPLOYMENT="agents")
    from_env(env)
    assert Recorder.read == {name for opt in config.options(AutoscaleSettings) for name in opt.env}
