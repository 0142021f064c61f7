"""End to end on real Ray, through the REST API: create, ready, scale, autoscaler event,
custom-resource task, restart, delete, nothing left running."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.models import Phase
from eksray_jupyter.core.service import ClusterService

from .waiting import eventually

pytestmark = pytest.mark.ray

READY_TIMEOUT = 240.0


@pytest.fixture
def backend_class() -> str:
    return "local"


async def api(jp_fetch: Any, *path: str, method: str = "GET", body: Any = None, **params: str) -> Any:
    response = await jp_fetch(
        "eksray", "api", *path, method=method, body=None if body is None else json.dumps(body), params=params
    )
    return json.loads(response.body) if response.body else None


def cluster_pids(state_dir: Path, name: str) -> set[int]:
    """Every process of the cluster, found the way the backend finds them (roots + temp dir)."""
    from eksray_jupyter.backends.local.state import ClusterDir
    from eksray_jupyter.core import processes

    cdir = ClusterDir(state_dir / "local" / "clusters" / name)
    record = cdir.read()
    assert record is not None
    refs = [record["head"]] + [n["process"] for n in cdir.read_nodes().values()]
    return {p.pid for p in processes.cluster_processes(refs, record["tempDir"])}


def stranger_env(tmp: Path) -> dict[str, str]:
    """Another process of the machine: no Ray settings, a home without Ray's default token file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "EKSRAY_"))}
    env["HOME"] = str(tmp)
    return env


def cli_env(state_dir: Path, name: str, base: dict[str, str]) -> dict[str, str]:
    """``base`` plus what ``eval "$(eksray rc env NAME)"`` exports, read through a shell."""
    script = f'eval "$({sys.executable} -m eksray_jupyter.cli rc env {name})" && env -0'
    out = subprocess.run(
        ["bash", "-c", script],
        env={**base, "EKSRAY_STATE_DIR": str(state_dir)},
        capture_output=True,
        timeout=60,
        check=True,
    )
    pairs = (item.split(b"=", 1) for item in out.stdout.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs}


