"""The RayJob controller, a small life cycle (on with ``OperatorConfig.rayjob_lifecycle``):
the RayJob completes without a Ray job running, which the real operator on KWOK pods cannot
give (tests/k8s takes a RayJob only as far as the operator does)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import secrets
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .controller import Controller
from .errors import ApiError
from .objects import labels_of, meta_of, owner_ref
from .patches import jcopy, json_equal
from .raycluster_objects import L_CLUSTER, L_ORIGIN_CRD, L_ORIGIN_NAME, head_service_name
from .store import WatchEvent, now, rfc3339

if TYPE_CHECKING:
    from .operator import RayOperator

log = logging.getLogger("fakekube.operator")


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
        self.rj = self.primary = self.store.types["ray.io/rayjobs"]
        self.rc = self.store.types["ray.io/rayclusters"]
        self._timers: set[tuple[str, str, str]] = set()

    def keys_for(self, ev: WatchEvent) -> Iterable[tuple[str, str]]:
        meta = meta_of(ev.obj)
        ns = meta.get("namespace", "")
        if ev.rtype == "ray.io/rayjobs":
            return [] if ev.type == "DELETED" else [(ns, meta.get("name", ""))]
        labels = labels_of(ev.obj)
        if labels.get(L_ORIGIN_CRD) == "RayJob" and labels.get(L_ORIGIN_NAME):
            return [(ns, labels[L_ORIGIN_NAME])]
        # clusterSelector users
        cname = meta.get("name", "")
        return [
            (ns, meta_of(j)["name"])
            for j in self.store.select(self.rj, ns, copy=False)
            if ((j.get("spec") or {}).get("clusterSelector") or {}).get(L_CLUSTER) == cname
        ]

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
        if job is None or meta_of(job).get("deletionTimestamp"):
            return
        spec = job.get("spec") or {}
        status: dict[str, Any] = jcopy(job.get("status") or {})
        deploy = status.get("jobDeploymentStatus") or ""
        ts = rfc3339()
        selector = (spec.get("clusterSelector") or {}).get(L_CLUSTER)
        if spec.get("suspend") and deploy not in ("Complete", "Failed"):
            cname = status.get("rayClusterName")
            if cname and not selector and self.store.peek(self.rc, ns, cname) is not None:
                with contextlib.suppress(ApiError):
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
                        "labels": {**labels_of(job), L_ORIGIN_NAME: name, L_ORIGIN_CRD: "RayJob"},
                        "annotations": dict(meta_of(job).get("annotations") or {}),
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
            svc = head_service_name(cluster)
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
                with contextlib.suppress(ApiError):
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
                    with contextlib.suppress(ApiError):
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
        status["observedGeneration"] = meta_of(job).get("generation", 1)
        if json_equal(status, job.get("status") or {}):
            return
        meta = meta_of(job)
        try:
            self.store.write_status(self.rj, meta["namespace"], meta["name"], status)
        except ApiError as err:
            log.warning("rayjob status write failed: %s", err.message)


def _parse_time(text: str) -> _dt.datetime:
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
