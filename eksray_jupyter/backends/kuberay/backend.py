"""The ``kuberay`` ClusterBackend: ``ray.io/v1`` RayClusters on Kubernetes (EKS or any cluster).

* Writes go to the API server (create, a JSON patch to scale, delete); reads come from a
  per-namespace cache fed by watches (:mod:`.cache`), so listing 100 clusters with 1,000
  pods costs no API call. A write is put into the cache at once (read-your-writes).
* Ownership: every RayCluster we make carries ``eksray.io/managed-by``, a sanitised
  ``eksray.io/owner`` label and the exact owner in an annotation; every call checks it,
  so another user's cluster is a 404. Clusters made by others (kubectl, RayJobs) in a
  user's own namespace are shown read-only; elsewhere they are skipped.
* Only the owner's clients reach a cluster: Ray's token authentication (``ray_token_auth``;
  the token from the operator's Secret, :mod:`.ray_tokens`) and a NetworkPolicy per cluster
  (``network_policy``, :mod:`.network_policy`), made with the cluster and deleted with it.
* The class is the settings, the ClusterBackend interface and ownership; the rest is
  composed in: scaling alongside the autoscaler (:mod:`.scaling`), the ``subscribe``
  observer (:mod:`.observer`), Kubernetes events (:mod:`.kube_events`) and Ray autoscaler
  events (:mod:`.dashboard_events`).
* ``kubernetes`` and ``boto3`` are imported on first use, never when the class loads.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib.metadata
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from traitlets import Bool, Dict, Float, Int, List, Unicode, default, validate

from ...core.backend import ClusterBackend
from ...core.errors import (
    BackendError,
    ConflictError,
    EKSRayError,
    FieldError,
    InvalidRequestError,
    LimitExceededError,
    NotFoundError,
    NotReadyError,
    UpstreamTimeoutError,
)
from ...core.models import CacheStatus, Cluster, ClusterEvent, Phase, Severity
from ...core.ray_auth import dashboard_headers
from ...core.usage import NodeRate, Prices, costs
from ..ray_dashboard import busy_reasons, fractions, url_fetcher
from . import kube_events, scaling
from .dashboard_events import DashboardEvents
from .manifest import ManifestOptions, build_raycluster, check_pod_templates, pod_memory_gib
from .names import (
    ANNOTATION_LAST_ACTIVE,
    ANNOTATION_OWNER,
    ANNOTATION_SPEC,
    ANNOTATION_SUSPENDED_AT,
    CLIENT_PORT,
    DASHBOARD_PORT,
    GCS_PORT,
    L_GANG,
    LABEL_MANAGED_BY,
    LABEL_OWNER,
    LABEL_SUBMITS_TO,
    MANAGED_BY,
    auth_secret_name,
    dns_label,
    head_service,
    is_dns_label,
    network_policy_name,
    parse_time,
)
from .network_policy import build_network_policy, check_peer, jupyter_peer, owned_by
from .node_costs import NodeCosts
from .observer import Observer
from .pricing import NodePricer
from .ray_tokens import RayTokens
from .status import build_cluster, unschedulable

if TYPE_CHECKING:
    from .cache import NamespaceCache
    from .kubeapi import KubeApi

_SCHEDULERS = ("", "volcano", "yunikorn", "kueue", "scheduler-plugins", "kai")
_QUEUE_LABELS = {
    "volcano": "volcano.sh/queue-name",
    "yunikorn": "yunikorn.apache.org/queue",
    "kueue": "kueue.x-k8s.io/queue-name",
    "kai": "kai.scheduler/queue",
}


T = TypeVar("T")


def _seconds(value: Any) -> float | None:
    """An annotation's epoch seconds; None if absent or not a number (someone edited it)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and number > 0 else None


def _not_found(name: str) -> str:
    return f"No cluster named {name!r}. List your clusters to see their names."


def _within_request_timeout(method: Callable[..., T]) -> Callable[..., T]:
    """All the API calls of ``method`` (a create, scale or delete) share one ``request_timeout``:
    it answers in time, or with a 504, however many calls it makes (see ``KubeApi.deadline``)."""

    @functools.wraps(method)
    def bounded(self: KubeRayBackend, *args: Any, **kwargs: Any) -> T:
        with self.api.deadline():
            return method(self, *args, **kwargs)

    return bounded


def _installed_ray_version() -> str:
    # Ray Client needs the same Ray on both ends: default to the notebook's own (no import of ray).
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return "2.60.0"


