"""The operations every face offers, in one place.

The server's handlers, the ``%eksray`` magics and the ``eksray`` CLI all call a
:class:`ClusterService`: it resolves requests against the schema and profiles, calls the
backend for the configured owner, and remembers which cluster is the user's active one.
Methods block; the server calls them on a thread pool.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from traitlets.config import Config

from .accounting import Accounting
from .backend import ClusterBackend
from .config import EKSRay, import_path, load_jupyter_config
from .errors import BackendError, ConflictError, EKSRayError, InvalidRequestError, NotFoundError
from .kernel_bindings import KernelBindings
from .models import Cluster, ClusterEvent, Phase, Severity
from .net import port_open
from .ray_auth import TokenError, dashboard_headers, driver_env, read_token_file
from .spec import validate_scale_request
from .state_files import read_json, write_json_atomic
from .usage import Meter

TERMINAL_PHASES = frozenset({Phase.FAILED, Phase.SUSPENDING, Phase.SUSPENDED})
# Phases in which a driver may connect (or will be able to shortly): kernels get RAY_ADDRESS.
CONNECTABLE_PHASES = frozenset({Phase.PENDING, Phase.STARTING, Phase.READY, Phase.SCALING})

#: Environment variable carrying the server's effective settings to the processes it starts
#: (kernels), so their magics act on the same backend, owner and state as the server.
CONFIG_ENV = "EKSRAY_CONFIG"
#: Set in kernels by the provisioner: the Jupyter server's URL (or base path behind JupyterHub),
#: so the magics link to the server's dashboard proxy.
SERVER_URL_ENV = "JUPYTER_SERVER_URL"
#: Set in kernels next to RAY_ADDRESS: the name of the cluster that address belongs to.
CLUSTER_ENV = "EKSRAY_CLUSTER"


class Connection(NamedTuple):
    """How a Ray driver reaches a cluster: its address and the environment it needs
    (Ray's token authentication: the mode and the token file's path, never the token)."""

    name: str
    address: str
    env: dict[str, str]

    def driver_env(self) -> dict[str, str]:
        """Everything a driver's environment needs for a bare ``ray.init()`` to connect here."""
        return {"RAY_ADDRESS": self.address, CLUSTER_ENV: self.name, **self.env}


