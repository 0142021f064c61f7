"""Kernels connected to the active cluster: the provisioner, and the VS Code path.

VS Code's remote Jupyter uses only the server's REST API (sessions, kernels) and the
kernel websocket, so the end-to-end tests use exactly those: POST /api/sessions, then
execute requests over /api/kernels/{id}/channels. The fast tests run on the fake
backend; ``-m ray`` runs the same path on a real local Ray cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import KernelProvisionerFactory

import eksray_jupyter.kernel as kernel_module
from eksray_jupyter.core import processes
from eksray_jupyter.core.service import ClusterService
from eksray_jupyter.kernel import PROVISIONER_NAME
from eksray_jupyter.kernel.provisioner import EXTENSION_ARG, EKSRayProvisioner, with_extension
from tests.fakes import isolate_env, make_service

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 300.0


@pytest.fixture(autouse=True)
def fresh_kernel_setup(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The provisioner factory is a process-wide singleton: give each test its own."""
    isolate_env(monkeypatch)
    KernelProvisionerFactory.clear_instance()
    yield
    KernelProvisionerFactory.clear_instance()
    kernel_module._context = None


@pytest.fixture
def listening() -> Iterator[str]:
    """An address that accepts TCP connections, standing in for a live Ray GCS."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"127.0.0.1:{s.getsockname()[1]}"


# --- the command line ------------------------------------------------------------------------------


def test_only_ipykernel_commands_get_the_extension() -> None:
    ipy = ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "/tmp/k.json"]
    assert with_extension(ipy) == [*ipy, EXTENSION_ARG]
    assert with_extension([*ipy, EXTENSION_ARG]) == [*ipy, EXTENSION_ARG]
    assert with_extension(["python", "/site/ipykernel_launcher.py", "-f", "c.json"])[-1] == EXTENSION_ARG
    assert with_extension(["python", "-m", "ipykernel", "-f", "c.json"])[-1] == EXTENSION_ARG
    other = ["node", "kernel.js", "{connection_file}"]
    assert with_extension(other) == other


# --- finding the active cluster cheaply --------------------------------------------------------------


def count_backend_calls(svc: ClusterService, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    for method in ("get_cluster", "list_clusters"):
        original = getattr(svc.backend, method)

        def counted(*args: Any, _original: Any = original, _name: str = method) -> Any:
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(svc.backend, method, counted)
    return calls


def test_a_chosen_live_cluster_costs_no_backend_call(
    tmp_path: Path, listening: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = make_service(tmp_path, gcs_address=listening)
    svc.create({"name": "t1"})
    svc.use("t1")
    calls = count_backend_calls(svc, monkeypatch)
    started = time.perf_counter()
    assert svc.active_connection()[:2] == ("t1", listening)
    elapsed = time.perf_counter() - started
    assert calls == []
    assert elapsed < 0.5, f"{elapsed:.3f} s"


def test_without_a_live_recorded_address_the_backend_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = make_service(tmp_path)  # the fake's addresses are closed ports
    assert svc.active_connection() is None
    svc.create({"name": "old"})
    time.sleep(0.01)
    svc.create({"name": "new"})
    calls = count_backend_calls(svc, monkeypatch)
    assert svc.active_connection()[:2] == ("new", svc.get("new").address)  # nothing chosen: most recent ready
    assert calls[0] == "list_clusters"
    svc.use("old")
    assert svc.active_connection()[:2] == ("old", svc.get("old").address)
    svc.delete("old")
    assert svc.active_connection()[:2] == ("new", svc.get("new").address)
    assert make_service(tmp_path, fail=True).active_connection() is None  # failed: no address


def test_a_chosen_cluster_that_failed_gives_no_address(tmp_path: Path) -> None:
    svc = make_service(tmp_path)
    svc.create({"name": "t1"})
    svc.use("t1")
    assert make_service(tmp_path, fail=True).active_connection() is None


# --- the provisioner ---------------------------------------------------------------------------------


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AsyncKernelManager]:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    km = AsyncKernelManager(kernel_name="python3")
    yield km
    km.cleanup_connection_file()


async def pre_launch(km: AsyncKernelManager, env: dict[str, str], **settings: Any) -> dict[str, Any]:
    provisioner = EKSRayProvisioner(kernel_id="k1", kernel_spec=km.kernel_spec, parent=km, **settings)
    return await provisioner.pre_launch(env=env, extra_arguments=[])


async def test_pre_launch_adds_the_extension_config_and_server_url(
    tmp_path: Path, manager: AsyncKernelManager
) -> None:
    svc = make_service(tmp_path)
    kernel_module.configure(svc, lambda: "http://localhost:8888/base/")
    env = {"PATH": os.environ["PATH"]}
    kw = await pre_launch(manager, env)
    assert kw["cmd"][-1] == EXTENSION_ARG and "ipykernel_launcher" in " ".join(kw["cmd"])
    assert "RAY_ADDRESS" not in kw["env"] and "EKSRAY_CLUSTER" not in kw["env"]
    assert kw["env"]["JUPYTER_SERVER_URL"] == "http://localhost:8888/base/"
    # A driver imports ray: the kernel gets the import path's stand-ins (test_import_path.py).
    assert kw["env"]["PYTHONPATH"] == processes.IMPORT_PATH
    sent = json.loads(kw["env"]["EKSRAY_CONFIG"])
    assert (
        sent["EKSRay"]["state_dir"] == str(tmp_path)
        and sent["EKSRay"]["backend"] == "tests.fakes.FakeBackend"
    )
    assert sent["FakeBackend"]["start_seconds"] == 0.0


async def test_pre_launch_sets_ray_address_without_touching_the_saved_env(
    tmp_path: Path, manager: AsyncKernelManager, listening: str
) -> None:
    svc = make_service(tmp_path, gcs_address=listening)
    kernel_module.configure(svc)
    svc.create({"name": "t1"})
    svc.use("t1")
    env = {"PATH": os.environ["PATH"]}
    kw = await pre_launch(manager, env)
    assert (kw["env"]["RAY_ADDRESS"], kw["env"]["EKSRAY_CLUSTER"]) == (listening, "t1")
    assert "JUPYTER_SERVER_URL" not in kw["env"]
    # A restart re-launches with the saved arguments: they must not carry this launch's address.
    assert env == {"PATH": os.environ["PATH"]}


async def test_kernels_get_the_token_files_path_never_the_token(
    tmp_path: Path, manager: AsyncKernelManager, listening: str
) -> None:
    svc = make_service(tmp_path, gcs_address=listening, ray_token_auth=True)
    kernel_module.configure(svc)
    svc.create({"name": "t1"})
    svc.use("t1")
    token_file = svc.backend.ray_auth_token_file(svc.owner, "t1")
    token = token_file.read_text()
    kw = await pre_launch(manager, {"PATH": os.environ["PATH"]})
    assert kw["env"]["RAY_AUTH_MODE"] == "token"
    assert kw["env"]["RAY_AUTH_TOKEN_PATH"] == str(token_file)
    assert "RAY_AUTH_TOKEN" not in kw["env"]
    assert not any(token in value for value in kw["env"].values())
    assert token not in svc._active_file.read_text()  # the active cluster's record: the path only


async def test_a_slow_or_broken_backend_never_delays_or_breaks_a_kernel_start(
    tmp_path: Path, manager: AsyncKernelManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = make_service(tmp_path)
    svc.create({"name": "t1"})
    kernel_module.configure(svc)
    stuck = threading.Event()  # a backend that never answers (until the test ends)
    monkeypatch.setattr(svc.backend, "list_clusters", lambda owner: stuck.wait(120) and [])
    started = time.perf_counter()
    try:
        kw = await pre_launch(manager, {"PATH": os.environ["PATH"]}, resolve_timeout=0.3)
    finally:
        stuck.set()
    assert time.perf_counter() - started < 60  # given up after resolve_timeout, not after the backend
    assert "RAY_ADDRESS" not in kw["env"] and kw["cmd"][-1] == EXTENSION_ARG

    def broken(owner: str) -> list[Any]:
        raise RuntimeError("kubernetes is down")

    monkeypatch.setattr(svc.backend, "list_clusters", broken)
    kw = await pre_launch(manager, {"PATH": os.environ["PATH"]})
    assert "RAY_ADDRESS" not in kw["env"]


def test_pre_launch_imports_no_ray(tmp_path: Path) -> None:
    code = f"""
