"""Ray autoscaler events of the backend's RayClusters, read from each head's dashboard.

A cluster's timeline (``cluster_events``) reads them on demand; while panels are open the
observer polls them and pushes those it has not pushed before (:class:`NewEvents`). Reads
are cached briefly, and a failing dashboard is asked less often (:class:`.dashboard.EventsReader`).
Each dashboard is reached as the backend is configured to (``dashboard_access``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ...core.errors import BackendError
from ...core.models import Cluster, ClusterEvent
from .dashboard import EVENTS_PATH, EVENTS_QUERY, EventsReader, fetch_direct
from .names import head_service

if TYPE_CHECKING:
    from .backend import KubeRayBackend


class DashboardEvents:
    """The autoscaler events of ``backend``'s clusters, keyed by (namespace, name)."""

    def __init__(self, backend: KubeRayBackend) -> None:
        self.backend = backend
        self._reader = EventsReader(self._fetch)

    def _fetch(self, key: tuple[str, str]) -> Any:
        namespace, name = key
        backend = self.backend
        cache = backend._caches.get(namespace)
        cr = cache.clusters.get(name) if cache else None
        if cr is None:
            raise BackendError("gone")
        if backend._dashboard_mode() == "service":
            return fetch_direct(backend._dashboard_service_url(cr, namespace), timeout=2.0)
        return backend.api.service_proxy_get(
            namespace, head_service(cr), "dashboard", EVENTS_PATH, EVENTS_QUERY, 2.0
        )

    def of(self, namespace: str, cluster: Cluster, uid: str) -> list[ClusterEvent]:
        """The events of ``cluster`` (its incarnation ``uid``); none while its dashboard is down."""
        if not self.backend.dashboard_events or not cluster.dashboard_available:
            return []
        return self._reader.events((namespace, cluster.name), uid)

    def forget(self, key: tuple[str, str]) -> None:
        self._reader.forget(key)


class NewEvents:
    """Per cluster, the events not seen before; those from before it was made are never new
    (panels read a cluster's timeline when they open it)."""

    def __init__(self, events: DashboardEvents) -> None:
        self.events = events
        self.started = time.time()
        self._seen: dict[tuple[str, str], set[str]] = {}

    def of(self, namespace: str, cluster: Cluster, uid: str) -> list[ClusterEvent]:
        known = self._seen.setdefault((namespace, cluster.name), set())
        new = []
        for event in self.events.of(namespace, cluster, uid):
            if event.id not in known:
                known.add(event.id)
                if event.time >= self.started - 1:
                    new.append(event)
        return new
