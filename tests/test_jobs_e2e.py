"""Jobs end to end on real Ray: the local runner's detached supervisor, Ray's Jobs API, stores.

Two real clusters in all: one a job creates and deletes itself (through the REST API), and
one shared cluster (``clusterName``) that the other jobs run on. Every wait is on a
condition with a generous timeout; clusters are stopped through the service only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest

from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.models import Phase
from eksray_jupyter.core.service import ClusterService
from eksray_jupyter.jobs.models import JobState
from eksray_jupyter.jobs.service import JobService
from eksray_jupyter.services import Services

from .test_jobs_store import moto_url  # noqa: F401  (fixture)
from .test_local_e2e import cluster_pids
from .waiting import wait_until

pytestmark = pytest.mark.ray

PYTHON = shlex.quote(sys.executable)  # the driver needs this environment's ray
JOB_TIMEOUT = 420.0
SHARED = "jobs-shared"

MAIN_PY = """\
import os, pathlib, ray
ray.init()
@ray.remote
def square(x):
    return x * x
total = sum(ray.get([square.remote(i) for i in range(4)]))
print(f"greeting={os.environ['GREETING']} total={total}", flush=True)
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/result.txt").write_text(f"{total}\\n")
pathlib.Path("out/ignored.log").write_text("not a result\\n")
pathlib.Path(os.environ["EKSRAY_RESULTS_DIR"], "direct.txt").write_text("direct\\n")
"""


@pytest.fixture
def backend_class() -> str:
    return "local"


def alive(pids: set[int]) -> list[int]:
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
    return out


# --- a job that creates and deletes its own cluster, through the REST API ----------------------


async def test_job_with_its_own_cluster(jp_fetch: Any, jp_root_dir: Path, state_dir: Path, jobs: Any) -> None:
    project = jp_root_dir / "proj"
    project.mkdir()
    (project / "main.py").write_text(MAIN_PY)

    async def api(*path: str, method: str = "GET", body: Any = None) -> Any:
        response = await jp_fetch(
            "eksray", "api", *path, method=method, body=None if body is None else json.dumps(body)
        )
        return (
            json.loads(response.body) if "json" in response.headers.get("Content-Type", "") else response.body
        )

    job_created = time.time()
    job = await api(
        "jobs",
        method="POST",
        body={
            "name": "e2e",
            "entrypoint": f"{PYTHON} main.py",
            "workingDir": "proj",
            "runtimeEnv": {"envVars": {"GREETING": "hello"}},
            "results": ["out/*.txt"],
            "cluster": {"head": {"cpu": 1}, "workerGroups": []},
            "activeDeadlineSeconds": 1800,
            # A cluster whose head fails to start (an overloaded machine) is replaced on retry.
            "backoffLimit": 1,
        },
    )
    job_id, cluster = job["id"], job["id"]
    seen_states: list[str] = []
    pids: set[int] = set()
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        job = await api("jobs", job_id)
        if not seen_states or seen_states[-1] != job["state"]:
            seen_states.append(job["state"])
        if (state_dir / "local" / "clusters" / cluster / "cluster.json").is_file():
            with contextlib.suppress(AssertionError, KeyError, TypeError):  # being written or removed
                pids |= cluster_pids(state_dir, cluster)
        if job["state"] in ("succeeded", "failed", "stopped") and job["clusterDeletedAt"]:
            break
        assert time.monotonic() < deadline, f"job still {job['state']}: {job}"
        await asyncio.sleep(1.0)

    assert job["state"] == "succeeded", job["reason"]
    assert {"starting", "running", "succeeded"} <= set(seen_states)
    states = [h["state"] for h in job["history"]]
    assert states[:2] == ["pending", "starting"] and states[-2:] == ["running", "succeeded"]
    attempt = job["attempts"][-1]
    assert (attempt["status"], attempt["exitCode"]) == ("SUCCEEDED", 0)
    # What its cluster cost, recorded when it was deleted (no prices set: resource-hours).
    assert job["cost"] is not None and job["cost"]["dollars"] == 0
    lifetime_hours = (time.time() - job_created) / 3600
    assert 0 < job["cost"]["resourceHours"]["cpu"] <= lifetime_hours, job["cost"]  # one 1-CPU head

    # The log is complete in the store, our lines and Ray's.
    log = (await api("jobs", job_id, "logs")).decode()
    assert "greeting=hello total=14" in log
    assert f"[eksray] creating cluster {cluster}" in log
    assert "[eksray] collected 1 result file(s)" in log

    # Result files: the matched one (not out/ignored.log) and the one written to $EKSRAY_RESULTS_DIR.
    assert job["results"] == [{"path": "direct.txt", "size": 7}, {"path": "out/result.txt", "size": 3}]
    stored = Path(job["location"]) / "results"
    assert (stored / "out" / "result.txt").read_text() == "14\n"
    assert (stored / "direct.txt").read_text() == "direct\n"

    # The cluster is gone: not listed, no process left, no state left.
    assert cluster not in [c["name"] for c in (await api("clusters"))["clusters"]]
    assert pids, "the cluster's processes were never seen"
    wait_until(lambda: not alive(pids), "the cluster's processes to exit", timeout=60, interval=0.5)
    assert not (state_dir / "local" / "clusters" / cluster).exists()
    # The supervisor has finished too.
    wait_until(
        lambda: jobs.runner.is_active(jobs.get(job_id)) is False,
        "the supervisor to exit",
        timeout=60,
        interval=0.5,
    )

    # A "restarted server": a fresh service on the same state reads it all back.
    fresh = JobService(ClusterService(EKSRay(state_dir=str(state_dir), backend="local")))
    again = fresh.get(job_id)
    assert again.state == JobState.SUCCEEDED
    assert "greeting=hello total=14" in fresh.logs(job_id).text
    assert fresh.result(job_id, "out/result.txt") == b"14\n"
    assert [j.id for j in fresh.list()] == [job_id]


# --- jobs on one shared, existing cluster ------------------------------------------------------


def head_up(service: ClusterService, name: str) -> bool:
    """Wait until the cluster is ready with its head registered in Ray (False: it failed first).

    Once the head's raylet is registered, `ray start` stops waiting for it; before, on an
    overloaded machine, it gives up after 30 s and the head exits.
    """

    def settled() -> str | None:
        cluster = service.get(name)
        if cluster.phase == Phase.FAILED:
            return "failed"
        head = any(n.kind == "head" and n.state == "alive" for n in cluster.nodes)
        return "up" if cluster.phase == Phase.READY and head else None

    return wait_until(settled, "the shared cluster", timeout=JOB_TIMEOUT, interval=0.5) == "up"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    state = tmp_path_factory.mktemp("jobs-e2e-state")
    service = ClusterService(EKSRay(state_dir=str(state), backend="local"))
    try:
        for _try in range(3):
            service.create({"name": SHARED, "head": {"cpu": 1}, "workerGroups": []})
            if head_up(service, SHARED):
                break
            # On an overloaded machine `ray start` gives up on a head raylet slower than 30 s.
            service.delete(SHARED)
        else:
            pytest.fail("the shared cluster's head did not come up in 3 tries")
        services = Services(service)
        yield services
    finally:
        jobs = JobService(service)
        for job in jobs.list():
            if not job.terminal:
                jobs.stop(job.id, wait=90)
        service.delete(SHARED)


def test_failing_job_is_retried_and_reports_its_log_tail(shared: Services) -> None:
    job = shared.jobs.submit(
        {
            "entrypoint": f"{PYTHON} -c \"import sys; print('about to fail', flush=True); sys.exit(3)\"",
            "clusterName": SHARED,
            "backoffLimit": 1,
        }
    )
    assert (job.cluster_name, job.cluster_created) == (SHARED, False)
    done = shared.jobs.wait(job.id, timeout=JOB_TIMEOUT)
    assert done.state == JobState.FAILED
    assert "exited with code 3" in (done.reason or "")
    assert "about to fail" in (done.reason or "")  # the tail of its log
    assert [(a["status"], a["exitCode"]) for a in done.attempts] == [("FAILED", 3), ("FAILED", 3)]
    log = shared.jobs.logs(job.id).text
    assert log.splitlines().count("about to fail") == 2
    assert "[eksray] attempt 1 of 2 failed: the entrypoint exited with code 3\n" in log
    assert "attempt 2 of 2" in log
    # An existing cluster is never deleted by a job.
    assert done.cluster_deleted_at is None
    assert shared.clusters.get(SHARED).phase == Phase.READY


def test_job_exceeding_its_deadline_is_stopped(shared: Services) -> None:
    marker = "600.4321"  # a sleep no one else runs, to find its process
    job = shared.jobs.submit(
        {"entrypoint": f"sleep {marker}", "clusterName": SHARED, "activeDeadlineSeconds": 30}
    )
    done = shared.jobs.wait(job.id, timeout=JOB_TIMEOUT)
    assert done.state == JobState.FAILED
    assert (done.reason or "").startswith("deadline exceeded"), done.reason
    assert done.attempts[-1]["status"] == "STOPPED"  # Ray stopped the job
    assert done.finished_at is not None and done.finished_at - done.created_at >= 30

    def sleeping() -> list[int]:
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if marker in " ".join(proc.info["cmdline"] or ()):
                found.append(proc.info["pid"])
        return found

    wait_until(lambda: not sleeping(), "the entrypoint's process to be gone", timeout=60, interval=0.5)
    assert "stopping the Ray job (deadline exceeded" in shared.jobs.logs(job.id).text


def test_logs_are_persisted_while_running_and_stop_works(shared: Services) -> None:
    ticker = "import time\\nfor i in range(1200):\\n    print(f'tick {i}', flush=True)\\n    time.sleep(0.5)"
    job = shared.jobs.submit({"entrypoint": f'{PYTHON} -c "$(printf "{ticker}")"', "clusterName": SHARED})

    def ticking() -> bool:
        return "tick 3" in shared.jobs.logs(job.id).text

    wait_until(ticking, "the first lines in the store", timeout=JOB_TIMEOUT, interval=1.0)
    assert shared.jobs.get(job.id).state == JobState.RUNNING  # read while it runs, not at the end
    offset = shared.jobs.logs(job.id).next_offset
    wait_until(
        lambda: shared.jobs.logs(job.id, offset).data,
        "more lines after the offset",
        timeout=JOB_TIMEOUT,
        interval=1.0,
    )

    stopped = shared.jobs.stop(job.id, wait=120)
    assert stopped.state == JobState.STOPPED, stopped
    assert stopped.reason == "stopped on request"
    assert stopped.attempts[-1]["status"] == "STOPPED"
    assert "tick 3" in shared.jobs.logs(job.id).text
    assert shared.clusters.get(SHARED).phase == Phase.READY


def test_s3_store_end_to_end(shared: Services, moto_url: str, tmp_path: Path) -> None:  # noqa: F811
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    s3.create_bucket(Bucket="e2e-jobs")
    settings = {"job_store": "s3", "job_s3_bucket": "e2e-jobs", "job_s3_endpoint_url": moto_url}
    service = ClusterService(EKSRay(state_dir=shared.clusters.config.state_dir, backend="local", **settings))
    write = "import os, pathlib; print('to s3', flush=True); pathlib.Path(os.environ['EKSRAY_RESULTS_DIR'], 'r.txt').write_text('s3 result')"
    jobs = JobService(service)
    job = jobs.submit({"entrypoint": f'{PYTHON} -c "{write}"', "clusterName": SHARED})
    done = jobs.wait(job.id, timeout=JOB_TIMEOUT)
    assert done.state == JobState.SUCCEEDED, done.reason
    assert done.location == f"s3://e2e-jobs/eksray/jobs/{service.owner}/{job.id}/"
    # Nothing on this machine's job store: all of it is in the bucket.
    assert not (Path(shared.clusters.config.state_dir) / "jobs" / service.owner / job.id).exists()
    everything = [o["Key"] for o in s3.list_objects_v2(Bucket="e2e-jobs")["Contents"]]
    keys = {k.split(f"/{job.id}/", 1)[1] for k in everything if f"/{job.id}/" in k}
    assert {"job.json", "results/r.txt"} <= keys
    assert f"eksray/jobs/{service.owner}/_index/{job.id}.json" in everything  # what the list reads
    assert any(k.startswith("logs/") for k in keys)
    # Another machine (another state dir) reads it back from S3.
    elsewhere = JobService(ClusterService(EKSRay(state_dir=str(tmp_path), backend="local", **settings)))
    assert elsewhere.get(job.id).state == JobState.SUCCEEDED
    assert "to s3" in elsewhere.logs(job.id).text
    assert elsewhere.result(job.id, "r.txt") == b"s3 result"
