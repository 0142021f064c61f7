"""Scaling a RayCluster's worker groups while the in-tree Ray autoscaler writes them too.

Both write ``replicas``. A scale is a JSON patch whose ``test`` ops pin what it was computed
from, so a concurrent autoscaler write fails it (409/422); it is then recomputed from fresh
state and sent again, after a jittered pause. Lowering ``replicas`` with autoscaling on
names the workers to remove in ``workersToDelete``, as the operator removes none by itself.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...core.errors import ConflictError, InvalidRequestError, NotFoundError
from ...core.spec import validate_scale_request
from .status import pod_ready, spec_of

if TYPE_CHECKING:
    from .cache import NamespaceCache
    from .kubeapi import KubeApi


def scale(
    api: KubeApi,
    cache: NamespaceCache,
    cr: dict[str, Any],
    request: Any,
    still_ours: Callable[[dict[str, Any]], bool],
    *,
    retries: int,
    not_found: str,
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> tuple[dict[str, Any], str | None]:
    """Apply a scale ``request`` to the RayCluster ``cr``, retried on fresh state after lost races.

    Returns the RayCluster as it now is and a summary of the change (None: nothing to change).
    ``still_ours(fresh)``: whether a freshly read object still belongs to the caller.
    """
    namespace, name, uid = cache.namespace, cr["metadata"]["name"], cr["metadata"].get("uid")
    for attempt in range(max(1, retries)):
        fresh = api.get_cluster(namespace, name, not_found)
        if fresh["metadata"].get("uid") != uid or not still_ours(fresh):
            raise NotFoundError(not_found)  # deleted and re-created meanwhile, maybe by someone else
        if fresh["metadata"].get("deletionTimestamp"):
            raise ConflictError(f"Cluster {name!r} is being deleted.")
        # Validated against the live values each time: the request, not a stale result, is re-applied.
        groups = validate_scale_request(spec_of(fresh, ours=True), request)
        ops, summary = scale_ops(fresh, groups, request, cache.cluster_pods(name))
        if not ops:
            return fresh, None
        try:
            return api.patch_cluster(namespace, name, ops, not_found), summary
        except (ConflictError, InvalidRequestError) as e:
            if getattr(e, "status", 0) in (409, 422) and _changed_since(api, namespace, name, fresh):
                log.info("eksray: %s/%s changed while scaling (attempt %d); retrying", namespace, name,
                         attempt + 1)  # fmt: skip
                # Jittered backoff: do not collide with the same writer again and again.
                time.sleep(random.uniform(0, min(0.4, 0.025 * 2**attempt)))
                continue
            raise
    raise ConflictError(
        f"Cluster {name!r} kept changing while it was being scaled (its autoscaler is busy); try again."
    )


def _scale_fields(cr: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (g.get("groupName"), g.get("replicas"), g.get("minReplicas"), g.get("maxReplicas"))
        for g in (cr.get("spec") or {}).get("workerGroupSpecs") or []
    ]


def _changed_since(api: KubeApi, namespace: str, name: str, seen: dict[str, Any]) -> bool:
    """Whether the scaling fields moved since ``seen`` (a 422 was a lost race, not a bad request)."""
    try:
        now = api.get_cluster(namespace, name, "gone")
    except NotFoundError:
        return False
    return _scale_fields(now) != _scale_fields(seen)


def scale_ops(
    cr: dict[str, Any], groups: list[dict[str, Any]], request: Any, pods: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], str]:
    """JSON-patch ops turning ``cr``'s groups into ``groups``, guarded by ``test`` ops.

    The tests pin exactly what the change was computed from — the group at that index
    and its replicas/min/max — so a concurrent autoscaler write fails the patch (422)
    and it is recomputed, while the operator's frequent status writes (which bump the
    resourceVersion) do not get in the way. ``pods``: the cluster's (trimmed) pods.
    """
    explicit = {
        c.get("groupName"): "replicas" in c
        for c in (request.get("workerGroups") or [])
        if isinstance(c, dict)
    }
    wanted = {g["groupName"]: g for g in groups}
    autoscaling = bool((cr.get("spec") or {}).get("enableInTreeAutoscaling"))
    ops: list[dict[str, Any]] = []
    changes = []
    for i, live in enumerate((cr.get("spec") or {}).get("workerGroupSpecs") or []):
        group = live.get("groupName")
        new = wanted.get(group)
        if new is None:
            continue
        base = f"/spec/workerGroupSpecs/{i}"
        group_ops = []
        diff = []
        for key in ("minReplicas", "maxReplicas", "replicas"):
            old_value = live.get(key)
            if new[key] == old_value:
                continue
            lowering_carried = (
                key == "replicas" and autoscaling and not explicit.get(group) and new[key] < (old_value or 0)
            )
            if lowering_carried:
                # Bounds moved down: the autoscaler picks which (idle) workers go.
                continue
            group_ops.append({"op": "add", "path": f"{base}/{key}", "value": new[key]})
            diff.append(f"{key} {old_value}→{new[key]}")
        if autoscaling and explicit.get(group) and new["replicas"] < (live.get("replicas") or 0):
            group_ops += victim_ops(base, group, live, new, pods)
        if group_ops:
            # Index paths are only safe if the group at that index is still this one.
            ops.append({"op": "test", "path": f"{base}/groupName", "value": group})
            ops += [
                {"op": "test", "path": f"{base}/{key}", "value": live[key]}
                for key in ("replicas", "minReplicas", "maxReplicas")
                if key in live
            ]
            ops += group_ops
            changes.append(f"{group}: {', '.join(diff)}")
    return ops, "; ".join(changes)


def victim_ops(
    base: str, group: str, live: dict[str, Any], new: dict[str, Any], pods: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """With autoscaling on, the operator deletes no surplus pod by itself: name them.

    Not-ready pods go first (they hold no work), then the newest.
    """
    pending = (live.get("scaleStrategy") or {}).get("workersToDelete") or []
    members = [p for p in pods if p["nodeType"] == "worker" and p["group"] == group and not p["deleting"]]
    if any(p["name"] in pending for p in members):
        raise ConflictError(
            f"The autoscaler is removing workers of group {group!r} right now; try again in a few seconds."
        )
    target = min(max(new["replicas"], new["minReplicas"]), new["maxReplicas"])
    surplus = len(members) - target
    if surplus <= 0:
        return []
    not_ready = sorted((p for p in members if not pod_ready(p)), key=lambda p: p["created"] or "")
    ready = sorted((p for p in members if pod_ready(p)), key=lambda p: p["created"] or "", reverse=True)
    victims = [p["name"] for p in (not_ready + ready)[:surplus]]
    return [{"op": "add", "path": f"{base}/scaleStrategy", "value": {"workersToDelete": victims}}]
