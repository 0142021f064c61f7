"""The KubeRay job runner (RayJobs) against the fake Kubernetes API with its RayJob life cycle.

The fake operator holds each RayJob ``Running`` until the test decides its outcome
(``finish_job``); the Ray job's log is served by a stub dashboard registered as the head
service's upstream, so the runner reads it through the API server's service proxy.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from traitlets.config import Config

from eksray_jupyter.backends.kuberay import KubeRayBackend
from eksray_jupyter.backends.kuberay.names import head_service
from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.models import Phase
from eksray_jupyter.core.service import ClusterService
from eksray_jupyter.jobs.kuberay_runner import KubeRayJobRunner, map_status
from eksray_jupyter.jobs.models import Job, JobState, new_record
from eksray_jupyter.jobs.service import JobService
from eksray_jupyter.jobs.spec import resolve_job_spec

from .fakekube import FakeKubeServer, pytest_plugin
from .fakekube.schema import DEFAULT_CRD_DIR, crd_schema

T = TypeVar("T")
NS = "eksray-alice"
fakekube = pytest_plugin.fakekube
fakekube_kubeconfig = pytest_plugin.fakekube_kubeconfig


def wait_until(fn: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.02)


class Dashboard:
    """A stub Ray dashboard: ``GET /api/jobs/{submissionId}/logs`` -> ``{"logs": ...}``."""

    def __init__(self) -> None:
        self.logs: dict[str, str] = {}
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                if len(parts) != 4 or parts[:2] != ["api", "jobs"] or parts[3] != "logs":
                    self.send_error(404)
                    return
                if parts[2] not in stub.logs:
                    self.send_error(404)
                    return
                body = json.dumps({"logs": stub.logs[parts[2]]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Env:
    def __init__(self, fk: FakeKubeServer, backend: KubeRayBackend, service: ClusterService) -> None:
        self.fk, self.backend, self.service = fk, backend, service
        self.jobs: JobService = service.jobs
        self.dashboard = Dashboard()

    def rayjob(self, name: str) -> dict[str, Any] | None:
        return self.fk.get("rayjobs", NS, name)

    def serve_logs_of(self, cluster: str) -> None:
        """Route the cluster's head service (through the API server proxy) to the stub dashboard."""
        cr = wait_until(lambda: self.fk.get("rayclusters", NS, cluster), what=f"cluster {cluster}")
        self.fk.set_proxy_upstream(NS, head_service(cr), self.dashboard.url)

    def started(self, job_id: str, after: str | None = None) -> tuple[str, str]:
        """(cluster name, Ray submission id) once the operator filled them in (a Ray job id other
        than ``after``: a retry); the head service is routed to the stub dashboard."""

        def status() -> dict[str, Any] | None:
            current = (self.rayjob(job_id) or {}).get("status") or {}
            if current.get("rayClusterName") and current.get("jobId") not in (None, after):
                return current
            return None

        status = wait_until(status, what="RayJob initializing")
        self.serve_logs_of(status["rayClusterName"])
        return status["rayClusterName"], status["jobId"]

    def state(self, job_id: str, state: JobState, timeout: float = 10.0) -> Job:
        return wait_until(
            lambda: (j := self.jobs.get(job_id)).state == state and j, timeout, f"{job_id} {state.value}"
        )

    def finish(self, job_id: str, result: str) -> None:
        """The Ray job of the running RayJob ends with ``result`` (waits for Running first)."""
        wait_until(
            lambda: ((self.rayjob(job_id) or {}).get("status") or {}).get("jobDeploymentStatus") == "Running",
            what=f"{job_id} Running",
        )
        self.fk.operator.rayjobs.finish_job(NS, job_id, result)