class ClusterService:
    def __init__(self, config: EKSRay | None = None, backend: ClusterBackend | None = None) -> None:
        self.config = config if config is not None else EKSRay(config=load_jupyter_config())
        self.backend = backend if backend is not None else self.config.make_backend()

    @classmethod
    def from_environment(cls) -> ClusterService:
        """The service a magic or the CLI uses: the Jupyter config files, then ``$EKSRAY_CONFIG``.

        ``$EKSRAY_CONFIG`` is set by the kernel provisioner from the running server's settings,
        which may come from its command line rather than from files.
        """
        config = load_jupyter_config()
        raw = os.environ.get(CONFIG_ENV)
        if raw:
            try:
                sections = json.loads(raw)
            except ValueError as e:
                raise InvalidRequestError(f"${CONFIG_ENV} is not valid JSON ({e}); unset it") from e
            config.merge(Config(sections))
        return cls(EKSRay(config=config))

    def environment_config(self) -> str:
        """``$EKSRAY_CONFIG`` for a child process: this service's settings (never the server's others)."""
        eksray = {name: getattr(self.config, name) for name in self.config.trait_names(config=True)}
        backend = {name: getattr(self.backend, name) for name in self.backend.trait_names(config=True)}
        sections = {"EKSRay": _json_safe(eksray), type(self.backend).__name__: _json_safe(backend)}
        return json.dumps(sections, sort_keys=True)

    @property
    def owner(self) -> str:
        return self.config.owner

    @property
    def kernel_bindings(self) -> KernelBindings:
        """Which of the owner's kernels is connected to which cluster (for the idle keeper)."""
        return KernelBindings(self.config.state_dir, self.backend.name, self.owner)

    def close(self) -> None:
        """Stop this process's background threads (the backend's watches)."""
        self.backend.close()

    # --- clusters ---------------------------------------------------------------------------

    def list(self) -> list[Cluster]:
        return self.backend.list_clusters(self.owner)

    def get(self, name: str) -> Cluster:
        return self.backend.get_cluster(self.owner, name)

    @functools.cached_property
    def accounting(self) -> Accounting:
        """Usage, cost, quotas and budget of this owner (core/accounting.py)."""
        return Accounting(self)

    def create(self, request: Any) -> Cluster:
        """Create from a request (a spec, optionally with ``profile``); validated before anything
        starts, and within the owner's quotas and budget."""
        spec = self.config.resolve_spec(request)
        with self.accounting.guard("create", spec["name"], spec):
            return self.backend.create_cluster(self.owner, spec)

    def scale(self, name: str, request: Any) -> Cluster:
        """``request`` is ``{"workerGroups": [{"groupName", "replicas"?, "minReplicas"?, "maxReplicas"?}]}``.

        Growing past a quota (replicas, or maxReplicas with autoscaling) is refused."""
        cluster = self.get(name)
        groups = validate_scale_request(cluster.spec, request)
        with self.accounting.guard("scale", name, {**cluster.spec, "workerGroups": groups}):
            return self.backend.scale_cluster_request(self.owner, name, request, cluster)

    def delete(self, name: str) -> Meter | None:
        """Delete the cluster; returns what it cost (its final meter, None if never metered)."""
        meter = self.accounting.close(name)
        self.backend.delete_cluster(self.owner, name)
        if self.active_name() == name:
            self._write_active(None)
        return meter

    def suspend(self, name: str, reason: str | None = None) -> Cluster:
        """Stop the cluster's Ray nodes and keep it (:meth:`ClusterBackend.suspend_cluster`)."""
        self.accounting.sample()  # charged at its running rate up to now; nothing from here
        return self.backend.suspend_cluster(self.owner, name, reason)

    def resume(self, name: str) -> Cluster:
        """Start a suspended cluster again; it is active again from now (idle timers restart).

        Refused when its footprint no longer fits the quotas or the budget is used up."""
        with self.accounting.guard("resume", name, None):
            return self.backend.resume_cluster(self.owner, name)

    def keepalive(self, name: str, source: str) -> Cluster:
        """Say the cluster is in use now: its idle time starts again, a pending warning is void.

        ``source`` says who asked ("the panel", "the CLI", "a notebook").
        """
        cluster = self.get(name)
        if cluster.phase in (Phase.SUSPENDING, Phase.SUSPENDED):
            raise ConflictError(f"Cluster {name!r} is suspended; resume it to use it again.")
        if cluster.phase == Phase.STOPPING:
            raise ConflictError(f"Cluster {name!r} is being deleted.")
        self.backend.mark_active(self.owner, name, time.time(), f"keep-alive from {source}")
        self.backend.record_event(
            self.owner, name, "KeptAlive", f"Kept running by a keep-alive from {source}", Severity.INFO
        )
        return self.get(name)

    def events(self, name: str, since: float | None = None) -> list[ClusterEvent]:
        return self.backend.cluster_events(self.owner, name, since)

    def dashboard_address(self, name: str) -> str:
        return self.backend.dashboard_address(self.owner, name)

    def connection_address(self, name: str) -> str:
        return self.backend.connection_address(self.owner, name)

    def ray_auth_env(self, name: str) -> dict[str, str]:
        """Environment a driver or job needs to authenticate to ``name``'s Ray (empty if none)."""
        return driver_env(self.backend.ray_auth_token_file(self.owner, name))

    def connection(self, name: str, cluster: Cluster | None = None) -> Connection:
        """Address and authentication of ``name`` for a driver."""
        cluster = cluster if cluster is not None else self.get(name)
        address = cluster.address or self.connection_address(name)
        return Connection(name, address, self.ray_auth_env(name))

    def dashboard_headers(self, name: str) -> dict[str, str]:
        """Headers a request to ``name``'s dashboard needs: the backend's own (e.g. the API
        server's bearer token) and Ray's token. Secret values: never answer or log them."""
        headers = dict(self.backend.dashboard_request_headers(self.owner, name))
        token_file = self.backend.ray_auth_token_file(self.owner, name)
        if token_file is not None:
            try:
                headers.update(dashboard_headers(read_token_file(token_file)))
            except TokenError as e:
                raise BackendError(f"Cluster {name!r} cannot be reached: {e}") from e
        return headers

    def wait_ready(
        self,
        name: str,
        timeout: float = 600.0,
        on_progress: Callable[[Cluster], None] | None = None,
        interval: float = 0.5,
    ) -> Cluster:
        """Block until the cluster is ready; raise if it fails or the timeout passes."""

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

    def _read_active(self) -> dict[str, Any]:
        data = read_json(self._active_file)
        return data if isinstance(data, dict) else {}

    def active_name(self) -> str | None:
        """The cluster the user chose with :meth:`use`, if any (it may no longer exist)."""
        return self._read_active().get("name")

    def _write_active(self, connection: Connection | None) -> None:
        self._active_file.parent.mkdir(parents=True, exist_ok=True)
        record = {"name": None, "address": None, "env": {}}
        if connection is not None:
            record = {"name": connection.name, "address": connection.address, "env": connection.env}
        write_json_atomic(self._active_file, record)

    def use(self, name: str) -> Cluster:
        """Make ``name`` the active cluster (it must exist).

        How to connect is recorded too, so starting a kernel needs no backend call.
        """
        cluster = self.get(name)
        self._write_active(self.connection(name, cluster))
        return cluster

    def clear_active(self) -> None:
        """Forget the user's choice: the most recently created ready cluster is active again."""
        self._write_active(None)

    def active(self) -> Cluster | None:
        """The chosen cluster if it still exists, else the most recently created ready one."""
        name = self.active_name()
        if name:
            try:
                return self.get(name)
            except NotFoundError:
                pass
        return self.active_of(self.list(), chosen=None)

    def active_of(self, clusters: Iterable[Cluster], chosen: str | None = "") -> Cluster | None:
        """The active cluster among ``clusters`` already listed (saves backend calls).

        ``chosen`` defaults to the recorded choice; ``None`` means "ignore the choice".
        """
        clusters = list(clusters)
        if chosen == "":
            chosen = self.active_name()
        for cluster in clusters:
            if chosen and cluster.name == chosen:
                return cluster
        ready = [c for c in clusters if c.phase in (Phase.READY, Phase.SCALING)]
        return max(ready, key=lambda c: c.created_at, default=None)

    def active_connection(self, probe_timeout: float = 0.25) -> Connection | None:
        """How a driver connects to the active cluster, if one can; else None.

        Called on every kernel start, so the common case is cheap: the connection recorded by
        :meth:`use` is trusted if its port accepts a TCP connection (~1 ms, no backend call).
        Otherwise the backend decides (a ``get``, or a ``list`` when nothing was chosen).
        """
        recorded = self._read_active()
        name, address, env = recorded.get("name"), recorded.get("address"), recorded.get("env")
        if name and address and isinstance(env, dict) and port_open(address, probe_timeout):
            return Connection(name, address, {str(k): str(v) for k, v in env.items()})
        cluster = self.active()
        if cluster is None or cluster.phase not in CONNECTABLE_PHASES:
            return None
        try:
            return self.connection(cluster.name, cluster)
        except EKSRayError:
            return None


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    """Only the values JSON can carry (a setting that cannot travel keeps its default).

    Classes (the backend, the job runner) travel as their import paths.
    """
    out = {}
    for key, value in values.items():
        if isinstance(value, type):
            value = import_path(value)
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[key] = value
    return out
