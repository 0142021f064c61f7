"""A RayCluster and its pods as a ``core.models.Cluster``; Kubernetes events as ``ClusterEvent`` (pure).

Phases (the same vocabulary as the local backend):

* ``stopping``  the CR has a ``deletionTimestamp``;
* ``suspending`` ``spec.suspend`` while pods remain;
* ``suspended`` suspended with no pods (e.g. Kueue has not admitted it yet);
* ``failed``    the operator refused the spec (Invalid* event), cannot create the head
  (``ReplicaFailure``/FailedCreateHeadPod), or the head pod failed / cannot pull its image;
* ``pending``   the operator has not acted yet (no status, no pods);
* ``starting``  until the head and every group's desired workers are Running and Ready
  for the first time (``RayClusterProvisioned``);
* ``ready`` / ``scaling`` afterwards: ``scaling`` while a group has fewer or more pods than desired.

``reason`` says why a cluster is not ready, most useful first: ReplicaFailure, then a pod the
scheduler cannot place (FailedScheduling — the usual "why the autoscaler is not scaling"),
then image/crash problems.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ...core.models import Cluster, ClusterEvent, Node, Phase, Severity, WorkerGroupStatus
from . import startup
from .names import (
    ANNOTATION_SPEC,
    EVENT_COMPONENT,
    HEAD_GROUP,
    INT32_MAX,
    L_CLUSTER,
    L_GROUP,
    L_NODE_TYPE,
    number,
    parse_quantity,
    parse_time,
)

#: Container waiting reasons that do not fix themselves: the cluster is reported failed.
FATAL_WAITING = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CrashLoopBackOff"}
)
GiB = 1024**3


# --- pods ----------------------------------------------------------------------------------


def trim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The few fields status needs: keeps 1,000 cached pods small."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    containers = []
    started = []
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if (state.get("running") or {}).get("startedAt"):
            started.append(state["running"]["startedAt"])
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or {}
        containers.append(
            {
                "name": cs.get("name"),
                "ready": bool(cs.get("ready")),
                "waiting": waiting.get("reason"),
                "waitingMessage": (waiting.get("message") or "")[:300],
                "terminated": terminated.get("reason"),
                "exitCode": terminated.get("exitCode"),
            }
        )
    conditions = {
        c.get("type"): {
            "status": c.get("status"),
            "reason": c.get("reason"),
            "message": c.get("message"),
            "since": c.get("lastTransitionTime"),
        }
        for c in status.get("conditions") or []
        if c.get("type") in ("Ready", "PodScheduled")
    }
    requests = {"cpu": 0.0, "memory": 0.0, "gpu": 0.0}
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        # A request left out is its limit (the API server's default).
        for key, value in {**(res.get("limits") or {}), **(res.get("requests") or {})}.items():
            amount = parse_quantity(value) or 0
            slot = "gpu" if key.endswith("/gpu") else key
            if slot in requests:
                requests[slot] += amount
    return {
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "cluster": labels.get(L_CLUSTER, ""),
        "group": labels.get(L_GROUP, ""),
        "nodeType": labels.get(L_NODE_TYPE, ""),
        "created": meta.get("creationTimestamp"),
        "deleting": bool(meta.get("deletionTimestamp")),
        "owners": [r.get("uid") for r in meta.get("ownerReferences") or []],
        "node": (pod.get("spec") or {}).get("nodeName"),
        "phase": status.get("phase") or "Pending",
        "podIP": status.get("podIP"),
        "startTime": status.get("startTime"),
        "conditions": conditions,
        "containers": containers,
        "containerStarted": min(started) if started else None,
        "requests": requests,
    }


def pod_ready(pod: Mapping[str, Any]) -> bool:
    return (
        pod["phase"] == "Running"
        and not pod["deleting"]
        and (pod["conditions"].get("Ready") or {}).get("status") == "True"
    )


def pod_gone(pod: Mapping[str, Any]) -> bool:
    return bool(pod["deleting"]) or pod["phase"] in ("Failed", "Succeeded")


def unschedulable(pod: Mapping[str, Any]) -> str | None:
    cond = pod["conditions"].get("PodScheduled") or {}
    if cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
        return str(cond.get("message") or "no node fits")
    return None


def _container_problem(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    for c in pod["containers"]:
        if c["waiting"] in FATAL_WAITING:
            return c["waiting"], c["waitingMessage"]
    return None


# --- spec -----------------------------------------------------------------------------------


def _shape_from_template(group: Mapping[str, Any]) -> dict[str, Any]:
    """cpu/memory(GiB)/gpu/resources of a foreign group: rayStartParams, then container 0 limits."""
    params = group.get("rayStartParams") or {}
    containers = ((group.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    res = containers[0].get("resources") or {}
    amounts = {**(res.get("requests") or {}), **(res.get("limits") or {})}
    group_resources = group.get("resources") or {}
    shape: dict[str, Any] = {}
    cpu = parse_quantity(group_resources.get("CPU", params.get("num-cpus", amounts.get("cpu"))))
    if cpu is not None:
        shape["cpu"] = number(cpu)
    memory = parse_quantity(amounts.get("memory"))
    if memory is not None:
        shape["memory"] = number(round(memory / GiB, 3))
    gpus = [parse_quantity(v) for k, v in amounts.items() if k.endswith("gpu")]
    gpu = parse_quantity(group_resources.get("GPU", params.get("num-gpus"))) or sum(g or 0 for g in gpus)
    if gpu:
        shape["gpu"] = int(gpu)
    custom = {k: parse_quantity(v) for k, v in group_resources.items() if k not in ("CPU", "GPU", "memory")}
    if not custom and isinstance(params.get("resources"), str):
        try:
            custom = json.loads(params["resources"].strip().strip("'\"").replace("\\", ""))
        except ValueError:
            custom = {}
    custom = {k: number(v) for k, v in (custom or {}).items() if isinstance(v, int | float)}
    if custom:
        shape["resources"] = custom
    return shape


def derived_spec(cr: Mapping[str, Any]) -> dict[str, Any]:
    """A best-effort spec, in our schema's vocabulary, of a RayCluster eksray did not make."""
    spec = cr.get("spec") or {}
    out: dict[str, Any] = {"name": cr["metadata"]["name"], "namespace": cr["metadata"].get("namespace")}
    out["head"] = _shape_from_template(spec.get("headGroupSpec") or {})
    groups = []
    for g in spec.get("workerGroupSpecs") or []:
        groups.append(
            {
                "groupName": g.get("groupName", ""),
                "replicas": int(g.get("replicas") or 0),
                "minReplicas": int(g.get("minReplicas") or 0),
                "maxReplicas": int(g["maxReplicas"]) if g.get("maxReplicas") is not None else INT32_MAX,
                **_shape_from_template(g),
            }
        )
    out["workerGroups"] = groups
    options = spec.get("autoscalerOptions") or {}
    out["autoscaling"] = {"enabled": bool(spec.get("enableInTreeAutoscaling"))}
    for key in ("idleTimeoutSeconds", "upscalingMode"):
        if key in options:
            out["autoscaling"][key] = options[key]
    if spec.get("rayVersion"):
        out["rayVersion"] = spec["rayVersion"]
    head_containers = (((spec.get("headGroupSpec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or [{}]
    if head_containers[0].get("image"):
        out["image"] = head_containers[0]["image"]
    return out


def spec_of(cr: Mapping[str, Any], ours: bool) -> dict[str, Any]:
    """The spec shown to users: the submitted one with the CR's live replicas/min/max.

    The live values matter: the autoscaler changes ``replicas``, and a scale request is
    validated against what the cluster has now.
    """
    if not ours:
        return derived_spec(cr)
    spec = json.loads(((cr.get("metadata") or {}).get("annotations") or {})[ANNOTATION_SPEC])
    live = {g.get("groupName"): g for g in (cr.get("spec") or {}).get("workerGroupSpecs") or []}
    for g in spec.get("workerGroups") or []:
        current = live.get(g["groupName"])
        if current is None:
            continue
        g["replicas"] = int(current.get("replicas") or 0)
        g["minReplicas"] = int(current.get("minReplicas") or 0)
        if current.get("maxReplicas") is not None:
            g["maxReplicas"] = int(current["maxReplicas"])
    spec["namespace"] = cr["metadata"].get("namespace")
    return spec


def _pod_resources(pod: Mapping[str, Any], shape: Mapping[str, Any]) -> dict[str, float]:
    """What the pod requests, in Ray's names (memory in bytes): what it is charged for."""
    out = _ray_resources(shape)
    requests = pod.get("requests") or {}
    if requests.get("cpu"):
        out["CPU"] = requests["cpu"]
    if requests.get("gpu"):
        out["GPU"] = requests["gpu"]
    if requests.get("memory"):
        out["memory"] = requests["memory"]
    return out


def _ray_resources(shape: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {"CPU": shape.get("cpu", 1)}
    if shape.get("gpu"):
        out["GPU"] = shape["gpu"]
    out.update(shape.get("resources") or {})
    return out


# --- the cluster ------------------------------------------------------------------------------


def _group_desired(group: Mapping[str, Any], suspended: bool) -> int:
    if suspended or group.get("suspend"):
        return 0
    replicas = int(group.get("replicas") or 0)
    lo = int(group.get("minReplicas") or 0)
    hi = int(group["maxReplicas"]) if group.get("maxReplicas") is not None else INT32_MAX
    clamped = max(lo, min(hi, replicas)) if lo <= hi else replicas
    return clamped * max(1, int(group.get("numOfHosts") or 1))


def _conditions(cr: Mapping[str, Any], status: str = "True") -> dict[str, Mapping[str, Any]]:
    return {
        str(c.get("type")): c
        for c in (cr.get("status") or {}).get("conditions") or []
        if isinstance(c, Mapping) and c.get("status") == status
    }


def build_cluster(
    cr: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]],
    *,
    owner: str,
    backend: str,
    ours: bool,
    address: str | None,
    operator_refusal: str | None = None,
    suspended_reason: str | None = None,
    events: Iterable[Mapping[str, Any]] = (),
    node_sizes: list[Mapping[str, Any]] | None = None,
    memory_per_cpu_gib: float = 2.0,
    instance_types: Mapping[str, str] | None = None,
) -> Cluster:
    """The ``Cluster`` of a RayCluster ``cr``, its (trimmed) pods and events of it and its pods.

    ``node_sizes`` (allocatable per node, where the API lets us list nodes) tell a pod that can
    never fit from one that waits for room.
    """
    meta = cr.get("metadata") or {}
    crspec = cr.get("spec") or {}
    status = cr.get("status") or {}
    uid = meta.get("uid")
    spec = spec_of(cr, ours)
    suspended = bool(crspec.get("suspend"))
    # Pods of an earlier cluster with the same name (being garbage-collected) are not ours.
    mine = [p for p in pods if not p["owners"] or uid in p["owners"]]
    heads = [p for p in mine if p["nodeType"] == "head" and not pod_gone(p)]
    head = heads[0] if heads else None
    shapes = {g["groupName"]: g for g in spec.get("workerGroups") or []}
    pod_events: dict[str, list[Mapping[str, Any]]] = {}
    for e in events:
        if e["kind"] == "Pod":
            pod_events.setdefault(e["name"], []).append(e)

    def why_waiting(pod: Mapping[str, Any], shape: Mapping[str, Any]) -> str | None:
        return startup.waiting_pod_reason(
            pod, pod_events.get(pod["name"], []), node_sizes, memory_per_cpu_gib, bool(shape.get("memory"))
        )

    nodes: list[Node] = []
    head_shape = spec.get("head") or {}
    for p in sorted(mine, key=lambda p: (p["nodeType"] != "head", p["group"], p["created"] or "", p["name"])):
        is_head = p["nodeType"] == "head"
        group = "head" if is_head or p["group"] == HEAD_GROUP else p["group"]
        nodes.append(
            Node(
                id=p["name"],
                group=group,
                kind="head" if is_head else "worker",
                state="alive" if pod_ready(p) else ("dead" if pod_gone(p) else "pending"),
                resources=_pod_resources(p, head_shape if is_head else shapes.get(group, {})),
                address=p["podIP"],
                started_at=parse_time(p["startTime"]),
                host=p.get("node"),
                instance_type=(instance_types or {}).get(p.get("node") or ""),
            )
        )

    groups: list[WorkerGroupStatus] = []
    settled = True
    unplaced: list[str] = []
    for g in crspec.get("workerGroupSpecs") or []:
        name = g.get("groupName", "")
        live = [p for p in mine if p["nodeType"] == "worker" and p["group"] == name and not pod_gone(p)]
        ready = sum(1 for p in live if pod_ready(p))
        desired = _group_desired(g, suspended)
        settled = settled and ready == desired and len(live) == desired
        unplaced += [
            why_waiting(p, shapes.get(name, {})) or f"Worker pod {p['name']} cannot be scheduled: {m}"
            for p in live
            if (m := unschedulable(p))
        ]
        groups.append(
            WorkerGroupStatus(
                group_name=name,
                replicas=int(g.get("replicas") or 0),
                desired=desired,
                ready=ready,
                min_replicas=int(g.get("minReplicas") or 0),
                max_replicas=int(g["maxReplicas"]) if g.get("maxReplicas") is not None else INT32_MAX,
                resources=_ray_resources(shapes.get(name, {})),
            )
        )

    conditions = _conditions(cr)
    failure = conditions.get("ReplicaFailure")
    head_ready = head is not None and pod_ready(head)
    phase, reason = Phase.STARTING, None
    if meta.get("deletionTimestamp"):
        phase = Phase.STOPPING
    elif suspended:
        if "RayClusterSuspending" in conditions or any(not pod_gone(p) for p in mine):
            phase = Phase.SUSPENDING
        else:
            phase, reason = Phase.SUSPENDED, suspended_reason or "Suspended (spec.suspend is true)"
    elif operator_refusal:
        phase, reason = Phase.FAILED, operator_refusal
    elif head is None:
        if failure and failure.get("reason") == "FailedCreateHeadPod":
            phase, reason = Phase.FAILED, str(failure.get("message") or "the head pod cannot be created")
        elif not status and not mine:
            phase, reason = Phase.PENDING, "Waiting for the KubeRay operator to create the head pod"
        else:
            reason = "The head pod is being created"
    elif head["phase"] == "Failed":
        exit_info = next((c for c in head["containers"] if c["terminated"]), None)
        detail = f" ({exit_info['terminated']}, exit code {exit_info['exitCode']})" if exit_info else ""
        phase, reason = Phase.FAILED, f"The head pod {head['name']} failed{detail}"
    elif (problem := _container_problem(head)) is not None:
        phase = Phase.FAILED
        reason = f"The head pod {head['name']} cannot start: {problem[0]}" + (
            f" ({problem[1]})" if problem[1] else ""
        )
    elif not head_ready:
        placed = unschedulable(head)
        waiting = _conditions(cr, "False").get("HeadPodReady") or {}
        detail = f" ({waiting['message']})" if waiting.get("message") else ""
        if placed:
            reason = why_waiting(head, head_shape) or f"The head pod cannot be scheduled: {placed}"
        else:
            reason = f"The head pod is starting{detail}"
    else:
        provisioned = "RayClusterProvisioned" in conditions or status.get("state") == "ready"
        phase = Phase.READY if settled else (Phase.SCALING if provisioned else Phase.STARTING)
    if phase in (Phase.STARTING, Phase.SCALING) and reason is None:
        if failure:
            reason = str(failure.get("message") or failure.get("reason"))
        elif unplaced:
            reason = unplaced[0] if len(unplaced) == 1 else f"{len(unplaced)} worker pods wait: {unplaced[0]}"
        else:
            crashing = next((pr for p in mine if (pr := _container_problem(p))), None)
            if crashing:
                reason = f"A worker pod cannot start: {crashing[0]}"
    return Cluster(
        name=str(meta.get("name")),
        backend=backend,
        owner=owner,
        phase=phase,
        spec=spec,
        created_at=parse_time(meta.get("creationTimestamp")) or 0.0,
        reason=reason,
        worker_groups=groups,
        nodes=nodes,
        dashboard_available=head_ready and not meta.get("deletionTimestamp"),
        address=address,
        namespace=meta.get("namespace"),
        read_only=not ours,
        timeline=startup.timeline(cr, [p for p in mine if not pod_gone(p)], list(events)),
    )


# --- events -----------------------------------------------------------------------------------


def trim_event(ev: Mapping[str, Any]) -> dict[str, Any]:
    """A core/v1 Event reduced to what a ClusterEvent needs."""
    meta = ev.get("metadata") or {}
    involved = ev.get("involvedObject") or {}
    series = ev.get("series") or {}
    when = (
        series.get("lastObservedTime")
        or ev.get("lastTimestamp")
        or ev.get("eventTime")
        or ev.get("firstTimestamp")
        or meta.get("creationTimestamp")
    )
    component = ev.get("reportingComponent") or (ev.get("source") or {}).get("component") or ""
    return {
        "uid": meta.get("uid") or meta.get("name", ""),
        "kind": involved.get("kind", ""),
        "name": involved.get("name", ""),
        "objectUid": involved.get("uid", ""),
        "type": ev.get("type") or "Normal",
        "reason": ev.get("reason") or "",
        "message": (ev.get("message") or "")[:1000],
        "time": parse_time(when) or 0.0,
        "count": int(series.get("count") or ev.get("count") or 1),
        "component": component,
    }


def cluster_event(ev: Mapping[str, Any]) -> ClusterEvent:
    """One cached event as a ClusterEvent; pod events name their pod."""
    message = ev["message"]
    if ev["kind"] == "Pod":
        message = f"Pod {ev['name']}: {message}"
    severity = Severity.WARNING if ev["type"] == "Warning" else Severity.INFO
    return ClusterEvent(
        time=ev["time"],
        source="backend" if ev["component"] == EVENT_COMPONENT else "kubernetes",
        severity=severity,
        message=message,
        # A repeated event (series) is a new entry each time it recurs.
        id=f"k-{ev['uid']}" + (f"-{ev['count']}" if ev["count"] > 1 else ""),
        reason=ev["reason"] or None,
    )


def dashboard_event(raw: Mapping[str, Any]) -> ClusterEvent | None:
    """An entry of the Ray dashboard's ``/api/v0/cluster_events`` as a ClusterEvent."""
    try:
        when = float(raw["timestamp"])
        event_id = str(raw["event_id"])
    except (KeyError, TypeError, ValueError):
        return None
    severity = {"WARNING": Severity.WARNING, "ERROR": Severity.ERROR, "FATAL": Severity.ERROR}.get(
        str(raw.get("severity", "INFO")).upper(), Severity.INFO
    )
    source = "autoscaler" if str(raw.get("source_type", "")).upper() == "AUTOSCALER" else "ray"
    return ClusterEvent(
        time=when, source=source, severity=severity, message=str(raw.get("message", "")), id=f"a-{event_id}"
    )
