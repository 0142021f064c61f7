"""REST handlers for jobs (jp_fetch, in-memory cluster backend, a scripted runner; no Ray):
auth, validation with field paths, 404s, logs by offset and followed, stop, result downloads."""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from eksray_jupyter.jobs.models import Job, JobState, transition
from eksray_jupyter.jobs.runner import JobRunner
from eksray_jupyter.jobs.store import LocalJobStore, ResultFile
from eksray_jupyter.server import jobs as jobs_handlers

from .waiting import eventually


class ScriptedRunner(JobRunner):
    """Runs a job in a thread: running, three log lines (each waits for ``gate``), then an end.

    An entrypoint containing ``exit 1`` fails; a stop request ends it as stopped, once
    ``stop_gate`` is open. A job with ``results`` patterns that succeeds keeps ``result_files``
    (path: content), stored and recorded like the supervisor does.
    """

    name = "scripted"
    gate = threading.Event()
    stop_gate = threading.Event()
    threads: dict[str, threading.Thread] = {}
    stops: dict[str, threading.Event] = {}
    stop_calls: dict[str, int] = {}
    result_files: dict[str, bytes] = {}

    def start(self, job: Job) -> None:
        store = self.stores.open(job.store)
        stop = self.stops[job.id] = threading.Event()

        def run() -> None:
            record = store.read(job.owner, job.id)
            store.write(transition(record, JobState.RUNNING))
            for i in range(1, 4):
                while not self.gate.wait(0.02) and not stop.is_set():
                    pass
                if stop.is_set():
                    break
                store.append_log(job.owner, job.id, f"line {i}\n".encode())
            if stop.is_set():
                self.stop_gate.wait(30)  # the stop takes effect when the test says so
            record = store.read(job.owner, job.id)
            if stop.is_set():
                transition(record, JobState.STOPPED, "stopped on request")
            elif "exit 1" in job.spec["entrypoint"]:
                transition(record, JobState.FAILED, "the entrypoint exited with code 1")
            else:
                if job.spec.get("results"):
                    record["results"] = self.keep_results(store, job)
                transition(record, JobState.SUCCEEDED)
            store.write(record)

        thread = self.threads[job.id] = threading.Thread(target=run, daemon=True)
        thread.start()

    def keep_results(self, store: Any, job: Job) -> list[dict[str, Any]]:
        results = []
        with tempfile.TemporaryDirectory() as staging:
            for path, content in sorted(self.result_files.items()):
                source = Path(staging) / "file"
                source.write_bytes(content)
                store.put_result(job.owner, job.id, path, source)
                results.append({"path": path, "size": len(content)})
        return results

    def stop(self, job: Job) -> bool:
        self.stop_calls[job.id] = self.stop_calls.get(job.id, 0) + 1
        if job.id in self.stops and self.is_active(job):
            self.stops[job.id].set()
            return True
        return False

    def is_active(self, job: Job) -> bool | None:
        thread = self.threads.get(job.id)
        return None if thread is None else thread.is_alive()


@pytest.fixture
def eksray_settings() -> dict[str, Any]:
    return {"job_runner": "tests.test_jobs_handlers.ScriptedRunner"}


@pytest.fixture(autouse=True)
def open_gate() -> Any:
    ScriptedRunner.gate.set()
    ScriptedRunner.stop_gate.set()
    yield
    ScriptedRunner.stop_gate.set()
    for stop in ScriptedRunner.stops.values():
        stop.set()
    for thread in ScriptedRunner.threads.values():
        thread.join(5)
    ScriptedRunner.threads.clear()
    ScriptedRunner.stops.clear()
    ScriptedRunner.stop_calls.clear()
    ScriptedRunner.result_files.clear()


async def call(jp_fetch: Any, *path: str, method: str = "GET", body: Any = None, **kwargs: Any) -> Any:
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    return await jp_fetch("eksray", "api", *path, method=method, body=body, **kwargs)


async def json_of(jp_fetch: Any, *path: str, **kwargs: Any) -> Any:
    return json.loads((await call(jp_fetch, *path, **kwargs)).body)


