"""Jobs on the push stream: the job watcher (local store, S3 on a moto server) and the websocket.

No Ray: records are written straight to the stores, as a job's supervisor would. Every
wait is on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.websocket import WebSocketClientConnection

import eksray_jupyter.jobs.store.local as local_store_module
from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.service import ClusterService
from eksray_jupyter.core.state_files import write_json_atomic
from eksray_jupyter.jobs.models import Job, JobState, new_record, transition
from eksray_jupyter.jobs.runner import JobRunner
from eksray_jupyter.jobs.service import JobService
from eksray_jupyter.jobs.store import JobStores, LocalJobStore, S3JobStore, owner_key
from eksray_jupyter.jobs.watch import JobChange, JobWatcher

from .test_jobs_store import make_bucket, moto_url  # noqa: F401 (moto_url is a fixture)
from .waiting import wait_until

MEMORY = "tests.memory_backend.MemoryBackend"
TIMEOUT = 30.0


class QuietRunner(JobRunner):
    """Starts nothing; ``alive`` says whether the job's runner is alive (None: cannot tell)."""

    name = "quiet"
    alive: bool | None = None

    def start(self, job: Job) -> None:
        pass

    def stop(self, job: Job) -> bool:
        return False

    def is_active(self, job: Job) -> bool | None:
        return type(self).alive


@pytest.fixture(autouse=True)
def runner_cannot_tell() -> Iterator[None]:
    QuietRunner.alive = None
    yield
    QuietRunner.alive = None


def job_service(state_dir: Path, **settings: Any) -> JobService:
    clusters = ClusterService(EKSRay(state_dir=str(state_dir), backend=MEMORY, **settings))
    return JobService(clusters, runner=QuietRunner(service=clusters))


class Changes:
    """A subscriber that queues what it gets."""

    def __init__(self) -> None:
        self.queue: queue.Queue[JobChange] = queue.Queue()

    def __call__(self, change: JobChange) -> None:
        self.queue.put(change)

    def next(self, timeout: float = TIMEOUT) -> JobChange:
        return self.queue.get(timeout=timeout)

    def next_matching(self, match: Callable[[JobChange], bool], timeout: float = TIMEOUT) -> JobChange:
        deadline = time.monotonic() + timeout
        while True:
            change = self.next(max(0.0, deadline - time.monotonic()))
            if match(change):
                return change

    def until(self, done: Callable[[list[JobChange]], bool], timeout: float = TIMEOUT) -> list[JobChange]:
        """The changes received until ``done`` says they are enough."""
        deadline = time.monotonic() + timeout
        got: list[JobChange] = []
        while not done(got):
            got.append(self.next(max(0.0, deadline - time.monotonic())))
        return got


def write_state(
    service: JobService,
    job_id: str,
    state: JobState,
    reason: str | None = None,
    stores: JobStores | None = None,
) -> None:
    """What a supervisor does: read the record, move it on, write it back (through ``stores``,
    the service's own by default)."""
    store = (stores or service.stores).local
    record = store.read(service.owner, job_id)
    assert record is not None
    store.write(transition(record, state, reason))


# --- the watcher, local store ----------------------------------------------------------------------


