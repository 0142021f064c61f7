"""The RayCluster status the KubeRay operator writes: replica counts, desired resources, the
head's pod and service, endpoints, conditions and the state (``ready``, ``suspended``)."""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from .objects import condition, labels_of, meta_of, pod_phase, pod_ready
from .patches import jcopy, json_equal
from .quantities import format_quantity, pod_requests
from .raycluster_objects import L_NODE_TYPE
from .store import rfc3339

INT32_MAX = 2**31 - 1


def _clamp(replicas: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, replicas)) if lo <= hi else replicas


def group_desired(group: Mapping[str, Any]) -> int:
    """``utils.GetWorkerGroupDesiredReplicas``."""
    if group.get("suspend"):
        return 0
    replicas = int(group.get("replicas") or 0)
    lo = int(group.get("minReplicas") or 0)
    hi_raw = group.get("maxReplicas")
    hi = INT32_MAX if hi_raw is None else int(hi_raw)
    return _clamp(replicas, lo, hi) * max(1, int(group.get("numOfHosts") or 1))


def cluster_status(
    cluster: Mapping[str, Any],
    pods: list[dict[str, Any]],
    head_service: Mapping[str, Any] | None,
    failure: tuple[str, str] | None,
) -> dict[str, Any] | None:
    """The status for ``cluster`` with its live ``pods``, or None when only ``lastUpdateTime``
    would change. ``failure`` is the (reason, message) of a failed pod create or delete."""
    meta = meta_of(cluster)
    spec = cluster.get("spec") or {}
    old = cluster.get("status") or {}
    status: dict[str, Any] = jcopy(old)
    heads = [p for p in pods if labels_of(p).get(L_NODE_TYPE) == "head"]
    workers = [p for p in pods if labels_of(p).get(L_NODE_TYPE) == "worker"]
    groups = spec.get("workerGroupSpecs") or []
    desired_workers = sum(group_desired(g) for g in groups)
    suspended = bool(spec.get("suspend"))
    min_w = sum(int(g.get("minReplicas") or 0) * max(1, int(g.get("numOfHosts") or 1)) for g in groups)
    max_w = sum(
        int(g.get("maxReplicas") if g.get("maxReplicas") is not None else INT32_MAX)
        * max(1, int(g.get("numOfHosts") or 1))
        for g in groups
    )
    status["readyWorkerReplicas"] = sum(1 for p in workers if pod_phase(p) == "Running" and pod_ready(p))
    status["availableWorkerReplicas"] = sum(1 for p in workers if pod_phase(p) == "Running")
    status["desiredWorkerReplicas"] = 0 if suspended else desired_workers
    status["minWorkerReplicas"] = min(min_w, INT32_MAX)
    status["maxWorkerReplicas"] = min(max_w, INT32_MAX)
    status.update(desired_resources(spec, suspended))
    head_info: dict[str, Any] = {}
    head_pod = heads[0] if heads else None
    if head_pod is not None:
        head_info["podName"] = meta_of(head_pod)["name"]
        if (head_pod.get("status") or {}).get("podIP"):
            head_info["podIP"] = head_pod["status"]["podIP"]
    if head_service is not None:
        head_info["serviceName"] = meta_of(head_service)["name"]
        cluster_ip = (head_service.get("spec") or {}).get("clusterIP")
        if cluster_ip and cluster_ip != "None":
            head_info["serviceIP"] = cluster_ip
        elif "podIP" in head_info:
            head_info["serviceIP"] = head_info["podIP"]
        endpoints = {}
        for p in (head_service.get("spec") or {}).get("ports") or []:
            endpoints[p.get("name", "")] = str(p.get("nodePort") or p.get("port"))
        status["endpoints"] = endpoints
    status["head"] = head_info
    all_ready = (
        not suspended
        and head_pod is not None
        and pod_phase(head_pod) == "Running"
        and pod_ready(head_pod)
        and len(workers) == desired_workers
        and all(pod_phase(p) == "Running" and pod_ready(p) for p in workers)
    )
    ts = rfc3339()
    conds: list[dict[str, Any]] = [c for c in old.get("conditions") or [] if isinstance(c, dict)]

    def set_cond(ctype: str, cstatus: str, reason: str, message: str) -> None:
        for c in conds:
            if c.get("type") == ctype:
                if c.get("status") != cstatus:
                    c["lastTransitionTime"] = ts
                c.update(status=cstatus, reason=reason, message=message)
                return
        conds.append(
            {
                "type": ctype,
                "status": cstatus,
                "reason": reason,
                "message": message,
                "lastTransitionTime": ts,
            }
        )

    def drop_cond(ctype: str) -> None:
        conds[:] = [c for c in conds if c.get("type") != ctype]

    if head_pod is None:
        set_cond("HeadPodReady", "False", "HeadPodNotFound", "Head Pod not found")
    else:
        pc = condition(head_pod, "Ready")
        if pc is None:
            set_cond("HeadPodReady", "False", "Unknown", "")
        else:
            ok = pc.get("status") == "True"
            reason = pc.get("reason") or ("HeadPodRunningAndReady" if ok else "Unknown")
            set_cond("HeadPodReady", "True" if ok else "False", reason, pc.get("message") or "")
    prov = next((c for c in conds if c.get("type") == "RayClusterProvisioned"), None)
    if all_ready:
        if not prov or prov.get("status") != "True":
            set_cond(
                "RayClusterProvisioned",
                "True",
                "AllPodRunningAndReadyFirstTime",
                "All Ray Pods are ready for the first time",
            )
    elif not prov or prov.get("status") != "True":
        set_cond(
            "RayClusterProvisioned",
            "False",
            "RayClusterPodsProvisioning",
            "RayCluster Pods are being provisioned for first time",
        )
    if failure:
        set_cond("ReplicaFailure", "True", failure[0], failure[1])
    else:
        drop_cond("ReplicaFailure")
    if suspended:
        if pods:
            set_cond("RayClusterSuspending", "True", "RayClusterSuspending", "")
        else:
            drop_cond("RayClusterSuspending")
            set_cond("RayClusterSuspended", "True", "RayClusterSuspended", "")
    else:
        drop_cond("RayClusterSuspending")
        drop_cond("RayClusterSuspended")
    status["conditions"] = conds
    state = old.get("state")
    if suspended and not pods:
        state = "suspended"
    elif all_ready and not failure:
        state = "ready"
    elif state == "suspended":
        state = None
    if state:
        status["state"] = state
    else:
        status.pop("state", None)
    if state and state != old.get("state"):
        times = dict(old.get("stateTransitionTimes") or {})
        times[state] = ts
        status["stateTransitionTimes"] = times
    status["observedGeneration"] = meta.get("generation", 1)
    probe_old = {k: v for k, v in old.items() if k != "lastUpdateTime"}
    probe_new = {k: v for k, v in status.items() if k != "lastUpdateTime"}
    if json_equal(probe_old, probe_new):
        return None
    status["lastUpdateTime"] = ts
    return status


