"""The KubeRay job runner (RayJobs) against the fake Kubernetes API with its RayJob life cycle.

The fake operator holds each RayJob ``Running`` until the test decides its outcome
(``finish_job``); the Ray job's log is served by a stub dashboard registered as the head
service's upstream, so the runner reads it through the API server's service proxy.

For jobs with a working directory and results, :class:`Head` does what a Ray head does
with the RayJob: it downloads the ``working_dir`` package from S3 (moto over loopback) and
unpacks it with Ray's own unpacker, runs the entrypoint with the runtime env's variables
in a shell, serves its output as the Ray job's log and ends the RayJob with its outcome.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import io
import json
import os
import shlex
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
import yaml
from traitlets.config import Config

from eksray_jupyter.backends.kuberay import KubeRayBackend
from eksray_jupyter.backends.kuberay.names import head_service
from eksray_jupyter.backends.kuberay.rayjob import map_status, record_attempt
from eksray_jupyter.backends.kuberay.rayjob_runner import KubeRayJobRunner
from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.errors import InvalidRequestError, LimitExceededError
from eksray_jupyter.core.models import Phase
from eksray_jupyter.core.service import ClusterService
from eksray_jupyter.jobs.models import Job, JobState, new_record, transition
from eksray_jupyter.jobs.service import JobService
from eksray_jupyter.jobs.spec import resolve_job_spec
from eksray_jupyter.jobs.store import LocalJobStore
from tests.stub_http import JSONHandler, StubServer

from .fakekube import FakeKubeServer, pytest_plugin
from .fakekube.schema import DEFAULT_CRD_DIR, crd_schema
from .test_jobs_store import make_bucket, moto_url
from .waiting import wait_until

__all__ = ["moto_url"]  # a fixture, used by name

T = TypeVar("T")
NS = "eksray-alice"
fakekube = pytest_plugin.fakekube
fakekube_kubeconfig = pytest_plugin.fakekube_kubeconfig


class Dashboard:
    """A stub Ray dashboard: ``GET /api/jobs/{submissionId}/logs`` -> ``{"logs": ...}``."""

    def __init__(self) -> None:
        self.logs: dict[str, str] = {}
        #: The Ray token each request presented (``X-Ray-Authorization``).
        self.tokens: list[str | None] = []
        #: Called once, on the next log request, before it is answered (a test's interleaving).
        self.before_next_read: Callable[[], None] | None = None
        stub = self

        class Handler(JSONHandler):
            def do_GET(self) -> None:
                stub.tokens.append(self.headers.get("X-Ray-Authorization"))
                parts = self.path.strip("/").split("/")
                if len(parts) != 4 or parts[:2] != ["api", "jobs"] or parts[3] != "logs":
                    self.send_error(404)
                    return
                if parts[2] not in stub.logs:
                    self.send_error(404)
                    return
                hook, stub.before_next_read = stub.before_next_read, None
                if hook is not None:
                    hook()
                self.send_json({"logs": stub.logs[parts[2]]})

        self.server = StubServer(Handler)
        self.url = self.server.url

    def close(self) -> None:
        self.server.close()


class Env:
    def __init__(self, fk: FakeKubeServer, backend: KubeRayBackend, service: ClusterService) -> None:
        self.fk, self.backend, self.service = fk, backend, service
        self.jobs = JobService(service)
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

    def state(self, job_id: str, state: JobState) -> Job:
        return wait_until(
            lambda: (j := self.jobs.get(job_id)).state == state and j, f"{job_id} {state.value}"
        )

    def finish(self, job_id: str, result: str) -> None:
        """The Ray job of the running RayJob ends with ``result`` (waits for Running first)."""
        wait_until(
            lambda: ((self.rayjob(job_id) or {}).get("status") or {}).get("jobDeploymentStatus") == "Running",
            what=f"{job_id} Running",
        )
        self.fk.operator.rayjobs.finish_job(NS, job_id, result)


@contextlib.contextmanager
def make_env(
    fakekube: FakeKubeServer, kubeconfig: Path, tmp_path: Path, backend_options: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[Env]:  # fmt: skip
    fakekube.configure_operator(rayjob_lifecycle=True, rayjob_hold=True)
    backend = KubeRayBackend(
        credentials="kubeconfig",
        kubeconfig=str(kubeconfig),
        dashboard_poll_seconds=0.1,
        **(backend_options or {}),
    )
    config = Config({"KubeRayJobRunner": {"poll_seconds": 0.05}})
    service = ClusterService(
        EKSRay(config=config, owner="alice", backend="local", state_dir=str(tmp_path / "state"), **settings),
        backend=backend,
    )
    e = Env(fakekube, backend, service)
    try:
        yield e
    finally:
        e.jobs.runner.close()
        e.dashboard.close()
        backend.close()


@pytest.fixture
def env(fakekube: FakeKubeServer, fakekube_kubeconfig: Path, tmp_path: Path) -> Iterator[Env]:
    with make_env(fakekube, fakekube_kubeconfig, tmp_path) as e:
        yield e


@pytest.fixture
def s3env(
    fakekube: FakeKubeServer, fakekube_kubeconfig: Path, tmp_path: Path, moto_url: str
) -> Iterator[Env]:
    """Jobs stored in S3 (moto over loopback): what a working directory and results need."""
    make_bucket(moto_url, "team-jobs")
    with make_env(
        fakekube, fakekube_kubeconfig, tmp_path,
        job_store="s3", job_s3_bucket="team-jobs", job_s3_endpoint_url=moto_url,
    ) as e:  # fmt: skip
        yield e


class Head:
    """Runs a RayJob's entrypoint as a Ray head would (see the module docstring)."""

    def __init__(self, env: Env, s3_url: str, tmp_path: Path) -> None:
        self.env, self.s3_url, self.tmp_path = env, s3_url, tmp_path

    def run(self, job_id: str) -> subprocess.CompletedProcess[str]:
        from ray._private.runtime_env.packaging import unzip_package

        _, ray_id = self.env.started(job_id)
        rj = self.env.rayjob(job_id)
        assert rj is not None
        runtime_env = yaml.safe_load(rj["spec"]["runtimeEnvYAML"])
        cwd = self.tmp_path / f"head-{ray_id}"
        cwd.mkdir()
        uri = runtime_env.get("working_dir")
        if uri:
            bucket, key = uri.removeprefix("s3://").split("/", 1)
            package = self.tmp_path / f"{ray_id}.zip"
            boto3.client("s3", endpoint_url=self.s3_url).download_file(bucket, key, str(package))
            unzip_package(package, cwd, remove_top_level_directory=True, unlink_zip=True)
        # The head's python is this one; the head has no AWS credentials of its own.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        env = {"PATH": path, "HOME": str(self.tmp_path), **runtime_env.get("env_vars", {})}
        # K8sJobMode: the submitter's bash parses `ray job submit ... -- <entrypoint>`, Ray's CLI
        # shlex-joins the words again, and the head runs that string in a shell.
        words = f"{shlex.quote(sys.executable)} -c 'import shlex,sys; print(shlex.join(sys.argv[1:]))' "
        submitted = subprocess.run(
            ["bash", "-c", words + rj["spec"]["entrypoint"]], capture_output=True, text=True, check=True
        ).stdout.rstrip("\n")
        done = subprocess.run(
            submitted, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=60
        )
        self.env.dashboard.logs[ray_id] = done.stdout + done.stderr
        self.env.state(job_id, JobState.RUNNING)
        self.env.finish(job_id, "SUCCEEDED" if done.returncode == 0 else "FAILED")
        return done


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
    runner = JobService(service).runner
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
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token"}  # the job's cluster too


