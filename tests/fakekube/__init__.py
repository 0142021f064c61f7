"""A faithful-enough fake Kubernetes API server for tests (test infrastructure only).

Serves core/v1 namespaces, pods, services, events, configmaps, secrets, serviceaccounts,
``networking.k8s.io/v1`` NetworkPolicies (stored, not enforced) and
the KubeRay ``ray.io/v1`` RayCluster / RayJob / RayService custom resources (validated
against the real CRDs) over HTTP on loopback, for the official ``kubernetes`` client.
A simulated KubeRay operator, scheduler and kubelet run inside the server's event loop.

    from tests.fakekube import FakeKubeServer

    with FakeKubeServer() as fk:
        api = kubernetes.client.CustomObjectsApi(fk.api_client())
        ...

or ``python -m tests.fakekube --port 8001`` (prints the URL). README.md beside this file
lists the modules and the controls.
"""

from __future__ import annotations

from .errors import ApiError
from .faults import ErrorRule, Faults
from .kubelet import PodSimulator
from .operator import OperatorConfig, RayOperator
from .raycluster import RayClusterController
from .server import DEFAULT_TOKEN, FakeKubeServer
from .store import ResourceType, Store, WatchEvent

__all__ = [
    "DEFAULT_TOKEN",
    "ApiError",
    "ErrorRule",
    "FakeKubeServer",
    "Faults",
    "OperatorConfig",
    "PodSimulator",
    "RayClusterController",
    "RayOperator",
    "ResourceType",
    "Store",
    "WatchEvent",
]
