"""A small client for the Ray dashboard's HTTP API, for both backends (no ``import ray``).

The local backend reads a cluster's node table and utilisation from it; the kuberay backend
reads the autoscaler's events (directly, or through the API server's service proxy, which
answers with the same JSON).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from ..core.errors import BackendError

NODES_PATH = "api/v0/nodes"
NODES_QUERY = [("detail", "1"), ("limit", "1000")]
CLUSTER_STATUS_PATH = "api/cluster_status"
EVENTS_PATH = "api/v0/cluster_events"
# Ray returns the oldest events first and stops at ``limit``: ask for enough to reach the newest.
EVENTS_QUERY = [("limit", "10000")]


class DashboardUnavailable(BackendError):
    """The dashboard did not answer, or answered something that is not its API."""


def get_json(
    base_url: str,
    path: str,
    query: list[tuple[str, str]] | None = None,
    timeout: float = 2.0,
    headers: dict[str, str] | None = None,
) -> Any:
    """GET ``{base_url}/{path}?{query}`` as JSON; DashboardUnavailable if that fails.

    ``headers`` authenticate the request (Ray's token: :func:`..core.ray_auth.dashboard_headers`).
    """
    url = f"{base_url}/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DashboardUnavailable(
            f"The Ray dashboard at {base_url} does not answer ({type(e).__name__})"
        ) from e


def result_items(body: Any) -> list[Any] | None:
    """The items of a state API answer (``{"result": true, "data": {"result": {"result": [...]}}}``);
    None when the dashboard says the query failed or the answer has another shape."""
    if not isinstance(body, dict) or not body.get("result", True):
        return None
    data = (body.get("data") or {}).get("result", {})
    items = data.get("result", data) if isinstance(data, dict) else data
    return items if isinstance(items, list) else None


def list_nodes(base_url: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every node the GCS knows (alive and dead) with state, resources and times."""
    body = get_json(base_url, NODES_PATH, NODES_QUERY, headers=headers)
    items = result_items(body)
    if items is None:
        message = body.get("msg") if isinstance(body, dict) else None
        raise DashboardUnavailable(message or "node listing failed")
    return items


_RAY_NAMES = {"objectStoreMemory": "object_store_memory"}


def usage_by_node(base_url: str, headers: dict[str, str] | None = None) -> dict[str, dict[str, float]]:
    """What Ray has in use on each node, keyed by node id (:func:`usage_from_status`); empty when
    the dashboard cannot say."""
    try:
        body = get_json(base_url, CLUSTER_STATUS_PATH, timeout=1.0, headers=headers)
    except DashboardUnavailable:
        return {}
    return usage_from_status(body)


def usage_from_status(body: Any) -> dict[str, dict[str, float]]:
    """Per node id, ``{"CPU": 1.0, "memory": bytes, "object_store_memory": bytes, ...}`` from an
    ``/api/cluster_status`` answer: the autoscaler's load report (tasks' and actors' requests;
    the object store's bytes)."""
    if not isinstance(body, dict):
        return {}
    report = (body.get("data") or {}).get("clusterStatus", {}).get("loadMetricsReport", {})
    out: dict[str, dict[str, float]] = {}
    for node_id, usage in (report.get("usageByNode") or {}).items():
        used = {}
        for resource, pair in usage.items():
            if resource.startswith("node:") or not isinstance(pair, list | tuple) or len(pair) != 2:
                continue
            # The dashboard camel-cases Ray's names in this report (objectStoreMemory).
            used[_RAY_NAMES.get(resource, resource)] = float(pair[0])
        out[node_id] = used
    return out


def fractions(used: dict[str, float], total: dict[str, float]) -> dict[str, float]:
    """Used / total per resource the node has (0..1)."""
    return {
        resource: round(min(1.0, used.get(resource, 0.0) / amount), 3)
        for resource, amount in total.items()
        if isinstance(amount, int | float) and amount > 0 and not resource.startswith("node:")
    }


# Work that keeps a cluster in use (core/lifecycle.py). A driver that is merely connected (an
# idle kernel after ``ray.init()``) is not work: its DRIVER_TASK is left out, and so is Ray's
# own "driver activity", which counts every connected driver.
_OPEN_TASKS = [
    ("filter_keys", "state"),
    ("filter_predicates", "!="),
    ("filter_values", "FINISHED"),
    ("filter_keys", "state"),
    ("filter_predicates", "!="),
    ("filter_values", "FAILED"),
    ("filter_keys", "type"),
    ("filter_predicates", "!="),
    ("filter_values", "DRIVER_TASK"),
]
_LIVE_ACTORS = [("filter_keys", "state"), ("filter_predicates", "!="), ("filter_values", "DEAD")]
TASKS_PATH = "api/v0/tasks"
ACTORS_PATH = "api/v0/actors"
JOBS_PATH = "api/jobs/"


Fetch = Callable[[str, list[tuple[str, str]]], Any]


def url_fetcher(base_url: str, headers: dict[str, str] | None = None) -> Fetch:
    """GETs of the dashboard at ``base_url`` (the local backend's, or kuberay's in service mode)."""
    return lambda path, query: get_json(base_url, path, query, timeout=5.0, headers=headers)


def _count(fetch: Fetch, path: str, filters: list[tuple[str, str]]) -> int:
    body = fetch(path, [*filters, ("limit", "1"), ("detail", "0")])
    if not isinstance(body, dict) or not body.get("result", False):
        message = body.get("msg") if isinstance(body, dict) else None
        raise DashboardUnavailable(f"The Ray dashboard's {path} failed: {message or 'unexpected answer'}")
    result = (body.get("data") or {}).get("result") or {}
    if result.get("partial_failure_warning"):
        raise DashboardUnavailable(f"The Ray dashboard's {path} answered partially")
    count = result.get("num_filtered")
    if not isinstance(count, int):
        raise DashboardUnavailable(f"The Ray dashboard's {path} answered without a count")
    return count


def busy_reasons(fetch: Fetch) -> list[str]:
    """What the cluster runs or waits to run: tasks (not finished or failed, drivers left out),
    actors not dead, submitted Ray jobs pending or running. Raises DashboardUnavailable when any
    of it cannot be read (then the cluster must not be taken for idle)."""
    reasons = []
    tasks = _count(fetch, TASKS_PATH, _OPEN_TASKS)
    if tasks:
        reasons.append(f"{tasks} Ray task(s) running or waiting")
    actors = _count(fetch, ACTORS_PATH, _LIVE_ACTORS)
    if actors:
        reasons.append(f"{actors} Ray actor(s) alive")
    jobs = fetch(JOBS_PATH, [])
    if not isinstance(jobs, list):
        raise DashboardUnavailable("The Ray dashboard's job list has an unexpected shape")
    for job in jobs:
        # Only submitted jobs: a connected driver (an idle kernel) is listed as a RUNNING job too.
        if (
            isinstance(job, dict)
            and job.get("type") == "SUBMISSION"
            and job.get("status") in ("PENDING", "RUNNING")
        ):
            reasons.append(f"Ray job {job.get('submission_id') or job.get('job_id')} {job['status'].lower()}")
    return reasons
