"""The ``kuberay`` ClusterBackend: ``ray.io/v1`` RayClusters on Kubernetes (EKS or any cluster).

* Writes go to the API server (create, a JSON patch to scale, delete); reads come from a
  per-namespace cache fed by watches (:mod:`.cache`), so listing 100 clusters with 1,000
  pods costs no API call. A write is put into the cache at once (read-your-writes).
* Ownership: every RayCluster we make carries ``eksray.io/managed-by``, a sanitised
  ``eksray.io/owner`` label and the exact owner in an annotation; every call checks it,
  so another user's cluster is a 404. Clusters made by others (kubectl, RayJobs) in a
  user's own namespace are shown read-only; elsewhere they are skipped.
* Scaling shares ``replicas`` with the in-tree Ray autoscaler: a JSON patch with ``test``
  ops on resourceVersion and the group's name, retried on fresh state after a 409/422;
  lowering ``replicas`` with autoscaling on names its victims in ``workersToDelete``.
* ``kubernetes`` and ``boto3`` are imported on first use, never when the class loads.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import random
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any

from traitlets import Bool, Dict, Float, Int, List, Unicode, default, validate

from ...core.backend import ClusterBackend
from ...core.errors import (
    BackendError,
    ConflictError,
    FieldError,
    InvalidRequestError,
    LimitExceededError,
    NotFoundError,
    NotReadyError,
)
from ...core.models import Change, Cluster, ClusterEvent
from ...core.spec import validate_scale_request
from . import dashboard as dash
from .manifest import ManifestOptions, build_raycluster, check_pod_templates
from .names import (
    ANNOTATION_OWNER,
    ANNOTATION_SPEC,
    API_VERSION,
    CLIENT_PORT,
    DASHBOARD_PORT,
    EVENT_COMPONENT,
    GCS_PORT,
    L_GANG,
    LABEL_MANAGED_BY,
    LABEL_OWNER,
    MANAGED_BY,
    dns_label,
    head_service,
    is_dns_label,
    parse_time,
)
from .status import build_cluster, cluster_event, pod_ready, spec_of

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

    # --- operation --------------------------------------------------------------------------------

    request_timeout = Float(15.0, help="Seconds for one API request.").tag(config=True)
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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.RLock()
        self._api: KubeApi | None = None
        self._caches: dict[str, NamespaceCache] = {}
        self._namespace_owner: dict[str, str] = {}
        self._memo: dict[tuple[str, str], tuple[tuple[Any, ...], Cluster]] = {}
        self._skipped: set[tuple[str, str, str]] = set()
        self._events_reader = dash.EventsReader(self._fetch_dashboard_events)
        # Observing: one dispatcher thread turns cache changes into Change notifications.
        self._observing = False
        self._pending: dict[str, Any] = {"clusters": set(), "deleted": {}, "events": []}
        self._wake = threading.Condition(self._lock)
        self._dispatcher: threading.Thread | None = None
        self._stop_dispatch = threading.Event()
        self._closed = False

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
                from .kubeapi import KubeApi

                configuration = build_configuration(self._credential_settings())
                configuration.connection_pool_maxsize = 32  # three watches per namespace + requests
                self._api = KubeApi(kubernetes.client.ApiClient(configuration), self.request_timeout)
            return self._api

    def _in_cluster(self) -> bool:
        from .credentials import in_cluster

        return self.credentials == "in-cluster" or (self.credentials == "auto" and in_cluster())

    def _dashboard_mode(self) -> str:
        if self.dashboard_access != "auto":
            return self.dashboard_access
        return "service" if self._in_cluster() else "apiserver-proxy"

    # --- namespaces and ownership -----------------------------------------------------------------

    def namespace_for(self, owner: str) -> str:
        """The namespace of ``owner``'s clusters (template mode) or the shared one."""
        if self.namespace:
            return self.namespace
        rendered = self.namespace_template.format(username=dns_label(owner))
        namespace = rendered if is_dns_label(rendered) else dns_label(rendered)
        self._namespace_owner[namespace] = owner
        return namespace

    def _namespaces(self, owner: str) -> list[str]:
        own = self.namespace_for(owner)
        return [own] + [n for n in self.allowed_namespaces if n != own]

    def _owner_of(self, namespace: str, cr: dict[str, Any]) -> tuple[str | None, bool]:
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

    def _cache(self, namespace: str) -> NamespaceCache:
        """The namespace's cache, started on first use and synced before it is read."""
        with self._lock:
            if self._closed:
                raise BackendError("The kuberay backend is closed")
            cache = self._caches.get(namespace)
            if cache is None:
                from .cache import NamespaceCache

                cache = NamespaceCache(
                    namespace, self.api, self._on_cache_change, self.log, self.watch_timeout_seconds
                )
                self._caches[namespace] = cache
                cache.start()
        if not cache.wait_synced(self.request_timeout):
            raise BackendError(
                f"Cannot read namespace {namespace} from Kubernetes: {cache.last_error or 'no answer'}. "
                "Check the API server and the server's RBAC (list/watch rayclusters, pods, events)."
            )
        return cache

    def _find(self, owner: str, name: str) -> tuple[NamespaceCache, dict[str, Any], bool]:
        """The owner's cluster ``name`` (cache, object, ours) or NotFoundError — also for others' clusters."""
        for namespace in self._namespaces(owner):
            cache = self._cache(namespace)
            with cache.lock:
                cr = cache.clusters.get(name)
            if cr is None:
                continue
            who, ours = self._owner_of(namespace, cr)
            if who == owner:
                return cache, cr, ours
        raise NotFoundError(f"No cluster named {name!r}. List your clusters to see their names.")

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

    def _refusal(self, cache: NamespaceCache, cr: dict[str, Any]) -> str | None:
        """The operator's last Invalid* warning, while it has not reconciled the cluster."""
        if cr.get("status"):
            return None
        meta = cr["metadata"]
        created = parse_time(meta.get("creationTimestamp")) or 0.0
        refusals = [
            e
            for e in cache.cluster_events(meta["name"], meta.get("uid"), created)
            if e["kind"] == "RayCluster" and e["type"] == "Warning" and e["reason"].startswith("Invalid")
        ]
        if not refusals:
            return None
        last = max(refusals, key=lambda e: e["time"])
        return f"The KubeRay operator refused the cluster ({last['reason']}): {last['message']}"

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
            operator_refusal=self._refusal(cache, cr),
            suspended_reason=suspended_reason,
        )
        self._memo[key] = (version, cluster)
        return cluster

    def _build_safe(
        self, cache: NamespaceCache, cr: dict[str, Any], owner: str, ours: bool
    ) -> Cluster | None:
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

    # --- reading ----------------------------------------------------------------------------------

    def list_clusters(self, owner: str) -> list[Cluster]:
        out: dict[str, Cluster] = {}
        for namespace in self._namespaces(owner):
            cache = self._cache(namespace)
            with cache.lock:
                items = list(cache.clusters.values())
            for cr in items:
                who, ours = self._owner_of(namespace, cr)
                if who != owner:
                    continue
                cluster = self._build_safe(cache, cr, owner, ours)
                if cluster is not None and cluster.name not in out:
                    out[cluster.name] = cluster
        return [out[name] for name in sorted(out)]

    def get_cluster(self, owner: str, name: str) -> Cluster:
        cache, cr, ours = self._find(owner, name)
        cluster = self._build_safe(cache, cr, owner, ours)
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
        )

    def manifest(self, owner: str, spec: dict[str, Any]) -> dict[str, Any]:
        """The RayCluster ``create_cluster`` would submit (no API call): for dry runs and tests."""
        namespace = self._target_namespace(owner, spec)
        return build_raycluster(spec, self._manifest_options(owner, namespace, spec))

    def _target_namespace(self, owner: str, spec: dict[str, Any]) -> str:
        allowed = self._namespaces(owner)
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
        cache = self._cache(namespace)
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
        cache.put_cluster(created)
        self._record(created, "Created", f"Cluster {name} created by {owner}")
        return self._build(cache, created, owner, True)

    def _ensure_namespace(self, namespace: str, owner: str) -> None:
        try:
            if self.api.namespace_exists(namespace):
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

    def scale_cluster_request(self, owner: str, name: str, request: Any, current: Cluster | None) -> Cluster:
        cache, cr, ours = self._find(owner, name)
        if not ours:
            raise ConflictError(f"Cluster {name!r} was not created by eksray-jupyter; it is read-only here.")
        namespace, uid = cache.namespace, cr["metadata"].get("uid")
        not_found = f"No cluster named {name!r}. List your clusters to see their names."
        for attempt in range(max(1, self.scale_retries)):
            fresh = self.api.get_cluster(namespace, name, not_found)
            if fresh["metadata"].get("uid") != uid or self._owner_of(namespace, fresh) != (owner, True):
                raise NotFoundError(not_found)  # deleted and re-created meanwhile, maybe by someone else
            if fresh["metadata"].get("deletionTimestamp"):
                raise ConflictError(f"Cluster {name!r} is being deleted.")
            # Validated against the live values each time: the request, not a stale result, is re-applied.
            groups = validate_scale_request(spec_of(fresh, ours=True), request)
            ops, summary = self._scale_ops(cache, fresh, groups, request)
            if not ops:
                cache.put_cluster(fresh)
                return self._build(cache, fresh, owner, True)
            try:
                patched = self.api.patch_cluster(namespace, name, ops, not_found)
            except (ConflictError, InvalidRequestError) as e:
                if getattr(e, "status", 0) in (409, 422) and self._changed_since(namespace, name, fresh):
                    self.log.info("eksray: %s/%s changed while scaling (attempt %d); retrying", namespace, name,
                                  attempt + 1)  # fmt: skip
                    # Jittered backoff: do not collide with the same writer again and again.
                    time.sleep(random.uniform(0, min(0.4, 0.025 * 2**attempt)))
                    continue
                raise
            cache.put_cluster(patched)
            self._record(patched, "Scaled", f"Scaled by {owner}: {summary}")
            return self._build(cache, patched, owner, True)
        raise ConflictError(
            f"Cluster {name!r} kept changing while it was being scaled (its autoscaler is busy); try again."
        )

    @staticmethod
    def _scale_fields(cr: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [
            (g.get("groupName"), g.get("replicas"), g.get("minReplicas"), g.get("maxReplicas"))
            for g in (cr.get("spec") or {}).get("workerGroupSpecs") or []
        ]

    def _changed_since(self, namespace: str, name: str, seen: dict[str, Any]) -> bool:
        """Whether the scaling fields moved since ``seen`` (a 422 was a lost race, not a bad request)."""
        try:
            now = self.api.get_cluster(namespace, name, "gone")
        except NotFoundError:
            return False
        return self._scale_fields(now) != self._scale_fields(seen)

    def _scale_ops(
        self, cache: NamespaceCache, cr: dict[str, Any], groups: list[dict[str, Any]], request: Any
    ) -> tuple[list[dict[str, Any]], str]:
        """JSON-patch ops turning ``cr``'s groups into ``groups``, guarded by ``test`` ops.

        The tests pin exactly what the change was computed from — the group at that index
        and its replicas/min/max — so a concurrent autoscaler write fails the patch (422)
        and it is recomputed, while the operator's frequent status writes (which bump the
        resourceVersion) do not get in the way.
        """
        explicit = {
            c.get("groupName"): "replicas" in c
            for c in (request.get("workerGroups") or [])
            if isinstance(c, dict)
        }
        wanted = {g["groupName"]: g for g in groups}
        autoscaling = bool((cr.get("spec") or {}).get("enableInTreeAutoscaling"))
        ops: list[dict[str, Any]] = []
        changes = []
        pods = cache.cluster_pods(cr["metadata"]["name"])
        for i, live in enumerate((cr.get("spec") or {}).get("workerGroupSpecs") or []):
            group = live.get("groupName")
            new = wanted.get(group)
            if new is None:
                continue
            base = f"/spec/workerGroupSpecs/{i}"
            group_ops = []
            diff = []
            for key in ("minReplicas", "maxReplicas", "replicas"):
                old_value = live.get(key)
                if new[key] == old_value:
                    continue
                lowering_carried = (
                    key == "replicas"
                    and autoscaling
                    and not explicit.get(group)
                    and new[key] < (old_value or 0)
                )
                if lowering_carried:
                    # Bounds moved down: the autoscaler picks which (idle) workers go.
                    continue
                group_ops.append({"op": "add", "path": f"{base}/{key}", "value": new[key]})
                diff.append(f"{key} {old_value}→{new[key]}")
            if autoscaling and explicit.get(group) and new["replicas"] < (live.get("replicas") or 0):
                group_ops += self._victim_ops(base, group, live, new, pods)
            if group_ops:
                # Index paths are only safe if the group at that index is still this one.
                ops.append({"op": "test", "path": f"{base}/groupName", "value": group})
                ops += [
                    {"op": "test", "path": f"{base}/{key}", "value": live[key]}
                    for key in ("replicas", "minReplicas", "maxReplicas")
                    if key in live
                ]
                ops += group_ops
                changes.append(f"{group}: {', '.join(diff)}")
        return ops, "; ".join(changes)

    @staticmethod
    def _victim_ops(
        base: str, group: str, live: dict[str, Any], new: dict[str, Any], pods: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """With autoscaling on, the operator deletes no surplus pod by itself: name them.

        Not-ready pods go first (they hold no work), then the newest.
        """
        pending = (live.get("scaleStrategy") or {}).get("workersToDelete") or []
        members = [p for p in pods if p["nodeType"] == "worker" and p["group"] == group and not p["deleting"]]
        if any(p["name"] in pending for p in members):
            raise ConflictError(
                f"The autoscaler is removing workers of group {group!r} right now; try again in a few seconds."
            )
        target = min(max(new["replicas"], new["minReplicas"]), new["maxReplicas"])
        surplus = len(members) - target
        if surplus <= 0:
            return []
        not_ready = sorted((p for p in members if not pod_ready(p)), key=lambda p: p["created"] or "")
        ready = sorted((p for p in members if pod_ready(p)), key=lambda p: p["created"] or "", reverse=True)
        victims = [p["name"] for p in (not_ready + ready)[:surplus]]
        return [{"op": "add", "path": f"{base}/scaleStrategy", "value": {"workersToDelete": victims}}]

    # --- delete -----------------------------------------------------------------------------------

    def delete_cluster(self, owner: str, name: str) -> None:
        cache, cr, ours = self._find(owner, name)
        if not ours:
            raise ConflictError(f"Cluster {name!r} was not created by eksray-jupyter; it is read-only here.")
        not_found = f"No cluster named {name!r}. List your clusters to see their names."
        self.api.delete_cluster(cache.namespace, name, cr["metadata"]["uid"], not_found)
        self._record(cr, "Deleting", f"Cluster {name} deleted by {owner}")
        # Shown as stopping until the watch sees it go (finalizers may keep it a while).
        marked = copy.deepcopy(cr)
        marked["metadata"].setdefault("deletionTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        with cache.lock:
            current = cache.clusters.get(name)
            if current is not None and current["metadata"].get("uid") == cr["metadata"].get("uid"):
                cache.clusters[name] = marked
                cache.versions[name] += 1
        self.notify(Change("cluster", owner, name, cluster=self._build(cache, marked, owner, True)))
        self._events_reader.forget((cache.namespace, name))

    # --- events -----------------------------------------------------------------------------------

    def _record(self, cr: dict[str, Any], reason: str, message: str) -> None:
        """A Kubernetes event on the RayCluster: kubectl and every eksray server see who did what."""
        if not self.record_events:
            return
        meta = cr["metadata"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": "RayCluster",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
            "reason": reason,
            "message": message,
            "type": "Normal",
            "source": {"component": EVENT_COMPONENT},
            "reportingComponent": EVENT_COMPONENT,
            "reportingInstance": EVENT_COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.api.create_event(meta["namespace"], body)
        except BackendError as e:  # no RBAC for events: the action itself still happened
            self.log.debug("eksray: could not record event %s on %s: %s", reason, meta["name"], e.message)

    def _fetch_dashboard_events(self, key: tuple[str, str]) -> Any:
        namespace, name = key
        cache = self._caches.get(namespace)
        cr = cache.clusters.get(name) if cache else None
        if cr is None:
            raise BackendError("gone")
        service = head_service(cr)
        if self._dashboard_mode() == "service":
            port = ((cr.get("status") or {}).get("endpoints") or {}).get("dashboard") or DASHBOARD_PORT
            return dash.fetch_direct(
                f"http://{service}.{namespace}.{self.service_domain}:{port}", timeout=2.0
            )
        return self.api.service_proxy_get(
            namespace, service, "dashboard", dash.EVENTS_PATH, dash.EVENTS_QUERY, 2.0
        )

    def _dashboard_events(self, cache: NamespaceCache, cluster: Cluster, uid: str) -> list[ClusterEvent]:
        if not self.dashboard_events or not cluster.dashboard_available:
            return []
        return self._events_reader.events((cache.namespace, cluster.name), uid)

    def cluster_events(self, owner: str, name: str, since: float | None = None) -> list[ClusterEvent]:
        cache, cr, ours = self._find(owner, name)
        meta = cr["metadata"]
        created = parse_time(meta.get("creationTimestamp")) or 0.0
        events = [cluster_event(e) for e in cache.cluster_events(name, meta.get("uid"), created)]
        cluster = self._build(cache, cr, owner, ours)
        events += self._dashboard_events(cache, cluster, str(meta.get("uid")))
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
        service, namespace = head_service(cr), cache.namespace
        if self._dashboard_mode() == "service":
            port = ((cr.get("status") or {}).get("endpoints") or {}).get("dashboard") or DASHBOARD_PORT
            return f"http://{service}.{namespace}.{self.service_domain}:{port}"
        host = str(self.api.configuration.host).rstrip("/")
        return f"{host}/api/v1/namespaces/{namespace}/services/{service}:dashboard/proxy"

    def dashboard_request_headers(self, owner: str, name: str) -> dict[str, str]:
        """The API server credentials the proxy needs in apiserver-proxy mode (nothing in service mode)."""
        self._find(owner, name)  # ownership first: never hand a token out for someone else's cluster
        if self._dashboard_mode() != "apiserver-proxy":
            return {}
        from .credentials import bearer_header

        value = bearer_header(self.api.configuration)
        return {"Authorization": value} if value else {}

    def dashboard_request_options(self, owner: str, name: str) -> dict[str, Any]:
        """TLS settings to reach the API server as the client does (CA, client certificate)."""
        self._find(owner, name)
        if self._dashboard_mode() != "apiserver-proxy":
            return {}
        cfg = self.api.configuration
        if not str(cfg.host).startswith("https://"):
            return {}
        if not cfg.verify_ssl:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(
                cafile=cfg.ssl_ca_cert or None, cadata=cfg.ca_cert_data or None
            )
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file or None)
        return {"ssl_options": context}

    def connection_address(self, owner: str, name: str) -> str:
        _cache, cr, _ours = self._find(owner, name)
        return self._address(cr)

    # --- observing --------------------------------------------------------------------------------

    def _on_cache_change(self, kind: str, namespace: str, name: str, payload: Any) -> None:
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

    def start_observing(self) -> None:
        with self._lock:
            if self._observing:
                return
            self._observing = True
            self._stop_dispatch.clear()
            self._dispatcher = threading.Thread(
                target=self._dispatch_loop, name="eksray-kuberay-observer", daemon=True
            )
            self._dispatcher.start()

    def stop_observing(self) -> None:
        with self._lock:
            self._observing = False
            self._stop_dispatch.set()
            self._wake.notify_all()
            thread, self._dispatcher = self._dispatcher, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _default_owner(self) -> str | None:
        owner = getattr(self.parent, "owner", None)
        return owner if isinstance(owner, str) and owner else None

    def _dispatch_loop(self) -> None:
        last: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        seen_ray: dict[tuple[str, str], set[str]] = {}
        started = time.time()
        next_poll = time.monotonic() + self.dashboard_poll_seconds
        polls = 0
        owner = self._default_owner()
        if owner is not None:
            try:  # the user's namespace is watched before the first change can be missed
                for namespace in self._namespaces(owner):
                    self._cache(namespace)
            except BackendError as e:
                self.log.warning("eksray: cannot observe clusters yet: %s", e.message)
        # What panels already have (their snapshot): only differences from here are pushed. The
        # snapshot may have been read before or after this baseline, so the first change of each
        # cluster is pushed even when it looks the same (``unconfirmed``); later ones only if different.
        for cache in list(self._caches.values()):
            with cache.lock:
                crs = list(cache.clusters.values())
            for cr in crs:
                who, ours = self._owner_of(cache.namespace, cr)
                if who is not None and (cluster := self._build_safe(cache, cr, who, ours)) is not None:
                    last[(cache.namespace, cluster.name)] = (who, cluster.to_dict())
        unconfirmed = set(last)
        while not self._stop_dispatch.is_set():
            with self._lock:
                if not (self._pending["clusters"] or self._pending["deleted"] or self._pending["events"]):
                    self._wake.wait(timeout=max(0.05, next_poll - time.monotonic()))
            if self._stop_dispatch.wait(0.05):  # coalesce a burst of watch events
                break
            with self._lock:
                pending, self._pending = self._pending, {"clusters": set(), "deleted": {}, "events": []}
            try:
                self._dispatch(pending, last, unconfirmed)
                if time.monotonic() >= next_poll:
                    polls += 1
                    self._poll_dashboards(last, seen_ray, started, every_round=polls % 6 == 0)
                    next_poll = time.monotonic() + self.dashboard_poll_seconds
            except Exception:  # the observer must outlive one bad change
                self.log.exception("eksray: kuberay observer failed to dispatch changes")

    def _dispatch(
        self,
        pending: dict[str, Any],
        last: dict[tuple[str, str], tuple[str, dict[str, Any]]],
        unconfirmed: set[tuple[str, str]],
    ) -> None:
        for key, obj in pending["deleted"].items():
            previous = last.pop(key, None)
            who = previous[0] if previous else self._owner_of(key[0], obj or {})[0]
            if who is not None:
                self.notify(Change("deleted", who, key[1]))
            self._memo.pop(key, None)
            self._events_reader.forget(key)
        for key in pending["clusters"] - set(pending["deleted"]):
            cache = self._caches.get(key[0])
            cr = cache.clusters.get(key[1]) if cache else None
            if cache is None or cr is None:
                continue
            who, ours = self._owner_of(key[0], cr)
            if who is None:
                continue
            cluster = self._build_safe(cache, cr, who, ours)
            if cluster is None:
                continue
            state = cluster.to_dict()
            if key in unconfirmed or last.get(key) != (who, state):
                unconfirmed.discard(key)
                last[key] = (who, state)
                self.notify(Change("cluster", who, cluster.name, cluster=cluster))
        for key, ev in pending["events"]:
            cache = self._caches.get(key[0])
            cr = cache.clusters.get(key[1]) if cache else None
            if cr is None:
                continue
            who, _ours = self._owner_of(key[0], cr)
            if who is not None:
                self.notify(Change("event", who, key[1], event=cluster_event(ev)))

    def _poll_dashboards(
        self,
        last: dict[tuple[str, str], tuple[str, dict[str, Any]]],
        seen: dict[tuple[str, str], set[str]],
        started: float,
        every_round: bool,
    ) -> None:
        """New autoscaler events of clusters that are changing (all clusters every 6th round)."""
        if not self.dashboard_events:
            return
        for key, (who, state) in list(last.items()):
            if state["phase"] == "ready" and not every_round:
                continue
            cache = self._caches.get(key[0])
            cr = cache.clusters.get(key[1]) if cache else None
            if cache is None or cr is None:
                continue
            cluster = self._build_safe(cache, cr, who, self._owner_of(key[0], cr)[1])
            if cluster is None or not cluster.dashboard_available:
                continue
            known = seen.setdefault(key, set())
            for event in self._dashboard_events(cache, cluster, str(cr["metadata"].get("uid"))):
                if event.id not in known:
                    known.add(event.id)
                    if event.time >= started - 1:
                        self.notify(Change("event", who, key[1], event=event))

    def watch_stats(self) -> dict[str, dict[str, int]]:
        """Per-namespace counters of lists, watches, expiries (410) and interruptions."""
        return {ns: dict(cache.stats) for ns, cache in self._caches.items()}

    def close(self) -> None:
        super().close()
        with self._lock:
            self._closed = True
            caches, self._caches = list(self._caches.values()), {}
            api, self._api = self._api, None
        for cache in caches:
            cache.stop()
        if api is not None:
            with contextlib.suppress(Exception):
                api.client.close()
