"""The API server's service and pod proxy (``.../services/{name}[:port]/proxy/...``): the
Ray dashboard behind the head Service, which KWOK pods on the real control plane cannot serve.
Tests map a service (or pod) to a local upstream, e.g. a stub dashboard; the proxy answers as
the real one does while no ready endpoint or no upstream is there (503), else forwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import tornado.httpclient

from .errors import ApiError, not_found
from .handler import status_line_reason
from .objects import pod_ready
from .selection import LabelSelector
from .store import ResourceType, Store

if TYPE_CHECKING:
    from .handler import ApiHandler

_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "authorization",
    "content-encoding",
}


class ServiceProxy:
    """Upstreams by (kind, namespace, name, port) and the forwarding of proxied requests."""

    def __init__(self) -> None:
        self._upstreams: dict[tuple[str, str, str], dict[str | None, str]] = {}
        self._http_client: tornado.httpclient.AsyncHTTPClient | None = None

    def close(self) -> None:
        if self._http_client is not None:
            self._http_client.close()
            self._http_client = None

    def set_upstream(
        self,
        namespace: str,
        service: str,
        url: str | None,
        port: str | int | None = None,
        kind: str = "services",
    ) -> None:
        """Forward ``/api/v1/namespaces/{ns}/services/{service}[:port]/proxy/...`` to
        ``url`` (e.g. a local fake Ray dashboard). ``port`` None matches any port.
        ``url=None`` removes the mapping. ``kind="pods"`` does the same for the pod proxy."""
        key = (kind, namespace, service)
        ports = self._upstreams.setdefault(key, {})
        pkey = None if port is None else str(port)
        if url is None:
            ports.pop(pkey, None)
        else:
            ports[pkey] = url.rstrip("/")

    def _upstream(self, kind: str, ns: str, name: str, port_keys: Iterable[str]) -> str | None:
        ports = self._upstreams.get((kind, ns, name)) or {}
        for key in port_keys:
            if key in ports:
                return ports[key]
        return ports.get(None)

    async def forward(
        self, handler: ApiHandler, store: Store, rt: ResourceType, ns: str, name_spec: str, path: str
    ) -> None:
        """Answers ``handler``'s request to ``.../{rt}/{name_spec}/proxy/{path}``."""
        name, port = _name_and_port(name_spec)
        obj = store.peek(rt, ns, name)
        if obj is None:
            raise not_found(rt, name)
        if rt.key == "services":
            keys, target = _service_target(store, ns, obj, port, name_spec)
        else:
            keys, target = _pod_target(obj, name, port)
        upstream = self._upstream(rt.key, ns, name, keys)
        if upstream is None:
            raise ApiError(
                503,
                f"error trying to reach service: dial tcp {target}: connect: connection refused",
                "ServiceUnavailable",
            )
        url = f"{upstream}/{path}" if path else upstream + "/"
        if handler.request.query:
            url += "?" + handler.request.query
        await self._relay(handler, url)

    async def _relay(self, handler: ApiHandler, url: str) -> None:
        headers = {k: v for k, v in handler.request.headers.get_all() if k.lower() not in _HOP_HEADERS}
        method = handler.request.method or "GET"
        body = handler.request.body if method in ("POST", "PUT", "PATCH", "DELETE") else None
        if method in ("POST", "PUT", "PATCH") and body is None:
            body = b""
        request = tornado.httpclient.HTTPRequest(
            url,
            method=method,
            headers=headers,
            body=body,
            follow_redirects=False,
            request_timeout=60,
            allow_nonstandard_methods=True,
            decompress_response=False,
        )
        if self._http_client is None:
            self._http_client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        try:
            resp = await self._http_client.fetch(request, raise_error=False)
        except Exception as exc:
            raise ApiError(503, f"error trying to reach service: {exc}", "ServiceUnavailable") from None
        if resp.code == 599:
            raise ApiError(503, f"error trying to reach service: {resp.error}", "ServiceUnavailable")
        handler.set_status(resp.code, resp.reason or status_line_reason(resp.code))
        handler.clear_header("Content-Type")
        for k, v in resp.headers.get_all():
            if k.lower() not in _HOP_HEADERS and k.lower() not in ("server", "date"):
                handler.add_header(k, v)
        if resp.body:
            handler.write(resp.body)
        handler.finish()


def _name_and_port(name_spec: str) -> tuple[str, str]:
    """``name``, ``name:port`` or ``scheme:name:port`` (the scheme is not used)."""
    parts = name_spec.split(":")
    if len(parts) == 3:
        return parts[1], parts[2]
    if len(parts) == 2 and parts[0] in ("http", "https"):
        return parts[1], ""
    if len(parts) == 2:
        return parts[0], parts[1]
    return parts[0], ""


def _service_target(
    store: Store, ns: str, svc: Mapping[str, Any], port: str, name_spec: str
) -> tuple[list[str], str]:
    """The upstream keys of the service port asked for, and the ``ip:port`` it would reach;
    503 without a ready endpoint."""
    ports = (svc.get("spec") or {}).get("ports") or []
    chosen: dict[str, Any] | None = None
    if port:
        chosen = next((p for p in ports if p.get("name") == port or str(p.get("port")) == port), None)
    elif ports:
        chosen = ports[0]
    pods = _service_endpoints(store, ns, svc) if chosen is not None else []
    if chosen is None or not pods:
        raise ApiError(503, f'no endpoints available for service "{name_spec}"', "ServiceUnavailable")
    target_ip = (pods[0].get("status") or {}).get("podIP", "")
    target_port = chosen.get("targetPort", chosen.get("port"))
    return [str(chosen.get("name", "")), str(chosen.get("port", ""))], f"{target_ip}:{target_port}"


def _pod_target(pod: Mapping[str, Any], name: str, port: str) -> tuple[list[str], str]:
    status = pod.get("status") or {}
    if not status.get("podIP"):
        raise ApiError(503, f'pod "{name}" has no IP address assigned yet', "ServiceUnavailable")
    return ([port] if port else []), f"{status.get('podIP', '')}:{port or '80'}"


def _service_endpoints(store: Store, ns: str, svc: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = svc.get("spec") or {}
    selector = spec.get("selector") or {}
    if not selector:
        return []
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    sel = LabelSelector.from_match_labels(selector)
    out = []
    for pod in store.select(store.types["pods"], ns, sel, copy=False):
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if meta.get("deletionTimestamp") or not status.get("podIP"):
            continue
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        if pod_ready(pod) or publish_not_ready:
            out.append(pod)
    return out
