"""Watches: the stream of ``ADDED``/``MODIFIED``/``DELETED`` lines for a collection, from a
resourceVersion (410 once history is gone) or with the current objects first, with bookmarks
and ``timeoutSeconds``, and ended gracefully or abruptly (connection reset) by faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import tornado.iostream

from .errors import ApiError, bad_request
from .events_v1 import EVENTS_GROUP, event_core_to_v1
from .selection import FieldSelector, LabelSelector
from .store import ResourceType, Store, WatchEvent

if TYPE_CHECKING:
    from .handler import ApiHandler


class WatchSession:
    """One open watch: the store's changes that match it, queued for the stream."""

    def __init__(
        self,
        store: Store,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> None:
        self.store = store
        self.rt = rt
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self.closed = False
        self.abrupt = False

    def _match(self, obj: Mapping[str, Any] | None) -> bool:
        return obj is not None and self.store.matches(obj, self.namespace, self.labels, self.fields)

    def transform(self, ev: WatchEvent) -> tuple[str, dict[str, Any]] | None:
        if ev.rtype != self.rt.key:
            return None
        if ev.type == "ADDED":
            return ("ADDED", ev.obj) if self._match(ev.obj) else None
        if ev.type == "DELETED":
            return ("DELETED", ev.obj) if self._match(ev.old or ev.obj) else None
        new_ok, old_ok = self._match(ev.obj), self._match(ev.old)
        if new_ok and old_ok:
            return ("MODIFIED", ev.obj)
        if new_ok:
            return ("ADDED", ev.obj)
        if old_ok:
            return ("DELETED", ev.obj)
        return None

    def on_event(self, ev: WatchEvent) -> None:
        if self.closed:
            return
        item = self.transform(ev)
        if item is not None:
            self.queue.put_nowait(item)

    def close(self, abrupt: bool = False) -> None:
        if not self.closed:
            self.closed = True
            self.abrupt = abrupt
            self.queue.put_nowait(None)


class WatchSessions:
    """The open watches, so that faults and the server's stop can end them."""

    def __init__(self) -> None:
        self._open: set[WatchSession] = set()

    def add(self, session: WatchSession) -> None:
        self._open.add(session)

    def discard(self, session: WatchSession) -> None:
        self._open.discard(session)

    def __len__(self) -> int:
        return len(self._open)

    def close_all(self, abrupt: bool) -> int:
        """Ends every open watch (``abrupt``: the connection is reset); returns how many."""
        sessions = list(self._open)
        for s in sessions:
            s.close(abrupt=abrupt)
        return len(sessions)


async def serve_watch(
    handler: ApiHandler,
    rt: ResourceType,
    namespace: str | None,
    labels: LabelSelector,
    fields: FieldSelector,
    *,
    v1_events: bool = False,
) -> None:
    """Streams the watch that ``handler``'s request asks for (``resourceVersion``,
    ``timeoutSeconds``, ``allowWatchBookmarks``, ``sendInitialEvents``) until it times out,
    the client goes or a fault ends it. ``v1_events``: as events.k8s.io/v1 Events."""
    server = handler.fk
    store = server.store
    rv_arg = handler.arg("resourceVersion") or ""
    timeout_arg = handler.arg("timeoutSeconds")
    timeout = float(timeout_arg) if timeout_arg else server.default_watch_timeout
    bookmarks = handler.flag("allowWatchBookmarks")
    send_initial = handler.flag("sendInitialEvents")
    if rv_arg not in ("", "0") and not rv_arg.isdigit():
        raise bad_request(f'invalid resource version "{rv_arg}"')
    session = WatchSession(store, rt, namespace, labels, fields)
    try:
        initial = _backlog(store, session, rv_arg, send_initial, take_410=server.faults.take_410)
    except ApiError as error:
        # An expired resourceVersion is a watch event, not an error response.
        handler.set_status(200)
        _stream_headers(handler)
        handler.write(json.dumps({"type": "ERROR", "object": error.status()}) + "\n")
        await handler.flush()
        handler.finish()
        return

    def line(etype: str, obj: dict[str, Any]) -> str:
        if v1_events and etype in ("ADDED", "MODIFIED", "DELETED"):
            obj = event_core_to_v1(obj)
        return json.dumps({"type": etype, "object": obj}) + "\n"

    def bookmark(initial_end: bool = False) -> str:
        return json.dumps(_bookmark(store, rt, initial_end=initial_end, v1_events=v1_events)) + "\n"

    unsubscribe = store.subscribe(session.on_event)
    handler.watch_session = session
    server.watches.add(session)
    try:
        handler.set_status(200)
        _stream_headers(handler)
        for etype, obj in initial:
            handler.write(line(etype, obj))
        if send_initial and bookmarks:
            handler.write(bookmark(initial_end=True))
        await handler.flush()
        deadline = time.monotonic() + timeout if timeout else None
        interval = server.bookmark_interval
        next_bookmark = time.monotonic() + interval
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wait = next_bookmark - now if bookmarks else 3600.0
            if deadline is not None:
                wait = min(wait, deadline - now)
            try:
                item = await asyncio.wait_for(session.queue.get(), timeout=max(wait, 0.0))
            except asyncio.TimeoutError:
                if bookmarks and time.monotonic() >= next_bookmark:
                    handler.write(bookmark())
                    await handler.flush()
                    next_bookmark = time.monotonic() + interval
                continue
            if item is None:
                break
            chunk = [item]
            while not session.queue.empty():
                extra = session.queue.get_nowait()
                if extra is None:
                    session.queue.put_nowait(None)
                    break
                chunk.append(extra)
            handler.write("".join(line(t, o) for t, o in chunk))
            await handler.flush()
    except tornado.iostream.StreamClosedError:
        return
    finally:
        unsubscribe()
        server.watches.discard(session)
        handler.watch_session = None
    if session.abrupt:
        _reset_connection(handler)
        return
    if not handler._finished:
        handler.finish()


def _backlog(
    store: Store,
    session: WatchSession,
    rv_arg: str,
    send_initial: bool,
    take_410: Callable[[], bool],
) -> list[tuple[str, dict[str, Any]]]:
    """What the watch sends first: every matching object as ADDED (no resourceVersion, or
    ``sendInitialEvents``), else the matching changes since ``rv_arg``; raises 410 Expired
    when those are gone (or a forced 410 is due)."""
    if rv_arg not in ("", "0") and take_410():
        raise ApiError(410, f"too old resource version: {rv_arg}", "Expired")
    if rv_arg in ("", "0") or send_initial:
        return [
            ("ADDED", o) for o in store.select(session.rt, session.namespace, session.labels, session.fields)
        ]
    initial = []
    for ev in store.events_since(int(rv_arg), session.rt.key):
        item = session.transform(ev)
        if item is not None:
            initial.append(item)
    return initial


def _stream_headers(handler: ApiHandler) -> None:
    handler.set_header("Content-Type", "application/json")
    handler.set_header("Cache-Control", "no-cache, private")


def _reset_connection(handler: ApiHandler) -> None:
    """Close the connection with a TCP reset (SO_LINGER 0), as a crashed server would."""
    stream = getattr(handler.request.connection, "stream", None)
    if stream is not None:
        with contextlib.suppress(Exception):
            sock = stream.socket
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        stream.close()


def _bookmark(
    store: Store, rt: ResourceType, initial_end: bool = False, v1_events: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(store.resource_version)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    api_version = f"{EVENTS_GROUP}/v1" if v1_events else rt.api_version
    return {
        "type": "BOOKMARK",
        "object": {"kind": rt.kind, "apiVersion": api_version, "metadata": meta},
    }