def test_watcher_reports_new_changed_and_gone_jobs_then_stops(tmp_path: Path) -> None:
    service = job_service(tmp_path)
    first = service.submit({"entrypoint": "python a.py"})
    watcher = JobWatcher(service, interval=0.02)
    changes = Changes()
    unsubscribe = watcher.subscribe(changes)
    assert watcher.running
    snapshot = watcher.snapshot()
    assert [j.id for j in snapshot.jobs] == [first.id] and snapshot.warnings == []

    write_state(service, first.id, JobState.RUNNING)
    change = changes.next()
    assert change.kind == "job" and change.job is not None
    assert change.job.id == first.id and change.job.state == JobState.RUNNING
    assert change.owner == service.owner

    second = service.submit({"entrypoint": "python b.py"})
    change = changes.next()
    assert change.kind == "job" and change.job_id == second.id and change.job is not None
    assert change.job.to_dict() == service.get(second.id).to_dict()  # what GET /jobs/{id} renders

    shutil.rmtree(Path(first.location))
    assert changes.next() == JobChange("deleted", service.owner, first.id)
    assert [j.id for j in watcher.snapshot().jobs] == [second.id]

    # Nobody listens: the thread is stopped and joined, and nothing is read any more.
    unsubscribe()
    assert not watcher.running
    assert not any(t.name == "eksray-job-watch" and t.is_alive() for t in threading.enumerate())
    polls = watcher.polls
    write_state(service, second.id, JobState.RUNNING)
    unsubscribe()  # twice is harmless
    assert watcher.polls == polls and changes.queue.empty()

    # A new subscriber starts from a fresh read: the change made meanwhile is in its snapshot.
    again = Changes()
    unsubscribe = watcher.subscribe(again)
    assert {j.id: j.state for j in watcher.snapshot().jobs}[second.id] == JobState.RUNNING
    write_state(service, second.id, JobState.SUCCEEDED)
    change = again.next()
    assert change.job_id == second.id and change.job is not None and change.job.state == JobState.SUCCEEDED
    unsubscribe()


def test_another_process_writing_a_record_is_reported_by_reading_just_that_record(tmp_path: Path) -> None:
    service = job_service(tmp_path)
    job = service.submit({"entrypoint": "python a.py"})
    mine = JobService(service.clusters, runner=QuietRunner(service=service.clusters))
    # Reads so rare that only a notification brings the change within the test's timeout.
    watcher = JobWatcher(mine, interval=3600)
    changes = Changes()
    unsubscribe = watcher.subscribe(changes)
    try:
        assert [j.id for j in watcher.snapshot().jobs] == [job.id]
        wait_until(lambda: watcher.thread_reads >= 1, "the thread's first read")
        whole_reads = watcher.polls
        # Another process's write: straight to the file, not through this server's stores.
        path = tmp_path / "jobs" / owner_key(service.owner) / job.id / "job.json"
        record = json.loads(path.read_text())
        write_json_atomic(path, transition(record, JobState.RUNNING))
        change = changes.next_matching(lambda c: c.job_id == job.id)
        assert change.job is not None and change.job.state == JobState.RUNNING
        assert watcher.polls == whole_reads  # that record alone was read, not the owner's list
        # Someone else's record wakes nobody here.
        other = tmp_path / "jobs" / owner_key("someone-else") / "theirs-abcde" / "job.json"
        other.parent.mkdir(parents=True)
        write_json_atomic(other, {**record, "id": "theirs-abcde", "owner": "someone-else"})
        with pytest.raises(queue.Empty):
            changes.queue.get(timeout=0.5)
        assert watcher.polls == whole_reads
    finally:
        unsubscribe()


def test_watcher_threads_only_while_subscribed(tmp_path: Path) -> None:
    watcher = JobWatcher(job_service(tmp_path), interval=0.02)
    assert not watcher.running
    one, two = watcher.subscribe(Changes()), watcher.subscribe(Changes())
    threads = [t for t in threading.enumerate() if t.name == "eksray-job-watch"]
    assert len(threads) == 1  # one thread, however many subscribers
    one()
    assert watcher.running
    two()
    assert not watcher.running and not threads[0].is_alive()


def test_a_dead_runner_fails_the_job_through_the_watcher(tmp_path: Path) -> None:
    service = job_service(tmp_path)
    job = service.submit({"entrypoint": "python a.py"})
    watcher = JobWatcher(service, interval=0.02)
    changes = Changes()
    unsubscribe = watcher.subscribe(changes)
    try:
        assert watcher.snapshot().jobs[0].state == JobState.PENDING
        QuietRunner.alive = False  # its runner died without recording an end
        change = changes.next()
        assert change.job is not None and change.job.state == JobState.FAILED
        assert change.job.reason.startswith(QuietRunner(service=service.clusters).failure_hint(job))
        # Reconciled as JobService does: the record itself says so.
        assert service.stores.local.read(service.owner, job.id)["state"] == "failed"
    finally:
        unsubscribe()


