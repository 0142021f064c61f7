"""Ray autoscaler events of the backend's RayClusters, read from each head's dashboard.

A cluster's timeline (``cluster_events``) reads them on demand; while panels are open the
observer polls them and pushes those it has not pushed before (:class:`NewEvents`). Reads
are cached briefly, and a failing dashboard is asked less often (:class:`EventsReader`).
Each dashboard is reached as the backend is configured to (``dashboard_access``):

* ``service``: ``http://<cluster>-head-svc.<ns>.svc:8265`` directly (the server runs in
  the cluster; cluster DNS resolves the head Service);
* ``apiserver-proxy``: through the API server's service proxy,
  ``<apiserver>/api/v1/namespaces/<ns>/services/<cluster>-head-svc:dashboard/proxy/``,
  with the backend's own credentials (the server runs outside the cluster).

Either way the request presents the cluster's Ray token (``X-Ray-Authorization``) when the
cluster demands one (``KubeRayBackend.ray_token_auth``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ...core.errors import BackendError, EKSRayError
from ...core.models import Cluster, ClusterEvent
from ..ray_dashboard import (
    CLUSTER_STATUS_PATH,
    EVENTS_PATH,
    EVENTS_QUERY,
    NODES_PATH,
    NODES_QUERY,
    get_json,
    result_items,
    usage_from_status,
)
from .names import head_service
from .status import dashboard_event

if TYPE_CHECKING:
    from .cache import NamespaceCache
    from .kubeapi import KubeApi


def parse_events(body: Any) -> list[ClusterEvent]:
    """The events of a ``/api/v0/cluster_events`` answer."""
    out = []
    for raw in result_items(body) or []:
        event = dashboard_event(raw) if isinstance(raw, dict) else None
        if event is not None:
            out.append(event)
    return out


class EventsReader:
    """Dashboard events per cluster, cached briefly; a dashboard that fails is left alone a while:
    ``first_backoff`` seconds after one failure, twice as long after each further one, at most
    ``backoff`` (one slow answer costs little, a dashboard that is down is not asked every poll).

    ``fetch(key)`` returns the raw JSON answer for a cluster key or raises.
    """

    def __init__(
        self,
        fetch: Callable[[tuple[str, str]], Any],
        ttl: float = 2.0,
        backoff: float = 30.0,
        first_backoff: float = 2.0,
        parse: Callable[[Any], Any] = parse_events,
        empty: Callable[[], Any] = list,
    ) -> None:
        self._fetch = fetch
        self._parse = parse
        self._empty = empty
        self.ttl = ttl
        self.backoff = backoff
        self.first_backoff = first_backoff
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._failed: dict[tuple[str, str], tuple[float, int]] = {}  # (retry after, failures in a row)

    def events(self, key: tuple[str, str], uid: str) -> Any:
        now = time.monotonic()
        cache_key = (key[0], f"{key[1]}/{uid}")
        cached = self._cache.get(cache_key)
        if cached and now - cached[0] < self.ttl:
            return cached[1]
        retry_after, failures = self._failed.get(cache_key, (0.0, 0))
        if now < retry_after:
            return cached[1] if cached else self._empty()
        try:
            events = self._parse(self._fetch(key))
        except BackendError:
            delay = min(self.backoff, self.first_backoff * 2 ** min(failures, 16))  # no float overflow
            self._failed[cache_key] = (now + delay, failures + 1)
            return cached[1] if cached else self._empty()
        self._failed.pop(cache_key, None)
        self._cache[cache_key] = (now, events)
        return events

    def peek(self, key: tuple[str, str], uid: str) -> Any:
        """What was read last, however old (never a request)."""
        cached = self._cache.get((key[0], f"{key[1]}/{uid}"))
        return cached[1] if cached else self._empty()

    def forget(self, key: tuple[str, str]) -> None:
        for cache_key in [k for k in self._cache if k[0] == key[0] and k[1].startswith(f"{key[1]}/")]:
            self._cache.pop(cache_key, None)
            self._failed.pop(cache_key, None)


class DashboardSource(Protocol):
    """How to reach a cluster's dashboard: what :class:`DashboardEvents` needs of ``KubeRayBackend``."""

    dashboard_events: bool
    caches: dict[str, NamespaceCache]

    @property
    def api(self) -> KubeApi: ...
    def dashboard_mode(self) -> str: ...
    def dashboard_service_url(self, cr: dict[str, Any], namespace: str) -> str: ...
    def ray_dashboard_headers(self, namespace: str, cr: dict[str, Any]) -> dict[str, str]: ...


class DashboardEvents:
    """The autoscaler events of ``backend``'s clusters, keyed by (namespace, name)."""

    def __init__(self, backend: DashboardSource) -> None:
        self.backend = backend
        self._reader = EventsReader(self._fetch)
        self._usage = EventsReader(self._fetch_usage, parse=lambda used: used, empty=dict)

    def _fetch(self, key: tuple[str, str]) -> Any:
        return self._get(key, EVENTS_PATH, EVENTS_QUERY)

    def _fetch_usage(self, key: tuple[str, str]) -> dict[str, dict[str, float]]:
        """What Ray has in use per pod IP: the load report is keyed by Ray node id, the node
        table says each alive node's IP (a pod's)."""
        by_node = usage_from_status(self._get(key, CLUSTER_STATUS_PATH, []))
        ips = {
            n.get("node_id"): n.get("node_ip")
            for n in result_items(self._get(key, NODES_PATH, NODES_QUERY)) or []
            if isinstance(n, dict) and n.get("state") == "ALIVE"
        }
        return {ips[node]: used for node, used in by_node.items() if ips.get(node)}

    def _get(self, key: tuple[str, str], path: str, query: list[tuple[str, str]]) -> Any:
        namespace, name = key
        backend = self.backend
        cache = backend.caches.get(namespace)
        cr = cache.clusters.get(name) if cache else None
        if cr is None:
            raise BackendError("gone")
        try:
            headers = backend.ray_dashboard_headers(namespace, cr)
        except EKSRayError as e:  # the token is not there yet, or not to be trusted
            raise BackendError(f"no Ray token for the dashboard: {e}") from e
        if backend.dashboard_mode() == "service":
            url = backend.dashboard_service_url(cr, namespace)
            return get_json(url, path, query, 2.0, headers=headers)
        return backend.api.service_proxy_get(
            namespace, head_service(cr), "dashboard", path, query, 2.0, headers=headers
        )

    def of(self, namespace: str, cluster: Cluster, uid: str) -> list[ClusterEvent]:
        """The events of ``cluster`` (its incarnation ``uid``); none while its dashboard is down."""
        if not self.backend.dashboard_events or not cluster.dashboard_available:
            return []
        return self._reader.events((namespace, cluster.name), uid)

    def usage_of(
        self, namespace: str, cluster: Cluster, uid: str, cached_only: bool = False
    ) -> dict[str, dict[str, float]]:
        """Per pod IP, what Ray has in use there (cached briefly); empty while the dashboard is
        down. ``cached_only``: what was read last, never a request (the observer's dispatch)."""
        if not self.backend.dashboard_events or not cluster.dashboard_available:
            return {}
        if cached_only:
            return self._usage.peek((namespace, cluster.name), uid)
        return self._usage.events((namespace, cluster.name), uid)

    def forget(self, key: tuple[str, str]) -> None:
        self._reader.forget(key)
        self._usage.forget(key)


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
