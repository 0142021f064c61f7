"""A RayCluster's start-up timeline from its pods and their events, and why a pod waits (pure).

On EKS most of a start is not Ray's: the scheduler placing each pod (or failing to), Karpenter
or cluster-autoscaler bringing up a node, the kubelet pulling the image. Each is in the pod's
status or a Kubernetes event, stamped; this module lines them up per pod and turns a pod that
waits into plain words: "a node is being provisioned", or "it can never fit, and here is what
to change" when it asks for more than the largest node has and nothing will bring a bigger one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ...core.models import Milestone
from .names import parse_time

GiB = 1024**3

#: Events saying a node is being brought up for the pod (cluster-autoscaler, Karpenter).
PROVISIONING = {"TriggeredScaleUp": "cluster-autoscaler", "Nominated": "Karpenter"}
#: Events saying the node autoscaler will not bring one.
NOT_PROVISIONING = frozenset({"NotTriggerScaleUp"})
# "Successfully pulled image "rayproject/ray:2.9.0" in 1m2.5s (1m2.5s including waiting). Image size: ..."
_PULLED_IN = re.compile(r"\bin ((?:\d+h)?(?:\d+m)?[\d.]+(?:ms|s))")


def duration_seconds(text: str) -> float | None:
    """A Go duration as the kubelet prints it (``1m2.5s``, ``812ms``), in seconds."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:([\d.]+)(ms|s))?", text)
    if not match or not any(match.groups()):
        return None
    hours, minutes, amount, unit = match.groups()
    seconds = float(amount or 0) / (1000 if unit == "ms" else 1)
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + seconds


def _who(pod: Mapping[str, Any]) -> str:
    return f"Head pod {pod['name']}" if pod["nodeType"] == "head" else f"Worker pod {pod['name']}"


def _latest(events: Iterable[Mapping[str, Any]], *reasons: str) -> Mapping[str, Any] | None:
    found = [e for e in events if e["reason"] in reasons]
    return max(found, key=lambda e: e["time"]) if found else None


def pod_steps(pod: Mapping[str, Any], events: list[Mapping[str, Any]]) -> list[Milestone]:
    """One pod's steps: created, (not) scheduled, a node provisioned, image pulled, started, Ready."""
    who = _who(pod)
    name = pod["name"]
    steps: list[Milestone] = []
    created = parse_time(pod["created"])
    if created is not None:
        steps.append(Milestone("pod-created", created, f"{who} created", node=name))
    scheduled = pod["conditions"].get("PodScheduled") or {}
    failed = _latest(events, "FailedScheduling")
    if failed is not None:  # kept once scheduled: it says where the wait went
        steps.append(
            Milestone("not-scheduled", failed["time"], f"{who} not scheduled: {failed['message']}", node=name)
        )
    provisioning = _latest(events, *PROVISIONING)
    if provisioning is not None:
        by = PROVISIONING[provisioning["reason"]]
        steps.append(
            Milestone(
                "node-provisioning",
                provisioning["time"],
                f"{by} is bringing up a node for {who.lower()}: {provisioning['message']}",
                node=name,
            )
        )
    since = parse_time(scheduled.get("since"))
    if scheduled.get("status") == "True" and since is not None:
        where = f" on node {pod['node']}" if pod.get("node") else ""
        steps.append(Milestone("pod-scheduled", since, f"{who} scheduled{where}", node=name))
    pulled = _latest(events, "Pulled")
    if pulled is not None:
        match = _PULLED_IN.search(pulled["message"])
        took = duration_seconds(match.group(1)) if match else None
        if "already present" in pulled["message"]:
            message, took = f"{who}: image already on the node", 0.0
        else:
            message = f"{who}: image pulled" + (f" in {took:.1f} s" if took is not None else "")
        steps.append(Milestone("image-pulled", pulled["time"], message, node=name, seconds=took))
    started = parse_time(pod.get("containerStarted"))
    if started is not None:
        steps.append(Milestone("container-started", started, f"{who}: Ray container started", node=name))
    ready = pod["conditions"].get("Ready") or {}
    ready_since = parse_time(ready.get("since"))
    if ready.get("status") == "True" and ready_since is not None:
        steps.append(Milestone("node-registered", ready_since, f"{who} Ready: its Ray node is up", node=name))
    return steps


