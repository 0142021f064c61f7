"""The dashboard proxy and the push stream, against tiny real upstreams on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from tornado import web, websocket
from tornado.httpclient import HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.websocket import WebSocketClientConnection

from .memory_backend import MemoryBackend

SPEC = {
    "name": "demo",
    "workerGroups": [{"groupName": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 2}],
}


class EchoHandler(web.RequestHandler):
    """Answers with what it received, so tests can see exactly what the proxy forwarded."""

    def get(self, path: str) -> None:
        self.set_cookie("dashboard-session", "upstream")  # must never reach Jupyter's origin
        if self.request.headers.get("Accept") == "text/event-stream":
            self.set_header("Content-Type", "text/event-stream")
            self.finish("data: tick\n\n")
            return
        self.finish(
            {
                "path": path,
                "query": self.request.query,
                "headers": {k.lower(): v for k, v in self.request.headers.items()},
            }
        )

    def post(self, path: str) -> None:
        self.finish({"posted": self.request.body.decode()})

    def patch(self, path: str) -> None:
        self.finish({"patched": self.request.body.decode()})


class EchoSocket(websocket.WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(f"echo: {message}")


@pytest.fixture
def upstream(jp_serverapp: Any) -> Iterator[str]:
    """A stand-in Ray dashboard on a free loopback port, stopped after the test."""
    app = web.Application([(r"/ws", EchoSocket), (r"/(.*)", EchoHandler)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    server = HTTPServer(app)
    server.add_sockets([sock])
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.stop()


@pytest.fixture
def demo(service: Any, upstream: str) -> MemoryBackend:
    service.create(dict(SPEC))
    backend = service.backend
    backend.dashboards[(service.owner, "demo")] = upstream
    return backend


async def test_proxy_forwards_without_jupyter_credentials(
    jp_fetch: Any, jp_serverapp: Any, demo: MemoryBackend
) -> None:
    token = jp_serverapp.identity_provider.token
    response = await jp_fetch(
        "eksray",
        "clusters",
        "demo",
        "dashboard",
        "api",
        "version",
        params={"token": token, "x": "1"},
        headers={"Cookie": "username-secret=abc"},
    )
    echoed = json.loads(response.body)
    assert echoed["path"] == "api/version"
    assert echoed["query"] == "x=1"
    assert "authorization" not in echoed["headers"]
    assert "cookie" not in echoed["headers"]
    assert token not in response.body.decode()
    assert "dashboard-session" not in str(response.headers.get_list("Set-Cookie"))


async def test_proxy_drops_the_dashboards_cookies_from_event_streams_too(
    jp_fetch: Any, demo: MemoryBackend
) -> None:
    response = await jp_fetch(
        "eksray", "clusters", "demo", "dashboard", "events", headers={"Accept": "text/event-stream"}
    )
    assert response.body == b"data: tick\n\n"
    assert "dashboard-session" not in str(response.headers.get_list("Set-Cookie"))


async def test_proxy_adds_the_trailing_slash(jp_fetch: Any, demo: MemoryBackend) -> None:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("eksray", "clusters", "demo", "dashboard", follow_redirects=False)
    assert info.value.code == 302
    assert info.value.response.headers["Location"].endswith("/eksray/clusters/demo/dashboard/")


async def test_proxy_requires_authentication(jp_fetch: Any, demo: MemoryBackend) -> None:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(
            "eksray",
            "clusters",
            "demo",
            "dashboard",
            "x",
            headers={"Authorization": ""},
            follow_redirects=False,
        )
    assert info.value.code in (302, 403)  # browsers are sent to the login page, APIs refused
    assert "login" in info.value.response.headers.get("Location", "login")


async def test_proxy_unknown_cluster_is_404(jp_fetch: Any) -> None:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("eksray", "clusters", "ghost", "dashboard", "x")
    assert info.value.code == 404
    assert "ghost" in info.value.response.body.decode()


async def test_proxy_dashboard_not_up_is_503_page(jp_fetch: Any, service: Any) -> None:
    service.create(dict(SPEC))
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("eksray", "clusters", "demo", "dashboard/")
    assert info.value.code == 503
    page = info.value.response.body.decode()
    assert "still starting" in page
    assert 'http-equiv="refresh"' in page


async def test_proxy_never_reaches_another_owners_cluster(jp_fetch: Any, service: Any, upstream: str) -> None:
    backend = service.backend
    backend.create_cluster("somebody-else", dict(SPEC))
    backend.dashboards[("somebody-else", "demo")] = upstream
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("eksray", "clusters", "demo", "dashboard", "api")
    assert info.value.code == 404


async def test_proxy_websocket_pass_through(jp_ws_fetch: Any, demo: MemoryBackend) -> None:
    ws: WebSocketClientConnection = await jp_ws_fetch("eksray", "clusters", "demo", "dashboard", "ws")
    await ws.write_message("hello")
    assert await asyncio.wait_for(ws.read_message(), 10) == "echo: hello"
    ws.close()


async def test_proxy_websocket_refuses_unauthenticated(jp_ws_fetch: Any, demo: MemoryBackend) -> None:
    with pytest.raises(HTTPClientError) as info:
        await jp_ws_fetch("eksray", "clusters", "demo", "dashboard", "ws", headers={"Authorization": ""})
    assert info.value.code == 403


async def test_proxy_post_with_token(jp_fetch: Any, demo: MemoryBackend) -> None:
    response = await jp_fetch(
        "eksray", "clusters", "demo", "dashboard", "api", "jobs", method="POST", body="{}"
    )
    assert json.loads(response.body) == {"posted": "{}"}


async def test_proxy_patch_without_a_body_is_forwarded(jp_fetch: Any, demo: MemoryBackend) -> None:
    """Found by fuzzing: jupyter-server-proxy turns an empty PATCH body into None, and tornado's
    client refused to send that (a 500 page)."""
    response = await jp_fetch(
        "eksray", "clusters", "demo", "dashboard", "api", "x", method="PATCH", body=None,
        allow_nonstandard_methods=True,
    )  # fmt: skip
    assert json.loads(response.body) == {"patched": ""}


async def read_json(ws: WebSocketClientConnection) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.read_message(), 10)
    assert message is not None, "stream closed"
    return json.loads(message)


async def test_stream_snapshot_then_changes(jp_ws_fetch: Any, service: Any) -> None:
    service.create(dict(SPEC))
    ws = await jp_ws_fetch("eksray", "api", "stream")
    snapshot = await read_json(ws)
    assert snapshot["type"] == "snapshot"
    assert [c["name"] for c in snapshot["clusters"]] == ["demo"]
    assert snapshot["clusters"][0]["dashboardUrl"] is None
    assert (await read_json(ws))["type"] == "jobs"  # then the jobs (tests/test_jobs_stream.py)

    # A change made through the core (as the CLI or a magic would) reaches the socket.
    await asyncio.get_running_loop().run_in_executor(
        None, service.scale, "demo", {"workerGroups": [{"groupName": "cpu", "replicas": 2}]}
    )
    messages = [await read_json(ws), await read_json(ws)]
    kinds = {m["type"] for m in messages}
    assert kinds == {"event", "cluster"}
    cluster = next(m for m in messages if m["type"] == "cluster")["cluster"]
    assert cluster["workerGroups"][0]["replicas"] == 2
    event = next(m for m in messages if m["type"] == "event")
    assert event["name"] == "demo" and event["event"]["message"] == "Scaled"

    await asyncio.get_running_loop().run_in_executor(None, service.delete, "demo")
    assert await read_json(ws) == {"type": "deleted", "name": "demo"}
    ws.close()


async def test_a_change_made_while_the_snapshot_is_read_comes_after_it(
    jp_ws_fetch: Any, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the chaos suite (tests/test_chaos.py): a change pushed while a new socket's
    snapshot was being read went out before the snapshot, which (read earlier) then hid it: the
    panel showed a deleted cluster until it was reloaded."""
    service.create(dict(SPEC))
    read = service.list

    def read_then_deleted() -> Any:
        clusters = read()
        service.delete("demo")  # pushed while the snapshot is on its way
        return clusters

    monkeypatch.setattr(service, "list", read_then_deleted)
    ws = await jp_ws_fetch("eksray", "api", "stream")
    snapshot = await read_json(ws)
    assert snapshot["type"] == "snapshot" and [c["name"] for c in snapshot["clusters"]] == ["demo"]
    assert (await read_json(ws))["type"] == "jobs"
    assert await read_json(ws) == {"type": "deleted", "name": "demo"}
    ws.close()


