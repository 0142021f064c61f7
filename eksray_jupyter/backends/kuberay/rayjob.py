"""The ``RayJob`` custom resource of a job: built from the job's spec, read back into its record.

* :func:`build_rayjob`: the RayJob for a job — on a cluster the operator creates from the
  backend's own RayCluster manifest (same images, resources, labels, ownership, Ray token
  authentication), or on one of the user's clusters by ``clusterSelector``; the Ray job's
  runtime environment carries the job's id, attempt, working directory and where to upload
  results. The operator gives the submitter the cluster's Ray token itself
  (``RAY_AUTH_TOKEN`` from the cluster's Secret); on a user's cluster the submitter pod is
  labelled so that the cluster's NetworkPolicy lets it in.
* :func:`map_status` and :func:`record_attempt`: a RayJob's status as the job's state and
  attempts.
* The follower lease: which process follows the RayJob, until when (an annotation).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import yaml

from ...jobs.driver import RESULTS_UPLOAD_ENV, inline_command
from ...jobs.models import Job, JobState
from ...jobs.spec import ATTEMPT_ENV, JOB_ID_ENV, JOB_LABEL
from .names import (
    ANNOTATION_OWNER,
    API_VERSION,
    L_CLUSTER,
    LABEL_MANAGED_BY,
    LABEL_OWNER,
    MANAGED_BY,
    dns_label,
)

if TYPE_CHECKING:
    from .backend import KubeRayBackend

SUBMISSION_MODE = "K8sJobMode"
#: On the RayJob: which process follows it, until when (JSON ``{"holder", "until"}``). One
#: follower per job across processes (the server, CLIs, kernels), so the log is appended once
#: and records are written by one writer; a lease that is not renewed expires.
FOLLOWER_ANNOTATION = "eksray.io/follower"

_TERMINAL_DEPLOY = {"Complete", "Failed", "ValidationFailed"}


def runtime_env(
    job: Job,
    attempt: int = 1,
    working_dir: str | None = None,
    results_upload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Ray job's runtime environment: the spec's, with the job's id and attempt in its env."""
    spec = job.spec
    runtime = dict(spec.get("runtimeEnv") or {})
    env = dict(runtime.get("envVars") or {})
    env.update({JOB_ID_ENV: job.id, ATTEMPT_ENV: str(attempt)})
    if results_upload is not None:
        env[RESULTS_UPLOAD_ENV] = json.dumps(results_upload, sort_keys=True)
    out: dict[str, Any] = {"env_vars": env}
    if working_dir:
        out["working_dir"] = working_dir
    if runtime.get("pip"):
        out["pip"] = list(runtime["pip"])
    return out


