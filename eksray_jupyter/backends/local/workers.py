"""The worker nodes of a local cluster, listed in its ``nodes.json``.

The backend (initial and manual replicas, replacing failed workers), the bootstrap and
the autoscaler's node provider all start, record and stop workers through these
functions, under the cluster directory's lock, so every worker is handled the same way.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psutil

from ...core.processes import is_alive, process_of, spawn, terminate
from .ray_start import worker_command
from .state import ClusterDir


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

    Used both by the backend (initial and manual replicas) and by the autoscaler's node
    provider, so every worker is started, recorded and stopped the same way.
    """
    record = cdir.read()
    if record is None:
        raise RuntimeError(f"cluster directory {cdir.root} has no cluster.json")
    with cdir.locked():
        nodes = cdir.read_nodes()
        node_id = _spawn_worker(cdir, record, nodes, group_name, launched_by)
        cdir.write_nodes(nodes)
    return node_id


def replace_dead_workers(
    cdir: ClusterDir, record: dict[str, Any], targets: dict[str, int]
) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """Forget workers whose process exited and start replacements up to ``targets`` per group.

    One lock around both, so two readers (the server and a CLI) never both replace the
    same worker. Returns the dead workers and the ids of the new ones.
    """
    with cdir.locked():
        nodes = cdir.read_nodes()
        dead = [(nid, n) for nid, n in nodes.items() if not is_alive(n.get("process"))]
        for nid, _ in dead:
            nodes.pop(nid)
        started = []
        for group_name, target in targets.items():
            alive = sum(1 for n in nodes.values() if n["group"] == group_name)
            for _ in range(target - alive):
                started.append(_spawn_worker(cdir, record, nodes, group_name, launched_by="backend"))
        if dead or started:
            cdir.write_nodes(nodes)
    return dead, started


def stop_worker(cdir: ClusterDir, node_id: str) -> bool:
    """Stop one worker node (SIGTERM drains it in Ray within ~0.1 s) and forget it."""
    with cdir.locked():
        nodes = cdir.read_nodes()
        entry = nodes.pop(node_id, None)
        cdir.write_nodes(nodes)
    if entry is None:
        return False
    proc = process_of(entry.get("process"))
    if proc is not None:
        with contextlib.suppress(psutil.Error):
            family = [proc, *proc.children(recursive=True)]
            terminate(family, grace=10.0)
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