async def test_stream_only_carries_the_owners_changes(jp_ws_fetch: Any, service: Any) -> None:
    ws = await jp_ws_fetch("eksray", "api", "stream")
    assert (await read_json(ws))["clusters"] == []
    assert (await read_json(ws))["type"] == "jobs"
    service.backend.create_cluster("somebody-else", dict(SPEC, name="theirs"))
    service.create(dict(SPEC, name="mine"))
    first = await read_json(ws)
    assert first.get("name", first.get("cluster", {}).get("name")) == "mine"
    ws.close()


async def test_stream_refuses_unauthenticated(jp_ws_fetch: Any) -> None:
    with pytest.raises(HTTPClientError) as info:
        await jp_ws_fetch("eksray", "api", "stream", headers={"Authorization": ""})
    assert info.value.code == 403


async def test_proxy_keeps_the_upstream_path_and_sends_backend_headers(
    jp_fetch: Any, service: Any, upstream: str
) -> None:
    """As for a Kubernetes API server's service proxy: a path prefix and a bearer token."""
    service.create(dict(SPEC))
    backend = service.backend
    backend.dashboards[(service.owner, "demo")] = (
        upstream + "/api/v1/namespaces/ns/services/demo-head-svc:dashboard/proxy"
    )
    backend.dashboard_headers = {"Authorization": "Bearer upstream-secret"}
    response = await jp_fetch("eksray", "clusters", "demo", "dashboard", "api", "version")
    echoed = json.loads(response.body)
    assert echoed["path"] == "api/v1/namespaces/ns/services/demo-head-svc:dashboard/proxy/api/version"
    assert echoed["headers"]["authorization"] == "Bearer upstream-secret"