def timeline(
    cr: Mapping[str, Any], pods: list[Mapping[str, Any]], events: list[Mapping[str, Any]]
) -> list[Milestone]:
    """The steps of the cluster's current start: the CR, then each live pod's, then ready."""
    meta = cr.get("metadata") or {}
    created = parse_time(meta.get("creationTimestamp"))
    steps: list[Milestone] = []
    if created is not None:
        steps.append(Milestone("created", created, f"RayCluster {meta.get('name')} created"))
    by_pod: dict[str, list[Mapping[str, Any]]] = {}
    for e in events:
        if e["kind"] == "Pod":
            by_pod.setdefault(e["name"], []).append(e)
    for pod in pods:
        steps += pod_steps(pod, by_pod.get(pod["name"], []))
    for cond in (cr.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "RayClusterProvisioned" and cond.get("status") == "True":
            at = parse_time(cond.get("lastTransitionTime"))
            if at is not None:
                steps.append(Milestone("ready", at, "Ready: the head and every group's workers are up"))
    return sorted(steps, key=lambda m: m.at)


# --- will it ever fit? --------------------------------------------------------------------------


def _amounts(requests: Mapping[str, float]) -> str:
    parts = [f"{requests.get('cpu', 0):g} CPU", f"{requests.get('memory', 0) / GiB:.1f} GiB memory"]
    if requests.get("gpu"):
        parts.append(f"{requests['gpu']:g} GPU")
    return ", ".join(parts)


def never_fits(
    pod: Mapping[str, Any], nodes: list[Mapping[str, Any]], memory_per_cpu_gib: float, memory_given: bool
) -> str | None:
    """Plain words for a pod larger than every schedulable node, or None if one could hold it.

    ``nodes`` are allocatable sizes (cpu, memory bytes, gpu); ``memory_given`` whether the
    spec set the memory (else it is ``memory_per_cpu_gib`` per CPU, and saying so helps).
    """
    want = pod.get("requests") or {}
    usable = [n for n in nodes if not n.get("unschedulable")]
    if not usable or not want:
        return None
    if any(all(want.get(k, 0) <= n.get(k, 0) for k in ("cpu", "memory", "gpu")) for n in usable):
        return None
    largest = max(usable, key=lambda n: (n.get("gpu", 0), n.get("cpu", 0), n.get("memory", 0)))
    short = [k for k in ("cpu", "memory", "gpu") if all(want.get(k, 0) > n.get(k, 0) for n in usable)]
    advice = []
    if "cpu" in short:
        advice.append(f"ask for at most {largest.get('cpu', 0):g} CPUs per pod")
    if "memory" in short:
        if memory_given:
            advice.append(f"ask for at most {largest.get('memory', 0) / GiB:.1f} GiB of memory")
        else:
            advice.append(
                f"set its memory: unset, it is {memory_per_cpu_gib:g} GiB per CPU, "
                f"{want.get('memory', 0) / GiB:.1f} GiB here"
            )
    if "gpu" in short:
        advice.append(f"ask for at most {largest.get('gpu', 0):g} GPUs")
    advice.append("or add a node pool with bigger nodes")
    return (
        f"{_who(pod)} can never fit: it asks for {_amounts(want)}, and the largest node has "
        f"{_amounts(largest)} allocatable. To fix: {'; '.join(advice)}."
    )


def waiting_pod_reason(
    pod: Mapping[str, Any],
    events: list[Mapping[str, Any]],
    nodes: list[Mapping[str, Any]] | None,
    memory_per_cpu_gib: float,
    memory_given: bool,
) -> str | None:
    """Why an unschedulable pod waits, in plain words: a node coming, never, or the scheduler's words."""
    failed = _latest(events, "FailedScheduling")
    provisioning = _latest(events, *PROVISIONING)
    refused = _latest(events, *NOT_PROVISIONING)
    if provisioning is not None and (refused is None or provisioning["time"] >= refused["time"]):
        by = PROVISIONING[provisioning["reason"]]
        return f"Waiting for a new node: {by} is bringing one up for {_who(pod).lower()}"
    if nodes is not None:
        fits = never_fits(pod, nodes, memory_per_cpu_gib, memory_given)
        if fits:
            return fits
    if refused is not None:
        return f"{_who(pod)} cannot be scheduled and no node will be added: {refused['message']}"
    if failed is not None:
        return f"{_who(pod)} cannot be scheduled yet: {failed['message']}"
    return None


def node_size(node: Mapping[str, Any]) -> dict[str, Any]:
    """A Node's allocatable cpu, memory (bytes) and GPUs, and whether pods may land on it."""
    from .names import parse_quantity

    alloc = (node.get("status") or {}).get("allocatable") or {}
    gpus = sum(parse_quantity(v) or 0 for k, v in alloc.items() if k.endswith("/gpu"))
    taints = (node.get("spec") or {}).get("taints") or []
    return {
        "name": (node.get("metadata") or {}).get("name", ""),
        "cpu": parse_quantity(alloc.get("cpu")) or 0,
        "memory": parse_quantity(alloc.get("memory")) or 0,
        "gpu": gpus,
        "unschedulable": bool((node.get("spec") or {}).get("unschedulable"))
        or any(t.get("effect") == "NoSchedule" and "control-plane" in str(t.get("key")) for t in taints),
    }
