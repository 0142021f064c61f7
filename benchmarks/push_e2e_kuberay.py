"""Push latency end to end on the real control plane: a worker pod Ready or gone -> a panel has it.

    PYTHONPATH=. .venv/bin/python -m benchmarks.push_e2e_kuberay [--changes 10]

Starts the real Kubernetes control plane with the KubeRay operator (tests/k8s; `make k8s-bin`
builds it) and `jupyter server` on the kuberay backend, subscribes to /eksray/api/stream like
a panel, creates a cluster without workers and then, ``--changes`` times, scales its group to
one worker and back:

* ready: the change is the moment this process's own watch of pods sees the worker pod
  Ready (the API server's conditions have whole seconds only), received when a pushed cluster
  first shows that node alive;
* gone: scaled back to none, the operator deletes the pod; the change is when the watch sees
  it deleted, received when a pushed cluster no longer shows it.

Prints p50/p99 of each (goals: p99 <= 250 ms, then <= 100 ms). Everything started is stopped
by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.push_e2e_local import Panel, alive
from benchmarks.push_latency import jupyter_server, pct
from tests.k8s import build
from tests.k8s.controlplane import ControlPlane

NAMESPACE = "eksray-bench"


class PodWatch:
    """This process's own watch of the namespace's pods: when each was seen Ready, and deleted."""

    def __init__(self, plane: ControlPlane) -> None:
        import kubernetes.client
        import kubernetes.watch

        self.core = kubernetes.client.CoreV1Api(plane.admin)
        self.watch = kubernetes.watch.Watch()
        self.ready: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._follow()
        except Exception:  # the control plane stopping ends the stream: nothing to measure then
            return

    def _follow(self) -> None:
        for event in self.watch.stream(self.core.list_namespaced_pod, NAMESPACE, timeout_seconds=3600):
            now = time.time()
            pod = event["object"]
            name = pod.metadata.name
            if event["type"] == "DELETED":
                self.deleted.setdefault(name, now)
            elif any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
                self.ready.setdefault(name, now)

    async def when(self, seen: dict[str, float], pod: str) -> float:
        """When the watch saw ``pod`` enter ``seen`` (it may see it after the panel did)."""
        deadline = time.monotonic() + 60
        while pod not in seen:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the watch never saw {pod}")
            await asyncio.sleep(0.01)
        return seen[pod]

    def stop(self) -> None:
        self.watch.stop()


async def run(base: str, token: str, plane: ControlPlane, changes: int) -> tuple[list[float], list[float]]:
    from tornado.httpclient import AsyncHTTPClient

    http = AsyncHTTPClient()
    headers = {"Authorization": f"token {token}"}

    async def call(method: str, path: str, body: Any = None) -> Any:
        response = await http.fetch(
            f"{base}/eksray/api/{path}", method=method, headers=headers,
            body=None if body is None else json.dumps(body), request_timeout=120,
        )  # fmt: skip
        return json.loads(response.body) if response.body else None

    panel = Panel()
    follower = asyncio.ensure_future(
        panel.follow(f"{base.replace('http', 'ws', 1)}/eksray/api/stream", headers)
    )
    spec = {"name": "push", "autoscaling": {"enabled": False},
            "workerGroups": [{"groupName": "w", "replicas": 0, "minReplicas": 0, "maxReplicas": 2, "cpu": 1}]}  # fmt: skip
    await call("POST", "clusters", spec)
    pods = PodWatch(plane)
    readies: list[float] = []
    gones: list[float] = []
    try:
        await panel.first(0, lambda s: s["name"] == "push" and s["phase"] == "ready")
        for i in range(changes):
            mark = len(panel.states)
            await call("PATCH", "clusters/push", {"workerGroups": [{"groupName": "w", "replicas": 1}]})
            await panel.first(mark, lambda s: any(n["kind"] == "worker" for n in s["nodes"]))
            node = next(n["id"] for _, s in panel.states[mark:] for n in s["nodes"] if n["kind"] == "worker")
            seen = await panel.first(mark, lambda s, node=node: alive(s, node))
            readies.append(seen - await pods.when(pods.ready, node))
            # Scaled back to none: the operator deletes the pod.
            mark = len(panel.states)
            await call("PATCH", "clusters/push", {"workerGroups": [{"groupName": "w", "replicas": 0}]})
            gone = await panel.first(mark, lambda s, node=node: all(n["id"] != node for n in s["nodes"]))
            gones.append(gone - await pods.when(pods.deleted, node))
            print(
                f"change {i + 1}: ready {readies[-1] * 1000:.0f} ms, gone {gones[-1] * 1000:.0f} ms",
                flush=True,
            )
    finally:
        pods.stop()
        await call("DELETE", "clusters/push")
        follower.cancel()
    return readies, gones


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10)
    args = parser.parse_args()
    if not build.binaries().complete():
        build.build()
    with tempfile.TemporaryDirectory() as work, ControlPlane(workdir=Path(work) / "k8s") as plane:
        state = Path(work) / "state"
        state.mkdir()
        settings = (
            "--KubeRayBackend.credentials=kubeconfig",
            f"--KubeRayBackend.kubeconfig={plane.kubeconfig}",
            "--EKSRay.owner=bench",
        )
        with jupyter_server(str(state), *settings, backend="kuberay") as (base, token, _):
            readies, gones = asyncio.run(run(base, token, plane, args.changes))
    for label, values in (("worker pod Ready", readies), ("worker pod gone", gones)):
        ms = [v * 1000 for v in values]
        print(f"{label}: p50 {statistics.median(ms):.0f} ms, p99 {pct(ms, 99):.0f} ms, max {max(ms):.0f} ms "
              f"over {len(ms)} (goal p99 <= 250, then <= 100)")  # fmt: skip


if __name__ == "__main__":
    main()
