"""The server's listening socket on its port: opened at start, and for the ``refuse`` outage
closed with every open connection (connection refused and reset from then on) and opened
again on the same port afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import tornado.httpserver
import tornado.netutil
import tornado.web

from .watch import WatchSessions


class Listener:
    def __init__(
        self,
        app: tornado.web.Application,
        host: str,
        port: int,
        watches: WatchSessions,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port  # 0 until opened: then the port bound
        self.watches = watches
        self.loop = loop
        self._http: tornado.httpserver.HTTPServer | None = None
        self._reopen_handle: asyncio.TimerHandle | None = None

    @property
    def is_open(self) -> bool:
        return self._http is not None

    def open(self) -> None:
        sockets = tornado.netutil.bind_sockets(self.port, self.host, family=socket.AF_INET)
        self.port = sockets[0].getsockname()[1]
        self._http = tornado.httpserver.HTTPServer(self.app, idle_connection_timeout=60)
        self._http.add_sockets(sockets)

    def stop(self) -> tornado.httpserver.HTTPServer | None:
        """Close the listening socket and every open connection now (connection refused /
        reset from here on); returns the server for an async clean-up."""
        http, self._http = self._http, None
        if http is None:
            return None
        http.stop()
        self.watches.close_all(abrupt=True)
        for conn in list(getattr(http, "_connections", ())):
            stream = getattr(conn, "stream", None)
            if stream is not None:
                stream.close()
        return http

    async def close(self) -> None:
        """Stop for good: no reopening, connections closed."""
        self.cancel_reopen()
        http = self.stop()
        if http is not None:
            await asyncio.sleep(0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(http.close_all_connections(), timeout=2)

    def reopen_after(self, seconds: float) -> None:
        self.cancel_reopen()
        self._reopen_handle = self.loop.call_later(seconds, self.reopen)

    def cancel_reopen(self) -> None:
        if self._reopen_handle is not None:
            self._reopen_handle.cancel()
            self._reopen_handle = None

    def reopen(self) -> None:
        self._reopen_handle = None
        if self._http is None:
            try:
                self.open()
            except OSError:  # port still busy: retry shortly
                self._reopen_handle = self.loop.call_later(0.1, self.reopen)
