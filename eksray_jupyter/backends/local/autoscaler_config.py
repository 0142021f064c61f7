"""The Ray autoscaler's config of a local cluster (``autoscaler.yaml``).

Written when a cluster with autoscaling is created and rewritten when its bounds move;
the autoscaler in the head's monitor process re-reads it and starts or stops workers
through :mod:`.provider`.
"""

from __future__ import annotations

from typing import Any

import yaml

from ...core.state_files import write_text_atomic
from .ray_start import node_memory_bytes
from .state import ClusterDir

# The node type of the head in the autoscaler's config; the provider reports the head with it.
HEAD_NODE_TYPE = "eksray.head"


def autoscaling_enabled(spec: dict[str, Any]) -> bool:
    """Whether Ray's autoscaler manages the cluster's workers (only if it has worker groups)."""
    return bool((spec.get("autoscaling") or {}).get("enabled")) and bool(spec.get("workerGroups"))


def write_autoscaler_config(cdir: ClusterDir, record: dict[str, Any]) -> None:
    """Write the cluster's ``autoscaler.yaml`` (nothing without autoscaling)."""
    spec = record["spec"]
    if not autoscaling_enabled(spec):
        return
    autoscaling = spec.get("autoscaling") or {}
    head = spec.get("head") or {}
    node_types: dict[str, Any] = {
        HEAD_NODE_TYPE: {
            "resources": {
                "CPU": head.get("cpu", 1),
                "GPU": head.get("gpu", 0),
                "memory": node_memory_bytes(head),
                **(head.get("resources") or {}),
            },
            "node_config": {},
            "max_workers": 0,
        }
    }
    for g in spec["workerGroups"]:
        # What the node will tell Ray it has (ray_start.node_args): the autoscaler packs by it.
        resources = {
            "CPU": g.get("cpu", 1),
            "GPU": g.get("gpu", 0),
            "memory": node_memory_bytes(g),
            **(g.get("resources") or {}),
        }
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