@pytest.fixture
def env(fakekube: FakeKubeServer, fakekube_kubeconfig: Path, tmp_path: Path) -> Iterator[Env]:
    fakekube.configure_operator(rayjob_lifecycle=True, rayjob_hold=True)
    backend = KubeRayBackend(
        credentials="kubeconfig", kubeconfig=str(fakekube_kubeconfig), dashboard_poll_seconds=0.1
    )
    config = Config({"KubeRayJobRunner": {"poll_seconds": 0.05}})
    service = ClusterService(
        EKSRay(config=config, owner="alice", backend="local", state_dir=str(tmp_path / "state")),
        backend=backend,
    )
    e = Env(fakekube, backend, service)
    try:
        yield e
    finally:
        KubeRayJobRunner.stop_following()
        e.dashboard.close()
        backend.close()


# --- the RayJob resource ------------------------------------------------------------------------


def _job(service: ClusterService, request: dict[str, Any]) -> Job:
    spec = resolve_job_spec(request, service.config.profiles, default_profile="cpu-small")
    return Job.from_record(
        new_record("train-abcde", "alice", spec, "train-abcde", {"type": "local"}, "", "kuberay")
    )


def test_generated_rayjobs_validate_against_the_crd(tmp_path: Path) -> None:
    service = ClusterService(
        EKSRay(owner="alice", backend="local", state_dir=str(tmp_path)), backend=KubeRayBackend()
    )
    runner = service.jobs.runner
    assert isinstance(runner, KubeRayJobRunner)  # selected because the backend is kuberay
    job = _job(
        service,
        {
            "entrypoint": "python train.py --epochs 3",
            "runtimeEnv": {"pip": ["lightgbm==4.5.0"], "envVars": {"DATA": "s3://team/data"}},
            "cluster": {"profile": "tagged"},
            "activeDeadlineSeconds": 600,
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": 30,
        },
    )
    body = runner.rayjob(job)
    schema = crd_schema(DEFAULT_CRD_DIR / "ray.io_rayjobs.yaml")
    assert schema.validate(body, None) == []
    spec = body["spec"]
    assert body["apiVersion"] == "ray.io/v1" and body["kind"] == "RayJob"
    assert body["metadata"]["name"] == "train-abcde" and body["metadata"]["namespace"] == NS
    labels = body["metadata"]["labels"]
    assert labels["eksray.io/managed-by"] == "eksray-jupyter" and labels["eksray.io/owner"] == "alice"
    assert labels["eksray.io/job"] == "train-abcde"
    assert body["metadata"]["annotations"]["eksray.io/owner"] == "alice"
    assert spec["entrypoint"] == "python train.py --epochs 3"
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 30 + runner.log_grace_seconds
    assert spec["activeDeadlineSeconds"] == 600 and spec["backoffLimit"] == 2
    runtime = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime["pip"] == ["lightgbm==4.5.0"]
    assert "working_dir" not in runtime
    assert runtime["env_vars"] == {
        "DATA": "s3://team/data",
        "EKSRAY_JOB_ID": "train-abcde",
        "EKSRAY_JOB_ATTEMPT": "1",
    }
    # The backend's own RayCluster manifest, not a copy of its logic.
    manifest = service.backend.manifest("alice", {**job.spec["cluster"], "name": "train-abcde"})
    assert spec["rayClusterSpec"] == manifest["spec"]


def test_a_local_working_dir_is_refused(env: Env, tmp_path: Path) -> None:
    from eksray_jupyter.core.errors import BackendError

    with pytest.raises(BackendError, match="workingDir"):
        env.jobs.submit(
            {"entrypoint": "python a.py", "workingDir": str(tmp_path), "cluster": {"profile": "cpu-small"}}
        )
    (job,) = env.jobs.list()
    assert job.state == JobState.FAILED and "workingDir" in (job.reason or "")
    assert env.rayjob(job.id) is None  # refused before anything was created


def test_explicit_local_runner_still_wins(tmp_path: Path) -> None:
    service = ClusterService(
        EKSRay(
            owner="alice",
            backend="local",
            state_dir=str(tmp_path),
            job_runner="eksray_jupyter.jobs.runner.LocalJobRunner",
        ),
        backend=KubeRayBackend(),
    )
    assert service.jobs.runner.name == "local"


