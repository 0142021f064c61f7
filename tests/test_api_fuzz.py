"""Schemathesis over every operation of schema/openapi.yaml, against real Jupyter servers.

Each face is a Jupyter server with the extension, started in its own process on a free port and
stopped by its PID; schemathesis sends it requests made from the document, valid ones and
invalid ones (positive and negative), and for every answer these must hold:

- no 5xx; the status, content type, headers and body are as documented; JSON is strict JSON (no
  bare NaN); the server logs no traceback;
- a request the document calls invalid is refused (4xx): the document says nothing the server
  does not check (schemathesis's ``negative_data_rejection``);
- a request the document calls valid is refused with a 400 only for one of the rules its
  description lists as needing the server's state, settings or backend (:data:`STATE_RULES`):
  the server checks nothing the document does not say. (Schemathesis's own
  ``positive_data_acceptance`` wants a 2xx, but a 404, a 409 and those rules are right answers to
  valid requests.)
- a method the document does not list is a 405 with ``Allow``; without the token, a refusal.
  (``missing_required_header`` is off: it wants a 401 for a missing ``Authorization``, and
  Jupyter answers 403, as documented; ``ignored_auth`` still checks that the token is needed.)

The faces:

- memory: the in-memory test backend (tests/memory_backend.py, its dashboards a stub so the
  proxy has something to pass requests to) and a job runner that starts no process
  (tests/fuzz_server.py). The local backend would start real Ray processes for every cluster
  created (seconds each, and the machine's node limit after a few) and its job runner a
  supervisor process per job: hundreds of generated creates and submits would take hours and the
  machine. Everything in front of the backend is the real server's: parsing, validation, error
  mapping, serialisation, the dashboard proxy, the job stores (local, and S3 on moto).
- kuberay: the KubeRay backend and RayJob runner as configured in production, against
  tests/fakekube (which answers like an API server and checks objects against the KubeRay CRDs),
  run as a process of its own.

Not fuzzed, and why: the push stream (``GET /eksray/api/stream``) and the dashboard proxy's
websockets: schemathesis speaks HTTP only. ``test_stream_*`` and ``test_dashboard_websocket_*``
below send them hostile inputs by hand. The proxy's HTTP methods are fuzzed; their answers past
our own (302, 400, 403, 404, 503) are the stub dashboard's.

Bounded and deterministic: Hypothesis derandomized, no example database, at most
:data:`MAX_EXAMPLES` generated cases per operation and phase (schemathesis adds its boundary and
method cases): the same requests every run, about a minute for both faces. To look further,
``EKSRAY_FUZZ_SEED=N`` makes other, random cases and ``EKSRAY_FUZZ_EXAMPLES=N`` more of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from tornado import httpclient, websocket

from .fuzz_server import DASHBOARD_ENV
from .stub_http import JSONHandler, StubServer
from .test_jobs_store import make_bucket, moto_url

__all__ = ["moto_url"]  # a fixture, used by name

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "schema" / "openapi.yaml"
NS = "eksray-alice"
BUCKET = "fuzz-jobs"
MAX_EXAMPLES = int(os.environ.get("EKSRAY_FUZZ_EXAMPLES", "25"))
SEED = os.environ.get("EKSRAY_FUZZ_SEED")
#: Both faces' servers take this token; schemathesis sends it (and leaves it out to check that
#: the server then refuses).
TOKEN = secrets.token_hex(16)

CONFIG = f"""
seed = {SEED or 1}
[auth.openapi.token]
api_key = "token {TOKEN}"
[generation]
max-examples = {MAX_EXAMPLES}
deterministic = {"false" if SEED else "true"}
database = "none"
mode = "all"
[checks]
positive_data_acceptance.enabled = false
missing_required_header.enabled = false

