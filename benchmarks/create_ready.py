"""Local backend create→ready against raw `ray start` of the same topology, as a ratio.

    .venv/bin/python -m benchmarks.create_ready [--runs 3]

Topology: a head (1 CPU) and one worker (1 CPU, custom resource {"tag": 1}). The
baseline runs the two `ray start` commands a person would type, with the same flags,
and is ready when the dashboard lists two alive nodes; eksray is ready when its API
says "ready" (which requires the same). Runs alternate in one process; medians and
their ratio are printed (goal <= 1.05). Everything started is stopped by its pids.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from eksray_jupyter.backends import ray_dashboard
from eksray_jupyter.backends.local import ray_start
from eksray_jupyter.core import processes
from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.models import Phase
from eksray_jupyter.core.net import port_open
from eksray_jupyter.core.service import ClusterService

POLL = 0.1
TIMEOUT = 300.0


def raw_ray_start(workdir: Path) -> float:
    temp = tempfile.mkdtemp(prefix="rb-", dir="/tmp")
    gcs, dash, client = processes.free_port(), processes.free_port(), processes.free_port()
    common = ["--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--dashboard-agent-listen-port=0",
              "--disable-usage-stats", "--block", "--object-store-memory=268435456"]  # fmt: skip
    refs = []
    started = time.perf_counter()
    try:
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
                    return time.perf_counter() - started
            except ray_dashboard.DashboardUnavailable:
                pass
            time.sleep(POLL)
        raise RuntimeError("raw ray start did not become ready")
    finally:
        processes.terminate(processes.cluster_processes(refs, temp), grace=10)
        shutil.rmtree(temp, ignore_errors=True)


def eksray_create(service: ClusterService, name: str) -> float:
    request = {
        "name": name,
        "head": {"cpu": 1},
        "workerGroups": [
            {"groupName": "w", "replicas": 1, "minReplicas": 0, "maxReplicas": 1, "resources": {"tag": 1}}
        ],
        "autoscaling": {"enabled": False},
    }
    started = time.perf_counter()
    try:
        service.create(request)
        while time.perf_counter() - started < TIMEOUT:
            if service.get(name).phase == Phase.READY:
                return time.perf_counter() - started
            time.sleep(POLL)
        raise RuntimeError("eksray cluster did not become ready")
    finally:
        service.delete(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        service = ClusterService(EKSRay(state_dir=state))
        raw: list[float] = []
        ours: list[float] = []
        for i in range(args.runs):
            raw.append(raw_ray_start(Path(state)))
            ours.append(eksray_create(service, f"bench-{i}"))
            print(f"run {i + 1}: raw {raw[-1]:.2f} s, eksray {ours[-1]:.2f} s", flush=True)
    r, o = statistics.median(raw), statistics.median(ours)
    print(
        f"raw ray start: median {r:.2f} s; eksray create->ready: median {o:.2f} s; ratio {o / r:.3f} (goal <= 1.05)"
    )


if __name__ == "__main__":
    main()