def test_the_local_store_parses_only_changed_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalJobStore(tmp_path / "jobs")
    for i in range(3):
        store.create(new_record(f"job-{i}", "alice", {"name": "job"}, "c", {"type": "local"}, "/x", "quiet"))
    parsed: list[Path] = []
    real_read_json = local_store_module.read_json

    def counting(path: Path, default: Any = None) -> Any:
        parsed.append(path)
        return real_read_json(path, default)

    monkeypatch.setattr(local_store_module, "read_json", counting)
    assert [r["id"] for r in store.list("alice")] == ["job-0", "job-1", "job-2"]
    assert len(parsed) == 3
    parsed.clear()
    assert [r["id"] for r in store.list("alice")] == ["job-0", "job-1", "job-2"]
    assert parsed == []  # nothing changed: nothing parsed

    record = store.read("alice", "job-1")
    parsed.clear()
    store.write(transition(record, JobState.RUNNING))
    listed = {r["id"]: r["state"] for r in store.list("alice")}
    assert listed == {"job-0": "pending", "job-1": "running", "job-2": "pending"}
    assert [p.parent.name for p in parsed] == ["job-1"]

    shutil.rmtree(tmp_path / "jobs" / "alice" / "job-2")
    assert [r["id"] for r in store.list("alice")] == ["job-0", "job-1"]
    assert all(p.parent.name != "job-2" for p in store._parsed)  # forgotten


# --- S3 -------------------------------------------------------------------------------------------


