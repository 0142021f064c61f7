"""The real Kubernetes control plane for the ``k8s`` tests: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, KWOK and the KubeRay operator, built from the pinned
Go modules in ``go/`` (``build.py``) and run as processes on loopback (``controlplane.py``).

By hand: ``python -m tests.k8s up`` prints a KUBECONFIG and stays up until Ctrl-C.
"""

from __future__ import annotations

from .controlplane import DEFAULT_NODES, ControlPlane, NodeSpec

__all__ = ["DEFAULT_NODES", "ControlPlane", "NodeSpec"]
