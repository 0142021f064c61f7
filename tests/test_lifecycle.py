"""The lifecycle decision (core/lifecycle.py) and the keeper (core/keeper.py) on recorded activity.

The decision is pure: these replay minute-by-minute activity and check when each action comes.
The keeper is driven with a backend that records what it is asked to do (suspend, delete,
events, mark_active) and a clock under the test's control; its real-Ray behaviour is tested
in tests/test_lifecycle_ray.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from eksray_jupyter.core.backend import ClusterBackend
from eksray_jupyter.core.errors import BackendError, InvalidRequestError
from eksray_jupyter.core.keeper import Keeper, Notice, Usage
from eksray_jupyter.core.lifecycle import Decision, Observation, Policy, check_bounds_config, decide
from eksray_jupyter.core.models import Cluster, ClusterEvent, Phase, Severity
from eksray_jupyter.core.spec import resolve_cluster_spec

MIN = 60.0
HOUR = 3600.0
T0 = 1_800_000_000.0


def policy(**lifecycle: Any) -> Policy:
    return Policy.of({"lifecycle": lifecycle})


def replay(
    p: Policy, busy_minutes: set[int], minutes: int, warning: float = 5 * MIN
) -> list[tuple[int, Decision]]:
    """Decide once a minute for ``minutes``; activity in ``busy_minutes``; warnings and actions
    are remembered as an enforcer would. Returns the non-"none" decisions by minute."""
    warned_at = warned_action = None
    last_active = None
    out = []
    for m in range(minutes + 1):
        now = T0 + m * MIN
        busy = ("1 Ray task(s) running or waiting",) if m in busy_minutes else ()
        if busy:
            last_active = now
        d = decide(
            p,
            Observation(
                now=now,
                created_at=T0,
                suspended=False,
                busy=busy,
                last_active=last_active,
                warned_at=warned_at,
                warned_action=warned_action,
            ),
            warning,
        )
        if d.action == "warn":
            warned_at, warned_action = now, d.pending
        if d.action != "none":
            out.append((m, d))
        if d.action in ("suspend", "delete"):
            break
    return out


def test_off_by_default() -> None:
    assert not Policy.of({}).active
    assert replay(Policy.of({}), set(), 600) == []


def test_an_idle_cluster_is_warned_then_suspended_at_its_timeout() -> None:
    steps = replay(policy(idleTimeoutMinutes=30), set(), 60)
    assert [(m, d.action) for m, d in steps] == [(25, "warn"), (30, "suspend")]
    assert steps[0][1].pending == "suspend" and steps[0][1].due == T0 + 30 * MIN
    assert steps[1][1].reason.startswith("idle for 30 min: no Ray task")


def test_activity_restarts_the_idle_time_and_voids_a_warning() -> None:
    # Busy at minute 27, after the warning at 25: no suspend at 30; warned again at 52, acted at 57.
    steps = replay(policy(idleTimeoutMinutes=30), {27}, 90)
    assert [(m, d.action) for m, d in steps] == [(25, "warn"), (52, "warn"), (57, "suspend")]


def test_steady_work_is_never_suspended() -> None:
    # Work every 20 minutes for 10 hours, a 30-minute timeout: no warning, no action.
    assert replay(policy(idleTimeoutMinutes=30), set(range(0, 600, 20)), 600) == []


def test_delete_as_the_idle_action() -> None:
    steps = replay(policy(idleTimeoutMinutes=10, idleAction="delete"), set(), 30)
    assert [(m, d.action) for m, d in steps] == [(5, "warn"), (10, "delete")]


def test_max_lifetime_deletes_even_a_busy_cluster() -> None:
    steps = replay(policy(maxLifetimeHours=1), set(range(0, 200)), 120)
    assert [(m, d.action) for m, d in steps] == [(55, "warn"), (60, "delete")]
    assert "maximum lifetime of 60 min" in steps[-1][1].reason


def test_an_action_is_never_taken_unwarned() -> None:
    # An enforcer that starts long after the timeout (a server restarted on Monday) warns first.
    p = policy(idleTimeoutMinutes=30)
    seen = Observation(now=T0 + 3 * 24 * HOUR, created_at=T0, suspended=False, last_active=T0)
    first = decide(p, seen, 5 * MIN)
    assert first.action == "warn" and first.due == seen.now + 5 * MIN
    later = Observation(
        **{**seen.__dict__, "now": seen.now + 4 * MIN, "warned_at": seen.now, "warned_action": "suspend"}
    )
    assert decide(p, later, 5 * MIN).action == "none"
    done = Observation(**{**later.__dict__, "now": seen.now + 5 * MIN})
    assert decide(p, done, 5 * MIN).action == "suspend"


def test_suspended_clusters_are_deleted_after_their_ttl_and_not_idle_suspended() -> None:
    p = policy(idleTimeoutMinutes=10, suspendedTtlHours=2, maxLifetimeHours=1)
    base = Observation(now=T0 + 1.5 * HOUR, created_at=T0, suspended=True, suspended_at=T0 + HOUR)
    # Lifetime passed, but a suspended cluster is left to its TTL; idle does not apply.
    assert decide(p, base, 5 * MIN).action == "none"
    due = Observation(**{**base.__dict__, "now": T0 + 3 * HOUR})
    warn = decide(p, due, 5 * MIN)
    assert warn.action == "warn" and warn.pending == "delete"
    act = Observation(
        **{**due.__dict__, "now": due.now + 5 * MIN, "warned_at": due.now, "warned_action": "delete"}
    )
    assert decide(p, act, 5 * MIN).action == "delete"


# --- admin bounds ------------------------------------------------------------------------------


BOUNDS = {
    "*": {"idleTimeoutMinutes": {"minimum": 10, "maximum": 240, "allowOff": False, "default": 60}},
    "gpu": {
        "idleTimeoutMinutes": {"maximum": 30, "allowOff": False, "default": 15},
        "idleAction": {"allowed": ["suspend"]},
        "maxLifetimeHours": {"maximum": 24, "allowOff": False, "default": 12},
    },
}
PROFILES = {"gpu": {"workerGroups": [{"groupName": "gpu"}]}}


def test_bounds_fill_defaults_per_profile() -> None:
    assert resolve_cluster_spec({"name": "a"}, PROFILES, BOUNDS)["lifecycle"]["idleTimeoutMinutes"] == 60
    spec = resolve_cluster_spec({"name": "a", "profile": "gpu"}, PROFILES, BOUNDS)
    assert spec["lifecycle"] == {
        "idleTimeoutMinutes": 15,
        "idleAction": "suspend",
        "maxLifetimeHours": 12,
    }
    # No bounds: off unless asked for.
    assert resolve_cluster_spec({"name": "a"}, PROFILES)["lifecycle"] == {"idleAction": "suspend"}


def test_bounds_refuse_what_is_outside_them_and_say_what_is_allowed() -> None:
    with pytest.raises(InvalidRequestError) as e:
        resolve_cluster_spec(
            {
                "name": "a",
                "profile": "gpu",
                "lifecycle": {"idleTimeoutMinutes": 0, "idleAction": "delete", "maxLifetimeHours": 48},
            },
            PROFILES,
            BOUNDS,
        )
    by_path = {err.path: err.message for err in e.value.errors}
    assert by_path == {
        "lifecycle.idleAction": "must be one of suspend (profile gpu), got delete",
        "lifecycle.idleTimeoutMinutes": "may not be 0 (off) here (profile gpu); give at most 30 minutes",
        "lifecycle.maxLifetimeHours": "must be at most 24 hours (profile gpu), got 48",
    }
    with pytest.raises(
        InvalidRequestError, match=r"between 10 and 240 minutes \(your administrator's limits\), got 5"
    ):
        resolve_cluster_spec({"name": "a", "lifecycle": {"idleTimeoutMinutes": 5}}, PROFILES, BOUNDS)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"*": []},
        {"*": {"idleTimeout": {}}},
        {"*": {"idleTimeoutMinutes": {"max": 3}}},
        {"*": {"idleTimeoutMinutes": {"maximum": -1}}},
        {"*": {"idleAction": ["suspend"]}},
    ],
)
def test_bad_bounds_config_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        check_bounds_config(bad)


# --- the keeper ---------------------------------------------------------------------------------


class RecordingBackend(ClusterBackend):
    """Clusters in a dict; records what the keeper asks of it."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.clusters: dict[str, Cluster] = {}
        self.calls: list[tuple[str, ...]] = []
        self.ray_busy: dict[str, list[str]] = {}
        self.ray_fails: set[str] = set()
        self.events: list[ClusterEvent] = []
        self.clock: Any = lambda: T0

    def add(self, name: str, lifecycle: dict[str, Any], **kw: Any) -> Cluster:
        cluster = Cluster(
            name, self.name, "alice", Phase.READY, {"name": name, "lifecycle": lifecycle}, T0, **kw
        )
        self.clusters[name] = cluster
        return cluster

    def get_cluster(self, owner: str, name: str) -> Cluster:
        return self.clusters[name]

    def busy_reasons(self, owner: str, name: str) -> list[str]:
        if name in self.ray_fails:
            raise BackendError("the dashboard does not answer")
        return self.ray_busy.get(name, [])

    def mark_active(self, owner: str, name: str, at: float, why: str) -> None:
        self.calls.append(("mark_active", name, str(at)))
        self.clusters[name].last_active_at = at

    def record_event(self, owner: str, name: str, reason: str, message: str, severity: Severity) -> None:
        self.calls.append(("event", name, reason, message))
        self.events.append(
            ClusterEvent(self.clock(), "backend", severity, message, f"e{len(self.events)}", reason)
        )

    def cluster_events(self, owner: str, name: str, since: float | None = None) -> list[ClusterEvent]:
        return [e for e in self.events if since is None or e.time > since]

    def suspend_cluster(self, owner: str, name: str, reason: str | None = None) -> Cluster:
        self.calls.append(("suspend", name, reason or ""))
        self.clusters[name].phase = Phase.SUSPENDED
        return self.clusters[name]

    def delete_cluster(self, owner: str, name: str) -> None:
        self.calls.append(("delete", name))
        del self.clusters[name]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make_keeper(
    backend: RecordingBackend, *probes: Any, clock: Clock | None = None, dry_run: bool = False
) -> tuple[Keeper, Clock, list[Notice]]:
    clock, notices = clock or Clock(), []
    backend.clock = clock
    keeper = Keeper(
        backend, warning_seconds=2 * MIN, probes=probes, notify=notices.append, clock=clock, dry_run=dry_run
    )
    return keeper, clock, notices


