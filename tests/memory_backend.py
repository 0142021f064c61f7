"""An in-memory ClusterBackend for fast handler tests (no Ray, no Kubernetes).

It honours the interface's contract (owners, 404/409, limits, events, notifications)
so the faces can be tested without starting processes. Clusters are "ready" at once.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from eksray_jupyter.core.backend import ClusterBackend
from eksray_jupyter.core.errors import ConflictError, LimitExceededError, NotFoundError, NotReadyError
from eksray_jupyter.core.models import Change, Cluster, ClusterEvent, Node, Phase, Severity, WorkerGroupStatus


def _ray_resources(shape: dict[str, Any]) -> dict[str, float]:
    """What Ray would schedule on a node of ``shape`` (Ray's names; memory in bytes)."""
    return {"CPU": float(shape.get("cpu", 1)), "memory": float(shape.get("memory") or 0) * 1024**3}


class MemoryBackend(ClusterBackend):
    name = "memory"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clusters: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: dict[tuple[str, str], list[ClusterEvent]] = {}
        self.dashboards: dict[tuple[str, str], str] = {}
        self.dashboard_headers: dict[str, str] = {}

    def _event(self, key: tuple[str, str], message: str) -> None:
        event = ClusterEvent(time.time(), "backend", Severity.INFO, message, f"m-{time.time_ns()}")
        self.events.setdefault(key, []).append(event)
        self.notify(Change("event", key[0], key[1], event=event))

    def _cluster(self, owner: str, name: str) -> Cluster:
        try:
            record = self.clusters[(owner, name)]
        except KeyError:
            raise NotFoundError(f"No cluster named {name!r}.") from None
        spec = record["spec"]
        groups = [
            WorkerGroupStatus(
                g["groupName"],
                g["replicas"],
                g["replicas"],
                g["replicas"],
                g["minReplicas"],
                g["maxReplicas"],
            )
            for g in spec.get("workerGroups", [])
        ]
        nodes = [Node("head", "head", "head", "alive", _ray_resources(spec.get("head") or {}))]
        for g in spec.get("workerGroups", []):
            nodes += [
                Node(f"{g['groupName']}-{i}", g["groupName"], "worker", "alive", _ray_resources(g))
                for i in range(g["replicas"])
            ]
        return Cluster(
            name=name,
            backend=self.name,
            owner=owner,
            phase=Phase.READY,
            spec=copy.deepcopy(spec),
            created_at=record["createdAt"],
            worker_groups=groups,
            nodes=nodes,
            dashboard_available=(owner, name) in self.dashboards,
            address="127.0.0.1:6379",
            last_active_at=record.get("lastActiveAt"),
        )

    def create_cluster(self, owner: str, spec: dict[str, Any]) -> Cluster:
        key = (owner, spec["name"])
        if any(name == spec["name"] for _, name in self.clusters):
            raise ConflictError(f"A cluster named {spec['name']!r} already exists.")
        if sum(1 for o, _ in self.clusters if o == owner) >= self.max_clusters_per_owner:
            raise LimitExceededError("Too many clusters.")
        self.clusters[key] = {"spec": copy.deepcopy(spec), "createdAt": time.time()}
        self._event(key, f"Cluster {spec['name']} created")
        cluster = self._cluster(owner, spec["name"])
        self.notify(Change("cluster", owner, spec["name"], cluster=cluster))
        return cluster

    def list_clusters(self, owner: str) -> list[Cluster]:
        return [self._cluster(o, n) for o, n in sorted(self.clusters) if o == owner]

    def get_cluster(self, owner: str, name: str) -> Cluster:
        return self._cluster(owner, name)

    def scale_cluster(self, owner: str, name: str, worker_groups: list[dict[str, Any]]) -> Cluster:
        self._cluster(owner, name)
        self.clusters[(owner, name)]["spec"]["workerGroups"] = copy.deepcopy(worker_groups)
        self._event((owner, name), "Scaled")
        cluster = self._cluster(owner, name)
        self.notify(Change("cluster", owner, name, cluster=cluster))
        return cluster

    def delete_cluster(self, owner: str, name: str) -> None:
        self._cluster(owner, name)
        del self.clusters[(owner, name)]
        self.events.pop((owner, name), None)
        self.notify(Change("deleted", owner, name))

    def mark_active(self, owner: str, name: str, at: float, why: str) -> None:
        self._cluster(owner, name)
        record = self.clusters[(owner, name)]
        record["lastActiveAt"] = max(at, record.get("lastActiveAt") or 0)

    def record_event(self, owner: str, name: str, reason: str, message: str, severity: Severity) -> None:
        self._cluster(owner, name)
        self._event((owner, name), message)

    def cluster_events(self, owner: str, name: str, since: float | None = None) -> list[ClusterEvent]:
        self._cluster(owner, name)
        return [e for e in self.events.get((owner, name), []) if since is None or e.time > since]

    def dashboard_address(self, owner: str, name: str) -> str:
        self._cluster(owner, name)
        if (owner, name) not in self.dashboards:
            raise NotReadyError(f"The Ray dashboard of {name!r} is still starting.")
        return self.dashboards[(owner, name)]

    def dashboard_request_headers(self, owner: str, name: str) -> dict[str, str]:
        return dict(self.dashboard_headers)

    def connection_address(self, owner: str, name: str) -> str:
        return self._cluster(owner, name).address or ""
