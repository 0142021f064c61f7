"""The one interface every backend implements.

Methods are synchronous and may block (they talk to processes, Ray or Kubernetes);
the server runs them on a thread pool so its event loop never waits on a backend.
Every method takes the ``owner`` it acts for: a backend only ever shows or touches
clusters of that owner, which is what makes the REST API and the dashboard proxy safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from traitlets import Dict, Int, Unicode
from traitlets.config import LoggingConfigurable

from .errors import ConflictError
from .models import CacheStatus, Change, Cluster, ClusterEvent, Severity
from .spec import validate_scale_request
from .usage import NodeRate, Prices, Resources, costs, from_ray

Listener = Callable[[Change], None]


class ClusterBackend(LoggingConfigurable):
    """Base class of backends. Subclasses implement the methods that raise NotImplementedError."""

    #: Short name shown to users and in ``GET /config``.
    name = "abstract"

    profiles = Dict(
        help="Named cluster templates (set by EKSRay.profiles).",
    )
    state_dir = Unicode(help="Directory for the backend's own state (set from EKSRay.state_dir).")
    max_clusters_per_owner = Int(10, help="How many clusters one user may have at once.").tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._listeners: list[Listener] = []
        self._listeners_lock = threading.Lock()
        # Held from a subscribe's or an unsubscribe's decision (first? last?) to the end of the
        # start or stop it leads to: a stop decided before a new subscriber came can never stop
        # the observer that subscriber relies on. Not taken by ``notify``, so observer threads
        # never wait on it.
        self._observing_lock = threading.RLock()

    # --- clusters -------------------------------------------------------------------------

    def create_cluster(self, owner: str, spec: dict[str, Any]) -> Cluster:
        """Create a cluster from a validated spec; return at once with its first state.

        Raises ConflictError if the name exists or a limit would be exceeded.
        """
        raise NotImplementedError

    def list_clusters(self, owner: str) -> list[Cluster]:
        """All clusters of ``owner``, sorted by name."""
        raise NotImplementedError

    def get_cluster(self, owner: str, name: str) -> Cluster:
        """One cluster with its groups and nodes. Raises NotFoundError."""
        raise NotImplementedError

    def scale_cluster(self, owner: str, name: str, worker_groups: list[dict[str, Any]]) -> Cluster:
        """Apply new replicas/minReplicas/maxReplicas (already validated) to a running cluster."""
        raise NotImplementedError

    def scale_cluster_request(self, owner: str, name: str, request: Any, current: Cluster) -> Cluster:
        """Apply a scale request as the user sent it (only the fields they named).

        ``current`` is the state the caller read. The default validates ``request`` against
        ``current.spec`` and calls :meth:`scale_cluster`. A backend whose replicas are also
        written by an autoscaler overrides this to re-apply the same request on fresh state
        when a concurrent write wins, instead of overwriting that write with stale values.
        """
        return self.scale_cluster(owner, name, validate_scale_request(current.spec, request))

    def delete_cluster(self, owner: str, name: str) -> None:
        """Stop every process or object of the cluster and forget it. Raises NotFoundError."""
        raise NotImplementedError

    # --- suspend, resume and activity (core/lifecycle.py decides when) --------------------------

    def suspend_cluster(self, owner: str, name: str, reason: str | None = None) -> Cluster:
        """Stop every Ray node of a running cluster and keep the cluster (spec, state, events).

        A suspended cluster costs nothing and counts against no node limit, only against the
        number of clusters. ``reason`` goes into its events. Suspending a suspended cluster does
        nothing. Raises ConflictError for a cluster that is not running.
        """
        self.get_cluster(owner, name)  # an unknown name is a 404 here too
        raise ConflictError(f"The {self.name} backend cannot suspend clusters.")

    def resume_cluster(self, owner: str, name: str) -> Cluster:
        """Start a suspended cluster again with the same name and spec; return at once.

        Resuming a running cluster does nothing. Raises ConflictError while it is still
        suspending or when the node limit does not allow it now.
        """
        self.get_cluster(owner, name)
        raise ConflictError(f"The {self.name} backend cannot resume clusters.")

    def mark_active(self, owner: str, name: str, at: float, why: str) -> None:
        """Persist that something used the cluster at ``at`` (it never moves back): a keep-alive,
        or activity an enforcer saw. ``why`` is a short note ("keep-alive from the CLI")."""

    def busy_reasons(self, owner: str, name: str) -> list[str]:
        """What Ray runs or waits to run on the cluster now ("3 tasks running or waiting", "1
        actor alive", "Ray job raysubmit_… running"); empty when nothing. Raises BackendError
        when Ray cannot be asked (the caller then must not take the cluster for idle)."""
        return []

    def record_event(self, owner: str, name: str, reason: str, message: str, severity: Severity) -> None:
        """Add an event to the cluster's timeline (a lifecycle warning or action, with its why)."""

    def all_clusters(self) -> list[Cluster]:
        """Every owner's clusters this backend can see (for ``eksray admin reap``)."""
        raise NotImplementedError

    def cluster_events(self, owner: str, name: str, since: float | None = None) -> list[ClusterEvent]:
        """Events of the cluster, oldest first; only those strictly after ``since`` if given."""
        raise NotImplementedError

    def dashboard_address(self, owner: str, name: str) -> str:
        """Base URL (``http://host:port``) of the cluster's Ray dashboard.

        Raises NotFoundError for an unknown cluster and NotReadyError while it is not up.
        """
        raise NotImplementedError

    def dashboard_request_headers(self, owner: str, name: str) -> dict[str, str]:
        """Extra headers the dashboard proxy must send upstream (e.g. an API server bearer token).

        Secret values: the proxy adds them to the upstream request only, never to a response
        or a log line. Default: none.
        """
        return {}

    def dashboard_request_options(self, owner: str, name: str) -> dict[str, Any]:
        """Extra ``tornado.httpclient.HTTPRequest`` options for the upstream (e.g. ``ssl_options``
        with the API server's CA). Default: none."""
        return {}

    def ray_auth_token_file(self, owner: str, name: str) -> Path | None:
        """The file (mode 0600) holding the token this cluster's Ray demands (:mod:`..core.ray_auth`).

        None for a cluster that demands none. Raises NotFoundError for an unknown cluster and
        NotReadyError while the token does not exist yet. Default: no authentication.
        """
        return None

    def connection_address(self, owner: str, name: str) -> str:
        """The address a Ray driver should use (``host:port`` for GCS or ``ray://host:port``)."""
        raise NotImplementedError

    def cache_status(self, owner: str) -> CacheStatus:
        """Whether the answers for ``owner`` (list, get, events) are current. Cheap: no I/O.

        Default: always (a backend reading live state); one serving from a cache says when
        that cache may be behind (e.g. its watch is interrupted).
        """
        return CacheStatus()

    def limits(self) -> dict[str, Any]:
        """Limits users should know about (shown by ``GET /config`` and the create form)."""
        return {"maxClustersPerOwner": self.max_clusters_per_owner}

    # --- usage and cost (core/usage.py, core/accounting.py) ------------------------------------

    def node_requests(self, shape: dict[str, Any], head: bool) -> Resources:
        """What one node of a head or worker-group shape asks for (quotas count it). Default: the
        shape's cpu, gpu and memory (none given: 0)."""
        return {
            "cpu": float(shape.get("cpu", 1)),
            "gpu": float(shape.get("gpu", 0)),
            "memoryGiB": float(shape.get("memory") or 0.0),
            "objectStoreGiB": 0.0,
        }

    def with_use(self, owner: str, cluster: Cluster) -> Cluster:
        """``cluster`` with each node's ``used`` (what Ray has in use there) where the backend
        reads it apart from the cluster's state (kuberay: from the head's dashboard). Default:
        as it is."""
        return cluster

    def estimate_rate(self, requests: Resources, prices: Prices) -> float | None:
        """Dollars per hour of a node asking for ``requests`` before it runs anywhere (quotas'
        ``maxDollarsPerHour``). Default: ``prices``, the admin's price table."""
        return prices.rate(requests)

    def price_nodes(self, cluster: Cluster, prices: Prices) -> dict[str, NodeRate]:
        """Each running node's dollars per hour. Default: ``prices`` times what Ray schedules on it."""
        basis = "price table" if prices.configured else "no prices set"
        return {
            node.id: NodeRate(prices.rate(from_ray(node.resources)), basis)
            for node in cluster.nodes
            if costs(node)
        }

    def prometheus_config(self) -> str:
        """A Prometheus config (YAML) scraping this user's clusters' Ray metrics."""
        raise ConflictError(
            f"The {self.name} backend's clusters are scraped by the Prometheus of where they run; "
            "see docs/usage.md."
        )

    # --- observing ------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` (from a backend thread) on every change; returns an unsubscribe function.

        One observer per backend serves every listener, so many panels do not multiply
        the work done against Ray or Kubernetes. Subscribing and unsubscribing are serialised
        with the start and stop they lead to, so either may block while another one's stop
        joins the observer's thread (call them on a thread, not on an event loop). Calling the
        unsubscribe function again does nothing.
        """
        with self._observing_lock:
            with self._listeners_lock:
                self._listeners.append(listener)
                first = len(self._listeners) == 1
            if first:
                self.start_observing()
        done = False

        def unsubscribe() -> None:
            nonlocal done
            with self._observing_lock:
                if done:  # a second call must not take another subscriber's equal listener
                    return
                done = True
                with self._listeners_lock:
                    if listener in self._listeners:
                        self._listeners.remove(listener)
                    last = not self._listeners
                if last:
                    self.stop_observing()

        return unsubscribe

    def notify(self, change: Change) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(change)
            except Exception:  # one bad listener must not starve the others
                self.log.exception("eksray: change listener failed")

    @property
    def observing(self) -> bool:
        """Whether changes reach the listeners now (the push stream's heartbeat says so).

        Default: always (a backend that notifies as it makes changes); one with an observer
        thread says whether that thread runs.
        """
        return True

    def start_observing(self) -> None:
        """Start watching the backend (called when the first listener subscribes).

        Called under the observing lock, never at the same time as :meth:`stop_observing`.
        Must not return before the new observer is set up, even while the thread of an
        earlier one is still ending: that thread must not touch the new observer's state.
        """

    def stop_observing(self) -> None:
        """Stop watching (called when the last listener leaves, and on shutdown); joins, bounded."""

    def close(self) -> None:
        """Release resources; clusters keep running (their state lives in the backend)."""
        with self._observing_lock:
            self.stop_observing()
