"""``/_fake/*``: the fake's controls over HTTP (no token), for a server run as a process
(``python -m tests.fakekube``): faults, operator settings, proxy upstreams, the autoscaler's
patch, compaction, pod life cycle and the accepted tokens. Runs on the server's loop."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import ApiError, bad_request, path_not_found

if TYPE_CHECKING:
    from .handler import ApiHandler
    from .server import FakeKubeServer


def serve_admin(server: FakeKubeServer, handler: ApiHandler) -> None:
    path = handler.request.path.rstrip("/")
    method = handler.request.method
    body = handler.body_json() if method == "POST" else None
    if body is not None and not isinstance(body, dict):
        raise bad_request("admin requests take a JSON object")
    body = body or {}
    if path == "/_fake/healthz":
        return handler.send_json(200, {"ok": True})
    if path == "/_fake/faults":
        if method == "POST":
            _faults(server, body)
        return handler.send_json(200, server.faults.as_dict())
    if path == "/_fake/operator":
        if method == "POST":
            server.operator.configure(**body)
        return handler.send_json(200, server.operator.config.as_dict())
    if path == "/_fake/upstreams" and method == "POST":
        server.set_proxy_upstream(
            body["namespace"],
            body["service"],
            body.get("url"),
            body.get("port"),
            body.get("kind", "services"),
        )
        return handler.send_json(200, {"ok": True})
    if path == "/_fake/autoscale" and method == "POST":
        obj = server.autoscale(
            body.get("namespace", "default"),
            body["cluster"],
            body["group"],
            body.get("replicas"),
            body.get("workersToDelete"),
        )
        return handler.send_json(200, obj)
    if path == "/_fake/compact" and method == "POST":
        server.store.compact()
        return handler.send_json(200, {"compactedResourceVersion": server.store.compacted_rv})
    if path == "/_fake/pods" and method == "POST":
        _pods(server, body)
        return handler.send_json(200, {"ok": True})
    if path == "/_fake/tokens" and method == "POST":
        tokens = body.get("tokens")
        server.tokens = set(tokens) if tokens is not None else None
        return handler.send_json(200, {"ok": True})
    raise path_not_found()


def _faults(server: FakeKubeServer, body: Mapping[str, Any]) -> None:
    if body.get("clear"):
        server.clear_faults()
    if "latency" in body:
        server.faults.latency = float(body["latency"])
    if "force_410" in body:
        server.faults.force_410 = int(body["force_410"])
    if body.get("drop_watches"):
        server.watches.close_all(abrupt=body["drop_watches"] != "graceful")
    for rule in body.get("errors") or []:
        server.inject_error(
            int(rule["code"]),
            int(rule.get("count", 1)),
            rule.get("method"),
            rule.get("path"),
            rule.get("message"),
            rule.get("retry_after"),
        )
    down = body.get("api_down")
    if down:
        if isinstance(down, int | float):
            seconds, mode = float(down), "503"
        else:
            seconds, mode = float(down["seconds"]), str(down.get("mode", "503"))
        server.faults.api_down_mode = mode
        server.faults.api_down_until = time.monotonic() + seconds
        # A little later, so that this answer goes out before the API goes down.
        server.loop.call_later(0.05, lambda: server.outage(seconds - 0.05, mode))


def _pods(server: FakeKubeServer, body: Mapping[str, Any]) -> None:
    pods = server.operator.pods
    action = body.get("action")
    ns, name = body.get("namespace", "default"), body.get("name")
    if action == "release":
        pods.release(body.get("namespace"), name)
    elif action == "ready" and name:
        pods.set_ready(ns, name, bool(body.get("ready", True)))
    elif action == "fail" and name:
        pods.fail(ns, name, body.get("reason", "Error"))
    else:
        raise ApiError(400, f"unknown pod action {action!r}")
