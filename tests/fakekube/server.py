"""The fake Kubernetes API server: tornado on loopback, driven by the real ``kubernetes``
client (or kubectl-like tools) over plain HTTP with bearer tokens, with the simulated
operator on the same event loop.

Start it in-process (``FakeKubeServer().start()`` runs its own event-loop thread; stop with
``.stop()``), or inside an existing asyncio loop (``await server.start_async()``), or as a
process: ``python -m tests.fakekube --port N``. This module holds the server's life cycle and
the controls tests use; requests are served by ``handler``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tornado.web
import yaml

from .errors import ApiError
from .faults import ErrorRule, Faults, Hold
from .handler import ApiHandler
from .listener import Listener
from .operator import OperatorConfig, RayOperator
from .proxy import ServiceProxy
from .schema import DEFAULT_CRD_DIR
from .selection import LabelSelector
from .store import JSON_PATCH, ResourceType, Scheduler, Store
from .watch import WatchSessions

if TYPE_CHECKING:
    import kubernetes.client

log = logging.getLogger("fakekube.server")

T = TypeVar("T")

DEFAULT_TOKEN = "fake-token"


class _Default(enum.Enum):
    TOKEN = "default"


DEFAULT = _Default.TOKEN  # "use the server's default token"


class FakeKubeServer:
    """A fake Kubernetes API server with a simulated KubeRay operator.

    Thread model: all state lives on the server's event loop. From other threads use the
    public methods (they marshal onto the loop) or :meth:`call`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: Iterable[str] | None = (DEFAULT_TOKEN,),
        operator: bool = True,
        operator_config: OperatorConfig | None = None,
        history_size: int = 2000,
        bookmark_interval: float = 1.0,
        default_watch_timeout: float | None = None,
        crd_dir: Path | str = DEFAULT_CRD_DIR,
        strict_namespaces: bool = True,
        namespaces: Iterable[str] = ("default", "kube-system", "kube-public"),
    ) -> None:
        self.host = host
        self.port = port
        self.tokens: set[str] | None = set(tokens) if tokens is not None else None
        self.faults = Faults()
        self.watches = WatchSessions()
        self.proxy = ServiceProxy()
        # Maps a service (or pod) proxy to a local upstream such as a stub Ray dashboard.
        self.set_proxy_upstream = self.proxy.set_upstream
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.request_count = 0
        self.pod_logs: dict[tuple[str, str], str] = {}
        self._history_size = history_size
        self._crd_dir = Path(crd_dir)
        self._strict_namespaces = strict_namespaces
        self._initial_namespaces = tuple(namespaces)
        config = operator_config or OperatorConfig()
        if not operator:
            config.enabled = False
        self._operator_config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: Listener | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self.store: Store
        self.operator: RayOperator

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str | None:
        if not self.tokens:
            return None
        return DEFAULT_TOKEN if DEFAULT_TOKEN in self.tokens else sorted(self.tokens)[0]

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("server not started")
        return self._loop

    async def start_async(self) -> FakeKubeServer:
        """Start on the running asyncio loop."""
        self._loop = asyncio.get_running_loop()
        self.store = Store(
            crd_dir=self._crd_dir,
            history_size=self._history_size,
            strict_namespaces=self._strict_namespaces,
            scheduler=Scheduler(self._loop),
            initial_namespaces=self._initial_namespaces,
        )
        self.operator = RayOperator(self.store, self._loop, self._operator_config)
        self.operator.start()
        app = tornado.web.Application(
            [(r"/(.*)", ApiHandler, {"server": self})], log_function=self._log_request
        )
        self._listener = Listener(app, self.host, self.port, self.watches, self._loop)
        self._listener.open()
        self.port = self._listener.port
        return self

    @staticmethod
    def _log_request(handler: tornado.web.RequestHandler) -> None:
        req = handler.request
        log.debug("%s %s -> %s", req.method, req.uri, handler.get_status())

    async def stop_async(self) -> None:
        assert self._listener is not None
        self._listener.cancel_reopen()
        for hold in self.faults.holds:  # held requests end with the server
            hold.released.set()
        self.operator.stop()
        self.watches.close_all(abrupt=False)
        await asyncio.sleep(0)
        await self._listener.close()
        self.proxy.close()

    def start(self, timeout: float = 30.0) -> FakeKubeServer:
        """Start in a background thread with its own event loop."""
        started = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:  # pragma: no cover
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name=f"fakekube-{id(self):x}", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise RuntimeError("fake kube server did not start")
        if failure:
            raise failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self.stop_async(), loop)
        with contextlib.suppress(Exception):
            fut.result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> FakeKubeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the server loop and return its result."""
        loop = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return fn(*args, **kwargs)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(30)

    # -- client helpers ---------------------------------------------------------------------------

    def configuration(self, token: str | _Default | None = DEFAULT) -> kubernetes.client.Configuration:
        """A client Configuration for this server; ``token=None`` sends no token."""
        import kubernetes.client

        cfg = kubernetes.client.Configuration()
        cfg.host = self.url
        tok = self.token if isinstance(token, _Default) else token
        if tok:
            cfg.api_key = {"authorization": f"Bearer {tok}"}
        return cfg

    def api_client(self, token: str | _Default | None = DEFAULT) -> kubernetes.client.ApiClient:
        import kubernetes.client

        return kubernetes.client.ApiClient(self.configuration(token))

    def kubeconfig(self, namespace: str = "default", token: str | None = None) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fakekube", "cluster": {"server": self.url}}],
            "users": [{"name": "fakekube", "user": {"token": token or self.token or "none"}}],
            "contexts": [
                {
                    "name": "fakekube",
                    "context": {"cluster": "fakekube", "user": "fakekube", "namespace": namespace},
                }
            ],
            "current-context": "fakekube",
            "preferences": {},
        }

    def write_kubeconfig(
        self, path: str | Path, namespace: str = "default", token: str | None = None
    ) -> Path:
        p = Path(path)
        p.write_text(yaml.safe_dump(self.kubeconfig(namespace, token), sort_keys=False))
        return p

    # -- state shortcuts (thread-safe) -------------------------------------------------------------

    def _rt(self, kind: str) -> ResourceType:
        """``kind`` is a plural (``pods``, ``rayclusters``) or ``group/plural``."""
        for rt in self.store.types.values():
            if kind in (rt.key, rt.plural, rt.kind):
                return rt
        raise KeyError(kind)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        def run() -> dict[str, Any] | None:
            try:
                return self.store.get(self._rt(kind), namespace, name)
            except ApiError:
                return None

        return self.call(run)

    def list_objects(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return self.call(
            lambda: self.store.select(self._rt(kind), namespace, LabelSelector.parse(label_selector))
        )

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call(lambda: self.store.create(self._rt(kind), namespace, body))

    def delete(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.call(lambda: self.store.delete(self._rt(kind), namespace, name)[0])

    def apply_manifest(
        self, docs: Iterable[dict[str, Any]], namespace: str = "default"
    ) -> list[dict[str, Any]]:
        """Create each document (any supported kind); returns the created objects."""
        out = []
        for doc in docs:
            if not doc:
                continue
            rt = self._rt_for_doc(doc)
            ns = (doc.get("metadata") or {}).get("namespace") or namespace
            out.append(self.create(rt.key, ns if rt.namespaced else "", doc))
        return out

    def _rt_for_doc(self, doc: Mapping[str, Any]) -> ResourceType:
        api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        for rt in self.store.types.values():
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        raise KeyError(f"{api_version} {kind} is not served by the fake")

    def compact(self) -> None:
        """Drop the watch history: every watch from an older resourceVersion gets 410."""
        self.call(self.store.compact)

    # -- simulation controls (thread-safe) -----------------------------------------------------------

    def configure_operator(self, **changes: Any) -> OperatorConfig:
        """Change :class:`OperatorConfig` fields (``enabled``, ``pod_ready_delay``,
        ``fail_pod_creation``, ``rayjob_lifecycle``...)."""
        return self.call(self.operator.configure, **changes)

    def release_pods(self, namespace: str | None = None, name: str | None = None) -> int:
        """Start pods held Pending by ``pod_ready_delay=None``; returns how many."""
        return self.call(self.operator.pods.release, namespace, name)

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> None:
        """Flip a running pod's Ready condition (readiness probe failing / recovering)."""
        self.call(self.operator.pods.set_ready, namespace, name, ready)

    def fail_pod(self, namespace: str, name: str, reason: str = "Error") -> None:
        """Terminate a pod (phase Failed); the operator replaces Ray pods."""
        self.call(self.operator.pods.fail, namespace, name, reason)

    def set_pod_log(self, namespace: str, name: str, text: str) -> None:
        """What ``GET .../pods/{name}/log`` returns."""
        self.pod_logs[(namespace, name)] = text

    def autoscale(
        self,
        namespace: str,
        cluster: str,
        group: str,
        replicas: int | None = None,
        workers_to_delete: list[str] | None = None,
    ) -> dict[str, Any]:
        """What the in-tree Ray autoscaler does: a JSON patch ``replace`` of
        ``/spec/workerGroupSpecs/<i>/replicas`` (capped at maxReplicas) and optionally of
        ``.../scaleStrategy`` -- a normal write that bumps resourceVersion, so a client
        holding an older copy gets 409 on its next PUT."""

        def run() -> dict[str, Any]:
            rc = self.store.types["ray.io/rayclusters"]
            obj = self.store.get(rc, namespace, cluster)
            groups = (obj.get("spec") or {}).get("workerGroupSpecs") or []
            index = next((i for i, g in enumerate(groups) if g.get("groupName") == group), None)
            if index is None:
                raise ApiError(404, f"worker group {group!r} not found in {namespace}/{cluster}")
            path = f"/spec/workerGroupSpecs/{index}"
            ops: list[dict[str, Any]] = []
            if replicas is not None:
                hi = groups[index].get("maxReplicas")
                value = min(replicas, hi) if hi is not None else replicas
                ops.append({"op": "replace", "path": f"{path}/replicas", "value": value})
            if workers_to_delete is not None:
                strategy = {"workersToDelete": list(workers_to_delete)}
                ops.append({"op": "replace", "path": f"{path}/scaleStrategy", "value": strategy})
            if not ops:
                return obj
            result, _created = self.store.patch(rc, namespace, cluster, JSON_PATCH, ops)
            return result

        return self.call(run)

    # -- faults -----------------------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        self.faults.latency = seconds

    def force_410(self, count: int = 1) -> None:
        self.faults.force_410 = count

    def inject_error(
        self,
        code: int,
        count: int = 1,
        method: str | None = None,
        path: str | None = None,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """The next ``count`` API requests matching ``method``/``path`` (regex) fail with a
        ``code`` Status."""
        self.faults.errors.append(ErrorRule(code, count, method, path, message, retry_after))

    def hold(self, method: str | None = None, path: str | None = None) -> Hold:
        """Leave the API requests matching ``method``/``path`` (regex) unanswered until
        :meth:`release`; ``hold.waiting`` counts those held now."""
        hold = Hold(method, path)
        self.faults.holds.append(hold)
        return hold

    def release(self, hold: Hold | None = None) -> None:
        """Answer the requests ``hold`` (default: every hold) keeps, and hold no more."""
        holds = [hold] if hold is not None else list(self.faults.holds)

        def run() -> None:
            for h in holds:
                if h in self.faults.holds:
                    self.faults.holds.remove(h)
                h.released.set()

        self.call(run)

    def drop_watches(self, graceful: bool = False) -> int:
        """Close every open watch stream (abruptly unless ``graceful``); returns how many."""
        return self.call(self.watches.close_all, not graceful)

    def open_watch_count(self) -> int:
        return self.call(lambda: len(self.watches))

    def api_down(self, seconds: float, mode: str = "503") -> None:
        """Make the API unavailable for ``seconds``: ``503`` answers every request with a
        503 Status; ``refuse`` closes the listening socket (connection refused) and
        reopens it on the same port afterwards. Open watches are dropped in both modes."""
        if mode not in ("503", "refuse"):
            raise ValueError("mode must be '503' or 'refuse'")
        self.call(self.outage, seconds, mode)

    def outage(self, seconds: float, mode: str) -> None:
        """:meth:`api_down`, on the loop."""
        assert self._listener is not None
        self.faults.api_down_mode = mode
        self.faults.api_down_until = time.monotonic() + seconds
        if mode == "refuse":
            http = self._listener.stop()
            self._listener.reopen_after(seconds)
            if http is not None:
                task = asyncio.ensure_future(http.close_all_connections())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        else:
            self.watches.close_all(abrupt=True)

    def api_up(self) -> None:
        """End an ``api_down`` period now."""
        self.faults.api_down_until = 0.0

        def run() -> None:
            assert self._listener is not None
            if not self._listener.is_open:
                self._listener.cancel_reopen()
                self._listener.reopen()

        self.call(run)

    def clear_faults(self) -> None:
        self.faults.latency = 0.0
        self.faults.force_410 = 0
        self.faults.errors.clear()
        self.release()
        if self.faults.api_down():
            self.api_up()