def run_tagged_task(env: dict[str, str]) -> dict[str, Any]:
    """A driver in its own process (as a kernel would be) runs tasks that need {"tag": 1}; each
    prints a line, which Ray forwards to the driver: how many times did each arrive?"""
    code = """
import io, json, sys, time, ray
ray.init(logging_level="ERROR")
@ray.remote(num_cpus=0, resources={"tag": 1})
def where(i):
    print(f"eksray-marker-{i}", flush=True)
    return ray.get_runtime_context().get_node_id()
forwarded, real_stdout = io.StringIO(), sys.stdout
sys.stdout = forwarded  # Ray prints forwarded task output through sys.stdout
nodes = sorted(set(ray.get([where.remote(i) for i in range(6)])))
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not all(f"eksray-marker-{i}" in forwarded.getvalue() for i in range(6)):
    time.sleep(0.1)
# A second log monitor would send each line again within its poll interval (about a second):
# a quiet window shows there is none.
time.sleep(3)
sys.stdout = real_stdout
text = forwarded.getvalue()
copies = {i: text.count(f"eksray-marker-{i}") for i in range(6)}
print(json.dumps({"nodes": nodes, "copies": copies}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def driver_without_token(address: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print('connected')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)


def http_status(url: str, headers: dict[str, str]) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def environ_of(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None  # it exited meanwhile
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


async def test_local_cluster_life_cycle(
    jp_fetch: Any, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's credentials must reach no Ray process (head, workers from the bootstrap and
    # from Ray's autoscaler, and the processes Ray starts itself).
    secrets = {"JUPYTERHUB_API_TOKEN": "hub-secret", "AWS_SECRET_ACCESS_KEY": "aws-secret"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    spec = {
        "name": "e2e",
        "head": {"cpu": 1},
        "workerGroups": [
            {
                "groupName": "tagged",
                "replicas": 1,
                "minReplicas": 0,
                "maxReplicas": 2,
                "cpu": 1,
                "resources": {"tag": 1},
            }
        ],
        # Long idle timeout: the autoscaler must not remove workers while the test looks at them.
        "autoscaling": {"enabled": True, "idleTimeoutSeconds": 600},
    }
    created = await api(jp_fetch, "clusters", method="POST", body=spec)
    pids: set[int] = set()
    try:
        assert created["phase"] in ("starting", "pending")

        async def ready() -> Any:
            cluster = await api(jp_fetch, "clusters", "e2e")
            assert cluster["phase"] != "failed", cluster["reason"]
            return cluster if cluster["phase"] == "ready" else None

        cluster = await eventually(ready, "the cluster to be ready", timeout=READY_TIMEOUT, interval=0.5)
        assert cluster["workerGroups"][0]["ready"] == 1
        assert cluster["dashboardUrl"].endswith("/eksray/clusters/e2e/dashboard/")
        first_worker = next(n["id"] for n in cluster["nodes"] if n["kind"] == "worker")

        # The start-up timeline, read from Ray's own logs: every step, in order, the head's
        # registration before its worker's (a worker's raylet waits for the head's).
        steps = cluster["timeline"]
        assert [m["at"] for m in steps] == sorted(m["at"] for m in steps)
        assert steps[0]["step"] == "head-started" and steps[-1]["step"] == "ready"
        assert {"gcs-up", "dashboard-up", "worker-launched"} <= {m["step"] for m in steps}
        registered = [m["node"] for m in steps if m["step"] == "node-registered"]
        assert len(registered) == 2 and registered[1] == first_worker, steps

        # Scale: raising minReplicas is carried out by Ray's autoscaler, which says so.
        scaled = await api(
            jp_fetch,
            "clusters",
            "e2e",
            method="PATCH",
            body={"workerGroups": [{"groupName": "tagged", "minReplicas": 2}]},
        )
        assert scaled["workerGroups"][0]["minReplicas"] == 2

        async def two_ready() -> Any:
            cluster = await api(jp_fetch, "clusters", "e2e")
            alive = [n for n in cluster["nodes"] if n["kind"] == "worker" and n["state"] == "alive"]
            return cluster if len(alive) == 2 and cluster["phase"] == "ready" else None

        cluster = await eventually(
            two_ready, "a second worker from the autoscaler", timeout=READY_TIMEOUT, interval=0.5
        )
        workers = {n["id"] for n in cluster["nodes"] if n["kind"] == "worker"}
        assert first_worker in workers

        # Ray's temp dir is ours alone: made fresh (random name, 0700), not at a path another
        # user could have made first.
        from eksray_jupyter.backends.local.state import ClusterDir

        record = ClusterDir(state_dir / "local" / "clusters" / "e2e").read()
        assert record is not None
        temp = Path(record["tempRoot"])
        assert Path(record["tempDir"]).parent == temp
        assert temp.parent == Path("/tmp") and temp.name.startswith("eksray-") and len(temp.name) > 16
        mode, uid = await asyncio.to_thread(lambda: (temp.stat().st_mode & 0o777, temp.stat().st_uid))
        assert (mode, uid) == (0o700, os.getuid())

        environs = [env for pid in cluster_pids(state_dir, "e2e") if (env := environ_of(pid)) is not None]
        assert len(environs) >= 6  # GCS, raylets, dashboard, monitor, ... of three nodes
        leaked = {name for env in environs for name, value in env.items() if value in secrets.values()}
        assert leaked == set(), f"secrets in Ray processes' environment: {leaked}"

        # Ray's dashboard picks up the autoscaler's events from its log every few seconds: on a
        # busy machine that can be after the worker it announced has joined.
        async def autoscaler_added() -> Any:
            events = (await api(jp_fetch, "clusters", "e2e", "events"))["events"]
            return events if any(e["message"] == "Adding 1 node(s) of type tagged." for e in events) else None

        events = await eventually(autoscaler_added, "the autoscaler's event", timeout=60, interval=1)
        messages = [e["message"] for e in events]
        autoscaler = [e for e in events if e["source"] == "autoscaler"]
        assert all({"time", "severity", "message", "id"} <= set(e) for e in autoscaler)
        assert any("joined the cluster" in m for m in messages)
        assert any(e["reason"] == "Scaled" for e in events)
        since = events[-1]["timestamp"]
        assert (await api(jp_fetch, "clusters", "e2e", "events", since=str(since)))["events"] == []

        # Ray's token authentication: another process of the machine (another user's, or one
        # without the token file) can neither connect a driver nor use the dashboard's API.
        stranger = stranger_env(tmp_path)
        refused = asyncio.create_task(asyncio.to_thread(driver_without_token, cluster["address"], stranger))
        token_file = Path(record["authTokenFile"])
        assert token_file.parent == state_dir / "local" / "clusters" / "e2e"
        mode, token = await asyncio.to_thread(
            lambda: (token_file.stat().st_mode & 0o777, token_file.read_text())
        )
        assert mode == 0o600
        assert len(token) >= 32 and token not in json.dumps(record)
        direct = f"http://127.0.0.1:{record['ports']['dashboard']}/api/jobs/"
        assert await asyncio.to_thread(http_status, direct, {}) == 401
        assert await asyncio.to_thread(http_status, direct, {"X-Ray-Authorization": "Bearer guess"}) == 403
        # Our proxy presents the token (and ignores one the browser sends).
        proxied = await jp_fetch(
            "eksray",
            "clusters",
            "e2e",
            "dashboard",
            "api",
            "version",
            headers={"X-Ray-Authorization": "Bearer guess"},
        )
        assert proxied.code == 200 and "ray_version" in json.loads(proxied.body)
        # The token is in no Ray process's environment or command line: only its path is.
        for pid in cluster_pids(state_dir, "e2e"):
            env = environ_of(pid) or {}
            assert token not in " ".join(env.values()), f"token in the environment of {pid}"
            with contextlib.suppress(psutil.Error):
                assert token not in " ".join(psutil.Process(pid).cmdline())
        assert any(env.get("RAY_AUTH_TOKEN_PATH") == str(token_file) for env in environs)

        # Custom resources reach the group's nodes: the task runs only there. The driver
        # connects with what `eksray rc env` exports (the address and the token file's path).
        tagged = run_tagged_task(await asyncio.to_thread(cli_env, state_dir, "e2e", stranger))
        ran_on = set(tagged["nodes"])
        assert ran_on and ran_on <= workers
        # One log monitor for the machine: each task's output reaches the driver once.
        assert tagged["copies"] == {str(i): 1 for i in range(6)}, tagged["copies"]
        without = await refused
        assert without.returncode != 0 and "connected" not in without.stdout
        assert "Authentication token is missing or incorrect" in without.stderr, without.stderr[-2000:]

        # A restarted server (a new backend on the same state) finds the cluster, still ready.
        again = ClusterService(EKSRay(state_dir=str(state_dir)))
        [found] = again.list()
        assert found.name == "e2e"
        assert found.phase == Phase.READY
        assert {n.id for n in found.nodes if n.kind == "worker"} == workers

        pids = cluster_pids(state_dir, "e2e")
        assert len(pids) >= 6  # ray start, gcs, raylets, dashboard, ... of head and 2 workers
    finally:
        pids = pids or cluster_pids(state_dir, "e2e")
        await jp_fetch("eksray", "api", "clusters", "e2e", method="DELETE")
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"processes left running: {alive}"
    assert not (state_dir / "local" / "clusters" / "e2e").exists()
    assert (await api(jp_fetch, "clusters"))["clusters"] == []


async def test_dead_head_is_reported_failed_and_cleaned_up(jp_fetch: Any, state_dir: Path) -> None:
    await api(jp_fetch, "clusters", method="POST", body={"name": "fragile", "workerGroups": []})
    try:

        async def ready() -> Any:
            return (await api(jp_fetch, "clusters", "fragile"))["phase"] == "ready"

        await eventually(ready, "the head to be ready", timeout=READY_TIMEOUT, interval=0.5)
        record = json.loads((state_dir / "local" / "clusters" / "fragile" / "cluster.json").read_text())
        os.kill(record["head"]["pid"], signal.SIGKILL)

        async def failed() -> Any:
            cluster = await api(jp_fetch, "clusters", "fragile")
            return cluster if cluster["phase"] == "failed" else None

        cluster = await eventually(failed, "the cluster to be reported failed", timeout=120, interval=0.5)
        assert "head node" in cluster["reason"]
        events = (await api(jp_fetch, "clusters", "fragile", "events"))["events"]
        assert any(e["reason"] == "Failed" and e["severity"] == "error" for e in events)
        pids = cluster_pids(state_dir, "fragile")
    finally:
        await jp_fetch("eksray", "api", "clusters", "fragile", method="DELETE")
    assert [
        p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ] == []


def bootstrap_of(cdir: Path) -> psutil.Process:
    """The cluster's detached bootstrap, found by its command line."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "eksray_jupyter.backends.local.bootstrap" in cmdline and str(cdir) in cmdline:
            return proc
    raise AssertionError(f"no bootstrap process for {cdir}")