class S3Calls:
    """Counts the S3 operations a store's client makes (botocore's event hooks)."""

    def __init__(self, store: S3JobStore) -> None:
        self.calls: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()
        store._client.meta.events.register("before-call.s3.*", self._record)

    def _record(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        with self._lock:
            self.calls.append((time.monotonic(), model.name, str(params.get("url_path", ""))))

    def named(self, operation: str) -> list[tuple[float, str, str]]:
        with self._lock:
            return [c for c in self.calls if c[1] == operation]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


def test_the_s3_store_gets_only_records_whose_etag_changed(moto_url: str) -> None:  # noqa: F811
    bucket = f"listed-{time.time_ns()}"
    make_bucket(moto_url, bucket)
    store = S3JobStore(bucket, "p", endpoint_url=moto_url, region="us-east-1")
    for i in range(3):
        store.create(new_record(f"job-{i}", "alice", {"name": "job"}, "c", {"type": "local"}, "/x", "quiet"))
    store.append_log("alice", "job-0", b"a log chunk\n")
    calls = S3Calls(store)
    assert [r["id"] for r in store.list("alice")] == ["job-0", "job-1", "job-2"]
    # The index, then once per store object the job folders (for jobs an older version wrote).
    assert len(calls.named("ListObjectsV2")) == 2 and len(calls.named("GetObject")) == 3
    calls.clear()
    assert [r["id"] for r in store.list("alice")] == ["job-0", "job-1", "job-2"]
    assert len(calls.named("ListObjectsV2")) == 1 and calls.named("GetObject") == []

    record = store.read("alice", "job-2")
    store.write(transition(record, JobState.RUNNING))
    calls.clear()
    assert {r["id"]: r["state"] for r in store.list("alice")}["job-2"] == "running"
    gets = calls.named("GetObject")
    assert len(gets) == 1 and "_index/job-2.json" in gets[0][2]


def s3_job_service(tmp_path: Path, moto_url: str, name: str) -> tuple[JobService, str, Any]:  # noqa: F811
    """A job service whose default store is a new bucket on the moto server: (service, bucket, client)."""
    bucket = f"{name}-{time.time_ns()}"
    client = make_bucket(moto_url, bucket)
    service = job_service(
        tmp_path,
        job_store="s3",
        job_s3_bucket=bucket,
        job_s3_endpoint_url=moto_url,
        job_s3_region="us-east-1",
    )
    return service, bucket, client


def test_the_watcher_lists_s3_at_its_slower_interval(moto_url: str, tmp_path: Path) -> None:  # noqa: F811
    service, _bucket, _client = s3_job_service(tmp_path, moto_url, "watched")
    job = service.submit({"entrypoint": "python a.py"})
    local = service.submit({"entrypoint": "python b.py", "store": {"type": "local"}})
    # From here on the records are written as by other processes (through stores of their own),
    # which do not wake the watcher.
    elsewhere = JobStores.from_config(service.config)
    s3 = service.stores.open(job.store)
    assert isinstance(s3, S3JobStore)
    calls = S3Calls(s3)
    watcher = JobWatcher(service, interval=0.02, s3_interval=0.5)
    changes = Changes()
    unsubscribe = watcher.subscribe(changes)
    try:
        assert {j.id for j in watcher.snapshot().jobs} == {job.id, local.id}
        # The local store is read every 20 ms and its changes come at once...
        write_state(service, local.id, JobState.RUNNING, stores=elsewhere)
        assert changes.next().job_id == local.id
        # ... S3 is listed every 0.5 s, and a change there arrives with the next listing.
        record = s3.read(service.owner, job.id)
        elsewhere.open(job.store).write(transition(record, JobState.RUNNING))
        change = changes.next_matching(lambda c: c.job_id == job.id)
        assert change.job is not None and change.job.state == JobState.RUNNING
        # Listings that find nothing new GET nothing.
        gets = len(calls.named("GetObject"))
        listed = len(calls.named("ListObjectsV2"))
        wait_until(lambda: len(calls.named("ListObjectsV2")) >= listed + 3, "three more S3 listings")
        assert len(calls.named("GetObject")) == gets
        times = [t for t, _, _ in calls.named("ListObjectsV2")][2:]  # the first listing has two LISTs
        assert min(b - a for a, b in itertools.pairwise(times)) >= 0.45
        assert watcher.polls > 2 * len(times)  # the local store was read far more often
    finally:
        unsubscribe()


def test_writes_of_this_process_are_reported_at_once(moto_url: str, tmp_path: Path) -> None:  # noqa: F811
    service, _bucket, _client = s3_job_service(tmp_path, moto_url, "woken")
    # Polls so rare that only a wake-up can bring the changes within the test's timeout.
    watcher = JobWatcher(service, interval=3600, s3_interval=3600)
    changes = Changes()
    unsubscribe = watcher.subscribe(changes)
    try:
        assert watcher.snapshot().jobs == []
        in_s3 = service.submit({"entrypoint": "python a.py"})
        assert changes.next_matching(lambda c: c.job_id == in_s3.id).job is not None
        local = service.submit({"entrypoint": "python b.py", "store": {"type": "local"}})
        assert changes.next_matching(lambda c: c.job_id == local.id).job is not None
        s3 = service.stores.open(in_s3.store)
        assert isinstance(s3, S3JobStore)
        calls = S3Calls(s3)
        s3.write(transition(s3.read(service.owner, in_s3.id), JobState.RUNNING))
        change = changes.next_matching(lambda c: c.job_id == in_s3.id)
        assert change.job is not None and change.job.state == JobState.RUNNING
        assert calls.named("ListObjectsV2") == []  # the written record is put in the last listing
    finally:
        unsubscribe()
    assert not watcher.running


def test_an_s3_store_that_fails_is_a_warning_and_its_jobs_go(moto_url: str, tmp_path: Path) -> None:  # noqa: F811
    service, bucket, client = s3_job_service(tmp_path, moto_url, "vanishing")
    job = service.submit({"entrypoint": "python a.py"})
    watcher = JobWatcher(service, interval=0.02, s3_interval=0.05)
    changes = Changes()
    unsubscribe = watcher.subscribe(changes)
    try:
        assert [j.id for j in watcher.snapshot().jobs] == [job.id]
        for item in client.list_objects_v2(Bucket=bucket)["Contents"]:
            client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)
        # Both come, in either order (the objects go one by one while the store is listed).
        got = changes.until(
            lambda got: (
                JobChange("deleted", service.owner, job.id) in got
                and any(c.kind == "warnings" and c.warnings for c in got)
            )
        )
        warning = next(c for c in got if c.kind == "warnings" and c.warnings)
        assert len(warning.warnings) == 1 and bucket in warning.warnings[0]
        assert watcher.snapshot().warnings == warning.warnings  # as GET /jobs says
    finally:
        unsubscribe()


