"""Bounded work per log read: pages (an offset and at most ``limit`` bytes, or the tail) from the
local store (a seek) and S3 (ranged GETs, on moto over loopback), through the JobService and
``GET /jobs/{id}/logs``; and the runners' copying of Ray's log, streamed, never held whole.

The big logs are 20 MiB; a read's peak memory (tracemalloc) must stay far below that.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tornado.httpclient import HTTPClientError

from eksray_jupyter.core.errors import BackendError, InvalidRequestError
from eksray_jupyter.core.net import port_open
from eksray_jupyter.jobs import ray_log
from eksray_jupyter.jobs import supervisor as supervisor_module
from eksray_jupyter.jobs.models import JobState, transition
from eksray_jupyter.jobs.store import LOG_PAGE_BYTES, LocalJobStore, LogPage, S3JobStore, read_page
from eksray_jupyter.jobs.supervisor import LogSink, RayLog, Supervisor

from .test_jobs_store import NullRunner, free_port, job_service, make_bucket, moto_url, record
from .waiting import eventually, wait_until

__all__ = ["moto_url"]  # the S3 server fixture, shared with the store tests

T = TypeVar("T")
MiB = 1 << 20
OWNER, JOB = "alice@example.org", "etl-abcde"


def big_log(size: int = 20 * MiB) -> bytes:
    """``size`` bytes of numbered lines of varying length, some with multi-byte characters."""
    lines, total, i = [], 0, 0
    while total < size:
        line = f"line {i:08d} {'x' * (i % 97)}{' ✓' if i % 7 == 0 else ''}\n".encode()
        lines.append(line)
        total += len(line)
        i += 1
    return b"".join(lines)[:size]


def peak_of(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()`` and the most memory it had allocated at once (bytes, tracemalloc)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        value = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return value, peak


def all_pages(read: Callable[[int], LogPage]) -> tuple[bytes, list[LogPage]]:
    pages, offset = [], 0
    while True:
        page = read(offset)
        pages.append(page)
        offset = page.next_offset
        if offset >= page.size or not page.data:
            return b"".join(p.data for p in pages), pages


def expected_tail(log: bytes, tail: int) -> bytes:
    """The last ``tail`` bytes from the first line start in them (if there is one before the end)."""
    start = len(log) - tail
    if start <= 0:
        return log
    if log[start - 1] == ord("\n"):
        return log[start:]
    newline = log.find(b"\n", start, len(log) - 1)
    return log[newline + 1 :] if newline >= 0 else log[start:]


# --- a page of bytes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "expected", "start"),
    [
        (0, b"", 15),
        (1, b"\n", 14),  # within the last line
        (5, b"cccc\n", 10),  # exactly a line: the byte before is a newline
        (6, b"cccc\n", 10),  # from the next line start
        (11, b"bbbb\ncccc\n", 5),
        (15, b"aaaa\nbbbb\ncccc\n", 0),
        (99, b"aaaa\nbbbb\ncccc\n", 0),
    ],
)
def test_a_tail_starts_at_a_line(tail: int, expected: bytes, start: int) -> None:
    log = b"aaaa\nbbbb\ncccc\n"
    reads: list[tuple[int, int]] = []

    def read_range(a: int, b: int) -> bytes:
        reads.append((a, b))
        return log[a:b]

    page = read_page(len(log), read_range, tail=tail)
    assert page == LogPage(expected, start, len(log), len(log))
    assert all(a >= len(log) - tail - 1 for a, _ in reads)  # never more than the tail and a byte


def test_a_tail_inside_one_long_line_starts_at_a_character() -> None:
    log = "é".encode() * 100  # one line, two bytes a character
    page = read_page(len(log), lambda a, b: log[a:b], tail=7)
    assert page.data.decode() == "ééé" and page.offset == len(log) - 6


def test_pages_are_bounded_and_offsets_checked() -> None:
    log = b"0123456789"
    page = read_page(len(log), lambda a, b: log[a:b], offset=3, limit=4)
    assert page == LogPage(b"3456", 3, 7, 10)
    assert read_page(len(log), lambda a, b: log[a:b], offset=10) == LogPage(b"", 10, 10, 10)
    with pytest.raises(InvalidRequestError, match="past the end of the log"):
        read_page(len(log), lambda a, b: log[a:b], offset=11)


# --- the local store ----------------------------------------------------------------------------


def test_a_20mb_local_log_is_read_in_bounded_pages(tmp_path: Path) -> None:
    store = LocalJobStore(tmp_path / "jobs")
    log = big_log()
    for i in range(0, len(log), 4 * MiB):
        store.append_log(OWNER, JOB, log[i : i + 4 * MiB])

    page, peak = peak_of(lambda: store.read_log(OWNER, JOB, 5 * MiB, MiB))
    assert page.data == log[5 * MiB : 6 * MiB] and page.size == len(log)
    assert peak < 2 * MiB, f"a 1 MiB page of a 20 MiB log took {peak} bytes"

    whole, pages = all_pages(lambda offset: store.read_log(OWNER, JOB, offset, MiB))
    assert whole == log and len(pages) == 20 and all(len(p.data) <= MiB for p in pages)

    tail, peak = peak_of(lambda: store.read_log(OWNER, JOB, tail=64 * 1024))
    assert tail.data == expected_tail(log, 64 * 1024) and tail.next_offset == len(log)
    assert peak < 512 * 1024


def test_the_service_reads_a_page_and_clamps_limit_and_tail(tmp_path: Path) -> None:
    service = job_service(tmp_path, job_log_page_max_bytes=MiB)
    job = service.submit({"entrypoint": "python train.py"})
    log = big_log()
    service.stores.local.append_log(service.owner, job.id, log)

    chunk, peak = peak_of(lambda: service.logs(job.id, 0, limit=100 * MiB))
    assert len(chunk.data) == MiB and chunk.data == log[:MiB]  # clamped to the most one read answers
    assert (chunk.size, chunk.state, chunk.complete) == (len(log), JobState.PENDING, False)
    assert peak < 3 * MiB, f"reading a page took {peak} bytes"
    assert len(service.logs(job.id).data) == LOG_PAGE_BYTES  # the default page
    tail = service.logs(job.id, tail=50 * MiB)
    assert tail.data == expected_tail(log, MiB)
    with pytest.raises(InvalidRequestError):
        service.logs(job.id, -1)
    with pytest.raises(InvalidRequestError):
        service.logs(job.id, tail=-1)


def test_a_log_split_by_an_s3_failure_is_paged_across_both_parts(moto_url: str, tmp_path: Path) -> None:
    make_bucket(moto_url, "split")
    service = job_service(tmp_path, job_store="s3", job_s3_bucket="split", job_s3_endpoint_url=moto_url)
    job = service.submit({"entrypoint": "python train.py"})
    s3 = service.stores.open(job.store)
    s3.append_log(service.owner, job.id, b"one\ntwo\n")
    s3.append_log(service.owner, job.id, b"three\n")
    # The supervisor's end, kept on this machine with the rest of the log (S3 failed).
    record = s3.read(service.owner, job.id)
    service.stores.local.create(transition(dict(record, updatedAt=record["updatedAt"] + 1), JobState.FAILED))
    service.stores.local.append_log(service.owner, job.id, b"four\nfive\n")
    whole = b"one\ntwo\nthree\nfour\nfive\n"
    for limit in (1, 3, 5, 100):
        offset, got = 0, b""
        while True:
            chunk = service.logs(job.id, offset, limit=limit)
            assert len(chunk.data) <= limit
            got, offset = got + chunk.data, chunk.next_offset
            if chunk.complete:
                break
        assert got == whole, limit
    assert service.logs(job.id, tail=12).data == b"four\nfive\n"
    assert service.logs(job.id, tail=14).data == b"four\nfive\n"
    assert service.logs(job.id, tail=15).data == b"four\nfive\n"  # from inside "three\n"
    assert service.logs(job.id, tail=16).data == b"three\nfour\nfive\n"


# --- S3: ranged GETs of the log's objects -------------------------------------------------------


class S3Calls:
    """What the store asked S3 (a botocore hook on its client)."""

    def __init__(self, store: S3JobStore) -> None:
        self.gets: list[tuple[str, str | None]] = []
        self.lists: list[dict[str, Any]] = []
        events = store._client.meta.events
        events.register("before-call.s3.GetObject", self._get)
        events.register("before-call.s3.ListObjectsV2", self._list)

    def _get(self, params: dict[str, Any], **_: Any) -> None:
        self.gets.append((params["url_path"], params["headers"].get("Range")))

    def _list(self, params: dict[str, Any], **_: Any) -> None:
        self.lists.append(dict(params["query_string"]))

    def clear(self) -> None:
        self.gets.clear()
        self.lists.clear()


@pytest.fixture(scope="module")
def moto_process(moto_url: str) -> Iterator[str]:
    """An S3 server (moto) in a process of its own: what it allocates is not this test's memory."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: port_open(f"127.0.0.1:{port}"), "moto listening")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def test_a_20mb_s3_log_is_read_with_ranged_gets(moto_process: str) -> None:
    make_bucket(moto_process, "ranged")
    store = S3JobStore("ranged", "jobs", endpoint_url=moto_process, region="us-east-1")
    log = big_log()
    part = 512 * 1024  # as a busy supervisor flushes
    for i in range(0, len(log), part):
        store.append_log(OWNER, JOB, log[i : i + part])
    reader = S3JobStore("ranged", "jobs", endpoint_url=moto_process, region="us-east-1")  # e.g. the server
    calls = S3Calls(reader)

    page, peak = peak_of(lambda: reader.read_log(OWNER, JOB, 5 * MiB + 100, MiB))
    assert page.data == log[5 * MiB + 100 : 6 * MiB + 100] and page.size == len(log)
    # Only the three objects the page overlaps, each with a Range, and one LIST of the log's objects.
    assert [r for _, r in calls.gets] == ["bytes=100-524287", "bytes=0-524287", "bytes=0-99"]
    assert len(calls.lists) == 1
    assert peak < 4 * MiB, f"a 1 MiB page of a 20 MiB S3 log took {peak} bytes"

    calls.clear()
    whole, pages = all_pages(lambda offset: reader.read_log(OWNER, JOB, offset, MiB))
    assert whole == log and all(len(p.data) <= MiB for p in pages)
    assert calls.gets and all(r is not None and r.startswith("bytes=") for _, r in calls.gets)
    # The objects are known now: each read lists only what came after the last one.
    assert all(q.get("start-after", "").endswith(f"{len(log) - part:016d}") for q in calls.lists)

    calls.clear()
    tail = reader.read_log(OWNER, JOB, tail=100_000)
    assert tail.data == expected_tail(log, 100_000) and tail.next_offset == len(log)
    assert len(calls.gets) == 1 and calls.gets[0][1] == f"bytes={part - 100_001}-{part - 1}"

    store.append_log(OWNER, JOB, b"more\n")  # the runner goes on: the reader finds it
    assert reader.read_log(OWNER, JOB, len(log)) == LogPage(b"more\n", len(log), len(log) + 5, len(log) + 5)