def test_keeper_warns_then_suspends_and_says_why() -> None:
    backend = RecordingBackend()
    backend.add("idle", {"idleTimeoutMinutes": 10})
    keeper, clock, notices = make_keeper(backend)
    clock.now = T0 + 8 * MIN
    keeper.pass_over(list(backend.clusters.values()))
    assert [n.action for n in notices] == ["warn"] and notices[0].pending == "suspend"
    assert backend.calls[-1][:3] == ("event", "idle", "WillSuspend")
    assert "Will suspend in 2 min: idle for 8 min" in backend.calls[-1][3]
    clock.now = T0 + 10 * MIN
    outcomes = keeper.pass_over(list(backend.clusters.values()))
    assert outcomes[0].acted and backend.clusters["idle"].phase == Phase.SUSPENDED
    assert backend.calls[-1] == (
        "suspend",
        "idle",
        "Suspending: idle for 10 min: no Ray task, actor or job, no busy kernel, no keep-alive",
    )
    assert notices[-1].action == "suspend"


def test_keeper_counts_ray_work_kernels_and_keepalives_and_persists_activity() -> None:
    backend = RecordingBackend()
    backend.add("ray", {"idleTimeoutMinutes": 10})
    backend.add("kernel", {"idleTimeoutMinutes": 10})
    backend.add("kept", {"idleTimeoutMinutes": 10})
    backend.ray_busy["ray"] = ["1 Ray actor(s) alive"]

    def kernels(cluster: Cluster) -> Usage:
        return Usage(("kernel 3f2a1b0c is busy",)) if cluster.name == "kernel" else Usage()

    keeper, clock, notices = make_keeper(backend, kernels)
    for minute in range(0, 60):
        clock.now = T0 + minute * MIN
        if minute % 7 == 0:  # a keep-alive every 7 minutes (before the 2-min warning), as the CLI does
            backend.clusters["kept"].last_active_at = clock.now
        keeper.pass_over(list(backend.clusters.values()))
    assert notices == [] and not [c for c in backend.calls if c[0] in ("suspend", "delete")]
    # Activity is persisted (for `eksray admin reap` and restarts), at most once a minute per cluster.
    marks = [c for c in backend.calls if c[0] == "mark_active" and c[1] == "ray"]
    assert 50 <= len(marks) <= 60
    assert backend.clusters["ray"].last_active_at == T0 + 59 * MIN


