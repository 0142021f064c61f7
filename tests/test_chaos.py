"""Chaos (issue 13): create, scale and delete from a real Jupyter server and from CLI processes at
once, the server SIGKILLed at random points and restarted on the same state, panels (websocket
clients of the push stream) reconnecting; invariants checked after every round.

Each round is one interleaving: a schedule of operations drawn from a seeded ``random.Random``
(create / scale / delete / suspend / resume by the server's REST API or by an ``eksray rc`` process, some of those
processes SIGKILLed mid-way, server kills and restarts, panel reloads), run against the state
the round before left. Then, with timeouts for convergence:

- every cluster the backend lists converges (``ready``, ``suspended``, or ``failed`` with a
  reason), and the backend's truth (state directories / RayCluster CRs) is exactly what the
  server and a CLI list;
- every name not listed is cleanly gone (no state directory; no CR, pod, Service, Secret or
  NetworkPolicy), and no name is stuck: an absent name can be created and deleted again;
- no Ray process outlives its cluster, and a suspended one has none (local: the run's processes,
  found by a marker in their environment, their command lines and their sessions; kuberay: no
  pod of a suspended cluster);
- kuberay: every cluster has its NetworkPolicy;
- every connected panel's view (snapshot + changes since) equals ``GET /clusters``, a freshly
  connected panel's snapshot too, and every connected panel receives the next change;
- no answer is a 500 and no CLI run ends in a traceback.

A failing round is minimized (ops dropped, halves first then smaller chunks, while a replay from
an empty state still breaks the same invariant, within ``EKSRAY_CHAOS_MINIMIZE_SECONDS``) and
reported with its seed, round, the state it started from and its op list with their outcomes.

Bounded in time for ``make test`` (each backend has a time budget; rounds stop when it is spent).
Environment for longer or replayed runs:

    EKSRAY_CHAOS_SEED=N              the run's seed (default: a random one, printed; under CI=true
                                     the fixed CI_SEED, so a CI failure is the code's, not the draw's)
    EKSRAY_CHAOS_ROUND=K             replay round K of that seed only (against a fresh state)
    EKSRAY_CHAOS_SECONDS=S           time budget per backend (default 60 fake, 90 local, 45 real)
    EKSRAY_CHAOS_ROUNDS=N            at most N rounds per backend
    EKSRAY_CHAOS_OPS=N               operations per round
    EKSRAY_CHAOS_MINIMIZE_SECONDS=S  time spent minimizing a failing round (default 60 fake, else 0)
    EKSRAY_CHAOS_REPORT=PATH         append each backend's summary (JSON lines) to PATH
    EKSRAY_CHAOS_VERBOSE=1           print every operation's outcome as it happens (with -s)

    EKSRAY_CHAOS_SECONDS=900 .venv/bin/python -m pytest -p no:cacheprovider -s -m chaos tests/test_chaos.py
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, websocket_connect

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
# CI draws the same schedules on every run: a red CI run is a change's doing and replays
# exactly. Random seeds (the default elsewhere) explore; a seed that finds a bug becomes a test.
CI_SEED = 13013
RUN_ENV = "EKSRAY_CHAOS_RUN"  # marks every process of a run (servers, CLIs and the Ray processes)
OWNER = "alice"

pytestmark = pytest.mark.chaos


# --- settings ------------------------------------------------------------------------------------


VERBOSE = bool(os.environ.get("EKSRAY_CHAOS_VERBOSE"))


def say(text: str) -> None:
    """Progress for a replay (``EKSRAY_CHAOS_VERBOSE=1``, with ``pytest -s``)."""
    if VERBOSE:
        print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def env_number(name: str, kind: Callable[[str], T]) -> T | None:
    raw = os.environ.get(name, "").strip()
    return kind(raw) if raw else None


_SEED: list[int] = []


def run_seed() -> int:
    """The run's seed: $EKSRAY_CHAOS_SEED, else CI_SEED under CI, else a fresh one (the same for
    every test of the run)."""
    if not _SEED:
        given = env_number("EKSRAY_CHAOS_SEED", int)
        if given is None and os.environ.get("CI", "").lower() == "true":
            given = CI_SEED
        _SEED.append(given if given is not None else random.SystemRandom().randrange(1 << 32))
    return _SEED[0]


@dataclass
class Profile:
    """How a backend is exercised: its names, shapes, pace and budget."""

    backend: str
    names: tuple[str, ...]
    ops: int  # operations per round
    window: float  # seconds over which a round's operations start
    kills: tuple[int, int]  # server kills per round (least, most)
    seconds: float  # no round starts after this budget is spent (the first always runs)
    rounds: int  # at most this many rounds
    converge_timeout: float
    gone_timeout: float
    minimize_seconds: float
    max_replicas: int  # replicas drawn in 0..max_replicas
    cli_share: float = 0.4
    cli_kill_share: float = 0.25  # CLI processes SIGKILLed mid-way
    server_kill_share: float = 0.2  # server operations during which the server is SIGKILLed

    def __post_init__(self) -> None:
        self.seconds = env_number("EKSRAY_CHAOS_SECONDS", float) or self.seconds
        self.rounds = env_number("EKSRAY_CHAOS_ROUNDS", int) or self.rounds
        self.ops = env_number("EKSRAY_CHAOS_OPS", int) or self.ops
        minimize = env_number("EKSRAY_CHAOS_MINIMIZE_SECONDS", float)
        self.minimize_seconds = self.minimize_seconds if minimize is None else minimize

    def create_spec(self, rng: random.Random, name: str) -> dict[str, Any]:
        replicas = rng.randint(0, self.max_replicas)
        return {
            "name": name,
            "head": {"cpu": 1},
            "workerGroups": [
                {
                    "groupName": "cpu",
                    "replicas": replicas,
                    "minReplicas": 0,
                    "maxReplicas": self.max_replicas,
                    "cpu": 1,
                }
            ],
            "autoscaling": {"enabled": False},
        }


# --- operations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    at: float  # seconds after the round starts
    actor: str  # "server" | "cli" | "chaos"
    kind: str  # create | scale | delete | kill-server | reload-panel
    name: str = ""
    body: str = ""  # JSON: the create spec or the scale request
    kill_after: float | None = None  # the CLI process, or the server, SIGKILLed so long after the op starts
    down_for: float = 0.0  # kill-server: seconds down before the restart
    panel: int = 0  # reload-panel: which panel

    def __str__(self) -> str:
        text = f"+{self.at:.2f}s {self.actor} {self.kind}"
        if self.name:
            text += f" {self.name}"
        if self.body and self.kind == "scale":
            text += f" {self.body}"
        elif self.body:
            group = json.loads(self.body)["workerGroups"][0]
            text += f" (replicas {group['replicas']}/{group['maxReplicas']})"
        if self.kill_after is not None:
            text += f" [{'CLI' if self.actor == 'cli' else 'server'} killed after {self.kill_after:.3g}s]"
        if self.kind == "kill-server":
            text += f" (down {self.down_for:.1f}s)"
        if self.kind == "reload-panel":
            text += f" #{self.panel}"
        return text


def schedule(profile: Profile, rng: random.Random, panels: int) -> list[Op]:
    ops: list[Op] = []
    for _ in range(profile.ops):
        at = round(rng.uniform(0, profile.window), 2)
        kind = rng.choices(["create", "scale", "delete", "suspend", "resume"], weights=[4, 3, 3, 1, 1])[0]
        name = rng.choice(profile.names)
        actor = "cli" if rng.random() < profile.cli_share else "server"
        body = ""
        if kind == "create":
            body = json.dumps(profile.create_spec(rng, name))
        elif kind == "scale":
            body = json.dumps(
                {"workerGroups": [{"groupName": "cpu", "replicas": rng.randint(0, profile.max_replicas)}]}
            )
        kill_after = None
        if actor == "cli" and rng.random() < profile.cli_kill_share:
            kill_after = round(rng.uniform(0.5, 3.0), 2)
        elif actor == "server" and rng.random() < profile.server_kill_share:
            kill_after = round(rng.uniform(0.0, 0.3), 3)
        ops.append(Op(at, actor, kind, name, body, kill_after))
    for _ in range(rng.randint(*profile.kills)):
        at = round(rng.uniform(0.2, profile.window + 1.0), 2)
        ops.append(Op(at, "chaos", "kill-server", down_for=rng.choice([0.0, 0.0, 0.5, 2.0])))
    if rng.random() < 0.5:
        at = round(rng.uniform(0, profile.window), 2)
        ops.append(Op(at, "chaos", "reload-panel", panel=rng.randrange(panels)))
    return sorted(ops, key=lambda op: op.at)


@dataclass
class Outcome:
    op: Op
    result: str  # an HTTP status, "exit N", "killed", "down", "timeout"
    detail: str = ""
    out: str = ""  # a CLI's stdout

    def __str__(self) -> str:
        return f"{self.op} -> {self.result}" + (f" ({self.detail[:300]})" if self.detail else "")


@dataclass
class Violation:
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.detail}"


# --- waiting -------------------------------------------------------------------------------------


async def settle(
    fn: Callable[[], Awaitable[T]],
    timeout: float,
    interval: float = 0.25,
    ok: Callable[[T], bool] = bool,
) -> tuple[bool, T]:
    """Poll ``fn`` until ``ok`` of its value (default: the value is truthy), at most ``timeout``
    seconds: (whether it held, the last value)."""
    deadline = time.monotonic() + timeout
    while True:
        last = await fn()
        if ok(last):
            return True, last
        if time.monotonic() > deadline:
            return False, last
        await asyncio.sleep(interval)


def none(items: list[str]) -> bool:
    return not items


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, chars: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


# --- the Jupyter server, a real process ------------------------------------------------------------


class JupyterServer:
    """``python -m jupyter_server`` with the extension, a token and a port of its own; SIGKILLed
    and restarted (same port, same state) by the chaos; always stopped by its PID."""

    START_TIMEOUT = 120.0

    def __init__(self, workdir: Path, sections: dict[str, Any], env: dict[str, str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        root = workdir / "root"
        root.mkdir(exist_ok=True)
        config = copy.deepcopy(sections)
        config["ServerApp"] = {
            "jpserver_extensions": {
                "eksray_jupyter": True, "jupyterlab": False, "jupyter_lsp": False,
                "jupyter_server_terminals": False, "notebook_shim": False,
            },
            "port_retries": 0,  # the same port after a restart, or fail loudly
            "root_dir": str(root),
        }  # fmt: skip
        config["EKSRayExtension"] = {"stream_heartbeat_seconds": 2.0}
        self.config_file = workdir / "jupyter_config.json"
        self.config_file.write_text(json.dumps(config))
        self.env = {
            **env,
            "JUPYTER_CONFIG_DIR": str(workdir / "jupyter-config"),
            "JUPYTER_DATA_DIR": str(workdir / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "jupyter-runtime"),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: set[int] = set()
        self.starts = 0
        self.kills = 0
        self.client = AsyncHTTPClient(force_instance=True, max_clients=64)
        self._lock = asyncio.Lock()
        self.up = asyncio.Event()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def _spawn(self) -> None:
        argv = [
            sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={self.port}",
            "--ip=127.0.0.1", f"--IdentityProvider.token={self.token}", f"--config={self.config_file}",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {self.starts + 1} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        self.pids.add(self.proc.pid)
        self.starts += 1

    async def start(self) -> None:
        self._spawn()
        proc = self.proc
        assert proc is not None

        async def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited ({proc.returncode}):\n{tail(self.log_path)}")
            code, _ = await self.call("GET", "config", timeout=5)
            return code == 200

        held, _ = await settle(answers, self.START_TIMEOUT, 0.1)
        assert held, f"the server did not answer within {self.START_TIMEOUT} s:\n{tail(self.log_path)}"
        self.up.set()

    async def kill(self) -> None:
        """SIGKILL, by PID, and reap it."""
        self.up.clear()
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        await asyncio.get_running_loop().run_in_executor(None, proc.wait)
        self.kills += 1

    async def kill_and_restart(self, down_for: float) -> None:
        async with self._lock:
            await self.kill()
            if down_for:
                await asyncio.sleep(down_for)  # the schedule's gap, not a wait for a condition
            await self.start()

    async def stop(self) -> None:
        self.up.clear()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.get_running_loop().run_in_executor(None, lambda: proc.wait(20))
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.get_running_loop().run_in_executor(None, proc.wait)

    async def call(
        self, method: str, path: str, body: Any = None, timeout: float = 90
    ) -> tuple[int | str, Any]:
        """(status, JSON body), or ("down"|"timeout", message) when no answer came."""
        request = HTTPRequest(
            f"{self.url}/eksray/api/{path}",
            method=method,
            body=None if body is None else (body if isinstance(body, str) else json.dumps(body)),
            headers={**self.headers, "Content-Type": "application/json"},
            request_timeout=timeout,
            connect_timeout=min(timeout, 10),
            allow_nonstandard_methods=True,
        )
        try:
            response = await self.client.fetch(request, raise_error=False)
        except HTTPClientError as e:  # 599: the connection closed or timed out
            return ("timeout" if "Timeout" in type(e).__name__ else "down"), str(e)
        except (OSError, StreamClosedError) as e:
            return "down", str(e) or type(e).__name__
        try:
            payload = json.loads(response.body) if response.body else None
        except ValueError:
            payload = response.body[:500].decode(errors="replace")
        return response.code, payload

    def log_tracebacks(self) -> list[str]:
        """Tracebacks and errors in the server log (every start), first lines of each."""
        text = tail(self.log_path, 2_000_000)
        found = []
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Traceback") or " ERROR " in line or "[E " in line:
                found.append(" | ".join(lines[max(0, i - 1) : i + 6])[:1200])
        return found


# --- panels: websocket clients of the push stream that reconnect ----------------------------------


class Panel:
    """What the JupyterLab panel does with the stream: a snapshot, then changes; after the socket
    closes, reconnect (with a short backoff) for a fresh snapshot."""

    def __init__(self, server: JupyterServer, index: int) -> None:
        self.server = server
        self.index = index
        self.state: dict[str, dict[str, Any]] = {}
        self.connected = False
        self.connections = 0
        self.changes: list[dict[str, Any]] = []  # cluster and deleted messages since the last snapshot
        self.out_of_order: list[str] = []  # messages of a connection that came before its snapshot
        self._ws: WebSocketClientConnection | None = None
        self._changed = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(Exception):  # refused while the server is down: reconnect
                await self._session()
            self.connected = False
            self._changed.set()
            if not self._closed:
                await asyncio.sleep(0.2)  # the panel's backoff between attempts

    async def _session(self) -> None:
        request = HTTPRequest(
            self.server.url.replace("http", "ws", 1) + "/eksray/api/stream",
            headers=self.server.headers,
            connect_timeout=5,
            request_timeout=30,
        )
        ws = await websocket_connect(request)
        self._ws = ws
        snapshot = False
        try:
            while True:
                raw = await ws.read_message()
                if raw is None:
                    return
                message = json.loads(raw)
                kind = message["type"]
                if not snapshot and kind != "snapshot":
                    self.out_of_order.append(raw[:200])
                if kind == "snapshot":
                    snapshot = True
                    self.state = {c["name"]: c for c in message["clusters"]}
                    self.changes = []
                    self.connections += 1
                    self.connected = True
                elif kind == "cluster":
                    self.state[message["cluster"]["name"]] = message["cluster"]
                elif kind == "deleted":
                    self.state.pop(message["name"], None)
                if kind in ("cluster", "deleted"):
                    self.changes.append(message)
                self._changed.set()
        finally:
            self._ws = None
            ws.close()

    def reload(self) -> None:
        """As a browser reload: the socket closes, a new one opens."""
        if self._ws is not None:
            self._ws.close()

    async def wait_for(self, condition: Callable[[Panel], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
        return True

    async def close(self) -> None:
        self._closed = True
        self.reload()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def normal(clusters: list[dict[str, Any]] | dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Clusters as compared: by name, without the per-read utilisation figures."""
    items = list(clusters.values()) if isinstance(clusters, dict) else list(clusters)
    out = []
    for c in sorted(items, key=lambda c: c["name"]):
        c = copy.deepcopy(c)
        for node in c.get("nodes") or []:
            node.pop("utilization", None)
        out.append(c)
    return out


