"""A fake ClusterBackend whose clusters are JSON files: no Ray, no Kubernetes.

Unlike ``tests.memory_backend`` it keeps its state on disk under ``state_dir``, so a
server, the kernels it starts and the CLI all see the same clusters, which is what the
magics, CLI and kernel tests need. A cluster is "starting" for ``start_seconds`` after
creation, then "ready" (or "failed": ``fail`` set, or the label ``fake-fail`` in its spec).
"""

from __future__ import annotations

import copy
import socket
import time
from pathlib import Path
from typing import Any

from traitlets import Bool, Float, Unicode

from eksray_jupyter.core.backend import ClusterBackend
from eksray_jupyter.core.errors import ConflictError, LimitExceededError, NotFoundError, NotReadyError
from eksray_jupyter.core.models import (
    Cluster,
    ClusterEvent,
    Milestone,
    Node,
    Phase,
    Severity,
    WorkerGroupStatus,
)
from eksray_jupyter.core.ray_auth import new_token, write_token_file
from eksray_jupyter.core.state_files import read_json, write_json_atomic


def closed_port() -> int:
    """A port nothing listens on (so a recorded address fails the liveness probe)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeBackend(ClusterBackend):
    name = "fake"

    start_seconds = Float(0.0, help="How long a new cluster stays 'starting'.").tag(config=True)
    fail = Bool(False, help="Every cluster fails once it has started.").tag(config=True)
    gcs_address = Unicode("", help="Driver address of every cluster; default: a closed local port.").tag(
        config=True
    )

    ray_token_auth = Bool(False, help="Clusters demand a Ray token (kept in a 0600 file).").tag(config=True)

    @property
    def root(self) -> Path:
        return Path(self.state_dir) / "fake"

    def ray_auth_token_file(self, owner: str, name: str) -> Path | None:
        self._record(owner, name)
        if not self.ray_token_auth:
            return None
        path = self.root / owner / f"{name}.token"
        if not path.exists():
            write_token_file(path, new_token())
        return path

    def _path(self, owner: str, name: str) -> Path:
        return self.root / owner / f"{name}.json"

    def _record(self, owner: str, name: str) -> dict[str, Any]:
        record = read_json(self._path(owner, name)) if "/" not in name else None
        if record is None:
            raise NotFoundError(f"No cluster named {name!r}. List your clusters to see their names.")
        return record

    def _save(self, owner: str, record: dict[str, Any]) -> None:
        path = self._path(owner, record["name"])
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)

    def _event(self, record: dict[str, Any], reason: str, message: str) -> None:
        record["events"].append(
            {"time": time.time(), "id": f"f-{time.time_ns()}", "reason": reason, "message": message}
        )

    def _phase(self, record: dict[str, Any]) -> tuple[Phase, str | None]:
        if record.get("suspendedAt"):
            return Phase.SUSPENDED, "Suspended: no Ray node runs; resume to use it"
        if time.time() - record.get("resumedAt", record["createdAt"]) < self.start_seconds:
            return Phase.STARTING, None
        if self.fail or "fake-fail" in (record["spec"].get("labels") or {}):
            return Phase.FAILED, "The head node's ray process exited (fake failure)"
        return Phase.READY, None

    def _cluster(self, owner: str, record: dict[str, Any]) -> Cluster:
        phase, reason = self._phase(record)
        up = phase == Phase.READY
        spec = record["spec"]
        groups = [
            WorkerGroupStatus(
                g["groupName"],
                g["replicas"],
                g["replicas"],
                g["replicas"] if up else 0,
                g["minReplicas"],
                g["maxReplicas"],
                {"CPU": g.get("cpu", 1), **(g.get("resources") or {})},
            )
            for g in spec.get("workerGroups", [])
        ]
        nodes = [Node("head", "head", "head", "alive" if up else "pending", {"CPU": 1})]
        for g in spec.get("workerGroups", []):
            nodes += [
                Node(f"{g['groupName']}-{i}", g["groupName"], "worker", "alive", {"CPU": 1})
                for i in range(g["replicas"] if up else 0)
            ]
        return Cluster(
            name=record["name"],
            backend=self.name,
            owner=owner,
            phase=phase,
            spec=copy.deepcopy(spec),
            created_at=record["createdAt"],
            reason=reason,
            worker_groups=groups,
            nodes=nodes,
            dashboard_available=up,
            address=None if phase == Phase.SUSPENDED else record["address"],
            last_active_at=record.get("lastActiveAt"),
            suspended_at=record.get("suspendedAt"),
            timeline=[Milestone("head-started", record["createdAt"], "Head process started")]
            + ([Milestone("ready", record["createdAt"] + 1.5, "Ready")] if up else []),
        )

    def create_cluster(self, owner: str, spec: dict[str, Any]) -> Cluster:
        name = spec["name"]
        if self._path(owner, name).exists():
            raise ConflictError(
                f"A cluster named {name!r} already exists. Pick another name or delete it first."
            )
        mine = list((self.root / owner).glob("*.json"))
        if len(mine) >= self.max_clusters_per_owner:
            raise LimitExceededError(
                f"You already have {len(mine)} clusters, the most allowed. Delete one first."
            )
        record = {
            "name": name,
            "spec": copy.deepcopy(spec),
            "createdAt": time.time(),
            "address": self.gcs_address or f"127.0.0.1:{closed_port()}",
            "events": [],
        }
        self._event(record, "Created", f"Cluster {name} created")
        self._save(owner, record)
        return self._cluster(owner, record)

    def list_clusters(self, owner: str) -> list[Cluster]:
        records = (read_json(p) for p in sorted((self.root / owner).glob("*.json")))
        return [self._cluster(owner, r) for r in records if r is not None]

    def get_cluster(self, owner: str, name: str) -> Cluster:
        return self._cluster(owner, self._record(owner, name))

    def scale_cluster(self, owner: str, name: str, worker_groups: list[dict[str, Any]]) -> Cluster:
        record = self._record(owner, name)
        record["spec"]["workerGroups"] = copy.deepcopy(worker_groups)
        self._event(record, "Scaled", f"Scaled {name}")
        self._save(owner, record)
        return self._cluster(owner, record)

    def suspend_cluster(self, owner: str, name: str, reason: str | None = None) -> Cluster:
        record = self._record(owner, name)
        if not record.get("suspendedAt"):
            record["suspendedAt"] = time.time()
            self._event(record, "Suspending", reason or f"Suspending {name}")
            self._save(owner, record)
        return self._cluster(owner, record)

    def resume_cluster(self, owner: str, name: str) -> Cluster:
        record = self._record(owner, name)
        if record.pop("suspendedAt", None):
            record["resumedAt"] = record["lastActiveAt"] = time.time()
            self._event(record, "Resumed", f"Cluster {name} resumed")
            self._save(owner, record)
        return self._cluster(owner, record)

    def mark_active(self, owner: str, name: str, at: float, why: str) -> None:
        record = self._record(owner, name)
        if (record.get("lastActiveAt") or 0) < at:
            record["lastActiveAt"] = at
            self._save(owner, record)

    def record_event(self, owner: str, name: str, reason: str, message: str, severity: Severity) -> None:
        record = self._record(owner, name)
        self._event(record, reason, message)
        self._save(owner, record)

    def delete_cluster(self, owner: str, name: str) -> None:
        self._record(owner, name)
        self._path(owner, name).unlink()

    def cluster_events(self, owner: str, name: str, since: float | None = None) -> list[ClusterEvent]:
        return [
            ClusterEvent(e["time"], "backend", Severity.INFO, e["message"], e["id"], e["reason"])
            for e in self._record(owner, name)["events"]
            if since is None or e["time"] > since
        ]

    def dashboard_address(self, owner: str, name: str) -> str:
        if self._phase(self._record(owner, name))[0] != Phase.READY:
            raise NotReadyError(
                f"The Ray dashboard of {name!r} is still starting; try again in a few seconds."
            )
        return "http://127.0.0.1:8265"

    def connection_address(self, owner: str, name: str) -> str:
        return self._record(owner, name)["address"]

    def add_event(self, owner: str, name: str, message: str) -> None:
        """For tests: an event appearing while someone follows the events."""
        record = self._record(owner, name)
        self._event(record, "Test", message)
        self._save(owner, record)


def make_service(state_dir: Path, owner: str = "alice", **backend: Any) -> Any:
    """A ClusterService on a FakeBackend in ``state_dir`` (``backend``: FakeBackend settings)."""
    from traitlets.config import Config

    from eksray_jupyter.core.config import EKSRay
    from eksray_jupyter.core.service import ClusterService

    config = Config(
        {
            "EKSRay": {"state_dir": str(state_dir), "backend": "tests.fakes.FakeBackend", "owner": owner},
            "FakeBackend": backend,
        }
    )
    return ClusterService(EKSRay(config=config))


KERNEL_ENV = ("RAY_ADDRESS", "EKSRAY_CLUSTER", "EKSRAY_CONFIG", "JUPYTER_SERVER_URL")


def isolate_env(monkeypatch: Any, names: tuple[str, ...] = KERNEL_ENV) -> None:
    """Unset ``names`` for the test and restore them after, even if the code under test sets them."""
    for name in names:
        monkeypatch.setenv(name, "")  # recorded, so monkeypatch restores the original afterwards
        monkeypatch.delenv(name)
