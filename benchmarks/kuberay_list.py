"""The kuberay backend at scale: 100 RayClusters with 1,000 worker pods, through a real Jupyter server.

    .venv/bin/python -m benchmarks.kuberay_list [--clusters 100] [--workers 10] [--runs 200]

Starts the fake Kubernetes API with its simulated KubeRay operator (tests/fakekube) in this
process and `jupyter server` with c.EKSRay.backend = "kuberay" as a subprocess, creates
the clusters through the REST API and waits until every pod is ready. Then it measures
GET /eksray/api/clusters and GET /eksray/api/clusters/<one> (p50/p99 over --runs, goal
<= 200 ms), the push stream (the snapshot's size against the messages one cluster's
scale-up causes: an update should be proportional to the change, not to the fleet), and
the server's RSS. Everything started is stopped (the server by its PID).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from tornado.websocket import websocket_connect

from tests.fakekube import FakeKubeServer, OperatorConfig

NS = "eksray-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"token {self.token}", "Content-Type": "application/json"}
        payload = json.dumps(body) if body is not None else None
        for attempt in range(2):
            try:
                self.conn.request(method, f"/eksray/api/{path}", body=payload, headers=headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(api: Api, path: str, runs: int) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        status, body = api.request("GET", path)
        times.append((time.perf_counter() - started) * 1000)
        assert status == 200, (status, body[:200])
        size = len(body)
    return times, size


async def stream_sizes(port: int, token: str, fk: FakeKubeServer, name: str, replicas: int) -> dict[str, Any]:
    ws = await websocket_connect(f"ws://127.0.0.1:{port}/eksray/api/stream?token={token}")
    snapshot = await asyncio.wait_for(ws.read_message(), 60)
    assert isinstance(snapshot, str) and json.loads(snapshot)["type"] == "snapshot"
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: fk.autoscale(NS, name, "cpu", replicas=replicas)
    )
    messages: list[str] = []
    deadline = time.monotonic() + 15
    done = False
    while time.monotonic() < deadline and not done:
        try:
            message = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            break
        assert isinstance(message, str)
        messages.append(message)
        doc = json.loads(message)
        if doc["type"] == "cluster" and doc["cluster"]["phase"] == "ready":
            done = doc["cluster"]["workerGroups"][0]["ready"] == replicas
    ws.close()
    kinds: dict[str, int] = {}
    for m in messages:
        kinds[json.loads(m)["type"]] = kinds.get(json.loads(m)["type"], 0) + 1
    names = {json.loads(m).get("name") or json.loads(m).get("cluster", {}).get("name") for m in messages}
    return {
        "snapshot": len(snapshot),
        "messages": len(messages),
        "kinds": kinds,
        "largest": max((len(m) for m in messages), default=0),
        "total": sum(len(m) for m in messages),
        "names": sorted(n for n in names if n),
        "settled": done,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--workers", type=int, default=10, help="worker pods per cluster")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    fk = FakeKubeServer(
        operator_config=OperatorConfig(pod_ready_delay=0.05),
        bookmark_interval=5.0,
        history_size=50_000,
    ).start()
    server: subprocess.Popen[bytes] | None = None
    workdir = tempfile.mkdtemp(prefix="eksray-bench-")
    try:
        kubeconfig = fk.write_kubeconfig(Path(workdir) / "kubeconfig")
        port, token = free_port(), secrets.token_hex(8)
        config = Path(workdir) / "config.json"
        config.write_text(
            json.dumps(
                {
                    "ServerApp": {"jpserver_extensions": {"eksray_jupyter": True}},
                    "EKSRay": {"backend": "kuberay", "owner": "bench", "state_dir": workdir},
                    "KubeRayBackend": {
                        "credentials": "kubeconfig",
                        "kubeconfig": str(kubeconfig),
                        "dashboard_access": "apiserver-proxy",
                        "max_clusters_per_owner": args.clusters,
                        "record_events": True,
                    },
                }
            )
        )
        argv = [
            sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={port}",
            f"--IdentityProvider.token={token}", f"--config={config}",
        ]  # fmt: skip
        log = open(Path(workdir) / "server.log", "wb")  # noqa: SIM115 - closed with the process
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        api = Api(port, token)
        deadline = time.monotonic() + 120
        while True:
            try:
                if api.request("GET", "config")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {workdir}/server.log")
            time.sleep(0.1)
        process = psutil.Process(server.pid)
        rss_idle = process.memory_info().rss

        started = time.perf_counter()
        for i in range(args.clusters):
            spec = {
                "name": f"c{i:03d}",
                "namespace": NS,
                "head": {"cpu": 1},
                "workerGroups": [
                    {
                        "groupName": "cpu",
                        "replicas": args.workers,
                        "minReplicas": 0,
                        "maxReplicas": args.workers * 2,
                    }
                ],
            }
            status, body = api.request("POST", "clusters", spec)
            assert status == 201, body[:300]
        created = time.perf_counter() - started
        deadline = time.monotonic() + 600
        while True:
            status, body = api.request("GET", "clusters")
            clusters = json.loads(body)["clusters"]
            if sum(c["phase"] == "ready" for c in clusters) == args.clusters:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("clusters did not become ready in time")
            time.sleep(0.5)
        all_ready = time.perf_counter() - started
        pods = len(fk.list_objects("pods", NS))

        list_ms, list_size = timed(api, "clusters", args.runs)
        detail_ms, detail_size = timed(
            api, "clusters/c050" if args.clusters > 50 else "clusters/c000", args.runs
        )
        rss_loaded = process.memory_info().rss
        push = asyncio.run(stream_sizes(port, token, fk, "c007", args.workers + 1))

        print(
            f"setup: {args.clusters} clusters, {pods} pods ({pods - args.clusters} workers) in namespace {NS}"
        )
        print(f"created through the REST API in {created:.1f} s; all pods ready after {all_ready:.1f} s")
        for label, values, size in (("GET /eksray/api/clusters", list_ms, list_size),
                                    ("GET /eksray/api/clusters/<one>", detail_ms, detail_size)):  # fmt: skip
            print(
                f"{label:32s} p50 {statistics.median(values):7.1f} ms  p99 {percentile(values, 0.99):7.1f} ms  "
                f"({len(values)} runs, {size / 1024:.0f} KiB)  goal <= 200 ms"
            )
        print(
            f"push stream: snapshot {push['snapshot'] / 1024:.0f} KiB for {args.clusters} clusters; one cluster "
            f"scaling by one worker sent {push['messages']} messages {push['kinds']} about {push['names']}, "
            f"largest {push['largest'] / 1024:.1f} KiB, total {push['total'] / 1024:.1f} KiB "
            f"(settled: {push['settled']})"
        )
        print(
            f"server RSS: {rss_idle / 2**20:.0f} MiB idle, {rss_loaded / 2**20:.0f} MiB with the clusters cached"
        )
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        fk.stop()


if __name__ == "__main__":
    main()
