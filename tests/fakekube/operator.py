"""Simulated cluster controllers running on the fake server's event loop.

* :class:`PodSimulator` -- the kubelet for every pod: binds it to the one fake node and
  turns it Running/Ready after a delay. Scheduling against capacity (``FailedScheduling``)
  is the real scheduler's, tested on the real control plane (tests/k8s), not simulated.
* :class:`RayClusterController` -- a subset of the KubeRay v1.7 RayCluster reconciler: head
  service, head/worker pods with the real names and labels, ``workersToDelete``, scale
  up/down, suspend, status (state, replica counts, desired resources, head, endpoints,
  conditions) and the operator's Kubernetes events.
* :class:`RayJobController` -- a small RayJob life cycle (off by default).
* :class:`RayOperator` -- owns the above; ``autoscaler_patch`` mimics the in-tree Ray
  autoscaler's JSON patch.

To add a controller: subclass :class:`Controller`, set ``watches`` (store type keys) and
implement ``keys_for(event)`` and ``reconcile(namespace, name)``; register it in
``RayOperator.__init__``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import logging
import math
import re
import secrets
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from .errors import ApiError
from .patches import jcopy, json_equal
from .selection import LabelSelector
from .store import JSON_PATCH, ResourceType, Store, WatchEvent, now, rfc3339, rfc3339_micro

log = logging.getLogger("fakekube.operator")

INT32_MAX = 2**31 - 1
RAY_GROUP = "ray.io"
OPERATOR_MANAGED_BY = "ray.io/kuberay-operator"

# label keys (ray-operator/controllers/ray/utils/constant.go)
L_CLUSTER = "ray.io/cluster"
L_NODE_TYPE = "ray.io/node-type"
L_GROUP = "ray.io/group"
L_IS_RAY_NODE = "ray.io/is-ray-node"
L_IDENTIFIER = "ray.io/identifier"
L_APP_NAME = "app.kubernetes.io/name"
L_CREATED_BY = "app.kubernetes.io/created-by"
L_REPLICA_INDEX = "ray.io/worker-group-replica-index"
L_REPLICA_NAME = "ray.io/worker-group-replica-name"
L_HOST_INDEX = "ray.io/replica-host-index"
L_ORIGIN_NAME = "ray.io/originated-from-cr-name"
L_ORIGIN_CRD = "ray.io/originated-from-crd"

DEFAULT_HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001}
METRICS_PORT = ("metrics", 8080)


# ------------------------------------------------------------------------------------------
# Quantities


_BIN = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DEC = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_QTY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(value: Any) -> tuple[Fraction, bool]:
    """Returns (amount, binary_format)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid quantity {value!r}")
    if isinstance(value, int | float):
        return Fraction(Decimal(str(value))), False
    text = str(value).strip()
    m = _QTY.match(text)
    if not m:
        raise ValueError(f"invalid quantity {value!r}")
    try:
        number = Fraction(Decimal(m.group(1)))
    except InvalidOperation:
        raise ValueError(f"invalid quantity {value!r}") from None
    suffix = m.group(2) or ""
    if suffix in _BIN:
        return number * _BIN[suffix], True
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number * Fraction(10) ** int(suffix[1:]), False
    return number * _DEC[suffix], False


def format_quantity(amount: Fraction, binary: bool) -> str:
    """Canonical Quantity string (BinarySI for binary inputs, else DecimalSI)."""
    if amount == 0:
        return "0"
    if binary and amount.denominator == 1:
        for bsuffix, bmult in sorted(_BIN.items(), key=lambda kv: -kv[1]):
            if amount % bmult == 0:
                return f"{amount // bmult}{bsuffix}"
        return str(amount.numerator)
    for suffix, mult in sorted(_DEC.items(), key=lambda kv: -kv[1]):
        scaled = amount / mult
        if scaled.denominator == 1:
            return f"{scaled.numerator}{suffix}"
    return f"{math.ceil(amount * 10**9)}n"


def pod_requests(spec: Mapping[str, Any]) -> dict[str, tuple[Fraction, bool]]:
    """Per-resource totals of a pod spec: requests, falling back to limits per resource
    (KubeRay's CalculatePodResource)."""
    totals: dict[str, tuple[Fraction, bool]] = {}
    for c in spec.get("containers") or []:
        res = (c or {}).get("resources") or {}
        merged = dict(res.get("limits") or {})
        merged.update(res.get("requests") or {})
        for name, qty in merged.items():
            try:
                amount, binary = parse_quantity(qty)
            except ValueError:
                continue
            prev = totals.get(name)
            totals[name] = (amount + prev[0], prev[1]) if prev else (amount, binary)
    return totals


# ------------------------------------------------------------------------------------------
# Configuration


@dataclass
class OperatorConfig:
    enabled: bool = True  # the KubeRay controllers (pods are simulated regardless)
    # Pod life cycle: seconds from binding to Running+Ready; None = stay Pending/not-ready
    # until PodSimulator.release() is called.
    pod_ready_delay: float | None = 0.1
    # Graceful deletion period for pods (deletionTimestamp set, then gone); 0 = immediate.
    pod_termination_delay: float = 0.0
    # KubeRay operator env switches
    enable_random_pod_delete: bool = False  # ENABLE_RANDOM_POD_DELETE
    deterministic_head_pod_name: bool = False  # ENABLE_DETERMINISTIC_HEAD_POD_NAME
    head_cluster_ip_service: bool = False  # ENABLE_RAY_HEAD_CLUSTER_IP_SERVICE
    # Make every head/worker pod creation fail (quota / admission webhook rejections).
    fail_pod_creation: bool = False
    # RayJob controller (simple life cycle); off by default: RayJobs are just stored.
    rayjob_lifecycle: bool = False
    job_duration: float = 0.5
    job_result: str = "SUCCEEDED"  # or FAILED
    # True: a Running RayJob stays Running (no job_duration timer) until the test hook
    # ``RayJobController.finish_job(ns, name, result)`` decides its outcome.
    rayjob_hold: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------
# Events


