"""Kubernetes events of a RayCluster: those we record (who created, scaled or deleted it) and
those we read from the namespace cache (the operator's and the kubelet's, about the cluster
and its pods).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ...core.errors import BackendError
from ...core.models import ClusterEvent
from .names import API_VERSION, EVENT_COMPONENT, parse_time
from .status import cluster_event

if TYPE_CHECKING:
    from .cache import NamespaceCache
    from .kubeapi import KubeApi


def event_body(cr: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    """A ``Normal`` event about the RayCluster ``cr``, reported by eksray-jupyter."""
    meta = cr["metadata"]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": "RayCluster",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
        },
        "reason": reason,
        "message": message,
        "type": "Normal",
        "source": {"component": EVENT_COMPONENT},
        "reportingComponent": EVENT_COMPONENT,
        "reportingInstance": EVENT_COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def record(
    api: KubeApi,
    cr: dict[str, Any],
    reason: str,
    message: str,
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """An event on the RayCluster: kubectl and every eksray server see who did what."""
    meta = cr["metadata"]
    try:
        api.create_event(meta["namespace"], event_body(cr, reason, message))
    except BackendError as e:  # no RBAC for events: the action itself still happened
        log.debug("eksray: could not record event %s on %s: %s", reason, meta["name"], e.message)


def cluster_events(cache: NamespaceCache, cr: dict[str, Any]) -> list[ClusterEvent]:
    """The cached events of the cluster's current incarnation and of its pods."""
    meta = cr["metadata"]
    created = parse_time(meta.get("creationTimestamp")) or 0.0
    return [cluster_event(e) for e in cache.cluster_events(meta["name"], meta.get("uid"), created)]


def operator_refusal(cr: dict[str, Any], events: Iterable[dict[str, Any]]) -> str | None:
    """The operator's last Invalid* warning among the cluster's cached ``events``, while it has
    not reconciled the cluster."""
    if cr.get("status"):
        return None
    refusals = [
        e
        for e in events
        if e["kind"] == "RayCluster" and e["type"] == "Warning" and e["reason"].startswith("Invalid")
    ]
    if not refusals:
        return None
    last = max(refusals, key=lambda e: e["time"])
    return f"The KubeRay operator refused the cluster ({last['reason']}): {last['message']}"
