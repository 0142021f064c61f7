"""The push stream: one authenticated websocket per panel, fed by one backend observer.

Why our own websocket rather than jupyter_server's event bus: the bus broadcasts every
event of the server to every subscriber and validates each against a schema; the panel
needs a snapshot on connect, per-owner filtering and small JSON deltas, and the CLI or
tests can read it with any websocket client. The protocol (server -> client, JSON):

    {"type": "snapshot", "clusters": [Cluster, ...]}         first, on connect
    {"type": "cluster", "cluster": Cluster}                   a cluster changed
    {"type": "deleted", "name": "..."}                        a cluster is gone
    {"type": "event", "name": "...", "event": Event}          a new cluster event

The backend calls the hub from its observer thread; the hub serialises each change once
and hands it to the event loop, so fifty panels cost one backend observer and one
``json.dumps`` per change.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import url_path_join
from tornado import web, websocket

from ..core.models import Change
from ..core.service import ClusterService
from .handlers import AUTH_RESOURCE


class StreamHub:
    """Fans backend changes out to the connected sockets of their owner."""

    def __init__(self, service: ClusterService, dashboard_url: Callable[[str], str]) -> None:
        self.service = service
        self.dashboard_url = dashboard_url
        self.sockets: set[StreamHandler] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, socket: StreamHandler) -> None:
        self.sockets.add(socket)
        if self._unsubscribe is None:
            self._loop = asyncio.get_running_loop()
            self._unsubscribe = self.service.backend.subscribe(self._on_change)

    def remove(self, socket: StreamHandler) -> None:
        self.sockets.discard(socket)
        if not self.sockets and self._unsubscribe is not None:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
            # Stopping the observer joins its thread: not on the event loop.
            asyncio.get_running_loop().run_in_executor(None, unsubscribe)

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

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None


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

    async def open(self, *args: Any, **kwargs: Any) -> None:
        # Subscribe first, then snapshot: a change racing the snapshot arrives after it.
        self.hub.add(self)
        service = self.hub.service
        clusters = await asyncio.get_running_loop().run_in_executor(
            self.settings["eksray_executor"], service.list
        )
        snapshot = [c.to_dict(dashboard_url=self.hub.dashboard_url(c.name)) for c in clusters]
        self.send(json.dumps({"type": "snapshot", "clusters": snapshot}))

    def send(self, message: str) -> None:
        try:
            self.write_message(message)
        except websocket.WebSocketClosedError:
            self.hub.remove(self)

    def on_message(self, message: str | bytes) -> None:
        """Clients only listen; anything they send is ignored."""

    def on_close(self) -> None:
        self.hub.remove(self)


def stream_handlers(base_url: str) -> list[tuple[str, type[web.RequestHandler]]]:
    return [(url_path_join(base_url, "eksray", "api", "stream"), StreamHandler)]