def test_working_dir_and_results_need_an_s3_store(env: Env, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        env.jobs.submit(
            {
                "entrypoint": "python a.py",
                "workingDir": str(tmp_path),
                "results": ["*.csv"],
                "cluster": {"profile": "cpu-small"},
            }
        )
    assert [e.path for e in refused.value.errors] == ["workingDir", "results"]
    assert '"store": {"type": "s3"' in refused.value.errors[0].message
    assert (
        env.jobs.list() == [] and env.fk.list_objects("rayjobs", NS) == []
    )  # refused before anything was made


def test_retries_need_a_cluster_the_job_creates(env: Env) -> None:
    env.service.create({"name": "shared", "profile": "cpu-small"})
    with pytest.raises(InvalidRequestError) as refused:
        env.jobs.submit({"entrypoint": "python a.py", "clusterName": "shared", "backoffLimit": 2})
    assert [e.path for e in refused.value.errors] == ["backoffLimit"]
    assert env.jobs.list() == [] and env.fk.list_objects("rayjobs", NS) == []


def test_the_cluster_limit_counts_a_jobs_cluster(
    fakekube: FakeKubeServer, fakekube_kubeconfig: Path, tmp_path: Path
) -> None:
    with make_env(fakekube, fakekube_kubeconfig, tmp_path, {"max_clusters_per_owner": 1}) as e:
        e.service.create({"name": "mine", "profile": "cpu-small"})
        with pytest.raises(LimitExceededError, match="max_clusters_per_owner"):
            e.jobs.submit({"entrypoint": "python a.py", "cluster": {"profile": "cpu-small"}})
        assert e.jobs.list() == [] and e.fk.list_objects("rayjobs", NS) == []
        # On an existing cluster the job creates none: allowed.
        assert e.jobs.submit({"entrypoint": "python a.py", "clusterName": "mine"}).state == JobState.PENDING


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
    assert JobService(service).runner.name == "local"


@pytest.mark.parametrize(
    ("status", "state", "reason"),
    [
        ({}, JobState.PENDING, None),
        ({"jobDeploymentStatus": "Initializing"}, JobState.STARTING, None),
        ({"jobDeploymentStatus": "Running", "jobStatus": "PENDING"}, JobState.RUNNING, None),
        ({"jobDeploymentStatus": "Running", "jobStatus": "SUCCEEDED"}, JobState.RUNNING, None),
        ({"jobDeploymentStatus": "Retrying", "jobStatus": "RUNNING"}, JobState.STARTING, None),
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


def test_an_attempt_ray_does_not_have_yet_reads_submitting() -> None:
    """Found by fuzzing: a job stopped right after submission had attempts[].status null."""
    record: dict[str, Any] = {"kuberay": {}}
    record_attempt(record, {"jobId": "job-1", "jobDeploymentStatus": "Initializing"})
    assert record["attempts"][0]["status"] == "SUBMITTING"
    job = Job.from_record({**new_record("j", "alice", {"name": "j", "entrypoint": "x"}, "c", {}, "", "kuberay"),
                           "attempts": [{"attempt": 1, "rayJobId": "job-1", "status": None}]})  # fmt: skip
    assert job.to_dict()["attempts"][0]["status"] == "SUBMITTING"  # a record written before the fix


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
    # The submitter pod: KubeRay's default, labelled so that the cluster's NetworkPolicy lets it in.
    submitter = rj["spec"]["submitterPodTemplate"]
    assert submitter["metadata"]["labels"]["eksray.io/submits-to"] == "shared"
    head = env.fk.get("rayclusters", NS, "shared")["spec"]["headGroupSpec"]["template"]["spec"]  # type: ignore[index]
    assert submitter["spec"]["containers"][0]["image"] == head["containers"][0]["image"]
    _, ray_id = env.started(job.id)
    env.dashboard.logs[ray_id] = "accuracy 0.9\n"
    env.state(job.id, JobState.RUNNING)
    env.finish(job.id, "SUCCEEDED")
    env.state(job.id, JobState.SUCCEEDED)
    assert env.jobs.logs(job.id).text == "accuracy 0.9\n"
    # Every log read presented the cluster's Ray token, from the Secret the operator made.
    secret = env.fk.get("secrets", NS, "shared")
    assert secret is not None
    token = base64.b64decode(secret["data"]["auth_token"]).decode()
    assert env.dashboard.tokens and set(env.dashboard.tokens) == {f"Bearer {token}"}
    assert env.fk.get("rayclusters", NS, "shared") is not None  # never deleted


def test_a_job_is_followed_again_after_its_follower_is_gone(env: Env) -> None:
    job = env.jobs.submit({"entrypoint": "python train.py", "cluster": {"profile": "cpu-small"}})
    _, ray_id = env.started(job.id)
    env.dashboard.logs[ray_id] = "one\n"
    env.state(job.id, JobState.RUNNING)
    wait_until(lambda: env.jobs.logs(job.id).data == b"one\n", what="first line")
    env.jobs.runner.close()  # as if the server that submitted it exited
    env.dashboard.logs[ray_id] = "one\ntwo\n"
    env.finish(job.id, "SUCCEEDED")
    wait_until(lambda: env.rayjob(job.id)["status"]["jobDeploymentStatus"] == "Complete", what="Complete")  # type: ignore[index]
    # A later read (any process, e.g. a short-lived CLI) adopts the RayJob and catches the
    # record up at once: the end and the rest of the log are recorded before it answers.
    caught_up = env.jobs.get(job.id)
    assert caught_up.state == JobState.SUCCEEDED
    assert env.jobs.logs(job.id).text == "one\ntwo\n"
    # Finished when the operator says, not when the record was caught up.
    end = env.rayjob(job.id)["status"]["endTime"]  # type: ignore[index]
    assert caught_up.finished_at == datetime.datetime.fromisoformat(end.replace("Z", "+00:00")).timestamp()


def test_backoff_limit_retries_on_a_new_cluster(env: Env) -> None:
    job = env.jobs.submit(
        {"entrypoint": "python flaky.py", "cluster": {"profile": "cpu-small"}, "backoffLimit": 1}
    )
    first_cluster, first = env.started(job.id)
    # Each cluster the operator makes for the job gets the NetworkPolicy eksray's own have.
    policy = wait_until(
        lambda: env.fk.get("networkpolicies", NS, f"{first_cluster}-eksray"),
        what="the first cluster's policy",
    )
    first_uid = env.fk.get("rayclusters", NS, first_cluster)["metadata"]["uid"]
    assert [r["uid"] for r in policy["metadata"]["ownerReferences"]] == [first_uid]
    assert policy["spec"]["podSelector"] == {"matchLabels": {"ray.io/cluster": first_cluster}}
    env.dashboard.logs[first] = "attempt 1 failed\n"
    env.state(job.id, JobState.RUNNING)
    wait_until(lambda: b"attempt 1" in env.jobs.logs(job.id).data, what="first attempt's log")
    env.finish(job.id, "FAILED")
    second_cluster, second = env.started(job.id, after=first)
    assert second_cluster != first_cluster
    wait_until(
        lambda: env.fk.get("networkpolicies", NS, f"{second_cluster}-eksray"),
        what="the second cluster's policy",
    )
    env.dashboard.logs[second] = "attempt 2 ok\n"
    wait_until(lambda: len(env.jobs.get(job.id).attempts) == 2, what="second attempt recorded")
    env.finish(job.id, "SUCCEEDED")
    done = env.state(job.id, JobState.SUCCEEDED)
    assert [a["rayJobId"] for a in done.attempts] == [first, second]
    assert done.attempts[0]["status"] == "FAILED"
    assert env.jobs.logs(job.id).text == "attempt 1 failed\nattempt 2 ok\n"
    wait_until(lambda: env.fk.get("rayclusters", NS, second_cluster) is None, what="cluster deleted")


# --- working directory and results through S3 ----------------------------------------------------

TRAIN = """\
import os, pathlib
print("data is", os.environ["DATA"], "attempt", os.environ["EKSRAY_JOB_ATTEMPT"])
print("helper says", open("lib/helper.txt").read().strip())
pathlib.Path("out").mkdir()
pathlib.Path("out/metrics.csv").write_text("epoch,loss\\n1,0.5\\n")
pathlib.Path(os.environ["EKSRAY_RESULTS_DIR"], "model.txt").write_text("weights")
raise SystemExit(int(os.environ.get("FAIL", "0")))
"""


def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "lib").mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    (root / "lib" / "helper.txt").write_text("hello from the working dir\n")
    (root / ".gitignore").write_text("secret.txt\n")
    (root / "secret.txt").write_text("not for the cluster")
    return root


def test_working_dir_is_uploaded_and_results_come_back(s3env: Env, tmp_path: Path, moto_url: str) -> None:
    job = s3env.jobs.submit(
        {
            "entrypoint": "python train.py",
            "workingDir": str(project(tmp_path)),
            "runtimeEnv": {"envVars": {"DATA": "s3://team/data"}},
            "results": ["out/*.csv", "nothing/*"],
            "cluster": {"profile": "cpu-small"},
        }
    )
    # The directory is packaged and uploaded off the request path; then the RayJob appears.
    assert job.state == JobState.PENDING
    rj = wait_until(lambda: s3env.rayjob(job.id), what="the RayJob, once the directory is uploaded")
    assert "uploading the working directory: " in (s3env.jobs.get(job.id).reason or "")
    runtime_env = yaml.safe_load(rj["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"].startswith(
        f"s3://team-jobs/eksray/jobs/alice/{job.id}/package/working_dir-"
    )
    assert runtime_env["working_dir"].endswith(".zip")
    upload = json.loads(runtime_env["env_vars"]["EKSRAY_RESULTS_UPLOAD"])
    assert upload["prefix"] == f"eksray/jobs/alice/{job.id}/results/"
    # The presigned upload is for the head only: never in what the API returns.
    assert "policy" not in json.dumps(s3env.jobs.get(job.id).to_dict()).lower()

    done = Head(s3env, moto_url, tmp_path).run(job.id)
    assert done.returncode == 0, done.stderr
    finished = s3env.state(job.id, JobState.SUCCEEDED)
    assert finished.results == [
        {"path": "model.txt", "size": 7},
        {"path": "out/metrics.csv", "size": 17},
    ]
    assert s3env.jobs.result(job.id, "out/metrics.csv") == b"epoch,loss\n1,0.5\n"
    log = s3env.jobs.logs(job.id).text
    assert "data is s3://team/data attempt 1" in log
    assert "helper says hello from the working dir" in log
    assert "no file matches the results pattern 'nothing/*'" in log
    assert "[eksray] uploaded 2 result file(s)" in log
    assert f"saved 2 result file(s) to s3://team-jobs/eksray/jobs/alice/{job.id}/results/" in log
    # Ray's packager skipped the .gitignore'd file.
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=moto_url).list_objects_v2(Bucket="team-jobs")["Contents"]
    ]
    package = next(k for k in keys if "/package/" in k)
    assert f"eksray/jobs/alice/{job.id}/results/model.txt" in keys
    with zipfile.ZipFile(io.BytesIO(boto3.client("s3", endpoint_url=moto_url).get_object(
        Bucket="team-jobs", Key=package)["Body"].read())) as z:  # fmt: skip
        names = z.namelist()
    assert "proj/train.py" in names and "proj/lib/helper.txt" in names
    assert not any(n.endswith("secret.txt") for n in names)
    wait_until(lambda: s3env.jobs.get(job.id).cluster_deleted_at, what="cluster deleted")


def test_a_failed_job_still_keeps_its_results(s3env: Env, tmp_path: Path, moto_url: str) -> None:
    job = s3env.jobs.submit(
        {
            "entrypoint": "python train.py",
            "workingDir": str(project(tmp_path)),
            "runtimeEnv": {"envVars": {"DATA": "x", "FAIL": "3"}},
            "results": ["out/*.csv"],
            "cluster": {"profile": "cpu-small"},
        }
    )
    done = Head(s3env, moto_url, tmp_path).run(job.id)
    assert done.returncode == 3  # the wrapper keeps the entrypoint's exit code
    failed = s3env.state(job.id, JobState.FAILED)
    assert [r["path"] for r in failed.results] == ["model.txt", "out/metrics.csv"]


def test_without_a_working_dir_the_entrypoint_runs_as_is_and_results_still_upload(
    s3env: Env, tmp_path: Path, moto_url: str
) -> None:
    job = s3env.jobs.submit(
        {
            "entrypoint": 'echo made > "$EKSRAY_RESULTS_DIR/report.txt" && echo \'quoted "args" survive\'',
            "cluster": {"profile": "cpu-small"},
        }
    )
    rj = s3env.rayjob(job.id)
    assert rj is not None and "working_dir" not in yaml.safe_load(rj["spec"]["runtimeEnvYAML"])
    done = Head(s3env, moto_url, tmp_path).run(job.id)
    assert done.returncode == 0, done.stderr
    finished = s3env.state(job.id, JobState.SUCCEEDED)
    assert finished.results == [{"path": "report.txt", "size": 5}]
    assert 'quoted "args" survive' in s3env.jobs.logs(job.id).text


def test_the_driver_streams_large_results_under_the_prefix_only(moto_url: str, tmp_path: Path) -> None:
    from eksray_jupyter.jobs.driver import upload
    from eksray_jupyter.jobs.store import S3JobStore

    make_bucket(moto_url, "big-results")
    store = S3JobStore("big-results", "p", endpoint_url=moto_url)
    target = store.results_upload("alice", "train-abcde", 600, 64 << 20)
    assert target["prefix"] == "p/alice/train-abcde/results/"
    blob = os.urandom(3 * 1024 * 1024 + 17)  # several 1 MiB blocks of the streamed body
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "model.bin").write_bytes(blob)
    assert upload(["deep/er/model.bin"], str(tmp_path), target) == []
    assert store.list_results("alice", "train-abcde") == [{"path": "deep/er/model.bin", "size": len(blob)}]
    assert store.read_result("alice", "train-abcde", "deep/er/model.bin") == blob
    # An unreachable endpoint is reported per file, and does not raise.
    assert upload(["deep/er/model.bin"], str(tmp_path), {**target, "url": "http://127.0.0.1:9"}, tries=1) == [
        "deep/er/model.bin"
    ]


