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
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit

from jupyter_core.utils import ensure_async
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from jupyter_server_proxy.handlers import ProxyHandler
from tornado import web, websocket
from tornado.httpclient import HTTPClientError

from ..core.errors import EKSRayError
from ..core.ray_auth import DASHBOARD_HEADER
from .errors import http_status
from .handlers import AUTH_RESOURCE

# RFC 3986 reserved and unreserved characters: quote only what a request line cannot carry.
_SAFE_PATH_CHARS = ":/?#[]@!$&'()*+,;=-._~"
# Jupyter's credentials, and any Ray token the client sent (only the cluster's own, added
# by us, may reach the dashboard).
_STRIPPED_HEADERS = ("Authorization", "Cookie", "X-XSRFToken", "X-Xsrftoken", DASHBOARD_HEADER)
#: What the proxy passes on (HTTP's ``Allow`` for the others).
PROXIED_METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")


class DashboardProxyHandler(ProxyHandler):
    auth_resource = AUTH_RESOURCE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Only the host this request resolved to may be reached.
        kwargs["host_allowlist"] = lambda handler, host: host == getattr(handler, "_resolved_host", None)
        kwargs["rewrite_response"] = (_drop_upstream_cookies,)
        super().__init__(*args, **kwargs)
        # Event streams skip rewrite_response: their upstream headers arrive through set_header,
        # which jupyter-server-proxy's websocket mixin rebinds per instance. Jupyter's own
        # cookies go through set_cookie and add_header, never this.
        set_header = self.set_header

        def set_header_but_cookies(name: str, value: Any) -> None:
            if name.lower() != "set-cookie":
                set_header(name, value)

        self.set_header = set_header_but_cookies  # type: ignore[method-assign]

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
        """The dashboard's host and port for the owner's cluster ``name`` (EKSRayError if none).

        Also fetches what must be sent upstream: Ray's token for the cluster, and what the
        backend needs (e.g. the Kubernetes API server's bearer token and CA for its service
        proxy); secrets, so never logged.
        """
        service = self.settings["eksray_services"].clusters
        executor = self.settings["eksray_executor"]
        loop = asyncio.get_running_loop()
        address = await loop.run_in_executor(executor, service.dashboard_address, name)
        backend = service.backend
        self._upstream_headers = await loop.run_in_executor(executor, service.dashboard_headers, name)
        self._upstream_options = await loop.run_in_executor(
            executor, backend.dashboard_request_options, service.owner, name
        )
        self._upstream: SplitResult = urlsplit(address)
        self._resolved_host = self._upstream.hostname
        default_port = 443 if self._upstream.scheme == "https" else 80
        return str(self._upstream.hostname), int(self._upstream.port or default_port)

    @staticmethod
    def _climbs_out(proxied_path: str) -> bool:
        """True if the path has a '..' segment, however percent-encoded.

        Behind a Kubernetes service proxy such a path could reach other API resources with
        the server's credentials.
        """
        decoded, previous = proxied_path, None
        while decoded != previous:
            previous, decoded = decoded, unquote(decoded)
        return any(segment == ".." for segment in decoded.replace("\\", "/").split("/"))

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

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:
            self.set_header("Allow", ", ".join(PROXIED_METHODS))
        if status_code == 405 or not hasattr(self, "_current_user"):
            # Refused before prepare (a method tornado does not route, a form body it cannot parse):
            # Jupyter's error page needs the user, who is not known yet.
            self._error_page(status_code, self._reason)
            return
        super().write_error(status_code, **kwargs)

    def get_request_headers_override(self) -> dict[str, str]:
        return {}

    def proxy_request_headers(self) -> Any:
        headers = super().proxy_request_headers()
        for header in _STRIPPED_HEADERS:
            headers.pop(header, None)
        headers.update(getattr(self, "_upstream_headers", {}))
        return headers

    def proxy_request_options(self) -> dict[str, Any]:
        options = {**super().proxy_request_options(), **getattr(self, "_upstream_options", {})}
        if self.request.method == "PATCH" and not self.request.body:
            # jupyter-server-proxy sends an empty PATCH body as None, which tornado's client
            # refuses unless told that is meant.
            options["allow_nonstandard_methods"] = True
        return options

    def get_client_uri(self, protocol: str, host: str, port: int, proxied_path: str) -> str:
        """The upstream URL: the resolved address's scheme and path, then the proxied path.

        Jupyter's token is dropped from the query: never hand it to the dashboard (or its logs).
        """
        upstream = self._upstream
        if upstream.scheme == "https":
            protocol = {"http": "https", "ws": "wss"}[protocol]
        path = upstream.path.rstrip("/") + "/" + proxied_path.lstrip("/")
        uri = f"{protocol}://{upstream.netloc}{quote(path, safe=_SAFE_PATH_CHARS)}"
        kept = [(k, v) for k, v in parse_qsl(self.request.query, keep_blank_values=True) if k != "token"]
        return uri + ("?" + urlencode(kept) if kept else "")

    async def _forward(self, name: str, proxied_path: str) -> Any:
        if self._climbs_out(proxied_path):
            self._error_page(400, "The dashboard path may not contain '..' segments.")
            return None
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
        if self._climbs_out(proxied_path):
            self.close(code=1008, reason="the dashboard path may not contain '..' segments")
            return None
        try:
            host, port = await self._resolve(name)
        except EKSRayError as e:
            self.log.info("eksray: dashboard websocket for %s refused: %s", name, e.message)
            self.close(code=1011, reason=e.message[:120])
            return None
        try:
            return await self.proxy_open(host, port, proxied_path)
        except (OSError, websocket.WebSocketError, HTTPClientError) as e:
            # The dashboard is down, or does not take websockets there: the socket ends saying so
            # (as an HTTP request would get a 502), not with an exception and no close frame.
            self.log.warning("eksray: dashboard websocket for %s: the dashboard refused it: %s", name, e)
            self.close(code=1011, reason="The Ray dashboard did not accept the websocket")
            return None

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


def _drop_upstream_cookies(response: Any) -> None:
    """A dashboard's cookie would be set on Jupyter's origin and sent with every Jupyter request."""
    if "Set-Cookie" in response.headers:
        del response.headers["Set-Cookie"]


def proxy_handlers(base_url: str) -> list[tuple[str, type[web.RequestHandler]]]:
    return [
        (
            url_path_join(base_url, "eksray", "clusters", "([^/]+)", "dashboard") + "(.*)",
            DashboardProxyHandler,
        )
    ]