def test_keeper_never_takes_a_cluster_it_cannot_look_at_for_idle() -> None:
    backend = RecordingBackend()
    backend.add("blind", {"idleTimeoutMinutes": 10})
    backend.ray_fails.add("blind")
    keeper, clock, notices = make_keeper(backend)
    clock.now = T0 + 5 * HOUR
    outcomes = keeper.pass_over(list(backend.clusters.values()))
    assert outcomes[0].error and "cannot tell whether it is used" in outcomes[0].error
    assert notices == [] and backend.calls == []


def test_a_keepalive_after_the_warning_cancels_the_action() -> None:
    backend = RecordingBackend()
    backend.add("c", {"idleTimeoutMinutes": 10})
    keeper, clock, notices = make_keeper(backend)
    clock.now = T0 + 9 * MIN
    keeper.pass_over(list(backend.clusters.values()))
    assert notices[-1].action == "warn"
    backend.clusters["c"].last_active_at = T0 + 9.5 * MIN  # "Keep running"
    clock.now = T0 + 11 * MIN
    keeper.pass_over(list(backend.clusters.values()))
    assert notices[-1].action == "clear"
    assert backend.clusters["c"].phase == Phase.READY


def test_a_fresh_enforcer_finds_the_warning_in_the_events() -> None:
    # `eksray admin reap` from a CronJob: each run is a new process; the warning of the first
    # run is read back from the cluster's events by the next, which then acts.
    backend = RecordingBackend()
    backend.add("c", {"idleTimeoutMinutes": 10})
    first, clock, _ = make_keeper(backend)
    clock.now = T0 + 30 * MIN
    assert first.pass_over(list(backend.clusters.values()))[0].decision.action == "warn"
    second, _, _ = make_keeper(backend, clock=clock)
    clock.now = T0 + 31 * MIN
    assert second.pass_over(list(backend.clusters.values()))[0].decision.action == "none"
    third, _, _ = make_keeper(backend, clock=clock)
    clock.now = T0 + 32 * MIN
    assert third.pass_over(list(backend.clusters.values()))[0].acted
    assert backend.clusters["c"].phase == Phase.SUSPENDED


