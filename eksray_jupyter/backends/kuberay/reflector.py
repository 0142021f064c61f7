"""A reflector: one kind of object in one namespace, listed, then watched, on its own thread.

It lists (paginated), then watches from the list's resourceVersion with bookmarks; a stream
that ends or drops resumes from the last resourceVersion seen, and a 410 Expired (history
compacted) re-lists. What the objects mean is up to its owner, who gets every full list
(``replace(items, initial)``; ``initial`` for the first one) and every watch event
(``apply(event_type, obj)`` for ADDED, MODIFIED and DELETED).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...core.errors import EKSRayError
from .errors import KubeError, KubeExpired

if TYPE_CHECKING:
    from .kubeapi import KubeApi

Replace = Callable[[list[dict[str, Any]], bool], None]
Apply = Callable[[str, dict[str, Any]], None]


def describe(error: BaseException) -> str:
    """A log-safe description of an error (our messages, or just the exception type)."""
    return error.message if isinstance(error, EKSRayError) else type(error).__name__


class Reflector:
    """Keeps its owner's view of ``kind`` in ``namespace`` current until stopped.

    ``when_forbidden``: for a kind the owner can do without, what to log (once) when listing
    it is forbidden (403); the kind then counts as synced (empty) and is tried again every
    minute. None: a 403 is retried like any other failure.
    """

    def __init__(
        self,
        api: KubeApi,
        kind: str,
        namespace: str,
        replace: Replace,
        apply: Apply,
        log: logging.Logger | logging.LoggerAdapter[Any],
        watch_timeout: int = 300,
        when_forbidden: str | None = None,
    ) -> None:
        self.api = api
        self.kind = kind
        self.namespace = namespace
        self.replace = replace
        self.apply = apply
        self.log = log
        self.watch_timeout = watch_timeout
        self.when_forbidden = when_forbidden
        self.synced = threading.Event()
        self.stats: Counter[str] = Counter()
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stream: Any = None
        #: Whether the API server answered (a list, or a watch opened) since the last failure.
        self._connected = False
        #: None while the watch is open (the owner's view is current); else since when (epoch
        #: seconds) and why it may be behind. One tuple, replaced whole: read from any thread.
        self.stale: tuple[float, str] | None = (time.time(), "not listed yet")

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"eksray-watch-{self.namespace}-{self.kind}", daemon=True
        )
        self._thread.start()

    def interrupt(self) -> None:
        """Ask the thread to end, and break off a read it may be blocked in."""
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            self._shutdown(stream)

    def join(self, timeout: float) -> None:
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @staticmethod
    def _shutdown(stream: Any) -> None:
        # shutdown() interrupts a read blocked in another thread (urllib3 >= 2.3).
        for method in ("shutdown", "close"):
            try:
                getattr(stream, method)()
            except Exception:  # best effort on a stream that may already be broken
                continue

    # --- the watch loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        rv: str | None = None
        delay = 0.1
        while not self._stop.is_set():
            self._connected = False
            try:
                if rv is None:
                    rv = self._relist()
                rv = self._watch(rv)
                delay = 0.1
            except KubeExpired:
                # History compacted past our resourceVersion: start over from a fresh list.
                self.stats["expired"] += 1
                self._behind(f"re-listing {self.kind} in {self.namespace} (the watch expired)")
                self.log.info(
                    "eksray: watch of %s in %s expired (410); re-listing", self.kind, self.namespace
                )
                rv = None
            except Exception as e:
                if self._stop.is_set():
                    break
                forbidden = self.when_forbidden and getattr(e, "status", 0) == 403
                if forbidden and not self.synced.is_set():
                    self.log.warning(
                        "eksray: may not list %s in %s; %s", self.kind, self.namespace, self.when_forbidden
                    )
                    self.synced.set()
                    delay = 60.0
                elif self._connected:
                    delay = 0.1  # the API server answered since the last failure: a new interruption
                self.stats["errors"] += 1
                self.last_error = describe(e)
                if forbidden:
                    self.stale = None  # done without: nothing to be behind on
                else:
                    self._behind(
                        f"the watch of {self.kind} in {self.namespace} is interrupted: {self.last_error}"
                    )
                level = logging.INFO if self.stats["errors"] < 3 else logging.WARNING
                self.log.log(
                    level,
                    "eksray: watch of %s in %s interrupted (%s); resuming in %.1f s",
                    self.kind, self.namespace, self.last_error, delay,
                )  # fmt: skip
                self._stop.wait(delay)
                delay = max(delay, min(delay * 2, 10.0))

    def _behind(self, reason: str) -> None:
        stale = self.stale
        self.stale = (time.time() if stale is None else stale[0], reason)

    def _relist(self) -> str:
        items: list[dict[str, Any]] = []
        cont: str | None = None
        rv = ""
        while True:
            page = self.api.list_raw(self.kind, self.namespace, cont=cont)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            rv = str(meta.get("resourceVersion") or rv)
            cont = meta.get("continue")
            if not cont:
                break
        self.stats["lists"] += 1
        self.replace(items, not self.synced.is_set())
        self.synced.set()
        self.last_error = None
        self._connected = True
        self.stale = None  # as current as this list; the watch carries on from it
        return rv

    def _watch(self, rv: str) -> str:
        from kubernetes.watch.watch import iter_resp_lines

        stream = self.api.watch_raw(self.kind, self.namespace, rv, self.watch_timeout)
        self._connected = True
        self.stale = None  # watching from the last list or event: current
        with self._lock:
            self._stream = stream
        self.stats["watches"] += 1
        try:
            if self._stop.is_set():
                return rv
            for line in iter_resp_lines(stream):
                if self._stop.is_set():
                    break
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    code = obj.get("code")
                    if code == 410:
                        raise KubeExpired(f"watch of {self.kind} expired: {obj.get('message', '')}", 410)
                    raise KubeError(
                        f"watch of {self.kind} failed: {code} {obj.get('message', '')}", code or 0
                    )
                if etype in ("ADDED", "MODIFIED", "DELETED"):
                    self.apply(etype, obj)
                new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                if new_rv:
                    rv = str(new_rv)
        finally:
            with self._lock:
                self._stream = None
            stream.release_conn()
        return rv
