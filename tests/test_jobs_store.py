"""Job stores (a local directory, S3 on a moto server over loopback) and the JobService on top.

No Ray here: a runner that does nothing stands in, so these tests look only at what is
persisted where, what a fresh service reads back, and the errors users get.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.errors import ConflictError, InvalidRequestError, NotFoundError
from eksray_jupyter.core.service import ClusterService
from eksray_jupyter.jobs.models import Job, JobState, new_record, transition
from eksray_jupyter.jobs.runner import JobRunner, LocalJobRunner
from eksray_jupyter.jobs.service import JobService
from eksray_jupyter.jobs.store import JobStore, JobStores, LocalJobStore, LogPage, S3JobStore
from eksray_jupyter.jobs.supervisor import Supervisor

from .waiting import wait_until

MEMORY = "tests.memory_backend.MemoryBackend"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """An S3 server (moto) on a free loopback port; credentials for it in the environment.

    The environment is also what a job's supervisor process inherits.
    """
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            mp.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            mp.delenv(key, raising=False)
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


def make_bucket(url: str, name: str) -> Any:
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    s3.create_bucket(Bucket=name)
    return s3


class NullRunner(JobRunner):
    """Starts nothing: the job stays pending (as if its runner had not begun yet)."""

    name = "null"
    started: list[str] = []

    def start(self, job: Job) -> None:
        self.started.append(job.id)

    def stop(self, job: Job) -> bool:
        return False

    def is_active(self, job: Job) -> bool | None:
        return None


def job_service(state_dir: Path, runner: JobRunner | None = None, **settings: Any) -> JobService:
    clusters = ClusterService(EKSRay(state_dir=str(state_dir), backend=MEMORY, **settings))
    return JobService(clusters, runner=runner or NullRunner(service=clusters))


# --- the stores, same contract ------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JobStore:
    if request.param == "local":
        return LocalJobStore(tmp_path / "jobs")
    url = request.getfixturevalue("moto_url")
    bucket = f"contract-{time.time_ns()}"
    make_bucket(url, bucket)
    return S3JobStore(bucket, "some/prefix", endpoint_url=url, region="us-east-1")


def record(job_id: str = "etl-abcde", owner: str = "alice@example.org") -> dict[str, Any]:
    spec = {"name": "etl", "entrypoint": "python etl.py", "store": {"type": "local"}}
    return new_record(job_id, owner, spec, job_id, {"type": "local"}, "/x", "null", now=10.0)


def test_records_logs_and_results(store: JobStore, tmp_path: Path) -> None:
    store.check()
    first = record()
    store.create(first)
    with pytest.raises(ConflictError):
        store.create(first)
    store.create(record("other-fghij"))
    store.create(record("bobs-klmno", owner="bob"))
    assert sorted(r["id"] for r in store.list("alice@example.org")) == ["etl-abcde", "other-fghij"]
    assert [r["id"] for r in store.list("bob")] == ["bobs-klmno"]
    assert store.read("bob", "etl-abcde") is None  # another owner's id is not found

    transition(first, JobState.RUNNING)
    store.write(first)
    assert store.read("alice@example.org", "etl-abcde")["state"] == "running"

    owner, job_id = "alice@example.org", "etl-abcde"
    assert store.read_log(owner, job_id) == LogPage(b"", 0, 0, 0)
    store.append_log(owner, job_id, b"line 1\n")
    store.append_log(owner, job_id, "line 2 \u2713\n".encode())
    store.append_log(owner, job_id, b"line 3\n")
    page = store.read_log(owner, job_id)
    whole, end = page.data, page.next_offset
    assert whole.decode() == "line 1\nline 2 \u2713\nline 3\n"
    assert end == len(whole) == page.size
    assert store.read_log(owner, job_id, 7) == LogPage(whole[7:], 7, end, end)  # from the middle
    assert store.read_log(owner, job_id, 9) == LogPage(whole[9:], 9, end, end)  # from inside a chunk
    assert store.read_log(owner, job_id, 9, 3) == LogPage(whole[9:12], 9, 12, end)  # a page of 3 bytes
    assert store.read_log(owner, job_id, 5, 0) == LogPage(b"", 5, 5, end)  # only the size
    assert store.read_log(owner, job_id, end) == LogPage(b"", end, end, end)  # nothing new
    # The tail: the last bytes, from a line start when there is one in them.
    assert store.read_log(owner, job_id, tail=7) == LogPage(b"line 3\n", end - 7, end, end)
    assert store.read_log(owner, job_id, tail=9) == LogPage(b"line 3\n", end - 7, end, end)
    assert store.read_log(owner, job_id, tail=5) == LogPage(b"ne 3\n", end - 5, end, end)  # inside one line
    assert store.read_log(owner, job_id, tail=1000).data == whole
    assert store.read_log(owner, job_id, tail=0) == LogPage(b"", end, end, end)
    assert b"".join(p.data for p in store.iter_log(owner, job_id, page=4)) == whole
    store.append_log(owner, job_id, b"line 4\n")
    assert store.read_log(owner, job_id, end) == LogPage(b"line 4\n", end, end + 7, end + 7)
    with pytest.raises(InvalidRequestError, match=f"past the end of the log \\({end + 7} bytes"):
        store.read_log(owner, job_id, end + 8)  # never skip what was not read
    with pytest.raises(InvalidRequestError):
        store.read_log(owner, "never-logged", 1)

    source = tmp_path / "r.csv"
    source.write_text("a,b\n1,2\n")
    store.put_result(owner, job_id, "out/r.csv", source)
    assert store.read_result(owner, job_id, "out/r.csv") == b"a,b\n1,2\n"
    with pytest.raises(NotFoundError):
        store.read_result(owner, job_id, "../../job.json")
    with pytest.raises(NotFoundError):
        store.read(owner, "../etc")


def test_a_fresh_store_continues_an_s3_log(moto_url: str) -> None:
    make_bucket(moto_url, "continued")
    one = S3JobStore("continued", "", endpoint_url=moto_url)
    one.append_log("o", "job-aaaaa", b"first\n")
    two = S3JobStore("continued", "", endpoint_url=moto_url)  # e.g. a restarted supervisor
    two.append_log("o", "job-aaaaa", b"second\n")
    assert one.read_log("o", "job-aaaaa") == LogPage(b"first\nsecond\n", 0, 13, 13)
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=moto_url).list_objects_v2(Bucket="continued")["Contents"]
    ]
    assert keys == ["o/job-aaaaa/logs/0000000000000000", "o/job-aaaaa/logs/0000000000000006"]


# --- the service: where jobs go, what a restarted server reads back ------------------------------


def test_s3_store_keeps_jobs_for_a_fresh_service(moto_url: str, tmp_path: Path) -> None:
    s3 = make_bucket(moto_url, "team-jobs")
    settings = {"job_store": "s3", "job_s3_bucket": "team-jobs", "job_s3_endpoint_url": moto_url}
    service = job_service(tmp_path / "a", **settings)
    job = service.submit({"entrypoint": "python train.py"})
    assert job.state == JobState.PENDING
    assert job.store == {"type": "s3", "bucket": "team-jobs", "prefix": "eksray/jobs"}
    assert job.location == f"s3://team-jobs/eksray/jobs/{service.owner}/{job.id}/"
    assert job.cluster_name == job.id and job.cluster_created
    key = f"eksray/jobs/{service.owner}/{job.id}/job.json"
    assert json.loads(s3.get_object(Bucket="team-jobs", Key=key)["Body"].read())["state"] == "pending"
    # Nothing of it on this machine's disk: another machine (a new Jupyter pod) finds it.
    elsewhere = job_service(tmp_path / "b", **settings)
    assert [j.id for j in elsewhere.list()] == [job.id]
    assert elsewhere.get(job.id).spec["entrypoint"] == "python train.py"


def test_a_job_may_name_its_own_bucket_and_is_listed_again(moto_url: str, tmp_path: Path) -> None:
    make_bucket(moto_url, "my-own")
    service = job_service(tmp_path, job_s3_endpoint_url=moto_url)
    local = service.submit({"entrypoint": "python a.py"})
    mine = service.submit({"entrypoint": "python b.py", "store": {"type": "s3", "bucket": "my-own"}})
    assert local.store == {"type": "local"}
    assert mine.store == {"type": "s3", "bucket": "my-own", "prefix": "eksray/jobs"}
    restarted = job_service(tmp_path, job_s3_endpoint_url=moto_url)
    assert {j.id for j in restarted.list()} == {local.id, mine.id}
    assert restarted.get(mine.id).location.startswith("s3://my-own/")


def test_bucket_that_does_not_exist_is_refused_before_anything_is_created(
    moto_url: str, tmp_path: Path
) -> None:
    NullRunner.started.clear()
    service = job_service(
        tmp_path, job_store="s3", job_s3_bucket="no-such-bucket", job_s3_endpoint_url=moto_url
    )
    with pytest.raises(ConflictError) as info:
        service.submit({"entrypoint": "python train.py"})
    message = info.value.message
    assert "'no-such-bucket' does not exist" in message
    assert "aws s3 mb s3://no-such-bucket" in message  # what to do
    assert '"type": "local"' in message
    assert NullRunner.started == []  # no runner, no cluster
    jobs, warnings = service.list_with_warnings()
    assert jobs == []
    assert ["does not exist" in w for w in warnings] == [True]  # the list says why it may be short
    assert not (tmp_path / "jobs" / service.owner).exists()
    # The same request with the local store goes through.
    assert (
        service.submit({"entrypoint": "python train.py", "store": {"type": "local"}}).state
        == JobState.PENDING
    )


def test_unreachable_s3_is_a_backend_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eksray_jupyter.core.errors import BackendError

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    store = S3JobStore("b-unreachable", endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1")
    with pytest.raises(BackendError, match="S3 failed while checking the bucket"):
        store.check()


def test_unknown_existing_cluster_is_a_field_error(tmp_path: Path) -> None:
    service = job_service(tmp_path)
    with pytest.raises(InvalidRequestError) as info:
        service.submit({"entrypoint": "x", "clusterName": "ghost"})
    assert [e.path for e in info.value.errors] == ["clusterName"]
    service.clusters.create({"name": "shared"})
    job = service.submit({"entrypoint": "x", "clusterName": "shared"})
    assert (job.cluster_name, job.cluster_created) == ("shared", False)


def test_record_survives_s3_failing_mid_run(moto_url: str, tmp_path: Path) -> None:
    """The bucket disappears while the job runs: its end is kept on this machine, saying so."""
    s3 = make_bucket(moto_url, "vanishing")
    service = job_service(tmp_path, job_store="s3", job_s3_bucket="vanishing", job_s3_endpoint_url=moto_url)
    job = service.submit({"entrypoint": "python train.py"})
    store = service.stores.open(job.store)
    record = store.read(service.owner, job.id)
    supervisor = Supervisor(service.clusters, service.stores, store, record, tmp_path / "run")
    supervisor.say("some output")
    supervisor.log.flush()
    for item in s3.list_objects_v2(Bucket="vanishing").get("Contents", []):
        s3.delete_object(Bucket="vanishing", Key=item["Key"])
    s3.delete_bucket(Bucket="vanishing")
    supervisor.say("the last words")
    assert not supervisor.log.flush()
    supervisor.log.drain_to(supervisor.stores.local)  # as run() does
    supervisor.save(JobState.SUCCEEDED)
    found = job_service(tmp_path, job_s3_endpoint_url=moto_url, job_s3_bucket="vanishing").get(job.id)
    assert found.state == JobState.SUCCEEDED
    assert "could not be saved to s3://vanishing/" in (found.reason or "")
    assert "does not exist" in (found.reason or "")
    log = service.stores.local.read_log(service.owner, job.id).data.decode()
    assert "the last words" in log


def test_stop_without_a_live_runner_records_stopped(tmp_path: Path) -> None:
    service = job_service(tmp_path)
    job = service.submit({"entrypoint": "python train.py"})
    stopped = service.stop(job.id)
    assert stopped.state == JobState.STOPPED
    assert "runner was not running" in (stopped.reason or "")
    assert service.stop(job.id).state == JobState.STOPPED  # idempotent
    with pytest.raises(NotFoundError):
        service.stop("ghost-aaaaa")
    with pytest.raises(NotFoundError):
        service.get("Not/An/Id")


def test_job_whose_supervisor_died_reads_as_failed(tmp_path: Path) -> None:
    from eksray_jupyter.core import processes

    clusters = ClusterService(EKSRay(state_dir=str(tmp_path), backend=MEMORY))
    runner = LocalJobRunner(service=clusters)
    service = JobService(clusters, runner=runner)
    spawned: list[Job] = []
    runner.start = spawned.append  # type: ignore[method-assign]  # persist only; start by hand
    job = service.submit({"entrypoint": "python train.py"})
    run_dir = runner.run_dir(job.owner, job.id)
    run_dir.mkdir(parents=True)
    with open(run_dir / "supervisor.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", "print('Traceback: boom')"], stdout=log)
        ref = processes.ref_of(proc)
        proc.wait()
    (run_dir / "supervisor.json").write_text(json.dumps(ref))
    failed = service.get(job.id)
    assert failed.state == JobState.FAILED
    assert "supervisor process exited" in (failed.reason or "")
    assert "Traceback: boom" in (failed.reason or "")
    assert f"its cluster {job.id} may still be running" in (failed.reason or "")
    assert service.list()[0].state == JobState.FAILED


def test_owner_names_are_one_safe_path_segment(tmp_path: Path) -> None:
    from eksray_jupyter.jobs.store import owner_key

    assert owner_key("alice@example.org") == "alice@example.org"
    assert owner_key("team/alice") == "team%2Falice"
    assert owner_key("..") == "%2E%2E"
    store = LocalJobStore(tmp_path / "jobs")
    store.create(record(owner=".."))
    assert (tmp_path / "jobs" / "%2E%2E" / "etl-abcde" / "job.json").is_file()
    assert [r["owner"] for r in store.list("..")] == [".."]


def test_a_log_split_by_an_s3_failure_is_read_whole(moto_url: str, tmp_path: Path) -> None:
    """S3 fails at the end of a job: the supervisor keeps the record and the rest of the log
    locally; once S3 is back, the log reads as the S3 part followed by the local part."""
    from eksray_jupyter.core.errors import BackendError
    from eksray_jupyter.jobs.supervisor import Supervisor

    make_bucket(moto_url, "flaky")
    service = job_service(tmp_path, job_store="s3", job_s3_bucket="flaky", job_s3_endpoint_url=moto_url)
    job = service.submit({"entrypoint": "python train.py"})
    store = service.stores.open(job.store)
    supervisor = Supervisor(
        service.clusters, service.stores, store, store.read(service.owner, job.id), tmp_path
    )
    supervisor.say("the beginning")
    assert supervisor.log.flush()

    def s3_down(*_: Any, **__: Any) -> None:
        raise BackendError("S3 is down")

    real_put, store._put = store._put, s3_down  # type: ignore[attr-defined]
    supervisor.say("the last words")
    assert not supervisor.log.flush()
    supervisor.log.drain_to(service.stores.local)  # as run() does
    supervisor.save(JobState.SUCCEEDED)
    store._put = real_put  # type: ignore[attr-defined]
    whole = service.logs(job.id)
    assert whole.text == "[eksray] the beginning\n[eksray] the last words\n"
    assert service.get(job.id).state == JobState.SUCCEEDED
    rest = service.logs(job.id, offset=len(b"[eksray] the beginning\n"))
    assert rest.text == "[eksray] the last words\n" and rest.next_offset == whole.next_offset


def test_a_local_job_is_readable_by_its_user_only(tmp_path: Path) -> None:
    store = LocalJobStore(tmp_path / "jobs")
    store.create(record())
    source = tmp_path / "r.csv"
    source.write_text("secret,1\n")
    source.chmod(0o644)
    store.put_result("alice@example.org", "etl-abcde", "out/r.csv", source)
    store.append_log("alice@example.org", "etl-abcde", b"token=...\n")
    job_dir = Path(store.describe("alice@example.org", "etl-abcde"))
    for path in [job_dir.parent, job_dir, job_dir / "results" / "out"]:
        assert path.stat().st_mode & 0o077 == 0, path
    for path in [job_dir / "job.json", job_dir / "log.txt", job_dir / "results" / "out" / "r.csv"]:
        assert path.stat().st_mode & 0o077 == 0, path


def test_s3_jobs_written_before_the_index_are_listed_and_indexed(moto_url: str) -> None:
    s3 = make_bucket(moto_url, "older")
    old = record("old-abcde")
    s3.put_object(Bucket="older", Key="p/alice@example.org/old-abcde/job.json", Body=json.dumps(old).encode())
    store = S3JobStore("older", "p", endpoint_url=moto_url, region="us-east-1")
    store.create(record("new-fghij"))
    assert sorted(r["id"] for r in store.list("alice@example.org")) == ["new-fghij", "old-abcde"]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="older")["Contents"]}
    assert "p/alice@example.org/_index/old-abcde.json" in keys  # indexed now
    fresh = S3JobStore("older", "p", endpoint_url=moto_url, region="us-east-1")
    assert sorted(r["id"] for r in fresh.list("alice@example.org")) == ["new-fghij", "old-abcde"]


# --- an end recorded by another process is never written over ------------------------------------


def test_a_running_record_is_not_written_over_an_ended_one(store: JobStore) -> None:
    running = transition(record(), JobState.RUNNING)
    assert store.write_unless_ended(running) is None  # nothing there yet: written
    assert store.read("alice@example.org", "etl-abcde")["state"] == "running"
    newer = transition(json.loads(json.dumps(running)), JobState.RUNNING, "still going")
    assert store.write_unless_ended(newer) is None  # over a running record: written
    assert store.read("alice@example.org", "etl-abcde")["reason"] == "still going"

    stopped = transition(json.loads(json.dumps(newer)), JobState.STOPPED, "stopped on request")
    store.write(stopped)  # what a process without the runner records
    later = transition(json.loads(json.dumps(newer)), JobState.RUNNING, "a heartbeat")
    kept = store.write_unless_ended(later)
    assert kept is not None and kept["state"] == "stopped"
    assert store.read("alice@example.org", "etl-abcde")["state"] == "stopped"
    assert [r["state"] for r in store.list("alice@example.org")] == ["stopped"]


def test_a_stop_between_the_read_and_the_write_wins_on_s3(moto_url: str) -> None:
    """S3 has no locks: the write is conditional on the record just read (If-Match), so a stop
    written in between makes S3 refuse it, and the next look finds the stop."""
    bucket = f"race-{time.time_ns()}"
    make_bucket(moto_url, bucket)
    store = S3JobStore(bucket, "p", endpoint_url=moto_url, region="us-east-1")
    running = transition(record(), JobState.RUNNING)
    store.write(running)
    stopper = S3JobStore(bucket, "p", endpoint_url=moto_url, region="us-east-1")  # another process
    stopped = transition(json.loads(json.dumps(running)), JobState.STOPPED, "stopped on request")
    puts: list[str] = []

    def stop_after_the_read(**_: Any) -> None:  # right after the writer's GET of the record
        if not puts:
            puts.append("stop")
            stopper.write(stopped)

    store._client.meta.events.register("after-call.s3.GetObject", stop_after_the_read)
    kept = store.write_unless_ended(transition(json.loads(json.dumps(running)), JobState.RUNNING, "beat"))
    assert puts == ["stop"]
    assert kept is not None and kept["state"] == "stopped"
    assert store.read("alice@example.org", "etl-abcde")["state"] == "stopped"


def test_a_stop_between_the_read_and_the_write_wins_locally(tmp_path: Path) -> None:
    """Locally every writer takes the job's lock: a stop written while the writer waits for it
    is what the writer finds."""
    import fcntl
    import threading

    from eksray_jupyter.core.state_files import write_json_atomic

    store = LocalJobStore(tmp_path / "jobs")
    running = transition(record(), JobState.RUNNING)
    store.create(running)
    path = tmp_path / "jobs" / "alice@example.org" / "etl-abcde"
    result: list[dict[str, Any] | None] = []
    tid: list[int] = []

    def write() -> None:
        tid.append(threading.get_native_id())
        beat = transition(json.loads(json.dumps(running)), JobState.RUNNING, "beat")
        result.append(store.write_unless_ended(beat))

    flock = {"x86_64": "73", "aarch64": "32"}.get(os.uname().machine)  # the flock(2) syscall number

    def blocked() -> bool:  # the writer's thread sleeps in the kernel, in flock(2) on the job's lock
        if not tid:
            return False
        task = Path(f"/proc/self/task/{tid[0]}")
        waiting = (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "S"
        return waiting and (flock is None or (task / "syscall").read_text().split()[0] == flock)

    with open(path / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process holds the lock ...
        writer = threading.Thread(target=write)
        writer.start()
        wait_until(blocked, "the writer waiting for the lock")  # ... so the writer waits for it
        stopped = transition(dict(running), JobState.STOPPED, "stopped on request")
        write_json_atomic(path / "job.json", stopped)
    writer.join(30)
    assert result and result[0] is not None and result[0]["state"] == "stopped"
    assert store.read("alice@example.org", "etl-abcde")["state"] == "stopped"


def test_an_s3_compatible_store_without_conditional_writes_still_saves(
    moto_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from botocore.exceptions import ClientError

    bucket = f"plain-{time.time_ns()}"
    make_bucket(moto_url, bucket)
    store = S3JobStore(bucket, "p", endpoint_url=moto_url, region="us-east-1")
    put = store._client.put_object
    refused: list[str] = []

    def no_conditions(**kwargs: Any) -> Any:
        if "IfMatch" in kwargs or "IfNoneMatch" in kwargs:
            refused.append(kwargs["Key"])
            error = {
                "Error": {
                    "Code": "NotImplemented",
                    "Message": "A header you provided implies functionality that is not implemented",
                }
            }
            raise ClientError({**error, "ResponseMetadata": {"HTTPStatusCode": 501}}, "PutObject")
        return put(**kwargs)

    monkeypatch.setattr(store._client, "put_object", no_conditions)
    running = transition(record(), JobState.RUNNING)
    assert store.write_unless_ended(running) is None
    assert refused and store.read("alice@example.org", "etl-abcde")["state"] == "running"
    store.write(transition(json.loads(json.dumps(running)), JobState.STOPPED, "stopped on request"))
    kept = store.write_unless_ended(transition(json.loads(json.dumps(running)), JobState.RUNNING, "beat"))
    assert kept is not None and kept["state"] == "stopped"  # still checked, if not atomically


def test_the_stores_of_a_registry_tell_its_listeners_of_their_writes(moto_url: str, tmp_path: Path) -> None:
    bucket = f"told-{time.time_ns()}"
    make_bucket(moto_url, bucket)
    settings = {"s3_bucket": bucket, "s3_endpoint_url": moto_url, "s3_region": "us-east-1"}
    stores, other = JobStores(str(tmp_path), **settings), JobStores(str(tmp_path), **settings)
    heard: list[tuple[str, str, str]] = []
    stop = stores.on_record_written(lambda where, rec: heard.append((where["type"], rec["id"], rec["state"])))
    heard_by_other: list[str] = []
    other.on_record_written(lambda where, rec: heard_by_other.append(rec["id"]))
    s3 = stores.open({"type": "s3", "bucket": bucket})
    assert stores.known() == [stores.local, s3]
    for store in (stores.local, s3):
        first = record()
        store.create(first)
        store.write(transition(first, JobState.RUNNING))
        assert store.write_unless_ended(transition(first, JobState.RUNNING, "a heartbeat")) is None
        store.append_log("alice@example.org", "etl-abcde", b"not a record\n")
        store.write(transition(first, JobState.STOPPED))
        assert store.write_unless_ended(transition(first, JobState.RUNNING)) is not None  # not written
    states = ["pending", "running", "running", "stopped"]
    assert heard == [(where, "etl-abcde", state) for where in ("local", "s3") for state in states]
    assert heard_by_other == []  # another registry's listeners hear only its own stores

    LocalJobStore(tmp_path / "jobs").write(record("alone-abcde"))  # a store of no registry tells nobody
    S3JobStore(bucket, endpoint_url=moto_url, region="us-east-1").write(record("alone-fghij"))
    stop()
    stores.local.write(record("after-abcde"))
    assert len(heard) == 8


@pytest.mark.parametrize("job_id", ["train-abcde\n", "Train-abcde", "-x", "x-", "a" * 64, "a/b", ""])
def test_a_job_id_is_checked_exactly(job_id: str) -> None:
    from eksray_jupyter.core.errors import NotFoundError
    from eksray_jupyter.jobs.store.base import check_id

    with pytest.raises(NotFoundError):
        check_id(job_id)
    check_id("train-abcde")
