"""The REST API and the push stream with ``c.EKSRay.backend = "kuberay"``, pointed at the fake API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from .fakekube import FakeKubeServer, pytest_plugin
from .waiting import eventually

NS = "eksray-alice"

# The fake API server's fixtures, used by name below.
fakekube = pytest_plugin.fakekube
fakekube_kubeconfig = pytest_plugin.fakekube_kubeconfig


@pytest.fixture
def backend_class() -> str:
    return "kuberay"


@pytest.fixture
def jp_server_config(
    state_dir: Path,
    fakekube: FakeKubeServer,
    fakekube_kubeconfig: Path,
) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"eksray_jupyter": True}},
        "EKSRay": {"state_dir": str(state_dir), "backend": "kuberay", "owner": "alice"},
        "KubeRayBackend": {
            "credentials": "kubeconfig",
            "kubeconfig": str(fakekube_kubeconfig),
            "dashboard_access": "apiserver-proxy",
            "dashboard_poll_seconds": 0.2,
        },
    }


async def call(jp_fetch: Any, *path: str, method: str = "GET", body: Any = None) -> Any:
    response = await jp_fetch(
        "eksray", "api", *path, method=method, body=None if body is None else json.dumps(body)
    )
    return json.loads(response.body) if response.body else response.code


async def test_rest_api_on_kuberay(jp_fetch: Any, fakekube: FakeKubeServer) -> None:
    config = await call(jp_fetch, "config")
    assert config["backend"] == "kuberay"
    assert (await call(jp_fetch, "clusters")) == {"clusters": []}

    created = await call(jp_fetch, "clusters", method="POST", body={"name": "demo", "profile": "cpu-small"})
    assert created["namespace"] == NS and created["backend"] == "kuberay"
    assert created["address"] == f"ray://demo-head-svc.{NS}.svc:10001"

    async def is_ready() -> Any:
        detail = await call(jp_fetch, "clusters", "demo")
        return detail if detail["phase"] == "ready" else None

    detail = await eventually(is_ready)
    assert detail["dashboardUrl"].endswith(
        "/eksray/clusters/demo/dashboard/"
    )  # our proxy, never the raw address
    assert [n["kind"] for n in detail["nodes"]] == ["head", "worker"]

    scaled = await call(
        jp_fetch,
        "clusters",
        "demo",
        method="PATCH",
        body={"workerGroups": [{"groupName": "cpu", "maxReplicas": 3}]},
    )
    assert scaled["workerGroups"][0]["maxReplicas"] == 3
    assert fakekube.get("rayclusters", NS, "demo")["spec"]["workerGroupSpecs"][0]["maxReplicas"] == 3

    async def with_scaled() -> Any:  # Kubernetes events reach the server's cache through their own watch
        events = (await call(jp_fetch, "clusters", "demo", "events"))["events"]
        return {"Created", "Scaled", "CreatedHeadPod"} <= {e["reason"] for e in events} and events

    events = await eventually(with_scaled, "the Scaled event")
    assert "fake-token" not in json.dumps(events)

    with pytest.raises(HTTPClientError) as info:
        await call(
            jp_fetch,
            "clusters",
            "demo",
            method="PATCH",
            body={"workerGroups": [{"groupName": "gpu", "replicas": 1}]},
        )
    assert info.value.code == 400

    fakekube.inject_error(500, count=1, method="DELETE", path="rayclusters/demo")
    with pytest.raises(HTTPClientError) as info:
        await call(jp_fetch, "clusters", "demo", method="DELETE")
    assert info.value.code == 502
    assert "fake-token" not in info.value.response.body.decode()

    assert await call(jp_fetch, "clusters", "demo", method="DELETE") == 204

    async def gone() -> bool:
        try:
            await call(jp_fetch, "clusters", "demo")
        except HTTPClientError as e:
            return e.code == 404
        return False

    await eventually(gone)


async def test_stream_pushes_kuberay_changes(
    jp_fetch: Any, jp_ws_fetch: Any, fakekube: FakeKubeServer
) -> None:
    await call(jp_fetch, "clusters", method="POST", body={"name": "demo", "profile": "cpu-small"})
    ws = await jp_ws_fetch("eksray", "api", "stream")
    try:
        snapshot = json.loads(await asyncio.wait_for(ws.read_message(), 15))
        assert snapshot["type"] == "snapshot" and [c["name"] for c in snapshot["clusters"]] == ["demo"]
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: fakekube.autoscale(NS, "demo", "cpu", replicas=2)
        )
        while True:
            message = json.loads(await asyncio.wait_for(ws.read_message(), 15))
            if message["type"] == "cluster" and message["cluster"]["workerGroups"][0]["ready"] == 2:
                break
        assert message["cluster"]["owner"] == "alice"
    finally:
        ws.close()


async def test_the_dashboard_proxy_and_kernels_get_the_clusters_ray_token(
    jp_fetch: Any, fakekube: FakeKubeServer, service: Any, state_dir: Path
) -> None:
    """Through eksray's dashboard proxy and the API server's service proxy, the dashboard sees
    the cluster's own token (never one a client sent); a kernel gets the path of its file."""
    import base64

    from tests.stub_http import JSONHandler, StubServer

    seen: dict[str, str | None] = {}

    class Dashboard(JSONHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/api/version"):
                seen["token"] = self.headers.get("X-Ray-Authorization")
            self.send_json({"ray_version": "2.60.0"})

    stub = StubServer(Dashboard)
    try:
        await call(jp_fetch, "clusters", method="POST", body={"name": "demo", "profile": "cpu-small"})

        async def is_ready() -> Any:
            return (await call(jp_fetch, "clusters", "demo"))["phase"] == "ready"

        await eventually(is_ready)
        fakekube.set_proxy_upstream(NS, "demo-head-svc", stub.url, port="dashboard")
        response = await jp_fetch(
            "eksray", "clusters", "demo", "dashboard", "api", "version",
            headers={"X-Ray-Authorization": "Bearer forged-by-the-client"},
        )  # fmt: skip
        secret = fakekube.get("secrets", NS, "demo")
        token = base64.b64decode(secret["data"]["auth_token"]).decode()
        assert seen["token"] == f"Bearer {token}"
        assert token not in response.body.decode() and token not in json.dumps(dict(response.headers))

        connection = await asyncio.get_running_loop().run_in_executor(None, service.connection, "demo")
        path = Path(connection.env["RAY_AUTH_TOKEN_PATH"])
        assert connection.env["RAY_AUTH_MODE"] == "token" and path.is_relative_to(state_dir)
        content, mode = await asyncio.get_running_loop().run_in_executor(
            None, lambda: (path.read_text(), path.stat().st_mode & 0o777)
        )
        assert content == token and mode == 0o600
        assert token not in json.dumps(connection.driver_env())
    finally:
        stub.close()