def test_a_dry_run_changes_nothing() -> None:
    backend = RecordingBackend()
    backend.add("c", {"idleTimeoutMinutes": 10})
    backend.add("busy", {"idleTimeoutMinutes": 10})
    backend.ray_busy["busy"] = ["1 Ray task(s) running or waiting"]
    keeper, clock, notices = make_keeper(backend, dry_run=True)
    clock.now = T0 + HOUR
    decisions = {o.name: o.decision.action for o in keeper.pass_over(list(backend.clusters.values()))}
    assert decisions == {"c": "warn", "busy": "none"}
    assert backend.calls == [] and notices == []


def test_a_cluster_that_is_still_starting_is_in_use() -> None:
    # On a busy machine a head may take longer than the idle timeout to come up: the idle time
    # starts once it is up, and Ray is not asked meanwhile (its dashboard may not answer yet).
    backend = RecordingBackend()
    backend.add("slow", {"idleTimeoutMinutes": 3}).phase = Phase.STARTING
    backend.ray_fails.add("slow")
    keeper, clock, notices = make_keeper(backend)
    clock.now = T0 + 5 * MIN
    [outcome] = keeper.pass_over(list(backend.clusters.values()))
    assert outcome.busy == ("its nodes are starting",) and outcome.error is None
    assert notices == [] and backend.clusters["slow"].last_active_at == T0 + 5 * MIN
    backend.clusters["slow"].phase = Phase.READY
    backend.ray_fails.clear()
    clock.now = T0 + 5 * MIN + 30
    assert keeper.pass_over(list(backend.clusters.values()))[0].decision.action == "none"
    clock.now = T0 + 6 * MIN  # up for 1 min, due at 8 min: warned 2 min before
    assert keeper.pass_over(list(backend.clusters.values()))[0].decision.action == "warn"


def test_kernel_usage_reads_each_binding_once_and_forgets_kernels_gone(tmp_path: Any) -> None:
    """What the server's kernels say about their clusters, from one look per pass; bindings of
    kernels gone are removed, but not one the provisioner wrote for a kernel not listed yet."""
    import datetime
    import os
    import time

    from eksray_jupyter.core.kernel_bindings import KernelBindings
    from eksray_jupyter.server.lifecycle import kernel_usage

    class Kernel:
        def __init__(self, state: str, at: float) -> None:
            self.execution_state = state
            self.last_activity = datetime.datetime.fromtimestamp(at, tz=datetime.timezone.utc)

    kernels = {
        "k-busy": Kernel("busy", T0),
        "k-idle": Kernel("idle", T0 + 60),
        "k-other": Kernel("idle", T0 + 9),
    }

    class KernelManager:
        def list_kernel_ids(self) -> list[str]:
            return [*kernels, "k-unbound", "k-shut-down-meanwhile"]

        def get_kernel(self, kernel_id: str) -> Kernel:
            return (
                kernels[kernel_id] if kernel_id in kernels else {"k-unbound": Kernel("busy", T0)}[kernel_id]
            )

    bindings = KernelBindings(tmp_path, "local", "alice")
    for kernel_id, cluster in [
        ("k-busy", "a"),
        ("k-idle", "a"),
        ("k-other", "b"),
        ("k-shut-down-meanwhile", "a"),
    ]:
        bindings.bind(kernel_id, cluster)
    bindings.bind("k-gone", "a")
    bindings.bind("k-starting", "b")  # written by the provisioner before its kernel is listed
    old = time.time() - 3600
    os.utime(bindings.root / "k-gone.json", (old, old))

    usage = kernel_usage(KernelManager(), bindings)

    assert usage == {"a": Usage(("kernel k-busy is busy",), T0 + 60), "b": Usage((), T0 + 9)}
    assert bindings.cluster_of("k-gone") is None, "the binding of a kernel gone is removed"
    assert bindings.cluster_of("k-starting") == "b", "a young binding stays"