import asyncio, os, sys
from jupyter_client.manager import AsyncKernelManager
from eksray_jupyter import kernel
from eksray_jupyter.kernel.provisioner import EKSRayProvisioner
from tests.fakes import make_service
svc = make_service({str(tmp_path / "state")!r})
svc.create({{"name": "t1"}})
kernel.configure(svc)
km = AsyncKernelManager(kernel_name="python3")
p = EKSRayProvisioner(kernel_id="k", kernel_spec=km.kernel_spec, parent=km)
kw = asyncio.run(p.pre_launch(env=dict(os.environ), extra_arguments=[]))
km.cleanup_connection_file()
print("ADDRESS", kw["env"]["RAY_ADDRESS"])
print("RAY", "ray" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ADDRESS 127.0.0.1:" in out.stdout and "RAY False" in out.stdout


# --- through a Jupyter server: REST + kernel websocket (what VS Code uses) ---------------------------


@pytest.fixture
def eksray_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "eksray-state"
    path.mkdir()
    # Not in the environment: kernels must learn the state dir from the server ($EKSRAY_CONFIG).
    monkeypatch.delenv("EKSRAY_STATE_DIR", raising=False)
    return path


@pytest.fixture
def backend_class() -> str:
    return "tests.fakes.FakeBackend"


@pytest.fixture
def extra_config() -> dict[str, Any]:
    return {}


@pytest.fixture
def jp_server_config(eksray_state: Path, backend_class: str, extra_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"eksray_jupyter": True}},
        "EKSRay": {"state_dir": str(eksray_state), "backend": backend_class},
        **extra_config,
    }


