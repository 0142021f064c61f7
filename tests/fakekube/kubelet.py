"""The kubelet for every pod in the store: binds each new pod to the one fake node and turns it
Running and Ready after ``pod_ready_delay``; tests hold pods Pending, flip readiness or fail
them. Scheduling against capacity (``FailedScheduling``) is the real scheduler's, tested on
the real control plane (tests/k8s), not simulated."""

from __future__ import annotations

import secrets
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .objects import meta_of, pod_phase
from .patches import jcopy
from .store import WatchEvent, rfc3339

if TYPE_CHECKING:
    from .operator import RayOperator

FAKE_NODE = "fake-node-0"


class PodSimulator:
    """Binding (as the default-scheduler reports it) and the kubelet, for every pod."""

    def __init__(self, op: RayOperator) -> None:
        self.op = op
        self.store = op.store
        self.pods = op.store.types["pods"]
        self._ip = 0
        self._held: set[tuple[str, str]] = set()

    def on_event(self, ev: WatchEvent) -> None:
        if ev.rtype != "pods":
            return
        meta = meta_of(ev.obj)
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if ev.type == "ADDED":
            self.op.loop.call_soon(self._bind_new_pod, key)
        elif ev.type == "DELETED":
            self._held.discard(key)

    def _bind_new_pod(self, key: tuple[str, str]) -> None:
        if not self.op.running:
            return
        ns, name = key
        pod = self.store.peek(self.pods, ns, name)
        if pod is None or meta_of(pod).get("deletionTimestamp"):
            return
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name:
            # bound at creation (spec.nodeName set by the client): just run it
            if not (pod.get("status") or {}).get("conditions"):
                self._bind(pod, node_name)
            return
        self._bind(pod, FAKE_NODE)

    def _bind(self, pod: dict[str, Any], node: str) -> None:
        meta = meta_of(pod)
        ns, name = meta.get("namespace", ""), meta["name"]
        new = jcopy(pod)
        new["spec"]["nodeName"] = node
        ts = rfc3339()
        status = new.setdefault("status", {})
        status["hostIP"] = f"192.168.0.{10 + zlib.crc32(node.encode()) % 200}"
        status["conditions"] = [
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
             "lastTransitionTime": ts},
            {"type": "Initialized", "status": "True", "lastProbeTime": None,
             "lastTransitionTime": ts},
            {"type": "Ready", "status": "False", "lastProbeTime": None, "lastTransitionTime": ts,
             "reason": "ContainersNotReady",
             "message": "containers with unready status: " + _container_names(new)},
            {"type": "ContainersReady", "status": "False", "lastProbeTime": None,
             "lastTransitionTime": ts, "reason": "ContainersNotReady",
             "message": "containers with unready status: " + _container_names(new)},
        ]  # fmt: skip
        status["containerStatuses"] = [
            {
                "name": c.get("name"),
                "image": c.get("image"),
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}},
                "lastState": {},
            }
            for c in new["spec"].get("containers") or []
        ]
        self.store.replace(self.pods, new)
        bound = self.store.peek(self.pods, ns, name)
        if bound is not None:
            self.op.recorder.record(
                bound,
                self.pods,
                "Normal",
                "Scheduled",
                f"Successfully assigned {ns}/{name} to {node}",
                component="default-scheduler",
                action="Binding",
            )
        delay = self.op.config.pod_ready_delay
        if delay is None:
            self._held.add((ns, name))
        else:
            self.op.call_later(delay, lambda: self.start_pod(ns, name))

    def start_pod(self, ns: str, name: str, ready: bool = True) -> None:
        pod = self.store.peek(self.pods, ns, name)
        if pod is None or not (pod.get("spec") or {}).get("nodeName"):
            return
        if meta_of(pod).get("deletionTimestamp") or pod_phase(pod) in ("Succeeded", "Failed"):
            return
        self._held.discard((ns, name))
        new = jcopy(pod)
        status = new.setdefault("status", {})
        ts = rfc3339()
        if not status.get("podIP"):
            self._ip += 1
            status["podIP"] = f"10.244.{self._ip // 250 % 250}.{self._ip % 250 + 2}"
            status["podIPs"] = [{"ip": status["podIP"]}]
            status["startTime"] = ts
        status["phase"] = "Running"
        for c in status.get("conditions") or []:
            if c.get("type") in ("Ready", "ContainersReady"):
                want = "True" if ready else "False"
                if c.get("status") != want:
                    c["lastTransitionTime"] = ts
                c["status"] = want
                if ready:
                    c.pop("reason", None)
                    c.pop("message", None)
                else:
                    c["reason"] = "ContainersNotReady"
                    c["message"] = "containers with unready status: " + _container_names(new)
        for cs in status.get("containerStatuses") or []:
            cs["ready"] = ready
            cs["started"] = True
            cs["imageID"] = f"docker.io/{cs.get('image')}@sha256:{'0' * 64}"
            cs["containerID"] = f"containerd://{secrets.token_hex(32)}"
            cs["state"] = {"running": {"startedAt": ts}}
        self.store.replace(self.pods, new)
        if pod_phase(pod) != "Running":
            self.op.recorder.record(
                new,
                self.pods,
                "Normal",
                "Started",
                "Started container " + _container_names(new).strip("[]").split(" ")[0],
                component="kubelet",
                action="",
                legacy=True,
                host=new["spec"]["nodeName"],
            )

    # -- test controls -----------------------------------------------------------------------

    def held(self) -> list[tuple[str, str]]:
        return sorted(self._held)

    def release(self, namespace: str | None = None, name: str | None = None) -> int:
        """Start held pods (``pod_ready_delay=None``); returns how many."""
        keys = [
            k for k in sorted(self._held)
            if (namespace is None or k[0] == namespace) and (name is None or k[1] == name)
        ]  # fmt: skip
        for ns, n in keys:
            self.start_pod(ns, n)
        return len(keys)

    def set_ready(self, namespace: str, name: str, ready: bool) -> None:
        """Flip a running pod's Ready condition (readiness probe failing / recovering)."""
        self.start_pod(namespace, name, ready=ready)

    def fail(self, namespace: str, name: str, reason: str = "Error", exit_code: int = 1) -> None:
        """Terminate a pod's containers: phase Failed."""
        pod = self.store.peek(self.pods, namespace, name)
        if pod is None:
            return
        new = jcopy(pod)
        status = new.setdefault("status", {})
        status["phase"] = "Failed"
        ts = rfc3339()
        for c in status.get("conditions") or []:
            if c.get("type") in ("Ready", "ContainersReady"):
                c.update(status="False", reason="PodFailed", lastTransitionTime=ts)
        for cs in status.get("containerStatuses") or []:
            cs["ready"] = False
            cs["state"] = {"terminated": {"exitCode": exit_code, "reason": reason, "finishedAt": ts}}
        self.store.replace(self.pods, new)


def _container_names(pod: Mapping[str, Any]) -> str:
    names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    return "[" + " ".join(names) + "]"
