"""The Ray dashboard's Prometheus, for the local backend, end to end: a real Prometheus (Debian's
package) started with the config `eksray rc prometheus-config` writes scrapes a real cluster's
nodes, and the dashboard, reached through our proxy, finds that Prometheus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eksray_jupyter.core import processes

from .waiting import eventually

pytestmark = pytest.mark.ray

PROMETHEUS = shutil.which("prometheus")
if PROMETHEUS is None and os.environ.get("CI"):
    raise RuntimeError("CI needs Debian's prometheus package (make test installs it)")


@pytest.fixture
def prometheus_port() -> int:
    return processes.free_port()


@pytest.fixture
def jp_server_config(state_dir: Path, prometheus_port: int) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"eksray_jupyter": True}},
        "EKSRay": {"state_dir": str(state_dir), "backend": "local"},
        "LocalBackend": {"prometheus_url": f"http://127.0.0.1:{prometheus_port}"},
        "EKSRayExtension": {"stream_heartbeat_seconds": 0},
    }


@pytest.fixture
def prometheus(services: Any, prometheus_port: int, tmp_path: Path) -> Iterator[str]:
    if PROMETHEUS is None:
        pytest.skip("Debian's prometheus package is not installed (make test installs it)")
    config = tmp_path / "prometheus.yml"
    config.write_text(services.clusters.backend.prometheus_config())
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        yield f"http://127.0.0.1:{prometheus_port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def query(base: str, promql: str) -> list[Any]:
    url = f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)["data"]["result"]
    except OSError:
        return []


async def test_prometheus_scrapes_a_cluster_and_the_dashboard_queries_it_through_the_proxy(
    jp_fetch: Any, services: Any, prometheus: str
) -> None:
    service = services.clusters
    service.create(
        {
            "name": "metered",
            "autoscaling": {"enabled": False},
            "workerGroups": [{"groupName": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 1}],
        }
    )
    try:
        await eventually(
            lambda: service.get("metered").phase.value == "ready",
            "the cluster ready",
            timeout=240,
            interval=0.5,
        )
        # Both nodes' metrics endpoints, found through the file Ray writes (no config change).
        await eventually(
            lambda: len([r for r in query(prometheus, 'up{job="ray"}') if r["value"][1] == "1"]) >= 2,
            "Prometheus scraping both nodes",
            timeout=120,
            interval=0.5,
        )
        # Ray's per-node metrics, once the nodes' agents have reported them.
        await eventually(
            lambda: query(prometheus, "ray_node_cpu_count"),
            "ray_node_* series scraped",
            timeout=120,
            interval=1,
        )

        async def healthy() -> bool:
            response = await jp_fetch(
                "eksray", "clusters", "metered", "dashboard", "api", "prometheus_health", raise_error=False
            )
            return response.code == 200 and json.loads(response.body).get("result") is True

        await eventually(healthy, "the dashboard finding Prometheus", timeout=60, interval=0.5)
    finally:
        service.delete("metered")
