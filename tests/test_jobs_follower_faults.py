"""A RayJob follower under faults: it keeps following through API errors, and a RayJob
whose creation got no answer never runs on unrecorded (issue 13, "KubeRay job follower").

On the Kubernetes simulation: the faults (injected error answers, a create whose answer
is lost) are what the real API server cannot be driven into here.
"""

from __future__ import annotations

import pytest

from eksray_jupyter.backends.kuberay.errors import KubeTimeout
from eksray_jupyter.core.errors import UpstreamTimeoutError
from eksray_jupyter.jobs.models import JobState

from .fakekube import ErrorRule, pytest_plugin
from .test_jobs_kuberay import NS, Env, env
from .waiting import wait_until

__all__ = ["env"]  # a fixture, used by name
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
