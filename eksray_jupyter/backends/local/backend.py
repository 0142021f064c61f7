"""The local backend's ClusterBackend: real Ray clusters made of processes on this machine.

A cluster is a head (``ray start --head --block``) plus worker nodes (``ray start
--address=... --block``), each its own process group. Groups with autoscaling are
managed by Ray's own autoscaler (v1) through :mod:`.provider`; the backend starts the
initial replicas and applies manual scaling through the same node list.

State lives in :mod:`.state` on disk; status is derived on every read from that
state, the liveness of the recorded processes and the dashboard's node table, so it is
true after a server restart and the same in every process (server, CLI, kernel).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from traitlets import Float, Int, Unicode, default

from ...core.backend import ClusterBackend
from ...core.errors import (
    ConflictError,
    FieldError,
    InvalidRequestError,
    LimitExceededError,
    NotFoundError,
    NotReadyError,
)
from ...core.models import Change, Cluster, ClusterEvent, Node, Phase, Severity, WorkerGroupStatus
from ...core.state_files import write_text_atomic
from . import dashboard, processes
from .processes import HEAD_NODE_ID, HEAD_NODE_TYPE
from .state import ClusterDir

MIB = 1024**2


class LocalBackend(ClusterBackend):
    """Ray clusters as processes on this machine; no Kubernetes needed."""

    name = "local"

    max_local_nodes = Int(
        8,
        help="Machine-wide cap on Ray nodes (heads + the most workers each cluster may scale to). "
        "Protects a laptop from an autoscaler that would start more than it can hold.",
    ).tag(config=True)

    object_store_memory_mb = Int(
        256,
        help="Default object store size of each local node, in MiB (rayStartParams may override).",
    ).tag(config=True)

    temp_root = Unicode(
        help="Where Ray's per-cluster temp dirs go. Kept short: Ray's unix socket paths must fit 107 bytes.",
    ).tag(config=True)

    @default("temp_root")
    def _default_temp_root(self) -> str:
        return f"/tmp/eksray-{os.getuid()}"

    max_head_restarts = Int(
        2, help="How many times a head that dies before the cluster was first ready is started again."
    ).tag(config=True)

    max_worker_restarts = Int(
        10, help="How many times workers that exit on their own are replaced before giving up."
    ).tag(config=True)

    observe_interval = Float(
        0.5, help="Seconds between two looks at the clusters while someone observes."
    ).tag(config=True)
    start_timeout = Float(180.0, help="Seconds a head may take to answer before it is reported failed.").tag(
        config=True
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(self.state_dir) / "local" / "clusters"
        self.root.mkdir(parents=True, exist_ok=True)
        self._create_lock_file = self.root.parent / ".create.lock"
        self._observer: threading.Thread | None = None
        self._stop = threading.Event()
        self._ray_start_flags: frozenset[str] | None = None
        self._usage_cache: dict[str, tuple[float, dict[str, dict[str, float]]]] = {}

    # --- helpers ----------------------------------------------------------------------------

    def limits(self) -> dict[str, Any]:
        return {
            "maxLocalNodes": self.max_local_nodes,
            "maxClustersPerOwner": self.max_clusters_per_owner,
        }

    def _dir(self, name: str) -> ClusterDir:
        return ClusterDir(self.root / name)

    def _record(self, owner: str, name: str) -> tuple[ClusterDir, dict[str, Any]]:
        cdir = self._dir(name) if "/" not in name and name not in (".", "..") else None
        record = cdir.read() if cdir else None
        if cdir is None or record is None or record.get("owner") != owner:
            raise NotFoundError(f"No cluster named {name!r}. List your clusters to see their names.")
        return cdir, record

    def _all_records(self) -> list[tuple[ClusterDir, dict[str, Any]]]:
        out = []
        for path in sorted(self.root.iterdir()):
            cdir = ClusterDir(path)
            record = cdir.read()
            if record is not None:
                out.append((cdir, record))
        return out

    @staticmethod
    def _potential_nodes(spec: dict[str, Any]) -> int:
        return 1 + sum(max(g["maxReplicas"], g["replicas"]) for g in spec.get("workerGroups", []))

    def _known_ray_start_flags(self) -> frozenset[str]:
        if self._ray_start_flags is None:
            from ray.scripts.scripts import start  # lazy: ray is heavy and only needed here

            names = set()
            for param in start.params:
                names.update(opt.lstrip("-") for opt in param.opts if opt.startswith("--"))
            self._ray_start_flags = frozenset(names)
        return self._ray_start_flags

    def _check_start_params(self, spec: dict[str, Any]) -> None:
        shapes_with_params = [spec.get("head") or {}, *spec.get("workerGroups", [])]
        if not any(shape.get("rayStartParams") for shape in shapes_with_params):
            return  # nothing to check: do not pay for importing ray
        known = self._known_ray_start_flags()
        errors = []
        shapes = [("head", spec.get("head") or {})] + [
            (f"workerGroups[{i}]", g) for i, g in enumerate(spec.get("workerGroups", []))
        ]
        for where, shape in shapes:
            for flag in shape.get("rayStartParams") or {}:
                path = f"{where}.rayStartParams.{flag}"
                if flag in processes.RESERVED_FLAGS or (
                    where != "head" and flag in processes.HEAD_PORT_FLAGS
                ):
                    errors.append(
                        FieldError(
                            path,
                            "is set by eksray; remove it (use the cpu/gpu/memory/resources fields)",
                        )
                    )
                elif flag not in known:
                    errors.append(FieldError(path, "is not a `ray start` option"))
        if errors:
            raise InvalidRequestError("Invalid cluster spec", errors)

    # --- create -----------------------------------------------------------------------------

    def create_cluster(self, owner: str, spec: dict[str, Any]) -> Cluster:
        self._check_start_params(spec)
        name = spec["name"]
        head_params = (spec.get("head") or {}).get("rayStartParams") or {}
        with open(self._create_lock_file, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            records = self._all_records()
            if any(r["name"] == name for _, r in records):
                raise ConflictError(
                    f"A cluster named {name!r} already exists. Pick another name or delete it first."
                )
            mine = [r for _, r in records if r.get("owner") == owner]
            if len(mine) >= self.max_clusters_per_owner:
                raise LimitExceededError(
                    f"You already have {len(mine)} clusters, the most allowed "
                    f"(c.LocalBackend.max_clusters_per_owner = {self.max_clusters_per_owner}). Delete one first."
                )
            in_use = sum(self._potential_nodes(r["spec"]) for _, r in records if r.get("status") == "running")
            wanted = self._potential_nodes(spec)
            if in_use + wanted > self.max_local_nodes:
                raise LimitExceededError(
                    f"This cluster may grow to {wanted} Ray nodes (head + maxReplicas of each group) and "
                    f"running clusters may use {in_use}; the limit on this machine is {self.max_local_nodes} "
                    "(c.LocalBackend.max_local_nodes). Lower maxReplicas or delete a cluster."
                )
            ports = {}
            for key, flag in (
                ("gcs", "port"),
                ("dashboard", "dashboard-port"),
                ("client", "ray-client-server-port"),
            ):
                if flag in head_params:
                    port = int(head_params[flag])
                    if processes.port_in_use(port):
                        raise ConflictError(
                            f"Port {port} (head.rayStartParams.{flag}) is already in use on this machine. "
                            "Choose another port or remove it to let eksray pick a free one."
                        )
                    ports[key] = port
                else:
                    ports[key] = processes.free_port()
            cdir = self._dir(name)
            cdir.root.mkdir(parents=True)
            short = hashlib.sha1(f"{name}{time.time_ns()}".encode()).hexdigest()[:8]
            record = {
                "name": name,
                "owner": owner,
                "spec": spec,
                "createdAt": time.time(),
                "status": "running",
                "ports": ports,
                "tempDir": f"{self.temp_root}/{short}",
                "objectStoreBytes": self.object_store_memory_mb * MIB,
                "head": None,
            }
            cdir.write(record)
        try:
            self._write_autoscaler_config(cdir, record)
            self._event(cdir, "Created", f"Cluster {name} created; starting the head node")
            self._launch(cdir, record)
        except Exception:
            # Nothing half-made: undo what was started.
            self._teardown(cdir, cdir.read() or record)
            raise
        return self.get_cluster(owner, name)

    def _launch(self, cdir: ClusterDir, record: dict[str, Any]) -> None:
        """Start the head, then (detached) the initial workers once its GCS answers."""
        cdir.update(head=self._start_head(cdir, record), bootstrapped=False, startedAt=time.time())
        processes.spawn(
            [sys.executable, "-m", "eksray_jupyter.backends.local.bootstrap", str(cdir.root)],
            processes.ray_env(),
            cdir.logs / "bootstrap.log",
        )

    def _stop_processes(self, cdir: ClusterDir, record: dict[str, Any]) -> None:
        """Stop every process of the cluster (head, its autoscaler, workers) at once.

        All at once: a half-stopped head could relaunch workers.
        """
        refs = [record.get("head")] + [n.get("process") for n in cdir.read_nodes().values()]
        marker = record.get("tempDir") or str(cdir.root)
        for _attempt in range(3):
            found = processes.cluster_processes([r for r in refs if r], marker)
            if not found:
                break
            processes.terminate(found, grace=5.0)

    def _will_retry_start(self, record: dict[str, Any]) -> bool:
        return (
            record.get("status") == "running"
            and record.get("readyAt") is None
            and record.get("headRestarts", 0) < self.max_head_restarts
        )

    def _retry_failed_start(self, cdir: ClusterDir, record: dict[str, Any]) -> dict[str, Any]:
        """Start the head again when it died before the cluster was ever ready.

        On a busy laptop `ray start --head` gives up after 30 s ("The current node timed out
        during startup"); a bounded number of clean retries hides that from the user.
        """
        with cdir.locked():
            fresh = cdir.read() or record
            if processes.is_alive(fresh.get("head")) or not self._will_retry_start(fresh):
                return fresh
            attempt = fresh.get("headRestarts", 0) + 1
            fresh["headRestarts"] = attempt
            cdir.write(fresh)
        reason = processes.log_tail(cdir.logs / "head.log")
        self._event(
            cdir,
            "HeadRestarted",
            f"The head node failed to start ({reason}); starting it again ({attempt}/{self.max_head_restarts})",
            Severity.WARNING,
        )
        self._stop_processes(cdir, fresh)
        cdir.write_nodes({})
        shutil.rmtree(fresh["tempDir"], ignore_errors=True)
        (cdir.logs / "head.log").rename(cdir.logs / f"head.{attempt}.log")
        self._launch(cdir, fresh)
        return cdir.read() or fresh

    def _start_head(self, cdir: ClusterDir, record: dict[str, Any]) -> processes.ProcessRef:
        spec = record["spec"]
        head = dict(spec.get("head") or {})
        params = {
            k: v for k, v in (head.get("rayStartParams") or {}).items() if k not in processes.HEAD_PORT_FLAGS
        }
        head["rayStartParams"] = params
        ports = record["ports"]
        argv = [
            *processes.ray_command(),
            "start",
            "--head",
            f"--port={ports['gcs']}",
            f"--dashboard-port={ports['dashboard']}",
            "--dashboard-host=127.0.0.1",
            f"--ray-client-server-port={ports['client']}",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={record['tempDir']}",
            "--dashboard-agent-listen-port=0",
            "--disable-usage-stats",
            "--block",
            *processes.node_args(head, record["objectStoreBytes"]),
        ]
        extra_env = {}
        if self._autoscaling(spec):
            argv.append(f"--autoscaling-config={cdir.autoscaler_file}")
            # RAY_FAKE_CLUSTER makes the head adopt HEAD_NODE_ID, which the provider reports as head.
            extra_env = {
                "RAY_FAKE_CLUSTER": "1",
                "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                # A busy laptop can take more than the default 30 s to start a raylet; do not
                # let the autoscaler give up on a node that is still starting.
                "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "120",
            }
        return processes.spawn(argv, processes.ray_env(extra_env), cdir.logs / "head.log")

    @staticmethod
    def _autoscaling(spec: dict[str, Any]) -> bool:
        return bool((spec.get("autoscaling") or {}).get("enabled")) and bool(spec.get("workerGroups"))

    def _write_autoscaler_config(self, cdir: ClusterDir, record: dict[str, Any]) -> None:
        spec = record["spec"]
        if not self._autoscaling(spec):
            return
        autoscaling = spec.get("autoscaling") or {}
        head = spec.get("head") or {}
        node_types: dict[str, Any] = {
            HEAD_NODE_TYPE: {
                "resources": {
                    "CPU": head.get("cpu", 1),
                    "GPU": head.get("gpu", 0),
                    **(head.get("resources") or {}),
                },
                "node_config": {},
                "max_workers": 0,
            }
        }
        for g in spec["workerGroups"]:
            resources = {
                "CPU": g.get("cpu", 1),
                "GPU": g.get("gpu", 0),
                **(g.get("resources") or {}),
            }
            if g.get("memory"):
                resources["memory"] = int(float(g["memory"]) * 1024**3)
            node_types[g["groupName"]] = {
                "resources": resources,
                "node_config": {},
                "min_workers": g["minReplicas"],
                "max_workers": g["maxReplicas"],
            }
        config = {
            "cluster_name": record["name"],
            "max_workers": sum(g["maxReplicas"] for g in spec["workerGroups"]),
            # KubeRay: Default/Aggressive = no rate limit, Conservative = at most as many pending as running.
            "upscaling_speed": 1.0 if autoscaling.get("upscalingMode") == "Conservative" else 1000.0,
            "idle_timeout_minutes": autoscaling.get("idleTimeoutSeconds", 60) / 60.0,
            "docker": {},
            "provider": {
                "type": "external",
                "module": "eksray_jupyter.backends.local.provider.LocalNodeProvider",
                "cluster_dir": str(cdir.root),
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "auth": {"ssh_user": "ray"},
            "available_node_types": node_types,
            "head_node_type": HEAD_NODE_TYPE,
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
        }
        # Rewritten atomically: the running autoscaler re-reads it about every second.
        write_text_atomic(cdir.autoscaler_file, yaml.safe_dump(config, sort_keys=False))

    # --- events -----------------------------------------------------------------------------

    def _event(self, cdir: ClusterDir, reason: str, message: str, severity: Severity = Severity.INFO) -> None:
        cdir.append_event(
            {
                "id": f"b-{time.time_ns()}",
                "time": time.time(),
                "source": "backend",
                "severity": severity.value,
                "reason": reason,
                "message": message,
            }
        )

    def _autoscaler_events(self, record: dict[str, Any]) -> list[ClusterEvent]:
        events: dict[str, ClusterEvent] = {}
        temp = Path(record["tempDir"])
        # Every node's log monitor may copy the autoscaler's lines: keep one per event id.
        for path in temp.glob("session_*/logs/events/event_AUTOSCALER*.log"):
            with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
                for line in f:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        raw = json.loads(line)
                        severity = {"WARNING": Severity.WARNING, "ERROR": Severity.ERROR}.get(
                            raw.get("severity", "INFO"), Severity.INFO
                        )
                        event_id = str(raw.get("event_id"))
                        events[event_id] = ClusterEvent(
                            time=float(raw["timestamp"]),
                            source="autoscaler",
                            severity=severity,
                            message=raw["message"],
                            id=f"a-{event_id}",
                        )
        return list(events.values())

    @staticmethod
    def _node_events(nodes: list[dict[str, Any]], groups: dict[str, str]) -> list[ClusterEvent]:
        events = []
        for n in nodes:
            node_id = n.get("node_id", "")
            if node_id == HEAD_NODE_ID:
                continue
            group = groups.get(node_id, "unknown")
            if n.get("start_time_ms"):
                events.append(
                    ClusterEvent(
                        time=n["start_time_ms"] / 1000,
                        source="ray",
                        severity=Severity.INFO,
                        reason="NodeJoined",
                        message=f"Worker node {node_id[:8]} of group {group} joined the cluster",
                        id=f"n-{node_id}-up",
                    )
                )
            if n.get("state") == "DEAD" and n.get("end_time_ms"):
                why = n.get("state_message") or n.get("death_reason_message") or n.get("death_reason") or ""
                events.append(
                    ClusterEvent(
                        time=n["end_time_ms"] / 1000,
                        source="ray",
                        severity=Severity.INFO,
                        reason="NodeLeft",
                        message=f"Worker node {node_id[:8]} of group {group} left the cluster"
                        + (f": {why}" if why else ""),
                        id=f"n-{node_id}-down",
                    )
                )
        return events

    def cluster_events(self, owner: str, name: str, since: float | None = None) -> list[ClusterEvent]:
        cdir, record = self._record(owner, name)
        return self._events_of(cdir, record, self._ray_nodes(record), since)

    def _events_of(
        self,
        cdir: ClusterDir,
        record: dict[str, Any],
        ray_nodes: list[dict[str, Any]] | None,
        since: float | None,
    ) -> list[ClusterEvent]:
        events = [
            ClusterEvent(
                time=e["time"],
                source=e["source"],
                severity=Severity(e["severity"]),
                message=e["message"],
                id=e["id"],
                reason=e.get("reason"),
            )
            for e in cdir.read_events()
        ]
        events += self._autoscaler_events(record)
        if ray_nodes:
            groups = {nid: n["group"] for nid, n in cdir.read_nodes().items()}
            groups.update(record.get("nodeGroups", {}))
            events += self._node_events(ray_nodes, groups)
        events.sort(key=lambda e: (e.time, e.id))
        if since is not None:
            events = [e for e in events if e.time > since]
        return events

    # --- status -----------------------------------------------------------------------------

    def _dashboard_url(self, record: dict[str, Any]) -> str:
        return f"http://127.0.0.1:{record['ports']['dashboard']}"

    def _ray_nodes(self, record: dict[str, Any]) -> list[dict[str, Any]] | None:
        if record.get("status") != "running" or not processes.is_alive(record.get("head")):
            return None
        try:
            return dashboard.list_nodes(self._dashboard_url(record))
        except dashboard.DashboardUnavailable:
            return None

    def _usage(self, record: dict[str, Any]) -> dict[str, dict[str, float]]:
        """Per-node utilisation, cached for a second: many readers, one dashboard call."""
        key = record["name"]
        cached = self._usage_cache.get(key)
        if cached and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        usage = dashboard.usage_by_node(self._dashboard_url(record))
        self._usage_cache[key] = (time.monotonic(), usage)
        return usage

    def _head_failure(self, cdir: ClusterDir) -> str:
        return f"The head node's ray process exited ({processes.log_tail(cdir.logs / 'head.log')})"

    def _build(
        self, cdir: ClusterDir, record: dict[str, Any], ray_nodes: list[dict[str, Any]] | None
    ) -> Cluster:
        spec = record["spec"]
        status = record.get("status")
        head_alive = processes.is_alive(record.get("head"))
        workers = processes.live_workers(cdir)
        alive_ids = {n["node_id"] for n in ray_nodes or [] if n.get("state") == "ALIVE"}
        # Utilisation is only worth its (costly) dashboard call once the cluster is up.
        usage = self._usage(record) if ray_nodes and record.get("readyAt") else {}
        reason = None
        nodes: list[Node] = []
        by_id = {n.get("node_id"): n for n in ray_nodes or []}
        head_info = by_id.get(HEAD_NODE_ID) or next(
            (n for n in ray_nodes or [] if n.get("is_head_node")), None
        )
        head_shape = spec.get("head") or {}
        nodes.append(
            Node(
                id=(head_info or {}).get("node_id", "head"),
                group="head",
                kind="head",
                state="alive"
                if head_info and head_info.get("state") == "ALIVE"
                else ("pending" if head_alive else "dead"),
                resources=(head_info or {}).get("resources_total")
                or {"CPU": head_shape.get("cpu", 1), **(head_shape.get("resources") or {})},
                address=f"127.0.0.1:{record['ports']['gcs']}",
                started_at=((head_info or {}).get("start_time_ms") or 0) / 1000 or None,
                utilization=usage.get((head_info or {}).get("node_id", ""), {}),
            )
        )
        groups = []
        for g in spec.get("workerGroups", []):
            mine = {nid: n for nid, n in workers.items() if n["group"] == g["groupName"]}
            ready = 0
            for nid, entry in sorted(mine.items(), key=lambda kv: kv[1]["launchedAt"]):
                info = by_id.get(nid)
                alive = nid in alive_ids
                ready += alive
                nodes.append(
                    Node(
                        id=nid,
                        group=g["groupName"],
                        kind="worker",
                        state="alive"
                        if alive
                        else ("dead" if info and info.get("state") == "DEAD" else "pending"),
                        resources=(info or {}).get("resources_total")
                        or {"CPU": g.get("cpu", 1), **(g.get("resources") or {})},
                        address=(info or {}).get("node_ip"),
                        started_at=((info or {}).get("start_time_ms") or 0) / 1000 or entry["launchedAt"],
                        utilization=usage.get(nid, {}),
                    )
                )
            if not self._autoscaling(spec):
                desired = g["replicas"]
            elif record.get("readyAt") is None:
                desired = max(len(mine), g["replicas"])  # the initial replicas, even before they launch
            else:
                desired = len(mine)  # what the autoscaler has launched
            groups.append(
                WorkerGroupStatus(
                    group_name=g["groupName"],
                    replicas=g["replicas"],
                    desired=desired,
                    ready=ready,
                    min_replicas=g["minReplicas"],
                    max_replicas=g["maxReplicas"],
                    resources={
                        "CPU": g.get("cpu", 1),
                        "GPU": g.get("gpu", 0),
                        **(g.get("resources") or {}),
                    },
                )
            )
        if status == "stopping":
            phase = Phase.STOPPING
        elif not head_alive and self._will_retry_start(record):
            phase, reason = Phase.STARTING, "The head node exited while starting; starting it again"
        elif not head_alive:
            phase = Phase.FAILED
            reason = record.get("failure") or self._head_failure(cdir)
        elif ray_nodes is None:
            started = record.get("startedAt", record["createdAt"])
            if time.time() - started > self.start_timeout and record.get("readyAt") is None:
                phase, reason = (
                    Phase.FAILED,
                    f"The head node did not answer within {self.start_timeout:.0f} s",
                )
            else:
                phase = Phase.STARTING if record.get("readyAt") is None else Phase.SCALING
                if record.get("readyAt") is not None:
                    reason = "The Ray dashboard does not answer"
        else:
            # The dashboard can answer before the head's raylet has registered (and Ray may
            # still give up on it): the head node itself must be alive too.
            head_up = bool(head_info) and head_info.get("state") == "ALIVE"
            settled = head_up and all(grp.ready >= grp.desired for grp in groups)
            if record.get("readyAt") is None:
                phase = Phase.READY if settled else Phase.STARTING
            else:
                phase = Phase.READY if settled else Phase.SCALING
        return Cluster(
            name=record["name"],
            backend=self.name,
            owner=record["owner"],
            phase=phase,
            spec=spec,
            created_at=record["createdAt"],
            reason=reason,
            worker_groups=groups,
            nodes=nodes,
            dashboard_available=ray_nodes is not None,
            address=f"127.0.0.1:{record['ports']['gcs']}",
        )

    def _replace_failed_workers(self, cdir: ClusterDir, record: dict[str, Any]) -> dict[str, Any]:
        """Replace workers that exited on their own, as KubeRay replaces failed pods.

        Groups without autoscaling keep ``replicas`` workers; autoscaling groups keep their
        initial replicas until the cluster is first ready, then Ray's autoscaler decides.
        A busy machine can make `ray start` time out; a bounded number of retries hides that.
        """
        if not record.get("bootstrapped") or record.get("status") != "running":
            return record
        spec = record["spec"]
        restarts = record.get("workerRestarts", 0)
        if restarts >= self.max_worker_restarts:
            return record
        targets = {
            g["groupName"]: g["replicas"]
            for g in spec.get("workerGroups", [])
            if not self._autoscaling(spec) or record.get("readyAt") is None
        }
        dead, started = processes.replace_dead_workers(cdir, record, targets)
        for nid, entry in dead:
            log = cdir.logs / f"worker-{entry['group']}-{nid[:12]}.log"
            self._event(
                cdir,
                "WorkerExited",
                f"Worker node {nid[:8]} of group {entry['group']} exited: {processes.log_tail(log)}",
                Severity.WARNING,
            )
        if started:
            record = cdir.update(workerRestarts=restarts + len(started))
            self._event(cdir, "WorkerReplaced", f"Started {len(started)} replacement worker(s)")
            if record["workerRestarts"] >= self.max_worker_restarts:
                self._event(
                    cdir,
                    "WorkerRestartsExhausted",
                    f"Workers failed {record['workerRestarts']} times; not replacing them any more "
                    "(c.LocalBackend.max_worker_restarts). Check the worker logs and scale to retry.",
                    Severity.ERROR,
                )
        return record

    def _observe_one(
        self, cdir: ClusterDir, record: dict[str, Any]
    ) -> tuple[Cluster, list[dict[str, Any]] | None]:
        """Build a cluster's state and record the transitions that must persist (ready, failed)."""
        if processes.is_alive(record.get("head")):
            record = self._replace_failed_workers(cdir, record)
        elif record.get("status") == "running" and record.get("readyAt") is None:
            record = self._retry_failed_start(cdir, record)
        ray_nodes = self._ray_nodes(record)
        cluster = self._build(cdir, record, ray_nodes)
        if cluster.phase == Phase.READY and record.get("readyAt") is None:
            with cdir.locked():
                fresh = cdir.read() or {}
                if fresh.get("readyAt") is None:
                    fresh["readyAt"] = time.time()
                    cdir.write(fresh)
                    self._event(cdir, "Ready", f"Cluster {record['name']} is ready")
            record = cdir.read() or record
        elif cluster.phase == Phase.FAILED and record.get("failure") is None:
            with cdir.locked():
                fresh = cdir.read() or {}
                if fresh.get("failure") is None and fresh.get("status") == "running":
                    fresh["failure"] = cluster.reason
                    cdir.write(fresh)
                    self._event(cdir, "Failed", cluster.reason or "failed", Severity.ERROR)
        # Remember which group each node was in, so "left" events still name it after it is gone.
        groups = {nid: n["group"] for nid, n in cdir.read_nodes().items()}
        if groups and not set(groups.items()) <= set((record.get("nodeGroups") or {}).items()):
            with cdir.locked():
                fresh = cdir.read() or {}
                fresh["nodeGroups"] = {**fresh.get("nodeGroups", {}), **groups}
                cdir.write(fresh)
        return cluster, ray_nodes

    def list_clusters(self, owner: str) -> list[Cluster]:
        return [self._observe_one(cdir, r)[0] for cdir, r in self._all_records() if r.get("owner") == owner]

    def get_cluster(self, owner: str, name: str) -> Cluster:
        cdir, record = self._record(owner, name)
        return self._observe_one(cdir, record)[0]

    def dashboard_address(self, owner: str, name: str) -> str:
        _, record = self._record(owner, name)
        if record.get("status") != "running" or not processes.is_alive(record.get("head")):
            raise NotReadyError(f"Cluster {name!r} is not running, so its dashboard is not available.")
        if not processes.port_open(record["ports"]["dashboard"]):
            raise NotReadyError(
                f"The Ray dashboard of {name!r} is still starting; try again in a few seconds."
            )
        return self._dashboard_url(record)

    def connection_address(self, owner: str, name: str) -> str:
        _, record = self._record(owner, name)
        return f"127.0.0.1:{record['ports']['gcs']}"

    # --- scale ------------------------------------------------------------------------------

    def scale_cluster(self, owner: str, name: str, worker_groups: list[dict[str, Any]]) -> Cluster:
        cdir, record = self._record(owner, name)
        if record.get("status") != "running" or not processes.is_alive(record.get("head")):
            raise ConflictError(f"Cluster {name!r} is not running; only a running cluster can be scaled.")
        old = {g["groupName"]: g for g in record["spec"].get("workerGroups", [])}
        new_spec = {**record["spec"], "workerGroups": worker_groups}
        others = sum(
            self._potential_nodes(r["spec"])
            for _, r in self._all_records()
            if r["name"] != name and r.get("status") == "running"
        )
        wanted = self._potential_nodes(new_spec)
        if others + wanted > self.max_local_nodes:
            raise LimitExceededError(
                f"After this change {name!r} may grow to {wanted} Ray nodes and other clusters may use {others}; "
                f"the limit on this machine is {self.max_local_nodes} (c.LocalBackend.max_local_nodes)."
            )
        record = cdir.update(spec=new_spec)
        self._write_autoscaler_config(cdir, record)
        changes = []
        for g in worker_groups:
            before = old[g["groupName"]]
            diff = [
                f"{k} {before[k]}→{g[k]}"
                for k in ("replicas", "minReplicas", "maxReplicas")
                if before[k] != g[k]
            ]
            if diff:
                changes.append(f"{g['groupName']}: {', '.join(diff)}")
            carried = min(max(before["replicas"], g["minReplicas"]), g["maxReplicas"])
            if not self._autoscaling(new_spec) or g["replicas"] != carried:
                # An explicit replicas change is applied now; moved bounds are the autoscaler's job.
                self._apply_replicas(cdir, g)
        if changes:
            self._event(cdir, "Scaled", "Scaled " + "; ".join(changes))
        return self.get_cluster(owner, name)

    def _apply_replicas(self, cdir: ClusterDir, group: dict[str, Any]) -> None:
        """Start or stop workers so the group has ``replicas`` (clamped to [min, max]) of them."""
        target = min(max(group["replicas"], group["minReplicas"]), group["maxReplicas"])
        mine = sorted(
            ((nid, n) for nid, n in processes.live_workers(cdir).items() if n["group"] == group["groupName"]),
            key=lambda kv: kv[1]["launchedAt"],
        )
        for _ in range(target - len(mine)):
            processes.launch_worker(cdir, group["groupName"], launched_by="backend")
        for nid, _ in reversed(mine[target:]):  # newest first: they hold the least work
            processes.stop_worker(cdir, nid)

    # --- delete -----------------------------------------------------------------------------

    def delete_cluster(self, owner: str, name: str) -> None:
        cdir, record = self._record(owner, name)
        record = cdir.update(status="stopping")
        self._event(cdir, "Deleting", f"Stopping cluster {name}")
        self.notify(Change("cluster", owner, name, cluster=self._build(cdir, record, None)))
        self._teardown(cdir, record)
        self.notify(Change("deleted", owner, name))

    def _teardown(self, cdir: ClusterDir, record: dict[str, Any]) -> None:
        self._stop_processes(cdir, record)
        shutil.rmtree(cdir.root, ignore_errors=True)
        if record.get("tempDir"):
            shutil.rmtree(record["tempDir"], ignore_errors=True)

    # --- observing --------------------------------------------------------------------------

    def start_observing(self) -> None:
        if self._observer is not None and self._observer.is_alive():
            return
        self._stop.clear()
        self._observer = threading.Thread(
            target=self._observe_loop, name="eksray-local-observer", daemon=True
        )
        self._observer.start()

    def stop_observing(self) -> None:
        self._stop.set()
        if self._observer is not None and self._observer is not threading.current_thread():
            self._observer.join(timeout=5)
        self._observer = None

    def _observe_loop(self) -> None:
        """One loop for all listeners: diff every cluster's state and events, push what changed."""
        last: dict[str, tuple[str, dict[str, Any]]] = {}
        seen_events: dict[str, set[str]] = {}
        while not self._stop.is_set():
            started = time.monotonic()
            current: set[str] = set()
            for cdir, record in self._all_records():
                name = record["name"]
                current.add(name)
                try:
                    cluster, ray_nodes = self._observe_one(cdir, record)
                    state = cluster.to_dict()
                    if name not in last or last[name][1] != state:
                        self.notify(Change("cluster", record["owner"], name, cluster=cluster))
                    last[name] = (record["owner"], state)
                    known = seen_events.setdefault(name, set())
                    fresh = [
                        e
                        for e in self._events_of(cdir, cdir.read() or record, ray_nodes, None)
                        if e.id not in known
                    ]
                    for event in fresh:
                        known.add(event.id)
                        self.notify(Change("event", record["owner"], name, event=event))
                except Exception:
                    self.log.exception("eksray: observing cluster %s failed", name)
            for gone in set(last) - current:
                owner, _ = last.pop(gone)
                seen_events.pop(gone, None)
                self.notify(Change("deleted", owner, gone))
            self._stop.wait(max(0.05, self.observe_interval - (time.monotonic() - started)))

    def close(self) -> None:
        super().close()
