"""The worker nodes of a local cluster, listed in its ``nodes.json``.

The backend (initial and manual replicas, reconciling groups, replacing failed workers), the
bootstrap and the autoscaler's node provider all start, record and stop workers through these
functions, under the cluster directory's lock, so every worker is handled the same way. A
worker is only started while the cluster's record, read under that lock, says ``running``:
nothing starts for a cluster that is being deleted.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psutil

from ...core.processes import is_alive, process_of, spawn, terminate
from .ray_start import worker_command
from .state import ClusterDir, ClusterGone


def replicas_target(group: dict[str, Any]) -> int:
    """How many workers a group's ``replicas`` asks for, within its [min, max]."""
    return int(min(max(group["replicas"], group["minReplicas"]), group["maxReplicas"]))


def running_record(cdir: ClusterDir) -> dict[str, Any]:
    """The freshest record of a cluster that may start workers (the caller holds the lock).

    :class:`ClusterGone` if it was deleted or is being deleted.
    """
    record = cdir.current()
    if record.get("status") != "running":
        raise ClusterGone(f"{cdir.name} is {record.get('status')}")
    return record


def _spawn_worker(
    cdir: ClusterDir, record: dict[str, Any], nodes: dict[str, Any], group_name: str, launched_by: str
) -> str:
    """Start a worker and add it to ``nodes`` (the caller holds the lock and writes nodes.json)."""
    node_id, argv, env = worker_command(record, group_name)
    ref = spawn(argv, env, cdir.logs / f"worker-{group_name}-{node_id[:12]}.log")
    nodes[node_id] = {
        "group": group_name,
        "process": ref,
        "launchedAt": time.time(),
        "launchedBy": launched_by,
        "tags": {},
    }
    return node_id


def launch_worker(cdir: ClusterDir, group_name: str, launched_by: str) -> str:
    """Start one worker node of ``group_name`` and record it in nodes.json. Returns its node id.

    Used by the autoscaler's node provider (and tests), so every worker is started, recorded
    and stopped the same way. :class:`ClusterGone` if the cluster is deleted or being deleted.
    """
    with cdir.locked():
        record = running_record(cdir)
        nodes = cdir.read_nodes()
        node_id = _spawn_worker(cdir, record, nodes, group_name, launched_by)
        cdir.write_nodes(nodes)
    return node_id


def converge_group(
    cdir: ClusterDir,
    record: dict[str, Any],
    nodes: dict[str, dict[str, Any]],
    group_name: str,
    target: int,
    *,
    start: bool = True,
    stop: bool = True,
    launched_by: str = "backend",
) -> tuple[list[str], list[dict[str, Any]]]:
    """Start (``start``) or stop (``stop``) workers of one group so it has ``target`` live ones.

    The caller holds the lock, read ``record`` (running) and ``nodes`` under it, and writes
    ``nodes`` back. Stopped workers are removed from ``nodes`` and returned, newest first (they
    hold the least work); the caller ends them with :func:`terminate_workers` after releasing
    the lock. Returns the ids of the started workers and the entries of the stopped ones.
    """
    mine = sorted(
        ((nid, n) for nid, n in nodes.items() if n["group"] == group_name and is_alive(n.get("process"))),
        key=lambda kv: kv[1]["launchedAt"],
    )
    started: list[str] = []
    stopped: list[dict[str, Any]] = []
    if start:
        for _ in range(target - len(mine)):
            started.append(_spawn_worker(cdir, record, nodes, group_name, launched_by))
    if stop:
        for nid, _ in reversed(mine[target:]):
            stopped.append(nodes.pop(nid))
    return started, stopped


def terminate_workers(entries: list[dict[str, Any]], grace: float = 10.0) -> None:
    """Stop the processes of workers already removed from nodes.json (SIGTERM drains a Ray node)."""
    family: list[psutil.Process] = []
    for entry in entries:
        proc = process_of(entry.get("process"))
        if proc is not None:
            with contextlib.suppress(psutil.Error):
                family += [proc, *proc.children(recursive=True)]
    if family:
        terminate(family, grace=grace)


def stop_worker(cdir: ClusterDir, node_id: str) -> bool:
    """Stop one worker node (SIGTERM drains it in Ray within ~0.1 s) and forget it."""
    with cdir.locked():
        nodes = cdir.read_nodes()
        entry = nodes.pop(node_id, None)
        if entry is not None:
            cdir.write_nodes(nodes)
    if entry is None:
        return False
    terminate_workers([entry])
    return True


def live_workers(cdir: ClusterDir) -> dict[str, dict[str, Any]]:
    """Workers whose ``ray start`` process is still running."""
    return {nid: n for nid, n in cdir.read_nodes().items() if is_alive(n.get("process"))}


def prune_dead_workers(cdir: ClusterDir) -> list[tuple[str, dict[str, Any]]]:
    """Drop workers whose process exited on its own; return them (for events)."""
    with cdir.locked():
        nodes = cdir.read_nodes()
        dead = [(nid, n) for nid, n in nodes.items() if not is_alive(n.get("process"))]
        if dead:
            for nid, _ in dead:
                nodes.pop(nid)
            cdir.write_nodes(nodes)
    return dead