async def error_of(jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(HTTPClientError) as info:
        await call(jp_fetch, *path, **kwargs)
    return info.value.code, json.loads(info.value.response.body)


async def until(jp_fetch: Any, job_id: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = await json_of(jp_fetch, "jobs", job_id)
        if job["state"] == state:
            return job
        assert time.monotonic() < deadline, f"job still {job['state']}, waited for {state}"
        await asyncio.sleep(0.05)


async def test_submit_list_get_and_logs(jp_fetch: Any, jp_root_dir: Path) -> None:
    (jp_root_dir / "proj").mkdir()
    response = await call(
        jp_fetch,
        "jobs",
        method="POST",
        body={
            "entrypoint": "python train.py",
            "workingDir": "proj",
            "runtimeEnv": {"envVars": {"GREETING": "hi"}},
            "results": ["out/*.csv"],
        },
    )
    assert response.code == 201
    job = json.loads(response.body)
    assert response.headers["Location"].endswith(f"/eksray/api/jobs/{job['id']}")
    assert job["name"] == "train" and job["id"].startswith("train-")
    assert job["state"] == "pending"
    assert job["spec"]["workingDir"] == str(jp_root_dir / "proj")  # relative to the server's root dir
    assert job["clusterName"] == job["id"] and job["clusterCreated"] is True
    assert job["runner"] == "scripted"

    done = await until(jp_fetch, job["id"], "succeeded")
    assert [h["state"] for h in done["history"]] == ["pending", "running", "succeeded"]
    assert done["finishedAt"] is not None

    listed = await json_of(jp_fetch, "jobs")
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    assert listed["warnings"] == []

    logs = await call(jp_fetch, "jobs", job["id"], "logs")
    assert logs.body == b"line 1\nline 2\nline 3\n"
    assert logs.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert logs.headers["X-Next-Offset"] == str(len(logs.body))
    assert logs.headers["X-Job-State"] == "succeeded"
    tail = await call(jp_fetch, "jobs", job["id"], "logs", params={"offset": "7"})
    assert tail.body == b"line 2\nline 3\n"
    assert tail.headers["X-Log-Offset"] == "7"
    nothing = await call(jp_fetch, "jobs", job["id"], "logs", params={"offset": str(len(logs.body))})
    assert nothing.body == b""


async def test_follow_streams_until_the_job_ends(jp_fetch: Any, jobs: Any) -> None:
    ScriptedRunner.gate.clear()
    job = await json_of(jp_fetch, "jobs", method="POST", body={"entrypoint": "python slow.py"})
    await until(jp_fetch, job["id"], "running")
    chunks: list[bytes] = []
    follow = asyncio.ensure_future(
        call(
            jp_fetch,
            "jobs",
            job["id"],
            "logs",
            params={"follow": "1"},
            streaming_callback=chunks.append,
            request_timeout=60,
        )
    )
    await asyncio.sleep(0.3)
    assert not follow.done()  # the job has not ended: the response stays open
    ScriptedRunner.gate.set()
    response = await asyncio.wait_for(follow, 30)
    assert response.code == 200
    assert b"".join(chunks) == b"line 1\nline 2\nline 3\n"
    assert jobs.get(job["id"]).state == JobState.SUCCEEDED


async def test_stop(jp_fetch: Any) -> None:
    ScriptedRunner.gate.clear()
    job = await json_of(jp_fetch, "jobs", method="POST", body={"entrypoint": "python forever.py"})
    await until(jp_fetch, job["id"], "running")
    response = await call(jp_fetch, "jobs", job["id"], method="DELETE")
    assert response.code == 200
    stopped = json.loads(response.body)
    assert (stopped["state"], stopped["reason"]) == ("stopped", "stopped on request")
    again = await call(jp_fetch, "jobs", job["id"], method="DELETE")  # a finished job is left as it is
    assert (again.code, json.loads(again.body)["state"]) == (200, "stopped")


async def test_a_slow_stop_holds_no_worker(jp_fetch: Any, jp_serverapp: Any) -> None:
    """DELETE waits for the stop on the event loop: as many slow stops as the pool has workers
    still leave the pool free for other requests."""
    ScriptedRunner.gate.clear()
    ScriptedRunner.stop_gate.clear()  # the stops take effect only when opened
    job = await json_of(jp_fetch, "jobs", method="POST", body={"entrypoint": "python forever.py"})
    await until(jp_fetch, job["id"], "running")
    workers = jp_serverapp.web_app.settings["eksray_executor"]._max_workers
    deletes = [
        asyncio.ensure_future(call(jp_fetch, "jobs", job["id"], method="DELETE", request_timeout=60))
        for _ in range(workers)
    ]
    # Every DELETE has asked the runner to stop; none can have its answer yet.
    await eventually(lambda: ScriptedRunner.stop_calls.get(job["id"], 0) == workers, "the stop requests")
    # Other calls are answered meanwhile (a pool held by waiting stops would leave them queued).
    got = await asyncio.wait_for(json_of(jp_fetch, "jobs", job["id"]), 10)
    assert got["state"] == "running"
    listed = await asyncio.wait_for(json_of(jp_fetch, "jobs"), 10)
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    assert not any(d.done() for d in deletes)

    ScriptedRunner.stop_gate.set()
    responses = await asyncio.wait_for(asyncio.gather(*deletes), 20)
    assert {(r.code, json.loads(r.body)["state"]) for r in responses} == {(200, "stopped")}


async def test_stop_still_under_way_is_202(jp_fetch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_handlers, "STOP_WAIT_S", 0.2)
    ScriptedRunner.gate.clear()
    ScriptedRunner.stop_gate.clear()
    job = await json_of(jp_fetch, "jobs", method="POST", body={"entrypoint": "python forever.py"})
    await until(jp_fetch, job["id"], "running")
    response = await call(jp_fetch, "jobs", job["id"], method="DELETE")
    assert (response.code, json.loads(response.body)["state"]) == (202, "running")
    ScriptedRunner.stop_gate.set()
    await until(jp_fetch, job["id"], "stopped")


async def test_failed_job_has_a_reason(jp_fetch: Any) -> None:
    job = await json_of(jp_fetch, "jobs", method="POST", body={"entrypoint": "sh -c 'exit 1'"})
    failed = await until(jp_fetch, job["id"], "failed")
    assert failed["reason"] == "the entrypoint exited with code 1"


async def test_existing_cluster(jp_fetch: Any, service: Any) -> None:
    service.create({"name": "shared"})
    job = await json_of(
        jp_fetch, "jobs", method="POST", body={"entrypoint": "python a.py", "clusterName": "shared"}
    )
    assert (job["clusterName"], job["clusterCreated"]) == ("shared", False)
    code, body = await error_of(
        jp_fetch, "jobs", method="POST", body={"entrypoint": "python a.py", "clusterName": "ghost"}
    )
    assert code == 400
    assert [e["path"] for e in body["errors"]] == ["clusterName"]


async def test_invalid_spec_lists_every_field(jp_fetch: Any, jobs: Any) -> None:
    bad = {
        "name": "Not_A_Name",
        "colour": "blue",
        "backoffLimit": -1,
        "results": ["/etc/passwd"],
        "workingDir": "nowhere",
        "cluster": {
            "head": {"cpu": -1},
            "workerGroups": [{"groupName": "cpu", "minReplicas": 3, "maxReplicas": 1}],
        },
    }
    code, body = await error_of(jp_fetch, "jobs", method="POST", body=bad)
    assert code == 400
    paths = {e["path"] for e in body["errors"]}
    assert {
        "entrypoint",
        "name",
        "colour",
        "backoffLimit",
        "results[0]",
        "workingDir",
        "cluster.head.cpu",
        "cluster.workerGroups[0].minReplicas",
    } <= paths
    assert jobs.list() == []  # nothing persisted


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b'"python x.py"', "JSON object"),
        (json.dumps({"entrypoint": "x" * 70_000}), "limit is 65536 bytes"),
        (json.dumps({"entrypoint": "x", "store": {"type": "s3"}}), "c.EKSRay.job_s3_bucket"),
    ],
)
async def test_bad_bodies_are_400(jp_fetch: Any, body: Any, needle: str) -> None:
    code, response = await error_of(jp_fetch, "jobs", method="POST", body=body)
    assert code == 400
    assert needle in response["message"]


