"""The open panel's load on the server with the usage section shown, on real Ray.

    PYTHONPATH=. .venv/bin/python -m benchmarks.panel_load [--panels 5] [--seconds 60] [--rounds 3]

Starts `jupyter server` on the local backend with prices set and one real cluster (a head and
a worker). Then, in alternating rounds on the same server, ``--panels`` simulated panels for
``--seconds`` each:

* baseline: each holds the push stream (/eksray/api/stream) open, as a panel with the usage
  section closed does;
* usage shown: the same, and each reads GET /eksray/api/usage every 10 s, as the panel's usage
  section does while it is open (its only extra requests; the utilisation chart is fed by the
  stream).

Reports per round the server's CPU (its process and children, from /proc) and requests per
second per panel, then the medians over the rounds and usage/baseline as a ratio. The
goal: the usage section adds at most 0.1 request/s and 1 % of a core per open panel.
Everything started is stopped by its PID (the server; the cluster by its delete).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from typing import Any

import psutil
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from .push_latency import jupyter_server

USAGE_POLL_S = 10.0  # the panel's (src/usageStore.ts)


def cpu_seconds(pid: int) -> float:
    """CPU time of the server and its children (the cluster's processes are not its children)."""
    process = psutil.Process(pid)
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


async def panel(base: str, token: str, seconds: float, with_usage: bool, counts: list[int]) -> None:
    headers = {"Authorization": f"token {token}"}
    ws = await websocket_connect(
        HTTPRequest(f"{base.replace('http', 'ws')}/eksray/api/stream", headers=headers)
    )
    client = AsyncHTTPClient()
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            if with_usage:
                response = await client.fetch(f"{base}/eksray/api/usage", headers=headers)
                json.loads(response.body)
                counts.append(1)
            await asyncio.sleep(min(USAGE_POLL_S, max(0.0, end - time.monotonic())))
    finally:
        ws.close()


async def measure(
    base: str, token: str, pid: int, panels: int, seconds: float, with_usage: bool
) -> dict[str, float]:
    counts: list[int] = []
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.gather(*(panel(base, token, seconds, with_usage, counts) for _ in range(panels)))
    elapsed = time.monotonic() - started
    return {
        "cpu_percent": 100 * (cpu_seconds(pid) - before) / elapsed,
        "requests_per_s_per_panel": len(counts) / elapsed / panels,
    }


async def create_cluster(base: str, token: str) -> None:
    client = AsyncHTTPClient()
    headers = {"Authorization": f"token {token}"}
    body = {
        "name": "load",
        "autoscaling": {"enabled": False},
        "workerGroups": [{"groupName": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 1}],
    }
    await client.fetch(f"{base}/eksray/api/clusters", method="POST", headers=headers, body=json.dumps(body))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        response = await client.fetch(f"{base}/eksray/api/clusters/load", headers=headers)
        if json.loads(response.body)["phase"] == "ready":
            return
        await asyncio.sleep(1)
    raise RuntimeError("the cluster was not ready in 240 s")


async def delete_cluster(base: str, token: str) -> None:
    client = AsyncHTTPClient()
    await client.fetch(
        f"{base}/eksray/api/clusters/load", method="DELETE", headers={"Authorization": f"token {token}"}
    )


async def run(base: str, token: str, pid: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    await create_cluster(base, token)
    rounds = []
    try:
        for i in range(args.rounds):
            base_round = await measure(base, token, pid, args.panels, args.seconds, with_usage=False)
            usage_round = await measure(base, token, pid, args.panels, args.seconds, with_usage=True)
            print(
                f"round {i + 1}: baseline {base_round['cpu_percent']:.2f} % CPU; usage shown "
                f"{usage_round['cpu_percent']:.2f} % CPU, {usage_round['requests_per_s_per_panel']:.3f} req/s per panel",
                flush=True,
            )
            rounds.append({"baseline": base_round, "usage": usage_round})
    finally:
        await delete_cluster(base, token)
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panels", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    extra = ("--EKSRay.prices={'cpuHour': 0.04, 'memoryGiBHour': 0.005}",)
    with (
        tempfile.TemporaryDirectory() as state,
        jupyter_server(state, *extra, backend="local") as (base, token, pid),
    ):
        rounds = asyncio.run(run(base, token, pid, args))
    baseline = statistics.median(r["baseline"]["cpu_percent"] for r in rounds)
    shown = statistics.median(r["usage"]["cpu_percent"] for r in rounds)
    rate = statistics.median(r["usage"]["requests_per_s_per_panel"] for r in rounds)
    extra_per_panel = (shown - baseline) / args.panels
    print(
        f"median over {len(rounds)} rounds, {args.panels} panels: baseline {baseline:.2f} % CPU, usage shown "
        f"{shown:.2f} % CPU (ratio {shown / baseline if baseline else float('nan'):.2f}); extra per panel "
        f"{extra_per_panel:.2f} % of a core and {rate:.3f} req/s (goal <= 1 % and <= 0.1 req/s)"
    )
    if extra_per_panel > 1.0 or rate > 0.1 + 1e-3:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
