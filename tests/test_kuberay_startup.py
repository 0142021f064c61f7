"""A RayCluster's start-up timeline and why its pods wait, from pods and events as the API gives them."""

from __future__ import annotations

from typing import Any

from eksray_jupyter.backends.kuberay.startup import (
    duration_seconds,
    never_fits,
    node_size,
    timeline,
    waiting_pod_reason,
)
from eksray_jupyter.backends.kuberay.status import trim_event, trim_pod

GiB = 1024**3


def pod(name: str, node_type: str = "worker", **status: Any) -> dict[str, Any]:
    raw = {
        "metadata": {
            "name": name,
            "uid": f"u-{name}",
            "creationTimestamp": "2026-12-03T10:00:00Z",
            "labels": {"ray.io/cluster": "c", "ray.io/group": "cpu", "ray.io/node-type": node_type},
        },
        "spec": {
            "containers": [{"name": "ray", "resources": {"requests": {"cpu": "64", "memory": "128Gi"}}}]
        },
        "status": {"phase": "Pending", **status},
    }
    return trim_pod(raw)


def event(pod_name: str, reason: str, message: str, at: str, type_: str = "Normal") -> dict[str, Any]:
    return trim_event(
        {
            "metadata": {"uid": f"{pod_name}-{reason}-{at}"},
            "involvedObject": {"kind": "Pod", "name": pod_name},
            "reason": reason,
            "message": message,
            "type": type_,
            "lastTimestamp": at,
        }
    )


def test_kubelet_durations_are_read_as_go_prints_them() -> None:
    assert duration_seconds("812ms") == 0.812
    assert duration_seconds("12.5s") == 12.5
    assert duration_seconds("1m2.5s") == 62.5
    assert duration_seconds("1h0m3s") == 3603
    assert duration_seconds("soon") is None


def test_each_pod_step_comes_from_its_status_and_events_in_order() -> None:
    running = pod(
        "c-head-x",
        "head",
        phase="Running",
        conditions=[
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-03T10:01:40Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-03T10:03:00Z"},
        ],
        containerStatuses=[{"name": "ray", "state": {"running": {"startedAt": "2026-12-03T10:02:45Z"}}}],
    )
    events = [
        event(
            "c-head-x",
            "FailedScheduling",
            "0/3 nodes are available: 3 Insufficient cpu.",
            "2026-12-03T10:00:01Z",
        ),
        event(
            "c-head-x",
            "TriggeredScaleUp",
            "pod triggered scale-up: [{ng-1 1->2 (max: 5)}]",
            "2026-12-03T10:00:05Z",
        ),
        event(
            "c-head-x",
            "Pulled",
            'Successfully pulled image "rayproject/ray:2.60.0" in 1m2.5s (1m2.5s '
            "including waiting). Image size: 1 bytes.",
            "2026-12-03T10:02:43Z",
        ),
    ]
    cr = {
        "metadata": {"name": "c", "creationTimestamp": "2026-12-03T09:59:59Z"},
        "status": {"conditions": [{"type": "RayClusterProvisioned", "status": "True",
                                   "lastTransitionTime": "2026-12-03T10:03:01Z"}]},
    }  # fmt: skip
    steps = timeline(cr, [running], events)
    assert [m.step for m in steps] == [
        "created",
        "pod-created",
        "not-scheduled",
        "node-provisioning",
        "pod-scheduled",
        "image-pulled",
        "container-started",
        "node-registered",
        "ready",
    ]
    pulled = next(m for m in steps if m.step == "image-pulled")
    assert pulled.seconds == 62.5 and pulled.message == "Head pod c-head-x: image pulled in 62.5 s"
    assert "cluster-autoscaler is bringing up a node" in steps[3].message


SMALL = [node_size({"metadata": {"name": f"n{i}"}, "status": {"allocatable": {"cpu": "16", "memory": "64Gi"}}})
         for i in range(2)]  # fmt: skip


def test_a_pod_larger_than_every_node_can_never_fit_and_says_what_to_change() -> None:
    waiting = pod("c-worker-cpu-a")
    words = never_fits(waiting, SMALL, memory_per_cpu_gib=2.0, memory_given=False)
    assert words == (
        "Worker pod c-worker-cpu-a can never fit: it asks for 64 CPU, 128.0 GiB memory, and the largest "
        "node has 16 CPU, 64.0 GiB memory allocatable. To fix: ask for at most 16 CPUs per pod; set its "
        "memory: unset, it is 2 GiB per CPU, 128.0 GiB here; or add a node pool with bigger nodes."
    )
    big = [
        *SMALL,
        node_size({"metadata": {"name": "b"}, "status": {"allocatable": {"cpu": "96", "memory": "256Gi"}}}),
    ]
    assert never_fits(waiting, big, 2.0, False) is None
    # A node the scheduler may not use does not count.
    cordoned = [{**n, "unschedulable": True} for n in big[2:]]
    assert never_fits(waiting, SMALL + cordoned, 2.0, False) is not None


def test_a_node_being_provisioned_is_said_instead_of_never_fits() -> None:
    waiting = pod("c-worker-cpu-a")
    failed = event("c-worker-cpu-a", "FailedScheduling", "0/2 nodes are available", "2026-12-03T10:00:01Z")
    nominated = event(
        "c-worker-cpu-a", "Nominated", "Pod should schedule on: nodeclaim/big-1", "2026-12-03T10:00:03Z"
    )
    assert waiting_pod_reason(waiting, [failed, nominated], SMALL, 2.0, False) == (
        "Waiting for a new node: Karpenter is bringing one up for worker pod c-worker-cpu-a"
    )
    # No node list (no RBAC for it): the scheduler's words.
    assert waiting_pod_reason(waiting, [failed], None, 2.0, False) == (
        "Worker pod c-worker-cpu-a cannot be scheduled yet: 0/2 nodes are available"
    )
    refused = event("c-worker-cpu-a", "NotTriggerScaleUp", "pod didn't trigger scale-up: 1 max node group size reached",
                    "2026-12-03T10:00:09Z")  # fmt: skip
    assert "no node will be added: pod didn't trigger scale-up" in (
        waiting_pod_reason(waiting, [failed, nominated, refused], None, 2.0, False) or ""
    )
