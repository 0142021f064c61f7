"""A cluster spec (``schema/cluster.schema.json``) as a ``ray.io/v1`` RayCluster (pure functions).

Every generated object validates against the KubeRay v1.7 CRD (a test checks it). Choices:

* Container ``requests == limits`` for cpu/memory (and the GPU resource), so pods are
  Guaranteed and the Ray autoscaler, which reads limits, sees what the scheduler reserves.
* Ray's logical resources are explicit ``rayStartParams`` (``num-cpus``, ``num-gpus``,
  ``resources``): KubeRay passes them to ``ray start`` and the in-tree autoscaler reads
  them from the same place; custom resources must be whole numbers there.
* Admin pod extras (node selectors, tolerations, ...) come from ``KubeRayBackend.pod_templates``
  keyed by ``*``, ``head``, ``workers``, ``gpu`` and ``group/<groupName>``.
* Ownership: labels for server-side selection, the exact owner and the submitted spec in
  annotations (what ``get`` shows and ownership checks compare).
* Ray token authentication (``ray_token_auth``): ``spec.authOptions {mode: token}``; the
  operator (KubeRay >= 1.5) then makes the cluster's token Secret and gives every Ray
  container ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` from it. Ray >= 2.52 is needed.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...core.errors import FieldError, InvalidRequestError
from .names import (
    ANNOTATION_OWNER,
    ANNOTATION_SPEC,
    API_VERSION,
    CLIENT_PORT,
    DASHBOARD_PORT,
    GCS_PORT,
    LABEL_MANAGED_BY,
    LABEL_OWNER,
    MANAGED_BY,
    cpu_quantity,
    memory_quantity,
)

#: Keys an admin may set per pod in ``pod_templates``; lists append, maps merge, the rest replace.
POD_EXTRA_KEYS = frozenset(
    {
        "nodeSelector", "tolerations", "affinity", "labels", "annotations", "serviceAccountName",
        "priorityClassName", "schedulerName", "runtimeClassName", "imagePullSecrets", "env", "image",
        "imagePullPolicy", "securityContext", "volumes", "volumeMounts",
    }
)  # fmt: skip
_LIST_KEYS = frozenset({"tolerations", "imagePullSecrets", "env", "volumes", "volumeMounts"})
_MAP_KEYS = frozenset({"nodeSelector", "labels", "annotations"})

#: ``rayStartParams`` eksray sets from the spec's fields; a spec may not set them itself.
RESERVED_PARAMS = frozenset({"num-cpus", "num-gpus", "resources", "memory", "address", "block"})
HEAD_ONLY_PARAMS = frozenset({"port", "dashboard-port", "dashboard-host", "ray-client-server-port"})
#: The first Ray that KubeRay accepts with ``authOptions.mode: token`` (``utils/validation.go``).
TOKEN_AUTH_MIN_RAY = (2, 52, 0)
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class ManifestOptions:
    """Everything besides the spec that shapes a RayCluster (from the backend's traits)."""

    namespace: str
    owner: str
    owner_label: str
    image: str
    ray_version: str
    image_pull_policy: str = ""
    allowed_images: tuple[str, ...] = ()
    pod_templates: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    cluster_labels: Mapping[str, str] = field(default_factory=dict)
    cluster_annotations: Mapping[str, str] = field(default_factory=dict)
    ray_start_params: Mapping[str, str] = field(default_factory=dict)
    memory_per_cpu_gib: float = 2.0
    min_memory_gib: float = 1.0
    head_min_memory_gib: float = 2.0
    gpu_resource: str = "nvidia.com/gpu"
    object_store_fraction: float = 0.0
    #: ``spec.authOptions {mode: token}``: Ray's token authentication, set up by the operator.
    ray_token_auth: bool = False


def check_pod_templates(value: Mapping[str, Any]) -> None:
    """Raise ValueError for a ``pod_templates`` setting with unknown keys or shapes."""
    for key, extras in value.items():
        if not (key in ("*", "head", "workers", "gpu") or key.startswith("group/")):
            raise ValueError(
                f"pod_templates key {key!r}: use '*', 'head', 'workers', 'gpu' or 'group/<name>'"
            )
        if not isinstance(extras, Mapping):
            raise ValueError(f"pod_templates[{key!r}] must be a mapping")
        unknown = sorted(set(extras) - POD_EXTRA_KEYS)
        if unknown:
            raise ValueError(
                f"pod_templates[{key!r}]: unknown keys {unknown}; allowed: {', '.join(sorted(POD_EXTRA_KEYS))}"
            )
        for k in _LIST_KEYS & set(extras):
            if not isinstance(extras[k], list):
                raise ValueError(f"pod_templates[{key!r}].{k} must be a list")
        for k in _MAP_KEYS & set(extras):
            if not isinstance(extras[k], Mapping):
                raise ValueError(f"pod_templates[{key!r}].{k} must be a mapping")


def _extras_for(opts: ManifestOptions, kind: str, group: str | None, gpu: int) -> dict[str, Any]:
    """Merge the admin's extras for one pod: ``*`` < ``head``/``workers`` < ``gpu`` < ``group/<name>``."""
    keys = ["*", kind]
    if gpu:
        keys.append("gpu")
    if group:
        keys.append(f"group/{group}")
    merged: dict[str, Any] = {}
    for key in keys:
        for name, value in (opts.pod_templates.get(key) or {}).items():
            if name in _LIST_KEYS:
                merged[name] = [*merged.get(name, []), *copy.deepcopy(value)]
            elif name in _MAP_KEYS:
                merged[name] = {**merged.get(name, {}), **copy.deepcopy(dict(value))}
            else:
                merged[name] = copy.deepcopy(value)
    return merged


def _whole(value: Any) -> bool:
    return isinstance(value, int | float) and float(value).is_integer()


def _check(spec: Mapping[str, Any], opts: ManifestOptions) -> list[FieldError]:
    errors: list[FieldError] = []
    shapes = [("head", spec.get("head") or {})] + [
        (f"workerGroups[{i}]", g) for i, g in enumerate(spec.get("workerGroups") or [])
    ]
    for where, shape in shapes:
        for flag in shape.get("rayStartParams") or {}:
            if flag in RESERVED_PARAMS or (where != "head" and flag in HEAD_ONLY_PARAMS):
                errors.append(
                    FieldError(
                        f"{where}.rayStartParams.{flag}",
                        "is set by eksray; remove it (use the cpu/gpu/memory/resources fields)",
                    )
                )
        for name, amount in (shape.get("resources") or {}).items():
            if not _whole(amount):
                errors.append(
                    FieldError(
                        f"{where}.resources.{name}",
                        f"must be a whole number on Kubernetes (the Ray autoscaler reads integers), got {amount}",
                    )
                )
    if opts.ray_token_auth and not _token_auth_supported(spec.get("rayVersion") or opts.ray_version):
        errors.append(
            FieldError(
                "rayVersion",
                f"must be {'.'.join(map(str, TOKEN_AUTH_MIN_RAY))} or later: clusters here use Ray's token "
                f"authentication (got {spec.get('rayVersion') or opts.ray_version!r})",
            )
        )
    image = spec.get("image")
    if image and opts.allowed_images and not any(fnmatch.fnmatchcase(image, p) for p in opts.allowed_images):
        errors.append(
            FieldError("image", f"is not allowed here; allowed images: {', '.join(opts.allowed_images)}")
        )
    return errors


def _token_auth_supported(ray_version: str) -> bool:
    """Whether KubeRay accepts token authentication for ``ray_version`` (it compares the numbers)."""
    match = _VERSION.match(ray_version or "")
    if match is None:
        return False
    return tuple(int(n or 0) for n in match.groups()) >= TOKEN_AUTH_MIN_RAY


def _ray_params(
    shape: Mapping[str, Any], opts: ManifestOptions, memory_gib: float, head: bool
) -> dict[str, str]:
    params = {k: str(v) for k, v in opts.ray_start_params.items()}
    if opts.object_store_fraction > 0:
        params["object-store-memory"] = str(int(memory_gib * 1024**3 * opts.object_store_fraction))
    params.update({k: str(v) for k, v in (shape.get("rayStartParams") or {}).items()})
    cpu = float(shape.get("cpu", 1))
    if cpu.is_integer():
        params["num-cpus"] = str(int(cpu))  # fractional: Ray reads the container's limit
    gpu = int(shape.get("gpu") or 0)
    if gpu:
        params["num-gpus"] = str(gpu)
    custom = {k: int(v) for k, v in (shape.get("resources") or {}).items()}
    if custom:
        # The quoted, escaped JSON string that KubeRay and the Ray autoscaler expect.
        params["resources"] = '"' + json.dumps(custom, sort_keys=True).replace('"', '\\"') + '"'
    if head:
        params["dashboard-host"] = "0.0.0.0"
    return params


def pod_memory_gib(
    shape: Mapping[str, Any], head: bool, memory_per_cpu_gib: float, min_gib: float, head_min_gib: float
) -> float:
    """The memory a Ray pod of ``shape`` requests: the spec's, else per CPU with a floor."""
    if shape.get("memory"):
        return float(shape["memory"])
    floor = head_min_gib if head else min_gib
    return max(floor, float(shape.get("cpu", 1)) * memory_per_cpu_gib)


def _memory_gib(shape: Mapping[str, Any], opts: ManifestOptions, head: bool) -> float:
    return pod_memory_gib(shape, head, opts.memory_per_cpu_gib, opts.min_memory_gib, opts.head_min_memory_gib)


def _pod_template(
    spec: Mapping[str, Any],
    shape: Mapping[str, Any],
    opts: ManifestOptions,
    kind: str,
    group: str | None,
) -> tuple[dict[str, Any], float]:
    head = kind == "head"
    gpu = int(shape.get("gpu") or 0)
    extras = _extras_for(opts, kind, group, gpu)
    memory = _memory_gib(shape, opts, head)
    cpu = float(shape.get("cpu", 1))
    # A head with num-cpus 0 (no tasks on it) still needs a CPU to run Ray's services.
    limits: dict[str, str] = {"cpu": cpu_quantity(cpu if cpu > 0 else 1), "memory": memory_quantity(memory)}
    if gpu:
        limits[opts.gpu_resource] = str(gpu)
    container: dict[str, Any] = {
        "name": "ray-head" if head else "ray-worker",
        "image": spec.get("image") or extras.get("image") or opts.image,
        "resources": {"limits": limits, "requests": dict(limits)},
    }
    pull = extras.get("imagePullPolicy") or opts.image_pull_policy
    if pull:
        container["imagePullPolicy"] = pull
    if head:
        container["ports"] = [
            {"containerPort": GCS_PORT, "name": "gcs-server"},
            {"containerPort": DASHBOARD_PORT, "name": "dashboard"},
            {"containerPort": CLIENT_PORT, "name": "client"},
        ]
    for key in ("env", "volumeMounts"):
        if extras.get(key):
            container[key] = extras[key]
    pod_spec: dict[str, Any] = {"containers": [container]}
    for key in (
        "nodeSelector", "tolerations", "affinity", "serviceAccountName", "priorityClassName",
        "schedulerName", "runtimeClassName", "imagePullSecrets", "securityContext", "volumes",
    ):  # fmt: skip
        if extras.get(key):
            pod_spec[key] = extras[key]
    labels = {**(extras.get("labels") or {}), LABEL_MANAGED_BY: MANAGED_BY, LABEL_OWNER: opts.owner_label}
    metadata: dict[str, Any] = {"labels": labels}
    if extras.get("annotations"):
        metadata["annotations"] = extras["annotations"]
    return {"metadata": metadata, "spec": pod_spec}, memory


def build_raycluster(spec: Mapping[str, Any], opts: ManifestOptions) -> dict[str, Any]:
    """The RayCluster for a validated spec; raises InvalidRequestError for Kubernetes-only rules."""
    errors = _check(spec, opts)
    if errors:
        raise InvalidRequestError("Invalid cluster spec", errors)
    head_shape = spec.get("head") or {}
    head_template, head_memory = _pod_template(spec, head_shape, opts, "head", None)
    groups = []
    for g in spec.get("workerGroups") or []:
        template, memory = _pod_template(spec, g, opts, "workers", g["groupName"])
        groups.append(
            {
                "groupName": g["groupName"],
                "replicas": g["replicas"],
                "minReplicas": g["minReplicas"],
                "maxReplicas": g["maxReplicas"],
                "rayStartParams": _ray_params(g, opts, memory, head=False),
                "template": template,
            }
        )
    autoscaling = spec.get("autoscaling") or {}
    enabled = bool(autoscaling.get("enabled")) and bool(groups)
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "RayCluster",
        "metadata": {
            "name": spec["name"],
            "namespace": opts.namespace,
            # Ours last: a spec's labels can never claim another owner or unset a queue.
            "labels": {
                **(spec.get("labels") or {}),
                **opts.cluster_labels,
                LABEL_MANAGED_BY: MANAGED_BY,
                LABEL_OWNER: opts.owner_label,
            },
            "annotations": {
                **opts.cluster_annotations,
                ANNOTATION_OWNER: opts.owner,
                ANNOTATION_SPEC: json.dumps(spec, sort_keys=True, separators=(",", ":")),
            },
        },
        "spec": {
            "rayVersion": spec.get("rayVersion") or opts.ray_version,
            "enableInTreeAutoscaling": enabled,
            "headGroupSpec": {
                "rayStartParams": _ray_params(head_shape, opts, head_memory, head=True),
                "template": head_template,
            },
            "workerGroupSpecs": groups,
        },
    }
    if opts.ray_token_auth:
        body["spec"]["authOptions"] = {"mode": "token"}
    if enabled:
        body["spec"]["autoscalerOptions"] = {
            "upscalingMode": autoscaling.get("upscalingMode", "Default"),
            "idleTimeoutSeconds": int(autoscaling.get("idleTimeoutSeconds", 60)),
        }
    return body