async def test_unknown_job_is_404_everywhere(jp_fetch: Any) -> None:
    for method, path in [
        ("GET", ("jobs", "ghost-aaaaa")),
        ("GET", ("jobs", "ghost-aaaaa", "logs")),
        ("DELETE", ("jobs", "ghost-aaaaa")),
        ("GET", ("jobs", "..%2Fetc")),
        ("GET", ("jobs", "Bad_Id")),
    ]:
        code, response = await error_of(jp_fetch, *path, method=method)
        assert code == 404, (method, path)
        assert "List your jobs" in response["message"]


async def test_bad_offset_is_400(jp_fetch: Any) -> None:
    job = await json_of(jp_fetch, "jobs", method="POST", body={"entrypoint": "python a.py"})
    for raw in ("-1", "abc"):
        code, response = await error_of(jp_fetch, "jobs", job["id"], "logs", params={"offset": raw})
        assert code == 400
        assert response["errors"][0]["path"] == "offset"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", ("jobs",), None),
        ("POST", ("jobs",), {"entrypoint": "python a.py"}),
        ("GET", ("jobs", "JOB"), None),
        ("DELETE", ("jobs", "JOB"), None),
        ("GET", ("jobs", "JOB", "logs"), None),
        ("GET", ("jobs", "JOB", "results", "out/a.csv"), None),
    ],
)
async def test_every_route_refuses_unauthenticated(
    jp_fetch: Any, jobs: Any, method: str, path: tuple[str, ...], body: Any
) -> None:
    ScriptedRunner.gate.clear()
    job = jobs.submit({"entrypoint": "python a.py"})
    path = tuple(job.id if p == "JOB" else p for p in path)
    code, _ = await error_of(jp_fetch, *path, method=method, body=body, headers={"Authorization": ""})
    assert code == 403
    # Nothing was changed by the refused request.
    assert [j.id for j in jobs.list()] == [job.id]
    assert jobs.get(job.id).state != JobState.STOPPED


