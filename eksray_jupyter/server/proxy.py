"""The Ray dashboard proxy: ``/eksray/clusters/{name}/dashboard/...`` (HTTP and websockets).

Security boundary. The target is resolved from the backend for a cluster the user owns;
nothing in the request can name a host or port. Unauthenticated requests (websocket
upgrades included) get 403 (jupyter-server-proxy's ``prepare``), unauthorized ones too.
Jupyter's credentials (token, cookies, XSRF token) are stripped before the request goes
upstream, and state-changing methods keep Jupyter's XSRF check: the dashboard can submit
jobs, so a cross-site form must not be able to reach it through us.
"""

from __future__ import annotations

import asyncio
import html
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from jupyter_core.utils import ensure_async
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from jupyter_server_proxy.handlers import ProxyHandler
from tornado import web

from ..core.errors import EKSRayError
from .errors import http_status
from .handlers import AUTH_RESOURCE

_STRIPPED_HEADERS = ("Authorization", "Cookie", "X-XSRFToken", "X-Xsrftoken")


class DashboardProxyHandler(ProxyHandler):
    auth_resource = AUTH_RESOURCE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Only the host this request resolved to may be reached.
        kwargs["host_allowlist"] = lambda handler, host: host == getattr(handler, "_resolved_host", None)
        super().__init__(*args, **kwargs)

    async def prepare(self, *args: Any, **kwargs: Any) -> None:
        await super().prepare(*args, **kwargs)  # authentication (403 for websocket upgrades)
        action = "read" if self.request.method in ("GET", "HEAD", "OPTIONS") else "write"
        if not await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, action, AUTH_RESOURCE)
        ):
            raise web.HTTPError(403)

    def check_xsrf_cookie(self) -> None:
        # jupyter-server-proxy defers XSRF to the proxied app; the Ray dashboard has none.
        return JupyterHandler.check_xsrf_cookie(self)

    async def _resolve(self, name: str) -> tuple[str, int]:
        """The dashboard's host and port for the owner's cluster ``name`` (EKSRayError if none)."""
        service = self.settings["eksray_service"]
        executor = self.settings["eksray_executor"]
        address = await asyncio.get_running_loop().run_in_executor(executor, service.dashboard_address, name)
        parts = urlsplit(address)
        self._resolved_host = parts.hostname
        return str(parts.hostname), int(parts.port or 80)

    def _error_page(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        # A dashboard that is still starting comes up by itself: let the page retry.
        refresh = '<meta http-equiv="refresh" content="3">' if status == 503 else ""
        self.finish(
            f"<!doctype html><html><head><title>Ray dashboard</title>{refresh}</head>"
            f"<body style='font-family: sans-serif; margin: 2em'><h2>Ray dashboard unavailable</h2>"
            f"<p>{html.escape(message)}</p></body></html>"
        )

    def get_request_headers_override(self) -> dict[str, str]:
        return {}

    def proxy_request_headers(self) -> Any:
        headers = super().proxy_request_headers()
        for header in _STRIPPED_HEADERS:
            headers.pop(header, None)
        return headers

    def get_client_uri(self, protocol: str, host: str, port: int, proxied_path: str) -> str:
        uri = super().get_client_uri(protocol, host, port, proxied_path)
        if self.request.query:
            # Never hand Jupyter's token to the dashboard (or its logs).
            base, _, query = uri.partition("?")
            kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "token"]
            uri = base + ("?" + urlencode(kept) if kept else "")
        return uri

    async def _forward(self, name: str, proxied_path: str) -> Any:
        if not proxied_path:
            # Relative asset paths need the trailing slash.
            self.redirect(url_path_join(self.base_url, "eksray", "clusters", name, "dashboard") + "/")
            return None
        try:
            host, port = await self._resolve(name)
        except EKSRayError as e:
            self._error_page(http_status(e), e.message)
            return None
        return await self.proxy(host, port, proxied_path)

    async def http_get(self, name: str, proxied_path: str = "") -> Any:
        return await self._forward(name, proxied_path)

    async def open(self, name: str, proxied_path: str = "") -> Any:
        try:
            host, port = await self._resolve(name)
        except EKSRayError as e:
            self.log.info("eksray: dashboard websocket for %s refused: %s", name, e.message)
            self.close(code=1011, reason=e.message[:120])
            return None
        return await self.proxy_open(host, port, proxied_path)

    def post(self, name: str, proxied_path: str = "") -> Any:
        return self._forward(name, proxied_path)

    def put(self, name: str, proxied_path: str = "") -> Any:
        return self._forward(name, proxied_path)

    def delete(self, name: str, proxied_path: str = "") -> Any:
        return self._forward(name, proxied_path)

    def patch(self, name: str, proxied_path: str = "") -> Any:
        return self._forward(name, proxied_path)

    def head(self, name: str, proxied_path: str = "") -> Any:
        return self._forward(name, proxied_path)

    def options(self, name: str, proxied_path: str = "") -> Any:
        return self._forward(name, proxied_path)


def proxy_handlers(base_url: str) -> list[tuple[str, type[web.RequestHandler]]]:
    return [
        (
            url_path_join(base_url, "eksray", "clusters", "([^/]+)", "dashboard") + "(.*)",
            DashboardProxyHandler,
        )
    ]
