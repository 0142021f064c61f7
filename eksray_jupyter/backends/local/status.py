"""A local cluster's status, derived on every read.

From three sources only, so it is true after a server restart and the same in every
process (server, CLI, kernel): the cluster's state files, whether its recorded
processes are alive, and the Ray dashboard's node table.
"""

from __future__ import annotations

import time
from typing import Any

from ...core.models import Cluster, Node, Phase, WorkerGroupStatus
from ...core.processes import is_alive, log_tail
from ...core.ray_auth import TokenError, dashboard_headers, read_token_file
from .. import ray_dashboard
from .autoscaler_config import autoscaling_enabled
from .ray_start import HEAD_NODE_ID, node_memory_bytes, token_file
from .startup import StartFacts, StartLogs, timeline, waiting_for
from .state import ClusterDir, CorruptFileError
from .workers import live_workers


def dashboard_url(record: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{record['ports']['dashboard']}"


def dashboard_auth(record: dict[str, Any]) -> dict[str, str]:
    """Headers with the cluster's Ray token (none for a cluster without one, or a broken token
    file: the dashboard then refuses us and the cluster shows as not answering)."""
    path = token_file(record)
    if path is None:
        return {}
    try:
        return dashboard_headers(read_token_file(path))
    except TokenError:
        return {}


def dashboard_nodes(record: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The dashboard's node table, or None while the head is not running or does not answer."""
    if record.get("status") != "running" or not is_alive(record.get("head")):
        return None
    try:
        return ray_dashboard.list_nodes(dashboard_url(record), headers=dashboard_auth(record))
    except ray_dashboard.DashboardUnavailable:
        return None


def shape_resources(record: dict[str, Any], shape: dict[str, Any]) -> dict[str, float]:
    """What Ray will schedule on a node of ``shape`` (before Ray says): the flags we start it with."""
    return {
        "CPU": float(shape.get("cpu", 1)),
        **({"GPU": float(shape["gpu"])} if shape.get("gpu") else {}),
        "memory": float(node_memory_bytes(shape)),
        "object_store_memory": float(record.get("objectStoreBytes") or 0),
        **(shape.get("resources") or {}),
    }


class NodeUsage:
    """Per-node utilisation of each cluster, cached for a second: many readers, one dashboard call."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, dict[str, dict[str, float]]]] = {}

    def of(self, record: dict[str, Any]) -> dict[str, dict[str, float]]:
        key = record["name"]
        cached = self._cache.get(key)
        if cached and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        usage = ray_dashboard.usage_by_node(dashboard_url(record), headers=dashboard_auth(record))
        self._cache[key] = (time.monotonic(), usage)
        return usage


def head_start_will_be_retried(record: dict[str, Any], max_head_restarts: int) -> bool:
    """A head that died before the cluster was ever ready is started again, a bounded number of times."""
    return (
        record.get("status") == "running"
        and record.get("head") is not None  # a head that was started (not one being created)
        and record.get("readyAt") is None
        and record.get("headRestarts", 0) < max_head_restarts
    )


DASHBOARD_DOWN = (
    "The Ray dashboard does not answer: drivers can connect, and its link and the nodes' usage "
    "come back when it does"
)


def nodes_from_gcs_log(
    record: dict[str, Any], workers: dict[str, dict[str, Any]], facts: StartFacts
) -> list[dict[str, Any]]:
    """Nodes as the dashboard's table would list them, from the GCS's log of registrations: the
    head (the one node id the backend did not give a worker) and the workers whose processes run."""
    known_workers = set(record.get("nodeGroups") or {}) | set(workers)
    # Until Ray makes the new session, its log is still the last one's (a resume): not this start's.
    started = record.get("startedAt", record["createdAt"]) - 1
    out = []
    for nid, at in facts.registered.items():
        if at < started:
            continue
        is_head = nid not in known_workers
        if is_head or nid in workers:
            out.append(
                {"node_id": nid, "state": "ALIVE", "is_head_node": is_head, "start_time_ms": at * 1000}
            )
    return out


def head_failure(cdir: ClusterDir) -> str:
    return f"The head node's ray process exited ({log_tail(cdir.logs / 'head.log')})"


def build_cluster(
    cdir: ClusterDir,
    record: dict[str, Any],
    ray_nodes: list[dict[str, Any]] | None,
    *,
    backend: str,
    usage: NodeUsage,
    start_logs: StartLogs,
    max_head_restarts: int,
    start_timeout: float,
) -> Cluster:
    """The cluster as the API reports it, from its record, its processes and ``ray_nodes``."""
    spec = record["spec"]
    status = record.get("status")
    if status == "suspended":
        return suspended_cluster(record, backend)
    head_alive = is_alive(record.get("head"))
    unreadable = None
    try:
        workers = live_workers(cdir)
    except CorruptFileError as e:  # shown, never "no workers" silently
        workers, unreadable = {}, f"The worker list cannot be read ({e})"
    # Without the dashboard's node table (not up yet, or down), the GCS log still says which
    # nodes registered: a driver can use those whose processes run, so the cluster is usable.
    # Ray's logs, read (incrementally) once for both the node table and the timeline.
    from_log = ray_nodes is None and head_alive and status == "running"
    facts = start_logs.facts(record) if from_log or record.get("startup") is None else None
    if from_log and facts is not None:
        ray_nodes = nodes_from_gcs_log(record, workers, facts) or None
        from_log = ray_nodes is not None
    alive_ids = {n["node_id"] for n in ray_nodes or [] if n.get("state") == "ALIVE"}
    # Utilisation is only worth its (costly) dashboard call once the cluster is up.
    used_by_node = usage.of(record) if ray_nodes and not from_log and record.get("readyAt") else {}
    reason = None
    nodes: list[Node] = []
    by_id = {n.get("node_id"): n for n in ray_nodes or []}
    head_info = by_id.get(HEAD_NODE_ID) or next((n for n in ray_nodes or [] if n.get("is_head_node")), None)
    head_shape = spec.get("head") or {}
    head_resources = (head_info or {}).get("resources_total") or shape_resources(record, head_shape)
    head_used = used_by_node.get((head_info or {}).get("node_id", ""), {})
    nodes.append(
        Node(
            id=(head_info or {}).get("node_id", "head"),
            group="head",
            kind="head",
            state="alive"
            if head_info and head_info.get("state") == "ALIVE"
            else ("pending" if head_alive else "dead"),
            resources=head_resources,
            address=f"127.0.0.1:{record['ports']['gcs']}",
            started_at=((head_info or {}).get("start_time_ms") or 0) / 1000 or None,
            utilization=ray_dashboard.fractions(head_used, head_resources) if head_used else {},
            used=head_used,
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
            resources = (info or {}).get("resources_total") or shape_resources(record, g)
            used = used_by_node.get(nid, {})
            nodes.append(
                Node(
                    id=nid,
                    group=g["groupName"],
                    kind="worker",
                    state="alive"
                    if alive
                    else ("dead" if info and info.get("state") == "DEAD" else "pending"),
                    resources=resources,
                    address=(info or {}).get("node_ip"),
                    started_at=((info or {}).get("start_time_ms") or 0) / 1000 or entry["launchedAt"],
                    utilization=ray_dashboard.fractions(used, resources) if used else {},
                    used=used,
                )
            )
        if not autoscaling_enabled(spec):
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
    elif status == "running" and record.get("head") is None:
        phase, reason = Phase.STARTING, "Starting the head node"  # created, its head not launched yet
    elif not head_alive and head_start_will_be_retried(record, max_head_restarts):
        phase, reason = Phase.STARTING, "The head node exited while starting; starting it again"
    elif not head_alive:
        phase = Phase.FAILED
        reason = record.get("failure") or head_failure(cdir)
    elif ray_nodes is None:
        started = record.get("startedAt", record["createdAt"])
        if time.time() - started > start_timeout and record.get("readyAt") is None:
            phase, reason = (
                Phase.FAILED,
                f"The head node did not answer within {start_timeout:.0f} s",
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
    steps = timeline(record, workers, facts)
    if phase == Phase.STARTING and reason is None:
        reason = waiting_for(steps, [(g.group_name, g.ready, g.desired) for g in groups])
    if from_log and reason is None:
        reason = DASHBOARD_DOWN
    if unreadable and reason is None:
        reason = unreadable
    return Cluster(
        timeline=steps,
        last_active_at=record.get("lastActiveAt"),
        name=record["name"],
        backend=backend,
        owner=record["owner"],
        phase=phase,
        spec=spec,
        created_at=record["createdAt"],
        reason=reason,
        worker_groups=groups,
        nodes=nodes,
        dashboard_available=ray_nodes is not None and not from_log,
        address=f"127.0.0.1:{record['ports']['gcs']}",
    )


def suspended_cluster(record: dict[str, Any], backend: str) -> Cluster:
    """A suspended cluster: its groups at zero, no node, no address (nothing to connect to)."""
    spec = record["spec"]
    stopping = record.get("suspendedBy") is not None
    when = record.get("suspendedAt")
    groups = [
        WorkerGroupStatus(
            group_name=g["groupName"],
            replicas=g["replicas"],
            desired=0,
            ready=0,
            min_replicas=g["minReplicas"],
            max_replicas=g["maxReplicas"],
            resources={"CPU": g.get("cpu", 1), "GPU": g.get("gpu", 0), **(g.get("resources") or {})},
        )
        for g in spec.get("workerGroups", [])
    ]
    return Cluster(
        name=record["name"],
        backend=backend,
        owner=record["owner"],
        phase=Phase.SUSPENDING if stopping else Phase.SUSPENDED,
        spec=spec,
        created_at=record["createdAt"],
        reason="Stopping its Ray nodes" if stopping else "Suspended: no Ray node runs; resume to use it",
        worker_groups=groups,
        last_active_at=record.get("lastActiveAt"),
        suspended_at=when,
    )
