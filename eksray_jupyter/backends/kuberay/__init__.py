"""The ``kuberay`` backend: RayClusters on Kubernetes (EKS or any cluster) through the official client.

Kept import-light: loading this package (and the backend class) imports neither
``kubernetes`` nor ``boto3``; they are imported on the first call that talks to the API.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KubeRayBackend"]


def __getattr__(name: str) -> Any:
    if name == "KubeRayBackend":
        from .backend import KubeRayBackend

        return KubeRayBackend
    raise AttributeError(name)
