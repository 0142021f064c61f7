"""Pytest fixtures for the real control plane (tests marked ``k8s``).

``k8s_plane`` is one :class:`ControlPlane` for the whole session (about 15 s to start),
built first if the binaries are missing; tests keep apart by using their own users and so
their own namespaces. ``k8s_user`` makes a user whose ServiceAccount is bound to exactly
the RBAC that ``docs/kuberay.md`` documents, and writes a kubeconfig with its token.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import build
from .controlplane import ControlPlane

DOCS = Path(__file__).resolve().parents[2] / "docs" / "kuberay.md"
_users = itertools.count(1)


def documented_rbac() -> dict[str, dict[str, Any]]:
    """The Role and ClusterRole that docs/kuberay.md documents, by kind (the YAML blocks
    of its RBAC section)."""
    section = DOCS.read_text().split("### RBAC", 1)[1].split("\n## ", 1)[0]
    documents = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section, re.S)]
    return {d["kind"]: d for d in documents if isinstance(d, dict) and d.get("kind")}


@dataclass
class K8sUser:
    owner: str
    namespace: str
    service_account: str
    token: str
    kubeconfig: Path


@pytest.fixture(scope="session")
def k8s_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    if not build.binaries().complete():
        build.build()
    plane = ControlPlane(workdir=tmp_path_factory.mktemp("k8s")).start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def k8s_user(k8s_plane: ControlPlane, tmp_path: Path) -> Callable[..., K8sUser]:
    """``k8s_user("alice")`` → a fresh user ``alice-<n>`` in namespace ``eksray-alice-<n>``,
    its ServiceAccount bound there to the documented Role (``cluster_wide=True``: bound to
    the documented rules cluster-wide, as one server for many users needs)."""

    def make(name: str, cluster_wide: bool = False) -> K8sUser:
        owner = f"{name}-{next(_users)}"
        namespace = f"eksray-{owner}"
        rbac = documented_rbac()
        role = rbac["Role"]
        # Cluster-wide, the server's account lives elsewhere and the user's namespace is left
        # for the backend to make.
        account_namespace = "eksray-system" if cluster_wide else namespace
        subject = {"kind": "ServiceAccount", "name": "eksray", "namespace": account_namespace}
        objects: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": account_namespace}}
        ]
        if cluster_wide:
            # One server for many users: the same rules for every namespace, and namespaces.
            objects += [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": f"eksray-{owner}"},
                    "rules": role["rules"] + rbac["ClusterRole"]["rules"],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": f"eksray-{owner}"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": f"eksray-{owner}",
                    },
                    "subjects": [subject],
                },
            ]
        else:
            objects += [
                {**role, "metadata": {**role.get("metadata", {}), "namespace": namespace}},
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": "eksray", "namespace": namespace},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": role["metadata"]["name"],
                    },
                    "subjects": [subject],
                },
            ]
        k8s_plane.apply(objects)
        token = k8s_plane.service_account_token(account_namespace, "eksray")
        kubeconfig = k8s_plane.write_kubeconfig(tmp_path / f"{owner}.kubeconfig", token, owner)
        return K8sUser(owner, namespace, "eksray", token, kubeconfig)

    return make