@pytest.mark.parametrize(
    ("status", "state", "reason"),
    [
        ({}, JobState.PENDING, None),
        ({"jobDeploymentStatus": "Initializing"}, JobState.STARTING, None),
        ({"jobDeploymentStatus": "Running", "jobStatus": "PENDING"}, JobState.RUNNING, None),
        ({"jobDeploymentStatus": "Retrying", "jobStatus": "FAILED"}, JobState.STARTING, None),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, JobState.SUCCEEDED, None),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, JobState.FAILED, "the Ray job ended STOPPED"),
        ({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed", "message": "boom"},
         JobState.FAILED, "the entrypoint failed (AppFailed: boom)"),
        ({"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "late"},
         JobState.FAILED, "deadline exceeded: late"),
        ({"jobDeploymentStatus": "Failed", "reason": "SubmissionFailed", "message": "no"},
         JobState.FAILED, "the RayJob failed (SubmissionFailed: no)"),
    ],
)  # fmt: skip
def test_status_mapping(status: dict[str, Any], state: JobState, reason: str | None) -> None:
    assert map_status(status) == (state, reason)


# --- the life cycle against the fake operator -----------------------------------------------------


def test_success_logs_persisted_before_the_cluster_is_deleted(env: Env) -> None:
    job = env.jobs.submit(
        {
            "entrypoint": "python train.py",
            "cluster": {"profile": "cpu-small"},
            "runtimeEnv": {"envVars": {"A": "1"}},
        }
    )
    rj = env.rayjob(job.id)
    assert rj is not None and rj["spec"]["entrypoint"] == "python train.py"
    assert "rayClusterSpec" in rj["spec"] and rj["spec"]["shutdownAfterJobFinishes"] is True
    cluster, ray_id = env.started(job.id)
    env.dashboard.logs[ray_id] = "epoch 1\n"
    running = env.state(job.id, JobState.RUNNING)
    assert running.cluster_name == cluster and running.attempts[0]["rayJobId"] == ray_id
    wait_until(lambda: b"epoch 1" in env.jobs.logs(job.id).data, what="log followed while running")
    # The operator sees the cluster as this user's (labels and annotations are copied).
    assert cluster in [c.name for c in env.service.list()]
    env.dashboard.logs[ray_id] = "epoch 1\nepoch 2\ndone\n"  # the last lines, written just before the end
    env.finish(job.id, "SUCCEEDED")
    done = env.state(job.id, JobState.SUCCEEDED)
    assert env.jobs.logs(job.id).text == "epoch 1\nepoch 2\ndone\n"
    assert [h["state"] for h in done.history] == ["pending", "starting", "running", "succeeded"]
    assert done.attempts[0]["status"] == "SUCCEEDED"
    # Logs first, then the cluster (ttlSecondsAfterFinished 0: the runner deletes it at once).
    wait_until(lambda: env.jobs.get(job.id).cluster_deleted_at, what="clusterDeletedAt")
    wait_until(lambda: env.fk.get("rayclusters", NS, cluster) is None, what="cluster deleted")
    assert env.rayjob(job.id) is not None  # the RayJob stays, as a record in Kubernetes


def test_failure_and_deadline(env: Env) -> None:
    failing = env.jobs.submit({"entrypoint": "python bad.py", "cluster": {"profile": "cpu-small"}})
    late = env.jobs.submit(
        {"entrypoint": "python slow.py", "cluster": {"profile": "cpu-small"}, "activeDeadlineSeconds": 1}
    )
    _, ray_id = env.started(failing.id)
    env.dashboard.logs[ray_id] = "Traceback: boom\n"
    env.state(failing.id, JobState.RUNNING)
    env.finish(failing.id, "FAILED")
    failed = env.state(failing.id, JobState.FAILED)
    assert failed.reason is not None and failed.reason.startswith("the entrypoint failed")
    assert "Traceback: boom" in env.jobs.logs(failing.id).text
    env.started(late.id)
    expired = env.state(late.id, JobState.FAILED)
    assert expired.reason is not None and expired.reason.startswith("deadline exceeded")