def build_rayjob(
    job: Job,
    backend: KubeRayBackend,
    *,
    submission_mode: str,
    log_grace_seconds: int,
    lease: str,
    working_dir: str | None = None,
    results_upload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The RayJob custom resource for ``job`` (no API call but reading a selected cluster).

    ``working_dir``: the ``s3://`` URI of the uploaded working directory. ``results_upload``:
    the presigned POST the head uploads result files with; the entrypoint is then wrapped in
    the results driver (shipped inline, nothing to install on the head). ``lease``: the
    submitter's follower lease (it follows the job first).
    """
    spec = job.spec
    entrypoint = spec["entrypoint"]
    if results_upload is not None:
        entrypoint = inline_command(list(spec.get("results") or []), entrypoint)
    env = runtime_env(job, working_dir=working_dir, results_upload=results_upload)
    body_spec: dict[str, Any] = {
        "entrypoint": entrypoint,
        "runtimeEnvYAML": yaml.safe_dump(env, sort_keys=True),
        "submissionMode": submission_mode,
    }
    if spec.get("activeDeadlineSeconds"):
        body_spec["activeDeadlineSeconds"] = int(spec["activeDeadlineSeconds"])
    if "clusterName" in spec:
        cluster = backend.get_cluster(job.owner, spec["clusterName"])
        namespace = cluster.namespace or backend.namespace_for(job.owner)
        labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_OWNER: dns_label(job.owner)}
        annotations = {ANNOTATION_OWNER: job.owner}
        # KubeRay never deletes a selected cluster and allows no retries with one.
        body_spec["clusterSelector"] = {L_CLUSTER: spec["clusterName"]}
        submitter = backend.submitter_pod_template(job.owner, spec["clusterName"])
        if submitter is not None:
            body_spec["submitterPodTemplate"] = submitter
    else:
        # The backend's own RayCluster manifest: same images, resources, labels, ownership.
        manifest = backend.manifest(job.owner, {**spec["cluster"], "name": job.id})
        meta = manifest["metadata"]
        namespace = meta["namespace"]
        labels = dict(meta.get("labels") or {})
        annotations = dict(meta.get("annotations") or {})
        body_spec["rayClusterSpec"] = manifest["spec"]
        body_spec["shutdownAfterJobFinishes"] = True
        body_spec["ttlSecondsAfterFinished"] = int(spec.get("ttlSecondsAfterFinished") or 0) + int(
            log_grace_seconds
        )
        body_spec["backoffLimit"] = int(spec.get("backoffLimit") or 0)
    labels[JOB_LABEL] = job.id
    annotations[FOLLOWER_ANNOTATION] = lease
    return {
        "apiVersion": API_VERSION,
        "kind": "RayJob",
        "metadata": {
            "name": job.id,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": body_spec,
    }


# --- status -----------------------------------------------------------------------------------


def map_status(status: dict[str, Any] | None) -> tuple[JobState, str | None]:
    """Our state (and reason) for a RayJob status (``jobDeploymentStatus``, ``jobStatus``, reason, message)."""
    status = status or {}
    deploy = status.get("jobDeploymentStatus") or ""
    ray = status.get("jobStatus") or ""
    reason, message = status.get("reason") or "", status.get("message") or ""
    detail = f"{reason}: {message}" if reason and message else reason or message
    if deploy == "Complete":
        if ray == "SUCCEEDED":
            return JobState.SUCCEEDED, None
        return JobState.FAILED, f"the Ray job ended {ray or 'without a status'}" + (
            f" ({detail})" if detail else ""
        )
    if deploy in ("Failed", "ValidationFailed"):
        if reason == "DeadlineExceeded":
            return JobState.FAILED, f"deadline exceeded: {message or 'activeDeadlineSeconds passed'}"
        if reason == "AppFailed" or ray == "FAILED":
            return JobState.FAILED, f"the entrypoint failed ({detail or 'jobStatus FAILED'})"
        return JobState.FAILED, f"the RayJob failed ({detail or deploy})"
    if deploy == "Running":
        # Also with a final jobStatus: in K8sJobMode KubeRay waits for the submitter before Complete.
        return JobState.RUNNING, None
    if deploy in ("Suspending", "Suspended"):
        return JobState.STARTING, f"the RayJob is {deploy.lower()} (queued)"
    return (JobState.PENDING if not deploy else JobState.STARTING), None


def record_attempt(record: dict[str, Any], status: dict[str, Any]) -> None:
    """Keep the record's ``attempts`` in step with the RayJob's current Ray job (one per retry)."""
    ray_id = status.get("jobId")
    if not ray_id:
        return
    attempts = record.setdefault("attempts", [])
    if not attempts or attempts[-1].get("rayJobId") != ray_id:
        if attempts and not attempts[-1].get("finishedAt"):
            # KubeRay retries only a failed attempt (its Failed status may come and go between polls).
            attempts[-1]["finishedAt"] = time.time()
            if attempts[-1].get("status") not in ("FAILED", "STOPPED"):
                attempts[-1]["status"] = "FAILED"
        attempts.append({"attempt": len(attempts) + 1, "rayJobId": ray_id, "startedAt": time.time()})
        record["kuberay"]["logBytes"] = 0  # a retry's log starts again
    current = attempts[-1]
    current["status"] = status.get("jobStatus") or "SUBMITTING"  # KubeRay has not handed it to Ray yet
    current["message"] = status.get("message") or None
    if status.get("jobDeploymentStatus") in _TERMINAL_DEPLOY and not current.get("finishedAt"):
        current["finishedAt"] = time.time()


# --- the follower lease -----------------------------------------------------------------------


def lease_value(holder: str, until: float) -> str:
    return json.dumps({"holder": holder, "until": until})


def lease_of(rj: dict[str, Any]) -> tuple[str | None, float]:
    """(holder, until) of the RayJob's follower lease; (None, 0) if it has none."""
    annotations = (rj.get("metadata") or {}).get("annotations") or {}
    try:
        lease = json.loads(annotations.get(FOLLOWER_ANNOTATION) or "{}")
        return lease.get("holder"), float(lease.get("until") or 0)
    except (ValueError, TypeError, AttributeError):
        return None, 0.0