@pytest.fixture
def server_service(jp_serverapp: Any) -> ClusterService:
    return jp_serverapp.web_app.settings["eksray_services"].clusters


@dataclass
class Execution:
    reply: dict[str, Any]
    messages: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return self.reply["status"] == "ok"

    def stream(self, name: str) -> str:
        return "".join(
            m["content"]["text"]
            for m in self.messages
            if m["msg_type"] == "stream" and m["content"]["name"] == name
        )

    @property
    def bundles(self) -> list[dict[str, Any]]:
        kinds = ("display_data", "update_display_data", "execute_result")
        return [m["content"]["data"] for m in self.messages if m["msg_type"] in kinds]

    def text(self) -> str:
        return self.stream("stdout") + "".join(b.get("text/plain", "") for b in self.bundles)

    def explain(self) -> str:
        return json.dumps(
            {"reply": self.reply, "stdout": self.stream("stdout"), "stderr": self.stream("stderr")}
        )[:4000]


class KernelChannel:
    """The kernel websocket as a client like VS Code speaks it (JSON messages, v5 protocol)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.session = uuid.uuid4().hex

    @classmethod
    async def open(cls, jp_ws_fetch: Any, kernel_id: str) -> KernelChannel:
        return cls(await jp_ws_fetch("api", "kernels", kernel_id, "channels"))

    async def execute(self, code: str, timeout: float = 120.0) -> Execution:
        msg_id = uuid.uuid4().hex
        request = {
            "header": {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "session": self.session,
                "username": "vscode",
                "version": "5.3",
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            "channel": "shell",
            "buffers": [],
        }
        await self.ws.write_message(json.dumps(request))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reply: dict[str, Any] | None = None
        idle = False
        messages: list[dict[str, Any]] = []
        while reply is None or not idle:
            raw = await asyncio.wait_for(self.ws.read_message(), max(0.1, deadline - loop.time()))
            if raw is None:
                raise AssertionError(f"the kernel websocket closed while running {code!r}")
            if isinstance(raw, bytes):
                continue
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "execute_reply":
                reply = msg["content"]
            elif msg["msg_type"] == "status":
                idle = msg["content"]["execution_state"] == "idle"
            else:
                messages.append(msg)
        return Execution(reply, messages)

    def close(self) -> None:
        self.ws.close()


async def start_session(jp_fetch: Any, path: str) -> str:
    body = {"path": path, "name": path, "type": "notebook", "kernel": {"name": "python3"}}
    response = await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))
    return json.loads(response.body)["kernel"]["id"]


ENV_CELL = "import os, sys; print(os.environ.get('RAY_ADDRESS'), os.environ.get('EKSRAY_CLUSTER'), 'ray' in sys.modules)"


async def test_the_server_makes_our_provisioner_the_default(jp_serverapp: Any) -> None:
    factory = KernelProvisionerFactory.instance()
    assert factory.default_provisioner_name == PROVISIONER_NAME
    assert factory.provisioners[PROVISIONER_NAME].load() is EKSRayProvisioner


@pytest.mark.parametrize(
    "extra_config", [{"KernelProvisionerFactory": {"default_provisioner_name": "local-provisioner"}}]
)
async def test_an_admins_provisioner_choice_wins(jp_serverapp: Any) -> None:
    assert KernelProvisionerFactory.instance().default_provisioner_name == "local-provisioner"


async def test_kernels_follow_the_active_cluster_across_restarts(
    jp_serverapp: Any, jp_fetch: Any, jp_ws_fetch: Any, server_service: ClusterService
) -> None:
    svc = server_service
    kernel_id = await start_session(jp_fetch, "before.ipynb")
    channel = await KernelChannel.open(jp_ws_fetch, kernel_id)
    # No cluster yet: no RAY_ADDRESS (a bare ray.init() keeps its default), but the magics are loaded.
    result = await channel.execute(ENV_CELL)
    assert result.stream("stdout").split() == ["None", "None", "False"], result.explain()
    assert jp_serverapp.kernel_manager.get_kernel(kernel_id).provisioner.__class__ is EKSRayProvisioner

    # Creating from this kernel acts on the server's backend and state dir, makes the cluster active
    # and points this kernel at it.
    result = await channel.execute("%eksray up t1 --workers 1 --wait")
    assert result.ok, result.explain()
    assert "t1 is ready and active" in result.text()
    t1 = svc.get("t1")
    assert svc.active_name() == "t1"
    result = await channel.execute(ENV_CELL)
    assert result.stream("stdout").split() == [t1.address, "t1", "False"]

    # A kernel started now has the address before its first cell, and %eksray without %load_ext.
    other_id = await start_session(jp_fetch, "after.ipynb")
    other = await KernelChannel.open(jp_ws_fetch, other_id)
    result = await other.execute(ENV_CELL)
    assert result.stream("stdout").split() == [t1.address, "t1", "False"]
    result = await other.execute("%eksray list")
    assert result.ok, result.explain()
    (listing,) = result.bundles
    assert "<table" in listing["text/html"] and listing["text/plain"].splitlines()[1].startswith("*  t1")
    result = await other.execute("%eksray dashboard")
    expected = f"{jp_serverapp.connection_url}eksray/clusters/t1/dashboard/"
    assert result.bundles[0]["text/plain"] == f"Ray dashboard of t1: {expected}"

    # A restart launches again, so it picks up whatever is active then.
    svc.create({"name": "t2"})
    svc.use("t2")
    other.close()
    await jp_fetch("api", "kernels", other_id, "restart", method="POST", body="{}")
    other = await KernelChannel.open(jp_ws_fetch, other_id)
    result = await other.execute(ENV_CELL + "; print(get_ipython().find_line_magic('eksray') is not None)")
    assert result.stream("stdout").split() == [svc.get("t2").address, "t2", "False", "True"]

    svc.delete("t1")
    svc.delete("t2")
    other.close()
    await jp_fetch("api", "kernels", other_id, "restart", method="POST", body="{}")
    other = await KernelChannel.open(jp_ws_fetch, other_id)
    result = await other.execute(ENV_CELL)
    assert result.stream("stdout").split() == ["None", "None", "False"]
    other.close()
    channel.close()


async def test_magic_errors_reach_the_client_as_one_line(
    jp_fetch: Any, jp_ws_fetch: Any, jp_serverapp: Any
) -> None:
    channel = await KernelChannel.open(jp_ws_fetch, await start_session(jp_fetch, "errors.ipynb"))
    result = await channel.execute("%eksray status nope")
    assert result.reply["status"] == "error"  # so "run all" stops here
    stderr = result.stream("stderr").strip().splitlines()
    assert stderr == [
        "UsageError: %eksray status: No cluster named 'nope'. List your clusters to see their names."
    ]
    result = await channel.execute("%eksray up --workers lots")
    assert "argument --workers: 'lots' is not a whole number" in result.stream("stderr")
    result = await channel.execute("print('kernel alive')")
    assert result.ok and result.stream("stdout") == "kernel alive\n"  # argparse did not end the kernel
    channel.close()


# --- the VS Code path on real Ray ----------------------------------------------------------------------


def cluster_processes(state_dir: Path, name: str) -> list[psutil.Process]:
    """Every process of a local cluster, found the way the backend finds them."""
    from eksray_jupyter.backends.local.state import ClusterDir
    from eksray_jupyter.core import processes

    cdir = ClusterDir(state_dir / "local" / "clusters" / name)
    record = cdir.read()
    if record is None:
        return []
    refs = [record["head"]] + [n["process"] for n in cdir.read_nodes().values()]
    return list(processes.cluster_processes([r for r in refs if r], record["tempDir"]))


def running(pids: set[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def diagnose(svc: ClusterService, state_dir: Path, name: str) -> str:
    """The cluster's events and the last lines of its logs, for a failure message."""
    lines = ["", "events:"]
    try:
        lines += [f"  {e.source} {e.reason}: {e.message}" for e in svc.events(name)]
    except Exception as e:
        lines.append(f"  (none: {e})")
    for log in sorted((state_dir / "local" / "clusters" / name / "logs").glob("*.log")):
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        lines += [f"{log.name}:", *(f"  {line[:300]}" for line in tail)]
    return "\n".join(lines)


