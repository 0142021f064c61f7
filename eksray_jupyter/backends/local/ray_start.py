"""The ``ray start`` command lines of local clusters' head and worker nodes.

Which flags eksray sets itself (so a user's ``rayStartParams`` may not), how a head or
worker-group shape becomes flags, and the environment that makes Ray adopt the node ids
the backend and the autoscaler's node provider track.
"""

from __future__ import annotations

import functools
import json
import secrets
import sys
from pathlib import Path
from typing import Any

from ...core.errors import FieldError, InvalidRequestError
from ...core.processes import ray_env
from ...core.ray_auth import driver_env

# RAY_FAKE_CLUSTER=1 makes `ray start --head` adopt this node id; the autoscaler must see it as the head.
HEAD_NODE_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"

GIB = 1024**3
#: Ray's list of its nodes' metrics endpoints (Prometheus file_sd format), in its temp dir.
PROMETHEUS_TARGETS = "prom_metrics_service_discovery.json"
# What a local node tells Ray it has for tasks' ``memory`` when its shape gives none: as on
# kuberay, per CPU, so Ray's ``memory`` is the cluster's, not the whole machine once per node.
MEMORY_PER_CPU_GIB = 2.0
MIN_MEMORY_GIB = 1.0


def node_memory_gib(shape: dict[str, Any]) -> float:
    """The ``memory`` Ray may schedule on a node of ``shape``, in GiB."""
    if shape.get("memory"):
        return float(shape["memory"])
    return max(MIN_MEMORY_GIB, float(shape.get("cpu", 1)) * MEMORY_PER_CPU_GIB)


def node_memory_bytes(shape: dict[str, Any]) -> int:
    return int(node_memory_gib(shape) * GIB)


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


@functools.cache
def _known_flags() -> frozenset[str]:
    from ray.scripts.scripts import start  # lazy: ray is heavy and only needed here

    names = set()
    for param in start.params:
        names.update(opt.lstrip("-") for opt in param.opts if opt.startswith("--"))
    return frozenset(names)


def check_start_params(spec: dict[str, Any]) -> None:
    """Refuse ``rayStartParams`` that eksray sets itself or that ``ray start`` does not know."""
    shapes_with_params = [spec.get("head") or {}, *spec.get("workerGroups", [])]
    if not any(shape.get("rayStartParams") for shape in shapes_with_params):
        return  # nothing to check: do not pay for importing ray
    known = _known_flags()
    errors = []
    shapes = [("head", spec.get("head") or {})] + [
        (f"workerGroups[{i}]", g) for i, g in enumerate(spec.get("workerGroups", []))
    ]
    for where, shape in shapes:
        for flag in shape.get("rayStartParams") or {}:
            path = f"{where}.rayStartParams.{flag}"
            if flag in RESERVED_FLAGS or (where != "head" and flag in HEAD_PORT_FLAGS):
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


def node_args(shape: dict[str, Any], object_store_bytes: int) -> list[str]:
    """``ray start`` flags for a node of the given head/worker-group shape."""
    args = [f"--num-cpus={shape.get('cpu', 1):g}", f"--num-gpus={int(shape.get('gpu', 0))}"]
    args.append(f"--memory={node_memory_bytes(shape)}")
    args.append("--resources=" + json.dumps(shape.get("resources") or {}, separators=(",", ":")))
    params = dict(shape.get("rayStartParams") or {})
    params.setdefault("object-store-memory", str(object_store_bytes))
    args += [f"--{key}={value}" for key, value in params.items()]
    return args


def token_file(record: dict[str, Any]) -> Path | None:
    """The cluster's Ray token file (None for a cluster made before eksray turned auth on)."""
    path = record.get("authTokenFile")
    return Path(path) if path else None


def head_command(record: dict[str, Any], autoscaling_config: Path | None) -> tuple[list[str], dict[str, str]]:
    """Argv and environment of the cluster's head; with Ray's autoscaler when given its config."""
    head = dict(record["spec"].get("head") or {})
    params = {k: v for k, v in (head.get("rayStartParams") or {}).items() if k not in HEAD_PORT_FLAGS}
    head["rayStartParams"] = params
    ports = record["ports"]
    argv = [
        *ray_command(),
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
        *node_args(head, record["objectStoreBytes"]),
    ]
    extra_env = {}
    if record.get("prometheusUrl"):
        extra_env["RAY_PROMETHEUS_HOST"] = record["prometheusUrl"]  # the dashboard's charts query it
    if autoscaling_config is not None:
        argv.append(f"--autoscaling-config={autoscaling_config}")
        # RAY_FAKE_CLUSTER makes the head adopt HEAD_NODE_ID, which the provider reports as head.
        extra_env |= {
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            # A busy laptop can take more than the default 30 s to start a raylet; do not
            # let the autoscaler give up on a node that is still starting.
            "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "120",
        }
    # Ours last: an admin's RAY_* (ray_environment) cannot turn the cluster's auth off.
    return argv, ray_env(
        {**extra_env, **driver_env(token_file(record))}, passed=record.get("rayEnvironment", [])
    )


def new_node_id() -> str:
    """A Ray node id (28 bytes hex); Ray adopts it through RAY_OVERRIDE_NODE_ID_FOR_TESTING."""
    return secrets.token_hex(28)


def worker_command(record: dict[str, Any], group_name: str) -> tuple[str, list[str], dict[str, str]]:
    """A new worker of ``group_name``: its node id, argv and environment."""
    group = next(g for g in record["spec"].get("workerGroups", []) if g["groupName"] == group_name)
    node_id = new_node_id()
    argv = [
        *ray_command(),
        "start",
        f"--address=127.0.0.1:{record['ports']['gcs']}",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={record['tempDir']}",
        "--dashboard-agent-listen-port=0",
        # The head's log monitor already reads every node's logs (one temp dir on one machine):
        # another per worker would send each line of task output to drivers once more.
        "--include-log-monitor=false",
        "--disable-usage-stats",
        "--block",
        *node_args(group, record["objectStoreBytes"]),
    ]
    env = ray_env(
        {
            "RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id,
            "RAY_CLOUD_INSTANCE_ID": node_id,
            "RAY_NODE_TYPE_NAME": group_name,
            **driver_env(token_file(record)),
        },
        passed=record.get("rayEnvironment", []),
    )
    return node_id, argv, env