# --- the stream -----------------------------------------------------------------------------------


@pytest.fixture
def eksray_settings() -> dict[str, Any]:
    return {"job_runner": "tests.test_jobs_stream.QuietRunner", "job_watch_seconds": 0.05}


async def read_json(ws: WebSocketClientConnection) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.read_message(), TIMEOUT)
    assert message is not None, "stream closed"
    return json.loads(message)


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def connect(jp_ws_fetch: Any) -> tuple[WebSocketClientConnection, dict[str, Any]]:
    ws = await jp_ws_fetch("eksray", "api", "stream")
    assert (await read_json(ws))["type"] == "snapshot"  # the clusters first
    jobs = await read_json(ws)
    assert jobs["type"] == "jobs"
    return ws, jobs


async def test_stream_sends_the_jobs_then_their_changes(jp_ws_fetch: Any, jp_fetch: Any, jobs: Any) -> None:
    first = await in_thread(jobs.submit, {"entrypoint": "python a.py"})
    ws, snapshot = await connect(jp_ws_fetch)
    listed = json.loads((await jp_fetch("eksray", "api", "jobs")).body)
    assert snapshot == {"type": "jobs", **listed}  # exactly GET /jobs
    assert [j["id"] for j in snapshot["jobs"]] == [first.id]

    # A job submitted through the REST API (or the CLI, a magic) shows up.
    response = await jp_fetch(
        "eksray", "api", "jobs", method="POST", body=json.dumps({"entrypoint": "python b.py"})
    )
    second = json.loads(response.body)
    message = await read_json(ws)
    assert message["type"] == "job" and message["job"]["id"] == second["id"]

    # A runner (here: the test) moves a job on: the socket gets exactly what GET /jobs/{id} says.
    await in_thread(write_state, jobs, first.id, JobState.RUNNING)
    message = await read_json(ws)
    got = json.loads((await jp_fetch("eksray", "api", "jobs", first.id)).body)
    assert message == {"type": "job", "job": got}
    assert got["state"] == "running"

    await in_thread(shutil.rmtree, Path(first.location))
    assert await read_json(ws) == {"type": "jobDeleted", "id": first.id}
    ws.close()


async def test_stream_carries_only_the_owners_jobs(jp_ws_fetch: Any, jobs: Any) -> None:
    ws, snapshot = await connect(jp_ws_fetch)
    assert snapshot["jobs"] == [] and snapshot["warnings"] == []
    other = new_record(
        "theirs-abcde", "somebody-else", {"name": "theirs"}, "c", {"type": "local"}, "/x", "quiet"
    )
    await in_thread(jobs.stores.local.create, other)
    mine = await in_thread(jobs.submit, {"entrypoint": "python mine.py"})
    message = await read_json(ws)
    assert message["type"] == "job" and message["job"]["id"] == mine.id
    ws.close()


async def test_one_watcher_for_all_sockets_while_any_is_open(
    jp_ws_fetch: Any, jobs: Any, jp_serverapp: Any
) -> None:
    hub = jp_serverapp.web_app.settings["eksray_stream_hub"]
    one, _ = await connect(jp_ws_fetch)
    two, _ = await connect(jp_ws_fetch)
    assert hub.job_watcher.running
    assert sum(t.name == "eksray-job-watch" for t in threading.enumerate()) == 1
    job = await in_thread(jobs.submit, {"entrypoint": "python a.py"})
    for ws in (one, two):
        message = await read_json(ws)
        assert message["type"] == "job" and message["job"]["id"] == job.id
    one.close()
    await in_thread(write_state, jobs, job.id, JobState.RUNNING)
    message = await read_json(two)
    assert message["job"]["state"] == "running"
    two.close()
    # The last socket gone: the watcher's thread is stopped.
    await in_thread(wait_until, lambda: not hub.job_watcher.running)
