"""The NetworkPolicy eksray makes for each of its RayClusters (pure functions).

Who may open a connection to a cluster's pods (every pod labelled ``ray.io/cluster=<name>``:
the head and the workers, all ports):

* the cluster's own pods (Ray's nodes talk to each other on many ports);
* the submitter pods of RayJobs on the cluster (``eksray.io/submits-to=<name>``, set by the
  job runner; ``ray job submit`` talks to the head's dashboard);
* the Jupyter server's pods, where kernels (Ray drivers) run: ``jupyter_pod_selector`` in
  ``jupyter_namespace_selector`` (default: the server's own namespace when it runs in a pod);
* the KubeRay operator, on the dashboard port only (it asks the dashboard about RayJobs and
  RayServices; health checks are exec probes inside the pods and need no network);
* any further peers the admin lists (``network_policy_ingress_from``), e.g. the API server's
  addresses as an ``ipBlock`` for ``dashboard_access = "apiserver-proxy"``.

It is a plain ``networking.k8s.io/v1`` NetworkPolicy, not the RayCluster's own
``spec.networkPolicy`` (KubeRay v1.7 makes that only behind an alpha feature gate, off by
default). Owner-referenced to the RayCluster, so Kubernetes deletes it with the cluster. It
takes effect only where the cluster's network plugin enforces NetworkPolicies (on EKS: the
VPC CNI's network policy agent, Calico or Cilium).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .names import (
    API_VERSION,
    DASHBOARD_PORT,
    L_CLUSTER,
    LABEL_MANAGED_BY,
    LABEL_OWNER,
    LABEL_SUBMITS_TO,
    MANAGED_BY,
    network_policy_name,
)

NETWORKING_API_VERSION = "networking.k8s.io/v1"
PEER_KEYS = frozenset({"podSelector", "namespaceSelector", "ipBlock"})
#: Where a pod finds its own namespace (the service account's projected files).
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def check_peer(peer: Any, where: str) -> None:
    """ValueError unless ``peer`` is a NetworkPolicyPeer (podSelector, namespaceSelector, ipBlock)."""
    if not isinstance(peer, Mapping) or not peer:
        raise ValueError(f"{where}: a peer is a mapping with podSelector, namespaceSelector and/or ipBlock")
    unknown = sorted(set(peer) - PEER_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; a peer has {', '.join(sorted(PEER_KEYS))}")
    if "ipBlock" in peer and set(peer) != {"ipBlock"}:
        raise ValueError(f"{where}: ipBlock cannot be combined with selectors")
    for key, value in peer.items():
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}.{key} must be a mapping")


def own_namespace() -> str | None:
    """The namespace this process's pod runs in, if it runs in one."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return NAMESPACE_FILE.read_text().strip() or None
    except OSError:
        return None


def jupyter_peer(
    pod_labels: Mapping[str, str] | None, namespace_labels: Mapping[str, str] | None, in_pod: bool
) -> dict[str, Any] | None:
    """The peer for the Jupyter server's pods; None when ``pod_labels`` is None (no such peer).

    ``namespace_labels`` None: the server's own namespace when it runs in a pod, else every
    namespace.
    """
    if pod_labels is None:
        return None
    if namespace_labels is None:
        namespace = own_namespace() if in_pod else None
        namespace_labels = {"kubernetes.io/metadata.name": namespace} if namespace else {}
    return {"podSelector": _selector(pod_labels), "namespaceSelector": _selector(namespace_labels)}


def _selector(labels: Mapping[str, str]) -> dict[str, Any]:
    """A label selector; ``{}`` (everything) when there are no labels, as the API server writes it."""
    return {"matchLabels": {str(k): str(v) for k, v in labels.items()}} if labels else {}


def build_network_policy(
    cluster: Mapping[str, Any],
    *,
    jupyter: Mapping[str, Any] | None,
    operator: Mapping[str, Any] | None,
    extra: list[Mapping[str, Any]],
) -> dict[str, Any]:
    """The NetworkPolicy of ``cluster`` (a RayCluster as the API server returned it: with uid)."""
    meta = cluster["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    peers: list[dict[str, Any]] = [
        {"podSelector": {"matchLabels": {L_CLUSTER: name}}},
        {"podSelector": {"matchLabels": {LABEL_SUBMITS_TO: name, LABEL_MANAGED_BY: MANAGED_BY}}},
    ]
    if jupyter is not None:
        peers.append(dict(jupyter))
    peers += [dict(peer) for peer in extra]
    ingress: list[dict[str, Any]] = [{"from": peers}]
    if operator:
        ingress.append({"from": [dict(operator)], "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}]})
    labels = {LABEL_MANAGED_BY: MANAGED_BY}
    owner_label = (meta.get("labels") or {}).get(LABEL_OWNER)
    if owner_label:
        labels[LABEL_OWNER] = owner_label
    return {
        "apiVersion": NETWORKING_API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": {
            "name": network_policy_name(name),
            "namespace": namespace,
            "labels": labels,
            # Deleted with the cluster by the garbage collector (no blockOwnerDeletion: that
            # would need update rights on rayclusters/finalizers).
            "ownerReferences": [
                {"apiVersion": API_VERSION, "kind": "RayCluster", "name": name, "uid": meta["uid"]}
            ],
        },
        "spec": {
            "podSelector": {"matchLabels": {L_CLUSTER: name}},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj`` has an ownerReference to the RayCluster ``uid``."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, Mapping) and r.get("kind") == "RayCluster" and r.get("uid") == uid for r in refs)
