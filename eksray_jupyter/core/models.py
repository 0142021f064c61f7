"""What backends report: the same shapes for the local and the KubeRay backend.

``to_dict`` gives the JSON the REST API, the magics and the CLI show (camelCase,
mirrored by ``src/models.ts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any


class Phase(str, Enum):
    """Where a cluster is in its life."""

    PENDING = "pending"  # accepted, nothing started yet
    STARTING = "starting"  # head or first workers coming up
    READY = "ready"  # head up and every group has its desired workers
    SCALING = "scaling"  # was ready; a group is adding or removing workers
    FAILED = "failed"  # the head is gone or cannot start; see ``reason``
    STOPPING = "stopping"  # being deleted
    SUSPENDING = "suspending"  # its Ray nodes are being stopped; the cluster is kept
    SUSPENDED = "suspended"  # no Ray node runs (costs nothing); spec, state and events kept


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return (
        datetime.fromtimestamp(timestamp, tz=timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


@dataclass
class Node:
    id: str
    group: str
    kind: str  # "head" | "worker"
    state: str  # "pending" | "alive" | "dead"
    resources: dict[str, float] = field(default_factory=dict)
    address: str | None = None
    started_at: float | None = None
    # Fraction 0..1 per resource where the backend can tell (Ray's per-node usage).
    utilization: dict[str, float] = field(default_factory=dict)
    # What Ray has in use of ``resources`` (same names and units; the object store in bytes).
    used: dict[str, float] = field(default_factory=dict)
    # Kubernetes: the node (machine) the pod runs on and its instance type, where known.
    host: str | None = None
    instance_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "kind": self.kind,
            "state": self.state,
            "resources": self.resources,
            "address": self.address,
            "startedAt": iso(self.started_at),
            "utilization": self.utilization,
            "used": self.used,
            "host": self.host,
            "instanceType": self.instance_type,
        }


@dataclass(frozen=True)
class Milestone:
    """One step of a cluster's start-up, in plain words: ``rc status --timeline`` and the panel.

    ``step`` is a stable name (``head-started``, ``gcs-up``, ``dashboard-up``, ``worker-launched``,
    ``node-registered``, ``ready`` on the local backend; ``pod-created``, ``pod-scheduled``,
    ``not-scheduled``, ``node-provisioning``, ``image-pulled``, ``container-started``,
    ``node-registered``, ``ready`` on kuberay); ``seconds`` how long the step itself took, where
    the source says (an image pull).
    """

    step: str
    at: float
    message: str
    node: str | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "at": iso(self.at),
            "message": self.message,
            "node": self.node,
            "seconds": self.seconds,
        }


@dataclass
class WorkerGroupStatus:
    group_name: str
    replicas: int  # what the spec asks for
    desired: int  # what the backend (or the autoscaler) is currently bringing up
    ready: int  # workers alive and registered with Ray
    min_replicas: int
    max_replicas: int
    resources: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "groupName": self.group_name,
            "replicas": self.replicas,
            "desired": self.desired,
            "ready": self.ready,
            "minReplicas": self.min_replicas,
            "maxReplicas": self.max_replicas,
            "resources": self.resources,
        }


@dataclass
class Cluster:
    name: str
    backend: str
    owner: str
    phase: Phase
    spec: dict[str, Any]
    created_at: float
    reason: str | None = None
    worker_groups: list[WorkerGroupStatus] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    # Where the backend's dashboard is; the server turns it into a proxied URL.
    dashboard_available: bool = False
    # The address a Ray driver (a kernel) should pass to ray.init().
    address: str | None = None
    namespace: str | None = None
    read_only: bool = False
    # The latest moment something used it (Ray work, a busy kernel, a keep-alive, a resume), as
    # persisted by the backend; idle clusters are suspended or deleted from it (core/lifecycle.py).
    last_active_at: float | None = None
    suspended_at: float | None = None
    # The latest start's steps, oldest first (empty where the backend cannot tell).
    timeline: list[Milestone] = field(default_factory=list)

    def to_dict(self, dashboard_url: str | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "owner": self.owner,
            "namespace": self.namespace,
            "phase": self.phase.value,
            "reason": self.reason,
            "createdAt": iso(self.created_at),
            "spec": self.spec,
            "workerGroups": [g.to_dict() for g in self.worker_groups],
            "nodes": [n.to_dict() for n in self.nodes],
            "dashboardUrl": dashboard_url if self.dashboard_available else None,
            "address": self.address,
            "readOnly": self.read_only,
            "lastActiveAt": iso(self.last_active_at),
            "suspendedAt": iso(self.suspended_at),
            "timeline": [m.to_dict() for m in self.timeline],
        }


@dataclass(frozen=True)
class ClusterEvent:
    time: float
    source: str  # "backend" | "autoscaler" | "kubernetes" | "ray"
    severity: Severity
    message: str
    id: str
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": iso(self.time),
            "timestamp": self.time,
            "source": self.source,
            "severity": self.severity.value,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True)
class CacheStatus:
    """Whether what a backend answers from its cache is current.

    A backend that reads live state (local) always is; the kuberay backend's cache is not while
    a watch is interrupted or re-listing (``since``: when it stopped being current).
    """

    current: bool = True
    since: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"current": self.current, "since": iso(self.since), "reason": self.reason}


@dataclass(frozen=True)
class Change:
    """A state change pushed to observers: a cluster's new state, a new event, or a deletion."""

    kind: str  # "cluster" | "event" | "deleted"
    owner: str
    name: str
    cluster: Cluster | None = None
    event: ClusterEvent | None = None
