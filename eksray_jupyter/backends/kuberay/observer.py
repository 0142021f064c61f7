"""What ``KubeRayBackend.subscribe`` listeners hear: cache changes turned into ``Change``s.

The namespace caches report changes on their watch threads; one dispatcher thread
coalesces them (a burst of watch events becomes one change per cluster), builds each
changed cluster and pushes only what differs from what panels already have. While
observing, it also polls the dashboards of clusters that are changing for new autoscaler
events (all clusters every 6th round).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from ...core.errors import BackendError
from ...core.models import Change, Cluster
from .dashboard_events import DashboardEvents, NewEvents
from .status import cluster_event

if TYPE_CHECKING:
    from .cache import NamespaceCache

Key = tuple[str, str]  # (namespace, name)
#: Per cluster, the owner and the state last pushed.
Pushed = dict[Key, tuple[str, dict[str, Any]]]


class ObservedBackend(Protocol):
    """What the observer needs of its backend (``KubeRayBackend``)."""

    log: logging.Logger
    dashboard_events: bool
    dashboard_poll_seconds: float
    caches: dict[str, NamespaceCache]
    autoscaler_events: DashboardEvents

    def notify(self, change: Change) -> None: ...
    def default_owner(self) -> str | None: ...
    def namespaces_of(self, owner: str) -> list[str]: ...
    def cache_of(self, namespace: str) -> NamespaceCache: ...
    def owner_of(self, namespace: str, cr: dict[str, Any]) -> tuple[str | None, bool]: ...
    def build_safe(
        self, cache: NamespaceCache, cr: dict[str, Any], owner: str, ours: bool
    ) -> Cluster | None: ...
    def forget_cluster(self, key: Key) -> None: ...
    def with_use(self, owner: str, cluster: Cluster, cached_only: bool = False) -> Cluster: ...


def _nothing_pending() -> dict[str, Any]:
    return {"clusters": set(), "deleted": {}, "events": []}


class Observer:
    """The dispatcher of one backend: started by its first listener, stopped after its last."""

    def __init__(self, backend: ObservedBackend) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._observing = False
        self._pending = _nothing_pending()
        # The dispatcher and its own stop event (set under ``_lock``); the last one stopped,
        # which may still be ending: a new dispatcher waits for it before its first round.
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._retiring: threading.Thread | None = None

    def on_cache_change(self, kind: str, namespace: str, name: str, payload: Any) -> None:
        """Called on watch threads; the dispatcher does the work (coalesced)."""
        with self._lock:
            if not self._observing:
                return
            key = (namespace, name)
            if kind == "deleted":
                self._pending["deleted"][key] = payload
            elif kind == "event":
                self._pending["events"].append((key, payload))
            else:
                self._pending["clusters"].add(key)
            self._wake.notify()

    @property
    def running(self) -> bool:
        thread = self._thread
        return self._observing and thread is not None and thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self._observing:
                return
            self._observing = True
            # A fresh stop event: the one a stop still joining (or one that gave up) has set stays
            # set for the thread it belongs to, which ends instead of dispatching beside this one.
            self._stop = stop = threading.Event()
            self._thread = threading.Thread(
                target=self._loop, args=(stop, self._retiring), name="eksray-kuberay-observer", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._observing = False
            self._stop.set()
            self._wake.notify_all()
            thread, self._thread = self._thread, None
            if thread is not None:
                self._retiring = thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                self.backend.log.warning(
                    "eksray: the kuberay dispatcher did not stop within %.0f s; it ends after its round",
                    timeout,
                )

    def _baseline(self) -> Pushed:
        """What panels already have (their snapshot): only differences from it are pushed."""
        backend = self.backend
        owner = backend.default_owner()
        if owner is not None:
            try:  # the user's namespace is watched before the first change can be missed
                for namespace in backend.namespaces_of(owner):
                    backend.cache_of(namespace)
            except BackendError as e:
                backend.log.warning("eksray: cannot observe clusters yet: %s", e.message)
        last: Pushed = {}
        for cache in list(backend.caches.values()):
            with cache.lock:
                crs = list(cache.clusters.values())
            for cr in crs:
                who, ours = backend.owner_of(cache.namespace, cr)
                if who is not None and (cluster := backend.build_safe(cache, cr, who, ours)) is not None:
                    last[(cache.namespace, cluster.name)] = (who, cluster.to_dict())
        return last

    def _loop(self, stop: threading.Event, previous: threading.Thread | None = None) -> None:
        if previous is not None and previous is not threading.current_thread():
            previous.join(5.0)  # stopped: it ends after its round; never two rounds at once
        backend = self.backend
        new_events = NewEvents(backend.autoscaler_events)
        next_poll = time.monotonic() + backend.dashboard_poll_seconds
        polls = 0
        last = self._baseline()
        # The snapshot may have been read before or after this baseline, so the first change of
        # each cluster is pushed even when it looks the same (``unconfirmed``); later ones only if
        # different.
        unconfirmed = set(last)
        while not stop.is_set():
            with self._lock:
                if not (self._pending["clusters"] or self._pending["deleted"] or self._pending["events"]):
                    self._wake.wait(timeout=max(0.05, next_poll - time.monotonic()))
            if stop.wait(0.05):  # coalesce a burst of watch events
                break
            with self._lock:
                if stop.is_set():  # stopped meanwhile: what is pending is a newer dispatcher's
                    break
                pending, self._pending = self._pending, _nothing_pending()
            try:
                self._dispatch(pending, last, unconfirmed)
                if time.monotonic() >= next_poll:
                    polls += 1
                    self._poll_dashboards(last, new_events, every_round=polls % 6 == 0)
                    next_poll = time.monotonic() + backend.dashboard_poll_seconds
            except Exception:  # the observer must outlive one bad change
                backend.log.exception("eksray: kuberay observer failed to dispatch changes")

    def _dispatch(self, pending: dict[str, Any], last: Pushed, unconfirmed: set[Key]) -> None:
        backend = self.backend
        for key, obj in pending["deleted"].items():
            previous = last.pop(key, None)
            who = previous[0] if previous else backend.owner_of(key[0], obj or {})[0]
            if who is not None:
                backend.notify(Change("deleted", who, key[1]))
            backend.forget_cluster(key)
        for key in pending["clusters"] - set(pending["deleted"]):
            cache = backend.caches.get(key[0])
            cr = cache.clusters.get(key[1]) if cache else None
            if cache is None or cr is None:
                continue
            who, ours = backend.owner_of(key[0], cr)
            if who is None:
                continue
            cluster = backend.build_safe(cache, cr, who, ours)
            if cluster is None:
                continue
            # What Ray uses on its pods as last read (the dashboard poll refreshes it): pushed
            # states never flip between with and without it.
            cluster = backend.with_use(who, cluster, cached_only=True)
            state = cluster.to_dict()
            if key in unconfirmed or last.get(key) != (who, state):
                unconfirmed.discard(key)
                last[key] = (who, state)
                backend.notify(Change("cluster", who, cluster.name, cluster=cluster))
        for key, ev in pending["events"]:
            cache = backend.caches.get(key[0])
            cr = cache.clusters.get(key[1]) if cache else None
            if cr is None:
                continue
            who, _ours = backend.owner_of(key[0], cr)
            if who is not None:
                backend.notify(Change("event", who, key[1], event=cluster_event(ev)))

    def _poll_dashboards(self, last: Pushed, new_events: NewEvents, every_round: bool) -> None:
        """What Ray uses on each cluster's pods (pushed when it changed), and new autoscaler
        events of clusters that are changing (of all clusters every 6th round)."""
        backend = self.backend
        if not backend.dashboard_events:
            return
        for key, (who, state) in list(last.items()):
            cache = backend.caches.get(key[0])
            cr = cache.clusters.get(key[1]) if cache else None
            if cache is None or cr is None:
                continue
            cluster = backend.build_safe(cache, cr, who, backend.owner_of(key[0], cr)[1])
            if cluster is None or not cluster.dashboard_available:
                continue
            used = backend.with_use(who, cluster)
            fresh = used.to_dict()
            if last.get(key) != (who, fresh):
                last[key] = (who, fresh)
                backend.notify(Change("cluster", who, key[1], cluster=used))
            if state["phase"] == "ready" and not every_round:
                continue
            for event in new_events.of(key[0], cluster, str(cr["metadata"].get("uid"))):
                backend.notify(Change("event", who, key[1], event=event))
