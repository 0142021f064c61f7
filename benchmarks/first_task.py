"""Time to first task: local create→a driver's first result, against raw `ray start`, as a ratio.

    .venv/bin/python -m benchmarks.first_task [--runs 5] [--daemons]

Topology as in :mod:`benchmarks.create_ready`: a head (1 CPU) and one worker (1 CPU, custom
resource {"tag": 1}). At t=0 the clusters start and a driver process starts beside them; it
retries ``ray.init(address)`` until it connects (the address eksray hands out with its token;
for raw Ray the head's GCS address) and then runs ``ray.get`` of a task that needs
``{"tag": 1}``, i.e. the worker. The result's arrival ends the run. Runs alternate raw/eksray in
one process; medians and their ratio are printed (goal <= 0.8).

Each run also prints a timeline (seconds since t=0): the GCS port open, the dashboard
answering, each node registered (alive in the dashboard's node table), the driver connected
and its result. ``--daemons`` adds the CPU seconds each Ray process used by the end of the
run, by kind (dashboard, agents, log monitor, ...): on two cores CPU is start-up time.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from eksray_jupyter.backends import ray_dashboard
from eksray_jupyter.backends.local import ray_start
from eksray_jupyter.core import processes
from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.net import port_open
from eksray_jupyter.core.service import ClusterService

TIMEOUT = 300.0

DRIVER = r"""
import json, sys, time
import ray
address = sys.argv[1]
deadline = time.monotonic() + 300
while True:
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        break
    except (ConnectionError, RuntimeError):
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
print(json.dumps({"connected": time.time()}), flush=True)

@ray.remote(num_cpus=0, resources={"tag": 1})
def where():
    return ray.get_runtime_context().get_node_id()

ray.get(where.remote())
print(json.dumps({"result": time.time()}), flush=True)
ray.shutdown()
"""

# Ray process kinds by a fragment of their command line, for the CPU report.
KINDS = (
    ("gcs_server", "gcs_server"),
    ("raylet", "raylet/raylet"),
    ("dashboard", "dashboard/dashboard.py"),
    ("dashboard-modules", "ray-dashboard-"),
    ("dashboard agent", "DashboardAgent"),
    ("runtime-env agent", "RuntimeEnvAgent"),
    ("log monitor", "log_monitor.py"),
    ("autoscaler monitor", "autoscaler/_private/monitor.py"),
    ("client server", "ray.util.client.server"),
    ("ray start CLI", " start "),
    ("idle workers", "ray::IDLE"),
)


def kind_of(cmdline: str) -> str:
    return next((kind for kind, fragment in KINDS if fragment in cmdline), "other")


class Timeline:
    """Milestones (seconds since t=0), first occurrence each."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.marks: dict[str, float] = {}

    def mark(self, name: str, at: float | None = None) -> None:
        self.marks.setdefault(name, (at if at is not None else time.time()) - self.t0)

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in sorted(self.marks.items(), key=lambda kv: kv[1]))


def watch(
    timeline: Timeline, gcs: Callable[[], int | None], dashboard: Callable[[], tuple[str, dict[str, str]] | None],
    stop: threading.Event,
) -> None:  # fmt: skip
    """Mark GCS, dashboard and node milestones until ``stop`` (polls every 50 ms)."""
    while not stop.wait(0.05):
        port = gcs()
        if port and "gcs up" not in timeline.marks and port_open(port, timeout=0.05):
            timeline.mark("gcs up")
        where = dashboard()
        if where is None:
            continue
        try:
            nodes = ray_dashboard.list_nodes(where[0], headers=where[1])
        except ray_dashboard.DashboardUnavailable:
            continue
        timeline.mark("dashboard up")
        for n in nodes:
            if n.get("state") == "ALIVE":
                timeline.mark("head registered" if n.get("is_head_node") else "worker registered")


def run_driver(address: str, env: dict[str, str], timeline: Timeline) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, address], env=env, stdout=subprocess.PIPE, text=True
    )


def finish_driver(driver: subprocess.Popen[str], timeline: Timeline) -> float:
    try:
        out, _ = driver.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        driver.kill()
        raise RuntimeError("the driver did not get its result") from None
    for line in out.splitlines():
        if line.startswith("{"):
            for k, v in json.loads(line).items():
                timeline.mark(f"driver {k}", v)
    if "driver result" not in timeline.marks:
        raise RuntimeError(f"the driver failed (exit {driver.returncode})")
    return timeline.marks["driver result"]


def cpu_by_kind(procs: list[psutil.Process]) -> dict[str, float]:
    cpu: dict[str, float] = collections.defaultdict(float)
    for p in procs:
        try:
            t = p.cpu_times()
            cpu[kind_of(" ".join(p.cmdline()))] += t.user + t.system
        except psutil.Error:
            continue
    return dict(cpu)


