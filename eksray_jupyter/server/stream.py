"""The push stream: one authenticated websocket per panel, fed by one backend observer and one job watcher.

Why our own websocket rather than jupyter_server's event bus: the bus broadcasts every
event of the server to every subscriber and validates each against a schema; the panel
needs a snapshot on connect, per-owner filtering and small JSON deltas, and the CLI or
tests can read it with any websocket client. The protocol (server -> client, JSON):

    {"type": "snapshot", "clusters": [Cluster, ...]}         first, on connect ("cache" too
                                                              when not current, as in GET /clusters;
                                                              "heartbeat": seconds, when there are)
    {"type": "cluster", "cluster": Cluster}                   a cluster changed
    {"type": "deleted", "name": "..."}                        a cluster is gone
    {"type": "event", "name": "...", "event": Event}          a new cluster event
    {"type": "jobs", "jobs": [Job, ...], "warnings": [...]}   the jobs, second, on connect
    {"type": "job", "job": Job}                               a job is new or changed
    {"type": "jobDeleted", "id": "..."}                       a job's record is gone
    {"type": "jobWarnings", "warnings": [...]}                the stores that cannot be read changed
    {"type": "heartbeat"}                                     every "heartbeat" s while changes flow
    {"type": "lifecycle", "name", "action", "reason",         the idle keeper warned ("warn": "pending"
     "pending", "due"}                                        action at "due"), acted ("suspend",
                                                              "delete") or withdrew a warning
                                                              ("clear"); warnings still standing are
                                                              sent after the snapshots

Changes pushed while a socket's snapshots are read follow them (held until then): sent before,
they would be hidden by a snapshot read before they happened.

``Job`` is exactly the body of ``GET /eksray/api/jobs/{id}``; ``jobs`` and ``warnings`` are
those of ``GET /eksray/api/jobs`` (newest first; a store that cannot be read is named in
``warnings`` and its jobs are missing, so they arrive as ``jobDeleted`` and come back as
``job`` when it can be read again).

The backend calls the hub from its observer thread, the job watcher
(:mod:`eksray_jupyter.jobs.watch`) from its own; the hub serialises each change once and
hands it to the event loop, so fifty panels cost one backend observer, one job watcher and
one ``json.dumps`` per change. Both run only while a socket is connected. A socket gets job
changes only after its ``jobs`` snapshot, which the watcher orders with its changes.

Heartbeats prove more than an open socket: they are sent only while the backend observes and
the job watcher runs. A panel that misses three takes its stream for dead, polls and
reconnects; if what feeds the stream stopped, the hub closes the sockets (1012) and the first
to come back starts it again.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import url_path_join
from tornado import web, websocket

from ..core.accounting import BudgetNotice
from ..core.keeper import Notice
from ..core.models import Change, iso
from ..services import Services
from .handlers import AUTH_RESOURCE

if TYPE_CHECKING:
    from ..jobs.watch import JobChange, JobSnapshot, JobWatcher


HEARTBEAT = json.dumps({"type": "heartbeat"})


class StreamHub:
    """Fans backend changes out to the connected sockets of their owner.

    Subscribing (the first socket) and unsubscribing (after the last) run on a thread, one at a
    time and in the order the sockets came and went (``_lifecycle``): a panel that reloads waits
    for the stop its old socket caused, then starts the observer anew, and the event loop never
    waits for either.
    """

    def __init__(
        self, services: Services, dashboard_url: Callable[[str], str], heartbeat_seconds: float = 10.0
    ) -> None:
        self.services = services
        self.service = services.clusters
        self.dashboard_url = dashboard_url
        #: Seconds between two heartbeats (0: none); the snapshot tells the panels.
        self.heartbeat_seconds = heartbeat_seconds
        self.sockets: set[StreamHandler] = set()
        #: Sockets that have had their ``jobs`` snapshot: job changes go to them only.
        self.job_sockets: set[StreamHandler] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._unsubscribe_jobs: Callable[[], None] | None = None
        self._job_watcher: JobWatcher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lifecycle = asyncio.Lock()
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # releases under way (kept from the GC)
        # Lifecycle warnings still standing, by cluster name: a panel that connects later gets them.
        self._warnings: dict[str, str] = {}
        self._warnings_lock = threading.Lock()

    @property
    def job_watcher(self) -> JobWatcher:
        """Built on first use: the server starts without loading the jobs code."""
        if self._job_watcher is None:
            from ..jobs.watch import JobWatcher

            self._job_watcher = JobWatcher.for_jobs(self.services.jobs)
        return self._job_watcher

    async def add(self, socket: StreamHandler) -> None:
        """Count ``socket`` in; the first one subscribes (after any unsubscribe still under way)."""
        self.sockets.add(socket)
        async with self._lifecycle:
            if socket in self.sockets and self._unsubscribe is None:
                await self._subscribe()

    def remove(self, socket: StreamHandler) -> None:
        self.sockets.discard(socket)
        self.job_sockets.discard(socket)
        if not self.sockets:
            task = asyncio.get_running_loop().create_task(self._release())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _subscribe(self) -> None:
        """Subscribe to the backend and the job watcher (holding ``_lifecycle``)."""
        loop = self._loop = asyncio.get_running_loop()
        # Both start threads, and may wait for a stop still joining one: not on the event loop.
        self._unsubscribe = await loop.run_in_executor(None, self.service.backend.subscribe, self._on_change)
        try:
            self._unsubscribe_jobs = await loop.run_in_executor(
                None, lambda: self.job_watcher.subscribe(self._on_job_change)
            )
        except Exception:  # e.g. a job runner that cannot be loaded: clusters are still pushed
            self.service.config.log.exception("eksray: jobs are not on the stream")
        if self.heartbeat_seconds > 0 and self._heartbeat is None:
            self._heartbeat = loop.create_task(self._beat())

    async def _unsubscribe_all(self) -> None:
        """Unsubscribe from both (holding ``_lifecycle``); their stops join threads, on a thread."""
        for unsubscribe in self.detach():
            try:
                await asyncio.get_running_loop().run_in_executor(None, unsubscribe)
            except Exception:
                self.service.config.log.exception("eksray: stopping what feeds the stream failed")

    async def _release(self) -> None:
        async with self._lifecycle:
            if not self.sockets and self._unsubscribe is not None:
                await self._unsubscribe_all()

    def detach(self) -> list[Callable[[], None]]:
        """Stop the heartbeat and hand over the unsubscribe functions (they block: call them on a
        thread). Used when the last socket goes and on shutdown."""
        if self._heartbeat is not None:
            if self._heartbeat is not asyncio.current_task():
                self._heartbeat.cancel()
            self._heartbeat = None
        unsubscribes = [u for u in (self._unsubscribe, self._unsubscribe_jobs) if u is not None]
        self._unsubscribe = self._unsubscribe_jobs = None
        return unsubscribes

    # --- heartbeat --------------------------------------------------------------------------

    def healthy(self) -> bool:
        """Whether changes reach the sockets: the backend observes and the job watcher runs."""
        if not self.service.backend.observing:
            return False
        watcher = self._job_watcher
        return self._unsubscribe_jobs is None or (watcher is not None and watcher.alive)

    async def _beat(self) -> None:
        """While subscribed, every ``heartbeat_seconds``: a heartbeat to every socket while changes
        flow. A panel that misses a few takes the stream for dead, polls and reconnects. If what
        feeds the stream stopped (an observer that died), the hub unsubscribes and closes the
        sockets: their panels reconnect for a fresh snapshot, and the first one subscribes anew."""
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            if self.healthy():
                self._broadcast(HEARTBEAT)
                continue
            async with self._lifecycle:
                if self._unsubscribe is None or self.healthy():
                    continue
                self.service.config.log.warning(
                    "eksray: the %s backend's observer or the job watcher stopped; the stream restarts",
                    self.service.backend.name,
                )
                await self._unsubscribe_all()  # ends this heartbeat; the next subscription has one
                for socket in list(self.sockets):
                    socket.close(1012, "The stream restarts: reconnect for a fresh snapshot")
                return

    def encode(self, change: Change) -> str:
        if change.kind == "cluster" and change.cluster is not None:
            cluster = change.cluster.to_dict(dashboard_url=self.dashboard_url(change.name))
            return json.dumps({"type": "cluster", "cluster": cluster})
        if change.kind == "event" and change.event is not None:
            return json.dumps({"type": "event", "name": change.name, "event": change.event.to_dict()})
        return json.dumps({"type": "deleted", "name": change.name})

    def _on_change(self, change: Change) -> None:
        """Called on the backend's observer thread."""
        if change.owner != self.service.owner or self._loop is None:
            return
        message = self.encode(change)
        self._loop.call_soon_threadsafe(self._broadcast, message)

    def _broadcast(self, message: str) -> None:
        for socket in list(self.sockets):
            socket.send(message)

    # --- lifecycle (core/keeper.py) ---------------------------------------------------------

    def on_lifecycle(self, notice: Notice | BudgetNotice) -> None:
        """Called on the keeper's thread, whether or not a panel is connected."""
        if notice.owner != self.service.owner:
            return
        if isinstance(notice, BudgetNotice):
            budget = json.dumps({"type": "budget", **notice.to_dict()})
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self._broadcast, budget)
            return
        body = {"type": "lifecycle", **notice.to_dict(), "due": iso(notice.due)}
        body.pop("owner")
        message = json.dumps(body)
        with self._warnings_lock:
            if notice.action == "warn":
                self._warnings[notice.name] = message
            else:
                self._warnings.pop(notice.name, None)
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._broadcast, message)

    def standing_warnings(self) -> list[str]:
        with self._warnings_lock:
            return list(self._warnings.values())

    # --- jobs -------------------------------------------------------------------------------

    @staticmethod
    def encode_job_change(change: JobChange) -> str:
        if change.kind == "job" and change.job is not None:
            return json.dumps({"type": "job", "job": change.job.to_dict()})
        if change.kind == "warnings":
            return json.dumps({"type": "jobWarnings", "warnings": change.warnings})
        return json.dumps({"type": "jobDeleted", "id": change.job_id})

    @staticmethod
    def encode_jobs(snapshot: JobSnapshot) -> str:
        return json.dumps(
            {"type": "jobs", "jobs": [j.to_dict() for j in snapshot.jobs], "warnings": snapshot.warnings}
        )

    def _on_job_change(self, change: JobChange) -> None:
        """Called on the job watcher's thread."""
        if change.owner != self.service.owner or self._loop is None:
            return
        message = self.encode_job_change(change)
        self._loop.call_soon_threadsafe(self._broadcast_jobs, message)

    def _broadcast_jobs(self, message: str) -> None:
        for socket in list(self.job_sockets):
            socket.send(message)

    def send_jobs(self, socket: StreamHandler) -> None:
        """Send ``socket`` the jobs snapshot, then the job changes after it; blocks (call on a thread).

        The snapshot is queued to the event loop from inside the watcher's lock, so it is sent
        after every change it includes and before every change it does not.
        """
        loop = self._loop
        if loop is None or self._unsubscribe_jobs is None:
            return

        def deliver(snapshot: JobSnapshot) -> None:
            loop.call_soon_threadsafe(self._start_jobs, socket, self.encode_jobs(snapshot))

        self.job_watcher.snapshot(deliver)

    def _start_jobs(self, socket: StreamHandler, message: str) -> None:
        if socket in self.sockets:
            socket.send_now(message)
            self.job_sockets.add(socket)

    def close(self) -> None:
        """Unsubscribe now; blocks (the server's shutdown calls :meth:`detach` and its functions
        on a thread of its own instead)."""
        for unsubscribe in self.detach():
            unsubscribe()