def desired_resources(spec: Mapping[str, Any], suspended: bool) -> dict[str, str]:
    """``desiredCPU``/``Memory``/``GPU``/``TPU``: the head's and every desired worker's requests."""
    totals: dict[str, tuple[Fraction, bool]] = {}

    def add(pod_spec: Mapping[str, Any], times: int) -> None:
        for res, (amount, binary) in pod_requests(pod_spec).items():
            prev = totals.get(res)
            totals[res] = (prev[0] + amount * times, prev[1]) if prev else (amount * times, binary)

    if not suspended:
        head = spec.get("headGroupSpec") or {}
        add(((head.get("template") or {}).get("spec")) or {}, 1)
        for g in spec.get("workerGroupSpecs") or []:
            add(((g.get("template") or {}).get("spec")) or {}, group_desired(g))

    def total(match: Any, binary_default: bool) -> str:
        amount, binary = Fraction(0), binary_default
        for res, (a, b) in totals.items():
            if match(res):
                if amount == 0:
                    binary = b
                amount += a
        return format_quantity(amount, binary)

    return {
        "desiredCPU": total(lambda r: r == "cpu", False),
        "desiredMemory": total(lambda r: r == "memory", True),
        "desiredGPU": total(lambda r: r.endswith("gpu"), False),
        "desiredTPU": total(lambda r: r == "google.com/tpu", False),
    }