# Not authenticated, the proxy sends a browser to the login page.
[[operations]]
include-path-regex = "/dashboard/"
checks.negative_data_rejection.expected-statuses = ["302", "400", "403", "404"]
"""

schema = schemathesis.openapi.from_path(DOC, config=schemathesis.Config.from_str(CONFIG)).exclude(
    path="/eksray/api/stream"  # a websocket: see test_stream_* below
)


def positive(case: schemathesis.Case, location: ParameterLocation | None = None) -> bool:
    """Whether the case (or one part of it) was generated valid by the document."""
    if case.meta is None:
        return False
    if location is None:
        return case.meta.generation.mode == GenerationMode.POSITIVE
    info = case.meta.components.get(location)
    return info is not None and info.mode == GenerationMode.POSITIVE


def coin(value: Any) -> bool:
    """Heads for half of the values, the same every run (a checksum, not a random draw)."""
    return zlib.crc32(json.dumps(value, sort_keys=True, default=str).encode()) % 2 == 0


#: The rules the document states in prose because they need the server's state or settings (or
#: the backend's runner): the only reasons a request the document allows may still be a 400. Any
#: other refusal of such a request is a rule the server enforces and the document does not say.
CLUSTER_RULES = (
    "no profile ", "must not exceed maxReplicas", "must be between minReplicas", "duplicate group name",
    # kuberay
    "is not allowed; use one of", " or later", "must be a whole number on Kubernetes",
)  # fmt: skip
STATE_RULES = {
    ("POST", "/eksray/api/clusters"): CLUSTER_RULES,
    ("PATCH", "/eksray/api/clusters/{name}"): (
        "no worker group ", "must not exceed maxReplicas", "must be between minReplicas",
    ),
    ("POST", "/eksray/api/jobs"): (
        *CLUSTER_RULES, "no directory ", "all of it would be uploaded", "holds more than",
        "you have no cluster named", "no S3 bucket", "with the kuberay backend", "KubeRay retries a job only",
    ),
    ("GET", "/eksray/api/jobs/{job_id}/logs"): ("past the end of the log", "not both", "tail already says"),
}  # fmt: skip


def check_refusal(case: schemathesis.Case, response: Any) -> None:
    if response.status_code != 400 or not positive(case) or not case.path.startswith("/eksray/api/"):
        return  # (the dashboard proxy passes on whatever the dashboard answers)
    body = response.json()
    rules = STATE_RULES.get((case.method, case.path), ())
    errors = body.get("errors") or [{"path": "", "message": body.get("message", "")}]
    unstated = [e for e in errors if not any(rule in e["message"] for rule in rules)]
    assert not unstated, (
        f"A request the document allows was refused for a rule it does not state: {unstated}\n"
        f"{case.as_curl_command()}"
    )


def steer(case: schemathesis.Case, server: LiveServer) -> None:
    """Half the valid paths name the face's cluster ``demo`` or its finished job (and its result),
    half the valid scale requests name demo's group, half the valid profiles are real ones: so the
    requests get past the 404 (or the 400 for a group or profile that is not there) to the code
    behind it. Values stay valid, and the same cases are made every run."""
    if case.path_parameters and positive(case, ParameterLocation.PATH) and coin(case.path_parameters):
        if "name" in case.path_parameters:
            case.path_parameters["name"] = "demo"
        if "job_id" in case.path_parameters:
            case.path_parameters["job_id"] = server.known_job
            if "path" in case.path_parameters:
                case.path_parameters["path"] = "out/metrics.csv"
    body = case.body if isinstance(case.body, dict) else None
    if body is None or not positive(case, ParameterLocation.BODY) or not coin(body):
        return
    if case.method == "PATCH" and isinstance(body.get("workerGroups"), list):
        for change in body["workerGroups"]:
            change["groupName"] = "cpu"  # the group of demo's profile (cpu-small)
    for request in (body, body.get("cluster")):
        if isinstance(request, dict) and "profile" in request:
            request["profile"] = "tagged" if coin(request["profile"]) else "cpu-small"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DashboardStub(JSONHandler):
    """A Ray dashboard upstream: a Ray job's log for the KubeRay runner, 404 for the other APIs
    the backends read, and for every other path and method an echo of the request."""

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if re.fullmatch(r"/api/jobs/[^/]+/logs", self.path.split("?")[0]):
            self.send_json({"logs": "hello from the stub dashboard\n"})
        elif self.path.startswith("/api/"):
            self.send_json({"message": "not in this stub"}, 404)
        else:
            self.send_json({"method": self.command, "path": self.path})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = answer

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


class LiveServer:
    """A Jupyter server with the extension, in its own process (stopped by its PID)."""

    def __init__(self, directory: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.token = TOKEN
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "server.log"
        root = directory / "root"
        root.mkdir()
        config_file = directory / "config.json"
        config.setdefault("ServerApp", {})["jpserver_extensions"] = {
            "eksray_jupyter": True, "jupyterlab": False, "jupyter_lsp": False,
            "jupyter_server_terminals": False, "notebook_shim": False,
        }  # fmt: skip
        config_file.write_text(json.dumps(config))
        argv = [
            sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={self.port}",
            "--ip=127.0.0.1", f"--IdentityProvider.token={self.token}", f"--config={config_file}",
            f"--ServerApp.root_dir={root}",
        ]  # fmt: skip
        environ = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "JUPYTER_CONFIG_DIR": str(directory / "jupyter-config"),
            "JUPYTER_DATA_DIR": str(directory / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(directory / "jupyter-runtime"),
            **(env or {}),
        }
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=environ)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        self.known_job = ""
        self._log_seen = 0

    def new_log(self) -> str:
        """What the server logged since the last call."""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_seen)
            data = f.read()
        self._log_seen += len(data)
        return data.decode(errors="replace")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def wait_for(self, path: str, ready: Any, what: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.request("GET", path)
            if status == 200 and ready(body):
                return body
            assert time.monotonic() < deadline, f"{what}: last {status} {body}"
            time.sleep(0.1)

    def create_demo(self) -> None:
        """(Again: a deleted cluster may take a moment to be gone, 409 meanwhile.)"""
        deadline = time.monotonic() + 60
        while True:
            status, body = self.request(
                "POST", "/eksray/api/clusters", {"name": "demo", "profile": "cpu-small"}
            )
            if status != 409 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 201, body

    def prepare(self) -> None:
        """The cluster ``demo`` and a finished job with a result, which half the requests name."""
        self.create_demo()
        status, job = self.request("POST", "/eksray/api/jobs", {"entrypoint": "python train.py"})
        assert status == 201, job
        self.known_job = job["id"]
        self.wait_for(f"/eksray/api/jobs/{job['id']}", lambda j: j["state"] == "succeeded", "the known job")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def dashboard() -> Iterator[StubServer]:
    stub = StubServer(DashboardStub)
    try:
        yield stub
    finally:
        stub.close()


@pytest.fixture(scope="module")
def s3(moto_url: str) -> dict[str, str]:
    """Job stores in S3 (moto): ``{"type": "s3"}`` without a bucket is this one; others do not exist."""
    make_bucket(moto_url, BUCKET)
    return {"job_s3_endpoint_url": moto_url, "job_s3_bucket": BUCKET, "job_s3_region": "us-east-1"}


@pytest.fixture(scope="module")
def memory_server(
    tmp_path_factory: pytest.TempPathFactory, dashboard: StubServer, s3: dict[str, str]
) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("memory-face")
    server = LiveServer(
        directory,
        {
            "EKSRay": {
                "backend": "tests.fuzz_server.DashboardMemoryBackend",
                "job_runner": "tests.fuzz_server.InstantRunner",
                "state_dir": str(directory / "state"),
                "owner": "alice",
                **s3,
            }
        },
        {DASHBOARD_ENV: dashboard.url},
    )
    try:
        server.prepare()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fakekube_process(tmp_path_factory: pytest.TempPathFactory, dashboard: StubServer) -> Iterator[Path]:
    """The fake Kubernetes API server, its operator running RayJobs, in a process of its own: in
    this one its threads would draw from ``random`` while Hypothesis generates (which it refuses).
    Yields its kubeconfig; the cluster ``demo``'s dashboard is the stub."""
    directory = tmp_path_factory.mktemp("fakekube")
    kubeconfig = directory / "kubeconfig"
    argv = [
        sys.executable, "-m", "tests.fakekube", "--rayjobs", "--job-duration", "0.3",
        "--pod-ready-delay", "0.05", "--bookmark-interval", "0.2", "--kubeconfig", str(kubeconfig),
        "--upstream", f"{NS}/demo-head-svc={dashboard.url}",
    ]  # fmt: skip
    log_path = directory / "fakekube.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
    try:
        deadline = time.monotonic() + 60
        while b"FAKEKUBE_KUBECONFIG=" not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the fake API server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        yield kubeconfig
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def kuberay_server(
    tmp_path_factory: pytest.TempPathFactory, fakekube_process: Path, s3: dict[str, str]
) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("kuberay-face")
    server = LiveServer(
        directory,
        {
            "EKSRay": {"backend": "kuberay", "state_dir": str(directory / "state"), "owner": "alice", **s3},
            "KubeRayBackend": {
                "credentials": "kubeconfig",
                "kubeconfig": str(fakekube_process),
                "dashboard_access": "apiserver-proxy",
                "dashboard_poll_seconds": 0.5,
            },
        },
        {"KUBECONFIG": str(fakekube_process)},
    )
    try:
        server.create_demo()
        server.wait_for("/eksray/api/clusters/demo", lambda c: c["phase"] == "ready", "demo ready")
        status, job = server.request("POST", "/eksray/api/jobs", {"entrypoint": "python train.py"})
        assert status == 201, job
        server.known_job = job["id"]
        server.wait_for(
            f"/eksray/api/jobs/{job['id']}", lambda j: j["state"] in ("succeeded", "failed"), "the known job"
        )
        yield server
    finally:
        server.stop()


def strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} in a JSON answer: no browser parses it")

    return json.loads(text, parse_constant=refuse)


def run(case: schemathesis.Case, server: LiveServer) -> None:
    steer(case, server)
    response = case.call_and_validate(base_url=server.url, timeout=30)
    content_type = response.headers.get("content-type", [""])[0]
    if content_type.startswith("application/json") and response.content:
        strict_json(response.text)
    check_refusal(case, response)
    logged = server.new_log()
    assert "Traceback" not in logged, f"the server logged an exception:\n{logged[-5000:]}"
    # Keep room under the cluster limit, and the cluster half the requests name.
    if case.method == "POST" and case.path == "/eksray/api/clusters" and response.status_code == 201:
        server.request("DELETE", f"/eksray/api/clusters/{response.json()['name']}")
    deleted = (
        case.method == "DELETE" and case.path == "/eksray/api/clusters/{name}" and response.status_code == 204
    )
    if deleted and case.path_parameters["name"] == "demo":
        server.create_demo()


@schema.parametrize()
def test_memory_face(case: schemathesis.Case, memory_server: LiveServer) -> None:
    run(case, memory_server)


@schema.parametrize()
def test_kuberay_face(case: schemathesis.Case, kuberay_server: LiveServer) -> None:
    run(case, kuberay_server)


