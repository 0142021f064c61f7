"""The RayCluster controller: a subset of KubeRay v1.7's reconciler. The operator-side checks
(``utils/validation.go``), the token Secret of ``authOptions {mode: token}``, the head Service,
head and worker pods (``workersToDelete``, scale up and down, ended pods replaced, suspend),
the status and the operator's Kubernetes events."""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .controller import Controller
from .errors import ApiError
from .objects import labels_of, meta_of, owner_ref, pod_phase
from .raycluster_objects import (
    AUTH_TOKEN_KEY,
    L_CLUSTER,
    L_GROUP,
    L_HOST_INDEX,
    L_NODE_TYPE,
    L_REPLICA_INDEX,
    L_REPLICA_NAME,
    auth_secret_name,
    head_service_body,
    head_service_name,
    pod_body,
    token_auth,
)
from .raycluster_status import cluster_status, group_desired
from .selection import LabelSelector
from .store import WatchEvent

if TYPE_CHECKING:
    from .operator import RayOperator

log = logging.getLogger("fakekube.operator")

OPERATOR_MANAGED_BY = "ray.io/kuberay-operator"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def validate_raycluster(cluster: Mapping[str, Any]) -> tuple[str, str] | None:
    """Operator-side checks (``utils/validation.go``); returns (reason, message)."""
    name = meta_of(cluster).get("name", "")
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
    auth = spec.get("authOptions") or {}
    if auth.get("mode") == "token":
        version = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", str(spec.get("rayVersion") or ""))
        if version is None:
            return (
                "InvalidRayClusterSpec",
                "authOptions.mode is 'token' but RayVersion was not specified. "
                "Ray version 2.52.0 or later is required",
            )
        if tuple(int(n or 0) for n in version.groups()) < (2, 52, 0):
            return (
                "InvalidRayClusterSpec",
                f"authOptions.mode is 'token' but minimum Ray version is 2.52.0, got {spec['rayVersion']}",
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
        self.rc = self.primary = self.store.types["ray.io/rayclusters"]
        self.pods = self.store.types["pods"]
        self.services = self.store.types["services"]
        self.secrets = self.store.types["secrets"]
        self._warned: dict[tuple[str, str], tuple[Any, str]] = {}

    def keys_for(self, ev: WatchEvent) -> Iterable[tuple[str, str]]:
        meta = meta_of(ev.obj)
        ns = meta.get("namespace", "")
        if ev.rtype == "ray.io/rayclusters":
            if ev.type == "DELETED":
                self._warned.pop((ns, meta.get("name", "")), None)
                return ()
            return [(ns, meta.get("name", ""))]
        cluster = labels_of(ev.obj).get(L_CLUSTER) or labels_of(ev.old or {}).get(L_CLUSTER)
        return [(ns, cluster)] if cluster else ()

    # -- helpers -------------------------------------------------------------------------------

    def cluster_pods(self, ns: str, name: str, **extra: str) -> list[dict[str, Any]]:
        sel = LabelSelector.from_match_labels({L_CLUSTER: name, **extra})
        return [
            p
            for p in self.store.select(self.pods, ns, sel, copy=False)
            if not meta_of(p).get("deletionTimestamp")
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

    # -- reconcile -----------------------------------------------------------------------------

    def reconcile(self, ns: str, name: str) -> None:
        if not self.op.config.enabled:
            return
        cluster = self.store.peek(self.rc, ns, name)
        if cluster is None or meta_of(cluster).get("deletionTimestamp"):
            return
        spec = cluster.get("spec") or {}
        managed_by = spec.get("managedBy")
        if managed_by and managed_by != OPERATOR_MANAGED_BY:
            return
        problem = validate_raycluster(cluster)
        key = (ns, name)
        if problem:
            marker = (meta_of(cluster).get("generation"), problem[0])
            if self._warned.get(key) != marker:
                self._warned[key] = marker
                self.event(cluster, "Warning", problem[0], problem[1], "Validate")
            return
        self._warned.pop(key, None)
        failure: tuple[str, str] | None = None
        if spec.get("suspend"):
            self._suspend(cluster)
        else:
            self._ensure_auth_secret(cluster)
            self._ensure_head_service(cluster)
            failure = self._reconcile_head(cluster) or self._reconcile_workers(cluster)
        cluster = self.store.peek(self.rc, ns, name)
        if cluster is not None:
            self._update_status(cluster, failure)
            if failure:
                # the real controller requeues with backoff after a failed reconcile
                self.enqueue_later(2.0, key)

    def _suspend(self, cluster: Mapping[str, Any]) -> None:
        meta = meta_of(cluster)
        ns, name = meta["namespace"], meta["name"]
        for pod in self.cluster_pods(ns, name):
            pname = meta_of(pod)["name"]
            with contextlib.suppress(ApiError):
                self.store.delete(self.pods, ns, pname)
                self.event(cluster, "Normal", "DeletedPod", f"Deleted pod {ns}/{pname}", "Delete")

    def _ensure_auth_secret(self, cluster: Mapping[str, Any]) -> None:
        """``reconcileAuthSecret``: a random token in a Secret named after the cluster, unless the
        spec names its own Secret; a Secret of that name that exists (anybody's) is used as is."""
        auth = (cluster.get("spec") or {}).get("authOptions") or {}
        if not token_auth(cluster) or auth.get("enableK8sTokenAuth") or auth.get("secretName"):
            return
        meta = meta_of(cluster)
        ns, name = meta["namespace"], auth_secret_name(meta["name"])
        if self.store.peek(self.secrets, ns, name) is not None:
            return
        token = base64.b64encode(secrets.token_bytes(32)).decode()
        body = {
            "metadata": {
                "name": name,
                "labels": {L_CLUSTER: meta["name"]},
                "ownerReferences": [owner_ref(cluster, self.rc)],
            },
            "stringData": {AUTH_TOKEN_KEY: token},
        }
        with contextlib.suppress(ApiError):
            self.store.create(self.secrets, ns, body)

    def _ensure_head_service(self, cluster: Mapping[str, Any]) -> None:
        ns = meta_of(cluster)["namespace"]
        svc_name = head_service_name(cluster)
        if self.store.peek(self.services, ns, svc_name) is not None:
            return
        try:
            self.store.create(self.services, ns, head_service_body(cluster, owner_ref(cluster, self.rc)))
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

    def _create_pod(
        self,
        cluster: Mapping[str, Any],
        node_type: str,
        group: Mapping[str, Any],
        extra_labels: Mapping[str, str] | None = None,
    ) -> tuple[str, str] | None:
        """Returns (failure reason, message) on failure."""
        meta = meta_of(cluster)
        ns, cname = meta["namespace"], meta["name"]
        kind = "head" if node_type == "head" else "worker"
        try:
            if self.op.config.fail_pod_creation:
                raise ApiError(
                    403,
                    f'pods "{cname}-{kind}" is forbidden: exceeded quota: compute-resources',
                    "Forbidden",
                )
            body = pod_body(cluster, owner_ref(cluster, self.rc), node_type, group, extra_labels or {})
            pod = self.store.create(self.pods, ns, body)
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
        meta = meta_of(cluster)
        ns, pname = meta["namespace"], meta_of(pod)["name"]
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
        meta = meta_of(cluster)
        heads = self.cluster_pods(meta["namespace"], meta["name"], **{L_NODE_TYPE: "head"})
        failure = self._delete_ended(cluster, heads, "head")
        if failure:
            return failure
        if not heads:
            head = (cluster.get("spec") or {}).get("headGroupSpec") or {}
            return self._create_pod(cluster, "head", head)
        return None

    def _reconcile_workers(self, cluster: Mapping[str, Any]) -> tuple[str, str] | None:
        spec = cluster.get("spec") or {}
        autoscaling = bool(spec.get("enableInTreeAutoscaling"))
        for group in spec.get("workerGroupSpecs") or []:
            failure = self._reconcile_group(cluster, group, autoscaling)
            if failure:
                return failure
        return None

    def _reconcile_group(
        self, cluster: Mapping[str, Any], group: Mapping[str, Any], autoscaling: bool
    ) -> tuple[str, str] | None:
        meta = meta_of(cluster)
        ns, name = meta["namespace"], meta["name"]
        gname = group.get("groupName", "")
        pods = self.cluster_pods(ns, name, **{L_NODE_TYPE: "worker", L_GROUP: gname})
        failure = self._delete_ended(cluster, pods, "worker")
        if failure:
            return failure
        # workersToDelete: always honoured
        to_delete = set((group.get("scaleStrategy") or {}).get("workersToDelete") or [])
        for pod in list(pods):
            pname = meta_of(pod)["name"]
            if pname in to_delete:
                failure = self._delete_pod(cluster, pod, "DeletedWorkerPod", f"Deleted pod {ns}/{pname}")
                if failure:
                    return failure
                pods.remove(pod)
        if group.get("suspend"):
            for pod in list(pods):
                pname = meta_of(pod)["name"]
                failure = self._delete_pod(cluster, pod, "DeletedWorkerPod", f"Deleted pod {ns}/{pname}")
                if failure:
                    return failure
            return None
        diff = group_desired(group) - len(pods)
        if diff > 0:
            return self._add_workers(cluster, group, pods, diff)
        if diff < 0 and not autoscaling:
            # With autoscaling only the autoscaler's workersToDelete go.
            return self._remove_workers(cluster, pods, -diff)
        return None

    def _delete_ended(
        self, cluster: Mapping[str, Any], pods: list[dict[str, Any]], kind: str
    ) -> tuple[str, str] | None:
        """Deletes the ``kind`` ("head" or "worker") pods whose containers ended, to be
        replaced; they leave ``pods``."""
        ns = meta_of(cluster)["namespace"]
        reason = "DeletedHeadPod" if kind == "head" else "DeletedWorkerPod"
        for pod in list(pods):
            if pod_phase(pod) in ("Failed", "Succeeded"):
                restart = (pod.get("spec") or {}).get("restartPolicy", "Always")
                msg = (
                    f"Deleted {kind} Pod {ns}/{meta_of(pod)['name']}; Pod status: {pod_phase(pod)}; "
                    f"Pod restart policy: {restart}"
                )
                failure = self._delete_pod(cluster, pod, reason, msg)
                if failure:
                    return failure
                pods.remove(pod)
        return None

    def _add_workers(
        self, cluster: Mapping[str, Any], group: Mapping[str, Any], pods: list[dict[str, Any]], count: int
    ) -> tuple[str, str] | None:
        """``count`` more worker pods, each with the lowest free replica index; a multi-host
        group gets whole replicas of ``numOfHosts`` pods."""
        gname = group.get("groupName", "")
        hosts = max(1, int(group.get("numOfHosts") or 1))
        used = {labels_of(p).get(L_REPLICA_INDEX) for p in pods}
        index = 0
        for _ in range(count // hosts if hosts > 1 else count):
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
        return None

    def _remove_workers(
        self, cluster: Mapping[str, Any], pods: list[dict[str, Any]], count: int
    ) -> tuple[str, str] | None:
        """Deletes ``count`` worker pods, those not running yet first, newest first."""
        ns = meta_of(cluster)["namespace"]
        victims = sorted(
            pods,
            key=lambda p: (
                pod_phase(p) == "Running",
                meta_of(p).get("creationTimestamp", ""),
                meta_of(p).get("resourceVersion", "0").zfill(20),
            ),
        )
        for pod in victims[:count]:
            pname = meta_of(pod)["name"]
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
        meta = meta_of(cluster)
        ns, name = meta["namespace"], meta["name"]
        service = self.store.peek(self.services, ns, head_service_name(cluster))
        status = cluster_status(cluster, self.cluster_pods(ns, name), service, failure)
        if status is None:
            return
        try:
            self.store.write_status(self.rc, ns, name, status)
        except ApiError as err:
            log.warning("status write for %s/%s failed: %s", ns, name, err.message)
