"""The enforcer of idle timeouts and lifetimes: looks at clusters, asks :func:`.lifecycle.decide`,
and warns, suspends or deletes.

Two run it: the Jupyter server, for its owner's clusters, every
``c.EKSRay.lifecycle_interval_seconds`` whether or not a panel is open (it also knows the
server's kernels); and ``eksray admin reap``, for every owner's clusters (kuberay: the whole
Kubernetes cluster), so a user whose server is gone leaves nothing running.

What uses a cluster comes from *probes*: the backend's view of Ray (tasks, actors, jobs) is
always one; the server adds its kernels and its jobs. A probe that fails makes the cluster
count as in use for that pass: never suspend what could not be looked at.

Activity is persisted through the backend (``mark_active``, at most every
``persist_seconds``), so another enforcer, or this one after a restart, sees it. Warnings are
kept in memory only: after a restart an action is warned of again before it is taken.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .backend import ClusterBackend
from .errors import EKSRayError, NotFoundError
from .lifecycle import Decision, Observation, Policy, decide, span
from .models import Cluster, Phase, Severity

log = logging.getLogger(__name__)

#: Phases in which nothing is decided (the cluster is going away or being suspended).
_SETTLING = frozenset({Phase.STOPPING, Phase.SUSPENDING})
#: Phases that count as use: nobody can use the cluster before it is up.
_COMING_UP = frozenset({Phase.PENDING, Phase.STARTING})


def warning_reason(action: str) -> str:
    """The event reason of a warning: ``WillSuspend``, ``WillDelete``."""
    return f"Will{action.capitalize()}"


@dataclass(frozen=True)
class Usage:
    """What a probe saw: why the cluster is busy now, and when it was last used (if it knows)."""

    busy: tuple[str, ...] = ()
    last_active: float | None = None


Probe = Callable[[Cluster], Usage]


@dataclass(frozen=True)
class Notice:
    """What an enforcer tells the cluster's owner (the server pushes it to panels)."""

    owner: str
    name: str
    action: str  # "warn" | "suspend" | "delete" | "clear" (a pending warning no longer holds)
    reason: str
    pending: str | None = None  # for "warn": the action announced
    due: float | None = None  # for "warn": when it will be taken

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "name": self.name,
            "action": self.action,
            "reason": self.reason,
            "pending": self.pending,
            "due": self.due,
        }


@dataclass
class _Memory:
    warned_at: float | None = None
    warned_action: str | None = None
    last_active: float | None = None
    persisted: float | None = None


