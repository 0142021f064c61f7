"""Push latency end to end on real Ray: a worker joins or dies -> a panel's websocket has it.

    PYTHONPATH=. .venv/bin/python -m benchmarks.push_e2e_local [--changes 10]

Starts `jupyter server` on the local backend, subscribes to /eksray/api/stream like a panel,
creates a cluster (a head and a group without autoscaling) and then, ``--changes`` times:

* join: scales the group up by one; the change is the moment the GCS registered the new
  worker (the timestamp of its "Registering new node" line in Ray's GCS log), received when a
  pushed cluster first shows that node alive;
* death: SIGKILLs that worker's `ray start` process; the change is the kill, received when a
  pushed cluster first no longer shows the node alive.

Prints p50/p99 of each (goals: p99 <= 250 ms, then <= 100 ms). Everything started is stopped
by its PID (the server; the cluster by its delete).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from eksray_jupyter.backends.local.startup import StartLogs

from .push_latency import jupyter_server, pct

TIMEOUT = 180.0


class Panel:
    """One stream subscriber: every pushed cluster state, with when it arrived."""

    def __init__(self) -> None:
        self.states: list[tuple[float, dict[str, Any]]] = []
        self.arrived = asyncio.Event()

    async def follow(self, url: str, headers: dict[str, str]) -> None:
        ws = await websocket_connect(HTTPRequest(url, headers=headers))
        while True:
            message = await ws.read_message()
            if message is None:
                return
            now = time.time()
            data = json.loads(message)
            if data.get("type") == "cluster" and data.get("cluster"):
                self.states.append((now, data["cluster"]))
                self.arrived.set()

    async def first(self, since: int, test: Any) -> float:
        """When the first state pushed after index ``since`` passed ``test``."""
        deadline = time.monotonic() + TIMEOUT
        index = since
        while time.monotonic() < deadline:
            while index < len(self.states):
                at, state = self.states[index]
                index += 1
                if test(state):
                    return at
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), 1.0)
            except asyncio.TimeoutError:
                continue
        raise RuntimeError("the panel never saw the change")


def alive(state: dict[str, Any], node: str) -> bool:
    return any(n["id"] == node and n["state"] == "alive" for n in state["nodes"])


async def run(base: str, token: str, state_dir: str, changes: int) -> tuple[list[float], list[float]]:
    http = AsyncHTTPClient()
    headers = {"Authorization": f"token {token}"}

    async def call(method: str, path: str, body: Any = None) -> Any:
        response = await http.fetch(
            f"{base}/eksray/api/{path}", method=method, headers=headers,
            body=None if body is None else json.dumps(body), request_timeout=TIMEOUT,
        )  # fmt: skip
        return json.loads(response.body) if response.body else None

    panel = Panel()
    follower = asyncio.ensure_future(
        panel.follow(f"{base.replace('http', 'ws', 1)}/eksray/api/stream", headers)
    )
    spec = {"name": "push", "head": {"cpu": 1}, "autoscaling": {"enabled": False},
            "workerGroups": [{"groupName": "w", "replicas": 0, "minReplicas": 0, "maxReplicas": 2}]}  # fmt: skip
    await call("POST", "clusters", spec)
    joins: list[float] = []
    deaths: list[float] = []
    try:
        await panel.first(0, lambda s: s["name"] == "push" and s["phase"] == "ready")
        record_path = Path(state_dir) / "local" / "clusters" / "push" / "cluster.json"
        nodes_file = record_path.with_name("nodes.json")
        logs = StartLogs()
        for i in range(changes):
            mark = len(panel.states)
            await call("PATCH", "clusters/push", {"workerGroups": [{"groupName": "w", "replicas": 1}]})
            nodes_file = record_path.with_name("nodes.json")
            await panel.first(mark, lambda s: any(n["kind"] == "worker" for n in s["nodes"]))
            node = next(n["id"] for _, s in panel.states[mark:] for n in s["nodes"] if n["kind"] == "worker")
            seen = await panel.first(mark, lambda s, node=node: alive(s, node))
            registered = logs.facts(json.loads(record_path.read_text())).registered.get(node)
            if registered is None:
                raise RuntimeError(f"no registration of {node} in the GCS log")
            joins.append(seen - registered)
            # Death: the whole node at once (its `ray start`, raylet and agents: one process group).
            pid = json.loads(nodes_file.read_text())["nodes"][node]["process"]["pid"]
            mark = len(panel.states)
            killed = time.time()
            os.killpg(pid, signal.SIGKILL)
            gone = await panel.first(mark, lambda s, node=node: s["name"] == "push" and not alive(s, node))
            deaths.append(gone - killed)
            # Back to no worker (the backend replaced the dead one) for the next join.
            await call("PATCH", "clusters/push", {"workerGroups": [{"groupName": "w", "replicas": 0}]})
            await panel.first(
                len(panel.states) - 1, lambda s: not any(n["kind"] == "worker" for n in s["nodes"])
            )
            print(
                f"change {i + 1}: join {joins[-1] * 1000:.0f} ms, death {deaths[-1] * 1000:.0f} ms",
                flush=True,
            )
    finally:
        await call("DELETE", "clusters/push")
        follower.cancel()
    return joins, deaths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as state,
        jupyter_server(state, "--LocalBackend.max_worker_restarts=1000", backend="local") as (
            base,
            token,
            _,
        ),
    ):
        joins, deaths = asyncio.run(run(base, token, state, args.changes))
    for label, values in (("worker joins", joins), ("worker dies", deaths)):
        ms = [v * 1000 for v in values]
        print(f"{label}: p50 {statistics.median(ms):.0f} ms, p99 {pct(ms, 99):.0f} ms, max {max(ms):.0f} ms "
              f"over {len(ms)} (goal p99 <= 250, then <= 100)")  # fmt: skip


if __name__ == "__main__":
    main()