class StreamHandler(WebSocketMixin, JupyterHandler, websocket.WebSocketHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def hub(self) -> StreamHub:
        return self.settings["eksray_stream_hub"]

    async def pre_get(self) -> None:
        authorized = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE)
        )
        if not authorized:
            raise web.HTTPError(403)

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.pre_get()
        result = super().get(*args, **kwargs)
        if result is not None:
            await result

    #: What the hub pushed to this socket before its snapshots went out (None once they have).
    _held: list[str] | None = None

    async def open(self, *args: Any, **kwargs: Any) -> None:
        # Subscribe first, then snapshot; what is pushed meanwhile is held and sent after the
        # snapshots: sent before, it would be hidden by a snapshot read before it happened.
        self._held = []
        try:
            await self.hub.add(self)
            service = self.hub.service
            clusters, cache = await asyncio.get_running_loop().run_in_executor(
                self.settings["eksray_executor"],
                lambda: (service.list(), service.backend.cache_status(service.owner)),
            )
            snapshot: dict[str, Any] = {
                "type": "snapshot",
                "clusters": [c.to_dict(dashboard_url=self.hub.dashboard_url(c.name)) for c in clusters],
            }
            if not cache.current:
                snapshot["cache"] = cache.to_dict()
            if self.hub.heartbeat_seconds > 0:
                snapshot["heartbeat"] = self.hub.heartbeat_seconds
            self.send_now(json.dumps(snapshot))
            # Then the jobs (queued to the loop in order with the job changes; see StreamHub.send_jobs).
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self.settings["eksray_executor"], self.hub.send_jobs, self
                )
            except Exception:
                self.log.exception("eksray: cannot send the jobs on the stream")
            for warning in self.hub.standing_warnings():
                self.send_now(warning)
        finally:
            held, self._held = self._held, None
            for message in held or ():
                self.send_now(message)

    def send(self, message: str) -> None:
        """Push a change (held until the snapshots have gone out)."""
        if self._held is not None:
            self._held.append(message)
            return
        self.send_now(message)

    def send_now(self, message: str) -> None:
        try:
            self.write_message(message)
        except websocket.WebSocketClosedError:
            self.hub.remove(self)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:
            self.set_header("Allow", "GET")
        if status_code == 405 or not hasattr(self, "_current_user"):
            # Refused before prepare (a method tornado does not route, a form body it cannot parse):
            # Jupyter's error page needs the user, who is not known yet.
            self.set_header("Content-Type", "application/json")
            message = "The stream is a websocket: GET with Upgrade: websocket"
            self.finish(json.dumps({"message": message if status_code == 405 else self._reason}))
            return
        super().write_error(status_code, **kwargs)

    def on_message(self, message: str | bytes) -> None:
        """Clients only listen; anything they send is ignored."""

    def on_close(self) -> None:
        self.hub.remove(self)


def stream_handlers(base_url: str) -> list[tuple[str, type[web.RequestHandler]]]:
    return [(url_path_join(base_url, "eksray", "api", "stream"), StreamHandler)]