def test_an_s3_page_takes_a_bounded_number_of_gets(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log of many small flushes: a page ends after LOG_GETS_PER_PAGE objects; a tail still ends
    at the log's end."""
    monkeypatch.setattr(S3JobStore, "LOG_GETS_PER_PAGE", 8)
    make_bucket(moto_url, "small-parts")
    store = S3JobStore("small-parts", "", endpoint_url=moto_url, region="us-east-1")
    lines = [f"line {i:02d}\n".encode() for i in range(30)]  # 8 bytes each, one object each
    for line in lines:
        store.append_log(OWNER, JOB, line)
    calls = S3Calls(store)
    page = store.read_log(OWNER, JOB, 0, MiB)
    assert page.data == b"".join(lines[:8]) and page.size == 240 and len(calls.gets) == 8
    whole, pages = all_pages(lambda offset: store.read_log(OWNER, JOB, offset, MiB))
    assert whole == b"".join(lines) and len(pages) == 4
    calls.clear()
    tail = store.read_log(OWNER, JOB, tail=MiB)
    assert tail.next_offset == 240 and tail.data == b"".join(lines[-7:]) and len(calls.gets) <= 8


def test_a_changed_s3_log_object_is_listed_again(moto_url: str) -> None:
    """Two writers raced for one offset (a follower's lease changed hands): the object is not what
    the reader remembered; it lists the log again rather than serve a wrong page."""
    s3 = make_bucket(moto_url, "raced")
    store = S3JobStore("raced", "", endpoint_url=moto_url, region="us-east-1")
    store.append_log(OWNER, JOB, b"first\n")
    assert store.read_log(OWNER, JOB).data == b"first\n"
    s3.put_object(Bucket="raced", Key=f"{OWNER}/{JOB}/logs/{0:016d}", Body=b"one\n")
    assert store.read_log(OWNER, JOB).data == b"one\n"  # a short read: the index is forgotten
    assert store.read_log(OWNER, JOB) == LogPage(b"one\n", 0, 4, 4)


# --- REST ---------------------------------------------------------------------------------------


class IdleRunner(NullRunner):
    name = "idle"


@pytest.fixture
def eksray_settings() -> dict[str, Any]:
    return {"job_runner": "tests.test_jobs_log_pages.IdleRunner"}


async def get_log(jp_fetch: Any, job_id: str, fetch: dict[str, Any] | None = None, **params: Any) -> Any:
    query = {k: str(v) for k, v in params.items()}
    return await jp_fetch("eksray", "api", "jobs", job_id, "logs", params=query, **(fetch or {}))


@pytest.fixture
def logged_job(jobs: Any) -> Iterator[tuple[str, bytes]]:
    job = jobs.submit({"entrypoint": "python train.py"})
    log = big_log()
    jobs.stores.local.append_log(jobs.owner, job.id, log)
    yield job.id, log


async def test_rest_answers_at_most_limit_and_the_pages_make_the_log(
    jp_fetch: Any, jobs: Any, logged_job: tuple[str, bytes]
) -> None:
    job_id, log = logged_job
    first = await get_log(jp_fetch, job_id)
    assert len(first.body) == LOG_PAGE_BYTES  # the default page
    assert first.headers["X-Log-Size"] == str(len(log))
    assert first.headers["X-Log-Complete"] == "false" and first.headers["X-Job-State"] == "pending"

    asked = await get_log(jp_fetch, job_id, offset=1000, limit=3000)
    assert asked.body == log[1000:4000]
    assert (asked.headers["X-Log-Offset"], asked.headers["X-Next-Offset"]) == ("1000", "4000")
    clamped = await get_log(jp_fetch, job_id, limit=50 * MiB)
    assert len(clamped.body) == MiB  # c.EKSRay.job_log_page_max_bytes

    pieces, offset = [], 0
    while offset < len(log):
        response = await get_log(jp_fetch, job_id, offset=offset, limit=MiB)
        assert len(response.body) <= MiB
        pieces.append(response.body)
        offset = int(response.headers["X-Next-Offset"])
    assert b"".join(pieces) == log

    tail = await get_log(jp_fetch, job_id, tail=4096)
    assert tail.body == expected_tail(log, 4096)
    assert int(tail.headers["X-Log-Offset"]) == len(log) - len(tail.body)
    assert tail.headers["X-Next-Offset"] == str(len(log))
    size_only = await get_log(jp_fetch, job_id, limit=0)
    assert size_only.body == b"" and size_only.headers["X-Log-Size"] == str(len(log))

    # The job ends: the last page says the log is complete.
    record = jobs.stores.local.read(jobs.owner, job_id)
    jobs.stores.local.write(transition(record, JobState.SUCCEEDED))
    end = await get_log(jp_fetch, job_id, tail=10)
    assert (end.headers["X-Job-State"], end.headers["X-Log-Complete"]) == ("succeeded", "true")
    middle = await get_log(jp_fetch, job_id, offset=0, limit=10)
    assert middle.headers["X-Log-Complete"] == "false"


async def test_rest_follow_streams_page_by_page_until_the_end(
    jp_fetch: Any, jobs: Any, logged_job: tuple[str, bytes]
) -> None:
    job_id, log = logged_job
    chunks: list[bytes] = []
    fetch = {"request_timeout": 60, "streaming_callback": chunks.append}
    follow = asyncio.ensure_future(get_log(jp_fetch, job_id, fetch, follow=1, tail=100))
    await eventually(lambda: chunks, "the tail streamed")
    assert not follow.done()  # the job runs: the stream stays open
    jobs.stores.local.append_log(jobs.owner, job_id, b"and more\n")
    record = jobs.stores.local.read(jobs.owner, job_id)
    jobs.stores.local.write(transition(record, JobState.SUCCEEDED))
    response = await asyncio.wait_for(follow, 60)
    assert response.code == 200
    assert b"".join(chunks) == expected_tail(log, 100) + b"and more\n"


async def test_rest_follow_with_limit_0_still_reads_on(
    jp_fetch: Any, jobs: Any, logged_job: tuple[str, bytes]
) -> None:
    job_id, log = logged_job
    record = jobs.stores.local.read(jobs.owner, job_id)
    jobs.stores.local.write(transition(record, JobState.FAILED, "the entrypoint exited with code 1"))
    response = await get_log(
        jp_fetch, job_id, {"request_timeout": 30}, offset=len(log) - 10, limit=0, follow=1
    )
    assert response.body == log[-10:]


@pytest.mark.parametrize(
    ("params", "field", "needle"),
    [
        ({"offset": "-1"}, "offset", "whole number, 0 or more"),
        ({"offset": "abc"}, "offset", "whole number"),
        ({"offset": "1.5"}, "offset", "whole number"),
        ({"limit": "-5"}, "limit", "whole number"),
        ({"limit": "1e6"}, "limit", "whole number"),
        ({"tail": "lots"}, "tail", "whole number"),
        ({"offset": "0", "tail": "10"}, "tail", "either offset"),
        ({"tail": "10", "limit": "10"}, "limit", "drop limit"),
        ({"follow": "maybe"}, "follow", "1 or 0"),
        ({"offset": str(21 * MiB)}, "offset", "past the end of the log"),
    ],
)
async def test_rest_bad_log_queries_are_400(
    jp_fetch: Any, logged_job: tuple[str, bytes], params: dict[str, str], field: str, needle: str
) -> None:
    job_id, _ = logged_job
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("eksray", "api", "jobs", job_id, "logs", params=params)
    assert info.value.code == 400
    body = json.loads(info.value.response.body)
    assert body["errors"][0]["path"] == field and needle in body["errors"][0]["message"]


# --- the runners: Ray's log, streamed into the store ---------------------------------------------


def ray_answer(text: str) -> bytes:
    return json.dumps({"logs": text}).encode()  # as Ray's dashboard answers (ASCII, escaped)


def test_rays_log_answer_is_copied_in_pieces_with_bounded_memory() -> None:
    log = big_log().decode()
    answer = ray_answer(log)
    expected = log.encode()
    pieces: list[int] = []
    total, peak = peak_of(lambda: ray_log.copy_log(io.BytesIO(answer), 0, lambda b: pieces.append(len(b))))
    assert total == len(expected) and sum(pieces) == len(expected)
    assert max(pieces) <= ray_log.WRITE_BYTES
    assert peak < 4 * MiB, f"copying a 20 MiB Ray log took {peak} bytes"
    # What was copied before is skipped, and only the rest written.
    got: list[bytes] = []
    assert ray_log.copy_log(io.BytesIO(answer), len(expected) - 1000, got.append) == len(expected)
    assert b"".join(got) == expected[-1000:]


@pytest.mark.parametrize("read_bytes", [1, 2, 3, 7, 64])
def test_rays_escapes_are_decoded_across_reads(monkeypatch: pytest.MonkeyPatch, read_bytes: int) -> None:
    """However the answer is cut into reads: escapes, surrogate pairs and UTF-8 characters whole."""
    monkeypatch.setattr(ray_log, "READ_BYTES", read_bytes)
    text = 'a"b\\c\n\t\x01é中😀\ud800z\\\\"' * 3
    for answer in (
        ray_answer(text),
        json.dumps({"logs": text}, ensure_ascii=False).encode("utf-8", "surrogatepass"),
    ):
        expected = json.loads(answer)["logs"].encode("utf-8", errors="replace")
        for skip in (0, 1, 5, len(expected)):
            got: list[bytes] = []
            assert ray_log.copy_log(io.BytesIO(answer), skip, got.append) == len(expected)
            assert b"".join(got) == expected[skip:]
    assert ray_log.copy_log(io.BytesIO(b'{"logs": null}'), 0, print) == 0
    for bad in (b"<html>502</html>", b'{"logs": "cut short', b'{"message": "no"}'):
        with pytest.raises(ray_log.LogFormatError):
            ray_log.copy_log(io.BytesIO(bad), 0, lambda b: None)


def test_the_supervisor_copies_only_what_is_new(tmp_path: Path) -> None:
    service = job_service(tmp_path)
    job = service.submit({"entrypoint": "python train.py"})
    store = service.stores.local
    sup = Supervisor(
        service.clusters, service.stores, store, store.read(service.owner, job.id), tmp_path / "r"
    )
    shown = {"text": ""}
    sup.open_ray_log = lambda client, submission_id: io.BytesIO(ray_answer(shown["text"]))
    copied = RayLog(sup.log)
    for text in ("", "one\n", "one\ntwo ✓\n", "one\ntwo ✓\n", "one\ntwo ✓\nthree\n"):
        shown["text"] = text
        sup.copy_ray_log(None, "x-1", copied)
    sup.log.flush()
    assert service.logs(job.id).text == "one\ntwo ✓\nthree\n"
    assert copied.copied == len("one\ntwo ✓\nthree\n".encode()) and copied.tail(2) == "two ✓\nthree"


def test_a_failing_store_spills_the_log_to_disk_not_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "LOG_MEMORY_BYTES", 64 * 1024)
    monkeypatch.setattr(supervisor_module, "LOG_PART_BYTES", 256 * 1024)
    store = LocalJobStore(tmp_path / "jobs")
    real_append = store.append_log
    down = {"now": True}
    parts: list[int] = []

    def append(owner: str, job_id: str, data: bytes) -> None:
        if down["now"]:
            raise BackendError("S3 is down")
        parts.append(len(data))
        real_append(owner, job_id, data)

    store.append_log = append  # type: ignore[method-assign]
    sink = LogSink(store, OWNER, JOB, spool_dir=tmp_path / "run")
    log = big_log(3 * MiB)

    def write_all() -> None:
        for i in range(0, len(log), 10_000):
            sink.write(log[i : i + 10_000])

    _, peak = peak_of(write_all)
    assert sink.pending == len(log)
    assert peak < MiB, f"3 MiB written while the store failed took {peak} bytes"
    assert not sink.flush()
    down["now"] = False
    assert sink.flush() and sink.pending == 0
    assert max(parts) <= 256 * 1024  # appended a part at a time
    assert store.read_log(OWNER, JOB, 0, 4 * MiB).data == log


def test_the_rayjob_follower_streams_a_20mb_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eksray_jupyter.backends.kuberay.rayjob_runner import KubeRayJobRunner

    runner = KubeRayJobRunner.__new__(KubeRayJobRunner)  # only the log copying: no backend needed
    runner._next_log_read = {}
    store = LocalJobStore(tmp_path / "jobs")
    log = big_log().decode()
    answer = ray_answer(log)
    monkeypatch.setattr(runner, "_open_log", lambda *_: io.BytesIO(answer), raising=False)
    rec = {**record(), "kuberay": {"logBytes": 0}}
    status = {"jobId": f"{JOB}-1", "rayClusterName": f"{JOB}-xyz12"}
    _, peak = peak_of(lambda: runner._copy_log(store, rec, status, final=True))
    assert rec["kuberay"]["logBytes"] == len(log.encode())
    assert peak < 4 * MiB, f"the follower's copy of a 20 MiB log took {peak} bytes"
    runner._copy_log(store, rec, status, final=True)  # read again: nothing new, nothing appended
    assert store.read_log(OWNER, JOB, limit=0).size == len(log.encode())
    assert store.read_log(OWNER, JOB, tail=200).data == expected_tail(log.encode(), 200)
