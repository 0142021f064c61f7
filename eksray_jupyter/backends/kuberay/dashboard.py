"""Reading a RayCluster's Ray dashboard (autoscaler events) from the Jupyter server.

Two access paths, as configured by ``KubeRayBackend.dashboard_access``:

* ``service``: ``http://<cluster>-head-svc.<ns>.svc:8265`` directly (the server runs in
  the cluster; cluster DNS resolves the head Service);
* ``apiserver-proxy``: through the API server's service proxy,
  ``<apiserver>/api/v1/namespaces/<ns>/services/<cluster>-head-svc:dashboard/proxy/``,
  with the backend's own credentials (the server runs outside the cluster).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from ...core.errors import BackendError
from ...core.models import ClusterEvent
from .status import dashboard_event

EVENTS_PATH = "api/v0/cluster_events"
# Ray returns the oldest events first and stops at ``limit``: ask for enough to reach the newest.
EVENTS_QUERY = [("limit", "10000")]


def fetch_direct(base_url: str, timeout: float) -> Any:
    """GET ``{base_url}/api/v0/cluster_events`` as JSON (service mode)."""
    url = f"{base_url}/{EVENTS_PATH}?{urllib.parse.urlencode(EVENTS_QUERY)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise BackendError(f"The Ray dashboard at {base_url} does not answer ({type(e).__name__})") from e


def parse_events(body: Any) -> list[ClusterEvent]:
    """The events of a ``/api/v0/cluster_events`` answer (``{"data": {"result": {"result": [...]}}}``)."""
    if not isinstance(body, dict) or not body.get("result", True):
        return []
    data = (body.get("data") or {}).get("result", {})
    items = data.get("result", []) if isinstance(data, dict) else data
    out = []
    for raw in items if isinstance(items, list) else []:
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
    ) -> None:
        self._fetch = fetch
        self.ttl = ttl
        self.backoff = backoff
        self.first_backoff = first_backoff
        self._cache: dict[tuple[str, str], tuple[float, list[ClusterEvent]]] = {}
        self._failed: dict[tuple[str, str], tuple[float, int]] = {}  # (retry after, failures in a row)

    def events(self, key: tuple[str, str], uid: str) -> list[ClusterEvent]:
        now = time.monotonic()
        cache_key = (key[0], f"{key[1]}/{uid}")
        cached = self._cache.get(cache_key)
        if cached and now - cached[0] < self.ttl:
            return cached[1]
        retry_after, failures = self._failed.get(cache_key, (0.0, 0))
        if now < retry_after:
            return cached[1] if cached else []
        try:
            events = parse_events(self._fetch(key))
        except BackendError:
            delay = min(self.backoff, self.first_backoff * 2 ** min(failures, 16))  # no float overflow
            self._failed[cache_key] = (now + delay, failures + 1)
            return cached[1] if cached else []
        self._failed.pop(cache_key, None)
        self._cache[cache_key] = (now, events)
        return events

    def forget(self, key: tuple[str, str]) -> None:
        for cache_key in [k for k in self._cache if k[0] == key[0] and k[1].startswith(f"{key[1]}/")]:
            self._cache.pop(cache_key, None)
            self._failed.pop(cache_key, None)
