"""REST handlers: thin translations between HTTP and the core.

Each handler parses the request, calls the backend on a thread pool (backend calls
may block; the event loop must not): reads on the read pool, changes on the write pool
(:mod:`.pools`), and serialises the result. Errors are mapped in :mod:`.errors` only. Every handler requires an authenticated, authorized user; the
clusters it acts on are those of the configured owner.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.ioloop import IOLoop

from ..core.accounting import report_csv
from ..core.errors import BusyError, FieldError, InvalidRequestError
from ..core.models import CacheStatus, Cluster
from ..core.service import ClusterService
from ..core.spec import non_finite_errors
from ..services import Services
from .errors import error_body, http_status
from .pools import WritePool

T = TypeVar("T")

AUTH_RESOURCE = "eksray"
NAME = r"(?P<name>[^/]+)"
#: On answers read from a backend cache that is not current: since when (ISO 8601).
STALE_HEADER = "X-Cache-Stale-Since"


def dashboard_path(base_url: str, name: str) -> str:
    """Where the panel opens a cluster's dashboard: our authenticated proxy, never the raw address."""
    return url_path_join(base_url, "eksray", "clusters", name, "dashboard") + "/"


@web.stream_request_body
class EKSRayHandler(APIHandler):
    """Base of the REST handlers. Bodies are read as they arrive, so one larger than
    ``max_request_bytes`` is refused from its Content-Length, or kept no further than the
    limit, instead of being buffered whole first."""

    auth_resource = AUTH_RESOURCE

    async def prepare(self, *args: Any, **kwargs: Any) -> None:
        self._body_parts: list[bytes] = []
        self._body_size = 0
        await super().prepare(*args, **kwargs)  # authentication
        self._adopt_hub_groups()
        declared = self.request.headers.get("Content-Length", "")
        limit = self.service.config.max_request_bytes
        if declared.isdigit() and int(declared) > limit:
            raise InvalidRequestError(f"The request body is {declared} bytes; the limit is {limit} bytes")

    def _adopt_hub_groups(self) -> None:
        """Quotas per group: the groups JupyterHub gives its user (with the ``read:users:groups``
        scope), besides those ``c.EKSRay.user_groups`` names."""
        hub_user = getattr(self.current_user, "hub_user", None)
        groups = hub_user.get("groups") if isinstance(hub_user, dict) else None
        if isinstance(groups, list) and all(isinstance(g, str) for g in groups):
            accounting = self.service.accounting
            configured = self.service.config.user_groups.get(self.service.owner, ())
            accounting.groups = tuple(sorted({*configured, *groups}))

    def data_received(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size <= self.service.config.max_request_bytes:
            self._body_parts.append(chunk)

    @property
    def services(self) -> Services:
        return self.settings["eksray_services"]

    @property
    def service(self) -> ClusterService:
        return self.services.clusters

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a (blocking) backend call that reads on the extension's read pool."""
        executor: Executor = self.settings["eksray_executor"]
        return await IOLoop.current().run_in_executor(executor, fn, *args)

    async def call_write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a backend call that changes something on the write pool (503 while it is full)."""
        writes: WritePool = self.settings["eksray_writes"]
        return await writes.run(fn, *args)

    def read_with_cache_status(self, fn: Callable[..., T], *args: Any) -> Callable[[], tuple[T, CacheStatus]]:
        """``fn(*args)`` and then whether the backend's cache it read is current (for :meth:`call`)."""
        return lambda: (fn(*args), self.service.backend.cache_status(self.service.owner))

    def mark_stale(self, cache: CacheStatus) -> None:
        """Say in the answer's headers that it was read from a cache that is not current."""
        if not cache.current:
            self.set_header(STALE_HEADER, cache.to_dict()["since"] or "")

    def json_body(self) -> Any:
        limit = self.service.config.max_request_bytes
        if self._body_size > limit:
            raise InvalidRequestError(
                f"The request body is {self._body_size} bytes; the limit is {limit} bytes"
            )
        try:
            body = json.loads(b"".join(self._body_parts) or b"null")
        except ValueError as e:
            raise InvalidRequestError(f"The request body is not valid JSON ({e})") from e
        if errors := non_finite_errors(body):
            raise InvalidRequestError("NaN and Infinity are not JSON numbers; give finite numbers", errors)
        return body

    def cluster_json(self, cluster: Cluster) -> dict[str, Any]:
        return cluster.to_dict(dashboard_url=dashboard_path(self.base_url, cluster.name))

    def write_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def allowed_methods(self) -> list[str]:
        """The methods this route answers (HTTP's ``Allow``): those its handler class defines."""
        return [
            method
            for method in self.SUPPORTED_METHODS
            if getattr(type(self), method.lower(), None)
            is not getattr(web.RequestHandler, method.lower(), None)
        ]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        exc_info = kwargs.get("exc_info")
        error = exc_info[1] if exc_info else None
        if isinstance(error, BusyError):
            self.set_header("Retry-After", "1")
        if isinstance(error, web.HTTPError) and not hasattr(error, "eksray"):
            return super().write_error(status_code, **kwargs)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error_body(error) if error else {"message": self._reason}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        status = http_status(value) if value is not None else 500
        if status == 500 and not isinstance(value, web.HTTPError):
            self.log.error(
                "eksray: %s %s failed", self.request.method, self.request.path, exc_info=(typ, value, tb)
            )
        elif status in (502, 504):
            # An upstream's trouble (Kubernetes, S3), said in the message: no traceback per
            # request during an outage.
            self.log.warning("eksray: %s %s -> %s: %s", self.request.method, self.request.path, status, value)
        elif not isinstance(value, web.HTTPError):
            self.log.info("eksray: %s %s -> %s: %s", self.request.method, self.request.path, status, value)
        else:
            super().log_exception(typ, value, tb)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, web.HTTPError):
            return super()._handle_request_exception(e)
        self.log_exception(type(e), e, e.__traceback__)
        if self._finished:
            return
        self.send_error(http_status(e), exc_info=(type(e), e, e.__traceback__))


