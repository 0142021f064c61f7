"""Pytest fixtures for the fake Kubernetes API server.

Use from a conftest (``pytest_plugins = ["tests.fakekube.pytest_plugin"]`` in the root
conftest) or import the fixtures into a test module::

    from tests.fakekube.pytest_plugin import fakekube, fakekube_kubeconfig  # noqa: F401

Server options via indirect parametrization::

    @pytest.mark.parametrize("fakekube", [{"operator": False}], indirect=True)
    def test_x(fakekube): ...

``fakekube`` yields a started :class:`FakeKubeServer` (fast pods: ``pod_ready_delay=0.05``)
and stops it afterwards; ``fakekube_api_client`` is a ``kubernetes.client.ApiClient`` for it;
``fakekube_kubeconfig`` writes a kubeconfig and points ``$KUBECONFIG`` (and the kubernetes
package's already-imported default) at it, so code that calls
``kubernetes.config.load_kube_config()`` talks to the fake.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .operator import OperatorConfig
from .server import FakeKubeServer


@pytest.fixture
def fakekube(request: pytest.FixtureRequest) -> Iterator[FakeKubeServer]:
    options: dict[str, Any] = dict(getattr(request, "param", None) or {})
    options.setdefault("operator_config", OperatorConfig(pod_ready_delay=0.05))
    options.setdefault("bookmark_interval", 0.2)
    server = FakeKubeServer(**options).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fakekube_api_client(fakekube: FakeKubeServer) -> Iterator[Any]:
    api_client: Any = fakekube.api_client()
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture
def fakekube_kubeconfig(fakekube: FakeKubeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = fakekube.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    # kubernetes.config reads $KUBECONFIG once, at import time
    try:
        import kubernetes.config.kube_config as kube_config
    except ImportError:  # pragma: no cover
        return path
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    return path
