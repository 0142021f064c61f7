"""Job push: record written -> panels told, and what watching costs the server.

    PYTHONPATH=. .venv/bin/python -m benchmarks.job_push_latency [--jobs 500] [--running 20] [--changes 40]
        [--subscribers 20]

1. In this process: one read of the job watcher (``JobService.list_with_warnings`` on a
   local store of --jobs records, --running of them running, the others ended), cold (every ``job.json`` parsed) and warm (unchanged
   files reused), p50 over 20 reads.
2. Starts `jupyter server` (in-memory backend, a runner that does nothing) on a state dir
   with --jobs records, opens --subscribers websockets on /eksray/api/stream, measures the
   server's CPU while they idle for 10 s (the cost of watching), then writes --changes
   state changes into job records as a supervisor would (the write time in the reason)
   and times "record written -> socket received". The watcher is woken by a file-system
   notification of the write (goal: p99 <= 100 ms; before notifications it polled every
   ``job_watch_seconds``, 1 s, so p50 was about half of that).
3. Then submits --changes jobs through ``POST /eksray/api/jobs`` and times "request sent ->
   socket received" for the server's own writes, which wake the watcher at once (expected:
   a few tens of ms), and prints its ratio to the median of 2. The server is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from benchmarks.push_latency import jupyter_server, pct
from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.service import ClusterService
from eksray_jupyter.jobs.models import Job, JobState, new_record, transition
from eksray_jupyter.jobs.runner import JobRunner
from eksray_jupyter.jobs.service import JobService
from eksray_jupyter.jobs.store import LocalJobStore

OWNER = "bench"


class BenchRunner(JobRunner):
    """Runs nothing; cannot tell whether a job's runner is alive (so nothing is reconciled)."""

    name = "bench"

    def start(self, job: Job) -> None:
        pass

    def stop(self, job: Job) -> bool:
        return False

    def is_active(self, job: Job) -> bool | None:
        return None


def make_jobs(state_dir: str, count: int, running: int) -> LocalJobStore:
    store = LocalJobStore(Path(state_dir) / "jobs")
    spec = {"name": "bench", "entrypoint": "python train.py", "store": {"type": "local"}}
    for i in range(count):
        job_id = f"bench-{i:05d}"
        record = new_record(job_id, OWNER, spec, job_id, {"type": "local"}, "/x", "bench")
        transition(record, JobState.RUNNING)
        store.create(record if i < running else transition(record, JobState.SUCCEEDED))
    return store


def read_cost(count: int, running: int) -> None:
    with tempfile.TemporaryDirectory() as state:
        make_jobs(state, count, running)
        clusters = ClusterService(
            EKSRay(state_dir=state, backend="tests.memory_backend.MemoryBackend", owner=OWNER)
        )
        cold, warm = [], []
        for _ in range(20):
            service = JobService(clusters, runner=BenchRunner(service=clusters))  # fresh stores: cold
            started = time.perf_counter()
            service.list_with_warnings()
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            service.list_with_warnings()
            warm.append(time.perf_counter() - started)
    print(
        f"one watcher read of {count} local jobs ({running} running): cold {statistics.median(cold) * 1000:.1f} ms, "
        f"warm (files unchanged) {statistics.median(warm) * 1000:.1f} ms"
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(
    base: str, token: str, pid: int, store: LocalJobStore, changes: int, subscribers: int, running: int
) -> None:
    headers = {"Authorization": f"token {token}"}
    latencies: list[float] = []
    sockets = []
    for _ in range(subscribers):
        ws = await websocket_connect(
            HTTPRequest(f"{base.replace('http', 'ws', 1)}/eksray/api/stream", headers=headers)
        )
        assert json.loads(await ws.read_message())["type"] == "snapshot"
        jobs = json.loads(await ws.read_message())
        assert jobs["type"] == "jobs", jobs["type"]
        sockets.append(ws)
    print(f"{subscribers} subscribers, each got {len(jobs['jobs'])} jobs on connect")

    before = cpu_seconds(pid)
    await asyncio.sleep(10)
    idle = (cpu_seconds(pid) - before) / 10
    print(f"server CPU while watching (nothing changes): {idle * 100:.1f} % of one core")

    async def receive(ws: object, expected: int) -> None:
        got = 0
        while got < expected:
            message = await ws.read_message()  # type: ignore[attr-defined]
            now = time.time()
            if message is None:
                return
            data = json.loads(message)
            if data["type"] == "job" and (data["job"]["reason"] or "").startswith("bench "):
                latencies.append(now - float(data["job"]["reason"].split()[1]))
                got += 1

    receivers = [asyncio.ensure_future(receive(ws, changes)) for ws in sockets]
    loop = asyncio.get_running_loop()
    for n in range(changes):
        job_id = f"bench-{n % running:05d}"

        def write(job_id: str = job_id) -> None:
            record = store.read(OWNER, job_id)
            assert record is not None
            transition(record, JobState.RUNNING, f"bench {time.time():.6f}")
            store.write(record)

        await loop.run_in_executor(None, write)
        await asyncio.sleep(0.25)  # spread over the watch interval
    await asyncio.wait_for(asyncio.gather(*receivers), 60)
    ms = [x * 1000 for x in latencies]
    print(f"job push: {len(ms)} deliveries ({changes} changes x {subscribers} subscribers)")
    print(
        f"record written by another process -> received, ms: p50 {statistics.median(ms):.0f}, "
        f"p99 {pct(ms, 99):.0f}, max {max(ms):.0f} (job_watch_seconds = 1)"
    )

    # The server's own writes: a submit through REST wakes the watcher.
    own: list[float] = []
    http = AsyncHTTPClient()
    for n in range(changes):
        body = json.dumps({"name": f"own-{n}", "entrypoint": "python own.py"})
        sent = time.monotonic()
        response = await http.fetch(f"{base}/eksray/api/jobs", method="POST", headers=headers, body=body)
        job_id = json.loads(response.body)["id"]
        while True:
            data = json.loads(await asyncio.wait_for(sockets[0].read_message(), 10))  # type: ignore[attr-defined]
            if data["type"] == "job" and data["job"]["id"] == job_id:
                own.append((time.monotonic() - sent) * 1000)
                break
    for ws in sockets:
        ws.close()  # type: ignore[attr-defined]
    print(
        f"job submitted over REST -> received, ms: p50 {statistics.median(own):.0f}, p99 {pct(own, 99):.0f}; "
        f"ratio to another process's write (p50): {statistics.median(own) / statistics.median(ms):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--running", type=int, default=20)
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--subscribers", type=int, default=20)
    args = parser.parse_args()
    read_cost(args.jobs, args.running)
    with tempfile.TemporaryDirectory() as state:
        store = make_jobs(state, args.jobs, args.running)
        runner = "--EKSRay.job_runner=benchmarks.job_push_latency.BenchRunner"
        with jupyter_server(state, f"--EKSRay.owner={OWNER}", runner) as (base, token, pid):
            asyncio.run(run(base, token, pid, store, args.changes, args.subscribers, args.running))


if __name__ == "__main__":
    main()