def test_stop_deletes_the_rayjob(env: Env) -> None:
    job = env.jobs.submit({"entrypoint": "python forever.py", "cluster": {"profile": "cpu-small"}})
    env.started(job.id)
    env.state(job.id, JobState.RUNNING)
    stopped = env.jobs.stop(job.id, wait=5)
    assert stopped.state == JobState.STOPPED and stopped.reason == "stopped on request"
    wait_until(lambda: env.rayjob(job.id) is None, what="RayJob deleted")


def test_existing_cluster_through_cluster_selector(env: Env) -> None:
    env.service.create({"name": "shared", "profile": "cpu-small"})
    wait_until(lambda: env.service.get("shared").phase == Phase.READY, what="shared ready")
    env.serve_logs_of("shared")
    job = env.jobs.submit({"entrypoint": "python eval.py", "clusterName": "shared"})
    rj = env.rayjob(job.id)
    assert rj is not None
    assert (
        rj["spec"]["clusterSelector"] == {"ray.io/cluster": "shared"} and "rayClusterSpec" not in rj["spec"]
    )
    _, ray_id = env.started(job.id)
    env.dashboard.logs[ray_id] = "accuracy 0.9\n"
    env.state(job.id, JobState.RUNNING)
    env.finish(job.id, "SUCCEEDED")
    env.state(job.id, JobState.SUCCEEDED)
    assert env.jobs.logs(job.id).text == "accuracy 0.9\n"
    assert env.fk.get("rayclusters", NS, "shared") is not None  # never deleted


def test_a_job_is_followed_again_after_its_follower_is_gone(env: Env) -> None:
    job = env.jobs.submit({"entrypoint": "python train.py", "cluster": {"profile": "cpu-small"}})
    _, ray_id = env.started(job.id)
    env.dashboard.logs[ray_id] = "one\n"
    env.state(job.id, JobState.RUNNING)
    wait_until(lambda: env.jobs.logs(job.id).data == b"one\n", what="first line")
    KubeRayJobRunner.stop_following()  # as if the server that submitted it exited
    env.dashboard.logs[ray_id] = "one\ntwo\n"
    env.finish(job.id, "SUCCEEDED")
    wait_until(lambda: env.rayjob(job.id)["status"]["jobDeploymentStatus"] == "Complete", what="Complete")  # type: ignore[index]
    # A later read (any process) adopts the RayJob: the end and the rest of the log are recorded.
    env.state(job.id, JobState.SUCCEEDED)
    assert env.jobs.logs(job.id).text == "one\ntwo\n"


def test_backoff_limit_retries_on_a_new_cluster(env: Env) -> None:
    job = env.jobs.submit(
        {"entrypoint": "python flaky.py", "cluster": {"profile": "cpu-small"}, "backoffLimit": 1}
    )
    first_cluster, first = env.started(job.id)
    env.dashboard.logs[first] = "attempt 1 failed\n"
    env.state(job.id, JobState.RUNNING)
    wait_until(lambda: b"attempt 1" in env.jobs.logs(job.id).data, what="first attempt's log")
    env.finish(job.id, "FAILED")
    second_cluster, second = env.started(job.id, after=first)
    assert second_cluster != first_cluster
    env.dashboard.logs[second] = "attempt 2 ok\n"
    wait_until(lambda: len(env.jobs.get(job.id).attempts) == 2, what="second attempt recorded")
    env.finish(job.id, "SUCCEEDED")
    done = env.state(job.id, JobState.SUCCEEDED)
    assert [a["rayJobId"] for a in done.attempts] == [first, second]
    assert done.attempts[0]["status"] == "FAILED"
    assert env.jobs.logs(job.id).text == "attempt 1 failed\nattempt 2 ok\n"
    wait_until(lambda: env.fk.get("rayclusters", NS, second_cluster) is None, what="cluster deleted")
