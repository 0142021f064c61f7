"""What the KubeRay operator (v1.7) makes for a RayCluster: the head Service and the head and
worker Pods, with KubeRay's names, labels, injected env (with ``authOptions {mode: token}``:
``RAY_AUTH_MODE`` and ``RAY_AUTH_TOKEN`` from the cluster's Secret) and ``ray start`` command
(``ray-operator/controllers/ray/common``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .objects import labels_of, meta_of
from .patches import jcopy

# label keys (ray-operator/controllers/ray/utils/constant.go)
L_CLUSTER = "ray.io/cluster"
L_NODE_TYPE = "ray.io/node-type"
L_GROUP = "ray.io/group"
L_IS_RAY_NODE = "ray.io/is-ray-node"
L_IDENTIFIER = "ray.io/identifier"
L_APP_NAME = "app.kubernetes.io/name"
L_CREATED_BY = "app.kubernetes.io/created-by"
L_REPLICA_INDEX = "ray.io/worker-group-replica-index"
L_REPLICA_NAME = "ray.io/worker-group-replica-name"
L_HOST_INDEX = "ray.io/replica-host-index"
L_ORIGIN_NAME = "ray.io/originated-from-cr-name"
L_ORIGIN_CRD = "ray.io/originated-from-crd"

AUTH_TOKEN_KEY = "auth_token"

DEFAULT_HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001}
METRICS_PORT = ("metrics", 8080)

_INJECTED_ENV = {
    "RAY_CLUSTER_NAME",
    "RAY_CLUSTER_NAMESPACE",
    "FQ_RAY_IP",
    "RAY_IP",
    "RAY_PORT",
    "RAY_ADDRESS",
    "RAY_USAGE_STATS_KUBERAY_IN_USE",
    "KUBERAY_GEN_RAY_START_CMD",
}


def auth_secret_name(cluster_name: str) -> str:
    """``utils.CheckName``: the last 50 characters; a leading digit or punctuation becomes ``r``."""
    name = cluster_name[-50:]
    if name[:1].isdigit():
        name = "r" + name[1:]
    if name[:1] in ("-", "."):
        name = "r" + name[1:]
    return name


def token_auth(cluster: Mapping[str, Any]) -> bool:
    return ((cluster.get("spec") or {}).get("authOptions") or {}).get("mode") == "token"


def _token_env(cluster: Mapping[str, Any], env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``SetContainerTokenAuthEnvVars``: what a container of a token-auth cluster gets (unless set)."""
    if not token_auth(cluster):
        return env
    auth = (cluster.get("spec") or {}).get("authOptions") or {}
    names = {e.get("name") for e in env}
    out = list(env)
    if "RAY_AUTH_MODE" not in names:
        out.append({"name": "RAY_AUTH_MODE", "value": "token"})
    if "RAY_AUTH_TOKEN" not in names and not auth.get("enableK8sTokenAuth"):
        secret = auth.get("secretName") or auth_secret_name(meta_of(cluster)["name"])
        out.append(
            {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": AUTH_TOKEN_KEY}}}
        )
    return out


def head_service_name(cluster: Mapping[str, Any]) -> str:
    head = (cluster.get("spec") or {}).get("headGroupSpec") or {}
    custom = ((head.get("headService") or {}).get("metadata") or {}).get("name")
    return custom or f"{meta_of(cluster)['name']}-head-svc"


def _node_labels(cluster_name: str, node_type: str) -> dict[str, str]:
    """The labels that pick a cluster's head (or workers) out: the head Service's selector."""
    return {
        L_CLUSTER: cluster_name,
        L_NODE_TYPE: node_type,
        L_IDENTIFIER: f"{cluster_name}-{node_type}",
        L_APP_NAME: "kuberay",
        L_CREATED_BY: "kuberay-operator",
    }


def head_service_body(cluster: Mapping[str, Any], owner: Mapping[str, Any]) -> dict[str, Any]:
    """The head Service: the head container's ports (KubeRay's defaults when it names none)
    plus metrics; headless unless the head group asks for another type."""
    name = meta_of(cluster)["name"]
    spec = cluster.get("spec") or {}
    head = spec.get("headGroupSpec") or {}
    container = (((head.get("template") or {}).get("spec") or {}).get("containers") or [{}])[0]
    ports: list[dict[str, Any]] = []
    for p in container.get("ports") or []:
        pname = p.get("name") or f"{p.get('containerPort')}-port"
        ports.append({"name": pname, "port": p["containerPort"], "protocol": p.get("protocol", "TCP")})
    if not ports:
        ports = [{"name": k, "port": v, "protocol": "TCP"} for k, v in DEFAULT_HEAD_PORTS.items()]
    if not any(p["name"] == METRICS_PORT[0] for p in ports):
        ports.append({"name": METRICS_PORT[0], "port": METRICS_PORT[1], "protocol": "TCP"})
    for p in ports:
        p["appProtocol"] = "tcp"
        p["targetPort"] = p["port"]
    svc_type = head.get("serviceType") or "ClusterIP"
    selector = _node_labels(name, "head")
    custom = head.get("headService") or {}
    svc_spec: dict[str, Any] = {"selector": selector, "ports": ports, "type": svc_type}
    if svc_type == "ClusterIP":
        svc_spec["clusterIP"] = "None"
        svc_spec["publishNotReadyAddresses"] = True
    svc_spec.update({k: v for k, v in (custom.get("spec") or {}).items() if k != "selector"})
    labels = {**selector, **(((custom.get("metadata") or {}).get("labels")) or {})}
    return {
        "metadata": {
            "name": head_service_name(cluster),
            "labels": labels,
            "annotations": dict(spec.get("headServiceAnnotations") or {}),
            "ownerReferences": [dict(owner)],
        },
        "spec": svc_spec,
    }


def pod_body(
    cluster: Mapping[str, Any],
    owner: Mapping[str, Any],
    node_type: str,
    group: Mapping[str, Any],
    extra_labels: Mapping[str, str],
) -> dict[str, Any]:
    """A head (``node_type="head"``) or worker Pod of ``group``, named by ``generateName``."""
    meta = meta_of(cluster)
    ns, name = meta["namespace"], meta["name"]
    spec = cluster.get("spec") or {}
    template = jcopy(group.get("template") or {})
    tmeta = template.get("metadata") or {}
    pod_spec = template.get("spec") or {}
    group_name = "headgroup" if node_type == "head" else group.get("groupName", "")
    labels = dict(tmeta.get("labels") or {})
    labels.update(_node_labels(name, node_type))
    labels.update({L_GROUP: group_name, L_IS_RAY_NODE: "yes"})
    labels.update(extra_labels)
    for k in (L_ORIGIN_NAME, L_ORIGIN_CRD):
        if k in labels_of(cluster):
            labels[k] = labels_of(cluster)[k]
    svc = head_service_name(cluster)
    fqdn = f"{svc}.{ns}.svc.cluster.local"
    params = dict(group.get("rayStartParams") or {})
    containers = pod_spec.get("containers") or []
    if containers:
        c0 = containers[0]
        env = [e for e in c0.get("env") or [] if e.get("name") not in _INJECTED_ENV]
        env += [
            {"name": "RAY_CLUSTER_NAME", "value": name},
            {"name": "RAY_CLUSTER_NAMESPACE", "value": ns},
            {"name": "FQ_RAY_IP", "value": fqdn},
            {"name": "RAY_IP", "value": svc},
            {"name": "RAY_PORT", "value": "6379"},
            {"name": "RAY_ADDRESS", "value": f"{fqdn}:6379"},
            {"name": "RAY_USAGE_STATS_KUBERAY_IN_USE", "value": "1"},
            {"name": "KUBERAY_GEN_RAY_START_CMD", "value": _ray_start(node_type, params, fqdn)},
        ]
        c0["env"] = _token_env(cluster, env)
        annotations = tmeta.get("annotations") or {}
        if annotations.get("ray.io/overwrite-container-cmd") != "true":
            c0["command"] = ["/bin/bash", "-c", "--"]
            c0["args"] = [f"ulimit -n 65536; {_ray_start(node_type, params, fqdn)}"]
    if node_type == "head" and spec.get("enableInTreeAutoscaling"):
        autoscaler = _autoscaler_container(spec, name, ns, containers)
        autoscaler["env"] = _token_env(cluster, autoscaler["env"])
        containers.append(autoscaler)
        pod_spec.setdefault("serviceAccountName", name)
    prefix = f"{name}-head" if node_type == "head" else f"{name}-{group_name}-worker"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": prefix.lower()[:50] + "-",
            "namespace": ns,
            "labels": labels,
            "annotations": dict(tmeta.get("annotations") or {}),
            "ownerReferences": [dict(owner)],
        },
        "spec": pod_spec,
    }