class ClustersHandler(EKSRayHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        clusters, cache = await self.call(self.read_with_cache_status(self.service.list))
        body: dict[str, Any] = {"clusters": [self.cluster_json(c) for c in clusters]}
        if not cache.current:
            body["cache"] = cache.to_dict()
        self.mark_stale(cache)
        self.write_json(body)

    @web.authenticated
    @authorized
    async def post(self) -> None:
        cluster = await self.call_write(self.service.create, self.json_body())
        self.set_header("Location", url_path_join(self.base_url, "eksray/api/clusters", cluster.name))
        self.write_json(self.cluster_json(cluster), status=201)


class ClusterHandler(EKSRayHandler):
    @web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        cluster, cache = await self.call(self.read_with_cache_status(self.service.get, name))
        self.mark_stale(cache)
        self.write_json(self.cluster_json(cluster))

    @web.authenticated
    @authorized
    async def patch(self, name: str) -> None:
        cluster = await self.call_write(self.service.scale, name, self.json_body())
        self.write_json(self.cluster_json(cluster))

    @web.authenticated
    @authorized
    async def delete(self, name: str) -> None:
        await self.call_write(self.service.delete, name)
        self.set_status(204)
        self.finish()


class ClusterActionHandler(EKSRayHandler):
    """``POST /clusters/{name}/<action>``: no body; answers the cluster after the action."""

    def act(self, name: str) -> Cluster:
        raise NotImplementedError

    @web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        if self.json_body() not in (None, {}):
            raise InvalidRequestError("This request takes no body; send none or {}")
        cluster = await self.call_write(self.act, name)
        self.write_json(self.cluster_json(cluster))


class SuspendHandler(ClusterActionHandler):
    def act(self, name: str) -> Cluster:
        return self.service.suspend(name, "Suspended on request (panel or REST API)")


class ResumeHandler(ClusterActionHandler):
    def act(self, name: str) -> Cluster:
        return self.service.resume(name)


class KeepAliveHandler(ClusterActionHandler):
    def act(self, name: str) -> Cluster:
        return self.service.keepalive(name, "the panel or REST API")


class ClusterEventsHandler(EKSRayHandler):
    @web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        raw = self.get_query_argument("since", None)
        since = None
        if raw is not None:
            try:
                since = float(raw)
                if not math.isfinite(since):  # "nan", "inf": float() takes them, JSON has none
                    raise ValueError(raw)
            except ValueError:
                raise InvalidRequestError(
                    "Invalid query",
                    [FieldError("since", "must be a timestamp in seconds, e.g. 1767225600.5")],
                ) from None
        events, cache = await self.call(self.read_with_cache_status(self.service.events, name, since))
        self.mark_stale(cache)
        self.write_json({"events": [e.to_dict() for e in events]})


class ConfigHandler(EKSRayHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        from ..core.spec import load_schema

        body = self.service.config.public_config(self.service.backend)
        body["clusterSchema"] = load_schema()
        body["jobSchema"] = load_schema("job")
        self.write_json(body)


class UsageHandler(EKSRayHandler):
    """``GET /usage``: what the owner's clusters use and cost, quotas and budget (``?format=csv``:
    one row per cluster, for a spreadsheet)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        fmt = self.get_query_argument("format", "json")
        if fmt not in ("json", "csv"):
            raise InvalidRequestError("Invalid query", [FieldError("format", "use json or csv")])
        report = await self.call(self.service.accounting.report)
        if fmt == "csv":
            self.set_header("Content-Disposition", 'attachment; filename="eksray-usage.csv"')
            # APIHandler.finish would say JSON
            self.finish(report_csv(report), set_content_type="text/csv; charset=utf-8")
            return
        self.write_json(report)


def handlers(base_url: str) -> list[tuple[str, type[web.RequestHandler]]]:
    api = url_path_join(base_url, "eksray", "api")
    return [
        (url_path_join(api, "clusters"), ClustersHandler),
        (url_path_join(api, "clusters", NAME), ClusterHandler),
        (url_path_join(api, "clusters", NAME, "events"), ClusterEventsHandler),
        (url_path_join(api, "clusters", NAME, "suspend"), SuspendHandler),
        (url_path_join(api, "clusters", NAME, "resume"), ResumeHandler),
        (url_path_join(api, "clusters", NAME, "keepalive"), KeepAliveHandler),
        (url_path_join(api, "config"), ConfigHandler),
        (url_path_join(api, "usage"), UsageHandler),
    ]
