"""The Kubernetes calls the backend and its RayJob runner make, each through :func:`.errors.kube_call`.

Lists and watches ask for raw JSON (``_preload_content=False``): the backend keeps plain
dicts, and skipping the client's model deserialisation makes listing 1,000 pods cheap.
Every call is blocking; the server runs backend calls on its thread pool.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import KubeError, KubeTimeout, kube_call
from .names import GROUP, LABEL_MANAGED_BY, MANAGED_BY, RAYCLUSTERS, RAYJOBS, VERSION

if TYPE_CHECKING:
    from collections.abc import Iterator

    import kubernetes.client
    import urllib3

JSON_PATCH = "application/json-patch+json"
#: Kinds the watches follow: RayClusters, Ray pods (those labelled ray.io/cluster), events.
KINDS = (RAYCLUSTERS, "pods", "events")
POD_SELECTOR = "ray.io/cluster"


class KubeApi:
    def __init__(self, api_client: kubernetes.client.ApiClient, request_timeout: float = 15.0) -> None:
        import kubernetes.client

        self.client = api_client
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.networking = kubernetes.client.NetworkingV1Api(api_client)
        self.request_timeout = request_timeout
        self._bounds = threading.local()  # this thread's operation deadline, see `deadline`

    @property
    def configuration(self) -> kubernetes.client.Configuration:
        return self.client.configuration

    @property
    def timeout(self) -> float:
        """Seconds the next call has: ``request_timeout``, or less inside a :meth:`deadline` block
        (what is left of it; 0 or less when it has run out, which :func:`.errors.kube_call` refuses)."""
        deadline = getattr(self._bounds, "deadline", None)
        if deadline is None:
            return self.request_timeout
        return min(self.request_timeout, deadline - time.monotonic())

    @contextlib.contextmanager
    def deadline(self) -> Iterator[None]:
        """Every call this thread makes in the block shares one ``request_timeout``: how one
        create, scale or delete answers in time however many calls it makes. Nested blocks keep
        the outer deadline."""
        outer = getattr(self._bounds, "deadline", None)
        self._bounds.deadline = outer if outer is not None else time.monotonic() + self.request_timeout
        try:
            yield
        finally:
            self._bounds.deadline = outer

    # --- KubeRay's custom resources (RayClusters, RayJobs) -------------------------------------

    def _get(self, kind: str, plural: str, namespace: str, name: str, not_found: str) -> dict[str, Any]:
        return kube_call(
            f"reading {kind} {namespace}/{name}",
            self.custom.get_namespaced_custom_object,
            GROUP, VERSION, namespace, plural, name,
            not_found=not_found, _request_timeout=self.timeout,
        )  # fmt: skip

    def _create(self, kind: str, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return kube_call(
            f"creating {kind} {namespace}/{body['metadata']['name']}",
            self.custom.create_namespaced_custom_object,
            GROUP, VERSION, namespace, plural, body, _request_timeout=self.timeout,
        )  # fmt: skip

    def _delete(
        self, kind: str, plural: str, namespace: str, name: str, body: dict[str, Any], not_found: str
    ) -> None:
        kube_call(
            f"deleting {kind} {namespace}/{name}",
            self.custom.delete_namespaced_custom_object,
            GROUP, VERSION, namespace, plural, name,
            body=body, not_found=not_found, _request_timeout=self.timeout,
        )  # fmt: skip

    def get_cluster(self, namespace: str, name: str, not_found: str) -> dict[str, Any]:
        return self._get("RayCluster", RAYCLUSTERS, namespace, name, not_found)

    def create_cluster(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._create("RayCluster", RAYCLUSTERS, namespace, body)

    def patch_cluster(
        self, namespace: str, name: str, ops: list[dict[str, Any]], not_found: str, doing: str = "scaling"
    ) -> dict[str, Any]:
        """A JSON patch (RFC 6902); its ``test`` ops make it fail (409/422) on concurrent changes.
        ``doing`` names the change in error messages ("scaling", "suspending"...)."""
        return kube_call(
            f"{doing} RayCluster {namespace}/{name}",
            self.custom.patch_namespaced_custom_object,
            GROUP, VERSION, namespace, RAYCLUSTERS, name, ops,
            not_found=not_found, _content_type=JSON_PATCH, _request_timeout=self.timeout,
        )  # fmt: skip

    def delete_cluster(self, namespace: str, name: str, uid: str, not_found: str) -> None:
        # The uid precondition: never delete a same-named cluster created meanwhile.
        body = {"preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        self._delete("RayCluster", RAYCLUSTERS, namespace, name, body, not_found)

    def get_rayjob(self, namespace: str, name: str, not_found: str) -> dict[str, Any]:
        return self._get("RayJob", RAYJOBS, namespace, name, not_found)

    def create_rayjob(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._create("RayJob", RAYJOBS, namespace, body)

    def replace_rayjob_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Replace the RayJob with ``body``, whose resourceVersion makes it fail (409) if the RayJob
        changed since it was read: how a follower lease is taken."""
        return kube_call(
            f"writing the follower lease of RayJob {namespace}/{name}",
            self.custom.replace_namespaced_custom_object,
            GROUP, VERSION, namespace, RAYJOBS, name, body, _request_timeout=self.timeout,
        )  # fmt: skip

    def delete_rayjob(self, namespace: str, name: str, not_found: str) -> None:
        self._delete("RayJob", RAYJOBS, namespace, name, {"propagationPolicy": "Background"}, not_found)

    # --- namespaces and events -----------------------------------------------------------------

    def namespace_labels(self, namespace: str) -> dict[str, str] | None:
        """The labels of ``namespace``, or None when it does not exist."""
        from .errors import KubeNotFound

        try:
            response = kube_call(
                f"reading namespace {namespace}",
                self.core.read_namespace,
                namespace,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except KubeNotFound:
            return None
        body = read_json(response, f"reading namespace {namespace}")
        return dict((body.get("metadata") or {}).get("labels") or {})

    def create_namespace(self, namespace: str, labels: dict[str, str]) -> None:
        from .errors import KubeConflict

        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}
        with contextlib.suppress(KubeConflict):  # created meanwhile: fine
            kube_call(
                f"creating namespace {namespace}",
                self.core.create_namespace,
                body,
                _preload_content=False,
                _request_timeout=self.timeout,
            ).release_conn()

    def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        kube_call(
            f"recording an event in {namespace}",
            self.core.create_namespaced_event,
            namespace,
            body,
            _preload_content=False,
            _request_timeout=self.timeout,
        ).release_conn()

    # --- Secrets (read only) and NetworkPolicies, as raw JSON -------------------------------------

    def _raw(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        response = kube_call(what, fn, *args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
        return read_json(response, what)

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret ``name`` (its values base64 in ``data``), or None when it does not exist.
        Secret values: never log or answer them."""
        from .errors import KubeNotFound

        try:
            return self._raw(
                f"reading Secret {namespace}/{name}", self.core.read_namespaced_secret, name, namespace
            )
        except KubeNotFound:
            return None

    def get_network_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The NetworkPolicy ``name``, or None when it does not exist."""
        from .errors import KubeNotFound

        try:
            return self._raw(
                f"reading NetworkPolicy {namespace}/{name}",
                self.networking.read_namespaced_network_policy,
                name,
                namespace,
            )
        except KubeNotFound:
            return None

    def create_network_policy(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._raw(
            f"creating NetworkPolicy {namespace}/{body['metadata']['name']}",
            self.networking.create_namespaced_network_policy,
            namespace,
            body,
        )

    def delete_network_policy(self, namespace: str, name: str, uid: str) -> None:
        """Delete exactly the NetworkPolicy of that ``uid`` (KubeNotFound if it is gone)."""
        self._raw(
            f"deleting NetworkPolicy {namespace}/{name}",
            self.networking.delete_namespaced_network_policy,
            name,
            namespace,
            body={"preconditions": {"uid": uid}},
        )

    def list_nodes_raw(self) -> list[dict[str, Any]]:
        """Every Node (cluster-scoped: needs a ClusterRole that may list nodes)."""
        items: list[dict[str, Any]] = []
        cont = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500}
            if cont:
                kwargs["_continue"] = cont
            page = self._raw("listing nodes", self.core.list_node, **kwargs)
            items += page.get("items") or []
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return items

    # --- list / watch (raw JSON) -----------------------------------------------------------------

    def _list_fn(self, kind: str) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        if kind == RAYCLUSTERS:
            return self.custom.list_namespaced_custom_object, (GROUP, VERSION), {"plural": RAYCLUSTERS}
        if kind == "pods":
            return self.core.list_namespaced_pod, (), {"label_selector": POD_SELECTOR}
        if kind == "events":
            return self.core.list_namespaced_event, (), {}
        raise ValueError(kind)

    def list_raw(
        self, kind: str, namespace: str, limit: int = 500, cont: str | None = None
    ) -> dict[str, Any]:
        fn, args, kwargs = self._list_fn(kind)
        if cont:
            kwargs["_continue"] = cont
        response = kube_call(
            f"listing {kind} in {namespace}",
            fn,
            *args,
            namespace=namespace,
            limit=limit,
            _preload_content=False,
            _request_timeout=self.timeout * 4,
            **kwargs,
        )
        return read_json(response, f"listing {kind} in {namespace}")

    def namespaces_with_clusters(self) -> list[str]:
        """Every namespace holding a RayCluster eksray made (needs cluster-wide list RBAC)."""
        namespaces: set[str] = set()
        cont = None
        while True:
            body = kube_call(
                "listing eksray's RayClusters in every namespace",
                self.custom.list_cluster_custom_object,
                GROUP, VERSION, RAYCLUSTERS,
                label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}",
                limit=500,
                _continue=cont,
                _request_timeout=self.timeout * 4,
            )  # fmt: skip
            for item in body.get("items") or []:
                namespaces.add(item["metadata"]["namespace"])
            cont = (body.get("metadata") or {}).get("continue")
            if not cont:
                return sorted(namespaces)

    def watch_raw(
        self, kind: str, namespace: str, resource_version: str, timeout_seconds: int
    ) -> urllib3.BaseHTTPResponse:
        """An open watch stream (one JSON event per line) from ``resource_version``."""
        fn, args, kwargs = self._list_fn(kind)
        return kube_call(
            f"watching {kind} in {namespace}",
            fn,
            *args,
            namespace=namespace,
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _preload_content=False,
            # The read timeout outlives the server's: a silently dead connection ends too.
            _request_timeout=(self.timeout, timeout_seconds + 30),
            **kwargs,
        )

    # --- the dashboard through the API server ----------------------------------------------------

    def service_proxy_get(
        self,
        namespace: str,
        service: str,
        port: str,
        path: str,
        query: list[tuple[str, str]],
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """GET ``/api/v1/namespaces/{ns}/services/{service}:{port}/proxy/{path}`` as JSON.

        ``headers`` go on to the service (e.g. Ray's token, ``X-Ray-Authorization``)."""
        method, url, request_headers, _body, _post = self.client.param_serialize(
            "GET",
            "/api/v1/namespaces/{namespace}/services/{name}/proxy/" + path.lstrip("/"),
            path_params={"namespace": namespace, "name": f"{service}:{port}"},
            query_params=query,
            header_params={**(headers or {}), "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )

        def call() -> Any:
            response = self.client.call_api(
                method, url, header_params=request_headers, _request_timeout=timeout
            )
            response.read()
            if not 200 <= response.status < 300:
                raise KubeError(f"The Ray dashboard answered {response.status}", response.status)
            try:
                return json.loads(response.data)
            except ValueError as e:
                raise KubeError("The Ray dashboard answered with something other than JSON") from e

        return kube_call(f"reading the Ray dashboard of {namespace}/{service}", call)


def read_json(response: Any, what: str) -> dict[str, Any]:
    """The JSON object of an answer read without preloading (``{}`` for an empty one).

    The body is read after :func:`kube_call` returned, so a server that stops answering half
    way is caught here: a KubeTimeout (504), not a 500.
    """
    import urllib3

    try:
        data = response.data
    except urllib3.exceptions.ReadTimeoutError as e:
        raise KubeTimeout(f"The Kubernetes API stopped answering while {what}; check the API server") from e
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise KubeError(f"The Kubernetes API connection broke while {what} ({type(e).__name__})") from e
    finally:
        response.release_conn()
    try:
        body = json.loads(data or b"{}")
    except ValueError as e:
        raise KubeError(f"Unreadable answer from the Kubernetes API while {what}") from e
    return body if isinstance(body, dict) else {}
