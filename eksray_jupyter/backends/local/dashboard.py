"""A small client for the Ray dashboard's HTTP API (no ``import ray`` in the server)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class DashboardUnavailable(Exception):
    pass


def get_json(base_url: str, path: str, timeout: float = 2.0) -> Any:
    try:
        with urllib.request.urlopen(base_url + path, timeout=timeout) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DashboardUnavailable(str(e)) from e


def list_nodes(base_url: str) -> list[dict[str, Any]]:
    """Every node the GCS knows (alive and dead) with state, resources and times."""
    body = get_json(base_url, "/api/v0/nodes?detail=1&limit=1000")
    if not body.get("result", True):
        raise DashboardUnavailable(body.get("msg", "node listing failed"))
    data = body.get("data", {}).get("result", {})
    return list(data.get("result", data) if isinstance(data, dict) else data)


def usage_by_node(base_url: str) -> dict[str, dict[str, float]]:
    """Per-node resource utilisation (0..1) from the autoscaler's load report, keyed by node id."""
    try:
        body = get_json(base_url, "/api/cluster_status", timeout=1.0)
    except DashboardUnavailable:
        return {}
    report = (body.get("data") or {}).get("clusterStatus", {}).get("loadMetricsReport", {})
    out: dict[str, dict[str, float]] = {}
    for node_id, usage in (report.get("usageByNode") or {}).items():
        fractions = {}
        for resource, (used, total) in usage.items():
            if total and not resource.startswith(("node:", "object_store")):
                fractions[resource] = round(used / total, 3)
        out[node_id] = fractions
    return out