def test_job_model_matches_the_openapi_document() -> None:
    import yaml

    from eksray_jupyter.jobs.models import new_record

    doc = yaml.safe_load((Path(__file__).parent.parent / "schema" / "openapi.yaml").read_text())
    schema = doc["components"]["schemas"]["Job"]
    record = new_record(
        "a-bcdef", "o", {"name": "a", "entrypoint": "x"}, "a-bcdef", {"type": "local"}, "/x", "local"
    )
    record["attempts"] = [{"attempt": 1, "rayJobId": "a-bcdef-1", "status": "SUCCEEDED"}]
    body = Job.from_record(record).to_dict()
    assert set(body) == set(schema["properties"]) == set(schema["required"])
    assert schema["properties"]["state"]["enum"] == [s.value for s in JobState]
    attempt = schema["properties"]["attempts"]["items"]
    assert set(body["attempts"][0]) == set(attempt["properties"]) == set(attempt["required"])
    history = schema["properties"]["history"]["items"]
    assert set(body["history"][0]) == set(history["properties"])


RESULTS = {
    "model.txt": b"weights\n",
    "out/2024/metrics.csv": b"epoch,loss\n1,0.5\n",
    "out/my report.html": b"<script>alert(1)</script>",
    'out/r\u00e9sum\u00e9 "final".bin': bytes(range(256)),
    "out/data.csv.gz": b"\x1f\x8b not really",
}


async def job_with_results(jp_fetch: Any) -> dict[str, Any]:
    ScriptedRunner.result_files.update(RESULTS)
    job = await json_of(
        jp_fetch, "jobs", method="POST", body={"entrypoint": "python train.py", "results": ["**/*"]}
    )
    done = await until(jp_fetch, job["id"], "succeeded")
    assert {r["path"]: r["size"] for r in done["results"]} == {p: len(c) for p, c in RESULTS.items()}
    return done


async def raw_get(http_server_client: Any, jp_base_url: str, headers: dict[str, str], path: str) -> Any:
    """GET a URL path exactly as given (jp_fetch would escape its '%')."""
    url = jp_base_url.rstrip("/") + "/eksray/api/" + path
    return await http_server_client.fetch(url, headers=headers, raise_error=False)


@pytest.mark.parametrize(
    ("path", "content_type", "disposition"),
    [
        ("model.txt", "text/plain", 'attachment; filename="model.txt"'),
        ("out/2024/metrics.csv", "text/csv", 'attachment; filename="metrics.csv"'),
        ("out/my report.html", "text/html", 'attachment; filename="my report.html"'),
        (
            'out/r\u00e9sum\u00e9 "final".bin',
            "application/octet-stream",
            "attachment; filename=\"r_sum_ _final_.bin\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.bin",
        ),
        ("out/data.csv.gz", "application/gzip", 'attachment; filename="data.csv.gz"'),
    ],
)
async def test_download_a_result(jp_fetch: Any, path: str, content_type: str, disposition: str) -> None:
    job = await job_with_results(jp_fetch)
    response = await call(jp_fetch, "jobs", job["id"], "results", path)
    assert response.code == 200
    assert response.body == RESULTS[path]
    assert response.headers["Content-Type"].split(";")[0] == content_type
    assert response.headers["Content-Disposition"] == disposition
    assert response.headers["Content-Length"] == str(len(RESULTS[path]))
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"].startswith("sandbox")


async def test_result_path_slashes_may_be_encoded(
    jp_fetch: Any, http_server_client: Any, jp_base_url: str, jp_auth_header: dict[str, str]
) -> None:
    job = await job_with_results(jp_fetch)
    for raw in ("out%2F2024%2Fmetrics.csv", "out/2024/metrics%2Ecsv", "out%2Fmy%20report.html"):
        response = await raw_get(
            http_server_client, jp_base_url, jp_auth_header, f"jobs/{job['id']}/results/{raw}"
        )
        assert response.code == 200, raw
    assert response.body == RESULTS["out/my report.html"]