def wait_gone(pids: set[int], timeout: float) -> list[int]:
    """The pids still running after up to ``timeout`` seconds of waiting for them to exit."""
    deadline = time.monotonic() + timeout
    while (alive := running(pids)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return alive


@pytest.mark.ray
@pytest.mark.parametrize("backend_class", ["local"])
async def test_vscode_path_on_real_ray(
    jp_serverapp: Any, jp_fetch: Any, jp_ws_fetch: Any, eksray_state: Path, server_service: ClusterService
) -> None:
    channel: KernelChannel | None = None
    try:
        kernel_id = await start_session(jp_fetch, "vscode.ipynb")
        channel = await KernelChannel.open(jp_ws_fetch, kernel_id)
        result = await channel.execute(ENV_CELL)
        assert result.stream("stdout").split() == ["None", "None", "False"], result.explain()

        result = await channel.execute(
            f"%eksray up t1 --workers 1 --wait --timeout {READY_TIMEOUT:.0f}", READY_TIMEOUT + 60
        )
        assert result.ok, result.explain() + diagnose(server_service, eksray_state, "t1")
        assert "t1 is ready and active" in result.text()

        # No address given: RAY_ADDRESS, set by `up`, makes ray.init() join t1 rather than start Ray.
        code = """
import os, ray
ray.init()
@ray.remote
def square(x):
    return x * x
print("RESULT", sorted(ray.get([square.remote(i) for i in range(5)])))
print("PORT", ray.get_runtime_context().gcs_address.rsplit(":", 1)[1] == os.environ["RAY_ADDRESS"].rsplit(":", 1)[1])
print("NODES", sum(n["Alive"] for n in ray.nodes()))
"""
        result = await channel.execute(code, 180)
        assert result.ok, result.explain()
        # Ray's autoscaler also prints to the driver's stdout: read only our lines.
        lines = [
            line
            for line in result.stream("stdout").splitlines()
            if line.startswith(("RESULT", "PORT", "NODES"))
        ]
        assert lines == ["RESULT [0, 1, 4, 9, 16]", "PORT True", "NODES 2"], result.explain()
        # `connect` sees this kernel is already connected to t1 (under the machine's IP) and keeps it.
        result = await channel.execute("%eksray connect")
        assert result.ok and "Connected to t1" in result.text(), result.explain()
        assert "Connecting to existing Ray cluster" not in result.stream("stderr")

        # A kernel started now, and the same kernel after a restart, connect before any cell.
        other_id = await start_session(jp_fetch, "second.ipynb")
        for attempt in ("start", "restart"):
            if attempt == "restart":
                await jp_fetch("api", "kernels", other_id, "restart", method="POST", body="{}")
            other = await KernelChannel.open(jp_ws_fetch, other_id)
            check = (
                "import os; print('ADDRESS', os.environ['RAY_ADDRESS']); import ray; ray.init(); "
                "print('CPUS', ray.cluster_resources()['CPU'])"
            )
            result = await other.execute(check, 180)
            assert result.ok, result.explain()
            found = dict(
                line.split(" ", 1)
                for line in result.stream("stdout").splitlines()
                if line.startswith(("ADDRESS", "CPUS"))
            )
            address, cpus = found["ADDRESS"], found["CPUS"]
            assert address == server_service.get("t1").address and float(cpus) >= 2, attempt
            other.close()
        await jp_fetch("api", "sessions", other_id, method="DELETE", raise_error=False)
        await jp_fetch("api", "kernels", other_id, method="DELETE", raise_error=False)

        pids = {p.pid for p in cluster_processes(eksray_state, "t1")}
        assert pids, "the cluster's processes should be found while it runs"
        result = await channel.execute("%eksray down t1", 180)
        assert result.ok, result.explain()
        assert "Deleted t1." in result.text()
        result = await channel.execute(
            "import os, ray; print(ray.is_initialized(), os.environ.get('RAY_ADDRESS'))"
        )
        assert result.stream("stdout").split() == ["False", "None"]

        alive = await asyncio.to_thread(wait_gone, pids, 60.0)
        assert alive == [], f"processes of t1 still running: {alive}"
        assert server_service.list() == []
    finally:
        if channel is not None:
            channel.close()
        # Whatever happened above, stop the cluster by its own processes (never `ray stop`).
        if any(c.name == "t1" for c in server_service.list()):
            server_service.delete("t1")


def test_the_config_a_kernel_gets_rebuilds_the_same_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eksray_jupyter.core.errors import InvalidRequestError

    server = make_service(tmp_path / "state", owner="bob", start_seconds=2.5)
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "no-config"))
    monkeypatch.setenv("EKSRAY_CONFIG", server.environment_config())
    kernel_side = ClusterService.from_environment()
    assert (kernel_side.owner, kernel_side.config.state_dir) == ("bob", str(tmp_path / "state"))
    assert kernel_side.backend.name == "fake" and kernel_side.backend.start_seconds == 2.5  # type: ignore[attr-defined]
    server.create({"name": "t1"})
    assert [c.name for c in kernel_side.list()] == ["t1"]

    monkeypatch.setenv("EKSRAY_CONFIG", "{not json")
    with pytest.raises(InvalidRequestError, match=r"\$EKSRAY_CONFIG is not valid JSON"):
        ClusterService.from_environment()
