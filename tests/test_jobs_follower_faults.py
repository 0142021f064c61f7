"""A RayJob follower under faults: it keeps following through API errors, and a RayJob
whose creation got no answer never runs on unrecorded (issue 13, "KubeRay job follower").

On the Kubernetes simulation: the faults (injected error answers, a create whose answer
is lost) are what the real API server cannot be driven into here.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from eksray_jupyter.backends.kuberay.errors import KubeTimeout
from eksray_jupyter.backends.kuberay.rayjob_runner import PACKAGING_STALE_S
from eksray_jupyter.core.errors import UpstreamTimeoutError
from eksray_jupyter.jobs.models import JobState

from .fakekube import ErrorRule, pytest_plugin
from .test_jobs_kuberay import NS, Env, env, moto_url, project, s3env
from .waiting import wait_until

__all__ = ["env", "moto_url", "s3env"]  # fixtures, used by name
fakekube = pytest_plugin.fakekube
fakekube_kubeconfig = pytest_plugin.fakekube_kubeconfig


def test_the_follower_keeps_following_through_api_errors(env: Env) -> None:
    job = env.jobs.submit({"entrypoint": "python train.py", "cluster": {"profile": "cpu-small"}})
    cluster, ray_id = env.started(job.id)
    env.dashboard.logs[ray_id] = "epoch 1\n"
    follower = env.jobs.runner._followers[("alice", job.id)]
    # Three of the follower's reads of its RayJob fail (an API server in trouble).
    env.fk.faults.errors.append(ErrorRule(500, count=3, method="GET", path=f"/rayjobs/{job.id}$"))
    wait_until(lambda: not env.fk.faults.errors, what="the injected errors to be met")
    # Still the same follower thread, alive: nobody had to read the job to revive it.
    assert env.jobs.runner._followers[("alice", job.id)] is follower and follower.alive()
    env.dashboard.logs[ray_id] = "epoch 1\ndone\n"
    env.finish(job.id, "SUCCEEDED")
    wait_until(lambda: not follower.alive(), what="the follower to finish the job")
    done = env.jobs.get(job.id)
    assert done.state == JobState.SUCCEEDED and env.jobs.logs(job.id).text == "epoch 1\ndone\n"
    assert cluster


def test_a_rayjob_whose_create_got_no_answer_does_not_run_on(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = env.backend.api
    create = api.create_rayjob

    def created_but_unanswered(namespace: str, body: dict) -> dict:  # type: ignore[type-arg]
        create(namespace, body)
        raise KubeTimeout("The Kubernetes API did not answer in time while creating RayJob")

    monkeypatch.setattr(api, "create_rayjob", created_but_unanswered)
    with pytest.raises(UpstreamTimeoutError):
        env.jobs.submit({"entrypoint": "python train.py", "cluster": {"profile": "cpu-small"}})
    (job,) = env.jobs.list()
    assert job.state == JobState.FAILED
    record = env.jobs.runner._store(job).read("alice", job.id)
    assert record is not None and record["kuberay"]["namespace"] == NS  # a stop can find it
    wait_until(lambda: env.rayjob(job.id) is None, what="the unanswered RayJob deleted")


def test_an_upload_whose_process_died_is_failed_not_left_pending(
    s3env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process uploading a job's working directory died (a server killed mid-upload): the
    job never got its RayJob. Another process reading it records it failed with the reason."""
    from eksray_jupyter.jobs.service import JobService
    from eksray_jupyter.jobs.store import S3JobStore

    uploading, release = threading.Event(), threading.Event()
    monkeypatch.setattr(
        S3JobStore, "put_package", lambda *a, **k: uploading.set() or (release.wait(60) and "s3://x/y.zip")
    )
    job = s3env.jobs.submit(
        {
            "entrypoint": "python train.py",
            "workingDir": str(project(tmp_path)),
            "cluster": {"profile": "cpu-small"},
        }
    )
    assert uploading.wait(30)
    store = s3env.jobs.runner._store(job)
    record = store.read("alice", job.id)
    assert record is not None and record["kuberay"]["packagingBy"] == s3env.jobs.runner.holder
    # Recent progress, or this process's own upload: still pending for any reader.
    assert JobService(s3env.service).get(job.id).state == JobState.PENDING
    assert s3env.jobs.get(job.id).state == JobState.PENDING
    # No progress for longer than an upload can go without (as after its process died).
    store.write({**record, "updatedAt": record["updatedAt"] - PACKAGING_STALE_S - 1})
    elsewhere = JobService(s3env.service)
    try:
        failed = elsewhere.get(job.id)
    finally:
        elsewhere.close()
    assert failed.state == JobState.FAILED
    assert failed.reason == (
        "the upload of its working directory was interrupted (the process that uploaded it stopped); "
        "submit the job again"
    )
    release.set()
    wait_until(lambda: not s3env.jobs.runner._packagers, what="the upload thread to end")
    assert s3env.rayjob(job.id) is None and s3env.jobs.get(job.id).state == JobState.FAILED