def test_a_delete_stops_the_bootstrap_too(state_dir: Path) -> None:
    """Deleted before it was ready: the bootstrap (still waiting to start the first workers) is
    one of the cluster's processes and goes with it, and the name can be used again."""
    service = ClusterService(EKSRay(state_dir=str(state_dir)))
    cdir = state_dir / "local" / "clusters" / "early"
    request = {
        "name": "early",
        "autoscaling": {"enabled": False},
        "workerGroups": [{"groupName": "cpu", "replicas": 1, "maxReplicas": 1}],
    }
    service.create(request)
    bootstrap = bootstrap_of(cdir)
    try:
        # Held where it is (as on a busy machine), so it cannot exit on its own when the head goes.
        bootstrap.send_signal(signal.SIGSTOP)
        from eksray_jupyter.core.net import port_open

        from .waiting import wait_until

        record = json.loads((cdir / "cluster.json").read_text())
        wait_until(lambda: port_open(record["ports"]["gcs"], timeout=0.2), "the head's GCS", timeout=120)
        pids = cluster_pids(state_dir, "early")
        service.delete("early")
        assert not bootstrap.is_running() or bootstrap.status() == psutil.STATUS_ZOMBIE
        assert [
            p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ] == []
        assert not cdir.exists()
        service.create({**request, "workerGroups": []})
    finally:
        with contextlib.suppress(psutil.Error):
            bootstrap.kill()
        with contextlib.suppress(Exception):
            service.delete("early")
    assert service.list() == []


