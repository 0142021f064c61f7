"""The operations every face offers, in one place.

The server's handlers, the ``%eksray`` magics and the ``eksray`` CLI all call a
:class:`ClusterService`: it resolves requests against the schema and profiles, calls the
backend for the configured owner, and remembers which cluster is the user's active one.
Methods block; the server calls them on a thread pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .backend import ClusterBackend
from .config import EKSRay, load_jupyter_config
from .errors import NotFoundError
from .models import Cluster, ClusterEvent, Phase
from .spec import validate_scale_request
from .state_files import read_json, write_json_atomic

TERMINAL_PHASES = frozenset({Phase.FAILED, Phase.STOPPED})


class ClusterService:
    def __init__(self, config: EKSRay | None = None, backend: ClusterBackend | None = None) -> None:
        self.config = config if config is not None else EKSRay(config=load_jupyter_config())
        self.backend = backend if backend is not None else self.config.make_backend()

    @property
    def owner(self) -> str:
        return self.config.owner

    # --- clusters ---------------------------------------------------------------------------

    def list(self) -> list[Cluster]:
        return self.backend.list_clusters(self.owner)

    def get(self, name: str) -> Cluster:
        return self.backend.get_cluster(self.owner, name)

    def create(self, request: Any) -> Cluster:
        """Create from a request (a spec, optionally with ``profile``); validated before anything starts."""
        spec = self.config.resolve_spec(request)
        return self.backend.create_cluster(self.owner, spec)

    def scale(self, name: str, request: Any) -> Cluster:
        """``request`` is ``{"workerGroups": [{"groupName", "replicas"?, "minReplicas"?, "maxReplicas"?}]}``."""
        cluster = self.get(name)
        groups = validate_scale_request(cluster.spec, request)
        return self.backend.scale_cluster(self.owner, name, groups)

    def delete(self, name: str) -> None:
        self.backend.delete_cluster(self.owner, name)
        if self.active_name() == name:
            self._write_active(None)

    def events(self, name: str, since: float | None = None) -> list[ClusterEvent]:
        return self.backend.cluster_events(self.owner, name, since)

    def dashboard_address(self, name: str) -> str:
        return self.backend.dashboard_address(self.owner, name)

    def connection_address(self, name: str) -> str:
        return self.backend.connection_address(self.owner, name)

    def wait_ready(
        self,
        name: str,
        timeout: float = 600.0,
        on_progress: Callable[[Cluster], None] | None = None,
        interval: float = 0.5,
    ) -> Cluster:
        """Block until the cluster is ready; raise if it fails or the timeout passes."""
        from .errors import BackendError

        deadline = time.monotonic() + timeout
        while True:
            cluster = self.get(name)
            if on_progress is not None:
                on_progress(cluster)
            if cluster.phase == Phase.READY:
                return cluster
            if cluster.phase in TERMINAL_PHASES:
                raise BackendError(
                    f"Cluster {name!r} {cluster.phase.value}: {cluster.reason or 'no reason given'}"
                )
            if time.monotonic() > deadline:
                raise BackendError(
                    f"Cluster {name!r} is still {cluster.phase.value} after {timeout:.0f} s; "
                    "check its events for the reason."
                )
            time.sleep(interval)

    # --- the active cluster (the one new kernels connect to) ----------------------------------

    @property
    def _active_file(self) -> Path:
        return Path(self.config.state_dir) / f"active-{self.backend.name}-{self.owner}.json"

    def active_name(self) -> str | None:
        return (read_json(self._active_file) or {}).get("name")

    def _write_active(self, name: str | None) -> None:
        self._active_file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self._active_file, {"name": name})

    def use(self, name: str) -> Cluster:
        """Make ``name`` the active cluster (it must exist)."""
        cluster = self.get(name)
        self._write_active(name)
        return cluster

    def active(self) -> Cluster | None:
        """The chosen cluster if it still exists, else the most recently created ready one."""
        name = self.active_name()
        if name:
            try:
                return self.get(name)
            except NotFoundError:
                pass
        ready = [c for c in self.list() if c.phase in (Phase.READY, Phase.SCALING)]
        return max(ready, key=lambda c: c.created_at, default=None)
