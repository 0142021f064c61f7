"""Push latency: backend change -> subscribed panels, with Jupyter's own latency meanwhile.

    PYTHONPATH=. .venv/bin/python -m benchmarks.push_latency [--changes 200] [--subscribers 50]

Starts `jupyter server` with the in-memory test backend, opens N websocket subscribers
on /eksray/api/stream, then makes M changes (scale requests through the REST API). Each
change's event carries the backend's own timestamp, so latency is "backend observed ->
client received" on one clock. Meanwhile another task times GET /api/status. Prints
p50/p99 of both (goals: push p99 <= 250 ms, /api/status p99 <= 50 ms). The server is
stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run(base: str, token: str, changes: int, subscribers: int) -> None:
    http = AsyncHTTPClient(max_clients=64)
    headers = {"Authorization": f"token {token}"}
    spec = {
        "name": "bench",
        "workerGroups": [{"groupName": "w", "replicas": 0, "minReplicas": 0, "maxReplicas": 1000}],
    }
    await http.fetch(f"{base}/eksray/api/clusters", method="POST", body=json.dumps(spec), headers=headers)

    latencies: list[float] = []
    received = [0] * subscribers

    async def subscriber(i: int, ready: asyncio.Event) -> None:
        ws = await websocket_connect(
            HTTPRequest(f"{base.replace('http', 'ws', 1)}/eksray/api/stream", headers=headers)
        )
        await ws.read_message()  # snapshot
        ready.set()
        while received[i] < changes:
            message = await ws.read_message()
            now = time.time()
            if message is None:
                break
            data = json.loads(message)
            if data["type"] == "event":
                latencies.append(now - data["event"]["timestamp"])
                received[i] += 1
        ws.close()

    readies = [asyncio.Event() for _ in range(subscribers)]
    tasks = [asyncio.ensure_future(subscriber(i, readies[i])) for i in range(subscribers)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)

    status_times: list[float] = []
    done = threading.Event()

    def poll_status() -> None:
        # Its own thread and blocking client: the 50 subscribers on this loop must not delay it.
        while not done.is_set():
            started = time.perf_counter()
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=10).read()
            status_times.append(time.perf_counter() - started)
            done.wait(0.02)

    poller = threading.Thread(target=poll_status)
    poller.start()
    for n in range(changes):
        body = {"workerGroups": [{"groupName": "w", "replicas": n % 1000}]}
        await http.fetch(
            f"{base}/eksray/api/clusters/bench", method="PATCH", body=json.dumps(body), headers=headers
        )
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    done.set()
    poller.join()
    ms = [x * 1000 for x in latencies]
    st = [x * 1000 for x in status_times]
    print(f"push: {len(ms)} deliveries ({changes} changes x {subscribers} subscribers)")
    print(
        f"push latency ms: p50 {statistics.median(ms):.1f}, p99 {pct(ms, 99):.1f}, max {max(ms):.1f} (goal p99 <= 250)"
    )
    print(
        f"/api/status ms during the run: p50 {statistics.median(st):.1f}, p99 {pct(st, 99):.1f} over {len(st)} calls (goal p99 <= 50)"
    )


@contextlib.contextmanager
def jupyter_server(
    state: str, *extra: str, backend: str = "tests.memory_backend.MemoryBackend"
) -> Iterator[tuple[str, str, int]]:
    """A Jupyter server with the extension on ``backend`` in ``state``: (base URL, token, pid).

    Its log is ``state``/server.log. Stopped (by its pid) on exit.
    """
    port, token = free_port(), secrets.token_hex(8)
    config = os.path.join(state, "config.json")
    with open(config, "w") as f:
        json.dump({"ServerApp": {"jpserver_extensions": {"eksray_jupyter": True}}}, f)
    argv = [
        sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--config={config}", f"--EKSRay.state_dir={state}",
        f"--EKSRay.backend={backend}", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(os.path.join(state, "server.log"), "wb") as log:
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield base, token, server.pid
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--subscribers", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state, jupyter_server(state) as (base, token, _pid):
        asyncio.run(run(base, token, args.changes, args.subscribers))


if __name__ == "__main__":
    main()
