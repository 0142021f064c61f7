"""Usage on real Ray: what Ray schedules per node, utilisation that rises while a task runs and
falls after, and cost that accrues while the cluster runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eksray_jupyter.core import processes
from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.service import ClusterService

from .waiting import wait_until

pytestmark = pytest.mark.ray

READY_TIMEOUT = 240.0

# Holds one CPU (and 1 GiB of Ray's memory) until the file named by argv[1] exists.
DRIVER = """
import os, sys, time, ray
ray.init(logging_level="ERROR")

@ray.remote(num_cpus=1, memory=1024**3)
def hold(path):
    while not os.path.exists(path):
        time.sleep(0.05)
    return "released"

held = ray.put(b"x" * (64 * 1024 * 1024))  # 64 MiB in the object store while the task runs
print(ray.get(hold.remote(sys.argv[1])), flush=True)
"""


def test_utilisation_rises_while_a_task_runs_and_falls_after(state_dir: Path, tmp_path: Path) -> None:
    service = ClusterService(EKSRay(state_dir=str(state_dir), prices={"cpuHour": 1.0, "memoryGiBHour": 0.1}))
    spec = {
        "name": "busy",
        "autoscaling": {"enabled": False},
        "head": {"cpu": 1},
        "workerGroups": [{"groupName": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 1, "cpu": 1}],
    }
    service.create(spec)
    driver = None
    try:
        service.wait_ready("busy", timeout=READY_TIMEOUT)
        # What Ray schedules: 2 GiB per CPU on each node, not the machine's memory once per node.
        idle = wait_until(
            lambda: (r := service.accounting.report()["clusters"][0])["resources"]["cpu"] == 2 and r,
            "both nodes' resources in the report",
            timeout=60,
        )
        assert idle["resources"]["memoryGiB"] == pytest.approx(4.0)
        assert idle["used"]["cpu"] == 0
        # $1/CPU-h and $0.10/GiB-h on 2 CPUs and 4 GiB
        assert idle["dollarsPerHour"] == pytest.approx(2.4)

        release = tmp_path / "release"
        env = processes.with_import_path(
            {**os.environ, "RAY_ADDRESS": service.get("busy").address or "", **service.ray_auth_env("busy")}
        )
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(release)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        busy = wait_until(
            lambda: (
                (r := service.accounting.report()["clusters"][0])["used"]["cpu"] >= 1
                and r["used"]["objectStoreGiB"] >= 0.0625
                and r
            ),
            "the running task's CPU and the 64 MiB object in the report",
            timeout=120,
        )
        assert busy["utilization"]["cpu"] == pytest.approx(0.5)
        assert busy["used"]["memoryGiB"] == pytest.approx(1.0)
        node = next(n for n in service.get("busy").nodes if n.used.get("CPU"))
        assert node.utilization["CPU"] == 1.0 and node.used["memory"] == 1024**3

        release.touch()
        out, err = driver.communicate(timeout=120)
        assert "released" in out, err[-2000:]
        after = wait_until(
            lambda: (r := service.accounting.report()["clusters"][0])["used"]["cpu"] == 0 and r,
            "the CPU back to unused after the task",
            timeout=60,
        )
        assert after["accruedDollars"] > idle["accruedDollars"]
        assert after["resourceHours"]["cpu"] > 0
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait(10)
        service.delete("busy")