class EventRecorder:
    """Writes core/v1 Events the way the new events API shows through core/v1 (the KubeRay
    operator and the scheduler): ``eventTime``, ``reportingComponent``, ``action``, no
    ``count``/``firstTimestamp``. ``legacy=True`` gives kubelet-style events instead."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.events = store.types["events"]
        self._series: dict[tuple[str, str, str, str], str] = {}

    def record(
        self,
        regarding: Mapping[str, Any],
        rtype: ResourceType,
        etype: str,
        reason: str,
        message: str,
        *,
        component: str,
        action: str,
        legacy: bool = False,
        host: str | None = None,
        dedupe: bool = False,
    ) -> dict[str, Any] | None:
        meta = regarding.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        key = (ns, meta.get("uid", ""), reason, component)
        ts = now()
        if dedupe and key in self._series:
            existing = self.store.peek(self.events, ns, self._series[key])
            if existing is not None:
                ev = jcopy(existing)
                series = ev.get("series") or {"count": 1}
                ev["series"] = {
                    "count": int(series.get("count", 1)) + 1,
                    "lastObservedTime": rfc3339_micro(ts),
                }
                ev["message"] = message
                try:
                    return self.store.update(self.events, ns, ev["metadata"]["name"], ev)
                except ApiError:
                    return None
        involved = {
            "kind": rtype.kind,
            "namespace": ns,
            "name": meta.get("name", ""),
            "uid": meta.get("uid", ""),
            "apiVersion": rtype.api_version,
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        body: dict[str, Any] = {
            "metadata": {"name": f"{meta.get('name', 'x')}.{secrets.token_hex(8)}"},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": etype,
        }
        if legacy:
            body.update(
                {
                    "source": {"component": component, **({"host": host} if host else {})},
                    "firstTimestamp": rfc3339(ts),
                    "lastTimestamp": rfc3339(ts),
                    "count": 1,
                    "reportingComponent": component,
                    "reportingInstance": host or "",
                    "eventTime": None,
                }
            )
        else:
            body.update(
                {
                    "source": {},
                    "firstTimestamp": None,
                    "lastTimestamp": None,
                    "eventTime": rfc3339_micro(ts),
                    "reportingComponent": component,
                    "reportingInstance": f"{component}-fakekube",
                    "action": action,
                }
            )
        try:
            created = self.store.create(self.events, ns, body)
        except ApiError:  # e.g. namespace deleted meanwhile
            return None
        if dedupe:
            self._series[key] = created["metadata"]["name"]
        return created


# ------------------------------------------------------------------------------------------
# Controller plumbing


class Controller:
    """Base: coalesces reconcile requests per (namespace, name) onto the loop."""

    watches: tuple[str, ...] = ()

    def __init__(self, op: RayOperator) -> None:
        self.op = op
        self.store = op.store
        self._dirty: set[tuple[str, str]] = set()
        self._scheduled = False

    def keys_for(self, ev: WatchEvent) -> Iterable[tuple[str, str]]:
        return ()

    def enqueue(self, key: tuple[str, str]) -> None:
        self._dirty.add(key)
        if not self._scheduled:
            self._scheduled = True
            self.op.loop.call_soon(self._drain)

    def enqueue_later(self, delay: float, key: tuple[str, str]) -> None:
        self.op.call_later(delay, lambda: self.enqueue(key))

    def _drain(self) -> None:
        self._scheduled = False
        keys, self._dirty = sorted(self._dirty), set()
        for ns, name in keys:
            if not self.op.running:
                return
            try:
                self.reconcile(ns, name)
            except Exception:  # pragma: no cover - bug in the fake
                log.exception("%s reconcile of %s/%s failed", type(self).__name__, ns, name)

    def reconcile(self, namespace: str, name: str) -> None:
        raise NotImplementedError

    def resync(self) -> None:
        """Enqueue every object of the primary kind."""


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return _meta(obj).get("labels") or {}


def _cond(obj: Mapping[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return None


def pod_ready(pod: Mapping[str, Any]) -> bool:
    c = _cond(pod, "Ready")
    return bool(c and c.get("status") == "True")


def pod_phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def owner_ref(obj: Mapping[str, Any], rtype: ResourceType) -> dict[str, Any]:
    meta = _meta(obj)
    return {
        "apiVersion": rtype.api_version,
        "kind": rtype.kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


# ------------------------------------------------------------------------------------------
# Kubelet (scheduling is the real scheduler's: tests/k8s)


FAKE_NODE = "fake-node-0"


class PodSimulator:
    """default-scheduler + kubelet for every pod in the store."""

    def __init__(self, op: RayOperator) -> None:
        self.op = op
        self.store = op.store
        self.pods = op.store.types["pods"]
        self._ip = 0
        self._held: set[tuple[str, str]] = set()

    # -- events ------------------------------------------------------------------------------

    def on_event(self, ev: WatchEvent) -> None:
        if ev.rtype != "pods":
            return
        meta = _meta(ev.obj)
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if ev.type == "ADDED":
            self.op.loop.call_soon(self.try_schedule, key)
        elif ev.type == "DELETED":
            self._held.discard(key)

    # -- scheduling --------------------------------------------------------------------------

    def try_schedule(self, key: tuple[str, str]) -> None:
        if not self.op.running:
            return
        ns, name = key
        pod = self.store.peek(self.pods, ns, name)
        if pod is None or _meta(pod).get("deletionTimestamp"):
            return
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name:
            # bound at creation (spec.nodeName set by the client): just run it
            if not (pod.get("status") or {}).get("conditions"):
                self._bind(pod, node_name)
            return
        self._bind(pod, FAKE_NODE)

    def _bind(self, pod: dict[str, Any], node: str) -> None:
        meta = _meta(pod)
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
        if _meta(pod).get("deletionTimestamp") or pod_phase(pod) in ("Succeeded", "Failed"):
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

    # -- test helpers ----------------------------------------------------------------------------

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

    def admin(self, body: Mapping[str, Any]) -> None:
        action = body.get("action")
        ns, name = body.get("namespace", "default"), body.get("name")
        if action == "release":
            self.release(body.get("namespace"), name)
        elif action == "ready" and name:
            self.set_ready(ns, name, bool(body.get("ready", True)))
        elif action == "fail" and name:
            self.fail(ns, name, body.get("reason", "Error"))
        else:
            raise ApiError(400, f"unknown pod action {action!r}")


def _container_names(pod: Mapping[str, Any]) -> str:
    names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    return "[" + " ".join(names) + "]"


# ------------------------------------------------------------------------------------------
# RayCluster controller


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


_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def validate_raycluster(cluster: Mapping[str, Any]) -> tuple[str, str] | None:
    """Operator-side checks (``utils/validation.go``); returns (reason, message)."""
    name = _meta(cluster).get("name", "")
    if len(name) > 53:
        return (
            "InvalidRayClusterMetadata",
            f"RayCluster name should be no more than 53 characters, got {name}",
        )
    if not _DNS1035.match(name):
        return (
            "InvalidRayClusterMetadata",
            f"RayCluster name should be a valid DNS1035 label: {name}",
        )
    spec = cluster.get("spec") or {}
    head = spec.get("headGroupSpec") or {}
    if not ((head.get("template") or {}).get("spec") or {}).get("containers"):
        return "InvalidRayClusterSpec", "headGroupSpec should have at least one container"
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    for group in spec.get("workerGroupSpecs") or []:
        gname = group.get("groupName", "")
        if not ((group.get("template") or {}).get("spec") or {}).get("containers"):
            return (
                "InvalidRayClusterSpec",
                f"workerGroupSpec {gname} should have at least one container",
            )
        lo, hi = group.get("minReplicas"), group.get("maxReplicas")
        if lo is not None and lo < 0:
            return "InvalidRayClusterSpec", f"minReplicas ({lo}) must be greater than or equal to 0"
        if hi is not None and hi < 0:
            return "InvalidRayClusterSpec", f"maxReplicas ({hi}) must be greater than or equal to 0"
        if lo is not None and hi is not None and lo > hi:
            return (
                "InvalidRayClusterSpec",
                f"minReplicas ({lo}) must be less than or equal to maxReplicas ({hi})",
            )
        if group.get("suspend") and autoscaling:
            return (
                "InvalidRayClusterSpec",
                "suspending worker groups is not currently supported with Autoscaler enabled",
            )
    idle = (spec.get("autoscalerOptions") or {}).get("idleTimeoutSeconds")
    if idle is not None and idle < 0:
        return (
            "InvalidRayClusterSpec",
            f"autoscalerOptions.idleTimeoutSeconds should be non-negative, got {idle}",
        )
    return None


class RayClusterController(Controller):
    watches = ("ray.io/rayclusters", "pods", "services")

    def __init__(self, op: RayOperator) -> None:
        super().__init__(op)
        self.rc = self.store.types["ray.io/rayclusters"]
        self.pods = self.store.types["pods"]
        self.services = self.store.types["services"]
        self._warned: dict[tuple[str, str], tuple[Any, str]] = {}
        self._failures: dict[tuple[str, str], tuple[str, str]] = {}

    def keys_for(self, ev: WatchEvent) -> Iterable[tuple[str, str]]:
        meta = _meta(ev.obj)
        ns = meta.get("namespace", "")
        if ev.rtype == "ray.io/rayclusters":
            if ev.type == "DELETED":
                self._warned.pop((ns, meta.get("name", "")), None)
                return ()
            return [(ns, meta.get("name", ""))]
        cluster = _labels(ev.obj).get(L_CLUSTER) or _labels(ev.old or {}).get(L_CLUSTER)
        return [(ns, cluster)] if cluster else ()

    def resync(self) -> None:
        for obj in self.store.select(self.rc, copy=False):
            meta = _meta(obj)
            self.enqueue((meta["namespace"], meta["name"]))

    # -- helpers -------------------------------------------------------------------------------

    def cluster_pods(self, ns: str, name: str, **extra: str) -> list[dict[str, Any]]:
        sel = LabelSelector.from_match_labels({L_CLUSTER: name, **extra})
        return [
            p
            for p in self.store.select(self.pods, ns, sel, copy=False)
            if not _meta(p).get("deletionTimestamp")
        ]

    def event(self, cluster: Mapping[str, Any], etype: str, reason: str, message: str,
              action: str) -> None:  # fmt: skip
        self.op.recorder.record(
            cluster,
            self.rc,
            etype,
            reason,
            message,
            component="raycluster-controller",
            action=action,
        )

    @staticmethod
    def head_service_name(cluster: Mapping[str, Any]) -> str:
        head = (cluster.get("spec") or {}).get("headGroupSpec") or {}
        custom = ((head.get("headService") or {}).get("metadata") or {}).get("name")
        return custom or f"{_meta(cluster)['name']}-head-svc"

    # -- reconcile -----------------------------------------------------------------------------

    def reconcile(self, ns: str, name: str) -> None:
        if not self.op.config.enabled:
            return
        cluster = self.store.peek(self.rc, ns, name)
        if cluster is None or _meta(cluster).get("deletionTimestamp"):
            return
        spec = cluster.get("spec") or {}
        managed_by = spec.get("managedBy")
        if managed_by and managed_by != OPERATOR_MANAGED_BY:
            return
        problem = validate_raycluster(cluster)
        key = (ns, name)
        if problem:
            marker = (_meta(cluster).get("generation"), problem[0])
            if self._warned.get(key) != marker:
                self._warned[key] = marker
                self.event(cluster, "Warning", problem[0], problem[1], "Validate")
            return
        self._warned.pop(key, None)
        failure: tuple[str, str] | None = None
        if spec.get("suspend"):
            self._suspend(cluster)
        else:
            self._ensure_head_service(cluster)
            failure = self._reconcile_head(cluster) or self._reconcile_workers(cluster)
        cluster = self.store.peek(self.rc, ns, name)
        if cluster is not None:
            self._update_status(cluster, failure)
            if failure:
                # the real controller requeues with backoff after a failed reconcile
                self.enqueue_later(2.0, key)

    def _suspend(self, cluster: Mapping[str, Any]) -> None:
        meta = _meta(cluster)
        ns, name = meta["namespace"], meta["name"]
        for pod in self.cluster_pods(ns, name):
            pname = _meta(pod)["name"]
            with _suppress_api():
                self.store.delete(self.pods, ns, pname)
                self.event(cluster, "Normal", "DeletedPod", f"Deleted pod {ns}/{pname}", "Delete")

    def _ensure_head_service(self, cluster: Mapping[str, Any]) -> None:
        meta = _meta(cluster)
        ns, name = meta["namespace"], meta["name"]
        svc_name = self.head_service_name(cluster)
        if self.store.peek(self.services, ns, svc_name) is not None:
            return
        spec = cluster.get("spec") or {}
        head = spec.get("headGroupSpec") or {}
        container = (((head.get("template") or {}).get("spec") or {}).get("containers") or [{}])[0]
        ports: list[dict[str, Any]] = []
        for p in container.get("ports") or []:
            pname = p.get("name") or f"{p.get('containerPort')}-port"
            ports.append({"name": pname, "port": p["containerPort"], "protocol": p.get("protocol", "TCP")})
        if not ports:
            ports = [{"name": k, "port": v, "protocol": "TCP"} for k, v in DEFAULT_HEAD_PORTS.items()]
        if not any(p["name"] == METRICS_PORT[0] for p in ports):
            ports.append({"name": METRICS_PORT[0], "port": METRICS_PORT[1], "protocol": "TCP"})
        for p in ports:
            p["appProtocol"] = "tcp"
            p["targetPort"] = p["port"]
        svc_type = head.get("serviceType") or "ClusterIP"
        selector = {
            L_CLUSTER: name,
            L_NODE_TYPE: "head",
            L_IDENTIFIER: f"{name}-head",
            L_APP_NAME: "kuberay",
            L_CREATED_BY: "kuberay-operator",
        }
        custom = head.get("headService") or {}
        svc_spec: dict[str, Any] = {"selector": selector, "ports": ports, "type": svc_type}
        if svc_type == "ClusterIP" and not self.op.config.head_cluster_ip_service:
            svc_spec["clusterIP"] = "None"
            svc_spec["publishNotReadyAddresses"] = True
        svc_spec.update({k: v for k, v in (custom.get("spec") or {}).items() if k != "selector"})
        labels = {**selector, **(((custom.get("metadata") or {}).get("labels")) or {})}
        body = {
            "metadata": {
                "name": svc_name,
                "labels": labels,
                "annotations": dict(spec.get("headServiceAnnotations") or {}),
                "ownerReferences": [owner_ref(cluster, self.rc)],
            },
            "spec": svc_spec,
        }
        try:
            self.store.create(self.services, ns, body)
        except ApiError as err:
            self.event(
                cluster,
                "Warning",
                "FailedToCreateService",
                f"Failed to create service {ns}/{svc_name}, {err.message}",
                "Create",
            )
            return
        self.event(cluster, "Normal", "CreatedService", f"Created service {ns}/{svc_name}", "Create")

    def _pod_body(
        self,
        cluster: Mapping[str, Any],
        node_type: str,
        group: Mapping[str, Any],
        extra_labels: Mapping[str, str],
    ) -> dict[str, Any]:
        meta = _meta(cluster)
        ns, name = meta["namespace"], meta["name"]
        spec = cluster.get("spec") or {}
        template = jcopy(group.get("template") or {})
        tmeta = template.get("metadata") or {}
        pod_spec = template.get("spec") or {}
        group_name = "headgroup" if node_type == "head" else group.get("groupName", "")
        labels = dict(tmeta.get("labels") or {})
        labels.update(
            {
                L_CLUSTER: name,
                L_NODE_TYPE: node_type,
                L_GROUP: group_name,
                L_IS_RAY_NODE: "yes",
                L_IDENTIFIER: f"{name}-{node_type}",
                L_APP_NAME: "kuberay",
                L_CREATED_BY: "kuberay-operator",
            }
        )
        labels.update(extra_labels)
        for k in (L_ORIGIN_NAME, L_ORIGIN_CRD):
            if k in _labels(cluster):
                labels[k] = _labels(cluster)[k]
        svc = self.head_service_name(cluster)
        fqdn = f"{svc}.{ns}.svc.cluster.local"
        params = dict(group.get("rayStartParams") or {})
        containers = pod_spec.get("containers") or []
        if containers:
            c0 = containers[0]
            env = [e for e in c0.get("env") or [] if e.get("name") not in _INJECTED_ENV]
            env += [
                {"name": "RAY_CLUSTER_NAME", "value": name},
                {"name": "RAY_CLUSTER_NAMESPACE", "value": ns},
                {"name": "FQ_RAY_IP", "value": fqdn},
                {"name": "RAY_IP", "value": svc},
                {"name": "RAY_PORT", "value": "6379"},
                {"name": "RAY_ADDRESS", "value": f"{fqdn}:6379"},
                {"name": "RAY_USAGE_STATS_KUBERAY_IN_USE", "value": "1"},
                {"name": "KUBERAY_GEN_RAY_START_CMD", "value": _ray_start(node_type, params, fqdn)},
            ]
            c0["env"] = env
            annotations = tmeta.get("annotations") or {}
            if annotations.get("ray.io/overwrite-container-cmd") != "true":
                c0["command"] = ["/bin/bash", "-c", "--"]
                c0["args"] = [f"ulimit -n 65536; {_ray_start(node_type, params, fqdn)}"]
        if node_type == "head" and spec.get("enableInTreeAutoscaling"):
            opts = spec.get("autoscalerOptions") or {}
            image = opts.get("image") or (containers[0].get("image") if containers else "")
            containers.append(
                {
                    "name": "autoscaler",
                    "image": image,
                    "imagePullPolicy": opts.get("imagePullPolicy") or "IfNotPresent",
                    "command": ["/bin/bash", "-lc", "--"],
                    "args": [
                        "ray kuberay-autoscaler --cluster-name $(RAY_CLUSTER_NAME) "
                        "--cluster-namespace $(RAY_CLUSTER_NAMESPACE)"
                    ],
                    "env": [
                        {"name": "RAY_CLUSTER_NAME", "value": name},
                        {"name": "RAY_CLUSTER_NAMESPACE", "value": ns},
                        {"name": "KUBERAY_CRD_VER", "value": "v1"},
                    ],
                    "resources": opts.get("resources")
                    or {
                        "limits": {"cpu": "500m", "memory": "512Mi"},
                        "requests": {"cpu": "500m", "memory": "512Mi"},
                    },
                }
            )
            pod_spec.setdefault("serviceAccountName", name)
        if node_type == "head" and self.op.config.deterministic_head_pod_name:
            naming: dict[str, str] = {"name": f"{name}-head"}
        else:
            prefix = f"{name}-head" if node_type == "head" else f"{name}-{group_name}-worker"
            naming = {"generateName": prefix.lower()[:50] + "-"}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                **naming,
                "namespace": ns,
                "labels": labels,
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [owner_ref(cluster, self.rc)],
            },
            "spec": pod_spec,
        }

    def _create_pod(
        self,
        cluster: Mapping[str, Any],
        node_type: str,
        group: Mapping[str, Any],
        extra_labels: Mapping[str, str] | None = None,
    ) -> tuple[str, str] | None:
        """Returns (failure reason, message) on failure."""
        meta = _meta(cluster)
        ns, cname = meta["namespace"], meta["name"]
        kind = "head" if node_type == "head" else "worker"
        try:
            if self.op.config.fail_pod_creation:
                raise ApiError(
                    403,
                    f'pods "{cname}-{kind}" is forbidden: exceeded quota: compute-resources',
                    "Forbidden",
                )
            pod = self.store.create(
                self.pods, ns, self._pod_body(cluster, node_type, group, extra_labels or {})
            )
        except ApiError as err:
            ev = "FailedToCreateHeadPod" if kind == "head" else "FailedToCreateWorkerPod"
            cond = "FailedCreateHeadPod" if kind == "head" else "FailedCreateWorkerPod"
            msg = f"Failed to create {kind} Pod for the cluster {ns}/{cname}, {err.message}"
            self.event(cluster, "Warning", ev, msg, "Create")
            return cond, msg
        pname = pod["metadata"]["name"]
        reason = "CreatedHeadPod" if kind == "head" else "CreatedWorkerPod"
        self.event(cluster, "Normal", reason, f"Created {kind} Pod {ns}/{pname}", "Create")
        return None

    def _delete_pod(
        self, cluster: Mapping[str, Any], pod: Mapping[str, Any], reason: str, message: str
    ) -> tuple[str, str] | None:
        meta = _meta(cluster)
        ns, pname = meta["namespace"], _meta(pod)["name"]
        try:
            self.store.delete(self.pods, ns, pname)
        except ApiError as err:
            if err.code == 404:
                return None
            head = reason == "DeletedHeadPod"
            ev = "FailedToDeleteHeadPod" if head else "FailedToDeleteWorkerPod"
            cond = "FailedDeleteHeadPod" if head else "FailedDeleteWorkerPod"
            msg = f"Failed deleting pod {ns}/{pname}, {err.message}"
            self.event(cluster, "Warning", ev, msg, "Delete")
            return cond, msg
        self.event(cluster, "Normal", reason, message, "Delete")
        return None

    def _reconcile_head(self, cluster: Mapping[str, Any]) -> tuple[str, str] | None:
        meta = _meta(cluster)
        ns, name = meta["namespace"], meta["name"]
        heads = self.cluster_pods(ns, name, **{L_NODE_TYPE: "head"})
        for pod in list(heads):
            if pod_phase(pod) in ("Failed", "Succeeded"):
                restart = (pod.get("spec") or {}).get("restartPolicy", "Always")
                msg = (
                    f"Deleted head Pod {ns}/{_meta(pod)['name']}; Pod status: {pod_phase(pod)}; "
                    f"Pod restart policy: {restart}"
                )
                failure = self._delete_pod(cluster, pod, "DeletedHeadPod", msg)
                if failure:
                    return failure
                heads.remove(pod)
        if not heads:
            head = (cluster.get("spec") or {}).get("headGroupSpec") or {}
            return self._create_pod(cluster, "head", head)
        return None

    def _reconcile_workers(self, cluster: Mapping[str, Any]) -> tuple[str, str] | None:
        meta = _meta(cluster)
        ns, name = meta["namespace"], meta["name"]
        spec = cluster.get("spec") or {}
        autoscaling = bool(spec.get("enableInTreeAutoscaling"))
        for group in spec.get("workerGroupSpecs") or []:
            gname = group.get("groupName", "")
            pods = self.cluster_pods(ns, name, **{L_NODE_TYPE: "worker", L_GROUP: gname})
            # unhealthy pods are deleted (and replaced below)
            for pod in list(pods):
                if pod_phase(pod) in ("Failed", "Succeeded"):
                    pname = _meta(pod)["name"]
                    msg = (
                        f"Deleted worker Pod {ns}/{pname}; Pod status: {pod_phase(pod)}; Pod "
                        f"restart policy: {(pod.get('spec') or {}).get('restartPolicy', 'Always')}"
                    )
                    failure = self._delete_pod(cluster, pod, "DeletedWorkerPod", msg)
                    if failure:
                        return failure
                    pods.remove(pod)
            # workersToDelete: always honoured
            to_delete = set((group.get("scaleStrategy") or {}).get("workersToDelete") or [])
            for pod in list(pods):
                pname = _meta(pod)["name"]
                if pname in to_delete:
                    failure = self._delete_pod(cluster, pod, "DeletedWorkerPod", f"Deleted pod {ns}/{pname}")
                    if failure:
                        return failure
                    pods.remove(pod)
            desired = group_desired(group)
            if group.get("suspend"):
                for pod in list(pods):
                    pname = _meta(pod)["name"]
                    failure = self._delete_pod(cluster, pod, "DeletedWorkerPod", f"Deleted pod {ns}/{pname}")
                    if failure:
                        return failure
                continue
            hosts = max(1, int(group.get("numOfHosts") or 1))
            diff = desired - len(pods)
            if diff > 0:
                used = {_labels(p).get(L_REPLICA_INDEX) for p in pods}
                index = 0
                for _ in range(diff // hosts if hosts > 1 else diff):
                    while str(index) in used:
                        index += 1
                    used.add(str(index))
                    extra = {L_REPLICA_INDEX: str(index)}
                    if hosts > 1:
                        replica = f"{gname}-{secrets.token_hex(3)[:5]}"
                        for host in range(hosts):
                            failure = self._create_pod(
                                cluster,
                                "worker",
                                group,
                                {**extra, L_REPLICA_NAME: replica, L_HOST_INDEX: str(host)},
                            )
                            if failure:
                                return failure
                    else:
                        failure = self._create_pod(cluster, "worker", group, extra)
                        if failure:
                            return failure
            elif diff < 0 and (not autoscaling or self.op.config.enable_random_pod_delete):
                # Prefer pods that are not running yet, newest first.
                victims = sorted(
                    pods,
                    key=lambda p: (
                        pod_phase(p) == "Running",
                        _meta(p).get("creationTimestamp", ""),
                        _meta(p).get("resourceVersion", "0").zfill(20),
                    ),
                )
                for pod in victims[:-diff]:
                    pname = _meta(pod)["name"]
                    failure = self._delete_pod(
                        cluster,
                        pod,
                        "DeletedWorkerPod",
                        f"Deleted worker Pod {ns}/{pname}; Pod status: {pod_phase(pod) or 'Pending'}",
                    )
                    if failure:
                        return failure
        return None

    # -- status --------------------------------------------------------------------------------

    def _update_status(self, cluster: Mapping[str, Any], failure: tuple[str, str] | None) -> None:
        meta = _meta(cluster)
        ns, name = meta["namespace"], meta["name"]
        spec = cluster.get("spec") or {}
        old = cluster.get("status") or {}
        status: dict[str, Any] = jcopy(old)
        pods = self.cluster_pods(ns, name)
        heads = [p for p in pods if _labels(p).get(L_NODE_TYPE) == "head"]
        workers = [p for p in pods if _labels(p).get(L_NODE_TYPE) == "worker"]
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
        status.update(self._desired_resources(spec, suspended))
        svc = self.store.peek(self.services, ns, self.head_service_name(cluster))
        head_info: dict[str, Any] = {}
        head_pod = heads[0] if heads else None
        if head_pod is not None:
            head_info["podName"] = _meta(head_pod)["name"]
            if (head_pod.get("status") or {}).get("podIP"):
                head_info["podIP"] = head_pod["status"]["podIP"]
        if svc is not None:
            head_info["serviceName"] = _meta(svc)["name"]
            cluster_ip = (svc.get("spec") or {}).get("clusterIP")
            if cluster_ip and cluster_ip != "None":
                head_info["serviceIP"] = cluster_ip
            elif "podIP" in head_info:
                head_info["serviceIP"] = head_info["podIP"]
            endpoints = {}
            for p in (svc.get("spec") or {}).get("ports") or []:
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
            pc = _cond(head_pod, "Ready")
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
            return
        status["lastUpdateTime"] = ts
        try:
            self.store.write_status(self.rc, ns, name, status)
        except ApiError as err:
            log.warning("status write for %s/%s failed: %s", ns, name, err.message)

    @staticmethod
    def _desired_resources(spec: Mapping[str, Any], suspended: bool) -> dict[str, str]:
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


_INJECTED_ENV = {
    "RAY_CLUSTER_NAME",
    "RAY_CLUSTER_NAMESPACE",
    "FQ_RAY_IP",
    "RAY_IP",
    "RAY_PORT",
    "RAY_ADDRESS",
    "RAY_USAGE_STATS_KUBERAY_IN_USE",
    "KUBERAY_GEN_RAY_START_CMD",
}


def _ray_start(node_type: str, params: Mapping[str, Any], fqdn: str) -> str:
    args = ["ray start"]
    if node_type == "head":
        args.append("--head")
        params = {"dashboard-host": "0.0.0.0", "metrics-export-port": "8080", **params}
    else:
        args.append(f"--address={fqdn}:6379")
        params = {"metrics-export-port": "8080", **params}
    for k, v in params.items():
        args.append(f"--{k}={v}")
    args.append("--block")
    return " ".join(args)


class _suppress_api:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> bool:
        return exc_type is not None and issubclass(exc_type, ApiError)


# ------------------------------------------------------------------------------------------
# RayJob controller (simple)


class RayJobController(Controller):
    """RayJob life cycle, enabled with ``OperatorConfig.rayjob_lifecycle``:
    ``Initializing`` (creates ``<job>-<rand5>`` from ``rayClusterSpec`` or resolves
    ``clusterSelector``) -> ``Running`` once that cluster is ``ready`` -> after
    ``job_duration`` seconds ``Complete`` with jobStatus ``job_result`` (deleting the cluster
    if ``shutdownAfterJobFinishes``, after ``ttlSecondsAfterFinished``). Suspend deletes the
    cluster. The Ray job itself is not simulated beyond that."""

    watches = ("ray.io/rayjobs", "ray.io/rayclusters")

    def __init__(self, op: RayOperator) -> None:
        super().__init__(op)
        self.rj = self.store.types["ray.io/rayjobs"]
        self.rc = self.store.types["ray.io/rayclusters"]
        self._timers: set[tuple[str, str, str]] = set()

    def keys_for(self, ev: WatchEvent) -> Iterable[tuple[str, str]]:
        meta = _meta(ev.obj)
        ns = meta.get("namespace", "")
        if ev.rtype == "ray.io/rayjobs":
            return [] if ev.type == "DELETED" else [(ns, meta.get("name", ""))]
        labels = _labels(ev.obj)
        if labels.get(L_ORIGIN_CRD) == "RayJob" and labels.get(L_ORIGIN_NAME):
            return [(ns, labels[L_ORIGIN_NAME])]
        # clusterSelector users
        cname = meta.get("name", "")
        return [
            (ns, _meta(j)["name"])
            for j in self.store.select(self.rj, ns, copy=False)
            if ((j.get("spec") or {}).get("clusterSelector") or {}).get(L_CLUSTER) == cname
        ]

    def resync(self) -> None:
        for obj in self.store.select(self.rj, copy=False):
            meta = _meta(obj)
            self.enqueue((meta["namespace"], meta["name"]))

    def event(self, job: Mapping[str, Any], etype: str, reason: str, message: str,
              action: str) -> None:  # fmt: skip
        self.op.recorder.record(
            job, self.rj, etype, reason, message, component="rayjob-controller", action=action
        )

    def reconcile(self, ns: str, name: str) -> None:
        cfg = self.op.config
        if not (cfg.enabled and cfg.rayjob_lifecycle):
            return
        job = self.store.peek(self.rj, ns, name)
        if job is None or _meta(job).get("deletionTimestamp"):
            return
        spec = job.get("spec") or {}
        status: dict[str, Any] = jcopy(job.get("status") or {})
        deploy = status.get("jobDeploymentStatus") or ""
        ts = rfc3339()
        selector = (spec.get("clusterSelector") or {}).get(L_CLUSTER)
        if spec.get("suspend") and deploy not in ("Complete", "Failed"):
            cname = status.get("rayClusterName")
            if cname and not selector and self.store.peek(self.rc, ns, cname) is not None:
                with _suppress_api():
                    self.store.delete(self.rc, ns, cname)
                    self.event(job, "Normal", "DeletedRayCluster",
                               f"Deleted RayCluster {ns}/{cname}", "Delete")  # fmt: skip
            status.update(jobDeploymentStatus="Suspended", jobStatus="")
            status.pop("rayClusterName", None)
            return self._write(job, status)
        if deploy in ("", "Suspended", "Retrying"):  # Retrying: a new cluster and Ray job id
            status["jobId"] = spec.get("jobId") or f"{name}-{secrets.token_hex(3)[:5]}"
            status["jobDeploymentStatus"] = "Initializing"
            status["jobStatus"] = ""
            status["startTime"] = ts
            deadline = spec.get("activeDeadlineSeconds")
            if deadline:
                self._after(float(deadline), ns, name, "deadline")
            if selector:
                status["rayClusterName"] = selector
            else:
                cname = f"{name}-{secrets.token_hex(3)[:5]}"
                body = {
                    "apiVersion": "ray.io/v1",
                    "kind": "RayCluster",
                    "metadata": {
                        "name": cname,
                        # As KubeRay: the RayJob's labels and annotations are copied.
                        "labels": {**_labels(job), L_ORIGIN_NAME: name, L_ORIGIN_CRD: "RayJob"},
                        "annotations": dict(_meta(job).get("annotations") or {}),
                        "ownerReferences": [owner_ref(job, self.rj)],
                    },
                    "spec": jcopy(spec.get("rayClusterSpec") or {}),
                }
                try:
                    self.store.create(self.rc, ns, body)
                except ApiError as err:
                    self.event(job, "Warning", "FailedToCreateRayCluster",
                               f"Failed to create RayCluster {ns}/{cname}: {err.message}",
                               "Create")  # fmt: skip
                    status.update(jobDeploymentStatus="Failed", reason="SubmissionFailed",
                                  message=err.message, endTime=ts)  # fmt: skip
                    return self._write(job, status)
                self.event(job, "Normal", "CreatedRayCluster",
                           f"Created RayCluster {ns}/{cname}", "Create")  # fmt: skip
                status["rayClusterName"] = cname
            return self._write(job, status)
        cname = status.get("rayClusterName") or ""
        cluster = self.store.peek(self.rc, ns, cname) if cname else None
        if deploy == "Initializing":
            if cluster is None:
                if selector:
                    self.event(job, "Warning", "RayClusterNotFound",
                               f"RayCluster {ns}/{selector} set in the clusterSelector is not "
                               "found", "Reconcile")  # fmt: skip
                return None
            cstatus = cluster.get("status") or {}
            status["rayClusterStatus"] = jcopy(cstatus)
            if cstatus.get("state") != "ready":
                return self._write(job, status)
            svc = RayClusterController.head_service_name(cluster)
            status["dashboardURL"] = f"{svc}.{ns}.svc.cluster.local:8265"
            mode = spec.get("submissionMode") or "K8sJobMode"
            if mode == "InteractiveMode" and not spec.get("jobId"):
                status["jobDeploymentStatus"] = "Waiting"
                return self._write(job, status)
            status.update(jobDeploymentStatus="Running", jobStatus="RUNNING")
            status["rayJobInfo"] = {"startTime": ts}
            if not self.op.config.rayjob_hold:
                self._after(self.op.config.job_duration, ns, name, "finish")
            return self._write(job, status)
        if deploy == "Waiting" and spec.get("jobId"):
            status.update(jobDeploymentStatus="Running", jobStatus="RUNNING", jobId=spec["jobId"])
            self._after(self.op.config.job_duration, ns, name, "finish")
            return self._write(job, status)
        if deploy == "Running" and cluster is not None:
            status["rayClusterStatus"] = jcopy(cluster.get("status") or {})
            return self._write(job, status)
        if deploy in ("Complete", "Failed") and spec.get("shutdownAfterJobFinishes") and cluster:
            if selector:
                return None
            end = status.get("endTime") or ts
            ttl = int(spec.get("ttlSecondsAfterFinished") or 0)
            elapsed = (now() - _parse_time(end)).total_seconds()
            if elapsed >= ttl:
                with _suppress_api():
                    self.store.delete(self.rc, ns, cname)
                    self.event(job, "Normal", "DeletedRayCluster",
                               f"Deleted RayCluster {ns}/{cname}", "Delete")  # fmt: skip
            else:
                self._after(ttl - elapsed, ns, name, "ttl")
        return None

    def finish_job(self, namespace: str, name: str, result: str = "SUCCEEDED") -> None:
        """Test hook (any thread): the running RayJob's Ray job ends with ``result``."""
        self.op.call_later(0.0, lambda: self.finish(namespace, name, result))

    def _deadline(self, ns: str, name: str) -> None:
        job = self.store.peek(self.rj, ns, name)
        status = jcopy((job or {}).get("status") or {})
        if job is None or status.get("jobDeploymentStatus") in ("Complete", "Failed", "", None):
            return
        ts = rfc3339()
        seconds = (job.get("spec") or {}).get("activeDeadlineSeconds")
        status.update(jobDeploymentStatus="Failed", reason="DeadlineExceeded", endTime=ts,
                      message=f"The RayJob has passed the activeDeadlineSeconds ({seconds} s)")  # fmt: skip
        if status.get("jobStatus") in ("PENDING", "RUNNING"):
            status["jobStatus"] = "STOPPED"  # the operator stops the Ray job
        status["failed"] = int(status.get("failed") or 0) + 1
        self._write(job, status)
        self.enqueue((ns, name))

    def finish(self, ns: str, name: str, result: str | None = None) -> None:
        job = self.store.peek(self.rj, ns, name)
        if job is None or (job.get("status") or {}).get("jobDeploymentStatus") != "Running":
            return
        status = jcopy(job.get("status") or {})
        result = result or self.op.config.job_result
        ts = rfc3339()
        status.update(jobStatus=result, endTime=ts)
        status["rayJobInfo"] = {**(status.get("rayJobInfo") or {}), "endTime": ts}
        if result == "SUCCEEDED":
            status["jobDeploymentStatus"] = "Complete"
            status["succeeded"] = int(status.get("succeeded") or 0) + 1
        else:
            status.update(jobDeploymentStatus="Failed", reason="AppFailed",
                          message="Job entrypoint command failed")  # fmt: skip
            status["failed"] = int(status.get("failed") or 0) + 1
            spec = job.get("spec") or {}
            if status["failed"] <= int(spec.get("backoffLimit") or 0) and not spec.get("clusterSelector"):
                # backoffLimit: the attempt's cluster goes; reconcile builds a new one.
                cname = status.pop("rayClusterName", "")
                if cname and self.store.peek(self.rc, ns, cname) is not None:
                    with _suppress_api():
                        self.store.delete(self.rc, ns, cname)
                status.update(jobDeploymentStatus="Retrying")
                status.pop("endTime", None)
        self._write(job, status)
        self.enqueue((ns, name))

    def _after(self, delay: float, ns: str, name: str, what: str) -> None:
        key = (ns, name, what)
        if key in self._timers:
            return
        self._timers.add(key)

        def fire() -> None:
            self._timers.discard(key)
            if what == "finish":
                self.finish(ns, name)
            elif what == "deadline":
                self._deadline(ns, name)
            else:
                self.enqueue((ns, name))

        self.op.call_later(max(0.0, delay), fire)

    def _write(self, job: Mapping[str, Any], status: dict[str, Any]) -> None:
        status["observedGeneration"] = _meta(job).get("generation", 1)
        if json_equal(status, job.get("status") or {}):
            return
        meta = _meta(job)
        try:
            self.store.write_status(self.rj, meta["namespace"], meta["name"], status)
        except ApiError as err:
            log.warning("rayjob status write failed: %s", err.message)