class KubeRayBackend(ClusterBackend):
    """RayClusters managed by the KubeRay operator; see ``docs/kuberay.md``."""

    name = "kuberay"

    # --- credentials ------------------------------------------------------------------------------

    credentials = Unicode(
        "auto",
        help="How to reach the API server: 'kubeconfig', 'in-cluster' (the pod's service account), "
        "'eks' (eks_cluster_name + eks_region, token from AWS credentials), or 'auto' (eks if "
        "eks_cluster_name is set, else in-cluster inside a pod, else kubeconfig).",
    ).tag(config=True)
    kubeconfig = Unicode(help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config).").tag(config=True)
    context = Unicode(help="kubeconfig context (default: the current one).").tag(config=True)
    eks_cluster_name = Unicode(help="EKS cluster name (credentials 'eks').").tag(config=True)
    eks_region = Unicode(help="AWS region of the EKS cluster.").tag(config=True)
    aws_profile = Unicode(help="AWS profile for EKS (default: the default credential chain).").tag(
        config=True
    )
    aws_endpoint_urls = Dict(
        help="Endpoint URLs per AWS service, e.g. {'eks': ..., 'sts': ...} (VPC endpoints, tests)."
    ).tag(config=True)
    eks_token_refresh_seconds = Float(
        600.0, help="Mint a new EKS token when the current one is this old (EKS accepts 15 min)."
    ).tag(config=True)
    verify_ssl = Bool(True, help="Verify the API server's TLS certificate.").tag(config=True)

    # --- namespaces -------------------------------------------------------------------------------

    namespace_template = Unicode(
        "eksray-{username}",
        help="Namespace of each user's clusters; {username} is the owner as a DNS-1123 label.",
    ).tag(config=True)
    namespace = Unicode(
        help="One namespace for every user's clusters instead of namespace_template; users are "
        "kept apart by the eksray.io/owner label (names are unique per namespace)."
    ).tag(config=True)
    allowed_namespaces = List(
        Unicode(), help="Further namespaces a spec may name (its 'namespace' field); shared by users."
    ).tag(config=True)
    create_namespaces = Bool(True, help="Create a user's namespace on their first cluster.").tag(config=True)
    show_foreign_clusters = Bool(
        True, help="List RayClusters not made by eksray in a user's own namespace, read-only."
    ).tag(config=True)

    # --- what runs --------------------------------------------------------------------------------

    ray_version = Unicode(help="Default rayVersion (default: the Ray installed next to Jupyter).").tag(
        config=True
    )

    @default("ray_version")
    def _default_ray_version(self) -> str:
        return _installed_ray_version()

    image = Unicode(help="Default Ray image (default: image_template).").tag(config=True)
    image_template = Unicode(
        "rayproject/ray:{ray_version}", help="Image when neither the spec nor `image` names one."
    ).tag(config=True)
    image_pull_policy = Unicode(help="imagePullPolicy of Ray containers (default: Kubernetes').").tag(
        config=True
    )
    allowed_images = List(Unicode(), help="Glob patterns a spec's image must match (empty: any).").tag(
        config=True
    )
    pod_templates = Dict(
        help="Pod extras per '*', 'head', 'workers', 'gpu' or 'group/<groupName>': nodeSelector, "
        "tolerations, affinity, labels, annotations, serviceAccountName, priorityClassName, "
        "schedulerName, runtimeClassName, imagePullSecrets, env, image, imagePullPolicy, "
        "securityContext, volumes, volumeMounts."
    ).tag(config=True)

    @validate("pod_templates")
    def _check_pod_templates(self, proposal: Any) -> dict[str, Any]:
        check_pod_templates(proposal["value"])
        return proposal["value"]

    memory_per_cpu_gib = Float(2.0, help="Memory (GiB) per CPU of a node whose spec gives none.").tag(
        config=True
    )
    min_memory_gib = Float(1.0, help="Least memory (GiB) of a worker whose spec gives none.").tag(config=True)
    head_min_memory_gib = Float(2.0, help="Least memory (GiB) of a head whose spec gives none.").tag(
        config=True
    )
    gpu_resource_name = Unicode("nvidia.com/gpu", help="Extended resource that GPUs are requested as.").tag(
        config=True
    )
    object_store_memory_fraction = Float(
        0.0, help="Object store size as a fraction of each node's memory (0: Ray's default, 30%)."
    ).tag(config=True)
    ray_start_params = Dict(help="rayStartParams for every node (a spec's own override them).").tag(
        config=True
    )

    # --- scheduling -------------------------------------------------------------------------------

    batch_scheduler = Unicode(
        help="Queue labels for the operator's batch scheduler: '', 'volcano', 'yunikorn', 'kueue', "
        "'scheduler-plugins' or 'kai' (the operator itself must be configured for it)."
    ).tag(config=True)

    @validate("batch_scheduler")
    def _check_scheduler(self, proposal: Any) -> str:
        if proposal["value"] not in _SCHEDULERS:
            raise ValueError(f"unknown batch_scheduler {proposal['value']!r}; use one of {_SCHEDULERS}")
        return proposal["value"]

    queue = Unicode(help="Queue (Volcano/YuniKorn/KAI) or LocalQueue (Kueue); {username} allowed.").tag(
        config=True
    )
    gang_scheduling = Bool(
        False, help="Label clusters ray.io/gang-scheduling-enabled (YuniKorn, scheduler-plugins)."
    ).tag(config=True)
    cluster_labels = Dict(help="Labels for every RayCluster (after the spec's own).").tag(config=True)
    cluster_annotations = Dict(help="Annotations for every RayCluster.").tag(config=True)

    # --- access -----------------------------------------------------------------------------------

    dashboard_access = Unicode(
        "auto",
        help="How the server reaches a dashboard: 'service' (head Service DNS, server in the cluster), "
        "'apiserver-proxy' (the API server's service proxy, server outside), or 'auto'.",
    ).tag(config=True)
    driver_address = Unicode(
        "auto",
        help="Address kernels get: 'client' (ray://<head-svc>:10001), 'gcs' (<head-svc>:6379, "
        "in-cluster kernels), or 'auto' (gcs in a pod, else client).",
    ).tag(config=True)

    @validate("credentials", "dashboard_access", "driver_address")
    def _check_modes(self, proposal: Any) -> str:
        allowed = {
            "credentials": ("auto", "kubeconfig", "in-cluster", "eks"),
            "dashboard_access": ("auto", "service", "apiserver-proxy"),
            "driver_address": ("auto", "client", "gcs"),
        }[proposal["trait"].name]
        if proposal["value"] not in allowed:
            raise ValueError(f"{proposal['trait'].name} must be one of {allowed}, got {proposal['value']!r}")
        return proposal["value"]

    service_domain = Unicode(
        "svc", help="DNS suffix after <service>.<namespace>. ('svc' or 'svc.cluster.local')."
    ).tag(config=True)

    # --- who may reach a cluster ---------------------------------------------------------------

    ray_token_auth = Bool(
        True,
        help="Ray token authentication on every RayCluster eksray makes (spec.authOptions mode 'token'): "
        "the KubeRay operator creates a Secret with a random token per cluster and gives it to the "
        "cluster's Ray containers; Ray then refuses every client without it, and eksray hands it only to "
        "the owner's kernels, jobs and dashboard proxy. Needs KubeRay >= 1.5 (older operators ignore it), "
        "Ray >= 2.52 and 'get' on secrets (docs/kuberay.md). Clusters made before keep running without.",
    ).tag(config=True)
    ray_token_wait_seconds = Float(
        10.0,
        help="How long a request for a new cluster's Ray token (e.g. making it the active cluster right "
        "after creating it) waits for the KubeRay operator to make the token Secret; then it is 'not ready'.",
    ).tag(config=True)
    network_policy = Bool(
        True,
        help="Create a networking.k8s.io/v1 NetworkPolicy with each cluster (deleted with it): its pods "
        "accept connections only from the cluster's own pods, its RayJob submitters, the Jupyter "
        "server's pods (jupyter_pod_selector), the KubeRay operator (operator_peer, dashboard port) "
        "and network_policy_ingress_from. Needs create/get/delete on networkpolicies, and a network "
        "plugin that enforces NetworkPolicies.",
    ).tag(config=True)
    jupyter_pod_selector = Dict(
        {"app": "jupyterhub", "component": "singleuser-server"},
        allow_none=True,
        help="Labels of the Jupyter server pods whose kernels may connect to clusters (default: "
        "JupyterHub's single-user servers, as the zero-to-jupyterhub chart labels them). {}: every "
        "pod of jupyter_namespace_selector; None: no such peer.",
    ).tag(config=True)
    jupyter_namespace_selector = Dict(
        default_value=None,
        allow_none=True,
        help="Labels of the namespaces of those pods. Default (None): the server's own namespace when it "
        "runs in a pod, otherwise every namespace. {}: every namespace.",
    ).tag(config=True)
    operator_peer = Dict(
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}},
        },
        help="The KubeRay operator's pods as a NetworkPolicy peer, let in to the dashboard port only (it "
        "asks dashboards about RayJobs and RayServices). Narrow the namespaceSelector to the operator's "
        "namespace, e.g. {'matchLabels': {'kubernetes.io/metadata.name': 'kuberay-system'}}; {}: no rule.",
    ).tag(config=True)
    network_policy_ingress_from = List(
        Dict(),
        help="Further NetworkPolicy peers (podSelector/namespaceSelector/ipBlock) let in to every port of "
        "every cluster, e.g. [{'ipBlock': {'cidr': '10.0.0.0/24'}}] for the API server's addresses "
        "with dashboard_access 'apiserver-proxy'.",
    ).tag(config=True)

    @validate("operator_peer")
    def _check_operator_peer(self, proposal: Any) -> dict[str, Any]:
        if proposal["value"]:
            check_peer(proposal["value"], "operator_peer")
        return proposal["value"]

    @validate("network_policy_ingress_from")
    def _check_peers(self, proposal: Any) -> list[dict[str, Any]]:
        for i, peer in enumerate(proposal["value"]):
            check_peer(peer, f"network_policy_ingress_from[{i}]")
        return proposal["value"]

    # --- operation --------------------------------------------------------------------------------

    request_timeout = Float(
        15.0,
        help="Seconds eksray waits for the API server: for any one call, and for all the calls of one "
        "create, scale or delete together (then it answers 504). Nothing retries past it: only a "
        "connection that was never made, a broken read or a 429 is tried again, within it. Watches "
        "list with 4 times this.",
    ).tag(config=True)
    watch_timeout_seconds = Int(300, help="Server-side lifetime of one watch request.").tag(config=True)
    dashboard_events = Bool(True, help="Show Ray autoscaler events from each head's dashboard.").tag(
        config=True
    )
    dashboard_poll_seconds = Float(
        10.0, help="While panels are open, how often scaling clusters' dashboards are read."
    ).tag(config=True)
    record_events = Bool(
        True, help="Record create/scale/delete as Kubernetes events on the RayCluster (who did what)."
    ).tag(config=True)
    scale_retries = Int(5, help="Attempts to apply a scale when the autoscaler writes meanwhile.").tag(
        config=True
    )
    node_prices = Dict(
        help="Admin price table per instance type, dollars per hour: {'m5.xlarge': 0.192, 'g5.xlarge': "
        "{'on-demand': 1.006, 'spot': 0.45}}. Wins over AWS's prices, and prices nodes where AWS cannot "
        "be asked (docs/usage.md).",
    ).tag(config=True)
    aws_pricing = Bool(
        True,
        help="Look up node prices with the AWS Price List API and EC2 spot price history (boto3; needs "
        "pricing:GetProducts and ec2:DescribeSpotPriceHistory). Off: only node_prices and EKSRay.prices.",
    ).tag(config=True)
    pricing_region = Unicode(
        help="AWS region of the nodes, for their prices (default: eks_region, else boto3's default)."
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.RLock()
        self._api: KubeApi | None = None
        self.caches: dict[str, NamespaceCache] = {}
        self._namespace_owner: dict[str, str] = {}
        self._memo: dict[tuple[str, str], tuple[tuple[Any, ...], Cluster]] = {}
        self.node_costs = NodeCosts(lambda: self.api.list_nodes_raw(), self._make_pricer(), self.log)
        self._skipped: set[tuple[str, str, str]] = set()
        self.autoscaler_events = DashboardEvents(self)
        self.ray_tokens = RayTokens(lambda: self.api, self._token_root, lambda: self.ray_token_wait_seconds)
        self._observer = Observer(self)
        self._closed = False
        # RayClusters (uids) whose NetworkPolicy this process made or has checked for, and the
        # threads checking (joined on close: one left in a socket read can abort the exit).
        self._policy_checked: set[str] = set()
        self._policy_threads: list[threading.Thread] = []

    @default("state_dir")
    def _default_state_dir(self) -> str:
        # As EKSRay.state_dir, for a backend made on its own (tests, scripts).
        from jupyter_core.paths import jupyter_data_dir

        return os.environ.get("EKSRAY_STATE_DIR") or str(Path(jupyter_data_dir()) / "eksray")

    def _token_root(self) -> Path:
        return Path(self.state_dir) / "kuberay" / "ray-tokens"

    # --- connections ------------------------------------------------------------------------------

    def _credential_settings(self) -> Any:
        from .credentials import CredentialSettings

        return CredentialSettings(
            mode=self.credentials,
            kubeconfig=self.kubeconfig,
            context=self.context,
            eks_cluster_name=self.eks_cluster_name,
            eks_region=self.eks_region,
            aws_profile=self.aws_profile,
            aws_endpoint_urls=dict(self.aws_endpoint_urls),
            token_refresh_seconds=self.eks_token_refresh_seconds,
            verify_ssl=self.verify_ssl,
        )

    @property
    def api(self) -> KubeApi:
        """The API client, built on first use (this is where kubernetes/boto3 get imported)."""
        with self._lock:
            if self._api is None:
                import kubernetes.client

                from .credentials import build_configuration
                from .errors import no_client_retries
                from .kubeapi import KubeApi

                configuration = build_configuration(self._credential_settings())
                configuration.connection_pool_maxsize = 32  # three watches per namespace + requests
                configuration.retries = no_client_retries()  # kube_call retries, within the timeout
                self._api = KubeApi(kubernetes.client.ApiClient(configuration), self.request_timeout)
            return self._api

    def _in_cluster(self) -> bool:
        from .credentials import in_cluster

        return self.credentials == "in-cluster" or (self.credentials == "auto" and in_cluster())

    def dashboard_mode(self) -> str:
        if self.dashboard_access != "auto":
            return self.dashboard_access
        return "service" if self._in_cluster() else "apiserver-proxy"

    def dashboard_service_url(self, cr: dict[str, Any], namespace: str) -> str:
        """The dashboard through the head Service's cluster DNS name (service mode)."""
        port = ((cr.get("status") or {}).get("endpoints") or {}).get("dashboard") or DASHBOARD_PORT
        return f"http://{head_service(cr)}.{namespace}.{self.service_domain}:{port}"

    # --- namespaces and ownership -----------------------------------------------------------------

    def namespace_for(self, owner: str) -> str:
        """The namespace of ``owner``'s clusters (template mode) or the shared one."""
        if self.namespace:
            return self.namespace
        rendered = self.namespace_template.format(username=dns_label(owner))
        namespace = rendered if is_dns_label(rendered) else dns_label(rendered)
        self._namespace_owner[namespace] = owner
        return namespace

    def namespaces_of(self, owner: str) -> list[str]:
        own = self.namespace_for(owner)
        return [own] + [n for n in self.allowed_namespaces if n != own]

    def owner_of(self, namespace: str, cr: dict[str, Any]) -> tuple[str | None, bool]:
        """(owner, made by eksray) of a RayCluster; owner None: nobody may see it here."""
        meta = cr.get("metadata") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        if labels.get(LABEL_MANAGED_BY) == MANAGED_BY and ANNOTATION_OWNER in annotations:
            owner = str(annotations[ANNOTATION_OWNER])
            # The label selects, the annotation decides; disagreement means someone edited it.
            if labels.get(LABEL_OWNER) != dns_label(owner) or ANNOTATION_SPEC not in annotations:
                return None, False
            return owner, True
        # Foreign clusters only where a namespace is one user's own: never in shared ones.
        if (
            self.show_foreign_clusters
            and not self.namespace
            and namespace in self._namespace_owner
            and namespace not in self.allowed_namespaces
        ):
            return self._namespace_owner[namespace], False
        return None, False

    def cache_of(self, namespace: str) -> NamespaceCache:
        """The namespace's cache, started on first use and synced before it is read."""
        with self._lock:
            if self._closed:
                raise BackendError("The kuberay backend is closed")
            cache = self.caches.get(namespace)
            if cache is None:
                from .cache import NamespaceCache

                cache = NamespaceCache(
                    namespace, self.api, self._observer.on_cache_change, self.log, self.watch_timeout_seconds
                )
                self.caches[namespace] = cache
                cache.start()
        if not cache.wait_synced(self.request_timeout):
            # No answer at all within the time is a timeout (504); an answer that was a failure, 502.
            error = BackendError if cache.last_error else UpstreamTimeoutError
            raise error(
                f"Cannot read namespace {namespace} from Kubernetes: {cache.last_error or 'no answer'}. "
                "Check the API server and the server's RBAC (list/watch rayclusters, pods, events)."
            )
        return cache

    def _find(self, owner: str, name: str) -> tuple[NamespaceCache, dict[str, Any], bool]:
        """The owner's cluster ``name`` (cache, object, ours) or NotFoundError — also for others' clusters."""
        for namespace in self.namespaces_of(owner):
            cache = self.cache_of(namespace)
            with cache.lock:
                cr = cache.clusters.get(name)
            if cr is None:
                continue
            who, ours = self.owner_of(namespace, cr)
            if who == owner:
                return cache, cr, ours
        raise NotFoundError(_not_found(name))

    # --- building Cluster objects -----------------------------------------------------------------

    def _address(self, cr: dict[str, Any]) -> str:
        meta = cr["metadata"]
        host = f"{head_service(cr)}.{meta['namespace']}.{self.service_domain}"
        endpoints = (cr.get("status") or {}).get("endpoints") or {}
        mode = self.driver_address
        if mode == "auto":
            mode = "gcs" if self._in_cluster() else "client"
        if mode == "gcs":
            port = endpoints.get("gcs-server") or endpoints.get("gcs") or GCS_PORT
            return f"{host}:{port}"
        return f"ray://{host}:{endpoints.get('client') or CLIENT_PORT}"

    def _build(self, cache: NamespaceCache, cr: dict[str, Any], owner: str, ours: bool) -> Cluster:
        meta = cr["metadata"]
        name = meta["name"]
        key = (cache.namespace, name)
        with cache.lock:
            # The operator's refusal (no status yet) is read from events: they key the memo then.
            events = cache.event_serial if not cr.get("status") else 0
            version = (meta.get("uid"), meta.get("resourceVersion"), cache.versions[name], owner, events)
            memo = self._memo.get(key)
            if memo is not None and memo[0] == version:
                return memo[1]
            pods = list(cache.pods_by_cluster.get(name, {}).values())
        created = parse_time(meta.get("creationTimestamp")) or 0.0
        events = cache.cluster_events(name, meta.get("uid"), created)
        suspended_reason = None
        queue = (meta.get("labels") or {}).get(_QUEUE_LABELS["kueue"])
        if queue:
            suspended_reason = f"Waiting for admission by Kueue (LocalQueue {queue})"
        cluster = build_cluster(
            cr,
            pods,
            owner=owner,
            backend=self.name,
            ours=ours,
            address=self._address(cr),
            operator_refusal=kube_events.operator_refusal(cr, events),
            suspended_reason=suspended_reason,
            events=events,
            # Node sizes only when a pod waits for a place: can it ever fit?
            node_sizes=self._node_sizes() if any(unschedulable(p) for p in pods) else None,
            memory_per_cpu_gib=self.memory_per_cpu_gib,
            instance_types=self.node_costs.instance_types() if any(p.get("node") for p in pods) else None,
        )
        annotations = meta.get("annotations") or {}
        cluster.last_active_at = _seconds(annotations.get(ANNOTATION_LAST_ACTIVE))
        cluster.suspended_at = _seconds(annotations.get(ANNOTATION_SUSPENDED_AT))
        self._memo[key] = (version, cluster)
        return cluster

    def _node_sizes(self) -> list[dict[str, Any]] | None:
        """Every node's allocatable size, listed at most once a minute; None where the API does not
        let us list nodes (a namespaced role): then the scheduler's own words are shown."""
        return self.node_costs.sizes()

    # --- usage and cost (node_costs.py, docs/usage.md) -------------------------------------------

    def _make_pricer(self) -> NodePricer:
        region = self.pricing_region or self.eks_region

        def session() -> Any:
            if not self.aws_pricing:
                raise BackendError("AWS price lookups are off (c.KubeRayBackend.aws_pricing)")
            import boto3

            return boto3.session.Session(profile_name=self.aws_profile or None, region_name=region or None)

        return NodePricer(
            region=region,
            cache_file=Path(self.state_dir) / "kuberay" / "node-prices.json",
            overrides=self.node_prices,
            session_factory=session,
            log=self.log,
        )

    def node_requests(self, shape: dict[str, Any], head: bool) -> dict[str, float]:
        """What a pod of ``shape`` requests (the manifest's defaults for memory)."""
        memory = pod_memory_gib(
            shape, head, self.memory_per_cpu_gib, self.min_memory_gib, self.head_min_memory_gib
        )
        return {
            "cpu": float(shape.get("cpu", 1)),
            "gpu": float(shape.get("gpu", 0)),
            "memoryGiB": memory,
            "objectStoreGiB": 0.0,
        }

    def with_use(self, owner: str, cluster: Cluster, cached_only: bool = False) -> Cluster:
        """``cluster`` with what Ray uses on each pod, from the head's dashboard (``cached_only``:
        as last read, never a request)."""
        namespace = cluster.namespace or ""
        cache = self.caches.get(namespace)
        cr = cache.clusters.get(cluster.name) if cache else None
        if cr is None:
            return cluster
        uid = str(cr["metadata"].get("uid"))
        by_ip = self.autoscaler_events.usage_of(namespace, cluster, uid, cached_only)
        if not by_ip:
            return cluster
        nodes = [
            dataclasses.replace(node, used=used, utilization=fractions(used, node.resources))
            if node.address and (used := by_ip.get(node.address)) is not None
            else node
            for node in cluster.nodes
        ]
        return dataclasses.replace(cluster, nodes=nodes)

    def estimate_rate(self, requests: dict[str, float], prices: Prices) -> float | None:
        return self.node_costs.estimate(requests, prices)

    def price_nodes(self, cluster: Cluster, prices: Prices) -> dict[str, NodeRate]:
        return {n.id: self.node_costs.pod_rate(n, prices) for n in cluster.nodes if costs(n)}

    def build_safe(self, cache: NamespaceCache, cr: dict[str, Any], owner: str, ours: bool) -> Cluster | None:
        """Build, or skip with a logged reason: one odd RayCluster never breaks the list."""
        try:
            return self._build(cache, cr, owner, ours)
        except Exception as e:
            name = (cr.get("metadata") or {}).get("name", "?")
            marker = (cache.namespace, name, str(cr.get("metadata", {}).get("resourceVersion")))
            if marker not in self._skipped:
                self._skipped.add(marker)
                self.log.warning(
                    "eksray: skipping RayCluster %s/%s: cannot read it (%s: %s)",
                    cache.namespace, name, type(e).__name__, e,
                )  # fmt: skip
            return None

    def forget_cluster(self, key: tuple[str, str]) -> None:
        """Drop what is kept of a deleted cluster (namespace, name)."""
        self._memo.pop(key, None)
        self.autoscaler_events.forget(key)
        self.ray_tokens.forget(*key)

    # --- reading ----------------------------------------------------------------------------------

    def list_clusters(self, owner: str) -> list[Cluster]:
        out: dict[str, Cluster] = {}
        for namespace in self.namespaces_of(owner):
            cache = self.cache_of(namespace)
            with cache.lock:
                items = list(cache.clusters.values())
            unchecked = []
            for cr in items:
                who, ours = self.owner_of(namespace, cr)
                if who != owner:
                    continue
                if ours and cr["metadata"].get("uid") not in self._policy_checked:
                    unchecked.append(cr)
                cluster = self.build_safe(cache, cr, owner, ours)
                if cluster is not None and cluster.name not in out:
                    out[cluster.name] = cluster
            self._ensure_network_policies(unchecked)
        return [out[name] for name in sorted(out)]

    def _ensure_network_policies(self, crs: list[dict[str, Any]]) -> None:
        """Give a cluster whose creator died between its RayCluster and its NetworkPolicy (a server
        or CLI killed there) the policy: checked once per cluster and process, on a thread, by
        the first list that shows it."""
        if not self.network_policy:
            return
        with self._lock:
            if self._closed:
                return
            todo = [
                cr
                for cr in crs
                if cr["metadata"].get("uid") not in self._policy_checked
                and not cr["metadata"].get("deletionTimestamp")
            ]
            self._policy_checked.update(cr["metadata"].get("uid") for cr in todo)
            if not todo:
                return
            thread = threading.Thread(
                target=self._repair_network_policies, args=(todo,), name="eksray-policies", daemon=True
            )
            self._policy_threads = [t for t in self._policy_threads if t.is_alive()] + [thread]
        thread.start()

    def _repair_network_policies(self, crs: list[dict[str, Any]]) -> None:
        for cr in crs:
            namespace, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
            try:
                if self.api.get_network_policy(namespace, network_policy_name(name)) is None:
                    self.api.create_network_policy(namespace, self._network_policy_body(cr))
                    self.log.warning(
                        "eksray: cluster %s/%s had no NetworkPolicy (its creator stopped half way); made it",
                        namespace,
                        name,
                    )
            except ConflictError:
                pass  # made meanwhile (by its creator)
            except EKSRayError as e:
                self.log.warning("eksray: cannot check the NetworkPolicy of %s/%s: %s", namespace, name, e)
                with self._lock:
                    self._policy_checked.discard(cr["metadata"].get("uid"))  # the next list tries again

    def get_cluster(self, owner: str, name: str) -> Cluster:
        cache, cr, ours = self._find(owner, name)
        cluster = self.build_safe(cache, cr, owner, ours)
        if cluster is None:
            raise BackendError(f"Cluster {name!r} cannot be read; the server log says why.")
        return cluster

    # --- create -----------------------------------------------------------------------------------

    def _manifest_options(self, owner: str, namespace: str, spec: dict[str, Any]) -> ManifestOptions:
        ray_version = spec.get("rayVersion") or self.ray_version
        labels = {str(k): str(v) for k, v in self.cluster_labels.items()}
        queue = self.queue.format(username=dns_label(owner)) if self.queue else ""
        if queue and self.batch_scheduler in _QUEUE_LABELS:
            labels[_QUEUE_LABELS[self.batch_scheduler]] = queue
        if self.batch_scheduler == "yunikorn":
            labels["yunikorn.apache.org/app-id"] = f"{namespace}-{spec['name']}"[:63].rstrip("-")
        if self.gang_scheduling:
            labels[L_GANG] = "true"
        return ManifestOptions(
            namespace=namespace,
            owner=owner,
            owner_label=dns_label(owner),
            image=self.image or self.image_template.format(ray_version=ray_version),
            ray_version=ray_version,
            image_pull_policy=self.image_pull_policy,
            allowed_images=tuple(self.allowed_images),
            pod_templates=self.pod_templates,
            cluster_labels=labels,
            cluster_annotations={str(k): str(v) for k, v in self.cluster_annotations.items()},
            ray_start_params={str(k): str(v) for k, v in self.ray_start_params.items()},
            memory_per_cpu_gib=self.memory_per_cpu_gib,
            min_memory_gib=self.min_memory_gib,
            head_min_memory_gib=self.head_min_memory_gib,
            gpu_resource=self.gpu_resource_name,
            object_store_fraction=self.object_store_memory_fraction,
            ray_token_auth=self.ray_token_auth,
        )

    def manifest(self, owner: str, spec: dict[str, Any]) -> dict[str, Any]:
        """The RayCluster ``create_cluster`` would submit (no API call): for dry runs and tests."""
        namespace = self._target_namespace(owner, spec)
        return build_raycluster(spec, self._manifest_options(owner, namespace, spec))

    def _target_namespace(self, owner: str, spec: dict[str, Any]) -> str:
        allowed = self.namespaces_of(owner)
        wanted = spec.get("namespace") or allowed[0]
        if wanted not in allowed:
            raise InvalidRequestError(
                "Invalid cluster spec",
                [FieldError("namespace", f"{wanted!r} is not allowed; use one of {', '.join(allowed)}")],
            )
        return wanted

    def check_cluster_quota(self, owner: str, mine: list[Cluster] | None = None) -> None:
        """LimitExceededError if ``owner`` may not have one more cluster (also for a RayJob's cluster)."""
        if mine is None:
            mine = self.list_clusters(owner)
        owned = sum(1 for c in mine if not c.read_only)
        if owned >= self.max_clusters_per_owner:
            raise LimitExceededError(
                f"You already have {owned} clusters, the most allowed "
                f"(c.KubeRayBackend.max_clusters_per_owner = {self.max_clusters_per_owner}). Delete one first."
            )

    @_within_request_timeout
    def create_cluster(self, owner: str, spec: dict[str, Any]) -> Cluster:
        namespace = self._target_namespace(owner, spec)
        body = build_raycluster(spec, self._manifest_options(owner, namespace, spec))
        name = spec["name"]
        mine = self.list_clusters(owner)
        if any(c.name == name for c in mine):
            raise ConflictError(
                f"A cluster named {name!r} already exists. Pick another name or delete it first."
            )
        self.check_cluster_quota(owner, mine)
        own = namespace == self.namespace_for(owner) and not self.namespace
        if own and self.create_namespaces:
            self._ensure_namespace(namespace, owner)
        cache = self.cache_of(namespace)
        if self.ray_token_auth:
            self._check_no_token_secret(namespace, name)
        try:
            created = self.api.create_cluster(namespace, body)
        except ConflictError as e:
            raise ConflictError(
                f"A cluster named {name!r} already exists in namespace {namespace}. Pick another name."
            ) from e
        except NotFoundError as e:  # the namespace is missing and we may not (or did not) create it
            raise BackendError(
                f"Namespace {namespace} does not exist. Ask an administrator to create it "
                "(or set c.KubeRayBackend.create_namespaces = True with RBAC to create namespaces)."
            ) from e
        if self.network_policy:
            with self._lock:
                self._policy_checked.add(created["metadata"].get("uid"))  # made here, not repaired
            try:
                self._create_network_policy(created)
            except EKSRayError as e:
                self._roll_back(created, e)
        cache.put_cluster(created)
        self._record(created, "Created", f"Cluster {name} created by {owner}")
        return self._build(cache, created, owner, True)

    def _check_no_token_secret(self, namespace: str, name: str) -> None:
        """ConflictError if a Secret already has the name of the cluster's token Secret: the
        operator would take its token instead of making one (someone else would know it)."""
        secret = auth_secret_name(name)
        if self.api.get_secret(namespace, secret) is not None:
            raise ConflictError(
                f"A Secret named {secret!r} is already in namespace {namespace} (left from a cluster named "
                f"{name!r} that is being deleted, or made by someone else); the new cluster would take its "
                "Ray token. Try again in a few seconds, or pick another name."
            )

    def protect_cluster(self, namespace: str, name: str) -> bool:
        """Give a RayCluster the operator made (a RayJob's) its NetworkPolicy; True once it has one.

        False (logged) if that failed: the caller tries again later. The cluster's Ray token
        guards it meanwhile.
        """
        if not self.network_policy:
            return True
        try:
            cr = self.api.get_cluster(namespace, name, _not_found(name))
            self._create_network_policy(cr)
        except EKSRayError as e:
            self.log.warning("eksray: no NetworkPolicy yet for RayJob cluster %s/%s: %s", namespace, name, e)
            return False
        return True

    def cluster_waiting_reason(self, namespace: str, name: str, owner: str) -> str | None:
        """Why a RayJob's cluster is not ready yet, in the words its panel shows (None when it
        is ready or not seen yet): a job waiting on its cluster says what the cluster waits for."""
        try:
            cache = self.cache_of(namespace)
        except EKSRayError:
            return None
        with cache.lock:
            cr = cache.clusters.get(name)
        if cr is None:
            return None
        cluster = self.build_safe(cache, cr, owner, self.owner_of(namespace, cr)[1])
        if cluster is None or cluster.phase in (Phase.READY, Phase.SCALING):
            return None
        return cluster.reason

    def _network_policy_body(self, cr: dict[str, Any]) -> dict[str, Any]:
        return build_network_policy(
            cr,
            jupyter=jupyter_peer(
                self.jupyter_pod_selector, self.jupyter_namespace_selector, self._in_cluster()
            ),
            operator=self.operator_peer or None,
            extra=list(self.network_policy_ingress_from),
        )

    def _create_network_policy(self, cr: dict[str, Any]) -> None:
        """The cluster's NetworkPolicy; one of that name left from an earlier cluster of the same
        name and owner (not yet garbage-collected) is replaced, anybody else's is a conflict."""
        body = self._network_policy_body(cr)
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        try:
            self.api.create_network_policy(namespace, body)
            return
        except ConflictError:
            existing = self.api.get_network_policy(namespace, name)
        labels = ((existing or {}).get("metadata") or {}).get("labels") or {}
        if existing is not None and not (
            labels.get(LABEL_MANAGED_BY) == MANAGED_BY
            and labels.get(LABEL_OWNER) == meta["labels"].get(LABEL_OWNER)
        ):
            raise ConflictError(
                f"A NetworkPolicy named {name!r} in namespace {namespace} was not made by eksray for you."
            )
        if existing is not None:
            with contextlib.suppress(NotFoundError):
                self.api.delete_network_policy(namespace, name, existing["metadata"]["uid"])
        self.api.create_network_policy(namespace, body)

    def _roll_back(self, cr: dict[str, Any], error: EKSRayError) -> None:
        """Delete a cluster whose NetworkPolicy could not be made, and say why (always raises)."""
        meta = cr["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        what = f"Cluster {name!r} was not created: its NetworkPolicy could not be made ({error.message})"
        try:
            self.api.delete_cluster(namespace, name, meta["uid"], _not_found(name))
        except NotFoundError:
            pass
        except EKSRayError as e:
            self.log.warning("eksray: could not delete the half-made cluster %s/%s: %s", namespace, name, e)
            raise BackendError(
                f"{what}, and deleting it failed too ({e.message}); delete it yourself (eksray rc delete {name})."
            ) from error
        cls = ConflictError if isinstance(error, ConflictError) else BackendError
        raise cls(
            f"{what}. Ask an administrator (RBAC for networkpolicies, or c.KubeRayBackend.network_policy)."
        ) from error

    def _delete_network_policy(self, namespace: str, name: str, uid: str) -> None:
        """Delete the cluster's NetworkPolicy now (the garbage collector would, later)."""
        policy = network_policy_name(name)
        try:
            existing = self.api.get_network_policy(namespace, policy)
            if existing is not None and owned_by(existing, uid):
                self.api.delete_network_policy(namespace, policy, existing["metadata"]["uid"])
        except NotFoundError:
            pass
        except EKSRayError as e:  # e.g. no RBAC for it since network_policy was turned off
            log = self.log.warning if self.network_policy else self.log.debug
            log(
                "eksray: could not delete NetworkPolicy %s/%s (the garbage collector will): %s",
                namespace,
                policy,
                e,
            )

    def _ensure_namespace(self, namespace: str, owner: str) -> None:
        """Create the owner's namespace, or check that the existing one was made for this owner."""
        try:
            labels = self.api.namespace_labels(namespace)
            if labels is not None:
                if labels.get(LABEL_MANAGED_BY) != MANAGED_BY or labels.get(LABEL_OWNER) != dns_label(owner):
                    # Someone else's, or made by hand: never put this owner's clusters there.
                    raise ConflictError(
                        f"Namespace {namespace} exists but is not labelled for you "
                        f"({LABEL_MANAGED_BY}={MANAGED_BY}, {LABEL_OWNER}={dns_label(owner)}). "
                        "Ask an administrator to label it, or to set c.KubeRayBackend.namespace_template."
                    )
                return
        except BackendError as e:
            if getattr(e, "status", 0) != 403:
                raise
            # No cluster-wide read of namespaces: it may well exist; creating the cluster will tell.
            self.log.debug("eksray: may not read namespace %s; assuming it exists", namespace)
            return
        self.api.create_namespace(namespace, {LABEL_MANAGED_BY: MANAGED_BY, LABEL_OWNER: dns_label(owner)})

    # --- scale ------------------------------------------------------------------------------------

    def scale_cluster(self, owner: str, name: str, worker_groups: list[dict[str, Any]]) -> Cluster:
        """Apply whole groups; ``replicas`` only where it is not just carried along by new bounds."""
        current = {g["groupName"]: g for g in self.get_cluster(owner, name).spec.get("workerGroups", [])}
        request = []
        for g in worker_groups:
            change = {k: g[k] for k in ("groupName", "minReplicas", "maxReplicas")}
            before = current.get(g["groupName"], g)
            carried = min(max(before.get("replicas", 0), g["minReplicas"]), g["maxReplicas"])
            if g["replicas"] != carried:
                change["replicas"] = g["replicas"]
            request.append(change)
        return self.scale_cluster_request(owner, name, {"workerGroups": request}, None)

    @_within_request_timeout
    def scale_cluster_request(self, owner: str, name: str, request: Any, current: Cluster | None) -> Cluster:
        cache, cr, ours = self._find(owner, name)
        if not ours:
            raise ConflictError(f"Cluster {name!r} was not created by eksray-jupyter; it is read-only here.")
        scaled, summary = scaling.scale(
            self.api,
            cache,
            cr,
            request,
            lambda fresh: self.owner_of(cache.namespace, fresh) == (owner, True),
            retries=self.scale_retries,
            not_found=_not_found(name),
            log=self.log,
        )
        cache.put_cluster(scaled)
        if summary is not None:
            self._record(scaled, "Scaled", f"Scaled by {owner}: {summary}")
        return self._build(cache, scaled, owner, True)

    # --- suspend, resume and activity ----------------------------------------------------------

    def _patch_ours(
        self,
        owner: str,
        name: str,
        ops_for: Callable[[dict[str, Any]], list[dict[str, Any]] | None],
        doing: str,
    ) -> tuple[Cluster, dict[str, Any] | None]:
        """Apply the JSON patch ``ops_for(cr)`` builds to the owner's cluster, tested against the
        version it was built from; ``None`` from ``ops_for``: nothing to do. Returns the cluster
        and the object patched (``None`` when nothing was).

        The operator writes the status often while pods come and go, so the ``test`` fails often;
        the real API server answers that with a bare 422 that does not say which op failed. As in
        scaling: if the object changed meanwhile, the ops are rebuilt from the fresh one and sent
        again; if it did not, the patch itself was refused and that error is raised.
        """
        cache, cr, ours = self._find(owner, name)
        if not ours:
            raise ConflictError(f"Cluster {name!r} was not created by eksray-jupyter; it is read-only here.")
        uid = cr["metadata"].get("uid")
        for attempt in range(max(1, self.scale_retries)):
            ops = ops_for(cr)
            if ops is None:
                return self._build(cache, cr, owner, True), None
            version = cr["metadata"]["resourceVersion"]
            # Ours always have annotations (owner, spec): "add" under them needs no parent.
            test = [{"op": "test", "path": "/metadata/resourceVersion", "value": version}]
            try:
                patched = self.api.patch_cluster(cache.namespace, name, test + ops, _not_found(name), doing)
            except (ConflictError, InvalidRequestError) as e:
                if getattr(e, "status", 0) not in (409, 422):
                    raise
                fresh = self.api.get_cluster(cache.namespace, name, _not_found(name))
                if fresh["metadata"].get("uid") != uid or self.owner_of(cache.namespace, fresh) != (
                    owner,
                    True,
                ):
                    raise NotFoundError(_not_found(name)) from None  # deleted and re-created meanwhile
                if fresh["metadata"].get("resourceVersion") == version:
                    raise  # unchanged: the patch itself was refused
                self.log.info("eksray: %s/%s changed while %s it (attempt %d); retrying",
                              cache.namespace, name, doing, attempt + 1)  # fmt: skip
                cr = fresh
                continue
            cache.put_cluster(patched)
            self.log.debug("eksray: %s %s/%s: done", doing, cache.namespace, name)
            return self._build(cache, patched, owner, True), patched
        raise ConflictError(f"Cluster {name!r} kept changing while {doing} it; try again.")

    @staticmethod
    def _annotation_path(key: str) -> str:
        return "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")

    @_within_request_timeout
    def suspend_cluster(self, owner: str, name: str, reason: str | None = None) -> Cluster:
        """``spec.suspend: true``: the operator deletes every pod and keeps the RayCluster."""

        def ops_for(cr: dict[str, Any]) -> list[dict[str, Any]] | None:
            if (cr.get("spec") or {}).get("suspend"):
                return None  # already suspended (by another request meanwhile, or before)
            if cr["metadata"].get("deletionTimestamp"):
                raise ConflictError(f"Cluster {name!r} is being deleted; it cannot be suspended.")
            return [
                {"op": "add", "path": "/spec/suspend", "value": True},
                {
                    "op": "add",
                    "path": self._annotation_path(ANNOTATION_SUSPENDED_AT),
                    "value": f"{time.time():.3f}",
                },
            ]

        cluster, patched = self._patch_ours(owner, name, ops_for, "suspending")
        if patched is not None:
            self._record(patched, "Suspending", reason or f"Cluster {name} suspended by {owner}")
        return cluster

    @_within_request_timeout
    def resume_cluster(self, owner: str, name: str) -> Cluster:
        def ops_for(cr: dict[str, Any]) -> list[dict[str, Any]] | None:
            if not (cr.get("spec") or {}).get("suspend"):
                return None
            ops: list[dict[str, Any]] = [
                {"op": "replace", "path": "/spec/suspend", "value": False},
                {
                    "op": "add",
                    "path": self._annotation_path(ANNOTATION_LAST_ACTIVE),
                    "value": f"{time.time():.3f}",
                },
            ]
            if ANNOTATION_SUSPENDED_AT in (cr["metadata"].get("annotations") or {}):
                ops.append({"op": "remove", "path": self._annotation_path(ANNOTATION_SUSPENDED_AT)})
            return ops

        cluster, patched = self._patch_ours(owner, name, ops_for, "resuming")
        if patched is not None:
            self._record(patched, "Resumed", f"Cluster {name} resumed by {owner}")
        return cluster

    @_within_request_timeout
    def mark_active(self, owner: str, name: str, at: float, why: str) -> None:
        def ops_for(cr: dict[str, Any]) -> list[dict[str, Any]] | None:
            recorded = (cr["metadata"].get("annotations") or {}).get(ANNOTATION_LAST_ACTIVE)
            try:
                if recorded is not None and float(recorded) >= at:
                    return None
            except ValueError:
                pass  # unreadable: overwrite it
            return [
                {"op": "add", "path": self._annotation_path(ANNOTATION_LAST_ACTIVE), "value": f"{at:.3f}"}
            ]

        self._patch_ours(owner, name, ops_for, f"marking active ({why})")

    def busy_reasons(self, owner: str, name: str) -> list[str]:
        cache, cr, ours = self._find(owner, name)
        cluster = self._build(cache, cr, owner, ours)
        if not cluster.dashboard_available:
            return []  # no head pod: nothing runs (a starting cluster is not idle-checked by Ray)
        try:
            headers = self.ray_dashboard_headers(cache.namespace, cr)
        except EKSRayError as e:
            raise BackendError(f"no Ray token for the dashboard of {name!r}: {e}") from e
        if self.dashboard_mode() == "service":
            fetch = url_fetcher(self.dashboard_service_url(cr, cache.namespace), headers)
        else:

            def fetch(path: str, query: list[tuple[str, str]]) -> Any:
                return self.api.service_proxy_get(
                    cache.namespace, head_service(cr), "dashboard", path, query, 5.0, headers=headers
                )

        return busy_reasons(fetch)

    def record_event(self, owner: str, name: str, reason: str, message: str, severity: Severity) -> None:
        _cache, cr, _ours = self._find(owner, name)
        self._record(cr, reason, message)

    def all_clusters(self) -> list[Cluster]:
        """Every eksray cluster in the Kubernetes cluster (``eksray admin reap``; cluster-wide
        list and watch of RayClusters, pods and events, see docs/lifecycle.md)."""
        out = []
        for namespace in self.api.namespaces_with_clusters():
            cache = self.cache_of(namespace)
            with cache.lock:
                crs = list(cache.clusters.values())
            for cr in crs:
                owner, ours = self.owner_of(namespace, cr)
                if owner is not None and ours:
                    built = self.build_safe(cache, cr, owner, ours)
                    if built is not None:
                        out.append(built)
        return out

    # --- delete -----------------------------------------------------------------------------------

    @_within_request_timeout
    def delete_cluster(self, owner: str, name: str) -> None:
        cache, cr, ours = self._find(owner, name)
        if not ours:
            raise ConflictError(f"Cluster {name!r} was not created by eksray-jupyter; it is read-only here.")
        self.api.delete_cluster(cache.namespace, name, cr["metadata"]["uid"], _not_found(name))
        self._record(cr, "Deleting", f"Cluster {name} deleted by {owner}")
        self._delete_network_policy(cache.namespace, name, cr["metadata"]["uid"])
        self.ray_tokens.forget(cache.namespace, name)
        # Shown as stopping until the watch sees it go (finalizers may keep it a while).
        marked = copy.deepcopy(cr)
        marked["metadata"].setdefault("deletionTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        with cache.lock:
            current = cache.clusters.get(name)
            still_there = current is not None and current["metadata"].get("uid") == cr["metadata"].get("uid")
            if still_there:
                cache.clusters[name] = marked
                cache.versions[name] += 1
        if still_there:
            # Pushed by the observer, in order with the watch's changes: pushed from here, it could
            # follow a "deleted" the watch already pushed, and panels would show "stopping" for ever.
            self._observer.on_cache_change("cluster", cache.namespace, name, None)
        self.autoscaler_events.forget((cache.namespace, name))

    # --- events -----------------------------------------------------------------------------------

    def _record(self, cr: dict[str, Any], reason: str, message: str) -> None:
        if self.record_events:
            kube_events.record(self.api, cr, reason, message, self.log)

    def cluster_events(self, owner: str, name: str, since: float | None = None) -> list[ClusterEvent]:
        cache, cr, ours = self._find(owner, name)
        events = kube_events.cluster_events(cache, cr)
        cluster = self._build(cache, cr, owner, ours)
        events += self.autoscaler_events.of(cache.namespace, cluster, str(cr["metadata"].get("uid")))
        unique = {e.id: e for e in events}
        out = sorted(unique.values(), key=lambda e: (e.time, e.id))
        if since is not None:
            out = [e for e in out if e.time > since]
        return out

    # --- dashboard and drivers --------------------------------------------------------------------

    def dashboard_address(self, owner: str, name: str) -> str:
        cache, cr, ours = self._find(owner, name)
        cluster = self._build(cache, cr, owner, ours)
        if not cluster.dashboard_available:
            raise NotReadyError(f"The Ray dashboard of {name!r} is not up yet (its head pod is not ready).")
        if self.dashboard_mode() == "service":
            return self.dashboard_service_url(cr, cache.namespace)
        host = str(self.api.configuration.host).rstrip("/")
        return f"{host}/api/v1/namespaces/{cache.namespace}/services/{head_service(cr)}:dashboard/proxy"

    def dashboard_request_headers(self, owner: str, name: str) -> dict[str, str]:
        """The API server credentials the proxy needs in apiserver-proxy mode (nothing in service mode)."""
        self._find(owner, name)  # ownership first: never hand a token out for someone else's cluster
        if self.dashboard_mode() != "apiserver-proxy":
            return {}
        from .credentials import bearer_header

        value = bearer_header(self.api.configuration)
        return {"Authorization": value} if value else {}

    def dashboard_request_options(self, owner: str, name: str) -> dict[str, Any]:
        """TLS settings to reach the API server as the client does (CA, client certificate)."""
        self._find(owner, name)
        if self.dashboard_mode() != "apiserver-proxy":
            return {}
        from .credentials import ssl_context

        context = ssl_context(self.api.configuration)
        return {"ssl_options": context} if context is not None else {}

    def connection_address(self, owner: str, name: str) -> str:
        _cache, cr, _ours = self._find(owner, name)
        return self._address(cr)

    # --- Ray's token ------------------------------------------------------------------------------

    def ray_auth_token_file(self, owner: str, name: str) -> Path | None:
        """The 0600 file with the cluster's Ray token, from the Secret the operator made (after the
        ownership check); None for a cluster made without token authentication."""
        cache, cr, _ours = self._find(owner, name)
        return self.ray_tokens.file(cache.namespace, cr)

    def ray_auth_token(self, owner: str, name: str) -> str | None:
        """The cluster's Ray token itself (for our own requests to its dashboard). A secret."""
        cache, cr, _ours = self._find(owner, name)
        return self.ray_tokens.token(cache.namespace, cr, wait=False)

    def ray_dashboard_headers(self, namespace: str, cr: dict[str, Any]) -> dict[str, str]:
        """Headers with the Ray token of ``cr`` (in ``namespace``) for a request to its dashboard."""
        return dashboard_headers(self.ray_tokens.token(namespace, cr, wait=False))

    def submitter_pod_template(self, owner: str, name: str) -> dict[str, Any] | None:
        """The submitter pod of a RayJob on ``owner``'s cluster ``name``: KubeRay's default (the
        head's image, 500m/200Mi..1/1Gi) labelled so the cluster's NetworkPolicy lets it in.
        None for clusters eksray did not make (they have no NetworkPolicy of ours)."""
        _cache, cr, ours = self._find(owner, name)
        if not ours:
            return None
        pod = ((cr.get("spec") or {}).get("headGroupSpec") or {}).get("template", {}).get("spec") or {}
        head = (pod.get("containers") or [{}])[0]
        container: dict[str, Any] = {
            "name": "ray-job-submitter",
            "image": head.get("image")
            or self.image
            or self.image_template.format(ray_version=self.ray_version),
            "resources": {
                "limits": {"cpu": "1", "memory": "1Gi"},
                "requests": {"cpu": "500m", "memory": "200Mi"},
            },
        }
        if head.get("imagePullPolicy"):
            container["imagePullPolicy"] = head["imagePullPolicy"]
        spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
        if pod.get("imagePullSecrets"):
            spec["imagePullSecrets"] = pod["imagePullSecrets"]
        labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_OWNER: dns_label(owner), LABEL_SUBMITS_TO: name}
        return {"metadata": {"labels": labels}, "spec": spec}

    # --- observing --------------------------------------------------------------------------------

    @property
    def observing(self) -> bool:
        return self._observer.running

    def start_observing(self) -> None:
        self._observer.start()

    def stop_observing(self) -> None:
        self._observer.stop()

    def default_owner(self) -> str | None:
        """The owner of the server this backend belongs to, if it has one: watched from the start."""
        owner = getattr(self.parent, "owner", None)
        return owner if isinstance(owner, str) and owner else None

    def cache_status(self, owner: str) -> CacheStatus:
        """Not current while a watch of one of the owner's namespaces is interrupted or re-listing."""
        stale = []
        for namespace in self.namespaces_of(owner):
            cache = self.caches.get(namespace)
            staleness = cache.staleness() if cache is not None else None
            if staleness is not None:
                stale.append(staleness)
        if not stale:
            return CacheStatus()
        return CacheStatus(False, min(since for since, _ in stale), "; ".join(why for _, why in stale))

    def watch_stats(self) -> dict[str, dict[str, int]]:
        """Per-namespace counters of lists, watches, expiries (410) and interruptions."""
        return {ns: dict(cache.stats) for ns, cache in self.caches.items()}

    def close(self) -> None:
        super().close()
        self.node_costs.close()
        with self._lock:
            self._closed = True
            checking, self._policy_threads = self._policy_threads, []
        for thread in checking:  # each call is bounded by request_timeout
            thread.join(self.request_timeout * 2)
        with self._lock:
            caches, self.caches = list(self.caches.values()), {}
            api, self._api = self._api, None
        for cache in caches:
            cache.stop()
        if api is not None:
            with contextlib.suppress(Exception):
                api.client.close()