# --- What schemathesis cannot send: websockets, by hand ----------------------------------------


def ws_url(server: LiveServer, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


async def ws_open(server: LiveServer, path: str, **headers: str) -> websocket.WebSocketClientConnection:
    request = httpclient.HTTPRequest(ws_url(server, path), headers={**server.headers, **headers})
    return await websocket.websocket_connect(request)


async def ws_refusal(server: LiveServer, path: str, **headers: str) -> int:
    with pytest.raises(httpclient.HTTPClientError) as info:
        await ws_open(server, path, **headers)
    return info.value.code


async def read_until_closed(ws: websocket.WebSocketClientConnection) -> tuple[int | None, str | None]:
    try:
        while await asyncio.wait_for(ws.read_message(), 15) is not None:
            pass
        return ws.close_code, ws.close_reason
    finally:
        await ws_close(ws)


async def ws_close(ws: websocket.WebSocketClientConnection) -> None:
    """Close and wait until the connection is (the event loop ends right after)."""
    closed_by_server = ws.close_code is not None
    ws.close()
    if not closed_by_server:
        with contextlib.suppress(asyncio.TimeoutError):
            while await asyncio.wait_for(ws.read_message(), 5) is not None:
                pass
    await asyncio.sleep(0.05)  # the stream's close callbacks


def assert_no_exception_logged(server: LiveServer) -> None:
    logged = server.new_log()
    assert "Traceback" not in logged, logged[-5000:]


def test_stream_answers_websocket_upgrades_only(memory_server: LiveServer) -> None:
    request = urllib.request.Request(memory_server.url + "/eksray/api/stream", headers=memory_server.headers)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 400  # not an upgrade
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"):
        request = urllib.request.Request(
            memory_server.url + "/eksray/api/stream", data=b"{}", method=method, headers=memory_server.headers
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert info.value.code == 405, method
        assert info.value.headers["Allow"] == "GET", method
        assert "websocket" in strict_json(info.value.read())["message"], method
    assert_no_exception_logged(memory_server)


def test_stream_refuses_hostile_upgrades(memory_server: LiveServer) -> None:
    async def refusals() -> list[int]:
        return [
            await ws_refusal(memory_server, "/eksray/api/stream", Authorization=""),
            await ws_refusal(memory_server, "/eksray/api/stream", Authorization="token wrong"),
        ]

    assert asyncio.run(refusals()) == [403, 403]
    connection = http.client.HTTPConnection("127.0.0.1", memory_server.port, timeout=30)
    try:
        connection.request("GET", "/eksray/api/stream", headers={
            **memory_server.headers,
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "12",
        })  # fmt: skip
        answer = connection.getresponse()
    finally:
        connection.close()
    assert answer.status == 426
    assert_no_exception_logged(memory_server)


def test_stream_ignores_what_clients_send(memory_server: LiveServer) -> None:
    """Clients only listen: commands, garbage, binary and large messages change nothing, and the
    socket (and the next one) still gets the stream."""

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        ws = await ws_open(memory_server, "/eksray/api/stream")
        try:
            snapshot = strict_json(await asyncio.wait_for(ws.read_message(), 15))
            for message in (
                json.dumps({"type": "deleted", "name": "demo"}),
                json.dumps({"type": "cluster", "cluster": {"name": "evil"}}),
                "not json at all \x00\ufffd",
                b"\x00\xff" * 1000,
                "x" * (1 << 20),
            ):
                await ws.write_message(message, binary=isinstance(message, bytes))
            # Still served: a change made now arrives.
            status, _ = memory_server.request("POST", "/eksray/api/clusters", {"name": "streamed"})
            assert status == 201
            while True:
                message = strict_json(await asyncio.wait_for(ws.read_message(), 15))
                if message["type"] == "cluster" and message["cluster"]["name"] == "streamed":
                    break
            memory_server.request("DELETE", "/eksray/api/clusters/streamed")
        finally:
            await ws_close(ws)
        again = await ws_open(memory_server, "/eksray/api/stream")
        try:
            return snapshot, strict_json(await asyncio.wait_for(again.read_message(), 15))
        finally:
            await ws_close(again)

    first, second = asyncio.run(scenario())
    assert first["type"] == second["type"] == "snapshot"
    assert [c["name"] for c in second["clusters"]] == [c["name"] for c in first["clusters"]]
    assert "demo" in [c["name"] for c in second["clusters"]]
    assert_no_exception_logged(memory_server)


def test_dashboard_websocket_hostile_paths(memory_server: LiveServer) -> None:
    """The proxy's websockets: no path out of the dashboard, no other cluster, no anonymous user,
    and a dashboard that does not speak websockets ends the socket, not the server."""

    async def scenario() -> list[Any]:
        outcomes: list[Any] = [
            await ws_refusal(memory_server, "/eksray/clusters/demo/dashboard/ws", Authorization="")
        ]
        for path in (
            "/eksray/clusters/demo/dashboard/..%2F..%2Fapi%2Fv1%2Fsecrets",
            "/eksray/clusters/demo/dashboard/%252e%252e/x",
            "/eksray/clusters/nobody/dashboard/ws",
            "/eksray/clusters/demo/dashboard/ws",  # the stub dashboard answers HTTP only
        ):
            try:
                ws = await ws_open(memory_server, path)
            except httpclient.HTTPClientError as e:
                outcomes.append(e.code)
                continue
            outcomes.append((await read_until_closed(ws))[0])
        return outcomes

    anonymous, climb, double_encoded, nobody, no_websockets = asyncio.run(scenario())
    assert anonymous == 403
    assert climb == double_encoded == 1008  # policy violation, before any upstream is asked
    assert nobody == 1011
    assert no_websockets == 1011  # found by this test: it was an exception and no close frame
    assert_no_exception_logged(memory_server)
