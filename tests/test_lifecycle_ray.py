"""Idle clusters on real Ray, through the running server (issue 14): the server's keeper suspends
an idle cluster, leaves busy ones alone, resumes on request, and acts on lifetimes.

The keeper runs every 2 s here and warns 15 s before acting; timeouts are the schema's
smallest (1 minute) or fractions of an hour. Each test prints what it measured (the delay from
the moment a cluster was due to its suspension; suspensions of busy clusters, goal 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from .test_local_e2e import api, cli_env, cluster_pids, stranger_env
from .waiting import eventually

pytestmark = pytest.mark.ray

READY_TIMEOUT = 240.0
WARNING_S = 15.0


@pytest.fixture
def backend_class() -> str:
    return "local"


@pytest.fixture
def eksray_settings() -> dict[str, Any]:
    return {"lifecycle_interval_seconds": 2.0, "lifecycle_warning_minutes": WARNING_S / 60}


def head_only(name: str, **lifecycle: Any) -> dict[str, Any]:
    return {"name": name, "head": {"cpu": 1}, "workerGroups": [], "lifecycle": lifecycle}


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def phase_of(jp_fetch: Any, name: str) -> str | None:
    listed = await api(jp_fetch, "clusters")
    return next((c["phase"] for c in listed["clusters"] if c["name"] == name), None)


async def ready(jp_fetch: Any, *names: str) -> None:
    for name in names:
        await eventually(
            lambda n=name: _is(jp_fetch, n, "ready"), f"{name} ready", timeout=READY_TIMEOUT, interval=0.5
        )


async def _is(jp_fetch: Any, name: str, phase: str | None) -> bool:
    return await phase_of(jp_fetch, name) == phase


async def reasons(jp_fetch: Any, name: str) -> list[tuple[str, str, float]]:
    events = (await api(jp_fetch, "clusters", name, "events"))["events"]
    return [(e["reason"], e["message"], e["timestamp"]) for e in events if e["reason"]]


def run_driver(env: dict[str, str], code: str, timeout: float = 180) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=True, env=env
    )
    return out.stdout.strip().splitlines()[-1]


async def test_idle_cluster_is_suspended_resumed_and_lifetimes_act(
    jp_fetch: Any, state_dir: Path, tmp_path: Path
) -> None:
    await api(jp_fetch, "clusters", method="POST", body=head_only("idle", idleTimeoutMinutes=1))
    await api(
        jp_fetch,
        "clusters",
        method="POST",
        body=head_only("ttl", idleTimeoutMinutes=1, suspendedTtlHours=0.01),  # 36 s suspended
    )
    await api(jp_fetch, "clusters", method="POST", body=head_only("short", maxLifetimeHours=0.02))  # 72 s
    await ready(jp_fetch, "idle", "ttl", "short")
    created = {c["name"]: seconds(c["createdAt"]) for c in (await api(jp_fetch, "clusters"))["clusters"]}
    pids = cluster_pids(state_dir, "idle")

    # Idle: warned, then suspended within the timeout + 30 s; no process of it is left.
    await eventually(
        lambda: _is(jp_fetch, "idle", "suspended"), "idle suspended", timeout=60 + 30 + 60, interval=1
    )
    events = await reasons(jp_fetch, "idle")
    suspended_at = next(t for r, _, t in events if r == "Suspending")
    warned = [(m, t) for r, m, t in events if r == "WillSuspend"]
    assert warned and warned[0][1] <= suspended_at - WARNING_S + 1
    assert any(
        "idle for" in m and "no Ray task, actor or job" in m for r, m, _ in events if r == "Suspending"
    )
    delay = suspended_at - (created["idle"] + 60)
    print(f"\nidle -> suspended: {delay:.1f} s after the timeout was due (warning {WARNING_S:.0f} s)")
    assert delay < 30
    assert not [
        p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    cluster = await api(jp_fetch, "clusters", "idle")
    assert cluster["suspendedAt"] and cluster["nodes"] == [] and cluster["address"] is None

    # Resume: the same name and spec; a driver runs a task on it.
    resumed = await api(jp_fetch, "clusters", "idle", "resume", method="POST", body={})
    assert resumed["phase"] in ("starting", "ready")
    await ready(jp_fetch, "idle")
    env = cli_env(state_dir, "idle", stranger_env(tmp_path))
    code = "import ray; ray.init(logging_level='ERROR'); print(ray.get(ray.remote(lambda: 41 + 1).remote()))"
    assert run_driver(env, code) == "42"

    # Suspended for its TTL: deleted. Past its lifetime: deleted (busy or not).
    await eventually(lambda: _is(jp_fetch, "ttl", None), "ttl deleted", timeout=60 + 30 + 36 + 60, interval=1)
    await eventually(lambda: _is(jp_fetch, "short", None), "short deleted", timeout=72 + 30 + 60, interval=1)
    assert not (state_dir / "local" / "clusters" / "ttl").exists()
    await api(jp_fetch, "clusters", "idle", method="DELETE")


async def test_work_busy_kernels_and_keepalives_keep_clusters_running(
    jp_fetch: Any, jp_serverapp: Any, state_dir: Path, tmp_path: Path
) -> None:
    for name in ("task", "kernel", "kept"):
        await api(jp_fetch, "clusters", method="POST", body=head_only(name, idleTimeoutMinutes=1))
    await ready(jp_fetch, "task", "kernel", "kept")

    # A driver with a long task (its process stays connected while the task runs).
    env = cli_env(state_dir, "task", stranger_env(tmp_path))
    code = "import ray, time; ray.init(logging_level='ERROR'); ray.get(ray.remote(lambda: time.sleep(150)).remote())"
    driver = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=env)

    # A kernel the server started, connected to "kernel" and busy with a long cell.
    km = jp_serverapp.kernel_manager
    await api(jp_fetch, "clusters", "kernel")  # exists
    service = jp_serverapp.web_app.settings["eksray_services"].clusters
    service.use("kernel")
    kernel_id = await km.start_kernel()
    client = km.get_kernel(kernel_id).client()
    client.start_channels()
    try:
        await eventually(lambda: service.kernel_bindings.cluster_of(kernel_id) == "kernel", "kernel bound")
        client.execute("import time; time.sleep(150)")
        await eventually(
            lambda: km.get_kernel(kernel_id).execution_state == "busy", "kernel busy", timeout=60
        )

        started = time.monotonic()
        suspended: list[str] = []
        while time.monotonic() - started < 60 + WARNING_S + 30:
            await api(jp_fetch, "clusters", "kept", "keepalive", method="POST", body={})
            for name in ("task", "kernel", "kept"):
                if await phase_of(jp_fetch, name) != "ready":
                    suspended.append(name)
            await asyncio.sleep(5)  # the keep-alive's pace, as a panel's button would be pressed
        print(
            f"\nfalse suspensions in {time.monotonic() - started:.0f} s of steady work: {len(set(suspended))}"
        )
        assert suspended == []
        for name in ("task", "kernel", "kept"):
            assert not [r for r, _, _ in await reasons(jp_fetch, name) if r in ("WillSuspend", "Suspending")]
    finally:
        client.stop_channels()
        await km.shutdown_kernel(kernel_id, now=True)
        with contextlib.suppress(ProcessLookupError):
            driver.kill()
        await asyncio.wait_for(driver.wait(), 30)
        for name in ("task", "kernel", "kept"):
            await api(jp_fetch, "clusters", name, method="DELETE")