def _autoscaler_container(
    spec: Mapping[str, Any], name: str, ns: str, containers: list[dict[str, Any]]
) -> dict[str, Any]:
    """The in-tree autoscaler's sidecar in the head pod."""
    opts = spec.get("autoscalerOptions") or {}
    image = opts.get("image") or (containers[0].get("image") if containers else "")
    return {
        "name": "autoscaler",
        "image": image,
        "imagePullPolicy": opts.get("imagePullPolicy") or "IfNotPresent",
        "command": ["/bin/bash", "-lc", "--"],
        "args": [
            "ray kuberay-autoscaler --cluster-name $(RAY_CLUSTER_NAME) "
            "--cluster-namespace $(RAY_CLUSTER_NAMESPACE)"
        ],
        "env": [
            {"name": "RAY_CLUSTER_NAME", "value": name},
            {"name": "RAY_CLUSTER_NAMESPACE", "value": ns},
            {"name": "KUBERAY_CRD_VER", "value": "v1"},
        ],
        "resources": opts.get("resources")
        or {
            "limits": {"cpu": "500m", "memory": "512Mi"},
            "requests": {"cpu": "500m", "memory": "512Mi"},
        },
    }


def _ray_start(node_type: str, params: Mapping[str, Any], fqdn: str) -> str:
    args = ["ray start"]
    if node_type == "head":
        args.append("--head")
        params = {"dashboard-host": "0.0.0.0", "metrics-export-port": "8080", **params}
    else:
        args.append(f"--address={fqdn}:6379")
        params = {"metrics-export-port": "8080", **params}
    for k, v in params.items():
        args.append(f"--{k}={v}")
    args.append("--block")
    return " ".join(args)