@pytest.mark.parametrize("path", ["..%2f..%2fsecrets", "%2e%2e/x", "a/%252e%252e/b", "a/..%5c..%5cb"])
async def test_proxy_refuses_paths_that_climb_out(jp_fetch: Any, demo: MemoryBackend, path: str) -> None:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("eksray", "clusters", "demo", "dashboard/" + path)
    assert info.value.code == 400
    assert "may not contain" in info.value.response.body.decode()


@pytest.mark.parametrize(
    ("route", "allowed"),
    [
        (("eksray", "api", "stream"), {"GET"}),
        (
            ("eksray", "clusters", "demo", "dashboard", "x"),
            {"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"},
        ),
    ],
)
async def test_methods_not_answered_are_405_with_allow(
    jp_fetch: Any, demo: MemoryBackend, route: tuple[str, ...], allowed: set[str]
) -> None:
    """Found by fuzzing: both said 405 without ``Allow``, and TRACE (refused before the user is
    known) broke Jupyter's error page: an exception in the log and an empty answer."""
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*route, method="TRACE", allow_nonstandard_methods=True)
    assert info.value.code == 405
    assert set(info.value.response.headers["Allow"].split(", ")) == allowed
    assert info.value.response.body  # an answer, not a failed error page


async def test_a_form_body_that_cannot_be_parsed_is_a_400_page(jp_fetch: Any, demo: MemoryBackend) -> None:
    """Found by fuzzing: tornado parses form bodies before the user is known, and the failure broke
    Jupyter's error page (an exception in the log, an empty 400)."""
    for route in (("eksray", "clusters", "demo", "dashboard", "x"), ("eksray", "api", "stream")):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(
                *route,
                method="DELETE",
                body=b"--x\r\n",
                headers={"Content-Type": "multipart/form-data"},
                allow_nonstandard_methods=True,
            )
        assert info.value.code == 400, route
        assert b"Bad Request" in info.value.response.body, route


@pytest.mark.parametrize("down", [False, True])
async def test_proxy_websocket_the_dashboard_refuses_ends_with_1011(
    jp_ws_fetch: Any, demo: MemoryBackend, service: Any, down: bool
) -> None:
    """Found by hostile input (tests/test_api_fuzz.py): a dashboard that answers a websocket with
    plain HTTP, or is down, was an uncaught exception in the proxy and a socket dropped without a
    close frame."""
    if down:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed again: nothing listens there
        demo.dashboards[(service.owner, "demo")] = f"http://127.0.0.1:{port}"
    ws: WebSocketClientConnection = await jp_ws_fetch("eksray", "clusters", "demo", "dashboard", "plain-http")
    try:
        assert await asyncio.wait_for(ws.read_message(), 10) is None
        assert (ws.close_code, ws.close_reason) == (1011, "The Ray dashboard did not accept the websocket")
    finally:
        ws.close()