async def test_unknown_job_or_result_is_404(jp_fetch: Any) -> None:
    job = await job_with_results(jp_fetch)
    code, body = await error_of(jp_fetch, "jobs", "ghost-aaaaa", "results", "model.txt")
    assert code == 404
    assert "List your jobs" in body["message"]
    for path in ("nothing.txt", "out", "out/2024", "MODEL.TXT", "model.txt/"):
        code, body = await error_of(jp_fetch, "jobs", job["id"], "results", path)
        assert code == 404, path
        assert "has no result" in body["message"]
    # A job without results has none to give.
    other = await json_of(jp_fetch, "jobs", method="POST", body={"entrypoint": "python a.py"})
    code, _ = await error_of(jp_fetch, "jobs", other["id"], "results", "model.txt")
    assert code == 404


async def test_traversal_is_404_and_never_reaches_the_store(
    jp_fetch: Any,
    http_server_client: Any,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = await job_with_results(jp_fetch)
    opened = LocalJobStore.open_result
    asked: list[str] = []

    def spy(self: LocalJobStore, owner: str, job_id: str, relpath: str) -> ResultFile:
        asked.append(relpath)
        return opened(self, owner, job_id, relpath)

    monkeypatch.setattr(LocalJobStore, "open_result", spy)
    # Next to results/ are the record and the log; further up, other jobs and the state directory.
    for raw in (
        "../job.json",
        "..%2Fjob.json",
        "%2E%2E/log.txt",
        "%2e%2e%2flog.txt",
        "out/../model.txt",
        "out/..%2F..%2Fjob.json",
        "..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "./model.txt",
        "out//2024/metrics.csv",
    ):
        response = await raw_get(
            http_server_client, jp_base_url, jp_auth_header, f"jobs/{job['id']}/results/{raw}"
        )
        assert response.code == 404, raw
        assert "message" in json.loads(response.body), raw
    assert asked == []
    ok = await call(jp_fetch, "jobs", job["id"], "results", "model.txt")  # the spy does see real reads
    assert ok.body == RESULTS["model.txt"] and asked == ["model.txt"]


async def test_a_large_result_is_sent_in_pieces(jp_fetch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read whole into the server's memory: the handler reads RESULT_CHUNK at a time."""
    from eksray_jupyter.server import jobs as jobs_handlers

    job = await job_with_results(jp_fetch)
    monkeypatch.setattr(jobs_handlers, "RESULT_CHUNK", 4)
    reads: list[tuple[int, int]] = []  # (asked, got)
    opened = LocalJobStore.open_result

    def counting(self: LocalJobStore, owner: str, job_id: str, relpath: str) -> ResultFile:
        result = opened(self, owner, job_id, relpath)
        plain = result.read

        def read(size: int = -1) -> bytes:
            data = plain(size)
            reads.append((size, len(data)))
            return data

        result.read = read  # type: ignore[method-assign]
        return result

    monkeypatch.setattr(LocalJobStore, "open_result", counting)
    response = await call(jp_fetch, "jobs", job["id"], "results", "model.txt")
    assert response.body == RESULTS["model.txt"]
    assert response.headers["Content-Length"] == str(len(RESULTS["model.txt"]))
    # The client has the whole body (Content-Length) before the handler's last read finds the end.
    await eventually(lambda: bool(reads) and reads[-1][1] == 0, "the handler to read to the end")
    size = len(RESULTS["model.txt"])
    assert {asked for asked, _ in reads} == {4}
    assert [got for _, got in reads] == [4] * (size // 4) + ([size % 4] if size % 4 else []) + [0]


async def test_a_working_dir_over_the_admins_limit_is_400(
    jp_fetch: Any, jp_root_dir: Path, jobs: Any
) -> None:
    project = jp_root_dir / "big-project"
    project.mkdir()
    (project / "data.bin").write_bytes(b"\0" * (2 << 20))
    jobs.config.job_working_dir_max_mb = 1
    code, response = await error_of(
        jp_fetch, "jobs", method="POST", body={"entrypoint": "python a.py", "workingDir": "big-project"}
    )
    assert code == 400
    assert "more than 1 MiB" in {e["path"]: e["message"] for e in response["errors"]}["workingDir"]
    assert jobs.list() == []
