"""The local backend's ClusterBackend: the life cycle of Ray clusters made of processes on this machine.

A cluster is a head (``ray start --head --block``) plus worker nodes (``ray start
--address=... --block``), each its own process group. Groups with autoscaling are
managed by Ray's own autoscaler (v1) through :mod:`.provider`; the backend starts the
initial replicas and applies manual scaling through the same node list (:mod:`.workers`).

This module creates, scales and deletes clusters, restarts a head or workers that
failed (within bounds), keeps groups without autoscaling at their replicas, and pushes
changes to observers. State lives in :mod:`.state` on disk; the status it reports is
derived on every read by :mod:`.status`, the event timeline by :mod:`.events`.

Concurrency: the server, CLIs and Ray's autoscaler act on the same clusters at once. Every
change of a cluster is decided and made under its lock on its freshest record (a head
restart, a scale, a reconcile, the bootstrap's first workers); what spans clusters (the
machine-wide node limit, a name) is checked and written under the machine lock
(``.create.lock``, taken before any cluster's). A delete marks the record ``stopping``
under the lock, so nothing starts for it any more, stops every process of the cluster
(the bootstrap included), then removes the record under the lock before the directory.
The record names the deleting process: if it dies half way (a killed server or CLI), the
next reader finishes the delete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
from traitlets import Float, Int, List, Unicode

from ...core import processes
from ...core.backend import ClusterBackend
from ...core.errors import ConflictError, LimitExceededError, NotFoundError, NotReadyError
from ...core.models import Change, Cluster, ClusterEvent, Milestone, Phase, Severity
from ...core.net import port_open
from ...core.ray_auth import new_token, write_token_file
from ...core.spec import validate_scale_request
from ...core.wakeup import Wakeup
from .. import ray_dashboard
from . import ray_start
from .autoscaler_config import autoscaling_enabled, write_autoscaler_config
from .events import record_event, timeline
from .ray_start import PROMETHEUS_TARGETS
from .startup import READY_MESSAGE, StartLogs, keepable
from .state import ClusterDir, ClusterGone, CorruptFileError
from .status import (
    NodeUsage,
    build_cluster,
    dashboard_auth,
    dashboard_nodes,
    dashboard_url,
    head_start_will_be_retried,
)
from .workers import converge_group, replicas_target, terminate_workers

MIB = 1024**2
MIN_PASS_S = 0.02  # bursts of changes (an atomic write is three) make one pass
STATE_FILES = frozenset({"cluster.json", "nodes.json", "events.jsonl"})


def same_head(fresh: dict[str, Any], seen: dict[str, Any]) -> bool:
    """Whether ``fresh`` (read under the lock) still has the head process ``seen`` had."""
    return fresh.get("head") == seen.get("head")


def _is_state_file(path: str) -> bool:
    return os.path.basename(path) in STATE_FILES


def _is_gcs_log(path: str) -> bool:
    return os.path.basename(path) == "gcs_server.out"


def _is_start_log(path: str) -> bool:
    # The GCS logs each node's registration and death; the dashboard when it serves.
    return os.path.basename(path) in ("gcs_server.out", "dashboard.log")


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

    ray_environment = List(
        Unicode(),
        help="Environment variables of the server that Ray processes get, by name or shell pattern "
        "(e.g. 'RAY_AUTH_MODE', 'AWS_PROFILE', 'RAY_*'). Without them Ray processes get none of the "
        "server's credentials (tokens, secrets, passwords, keys, AWS_*, JUPYTERHUB_*) and no RAY_* "
        "setting: Ray runs user code, and a process's environment is readable.",
    ).tag(config=True)

    prometheus_url = Unicode(
        help="A Prometheus server scraping the clusters' metrics (e.g. 'http://127.0.0.1:9090'): the Ray "
        "dashboard's time-series charts query it. `eksray rc prometheus-config` writes its scrape config "
        "(docs/usage.md). Applies to clusters created from then on.",
    ).tag(config=True)

    temp_root = Unicode(
        "/tmp",
        help="Where each cluster's Ray temp dir is made: a new directory with a random name, mode 0700, "
        "that no other user can have made first. Kept short: Ray's unix socket paths must fit 107 bytes.",
    ).tag(config=True)

    max_head_restarts = Int(
        2, help="How many times a head that dies before the cluster was first ready is started again."
    ).tag(config=True)

    max_worker_restarts = Int(
        10, help="How many times workers that exit on their own are replaced before giving up."
    ).tag(config=True)

    observe_interval = Float(
        2.0,
        help="Seconds between two looks at the clusters while someone observes, for what only the Ray "
        "dashboard shows (utilisation); state files, GCS registrations and process exits wake the "
        "observer at once. Each look reads every running cluster's dashboard.",
    ).tag(config=True)
    start_timeout = Float(180.0, help="Seconds a head may take to answer before it is reported failed.").tag(
        config=True
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(self.state_dir) / "local" / "clusters"
        self.root.mkdir(parents=True, exist_ok=True)
        self._create_lock_file = self.root.parent / ".create.lock"
        # The observer thread and its own stop event; one that is stopping but may still run.
        self._observer: threading.Thread | None = None
        self._observer_stop = threading.Event()
        self._retiring: threading.Thread | None = None
        self._observer_lock = threading.Lock()
        self._usage = NodeUsage()
        self._start_logs = StartLogs()
        # Cluster name -> (dashboard port, the process of the cluster found listening on it).
        self._dashboard_listeners: dict[str, tuple[int, processes.ProcessRef]] = {}
        # Broken entries of the state dir already logged (path, problem): logged once each.
        self._reported: set[tuple[str, str]] = set()

    # --- helpers ----------------------------------------------------------------------------

    def limits(self) -> dict[str, Any]:
        return {
            "maxLocalNodes": self.max_local_nodes,
            "maxClustersPerOwner": self.max_clusters_per_owner,
        }

    def prometheus_config(self) -> str:
        """Scrape every cluster of this state dir, now and later: Ray lists each cluster's
        metrics endpoints in a file, linked from the cluster's dir; one glob finds them all."""
        # Prometheus watches the directory only if it exists when it starts.
        self._prometheus_link("*").parent.mkdir(exist_ok=True)
        targets = json.dumps(str(self._prometheus_link("*")))
        listen = self.prometheus_url.removeprefix("http://").rstrip("/") or "127.0.0.1:9090"
        return (
            "# Prometheus for your local Ray clusters (written by `eksray rc prometheus-config`). Run:\n"
            f"#   prometheus --config.file=THIS_FILE --web.listen-address={listen} --storage.tsdb.path=DIR\n"
            f'# with c.LocalBackend.prometheus_url = "http://{listen}" (clusters created from then on).\n'
            "global:\n  scrape_interval: 10s\n  evaluation_interval: 10s\n"
            "scrape_configs:\n  - job_name: ray\n    file_sd_configs:\n"
            f"      - files: [{targets}]\n"
            # Re-read often: Ray rewrites a file behind its link as nodes come and go, unseen by
            # file notifications on the directory.
            "        refresh_interval: 10s\n"
        )

    def _prometheus_link(self, name: str) -> Path:
        return self.root.parent / "prometheus" / f"{name}.json"

    def node_requests(self, shape: dict[str, Any], head: bool) -> dict[str, float]:
        """What a node of ``shape`` tells Ray it has (the flags of ``ray_start.node_args``)."""
        return {
            "cpu": float(shape.get("cpu", 1)),
            "gpu": float(shape.get("gpu", 0)),
            "memoryGiB": ray_start.node_memory_gib(shape),
            "objectStoreGiB": self.object_store_memory_mb / 1024,
        }

    def _dir(self, name: str) -> ClusterDir:
        return ClusterDir(self.root / name)

    @contextlib.contextmanager
    def _machine_lock(self) -> Iterator[None]:
        """What spans clusters (names, the node limit) is checked and written under this lock."""
        with open(self._create_lock_file, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield

    @staticmethod
    def _is_record(record: dict[str, Any], name: str) -> bool:
        """Whether ``record`` is a cluster's record (not e.g. a lone ``{"bootstrapped": true}``)."""
        return (
            record.get("name") == name
            and isinstance(record.get("owner"), str)
            and isinstance(record.get("spec"), dict)
            and isinstance(record.get("ports"), dict)
        )

    def _report_broken(self, path: Path, problem: str) -> None:
        if (str(path), problem) not in self._reported:
            self._reported.add((str(path), problem))
            self.log.warning("eksray: skipping %s in the local clusters' state: %s", path, problem)

    @staticmethod
    def _unreadable(name: str, cdir: ClusterDir, error: CorruptFileError) -> ConflictError:
        return ConflictError(
            f"The state of cluster {name!r} cannot be read ({error.reason}), so eksray will not change "
            f"it. Restore {error.path}, or delete the directory {cdir.root} once the cluster's "
            "processes are stopped."
        )

    @contextlib.contextmanager
    def _user_errors(self, name: str, cdir: ClusterDir) -> Iterator[None]:
        """A cluster deleted meanwhile is a 404 and one whose state is unreadable a 409."""
        try:
            yield
        except ClusterGone:
            raise NotFoundError(
                f"No cluster named {name!r}. List your clusters to see their names."
            ) from None
        except CorruptFileError as e:
            raise self._unreadable(name, cdir, e) from None

    def _record(self, owner: str, name: str) -> tuple[ClusterDir, dict[str, Any]]:
        cdir = self._dir(name) if "/" not in name and name not in ("", ".", "..") else None
        try:
            record = cdir.read() if cdir else None
        except CorruptFileError as e:
            raise self._unreadable(name, cdir, e) from None  # type: ignore[arg-type]
        except OSError:
            record = None
        if cdir is None or record is None or not self._is_record(record, name) or record["owner"] != owner:
            raise NotFoundError(f"No cluster named {name!r}. List your clusters to see their names.")
        return cdir, record

    def _all_records(self) -> list[tuple[ClusterDir, dict[str, Any]]]:
        """Every cluster's record; broken entries (stray files, unreadable or foreign records) are
        skipped and logged, never fatal to the list, a create or the observer."""
        out = []
        for path in sorted(self.root.iterdir()):
            if path.name.startswith("."):
                continue
            if not path.is_dir():
                self._report_broken(path, "not a cluster's directory")
                continue
            cdir = ClusterDir(path)
            try:
                record = cdir.read()
            except (CorruptFileError, OSError) as e:
                self._report_broken(path, str(e))
                continue
            if record is None:
                continue  # being created or deleted, or left over (a create reclaims it)
            if not self._is_record(record, path.name):
                self._report_broken(path, "its cluster.json is not a cluster's record")
                continue
            out.append((cdir, record))
        return out

    @staticmethod
    def _potential_nodes(spec: dict[str, Any]) -> int:
        return 1 + sum(max(g["maxReplicas"], g["replicas"]) for g in spec.get("workerGroups", []))

    # --- create -----------------------------------------------------------------------------

    def create_cluster(self, owner: str, spec: dict[str, Any]) -> Cluster:
        ray_start.check_start_params(spec)
        name = spec["name"]
        head_params = (spec.get("head") or {}).get("rayStartParams") or {}
        with self._machine_lock():
            records = self._all_records()
            if any(r["name"] == name for _, r in records):
                raise ConflictError(
                    f"A cluster named {name!r} already exists. Pick another name or delete it first."
                )
            cdir = self._dir(name)
            self._claim_leftover(cdir)
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
            cdir.create()
            # Ray's token authentication: only processes that can read this 0600 file (ours,
            # the user's kernels) can talk to the cluster's GCS, raylets or dashboard.
            auth_token_file = cdir.root / "auth_token"
            write_token_file(auth_token_file, new_token())
            short = hashlib.sha1(f"{name}{time.time_ns()}".encode()).hexdigest()[:8]
            record = {
                "name": name,
                "owner": owner,
                "spec": spec,
                "createdAt": time.time(),
                "status": "running",
                "ports": ports,
                # Ray makes its temp dir world-writable; ours around it (0700) keeps others out.
                "tempRoot": (temp_root := tempfile.mkdtemp(prefix=f"eksray-{short}-", dir=self.temp_root)),
                "tempDir": f"{temp_root}/ray",
                "objectStoreBytes": self.object_store_memory_mb * MIB,
                # Names only (never values): the bootstrap and Ray's autoscaler start workers too.
                "rayEnvironment": list(self.ray_environment),
                "authTokenFile": str(auth_token_file),
                "head": None,
            }
            if self.prometheus_url:
                record["prometheusUrl"] = self.prometheus_url
            # Where Prometheus finds the cluster's metrics endpoints: Ray keeps the list in its temp
            # dir; a link per cluster in one directory (`eksray rc prometheus-config` globs it).
            with contextlib.suppress(OSError):
                self._prometheus_link(name).parent.mkdir(exist_ok=True)
                self._prometheus_link(name).unlink(missing_ok=True)
                os.symlink(f"{temp_root}/ray/{PROMETHEUS_TARGETS}", self._prometheus_link(name))
            cdir.write(record)
        try:
            write_autoscaler_config(cdir, record)
            record_event(cdir, "Created", f"Cluster {name} created; starting the head node")
            with cdir.locked():
                record = cdir.current()
                if record.get("status") == "running":  # not deleted meanwhile
                    self._launch(cdir, record)
        except ClusterGone:
            raise NotFoundError(f"Cluster {name!r} was deleted while it was being created.") from None
        except Exception:
            # Nothing half-made: undo what was started.
            try:
                started = cdir.read() or record
            except CorruptFileError:
                started = record
            self._teardown(cdir, started)
            raise
        return self.get_cluster(owner, name)

    def _claim_leftover(self, cdir: ClusterDir) -> None:
        """Free a name held by a directory without a cluster's record (the caller holds the machine lock).

        Such a directory is left over from a cluster whose create or delete was cut short (a
        crash), or holds a record a stray writer left. It is removed if provably abandoned (no
        process of this user uses it); otherwise the name stays taken, with a 409 saying why.
        """
        if not (cdir.root.exists() or cdir.root.is_symlink()):
            return
        name = cdir.name
        try:
            record = cdir.read() if cdir.root.is_dir() else None
        except CorruptFileError as e:
            raise self._unreadable(name, cdir, e) from None
        if record is not None and self._is_record(record, name):
            raise ConflictError(
                f"A cluster named {name!r} already exists. Pick another name or delete it first."
            )
        users = processes.processes_using(cdir.root)
        if users:
            pids = ", ".join(str(p.pid) for p in users[:10])
            raise ConflictError(
                f"The name {name!r} is held by {cdir.root}, left over from an earlier cluster, and "
                f"processes still use it (pids {pids}). Stop them and delete that directory, or pick "
                "another name."
            )
        self.log.warning(
            "eksray: removing %s, left over from an earlier cluster (no process uses it)", cdir.root
        )
        if cdir.root.is_dir() and not cdir.root.is_symlink():
            shutil.rmtree(cdir.root, ignore_errors=True)
        else:
            cdir.root.unlink(missing_ok=True)
        if cdir.root.exists():
            raise ConflictError(
                f"The name {name!r} is held by {cdir.root}, left over from an earlier cluster, which "
                "could not be removed. Delete that directory, or pick another name."
            )

    def _launch(self, cdir: ClusterDir, record: dict[str, Any]) -> None:
        """Start the head, then (detached) the initial workers once its GCS answers.

        The caller holds the cluster's lock and passes the fresh ``record``, which is updated
        and written here: the head and the bootstrap are recorded before anyone else can look.
        """
        record.update(head=self._start_head(cdir, record), bootstrapped=False, startedAt=time.time())
        record.pop("bootstrap", None)
        cdir.write(record)
        record["bootstrap"] = processes.spawn(
            [sys.executable, "-m", "eksray_jupyter.backends.local.bootstrap", str(cdir.root)],
            processes.ray_env(passed=record.get("rayEnvironment", [])),
            cdir.logs / "bootstrap.log",
        )
        cdir.write(record)

    def _stop_processes(self, cdir: ClusterDir, record: dict[str, Any]) -> None:
        """Stop every process of the cluster (head, its autoscaler, workers, the bootstrap) at once.

        All at once: a half-stopped head could relaunch workers.
        """
        try:
            nodes = cdir.read_nodes()
        except (CorruptFileError, OSError):
            nodes = {}  # the temp dir in their command lines still finds the workers
        refs = [record.get("head"), record.get("bootstrap")] + [n.get("process") for n in nodes.values()]
        marker = record.get("tempDir") or str(cdir.root)
        for _attempt in range(3):
            found = processes.cluster_processes([r for r in refs if r], marker)
            if not found:
                break
            processes.terminate(found, grace=5.0)

    def _retry_failed_start(self, cdir: ClusterDir, record: dict[str, Any]) -> dict[str, Any]:
        """Start the head again when it died before the cluster was ever ready.

        On a busy laptop `ray start --head` gives up after 30 s ("The current node timed out
        during startup"); a bounded number of clean retries hides that from the user.

        The whole restart is one step under the cluster's lock, so two readers (the server
        and a CLI) never both restart it, killing each other's new head; and a delete, which
        marks the record stopping under the lock first, is never followed by a restart.
        """
        with cdir.locked():
            fresh = cdir.current()
            if processes.is_alive(fresh.get("head")) or not head_start_will_be_retried(
                fresh, self.max_head_restarts
            ):
                return fresh
            attempt = fresh.get("headRestarts", 0) + 1
            fresh["headRestarts"] = attempt
            cdir.write(fresh)
            reason = processes.log_tail(cdir.logs / "head.log")
            record_event(
                cdir,
                "HeadRestarted",
                f"The head node failed to start ({reason}); starting it again ({attempt}/{self.max_head_restarts})",
                Severity.WARNING,
            )
            self._stop_processes(cdir, fresh)
            cdir.write_nodes({})
            shutil.rmtree(fresh["tempDir"], ignore_errors=True)  # inside our 0700 tempRoot
            with contextlib.suppress(FileNotFoundError):
                (cdir.logs / "head.log").rename(cdir.logs / f"head.{attempt}.log")
            self._launch(cdir, fresh)
            return fresh

    def _start_head(self, cdir: ClusterDir, record: dict[str, Any]) -> processes.ProcessRef:
        autoscaling_config = cdir.autoscaler_file if autoscaling_enabled(record["spec"]) else None
        argv, env = ray_start.head_command(record, autoscaling_config)
        return processes.spawn(argv, env, cdir.logs / "head.log")

    # --- status and repairs -----------------------------------------------------------------

    def _status(
        self, cdir: ClusterDir, record: dict[str, Any], ray_nodes: list[dict[str, Any]] | None
    ) -> Cluster:
        return build_cluster(
            cdir,
            record,
            ray_nodes,
            backend=self.name,
            usage=self._usage,
            start_logs=self._start_logs,
            max_head_restarts=self.max_head_restarts,
            start_timeout=self.start_timeout,
        )

    def _reconcile_workers(self, cdir: ClusterDir, record: dict[str, Any]) -> dict[str, Any]:
        """Keep each group at its replicas, as KubeRay keeps a group's pods; returns the fresh record.

        Workers that exited on their own are forgotten and replaced. Groups without autoscaling
        keep exactly ``replicas`` workers: missing ones are started, extra ones (a crash in the
        middle of a scale, say) stopped, newest first. Autoscaling groups keep at least their
        initial replicas until the cluster is first ready; then Ray's autoscaler decides. Within
        the node limit: the spec was checked against it when it was written. A busy machine can
        make `ray start` time out; a bounded number of replacements hides that.

        Decided and done on the freshest record and node list, under the cluster's lock.
        """
        if not record.get("bootstrapped") or record.get("status") != "running":
            return record
        with cdir.locked():
            fresh = cdir.current()
            if not fresh.get("bootstrapped") or fresh.get("status") != "running":
                return fresh
            spec = fresh["spec"]
            autoscaled = autoscaling_enabled(spec)
            restarts = fresh.get("workerRestarts", 0)
            nodes = cdir.read_nodes()
            dead = [(nid, n) for nid, n in nodes.items() if not processes.is_alive(n.get("process"))]
            for nid, _ in dead:
                nodes.pop(nid)
            started: list[str] = []
            stopped: list[tuple[str, int, list[dict[str, Any]]]] = []
            for g in spec.get("workerGroups", []):
                if autoscaled and fresh.get("readyAt") is not None:
                    continue  # Ray's autoscaler's
                target = replicas_target(g)
                new, extra = converge_group(
                    cdir,
                    fresh,
                    nodes,
                    g["groupName"],
                    target,
                    start=restarts < self.max_worker_restarts,
                    stop=not autoscaled,
                )
                started += new
                if extra:
                    stopped.append((g["groupName"], target, extra))
            if dead or started or stopped:
                cdir.write_nodes(nodes)
            if started:
                fresh["workerRestarts"] = restarts + len(started)
                cdir.write(fresh)
        for nid, entry in dead:
            log = cdir.logs / f"worker-{entry['group']}-{nid[:12]}.log"
            record_event(
                cdir,
                "WorkerExited",
                f"Worker node {nid[:8]} of group {entry['group']} exited: {processes.log_tail(log)}",
                Severity.WARNING,
            )
        if started:
            record_event(cdir, "WorkerReplaced", f"Started {len(started)} replacement worker(s)")
            if fresh["workerRestarts"] >= self.max_worker_restarts:
                record_event(
                    cdir,
                    "WorkerRestartsExhausted",
                    f"Workers failed {fresh['workerRestarts']} times; not replacing them any more "
                    "(c.LocalBackend.max_worker_restarts). Check the worker logs and scale to retry.",
                    Severity.ERROR,
                )
        for group, target, extra in stopped:
            terminate_workers(extra)
            record_event(
                cdir,
                "WorkersStopped",
                f"Stopped {len(extra)} worker(s) of group {group}, more than its {target} replicas",
            )
        return fresh

    def _resume_bootstrap(self, cdir: ClusterDir, record: dict[str, Any]) -> dict[str, Any]:
        """Start the first workers if the bootstrap exited without (it gave up waiting for a slow
        head's GCS, or was killed): once the GCS answers, the next reader does its work."""
        if (
            record.get("bootstrapped")
            or record.get("status") != "running"
            or processes.is_alive(record.get("bootstrap"))
            or not port_open(record["ports"]["gcs"], timeout=0.2)
        ):
            return record
        with cdir.locked():
            fresh = cdir.current()
            if (
                fresh.get("bootstrapped")
                or fresh.get("status") != "running"
                or fresh.get("head") != record.get("head")
                or processes.is_alive(fresh.get("bootstrap"))
            ):
                return fresh
            nodes = cdir.read_nodes()
            started = []
            for group in fresh["spec"].get("workerGroups", []):
                started += converge_group(
                    cdir, fresh, nodes, group["groupName"], replicas_target(group), stop=False
                )[0]
            cdir.write_nodes(nodes)
            fresh["bootstrapped"] = True
            cdir.write(fresh)
        record_event(
            cdir,
            "WorkersStarted",
            f"The bootstrap exited before the head answered; started the first {len(started)} worker(s) now",
        )
        return fresh

    def _observe_one(
        self, cdir: ClusterDir, record: dict[str, Any]
    ) -> tuple[Cluster, list[dict[str, Any]] | None]:
        """Build a cluster's state and record the transitions that must persist (ready, failed).

        ``record`` may be stale (read before this call): every write here is made on the fresh
        record under the lock, and :class:`ClusterGone` is raised if the cluster was deleted.
        """
        if self._finish_abandoned_delete(cdir, record):
            raise ClusterGone(cdir.name)
        record = self._finish_abandoned_suspend(cdir, record)
        if record.get("status") == "suspended":
            return self._status(cdir, record, None), None
        if processes.is_alive(record.get("head")):
            record = self._reconcile_workers(cdir, self._resume_bootstrap(cdir, record))
        elif head_start_will_be_retried(record, self.max_head_restarts):
            record = self._retry_failed_start(cdir, record)
        ray_nodes = dashboard_nodes(record)
        cluster = self._status(cdir, record, ray_nodes)
        if cluster.phase == Phase.READY and record.get("readyAt") is None:
            with cdir.editing() as fresh:
                # Of the head it saw: not of one started since (a resume, a retry).
                if (
                    fresh.get("readyAt") is None
                    and fresh.get("status") == "running"
                    and same_head(fresh, record)
                ):
                    fresh["readyAt"] = time.time()
                    cluster.timeline.append(Milestone("ready", fresh["readyAt"], READY_MESSAGE))
                    # Kept: the timeline of a ready cluster never needs its logs again.
                    fresh["startup"] = keepable(cluster.timeline)
                    record_event(cdir, "Ready", f"Cluster {record['name']} is ready")
            record = fresh
        elif cluster.phase == Phase.FAILED and record.get("failure") is None:
            with cdir.editing() as fresh:
                if (
                    fresh.get("failure") is None
                    and fresh.get("status") == "running"
                    and same_head(fresh, record)
                ):
                    fresh["failure"] = cluster.reason
                    record_event(cdir, "Failed", cluster.reason or "failed", Severity.ERROR)
        # Remember which group each node was in, so "left" events still name it after it is gone.
        groups = {nid: n["group"] for nid, n in cdir.read_nodes().items()}
        if groups and not set(groups.items()) <= set((record.get("nodeGroups") or {}).items()):
            with cdir.editing() as fresh:
                fresh["nodeGroups"] = {**fresh.get("nodeGroups", {}), **groups}
        return cluster, ray_nodes

    def list_clusters(self, owner: str) -> list[Cluster]:
        clusters = []
        for cdir, record in self._all_records():
            if record["owner"] != owner:
                continue
            try:
                clusters.append(self._observe_one(cdir, record)[0])
            except ClusterGone:
                continue  # deleted while we looked
            except CorruptFileError as e:
                self._report_broken(cdir.root, str(e))
        return clusters

    def get_cluster(self, owner: str, name: str) -> Cluster:
        cdir, record = self._record(owner, name)
        with self._user_errors(name, cdir):
            return self._observe_one(cdir, record)[0]

    def dashboard_address(self, owner: str, name: str) -> str:
        """The dashboard's URL, once the process listening on its port is this cluster's own.

        The port alone proves nothing: after the dashboard died, any process of any user may
        listen on it, and the proxy would show that process's pages on Jupyter's origin.
        """
        _, record = self._record(owner, name)
        head = record.get("head")
        if record.get("status") != "running" or not processes.is_alive(head):
            raise NotReadyError(f"Cluster {name!r} is not running, so its dashboard is not available.")
        port = record["ports"]["dashboard"]
        if not self._dashboard_is_ours(name, head, port):
            if port_open(port, timeout=0.2):
                raise NotReadyError(
                    f"Port {port} of {name!r}'s Ray dashboard is held by a process that is not part of "
                    "the cluster, so it is not shown. Delete and re-create the cluster."
                )
            raise NotReadyError(
                f"The Ray dashboard of {name!r} is still starting; try again in a few seconds."
            )
        return dashboard_url(record)

    def _dashboard_is_ours(self, name: str, head: processes.ProcessRef, port: int) -> bool:
        """True if ``port`` is held by a process of the head's tree; the answer is remembered for
        as long as that process lives (it holds the port until it exits)."""
        known = self._dashboard_listeners.get(name)
        if known is not None and known[0] == port and processes.is_alive(known[1]):
            return True
        listener = processes.listener_among(head, port)
        if listener is None:
            self._dashboard_listeners.pop(name, None)
            return False
        self._dashboard_listeners[name] = (port, listener)
        return True

    def ray_auth_token_file(self, owner: str, name: str) -> Path | None:
        _, record = self._record(owner, name)
        return ray_start.token_file(record)

    def connection_address(self, owner: str, name: str) -> str:
        _, record = self._record(owner, name)
        return f"127.0.0.1:{record['ports']['gcs']}"

    def cluster_events(self, owner: str, name: str, since: float | None = None) -> list[ClusterEvent]:
        cdir, record = self._record(owner, name)
        return timeline(cdir, record, dashboard_nodes(record), since)

    # --- scale ------------------------------------------------------------------------------

    def scale_cluster_request(self, owner: str, name: str, request: Any, current: Cluster | None) -> Cluster:
        """The request is applied to the cluster's spec as it is when the change is made (under
        its lock), not as ``current`` was read: concurrent scales of other fields or groups stay."""
        return self._scale(owner, name, lambda spec: validate_scale_request(spec, request))

    def scale_cluster(self, owner: str, name: str, worker_groups: list[dict[str, Any]]) -> Cluster:
        return self._scale(owner, name, lambda spec: worker_groups)

    def _scale(
        self, owner: str, name: str, new_groups: Callable[[dict[str, Any]], list[dict[str, Any]]]
    ) -> Cluster:
        """Check the node limit, write the new spec and start or stop workers, as one step.

        Under the machine lock (no other scale or create can take the same headroom) and the
        cluster's (no reconcile, bootstrap or other scale sees the workers half-changed). Only
        the ends of stopped workers (up to 10 s) wait until both are released.
        """
        cdir, _ = self._record(owner, name)
        stopped: list[dict[str, Any]] = []
        changes = []
        with self._user_errors(name, cdir), self._machine_lock(), cdir.locked():
            record = cdir.current()
            if record.get("owner") != owner:
                raise NotFoundError(f"No cluster named {name!r}. List your clusters to see their names.")
            if record.get("status") != "running" or not processes.is_alive(record.get("head")):
                raise ConflictError(f"Cluster {name!r} is not running; only a running cluster can be scaled.")
            worker_groups = new_groups(record["spec"])
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
                    f"After this change {name!r} may grow to {wanted} Ray nodes and other clusters may use "
                    f"{others}; the limit on this machine is {self.max_local_nodes} "
                    "(c.LocalBackend.max_local_nodes)."
                )
            record["spec"] = new_spec
            cdir.write(record)
            write_autoscaler_config(cdir, record)
            nodes = cdir.read_nodes()
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
                if not autoscaling_enabled(new_spec) or g["replicas"] != carried:
                    # An explicit replicas change is applied now; moved bounds are the autoscaler's job.
                    stopped += converge_group(cdir, record, nodes, g["groupName"], replicas_target(g))[1]
            cdir.write_nodes(nodes)
        terminate_workers(stopped)
        if changes:
            record_event(cdir, "Scaled", "Scaled " + "; ".join(changes))
        return self.get_cluster(owner, name)

    # --- suspend and resume ------------------------------------------------------------------

    def suspend_cluster(self, owner: str, name: str, reason: str | None = None) -> Cluster:
        """Mark the record suspended under the lock (nothing starts for it any more), stop every
        process, then forget them. The record names the suspending process: if it dies half way,
        the next reader finishes (as for a delete)."""
        cdir, _ = self._record(owner, name)
        with self._user_errors(name, cdir):
            with cdir.locked():
                record = cdir.current()
                status = record.get("status")
                if status == "suspended":
                    return self.get_cluster(owner, name)
                if status != "running":
                    raise ConflictError(f"Cluster {name!r} is being deleted; it cannot be suspended.")
                record.update(
                    status="suspended",
                    suspendedAt=time.time(),
                    suspendedBy=processes.ref_of(psutil.Process()),
                )
                cdir.write(record)
            record_event(cdir, "Suspending", reason or f"Suspending cluster {name}: stopping its Ray nodes")
            self.notify(Change("cluster", owner, name, cluster=self._status(cdir, record, None)))
            self._finish_suspend(cdir, record)
        return self.get_cluster(owner, name)

    def _finish_suspend(self, cdir: ClusterDir, record: dict[str, Any]) -> None:
        self._stop_processes(cdir, record)
        with cdir.locked():
            fresh = cdir.current()
            if fresh.get("status") != "suspended" or fresh.get("suspendedBy") is None:
                return  # resumed or finished meanwhile
            fresh.update(head=None, bootstrap=None, suspendedBy=None)
            cdir.write_nodes({})
            # Ray's session (sockets, the old nodes' logs) goes, before a resume can start a new
            # one there; our 0700 tempRoot stays.
            shutil.rmtree(fresh["tempDir"], ignore_errors=True)
            cdir.write(fresh)
        self._dashboard_listeners.pop(cdir.name, None)
        record_event(
            cdir, "Suspended", f"Cluster {cdir.name} is suspended: no Ray node runs; resume to use it"
        )

    def _finish_abandoned_suspend(self, cdir: ClusterDir, record: dict[str, Any]) -> dict[str, Any]:
        """Finish a suspend whose process died half way; returns the fresh record."""
        suspender = record.get("suspendedBy")
        if record.get("status") != "suspended" or suspender is None or processes.is_alive(suspender):
            return record
        with cdir.locked():
            fresh = cdir.current()
            if fresh.get("status") != "suspended" or fresh.get("suspendedBy") != suspender:
                return fresh
            fresh["suspendedBy"] = processes.ref_of(psutil.Process())
            cdir.write(fresh)
        self._finish_suspend(cdir, fresh)
        return cdir.current()

    def resume_cluster(self, owner: str, name: str) -> Cluster:
        cdir, _ = self._record(owner, name)
        with self._user_errors(name, cdir), self._machine_lock(), cdir.locked():
            record = cdir.current()
            if record.get("owner") != owner:
                raise NotFoundError(f"No cluster named {name!r}. List your clusters to see their names.")
            status = record.get("status")
            if status == "running":
                resumed = False
            elif status != "suspended":
                raise ConflictError(f"Cluster {name!r} is being deleted; it cannot be resumed.")
            elif record.get("suspendedBy") is not None:
                raise ConflictError(
                    f"Cluster {name!r} is still stopping its Ray nodes; resume it in a few seconds."
                )
            else:
                others = sum(
                    self._potential_nodes(r["spec"])
                    for _, r in self._all_records()
                    if r["name"] != name and r.get("status") == "running"
                )
                wanted = self._potential_nodes(record["spec"])
                if others + wanted > self.max_local_nodes:
                    raise LimitExceededError(
                        f"Resuming {name!r} needs room for {wanted} Ray nodes and running clusters may use "
                        f"{others}; the limit on this machine is {self.max_local_nodes} "
                        "(c.LocalBackend.max_local_nodes). Suspend or delete another cluster first."
                    )
                record["ports"] = self._resume_ports(name, record)
                now = time.time()
                for key in ("readyAt", "startup", "failure", "suspendedAt", "headRestarts", "workerRestarts"):
                    record.pop(key, None)
                record.update(status="running", resumedAt=now, lastActiveAt=now)
                cdir.write(record)
                write_autoscaler_config(cdir, record)
                self._launch(cdir, record)
                resumed = True
        if resumed:
            record_event(cdir, "Resumed", f"Cluster {name} resumed; starting the head node")
        return self.get_cluster(owner, name)

    def _resume_ports(self, name: str, record: dict[str, Any]) -> dict[str, int]:
        """The cluster's ports again where they are free (drivers keep their address), else new
        ones; a port the spec fixes must be free."""
        head_params = (record["spec"].get("head") or {}).get("rayStartParams") or {}
        fixed = {"gcs": "port", "dashboard": "dashboard-port", "client": "ray-client-server-port"}
        ports = dict(record["ports"])
        for key, port in ports.items():
            if not processes.port_in_use(port):
                continue
            if fixed.get(key) in head_params:
                raise ConflictError(
                    f"Port {port} (head.rayStartParams.{fixed[key]}) of {name!r} is now used by another "
                    "process on this machine; stop it, or delete and re-create the cluster with another port."
                )
            ports[key] = processes.free_port()
        return ports

    def mark_active(self, owner: str, name: str, at: float, why: str) -> None:
        cdir, record = self._record(owner, name)
        if (record.get("lastActiveAt") or 0) >= at:
            return
        with self._user_errors(name, cdir), cdir.editing() as fresh:
            if (fresh.get("lastActiveAt") or 0) < at:
                fresh["lastActiveAt"] = at
                fresh["lastActiveWhy"] = why

    def busy_reasons(self, owner: str, name: str) -> list[str]:
        _, record = self._record(owner, name)
        if record.get("status") != "running" or not processes.is_alive(record.get("head")):
            return []
        fetch = ray_dashboard.url_fetcher(dashboard_url(record), headers=dashboard_auth(record))
        return ray_dashboard.busy_reasons(fetch)

    def record_event(self, owner: str, name: str, reason: str, message: str, severity: Severity) -> None:
        cdir, _ = self._record(owner, name)
        record_event(cdir, reason, message, severity)

    def all_clusters(self) -> list[Cluster]:
        owners = sorted({r["owner"] for _, r in self._all_records()})
        return [c for owner in owners for c in self.list_clusters(owner)]

    # --- delete -----------------------------------------------------------------------------

    def delete_cluster(self, owner: str, name: str) -> None:
        cdir, _ = self._record(owner, name)
        with self._user_errors(name, cdir):
            # From here on nothing starts for it: every starter checks the status under the lock.
            # Who deletes is recorded: if that process dies half way, the next reader finishes.
            record = cdir.update(status="stopping", deletedBy=processes.ref_of(psutil.Process()))
        record_event(cdir, "Deleting", f"Stopping cluster {name}")
        self.notify(Change("cluster", owner, name, cluster=self._status(cdir, record, None)))
        self._teardown(cdir, record)
        self.notify(Change("deleted", owner, name))

    def _finish_abandoned_delete(self, cdir: ClusterDir, record: dict[str, Any]) -> bool:
        """Finish a delete whose process died half way (a server or CLI killed while it stopped
        the processes); True if this call did. A delete still under way is left to its process."""
        if record.get("status") != "stopping" or processes.is_alive(record.get("deletedBy")):
            return False
        with cdir.locked():
            fresh = cdir.current()
            if fresh.get("status") != "stopping" or processes.is_alive(fresh.get("deletedBy")):
                return False
            fresh["deletedBy"] = processes.ref_of(psutil.Process())  # this one finishes it
            cdir.write(fresh)
        record_event(cdir, "Deleting", f"Finishing the deletion of cluster {cdir.name}: its deleter exited")
        self._teardown(cdir, fresh)
        # Pushed like any delete this process makes: an observer that never saw the cluster (its
        # first round finished the delete) cannot tell a panel whose snapshot had it.
        self.notify(Change("deleted", fresh["owner"], cdir.name))
        return True

    def _teardown(self, cdir: ClusterDir, record: dict[str, Any]) -> None:
        self._stop_processes(cdir, record)
        # The record goes first, under the lock: a writer that waited for the lock finds the
        # cluster gone and writes nothing, so the directory is not brought back.
        with contextlib.suppress(ClusterGone), cdir.locked():
            cdir.remove_record()
        shutil.rmtree(cdir.root, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._prometheus_link(cdir.name).unlink(missing_ok=True)
        if record.get("tempRoot") or record.get("tempDir"):
            shutil.rmtree(record.get("tempRoot") or record["tempDir"], ignore_errors=True)
        if record.get("tempDir"):
            self._start_logs.forget(record)

    # --- observing --------------------------------------------------------------------------

    @property
    def observing(self) -> bool:
        thread = self._observer
        return thread is not None and thread.is_alive()

    def start_observing(self) -> None:
        # Each thread has a stop event of its own: a stop still joining the old thread (or one
        # that gave up waiting) can never stop the new one. The new thread waits for the old
        # one to end first, so no two rounds run at once.
        with self._observer_lock:
            if self._observer is not None and self._observer.is_alive():
                return
            stop = threading.Event()
            self._observer_stop = stop
            self._observer = threading.Thread(
                target=self._observe_loop,
                args=(stop, self._retiring),
                name="eksray-local-observer",
                daemon=True,
            )
            self._observer.start()

    def stop_observing(self, timeout: float = 5.0) -> None:
        with self._observer_lock:
            thread, self._observer = self._observer, None
            self._observer_stop.set()
            if thread is not None:
                self._retiring = thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                self.log.warning(
                    "eksray: the local observer did not stop within %.0f s; it ends after its round", timeout
                )

    def _observe_loop(self, stop: threading.Event, previous: threading.Thread | None = None) -> None:
        """One loop for all listeners: diff every cluster's state and events, push what changed."""
        if previous is not None and previous is not threading.current_thread():
            previous.join(5.0)  # it ends after its round (its stop is set)
        last: dict[str, tuple[str, dict[str, Any]]] = {}
        seen_events: dict[str, set[str]] = {}
        wakeup = Wakeup("local-observer")
        stop_wakes = threading.Thread(target=lambda: (stop.wait(), wakeup.set()), daemon=True)
        stop_wakes.start()  # a stop ends the wait at once
        while not stop.is_set():
            started = time.monotonic()
            current: set[str] = set()
            try:
                records = self._all_records()
            except Exception:
                self.log.exception("eksray: listing the local clusters failed")
                records, current = [], set(last)
            for cdir, record in records:
                name = cdir.name
                current.add(name)
                try:
                    try:
                        cluster, ray_nodes = self._observe_one(cdir, record)
                    except ClusterGone:
                        current.discard(name)  # deleted during this pass
                        continue
                    except CorruptFileError as e:
                        self._report_broken(cdir.root, str(e))
                        current.discard(name)  # as in the list: skipped until repaired
                        continue
                    state = cluster.to_dict()
                    if name not in last or last[name][1] != state:
                        self.notify(Change("cluster", record["owner"], name, cluster=cluster))
                    last[name] = (record["owner"], state)
                    known = seen_events.setdefault(name, set())
                    fresh = [
                        e for e in timeline(cdir, cdir.read() or record, ray_nodes, None) if e.id not in known
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
            try:
                self._watch(wakeup, records)
            except Exception:  # the interval still wakes us
                self.log.exception("eksray: watching the local clusters for changes failed")
            # Until something changes (a state file, a Ray node's registration in the GCS log, a
            # process exit) or the interval passes; never more often than every MIN_PASS_S.
            stop.wait(max(0.0, MIN_PASS_S - (time.monotonic() - started)))
            wakeup.wait(max(0.05, self.observe_interval - (time.monotonic() - started)))
        wakeup.close()

    def _watch(self, wakeup: Wakeup, records: list[tuple[ClusterDir, dict[str, Any]]]) -> None:
        """What wakes the observer: every cluster's state files, its Ray processes, its GCS log."""
        dirs: dict[Path, tuple[Callable[[str], bool], bool]] = {self.root: (_is_state_file, True)}
        pids: set[int] = set()
        for cdir, record in records:
            if record.get("status") != "running":
                continue
            # The dashboard's log only until it is up: it logs every request it serves, ours too,
            # and each line would wake this loop into reading the dashboard again.
            logs = _is_gcs_log if record.get("readyAt") is not None else _is_start_log
            dirs[Path(record["tempDir"]) / "session_latest" / "logs"] = (logs, False)
            refs = [record.get("head"), record.get("bootstrap")]
            with contextlib.suppress(CorruptFileError, OSError):
                refs += [n.get("process") for n in cdir.read_nodes().values()]
            pids.update(r["pid"] for r in refs if r and processes.is_alive(r))
        wakeup.watch_dirs(dirs)
        wakeup.watch_pids(pids)

    def close(self) -> None:
        super().close()