@dataclass
class Outcome:
    """One cluster's result of a pass (for tests, ``eksray admin reap`` and logs)."""

    owner: str
    name: str
    decision: Decision
    busy: tuple[str, ...] = ()
    error: str | None = None
    acted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Keeper:
    def __init__(
        self,
        backend: ClusterBackend,
        *,
        warning_seconds: float,
        probes: Iterable[Probe] = (),
        notify: Callable[[Notice], None] | None = None,
        persist_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
        dry_run: bool = False,
    ) -> None:
        """``dry_run``: decide and report, change nothing (no event, no activity, no action)."""
        self.backend = backend
        self.dry_run = dry_run
        self.warning_seconds = warning_seconds
        self.probes = [self.ray_probe, *probes]
        self.notify = notify or (lambda notice: None)
        self.persist_seconds = persist_seconds
        self.clock = clock
        self._memory: dict[tuple[str, str], _Memory] = {}

    def ray_probe(self, cluster: Cluster) -> Usage:
        if cluster.phase in (Phase.SUSPENDED, Phase.SUSPENDING):
            return Usage()
        return Usage(tuple(self.backend.busy_reasons(cluster.owner, cluster.name)))

    def pass_over(self, clusters: Iterable[Cluster], probes: Iterable[Probe] = ()) -> list[Outcome]:
        """Decide for each cluster and act; one cluster's trouble never stops the others.
        ``probes``: more probes for this pass only (built from one look at kernels or jobs)."""
        outcomes = []
        seen = set()
        pass_probes = [*self.probes, *probes]
        for cluster in clusters:
            seen.add((cluster.owner, cluster.name))
            try:
                outcome = self._one(cluster, pass_probes)
            except EKSRayError as e:
                outcome = Outcome(cluster.owner, cluster.name, Decision("none"), error=e.message)
                log.warning("eksray: lifecycle of cluster %s/%s: %s", cluster.owner, cluster.name, e.message)
            except Exception as e:  # a bug here must not stop enforcement for the others
                log.exception("eksray: lifecycle of cluster %s/%s failed", cluster.owner, cluster.name)
                outcome = Outcome(cluster.owner, cluster.name, Decision("none"), error=repr(e))
            if outcome is not None:
                outcomes.append(outcome)
        for key in set(self._memory) - seen:
            del self._memory[key]
        return outcomes

    def _one(self, cluster: Cluster, probes: list[Probe]) -> Outcome | None:
        policy = Policy.of(cluster.spec)
        key = (cluster.owner, cluster.name)
        if not policy.active or cluster.phase in _SETTLING:
            self._memory.pop(key, None)
            return None
        memory = self._memory.setdefault(key, _Memory())
        now = self.clock()
        # Nodes coming up: the user is waiting for it, so it is in use (idle time starts once it is up).
        coming_up = cluster.phase in _COMING_UP
        busy: list[str] = [f"its nodes are {cluster.phase.value}"] if coming_up else []
        last_seen = [cluster.last_active_at, memory.last_active]
        try:
            for probe in [] if coming_up else probes:
                usage = probe(cluster)
                busy += usage.busy
                last_seen.append(usage.last_active)
        except EKSRayError as e:
            # Not looked at, not idle: a pending warning stands, the action waits.
            return Outcome(
                cluster.owner,
                cluster.name,
                Decision("none"),
                error=f"cannot tell whether it is used: {e.message}",
            )
        if busy:
            last_seen.append(now)
        last_active = max((t for t in last_seen if t is not None), default=None)
        memory.last_active = last_active
        # Persisted for other enforcers and restarts, at most every persist_seconds.
        stale = last_active is not None and (cluster.last_active_at or 0) < last_active
        due = memory.persisted is None or (last_active or 0) - memory.persisted >= self.persist_seconds
        if last_active is not None and stale and due and not self.dry_run:
            self.backend.mark_active(cluster.owner, cluster.name, last_active, "; ".join(busy) or "in use")
            memory.persisted = last_active
        seen = Observation(
            now=now,
            created_at=cluster.created_at,
            suspended=cluster.phase == Phase.SUSPENDED,
            busy=tuple(busy),
            last_active=last_active,
            suspended_at=cluster.suspended_at,
            warned_at=memory.warned_at,
            warned_action=memory.warned_action,
        )
        decision = decide(policy, seen, self.warning_seconds)
        if decision.action == "warn" and memory.warned_at is None:
            # Warned before this process knew (a restart, `eksray admin reap` from a CronJob)?
            # The warning is in the cluster's events.
            earlier = self._earlier_warning(cluster, decision.pending or "", now)
            if earlier is not None:
                memory.warned_at, memory.warned_action = earlier, decision.pending
                seen = dataclasses.replace(seen, warned_at=earlier, warned_action=decision.pending)
                decision = decide(policy, seen, self.warning_seconds)
        outcome = Outcome(cluster.owner, cluster.name, decision, busy=tuple(busy))
        if decision.action == "none":
            if memory.warned_at is not None and decision.pending is None:
                memory.warned_at = memory.warned_action = None
                self.notify(Notice(cluster.owner, cluster.name, "clear", "; ".join(busy) or "in use again"))
            return outcome
        if self.dry_run:
            return outcome
        if decision.action == "warn":
            memory.warned_at, memory.warned_action = now, decision.pending
            left = span(max(0.0, (decision.due or now) - now))
            message = f"Will {decision.pending} in {left}: {decision.reason}. Keep it running to stop this."
            reason = warning_reason(decision.pending or "")
            self.backend.record_event(cluster.owner, cluster.name, reason, message, Severity.WARNING)
            self.notify(
                Notice(cluster.owner, cluster.name, "warn", decision.reason, decision.pending, decision.due)
            )
            return outcome
        outcome.acted = self._act(cluster, decision)
        self._memory.pop(key, None)
        return outcome

    def _earlier_warning(self, cluster: Cluster, action: str, now: float) -> float | None:
        """When the latest warning of ``action`` was recorded in the cluster's events, if recent."""
        since = now - 2 * self.warning_seconds - 3600
        events = self.backend.cluster_events(cluster.owner, cluster.name, since)
        times = [e.time for e in events if e.reason == warning_reason(action) and e.time <= now]
        return max(times, default=None)

    def _act(self, cluster: Cluster, decision: Decision) -> bool:
        owner, name = cluster.owner, cluster.name
        try:
            # A keep-alive may have come since the cluster was read: then decide again next pass.
            if self.backend.get_cluster(owner, name).last_active_at != cluster.last_active_at:
                return False
            if decision.action == "suspend":
                self.backend.suspend_cluster(owner, name, f"Suspending: {decision.reason}")
            else:
                self.backend.record_event(
                    owner, name, "LifecycleDelete", f"Deleting: {decision.reason}", Severity.WARNING
                )
                self.backend.delete_cluster(owner, name)
        except NotFoundError:
            return False  # deleted meanwhile
        log.info("eksray: %s cluster %s/%s: %s", decision.action, owner, name, decision.reason)
        self.notify(Notice(owner, name, decision.action, decision.reason))
        return True