def raw_run(workdir: Path, report: dict[str, float] | None) -> tuple[float, Timeline]:
    temp = tempfile.mkdtemp(prefix="rb-", dir="/tmp")
    gcs, dash, client = processes.free_port(), processes.free_port(), processes.free_port()
    common = ["--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--dashboard-agent-listen-port=0",
              "--disable-usage-stats", "--block", "--object-store-memory=268435456"]  # fmt: skip
    refs = []
    plain = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}  # the environment a person's shell has
    stop = threading.Event()
    t0 = time.time()
    timeline = Timeline(t0)
    watcher = threading.Thread(
        target=watch, args=(timeline, lambda: gcs, lambda: (f"http://127.0.0.1:{dash}", {}), stop)
    )
    try:
        head = [*ray_start.ray_command(), "start", "--head", f"--port={gcs}", f"--dashboard-port={dash}",
                "--dashboard-host=127.0.0.1", f"--ray-client-server-port={client}", "--num-cpus=1", *common]  # fmt: skip
        refs.append(processes.spawn(head, plain, workdir / "head.log"))
        driver = run_driver(f"127.0.0.1:{gcs}", plain, timeline)
        watcher.start()
        deadline = time.monotonic() + TIMEOUT
        while not port_open(gcs, timeout=0.05):  # as a person would: the worker once the head answers
            if time.monotonic() > deadline:
                raise RuntimeError("raw head's GCS did not open")
            time.sleep(0.05)
        worker = [*ray_start.ray_command(), "start", f"--address=127.0.0.1:{gcs}", "--num-cpus=1",
                  '--resources={"tag":1}', *common]  # fmt: skip
        refs.append(processes.spawn(worker, plain, workdir / "worker.log"))
        took = finish_driver(driver, timeline)
        if report is not None:
            for k, v in cpu_by_kind(processes.cluster_processes(refs, temp)).items():
                report[k] = report.get(k, 0.0) + v
        return took, timeline
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
        processes.terminate(processes.cluster_processes(refs, temp), grace=10)
        shutil.rmtree(temp, ignore_errors=True)


def eksray_run(service: ClusterService, name: str, report: dict[str, float] | None) -> tuple[float, Timeline]:
    request = {
        "name": name,
        "head": {"cpu": 1},
        "workerGroups": [
            {"groupName": "w", "replicas": 1, "minReplicas": 0, "maxReplicas": 1, "resources": {"tag": 1}}
        ],
        "autoscaling": {"enabled": False},
    }
    stop = threading.Event()
    t0 = time.time()
    timeline = Timeline(t0)
    state: dict[str, Any] = {}

    def dashboard() -> tuple[str, dict[str, str]] | None:
        if "headers" not in state:
            state["headers"] = service.dashboard_headers(name)
        return (f"http://127.0.0.1:{state['ports']['dashboard']}", state["headers"]) if state else None

    watcher = threading.Thread(
        target=watch, args=(timeline, lambda: state.get("ports", {}).get("gcs"), dashboard, stop)
    )
    try:
        cluster = service.create(request)
        timeline.mark("created")
        record = json.loads(
            (Path(service.config.state_dir) / "local/clusters" / name / "cluster.json").read_text()
        )
        state["ports"] = record["ports"]
        # The environment of a kernel the server starts (kernel/provisioner.py).
        env = processes.with_import_path({**os.environ, **service.ray_auth_env(name)})
        driver = run_driver(cluster.address or "", env, timeline)
        watcher.start()
        took = finish_driver(driver, timeline)
        if report is not None:
            refs = [record["head"]]
            for k, v in cpu_by_kind(processes.cluster_processes(refs, record["tempDir"])).items():
                report[k] = report.get(k, 0.0) + v
        return took, timeline
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
        service.delete(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--daemons", action="store_true", help="report CPU seconds per Ray process kind")
    args = parser.parse_args()
    raw_cpu: dict[str, float] | None = {} if args.daemons else None
    our_cpu: dict[str, float] | None = {} if args.daemons else None
    with tempfile.TemporaryDirectory() as state:
        service = ClusterService(EKSRay(state_dir=state))
        # A server has jsonschema loaded from its start (jupyter_events): so has this process.
        importlib.import_module("jsonschema")
        raw: list[float] = []
        ours: list[float] = []
        for i in range(args.runs):
            # Alternate which goes first: a warm page cache must not favour one side.
            order = [("raw", lambda: raw_run(Path(state), raw_cpu)),
                     ("eksray", lambda i=i: eksray_run(service, f"bench-{i}", our_cpu))]  # fmt: skip
            for label, run in order if i % 2 == 0 else order[::-1]:
                took, timeline = run()
                (raw if label == "raw" else ours).append(took)
                print(f"run {i + 1} {label}: {took:.2f} s  [{timeline}]", flush=True)
    r, o = statistics.median(raw), statistics.median(ours)
    print(f"raw ray start + driver: median {r:.2f} s; eksray create + driver: median {o:.2f} s; "
          f"ratio {o / r:.3f} (goal <= 0.8)")  # fmt: skip
    for label, cpu in (("raw", raw_cpu), ("eksray", our_cpu)):
        if cpu:
            total = sum(cpu.values())
            parts = ", ".join(
                f"{k} {v / args.runs:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
            )
            print(f"{label} CPU s per run: {total / args.runs:.1f} ({parts})")


if __name__ == "__main__":
    main()
