"""Starting, checking and stopping the Ray processes of local clusters.

A process is remembered as ``{"pid", "createTime"}`` so a recycled pid is never
mistaken for ours. Stopping a cluster only ever signals processes we can tie to it:
descendants of its own ``ray start`` processes and processes whose command line names
its private temp directory. Never a bare ``ray stop``, which would kill every Ray
process of the user on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from .state import ClusterDir

ProcessRef = dict[str, Any]

# RAY_FAKE_CLUSTER=1 makes `ray start --head` adopt this node id; the autoscaler must see it as the head.
HEAD_NODE_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"
HEAD_NODE_TYPE = "eksray.head"

GIB = 1024**3

# Flags the backend sets itself; a user's rayStartParams may not override them.
RESERVED_FLAGS = frozenset(
    {
        "address",
        "head",
        "block",
        "temp-dir",
        "node-ip-address",
        "autoscaling-config",
        "dashboard-host",
        "dashboard-agent-listen-port",
        "num-cpus",
        "num-gpus",
        "memory",
        "resources",
        "include-dashboard",
    }
)
# Ports a user may pin on the head (checked for being free before anything starts).
HEAD_PORT_FLAGS = ("port", "dashboard-port", "ray-client-server-port")


def ray_command() -> list[str]:
    """The ``ray`` CLI of the Python running us (the same environment the server uses)."""
    script = Path(sys.executable).with_name("ray")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]


def ref_of(proc: psutil.Process | subprocess.Popen[bytes]) -> ProcessRef:
    p = proc if isinstance(proc, psutil.Process) else psutil.Process(proc.pid)
    return {"pid": p.pid, "createTime": p.create_time()}


def process_of(ref: ProcessRef | None) -> psutil.Process | None:
    """The live process behind ``ref``, or None if it exited (or its pid was reused)."""
    if not ref:
        return None
    try:
        proc = psutil.Process(int(ref["pid"]))
        if abs(proc.create_time() - float(ref["createTime"])) > 0.01:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, os.WNOHANG)  # reap our own child
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
        return None


def is_alive(ref: ProcessRef | None) -> bool:
    return process_of(ref) is not None


def spawn(argv: list[str], env: dict[str, str], log_path: Path) -> ProcessRef:
    """Start a detached process (own session: a Ctrl-C in Jupyter's terminal does not reach it)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    return ref_of(proc)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0" if host == "127.0.0.1" else host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def cluster_processes(refs: list[ProcessRef], marker: str) -> list[psutil.Process]:
    """Every live process of one cluster: our roots, their descendants, and anything naming ``marker``."""
    found: dict[int, psutil.Process] = {}
    for ref in refs:
        proc = process_of(ref)
        if proc is None:
            continue
        found[proc.pid] = proc
        with contextlib.suppress(psutil.Error):
            for child in proc.children(recursive=True):
                found[child.pid] = child
    uid = os.getuid()
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["uids"] and proc.info["uids"].real != uid:
                continue
            if any(marker in arg for arg in proc.info["cmdline"] or ()):
                found[proc.pid] = proc
    found.pop(os.getpid(), None)
    return list(found.values())


def terminate(processes: list[psutil.Process], grace: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL whatever is left after ``grace`` seconds. Returns the pids signalled."""
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in processes]


def node_args(shape: dict[str, Any], object_store_bytes: int) -> list[str]:
    """``ray start`` flags for a node of the given head/worker-group shape."""
    args = [f"--num-cpus={shape.get('cpu', 1):g}", f"--num-gpus={int(shape.get('gpu', 0))}"]
    if shape.get("memory"):
        args.append(f"--memory={int(float(shape['memory']) * GIB)}")
    args.append("--resources=" + json.dumps(shape.get("resources") or {}, separators=(",", ":")))
    params = dict(shape.get("rayStartParams") or {})
    params.setdefault("object-store-memory", str(object_store_bytes))
    args += [f"--{key}={value}" for key, value in params.items()]
    return args


def ray_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "JPY_", "JUPYTER_TOKEN"))}
    env.update(
        {
            "RAY_USAGE_STATS_ENABLED": "0",
            # The local backend drives autoscaler v1 (v2 needs files the wheel does not ship).
            "RAY_enable_autoscaler_v2": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def new_node_id() -> str:
    """A Ray node id (28 bytes hex); Ray adopts it through RAY_OVERRIDE_NODE_ID_FOR_TESTING."""
    return secrets.token_hex(28)


def _worker_command(record: dict[str, Any], group_name: str) -> tuple[str, list[str], dict[str, str]]:
    group = next(g for g in record["spec"].get("workerGroups", []) if g["groupName"] == group_name)
    node_id = new_node_id()
    argv = [
        *ray_command(),
        "start",
        f"--address=127.0.0.1:{record['ports']['gcs']}",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={record['tempDir']}",
        "--dashboard-agent-listen-port=0",
        "--disable-usage-stats",
        "--block",
        *node_args(group, record["objectStoreBytes"]),
    ]
    env = ray_env(
        {
            "RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id,
            "RAY_CLOUD_INSTANCE_ID": node_id,
            "RAY_NODE_TYPE_NAME": group_name,
        }
    )
    return node_id, argv, env


def _spawn_worker(
    cdir: ClusterDir, record: dict[str, Any], nodes: dict[str, Any], group_name: str, launched_by: str
) -> str:
    """Start a worker and add it to ``nodes`` (the caller holds the lock and writes nodes.json)."""
    node_id, argv, env = _worker_command(record, group_name)
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


def log_tail(path: Path, lines: int = 1) -> str:
    """The last meaningful line(s) of a process log, for events and failure reasons."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    useful = [
        ln
        for ln in text
        if any(w in ln for w in ("Error", "error", "failed", "Failed", "timed out", "in use"))
    ]
    return " | ".join(line.strip()[:300] for line in (useful or text or ["no output"])[-lines:])


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
