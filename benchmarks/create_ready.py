"""Local backend create→ready against raw `ray start` of the same topology, as a ratio.

    .venv/bin/python -m benchmarks.create_ready [--runs 5]

Topology: a head (1 CPU) and one worker (1 CPU, custom resource {"tag": 1}). The
baseline runs the two `ray start` commands a person would type, with the same flags and
the same environment as eksray's Ray processes (so the ratio is eksray's own overhead:
its bootstrap, polling and status; :mod:`benchmarks.first_task` compares against a plain
shell), and is ready when the dashboard lists two alive nodes; eksray is ready when its API
says "ready" (which requires the same). Runs alternate in one process, each pair in the
other order than the last; medians and their ratio are printed (goal <= 1.02), and each
run's timeline (seconds since t=0). Everything started is stopped by its pids.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from eksray_jupyter.backends import ray_dashboard
from eksray_jupyter.backends.local import ray_start
from eksray_jupyter.core import processes
from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.models import Phase
from eksray_jupyter.core.net import port_open
from eksray_jupyter.core.service import ClusterService

from .first_task import Timeline, watch

POLL = 0.1
TIMEOUT = 300.0


def raw_ray_start(workdir: Path) -> tuple[float, Timeline]:
    temp = tempfile.mkdtemp(prefix="rb-", dir="/tmp")
    gcs, dash, client = processes.free_port(), processes.free_port(), processes.free_port()
    common = ["--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--dashboard-agent-listen-port=0",
              "--disable-usage-stats", "--block", "--object-store-memory=268435456"]  # fmt: skip
    refs = []
    stop = threading.Event()
    timeline = Timeline(time.time())
    watcher = threading.Thread(
        target=watch, args=(timeline, lambda: gcs, lambda: (f"http://127.0.0.1:{dash}", {}), stop)
    )
    started = time.perf_counter()
    try:
        watcher.start()
        refs.append(
            processes.spawn(
                [
                    *ray_start.ray_command(),
                    "start",
                    "--head",
                    f"--port={gcs}",
                    f"--dashboard-port={dash}",
                    "--dashboard-host=127.0.0.1",
                    f"--ray-client-server-port={client}",
                    "--num-cpus=1",
                    *common,
                ],
                processes.ray_env(),
                workdir / "head.log",
            )
        )
        while not port_open(gcs, timeout=0.2):
            time.sleep(POLL)
        refs.append(
            processes.spawn(
                [
                    *ray_start.ray_command(),
                    "start",
                    f"--address=127.0.0.1:{gcs}",
                    "--num-cpus=1",
                    '--resources={"tag":1}',
                    *common,
                ],
                processes.ray_env(),
                workdir / "worker.log",
            )
        )
        while time.perf_counter() - started < TIMEOUT:
            try:
                nodes = ray_dashboard.list_nodes(f"http://127.0.0.1:{dash}")
                if sum(n.get("state") == "ALIVE" for n in nodes) == 2:
                    took = time.perf_counter() - started
                    timeline.mark("ready")
                    return took, timeline
            except ray_dashboard.DashboardUnavailable:
                pass
            time.sleep(POLL)
        raise RuntimeError("raw ray start did not become ready")
    finally:
        stop.set()
        watcher.join()
        processes.terminate(processes.cluster_processes(refs, temp), grace=10)
        shutil.rmtree(temp, ignore_errors=True)


def eksray_create(service: ClusterService, name: str) -> tuple[float, Timeline]:
    request = {
        "name": name,
        "head": {"cpu": 1},
        "workerGroups": [
            {"groupName": "w", "replicas": 1, "minReplicas": 0, "maxReplicas": 1, "resources": {"tag": 1}}
        ],
        "autoscaling": {"enabled": False},
    }
    stop = threading.Event()
    timeline = Timeline(time.time())
    where: dict[str, Any] = {}

    def dashboard() -> tuple[str, dict[str, str]] | None:
        return (f"http://127.0.0.1:{where['ports']['dashboard']}", where["headers"]) if where else None

    watcher = threading.Thread(
        target=watch, args=(timeline, lambda: where.get("ports", {}).get("gcs"), dashboard, stop)
    )
    started = time.perf_counter()
    try:
        service.create(request)
        timeline.mark("created")
        record = json.loads(
            (Path(service.config.state_dir) / "local/clusters" / name / "cluster.json").read_text()
        )
        where.update(ports=record["ports"], headers=service.dashboard_headers(name))
        watcher.start()
        while time.perf_counter() - started < TIMEOUT:
            if service.get(name).phase == Phase.READY:
                took = time.perf_counter() - started
                timeline.mark("ready")
                return took, timeline
            time.sleep(POLL)
        raise RuntimeError("eksray cluster did not become ready")
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
        service.delete(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        service = ClusterService(EKSRay(state_dir=state))
        # A server has jsonschema loaded from its start (jupyter_events): so has this process.
        importlib.import_module("jsonschema")
        raw: list[float] = []
        ours: list[float] = []
        for i in range(args.runs):
            order = [("raw", lambda: raw_ray_start(Path(state))),
                     ("eksray", lambda i=i: eksray_create(service, f"bench-{i}"))]  # fmt: skip
            for label, run in order if i % 2 == 0 else order[::-1]:
                took, timeline = run()
                (raw if label == "raw" else ours).append(took)
                print(f"run {i + 1} {label}: {took:.2f} s  [{timeline}]", flush=True)
    r, o = statistics.median(raw), statistics.median(ours)
    print(
        f"raw ray start: median {r:.2f} s; eksray create->ready: median {o:.2f} s; ratio {o / r:.3f} (goal <= 1.02)"
    )


if __name__ == "__main__":
    main()