def test_a_long_log_is_read_less_often_but_always_at_the_end(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eksray_jupyter.backends.kuberay import rayjob_runner
    from eksray_jupyter.jobs.store import LocalJobStore

    runner = KubeRayJobRunner(service=env.service)
    store = LocalJobStore(tmp_path / "jobs")
    job = _job(env.service, {"entrypoint": "python a.py", "cluster": {"profile": "cpu-small"}})
    record = {**job.to_dict(), "owner": "alice", "id": "train-abcde", "kuberay": {"logBytes": 0}}
    log = "x" * (4 << 20)  # 4 MiB: read again at most every 4 s
    reads: list[float] = []
    clock = [1000.0]
    monkeypatch.setattr(rayjob_runner.time, "monotonic", lambda: clock[0])
    answer = json.dumps({"logs": log}).encode()
    monkeypatch.setattr(runner, "_open_log", lambda *_: reads.append(clock[0]) or io.BytesIO(answer))
    status = {"jobId": "train-abcde-1", "rayClusterName": "train-abcde-xyz12"}
    runner._copy_log(store, record, status)  # first read: small so far
    clock[0] += 1.0
    runner._copy_log(store, record, status)  # 4 MiB known: reads every 4 s now
    assert len(reads) == 2
    clock[0] += 1.0
    runner._copy_log(store, record, status)
    clock[0] += 2.0
    runner._copy_log(store, record, status)
    assert len(reads) == 2
    clock[0] += 1.5
    runner._copy_log(store, record, status)
    assert len(reads) == 3
    runner._copy_log(store, record, status, final=True)  # the end is never skipped
    assert len(reads) == 4
    assert store.read_log("alice", "train-abcde", limit=0).size == len(log)  # written once, not per read


def test_one_follower_per_rayjob_across_processes(env: Env) -> None:
    """A second process (a CLI, a kernel) reading a followed job does not follow it too; it takes
    over only once the follower's lease has expired, and the first follower then lets go."""
    from eksray_jupyter.backends.kuberay.rayjob import FOLLOWER_ANNOTATION

    job = env.jobs.submit({"entrypoint": "python train.py", "cluster": {"profile": "cpu-small"}})
    _, ray_id = env.started(job.id)
    env.dashboard.logs[ray_id] = "one\n"
    env.state(job.id, JobState.RUNNING)
    wait_until(lambda: env.jobs.logs(job.id).text == "one\n", what="the log followed")
    first = env.jobs.runner._followers[("alice", job.id)]
    lease = json.loads(env.rayjob(job.id)["metadata"]["annotations"][FOLLOWER_ANNOTATION])  # type: ignore[index]
    assert lease["holder"] == env.jobs.runner.holder

    other = KubeRayJobRunner(service=env.service)
    other.holder = "jupyter-other/4242/feedbeef"  # as another process would be
    assert other._hold(env.rayjob(job.id)) is False  # the lease is fresh: it only reads

    def take_expired_lease() -> bool:
        """The lease as if it had run out (its holder stopped renewing it), taken with the
        resourceVersion just read: a renewal by the first follower in between is a 409, then retried."""
        rj = env.rayjob(job.id)
        assert rj is not None
        rj["metadata"]["annotations"][FOLLOWER_ANNOTATION] = json.dumps(
            {"holder": lease["holder"], "until": 0}
        )
        return other._hold(rj)

    # The other process takes the expired lease ...
    wait_until(take_expired_lease, what="the other process took the lease")
    # ... and the first follower, seeing someone else's fresh lease, stops following.
    wait_until(lambda: not first.alive(), what="the first follower let go")
    assert env.jobs.logs(job.id).text == "one\n"  # appended once


def test_a_stop_recorded_elsewhere_during_a_followers_step_stands(env: Env) -> None:
    """Another process (without the follower's lease) records the stop after the follower read
    the record and before it writes its own: the stop is not written over, and the log the
    follower copied meanwhile is kept once."""
    job = env.jobs.submit({"entrypoint": "python forever.py", "cluster": {"profile": "cpu-small"}})
    _, ray_id = env.started(job.id)
    env.dashboard.logs[ray_id] = "one\n"
    env.state(job.id, JobState.RUNNING)
    wait_until(lambda: env.jobs.logs(job.id).text == "one\n", what="the log followed")

    other = LocalJobStore(env.jobs.stores.local.root)  # as another process sees the store

    def stop_elsewhere() -> None:
        record = other.read("alice", job.id)
        assert record is not None and record["state"] == "running"
        other.write(transition(record, JobState.STOPPED, "stopped on request"))
        env.dashboard.logs[ray_id] = "one\ntwo\n"  # what this read answers: the follower copies and saves it

    env.dashboard.before_next_read = stop_elsewhere
    wait_until(lambda: env.dashboard.before_next_read is None, what="the interleaving")
    done = env.state(job.id, JobState.STOPPED)
    wait_until(
        lambda: not (f := env.jobs.runner._followers.get(("alice", job.id))) or not f.alive(),
        what="the follower done",
    )
    record = other.read("alice", job.id)
    assert record is not None and record["state"] == "stopped" and done.reason == "stopped on request"
    assert [h["state"] for h in record["history"]][-2:] == ["running", "stopped"]
    assert env.jobs.logs(job.id).text == "one\ntwo\n"  # copied once
    assert record["kuberay"]["logBytes"] == len("one\ntwo\n")


def test_a_process_that_exits_releases_its_lease(env: Env) -> None:
    from eksray_jupyter.backends.kuberay.rayjob import FOLLOWER_ANNOTATION

    job = env.jobs.submit({"entrypoint": "python train.py", "cluster": {"profile": "cpu-small"}})
    env.started(job.id)
    env.state(job.id, JobState.RUNNING)
    env.jobs.runner.close()  # what JobService.close does when a CLI exits
    lease = json.loads(env.rayjob(job.id)["metadata"]["annotations"][FOLLOWER_ANNOTATION])  # type: ignore[index]
    assert lease["until"] == 0
    other = KubeRayJobRunner(service=env.service)
    other.holder = "jupyter-server/7/cafe"
    assert other._hold(env.rayjob(job.id)) is True  # taken over at once, no lease to wait out


def test_submit_answers_before_the_upload_and_a_stop_meanwhile_submits_nothing(
    s3env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eksray_jupyter.jobs.store import S3JobStore

    uploading, release = threading.Event(), threading.Event()
    put_package = S3JobStore.put_package

    def slow_put_package(self: S3JobStore, *args: Any, **kwargs: Any) -> str:
        uploading.set()
        assert release.wait(60)
        return put_package(self, *args, **kwargs)

    monkeypatch.setattr(S3JobStore, "put_package", slow_put_package)
    job = s3env.jobs.submit(
        {
            "entrypoint": "python train.py",
            "workingDir": str(project(tmp_path)),
            "cluster": {"profile": "cpu-small"},
        }
    )
    assert job.state == JobState.PENDING  # answered while the upload has not even started
    assert uploading.wait(30)
    assert "packaging the working directory" in (s3env.jobs.get(job.id).reason or "")
    assert s3env.jobs.runner.is_active(s3env.jobs.get(job.id)) is True
    stopped = s3env.jobs.stop(job.id)
    assert stopped.state == JobState.STOPPED
    release.set()
    wait_until(lambda: not s3env.jobs.runner._packagers, what="the upload thread to end")
    assert s3env.rayjob(job.id) is None
    assert s3env.jobs.get(job.id).state == JobState.STOPPED


def test_an_unreadable_working_dir_is_recorded_on_the_failed_job(
    s3env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray._private.runtime_env import packaging

    root = project(tmp_path)

    def unreadable(*_: Any, **__: Any) -> None:  # as for a file the server may not read (tests run as root)
        raise PermissionError(13, "Permission denied", str(root / "lib" / "helper.txt"))

    monkeypatch.setattr(packaging, "create_package", unreadable)
    job = s3env.jobs.submit(
        {"entrypoint": "python train.py", "workingDir": str(root), "cluster": {"profile": "cpu-small"}}
    )
    failed = s3env.state(job.id, JobState.FAILED)
    assert failed.reason is not None and failed.reason.startswith(
        f"the job could not be started: workingDir: cannot package {root}: "
    )
    assert "Permission denied" in failed.reason and "make its files readable" in failed.reason
    assert s3env.fk.list_objects("rayjobs", NS) == []
