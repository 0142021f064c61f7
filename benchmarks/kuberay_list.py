"""The kuberay backend at scale: 100 RayClusters with 1,000 worker pods, through a real Jupyter server.

    .venv/bin/python -m benchmarks.kuberay_list [--against fake|real] [--clusters 100] [--workers 10] [--runs 200]

``--against real`` (the default) runs the real control plane of the k8s tests (tests/k8s:
kube-apiserver, etcd, scheduler, controller-manager, KWOK nodes sized for the pods, the real
KubeRay operator; ``make k8s-bin`` builds it); ``--against fake`` the fake API with its
simulated operator (tests/fakekube) in this process. Either way `jupyter server` with
c.EKSRay.backend = "kuberay" runs as a subprocess; the clusters are created through its REST
API and it waits until every pod is ready. Then it measures GET /eksray/api/clusters and
GET /eksray/api/clusters/<one> (p50/p99 over --runs; goal p99 <= 100 ms), the push stream
(the snapshot's size against the messages one cluster's one-worker scale-up causes; goal
<= 4 KiB: an update is proportional to the change, not to the fleet), and the server's RSS
growth with the clusters cached (goal <= 100 MiB). Everything started is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import secrets
import shutil
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
JSON_PATCH = "application/json-patch+json"


class FakeTarget:
    """tests/fakekube in this process: the simulated API server and operator."""

    name = "fake"

    def __init__(self, workdir: Path, pods: int) -> None:
        self.fk = FakeKubeServer(
            operator_config=OperatorConfig(pod_ready_delay=0.05), bookmark_interval=5.0, history_size=50_000
        ).start()
        self.kubeconfig = self.fk.write_kubeconfig(workdir / "kubeconfig")

    def autoscale(self, name: str, replicas: int) -> None:
        self.fk.autoscale(NS, name, "cpu", replicas=replicas)

    def pod_count(self) -> int:
        return len(self.fk.list_objects("pods", NS))

    def close(self) -> None:
        self.fk.stop()


class RealTarget:
    """The real control plane (tests/k8s), with KWOK nodes enough for ``pods`` pods."""

    name = "real"

    def __init__(self, workdir: Path, pods: int) -> None:
        from tests.k8s import ControlPlane, NodeSpec

        per_node = 250
        nodes = [
            # Room for every pod's requests (a head or worker asks for up to 2 CPUs and 4 GiB per CPU).
            NodeSpec(f"kwok-bench-{i}", cpu=str(per_node * 2), memory=f"{per_node * 16}Gi", pods=per_node)
            for i in range(pods // per_node + 2)
        ]
        self.plane = ControlPlane(workdir=workdir / "k8s", nodes=nodes).start()
        self.kubeconfig = self.plane.kubeconfig
        self.plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])

    def autoscale(self, name: str, replicas: int) -> None:
        """As the Ray autoscaler does: a JSON patch of the group's replicas."""
        import kubernetes.client

        kubernetes.client.CustomObjectsApi(self.plane.admin).patch_namespaced_custom_object(
            "ray.io", "v1", NS, "rayclusters", name,
            [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": replicas}],
            _content_type=JSON_PATCH,
        )  # fmt: skip

    def pod_count(self) -> int:
        import kubernetes.client

        core = kubernetes.client.CoreV1Api(self.plane.admin)
        return len(core.list_namespaced_pod(NS, _request_timeout=120).items)

    def close(self) -> None:
        self.plane.stop()


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


async def stream_sizes(port: int, token: str, target: Any, name: str, replicas: int) -> dict[str, Any]:
    """What the stream sends for one cluster's one-worker scale-up: every message after the
    change until the group is ready and 3 s have passed without one (the operator's events
    may come after the pods), the jobs list a new connection gets first left out."""
    ws = await websocket_connect(f"ws://127.0.0.1:{port}/eksray/api/stream?token={token}")
    snapshot = await asyncio.wait_for(ws.read_message(), 60)
    assert isinstance(snapshot, str) and json.loads(snapshot)["type"] == "snapshot"
    await asyncio.get_running_loop().run_in_executor(None, lambda: target.autoscale(name, replicas))
    messages: list[str] = []
    deadline = time.monotonic() + 120
    done = False
    while time.monotonic() < deadline:
        try:
            message = await asyncio.wait_for(ws.read_message(), 3.0 if done else deadline - time.monotonic())
        except asyncio.TimeoutError:
            break
        assert isinstance(message, str)
        doc = json.loads(message)
        if doc["type"] == "jobs":
            continue
        messages.append(message)
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
    parser.add_argument("--against", choices=["real", "fake"], default="real")
    args = parser.parse_args()
    server: subprocess.Popen[bytes] | None = None
    workdir = tempfile.mkdtemp(prefix="eksray-bench-")
    target_class = RealTarget if args.against == "real" else FakeTarget
    started_target = time.perf_counter()
    target = target_class(Path(workdir), args.clusters * (args.workers + 1))
    target_up = time.perf_counter() - started_target
    try:
        kubeconfig = target.kubeconfig
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
        # The baseline: the backend loaded, its client imported and its watches running, no clusters.
        status, body = api.request("GET", "clusters")
        assert status == 200 and json.loads(body)["clusters"] == [], body[:200]
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
        deadline = time.monotonic() + 3600
        while True:
            status, body = api.request("GET", "clusters")
            clusters = json.loads(body)["clusters"]
            if sum(c["phase"] == "ready" for c in clusters) == args.clusters:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("clusters did not become ready in time")
            time.sleep(0.5)
        all_ready = time.perf_counter() - started
        pods = target.pod_count()

        list_ms, list_size = timed(api, "clusters", args.runs)
        detail_ms, detail_size = timed(
            api, "clusters/c050" if args.clusters > 50 else "clusters/c000", args.runs
        )
        rss_loaded = process.memory_info().rss
        push = asyncio.run(
            stream_sizes(port, token, target, f"c{min(7, args.clusters - 1):03d}", args.workers + 1)
        )

        print(
            f"against the {target.name} API server (up in {target_up:.1f} s): {args.clusters} clusters, "
            f"{pods} pods ({pods - args.clusters} workers) in namespace {NS}"
        )
        print(f"created through the REST API in {created:.1f} s; all pods ready after {all_ready:.1f} s")
        for label, values, size in (("GET /eksray/api/clusters", list_ms, list_size),
                                    ("GET /eksray/api/clusters/<one>", detail_ms, detail_size)):  # fmt: skip
            print(
                f"{label:32s} p50 {statistics.median(values):7.1f} ms  p99 {percentile(values, 0.99):7.1f} ms  "
                f"({len(values)} runs, {size / 1024:.0f} KiB)  goal p99 <= 100 ms"
            )
        print(
            f"push stream: snapshot {push['snapshot'] / 1024:.0f} KiB for {args.clusters} clusters; one cluster "
            f"scaling by one worker sent {push['messages']} messages {push['kinds']} about {push['names']}, "
            f"largest {push['largest'] / 1024:.1f} KiB, total {push['total'] / 1024:.1f} KiB "
            f"(settled: {push['settled']})  goal <= 4 KiB"
        )
        print(
            f"server RSS: {rss_idle / 2**20:.0f} MiB with no clusters, {rss_loaded / 2**20:.0f} MiB with the clusters cached "
            f"(+{(rss_loaded - rss_idle) / 2**20:.0f} MiB; goal <= 100 MiB)"
        )
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        target.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