def test_a_double_scale_leaves_exactly_the_specs_workers(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two scale requests at once (a double click) for 2 workers: 2 workers, not 4."""
    import threading

    from eksray_jupyter.backends.local import workers
    from eksray_jupyter.backends.local.state import ClusterDir

    from .waiting import wait_until

    service = ClusterService(EKSRay(state_dir=str(state_dir)))
    service.create(
        {
            "name": "clicks",
            "autoscaling": {"enabled": False},
            "workerGroups": [{"groupName": "cpu", "replicas": 0, "minReplicas": 0, "maxReplicas": 2}],
        }
    )
    cdir = ClusterDir(state_dir / "local" / "clusters" / "clicks")
    try:
        service.wait_ready("clicks", timeout=READY_TIMEOUT)
        # Each request starts its workers once both have looked at how many there are (or,
        # when one waits for the other, after a while).
        both_looked = threading.Barrier(2, timeout=3)
        spawn = workers.spawn

        def spawn_after_both_looked(*args: Any) -> Any:
            with contextlib.suppress(threading.BrokenBarrierError):
                both_looked.wait()
            return spawn(*args)

        monkeypatch.setattr(workers, "spawn", spawn_after_both_looked)
        request = {"workerGroups": [{"groupName": "cpu", "replicas": 2}]}
        errors: list[BaseException] = []

        def click() -> None:
            try:
                service.scale("clicks", request)
            except BaseException as e:
                errors.append(e)

        clicks = [threading.Thread(target=click) for _ in range(2)]
        for t in clicks:
            t.start()
        for t in clicks:
            t.join(120)
        assert errors == []
        assert len(workers.live_workers(cdir)) == 2

        def two_alive() -> Any:
            cluster = service.get("clicks")
            alive = [n for n in cluster.nodes if n.kind == "worker" and n.state == "alive"]
            return cluster if len(alive) == 2 and cluster.phase == Phase.READY else None

        wait_until(two_alive, "two workers in Ray", timeout=READY_TIMEOUT, interval=0.5)
        assert len(workers.live_workers(cdir)) == 2
    finally:
        pids = cluster_pids(state_dir, "clicks") if cdir.exists() else set()
        service.delete("clicks")
    assert [
        p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ] == []


def test_a_cluster_whose_dashboard_died_stays_ready_and_usable(state_dir: Path) -> None:
    """Ready means a driver can use it: without the dashboard, the GCS log says which nodes are up."""
    from eksray_jupyter.backends.local.status import DASHBOARD_DOWN
    from eksray_jupyter.core import processes

    from .waiting import wait_until

    service = ClusterService(EKSRay(state_dir=str(state_dir)))
    spec = {
        "name": "nodash",
        "autoscaling": {"enabled": False},
        "workerGroups": [{"groupName": "tagged", "replicas": 1, "minReplicas": 0, "maxReplicas": 1,
                          "resources": {"tag": 1}}],
    }  # fmt: skip
    service.create(spec)
    try:
        service.wait_ready("nodash", timeout=READY_TIMEOUT)
        dashboards = [
            psutil.Process(pid) for pid in cluster_pids(state_dir, "nodash")
            if "dashboard/dashboard.py" in " ".join(psutil.Process(pid).cmdline())
        ]  # fmt: skip
        assert len(dashboards) == 1
        processes.terminate(dashboards, grace=5)

        cluster = wait_until(
            lambda: (c := service.get("nodash")).reason == DASHBOARD_DOWN and c,
            "the cluster to say its dashboard is down",
            timeout=60,
        )
        assert cluster.phase == Phase.READY and not cluster.dashboard_available
        assert sorted((n.kind, n.state) for n in cluster.nodes) == [("head", "alive"), ("worker", "alive")]
        # ... and a driver uses it, its worker included.
        driver = (
            "import ray; ray.init(); "
            "print('ON', ray.get(ray.remote(lambda: ray.get_runtime_context().get_node_id())"
            ".options(num_cpus=0, resources={'tag': 1}).remote()))"
        )
        env = processes.with_import_path(
            {**os.environ, "RAY_ADDRESS": cluster.address or "", **service.ray_auth_env("nodash")}
        )
        out = subprocess.run(
            [sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=180
        )
        worker = next(n.id for n in cluster.nodes if n.kind == "worker")
        assert f"ON {worker}" in out.stdout, out.stderr[-2000:]
    finally:
        service.delete("nodash")