def brief(clusters: list[dict[str, Any]]) -> str:
    return (
        ", ".join(
            f"{c['name']}:{c['phase']}"
            + "".join(
                f" {g['groupName']}{g['ready']}/{g['desired']}/{g['replicas']}" for g in c["workerGroups"]
            )
            + (f" ({c['reason'][:150]})" if c.get("reason") else "")
            for c in clusters
        )
        or "none"
    )


def first_difference(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> str:
    if [c["name"] for c in a] != [c["name"] for c in b]:
        return f"names {[c['name'] for c in a]} != {[c['name'] for c in b]}"
    for x, y in zip(a, b, strict=True):
        for key in sorted(set(x) | set(y)):
            if x.get(key) != y.get(key):
                return f"{x['name']}.{key}: {json.dumps(x.get(key))[:300]} != {json.dumps(y.get(key))[:300]}"
    return "equal"


# --- targets: what a backend's truth is and what is left of a cluster ---------------------------------


class Target:
    """One backend under chaos: its settings for every face, its truth, and its leftovers."""

    name = ""

    def __init__(self, workdir: Path, run_id: str) -> None:
        self.workdir = workdir
        self.run_id = run_id
        self.state_dir = workdir / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def sections(self) -> dict[str, Any]:
        raise NotImplementedError

    async def truth(self) -> set[str]:
        """The clusters that exist, by the backend's own storage."""
        raise NotImplementedError

    async def leftovers(self, name: str) -> list[str]:
        """What is left of a cluster that should be gone."""
        raise NotImplementedError

    async def extra_checks(self, listed: list[dict[str, Any]]) -> list[Violation]:
        return []

    async def leaks(self, excluded: set[int]) -> list[str]:
        return []

    def close(self) -> None:
        pass


class KubeTarget(Target):
    """kuberay: RayCluster CRs and what the operator and eksray make for them."""

    def __init__(self, workdir: Path, run_id: str) -> None:
        super().__init__(workdir, run_id)
        self.namespace = ""
        self.kubeconfig = ""
        self.owner = OWNER
        self._api: Any = None
        self.create_namespaces = True

    def api(self) -> Any:
        raise NotImplementedError

    def sections(self) -> dict[str, Any]:
        return {
            "EKSRay": {"backend": "kuberay", "state_dir": str(self.state_dir), "owner": self.owner},
            "KubeRayBackend": {
                "credentials": "kubeconfig",
                "kubeconfig": self.kubeconfig,
                "dashboard_access": "apiserver-proxy",
                "dashboard_events": False,  # no Ray runs in these pods
                "create_namespaces": self.create_namespaces,
            },
        }

    def _sync(self, fn: Callable[[], T]) -> Awaitable[T]:
        return asyncio.get_running_loop().run_in_executor(None, fn)

    async def truth(self) -> set[str]:
        import kubernetes.client

        crs = kubernetes.client.CustomObjectsApi(self.api())

        def names() -> set[str]:
            body = crs.list_namespaced_custom_object("ray.io", "v1", self.namespace, "rayclusters")
            return {item["metadata"]["name"] for item in body["items"]}

        return await self._sync(names)

    async def leftovers(self, name: str) -> list[str]:
        import kubernetes.client

        client = self.api()
        core = kubernetes.client.CoreV1Api(client)
        crs = kubernetes.client.CustomObjectsApi(client)
        net = kubernetes.client.NetworkingV1Api(client)
        selector = f"ray.io/cluster={name}"

        def look() -> list[str]:
            left = []
            items = crs.list_namespaced_custom_object("ray.io", "v1", self.namespace, "rayclusters")["items"]
            left += [f"RayCluster {name}" for i in items if i["metadata"]["name"] == name]
            left += [
                f"pod {p.metadata.name}"
                for p in core.list_namespaced_pod(self.namespace, label_selector=selector).items
            ]
            left += [
                f"Service {s.metadata.name}"
                for s in core.list_namespaced_service(self.namespace, label_selector=selector).items
            ]
            left += [
                f"Secret {s.metadata.name}"
                for s in core.list_namespaced_secret(self.namespace, label_selector=selector).items
            ]
            left += [
                f"NetworkPolicy {p.metadata.name}"
                for p in net.list_namespaced_network_policy(self.namespace).items
                if p.metadata.name == f"{name}-eksray"
            ]
            return left

        return await self._sync(look)

    async def extra_checks(self, listed: list[dict[str, Any]]) -> list[Violation]:
        """Every cluster has its NetworkPolicy: a server or CLI killed between creating the
        RayCluster and its policy leaves it without, until a list (this check's own GET
        /clusters) has the backend make it, on a thread: allowed a few seconds."""
        import kubernetes.client

        net = kubernetes.client.NetworkingV1Api(self.api())

        async def missing() -> list[str]:
            have = await self._sync(
                lambda: {p.metadata.name for p in net.list_namespaced_network_policy(self.namespace).items}
            )
            return [c["name"] for c in listed if f"{c['name']}-eksray" not in have]

        held, left = await settle(missing, 20, 0.5, none)
        violations = []
        if not held:
            violations.append(
                Violation("network-policy", f"clusters without their NetworkPolicy after 20 s: {left}")
            )
        core = kubernetes.client.CoreV1Api(self.api())
        suspended = {c["name"] for c in listed if c["phase"] == "suspended"}

        async def pods_of_suspended() -> list[str]:
            pods = await self._sync(lambda: core.list_namespaced_pod(self.namespace).items)
            return [
                p.metadata.name for p in pods if (p.metadata.labels or {}).get("ray.io/cluster") in suspended
            ]

        if suspended:
            held, left = await settle(pods_of_suspended, 30, 0.5, none)
            if not held:
                violations.append(Violation("suspended", f"pods of suspended clusters after 30 s: {left}"))
        return violations


class FakeKubeTarget(KubeTarget):
    """kuberay against tests/fakekube, run as a process of its own (``python -m tests.fakekube``)."""

    name = "kuberay-fake"

    def __init__(self, workdir: Path, run_id: str) -> None:
        super().__init__(workdir, run_id)
        kubeconfig = workdir / "fake.kubeconfig"
        self.log_path = workdir / "fakekube.log"
        argv = [
            sys.executable, "-m", "tests.fakekube", "--kubeconfig", str(kubeconfig),
            "--pod-ready-delay", "0.3", "--bookmark-interval", "1",
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 60
        while not kubeconfig.exists() or "FAKEKUBE_KUBECONFIG" not in tail(self.log_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"tests.fakekube did not start:\n{tail(self.log_path)}")
            time.sleep(0.05)
        self.kubeconfig = str(kubeconfig)
        self.namespace = f"eksray-{OWNER}"

    def api(self) -> Any:
        if self._api is None:
            import kubernetes.config

            self._api = kubernetes.config.new_client_from_config(config_file=self.kubeconfig)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RealKubeTarget(KubeTarget):
    """kuberay against the real control plane of the k8s tests (tests/k8s), as a user of its own."""

    name = "kuberay-real"

    def __init__(self, workdir: Path, run_id: str, plane: Any, user: Any) -> None:
        super().__init__(workdir, run_id)
        self.plane = plane
        self.kubeconfig = str(user.kubeconfig)
        self.namespace = user.namespace
        self.owner = user.owner
        self.create_namespaces = False

    def api(self) -> Any:
        return self.plane.admin


class LocalTarget(Target):
    """The local backend with real Ray: clusters are directories and process trees on this machine.

    Every process of the run carries ``$EKSRAY_CHAOS_RUN`` (the server and CLIs are given it, and
    ``c.LocalBackend.ray_environment`` passes it to Ray), so only this run's processes are looked
    at. A process belongs to the cluster named by its Ray token file or cluster directory; it has
    outlived its cluster if no cluster of that name exists, or the one that does was made after it.
    A sampler also remembers each cluster's session leaders, for processes whose environment
    cannot be read.
    """

    name = "local"

    def __init__(self, workdir: Path, run_id: str) -> None:
        super().__init__(workdir, run_id)
        self.clusters_dir = self.state_dir / "local" / "clusters"
        self.sessions: dict[int, tuple[str, float]] = {}  # session leader pid -> (name, createdAt)
        self.recordless: set[str] = set()  # directories left without a record, seen (tolerated)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_loop, name="chaos-sampler", daemon=True)
        self._sampler.start()

    def sections(self) -> dict[str, Any]:
        return {
            "EKSRay": {"backend": "local", "state_dir": str(self.state_dir), "owner": OWNER},
            "LocalBackend": {"ray_environment": [RUN_ENV], "max_local_nodes": 8},
        }

    def records(self) -> dict[str, dict[str, Any]]:
        out = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in self.clusters_dir.iterdir():
                with contextlib.suppress(OSError, ValueError):
                    out[entry.name] = json.loads((entry / "cluster.json").read_text())
        return out

    def _sample_loop(self) -> None:
        while not self._stop.wait(0.3):
            for name, record in self.records().items():
                refs = [record.get("head")]
                with contextlib.suppress(OSError, ValueError):
                    nodes = json.loads((self.clusters_dir / name / "nodes.json").read_text())
                    refs += [n.get("process") for n in nodes.values()]
                for ref in refs:
                    if ref and ref.get("pid"):
                        self.sessions.setdefault(int(ref["pid"]), (name, float(record.get("createdAt", 0))))

    async def truth(self) -> set[str]:
        """Directories with a record: one without (a create or delete cut short before it wrote
        or after it removed the record) is no cluster; see :meth:`leftovers`."""
        return set(self.records())

    async def leftovers(self, name: str) -> list[str]:
        """A directory without a record is tolerated, and counted: by design (``_claim_leftover``)
        the next create of the name reclaims it, which the next-change check proves by creating
        every absent name again (and then the directory must be gone)."""
        path = self.clusters_dir / name
        if not path.exists():
            return []
        files = sorted(p.name for p in path.iterdir())
        if "cluster.json" not in files:
            self.recordless.add(f"{name}: {files}")
            return []
        return [f"state directory {path}: {files}"]

    def _identity(self, env: dict[str, str], cmdline: list[str]) -> str | None:
        token = env.get("RAY_AUTH_TOKEN_PATH", "")
        prefix = str(self.clusters_dir) + os.sep
        for text in (token, *cmdline):
            if prefix in text:
                return text.split(prefix, 1)[1].split(os.sep, 1)[0]
        return None

    def _scan(self, excluded: set[int]) -> list[str]:
        live = self.records()
        uid = os.getuid()
        leaked = []
        for proc in psutil.process_iter(["pid", "cmdline", "uids", "create_time", "status"]):
            info = proc.info
            if (
                info["pid"] in excluded
                or info["pid"] == os.getpid()
                or info["status"] == psutil.STATUS_ZOMBIE
            ):
                continue
            if not info["uids"] or info["uids"].real != uid:
                continue
            try:
                env = proc.environ()
                session = os.getsid(info["pid"])
            except (psutil.Error, OSError):
                continue
            ours = env.get(RUN_ENV) == self.run_id
            if not ours and session not in self.sessions:
                continue
            cmdline = info["cmdline"] or []
            name = self._identity(env, cmdline)
            if name is None and session in self.sessions:
                name = self.sessions[session][0]
            record = live.get(name or "")
            suspended = record is not None and record.get("status") == "suspended"
            if (
                record is not None
                and not suspended
                and info["create_time"] >= float(record.get("createdAt", 0)) - 1.0
            ):
                continue
            if name is None and not ours:
                continue
            what = (
                "no cluster"
                if record is None
                else ("a suspended cluster" if suspended else "a newer cluster of that name")
            )
            leaked.append(
                f"pid {info['pid']} (session {session}) of cluster {name!r}, {what}: {' '.join(cmdline)[:160]}"
            )
        return leaked

    async def leaks(self, excluded: set[int]) -> list[str]:
        return await asyncio.get_running_loop().run_in_executor(None, self._scan, excluded)

    def kill_leftovers(self, excluded: set[int]) -> list[str]:
        """After the test: stop, by PID, whatever of the run is still running (and say what)."""
        leaked = self._scan(excluded)
        pids = [int(item.split()[1]) for item in leaked]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return leaked

    def close(self) -> None:
        self._stop.set()
        self._sampler.join(5)


# --- the chaos -------------------------------------------------------------------------------------


@dataclass
class RoundResult:
    index: int
    ops: list[Op]
    outcomes: list[Outcome]
    violations: list[Violation]
    before: str
    seconds: float
    minimized: list[Op] | None = None
    minimize_note: str = ""


@dataclass
class Summary:
    backend: str
    seed: int
    rounds: int = 0
    interleavings: int = 0  # rounds + minimization replays
    ops: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    server_kills: int = 0
    panel_reconnects: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    timings: Counter[str] = field(default_factory=Counter)  # seconds spent per phase
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        return (
            f"chaos {self.backend}: seed {self.seed}, {self.rounds} rounds, {self.interleavings} interleavings, "
            f"{sum(self.ops.values())} ops {dict(self.ops)}, {self.server_kills} server kills, "
            f"{self.panel_reconnects} panel reconnects, results {dict(self.results)}, {self.seconds:.0f} s, "
            f"{len(self.failures)} failing; seconds by phase "
            f"{ {k: round(v, 1) for k, v in self.timings.items()} }"
            + "".join(f"\n  note: {n}" for n in self.notes)
        )


class Chaos:
    PANELS = 2

    def __init__(self, target: Target, profile: Profile) -> None:
        self.target = target
        self.profile = profile
        self.seed = run_seed()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            RUN_ENV: target.run_id,
            "EKSRAY_STATE_DIR": str(target.state_dir),
            "EKSRAY_CONFIG": json.dumps(target.sections()),
            "JUPYTER_CONFIG_DIR": str(target.workdir / "cli-config"),
            "JUPYTER_DATA_DIR": str(target.workdir / "cli-data"),
            "JUPYTER_RUNTIME_DIR": str(target.workdir / "cli-runtime"),
        }
        self.env.pop("KUBECONFIG", None)
        self.server = JupyterServer(target.workdir, target.sections(), self.env)
        self.panels: list[Panel] = []
        self.cli_pids: set[int] = set()
        self.summary = Summary(target.name, self.seed)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.summary.timings[name] += time.monotonic() - started

    @property
    def excluded(self) -> set[int]:
        return self.server.pids | self.cli_pids | {os.getpid()}

    def rng(self, index: int) -> random.Random:
        return random.Random(f"{self.seed}:{self.target.name}:{index}")

    # --- running one operation ---------------------------------------------------------------

    async def perform(self, op: Op, started: float) -> Outcome:
        await asyncio.sleep(max(0.0, started + op.at - time.monotonic()))  # the schedule, not a wait
        outcome = await self._perform(op)
        say(str(outcome))
        return outcome

    async def _perform(self, op: Op) -> Outcome:
        self.summary.ops[f"{op.actor} {op.kind}"] += 1
        if op.kind == "kill-server":
            await self.server.kill_and_restart(op.down_for)
            return Outcome(op, "restarted")
        if op.kind == "reload-panel":
            self.panels[op.panel].reload()
            return Outcome(op, "reloaded")
        if op.actor == "cli":
            return await self.run_cli(op)
        if op.kill_after is None:
            return await self.call_server(op)
        # The server dies while it carries the operation out (or just before, or after).
        call = asyncio.get_running_loop().create_task(self.call_server(op))
        await asyncio.sleep(op.kill_after)  # the schedule, not a wait
        await self.server.kill_and_restart(0.0)
        return await call

    async def call_server(self, op: Op) -> Outcome:
        """The operation over REST; if the server was down, once more when it is back (as a user
        would click again), so operations also meet a server that has just restarted."""
        outcome = await self._call_server(op)
        if outcome.result != "down":
            return outcome
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.server.up.wait(), JupyterServer.START_TIMEOUT)
        again = await self._call_server(op)
        return Outcome(op, f"down, then {again.result}", again.detail)

    async def _call_server(self, op: Op) -> Outcome:
        if op.kind == "create":
            code, body = await self.server.call("POST", "clusters", op.body)
        elif op.kind == "scale":
            code, body = await self.server.call("PATCH", f"clusters/{op.name}", op.body)
        elif op.kind in ("suspend", "resume"):
            code, body = await self.server.call("POST", f"clusters/{op.name}/{op.kind}")
        else:
            code, body = await self.server.call("DELETE", f"clusters/{op.name}")
        detail = (
            body.get("message", "")
            if isinstance(body, dict) and isinstance(code, int) and code >= 400
            else ""
        )
        return Outcome(op, str(code), detail if isinstance(detail, str) else json.dumps(detail))

    def cli_argv(self, op: Op) -> list[str]:
        base = [sys.executable, "-m", "eksray_jupyter.cli", "rc"]
        if op.kind == "create":
            return [*base, "create", "-f", "-", "-o", "json"]
        if op.kind == "scale":
            replicas = json.loads(op.body)["workerGroups"][0]["replicas"]
            return [*base, "scale", op.name, "cpu", "--replicas", str(replicas), "-o", "json"]
        if op.kind in ("suspend", "resume"):
            return [*base, op.kind, op.name, "-o", "json"]
        return [*base, "delete", op.name]

    async def run_cli(self, op: Op, argv: list[str] | None = None, timeout: float = 180) -> Outcome:
        proc = await asyncio.create_subprocess_exec(
            *(argv or self.cli_argv(op)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=str(REPO),
        )
        self.cli_pids.add(proc.pid)
        stdin = op.body.encode() if op.kind == "create" else b""
        limit = op.kill_after if op.kill_after is not None else timeout
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), limit)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            _, err = await proc.communicate()
            return Outcome(op, "killed" if op.kill_after is not None else "timeout", err.decode()[-300:])
        text = err.decode(errors="replace").strip()
        return Outcome(op, f"exit {proc.returncode}", text if proc.returncode else "", out.decode())

    # --- a round ---------------------------------------------------------------------------------

    async def listed(self) -> list[dict[str, Any]] | None:
        code, body = await self.server.call("GET", "clusters", timeout=60)
        return normal(body["clusters"]) if code == 200 else None

    async def run_round(self, index: int, ops: list[Op]) -> RoundResult:
        started = time.monotonic()
        before = brief(await self.listed() or [])
        with self.phase("ops"):
            outcomes = list(await asyncio.gather(*(self.perform(op, started) for op in ops)))
            if not self.server.up.is_set():
                async with self.server._lock:
                    if not self.server.up.is_set():
                        await self.server.start()
        self.summary.results.update(o.result for o in outcomes)
        violations = [
            Violation("server-error", str(o))
            for o in outcomes
            if (code := o.result.rsplit(" ", 1)[-1]).startswith("5") and code != "503"
        ]
        violations += [
            Violation("cli-error", str(o))
            for o in outcomes
            if o.result.startswith("exit")
            and ("Traceback" in o.detail or o.result not in ("exit 0", "exit 1"))
        ]
        violations += await self.check()
        return RoundResult(index, ops, outcomes, violations, before, time.monotonic() - started)

    # --- the invariants ----------------------------------------------------------------------------

    async def check(self) -> list[Violation]:
        p = self.profile
        violations: list[Violation] = []

        # 1. Every cluster converges: ready, suspended, or failed with a reason.
        async def converged() -> list[dict[str, Any]] | None:
            clusters = await self.listed()
            if clusters is None:
                return None
            done = all(
                c["phase"] in ("ready", "suspended") or (c["phase"] == "failed" and c["reason"])
                for c in clusters
            )
            return clusters if done else None

        with self.phase("converge"):
            held, clusters = await settle(converged, p.converge_timeout, 0.5, lambda v: v is not None)
        if not held:
            clusters = await self.listed() or []
            stuck = [c["name"] for c in clusters if c["phase"] not in ("ready", "failed", "suspended")]
            violations.append(
                Violation(
                    "converging",
                    f"after {p.converge_timeout:.0f} s: {brief(clusters)}; their last events: "
                    + "; ".join([f"{name}: {await self.last_events(name)}" for name in stuck]),
                )
            )
        assert clusters is not None
        names = [c["name"] for c in clusters]

        # 2. The backend's truth is what the server and a CLI process list.
        async def agree() -> tuple[set[str], set[str]] | None:
            listed, truth = {c["name"] for c in await self.listed() or []}, await self.target.truth()
            return None if listed != truth else (listed, truth)

        with self.phase("truth"):
            held, _ = await settle(agree, 10)
            listed, truth = {c["name"] for c in await self.listed() or []}, await self.target.truth()
            if not held:
                violations.append(
                    Violation("truth", f"the server lists {sorted(listed)}, the backend has {sorted(truth)}")
                )
            cli = await self.run_cli(
                Op(0, "cli", "list"), [sys.executable, "-m", "eksray_jupyter.cli", "rc", "list", "-o", "json"]
            )
            if cli.result != "exit 0":
                violations.append(Violation("cli-list", str(cli)))
            elif (seen := {c["name"] for c in json.loads(cli.out)["clusters"]}) != truth:
                violations.append(
                    Violation("cli-list", f"a CLI lists {sorted(seen)}, the backend has {sorted(truth)}")
                )

        # 3. Names not listed are cleanly gone.
        with self.phase("gone"):
            for name in p.names:
                if name in names:
                    continue
                held, left = await settle(
                    lambda name=name: self.target.leftovers(name), p.gone_timeout, 0.5, none
                )
                if not held:
                    violations.append(Violation("gone", f"{name} is not listed but left: {left}"))
            violations += await self.target.extra_checks(clusters)

        # 4. No Ray process outlives its cluster (exits may take a moment).
        with self.phase("processes"):
            held, leaked = await settle(lambda: self.target.leaks(self.excluded), 45, 1.0, none)
            if not held:
                violations.append(Violation("processes", "; ".join(leaked)))

        # 5. Panels: reconnected, and their view is the backend's; a fresh one's snapshot too.
        with self.phase("panels"):
            violations += await self.check_panels()

        # 6. The next change reaches every connected panel; no name is stuck.
        with self.phase("next-change"):
            violations += await self.check_next_change(clusters)
        return violations

    async def last_events(self, name: str, count: int = 6) -> list[str]:
        code, body = await self.server.call("GET", f"clusters/{name}/events")
        if code != 200:
            return [f"{code}"]
        return [f"{e['reason']}: {e['message'][:160]}" for e in body["events"][-count:]]

    async def check_panels(self) -> list[Violation]:
        violations = []
        for panel in self.panels:
            if panel.out_of_order:
                violations.append(
                    Violation(
                        "stream-order", f"panel {panel.index} got before a snapshot: {panel.out_of_order}"
                    )
                )
                panel.out_of_order = []
            if not await panel.wait_for(lambda p: p.connected, 30):
                violations.append(Violation("panel", f"panel {panel.index} did not reconnect within 30 s"))
                continue

            async def same(panel: Panel = panel) -> bool:
                truth = await self.listed()
                return truth is not None and normal(panel.state) == truth

            held, _ = await settle(same, 15, 0.5)
            if not held:
                truth = await self.listed() or []
                violations.append(
                    Violation(
                        "panel-view",
                        f"panel {panel.index} (connection {panel.connections}) shows {brief(normal(panel.state))}, "
                        f"GET /clusters {brief(truth)}: {first_difference(normal(panel.state), truth)}",
                    )
                )
        fresh = Panel(self.server, len(self.panels))
        fresh.start()
        try:
            if not await fresh.wait_for(lambda p: p.connected, 30):
                return [*violations, Violation("panel", "a new panel got no snapshot within 30 s")]
            after: list[dict[str, Any]] | None = None
            for _ in range(5):
                before = await self.listed()
                snapshot = normal(fresh.state) if not fresh.changes else None
                after = await self.listed()
                if snapshot is not None and snapshot in (before, after):
                    break
                fresh.reload()
                await fresh.wait_for(lambda p: p.connected and p.connections > 1, 10)
            else:
                violations.append(
                    Violation(
                        "snapshot",
                        f"a new panel's snapshot {brief(normal(fresh.state))} != GET /clusters {brief(after or [])}: "
                        f"{first_difference(normal(fresh.state), after or [])}",
                    )
                )
        finally:
            await fresh.close()
        return violations

    async def check_next_change(self, clusters: list[dict[str, Any]]) -> list[Violation]:
        names = [c["name"] for c in clusters]
        violations: list[Violation] = []
        fresh = Panel(self.server, len(self.panels))
        fresh.start()
        await fresh.wait_for(lambda p: p.connected, 30)
        panels = [p for p in [*self.panels, fresh] if p.connected]
        absent = [n for n in self.profile.names if n not in names]
        try:
            if absent:
                for i, name in enumerate(absent):
                    violations += await self.recreate(name, panels if i == 0 else [])
            elif suspended := [c["name"] for c in clusters if c["phase"] == "suspended"]:
                name = suspended[0]
                code, body = await self.server.call("POST", f"clusters/{name}/resume")
                if code != 200:
                    violations.append(Violation("next-change", f"resuming {name}: {code} {body}"))
                else:
                    violations += await self.everyone_sees(
                        panels,
                        f"{name} resumed",
                        lambda p: (c := p.state.get(name)) is not None and c["phase"] != "suspended",
                    )
            elif names:
                name = names[0]
                _, current = await self.server.call("GET", f"clusters/{name}")
                group = current["workerGroups"][0] if isinstance(current, dict) else {}
                new_max = self.profile.max_replicas + (
                    1 if group.get("maxReplicas") == self.profile.max_replicas else 0
                )
                code, body = await self.server.call(
                    "PATCH",
                    f"clusters/{name}",
                    {"workerGroups": [{"groupName": "cpu", "maxReplicas": new_max}]},
                )
                if code != 200:
                    violations.append(
                        Violation("next-change", f"scaling {name}'s maxReplicas: {code} {body}")
                    )
                else:
                    violations += await self.everyone_sees(
                        panels,
                        f"{name} with maxReplicas {new_max}",
                        lambda p: (
                            (c := p.state.get(name)) is not None
                            and c["workerGroups"][0]["maxReplicas"] == new_max
                        ),
                    )
        finally:
            await fresh.close()
        return violations

    async def everyone_sees(
        self, panels: list[Panel], what: str, condition: Callable[[Panel], bool], timeout: float = 20
    ) -> list[Violation]:
        started = time.monotonic()
        seen = await asyncio.gather(*(p.wait_for(condition, timeout) for p in panels))
        missed = [p for p, ok in zip(panels, seen, strict=True) if not ok]
        if not missed:
            return []
        # Late, or never? And what does the server say meanwhile?
        truth = brief(await self.listed() or [])
        late = await asyncio.gather(*(p.wait_for(condition, 60) for p in missed))
        return [
            Violation(
                "next-change",
                f"panel {p.index} (connected: {p.connected}, connection {p.connections}) did not receive {what} "
                f"within {timeout:.0f} s (GET /clusters then: {truth}); "
                + (f"it came after {time.monotonic() - started:.0f} s" if ok else "not within 80 s either")
                + f"; its last changes: {[json.dumps(m)[:160] for m in p.changes[-3:]]}",
            )
            for p, ok in zip(missed, late, strict=True)
        ]

    async def recreate(self, name: str, panels: list[Panel]) -> list[Violation]:
        """An absent name is not stuck: it can be created (a 409 while a deletion finishes is
        retried) and deleted again, and is then cleanly gone. Every given panel sees both."""
        spec = {"name": name, "head": {"cpu": 1}, "workerGroups": [], "autoscaling": {"enabled": False}}

        async def create() -> tuple[int | str, Any] | None:
            code, body = await self.server.call("POST", "clusters", spec)
            return (code, body) if code != 409 else None

        held, answer = await settle(create, self.profile.gone_timeout, 0.5)
        say(f"recreate {name}: {answer and answer[0]}")
        if not held or answer is None or answer[0] != 201:
            return [Violation("stuck", f"creating the absent name {name}: {answer or 'still 409'}")]
        violations = await self.everyone_sees(panels, f"the new cluster {name}", lambda p: name in p.state)
        code, body = await self.server.call("DELETE", f"clusters/{name}")
        say(f"recreate {name}: seen by {len(panels)} panels ({len(violations)} violations), deleted: {code}")
        if code != 204:
            return [*violations, Violation("stuck", f"deleting {name} again: {code} {body}")]
        violations += await self.everyone_sees(panels, f"{name} deleted", lambda p: name not in p.state)
        held, left = await settle(lambda: self.target.leftovers(name), self.profile.gone_timeout, 0.5, none)
        if not held:
            violations.append(Violation("gone", f"{name}, created and deleted again, left: {left}"))
        elif isinstance(self.target, LocalTarget) and (self.target.clusters_dir / name).exists():
            violations.append(Violation("gone", f"{name}'s directory is left after a create and a delete"))
        return violations

    # --- minimizing a failing round -----------------------------------------------------------------

    async def reset(self) -> bool:
        """Delete every cluster, and wait until all are cleanly gone: a clean slate for a replay."""
        for name in self.profile.names:
            await self.server.call("DELETE", f"clusters/{name}")

        async def clean() -> bool:
            listed = await self.listed()
            if listed is None or listed:
                return False
            for name in self.profile.names:
                if await self.target.leftovers(name):
                    return False
            return True

        held, _ = await settle(clean, self.profile.gone_timeout, 0.5)
        return held

    async def minimize(self, result: RoundResult) -> None:
        """Drop ops while the round, replayed from an empty state, still breaks one of the same
        invariants: halves first, then smaller and smaller chunks (ddmin), within the budget."""
        budget = self.profile.minimize_seconds
        if budget <= 0:
            return
        deadline = time.monotonic() + budget
        wanted = {v.invariant for v in result.violations}
        ops = list(result.ops)
        trials = reproduced = 0
        chunks = 2
        note = ""
        while len(ops) > 1 and time.monotonic() < deadline:
            size = -(-len(ops) // chunks)
            for start in range(0, len(ops), size):
                if time.monotonic() >= deadline:
                    break
                candidate = ops[:start] + ops[start + size :]
                if not await self.reset():
                    note = "; stopped: could not reset to an empty state"
                    deadline = 0.0
                    break
                replay = await self.run_round(result.index, candidate)
                trials += 1
                self.summary.interleavings += 1
                if wanted & {v.invariant for v in replay.violations}:
                    ops, reproduced = candidate, reproduced + 1
                    chunks = max(chunks - 1, 2)
                    break
            else:
                if size == 1:
                    break  # no single op can go: 1-minimal
                chunks = min(chunks * 2, len(ops))
        result.minimized = ops
        result.minimize_note = (
            f"{trials} replays from an empty state, {reproduced} broke {sorted(wanted)} again"
            + ("; stopped by the time budget" if time.monotonic() >= deadline and not note else "")
            + note
        )

    # --- the run -------------------------------------------------------------------------------------

    async def run(self) -> Summary:
        started = time.monotonic()
        only = env_number("EKSRAY_CHAOS_ROUND", int)
        try:
            await self.server.start()
            self.panels = [Panel(self.server, i) for i in range(self.PANELS)]
            for panel in self.panels:
                panel.start()
            for panel in self.panels:
                assert await panel.wait_for(lambda p: p.connected, 60), "a panel got no snapshot"
            rounds = [only] if only is not None else range(self.profile.rounds)
            last_round = 0.0
            for index in rounds:
                spent = time.monotonic() - started
                if index != only and self.summary.rounds and spent + last_round > self.profile.seconds:
                    break
                ops = schedule(self.profile, self.rng(index), self.PANELS)
                result = await self.run_round(index, ops)
                last_round = result.seconds
                self.summary.rounds += 1
                self.summary.interleavings += 1
                print(
                    f"chaos {self.target.name} round {index}: {result.seconds:.1f} s, {len(ops)} ops, "
                    f"{len(result.violations)} violations; now {brief(await self.listed() or [])}",
                    flush=True,
                )
                if result.violations:
                    await self.minimize(result)
                    self.summary.failures.append(self.report(result))
                    break
            await self.teardown()
        finally:
            self.summary.server_kills = self.server.kills
            self.summary.panel_reconnects = sum(max(0, p.connections - 1) for p in self.panels)
            if isinstance(self.target, LocalTarget) and self.target.recordless:
                self.summary.notes.append(
                    "directories left without a record (reclaimed by the next create of the name): "
                    + "; ".join(sorted(self.target.recordless))
                )
            for panel in self.panels:
                await panel.close()
            await self.server.stop()
            self.server.client.close()
            self.summary.seconds = time.monotonic() - started
        return self.summary

    async def teardown(self) -> None:
        """Delete what the rounds left; everything must then be cleanly gone."""
        if not await self.reset():
            self.summary.failures.append(
                f"teardown: clusters left after deleting all: {brief(await self.listed() or [])}"
            )

    def report(self, result: RoundResult) -> str:
        lines = [
            f"{self.target.name}: round {result.index} of seed {self.seed} failed "
            f"(replay: EKSRAY_CHAOS_SEED={self.seed} EKSRAY_CHAOS_ROUND={result.index}; "
            f"the round started from: {result.before})",
            "violations:",
            *(f"  {v}" for v in result.violations),
            "ops and outcomes:",
            *(f"  {o}" for o in result.outcomes),
        ]
        if result.minimized is not None:
            lines += [f"minimized ({result.minimize_note}):", *(f"  {op}" for op in result.minimized)]
        errors = self.server.log_tracebacks()
        if errors:
            lines += ["server log errors (first 5):", *(f"  {e}" for e in errors[:5])]
        kept = Path(tempfile.gettempdir()) / f"eksray-chaos-{self.seed}-{self.target.name}-{result.index}.log"
        with contextlib.suppress(OSError):
            kept.write_bytes(self.server.log_path.read_bytes())
            lines.append(f"server log (every start): {kept}")
        return "\n".join(lines)


def finish(summary: Summary) -> None:
    print(summary.text(), flush=True)
    path = os.environ.get("EKSRAY_CHAOS_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(
                json.dumps({**summary.__dict__, "ops": dict(summary.ops), "results": dict(summary.results)})
                + "\n"
            )
    assert not summary.failures, "\n\n".join(summary.failures)


# --- the tests -----------------------------------------------------------------------------------------


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Short paths (Ray's socket paths must fit 107 bytes) under /tmp, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        yield path
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def run_id() -> str:
    return f"{run_seed()}-{secrets.token_hex(4)}"


def test_chaos_kuberay_on_the_fake_api(workdir: Path) -> None:
    target = FakeKubeTarget(workdir, run_id())
    profile = Profile(
        "kuberay", names=("c0", "c1", "c2", "c3"), ops=10, window=4.0, kills=(0, 1), seconds=60, rounds=100,
        converge_timeout=60, gone_timeout=60, minimize_seconds=60, max_replicas=2,
    )  # fmt: skip
    try:
        summary = asyncio.run(Chaos(target, profile).run())
    finally:
        target.close()
    finish(summary)


@pytest.mark.ray
def test_chaos_local_with_real_ray(workdir: Path) -> None:
    target = LocalTarget(workdir, run_id())
    profile = Profile(
        "local", names=("c0", "c1"), ops=6, window=6.0, kills=(0, 1), seconds=90, rounds=10,
        converge_timeout=240, gone_timeout=60, minimize_seconds=0, max_replicas=1, cli_kill_share=0.3,
    )  # fmt: skip
    chaos = Chaos(target, profile)
    try:
        summary = asyncio.run(chaos.run())
    finally:
        target.close()
        left = target.kill_leftovers(chaos.excluded)
    if left:
        summary.failures.append("processes of the run still running at the end (killed): " + "; ".join(left))
    finish(summary)


@pytest.mark.k8s
def test_chaos_kuberay_on_the_real_control_plane(
    workdir: Path, k8s_plane: Any, k8s_user: Callable[..., Any]
) -> None:
    target = RealKubeTarget(workdir, run_id(), k8s_plane, k8s_user("chaos"))
    profile = Profile(
        "kuberay", names=("c0", "c1", "c2"), ops=8, window=5.0, kills=(0, 1), seconds=45, rounds=10,
        converge_timeout=120, gone_timeout=90, minimize_seconds=0, max_replicas=2,
    )  # fmt: skip
    try:
        summary = asyncio.run(Chaos(target, profile).run())
    finally:
        target.close()
    finish(summary)