def _parse_time(text: str) -> _dt.datetime:
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)


# ------------------------------------------------------------------------------------------
# The operator


class RayOperator:
    """Hosts the simulated controllers on the server loop."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop,
                 config: OperatorConfig | None = None) -> None:  # fmt: skip
        self.store = store
        self.loop = loop
        self.config = config or OperatorConfig()
        self.recorder = EventRecorder(store)
        self.pods = PodSimulator(self)
        self.rayclusters = RayClusterController(self)
        self.rayjobs = RayJobController(self)
        self.controllers: list[Controller] = [self.rayclusters, self.rayjobs]
        self.running = False
        self._unsubscribe: Any = None
        self._timers: set[asyncio.TimerHandle] = set()
        store.graceful_delete = self._grace

    def start(self) -> None:
        self.running = True
        self._unsubscribe = self.store.subscribe(self._on_event)
        for c in self.controllers:
            c.resync()

    def stop(self) -> None:
        self.running = False
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        for t in list(self._timers):
            t.cancel()
        self._timers.clear()

    def call_later(self, delay: float, fn: Any) -> None:
        handle: asyncio.TimerHandle | None = None

        def run() -> None:
            if handle is not None:
                self._timers.discard(handle)
            if self.running:
                fn()

        handle = self.loop.call_later(max(0.0, delay), run)
        self._timers.add(handle)

    def _grace(self, rt: ResourceType, obj: Mapping[str, Any], grace: int | None) -> float | None:
        if rt.key != "pods" or grace == 0:
            return None
        if not (obj.get("spec") or {}).get("nodeName"):
            return None
        return self.config.pod_termination_delay or None

    def _on_event(self, ev: WatchEvent) -> None:
        if not self.running:
            return
        self.pods.on_event(ev)
        for c in self.controllers:
            if ev.rtype in c.watches:
                for key in c.keys_for(ev):
                    c.enqueue(key)

    def configure(self, **changes: Any) -> OperatorConfig:
        """Change config fields (e.g. ``enabled``, ``pod_ready_delay``, ``fail_pod_creation``)
        and resync everything. Callable from any thread."""
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if not on_loop:
            fut: concurrent.futures.Future[OperatorConfig] = concurrent.futures.Future()

            def run() -> None:
                try:
                    fut.set_result(self.configure(**changes))
                except BaseException as exc:
                    fut.set_exception(exc)

            self.loop.call_soon_threadsafe(run)
            return fut.result(30)
        for k, v in changes.items():
            if not hasattr(self.config, k):
                raise ApiError(400, f"unknown operator setting {k!r}")
            setattr(self.config, k, v)
        if self.config.pod_ready_delay is not None and self.pods.held():
            self.call_later(self.config.pod_ready_delay, self.pods.release)
        for c in self.controllers:
            c.resync()
        for pod in self.store.select(self.store.types["pods"], copy=False):
            if not (pod.get("spec") or {}).get("nodeName"):
                meta = _meta(pod)
                key = (meta["namespace"], meta["name"])
                self.loop.call_soon(self.pods.try_schedule, key)
        return self.config

    # -- in-tree autoscaler ---------------------------------------------------------------------

    def autoscaler_patch(
        self,
        namespace: str,
        cluster: str,
        group: str,
        replicas: int | None = None,
        workers_to_delete: list[str] | None = None,
    ) -> dict[str, Any]:
        rc = self.store.types["ray.io/rayclusters"]
        obj = self.store.get(rc, namespace, cluster)
        groups = (obj.get("spec") or {}).get("workerGroupSpecs") or []
        index = next((i for i, g in enumerate(groups) if g.get("groupName") == group), None)
        if index is None:
            raise ApiError(404, f"worker group {group!r} not found in {namespace}/{cluster}")
        ops: list[dict[str, Any]] = []
        if replicas is not None:
            hi = groups[index].get("maxReplicas")
            value = min(replicas, hi) if hi is not None else replicas
            ops.append({"op": "replace", "path": f"/spec/workerGroupSpecs/{index}/replicas", "value": value})
        if workers_to_delete is not None:
            ops.append(
                {
                    "op": "replace",
                    "path": f"/spec/workerGroupSpecs/{index}/scaleStrategy",
                    "value": {"workersToDelete": list(workers_to_delete)},
                }
            )
        if not ops:
            return obj
        result, _created = self.store.patch(rc, namespace, cluster, JSON_PATCH, ops)
        return result
