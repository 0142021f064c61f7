from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_server", "tests.k8s.pytest_plugin"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """The KubeRay CRDs and samples are the API contract the tests check against: without them
    the suite must stop, not pass with those checks missing."""
    from tests.fakekube.schema import DEFAULT_CRD_DIR, SAMPLES_DIR

    for needed in (DEFAULT_CRD_DIR, SAMPLES_DIR):
        if not any(needed.glob("*.yaml")):
            raise pytest.UsageError(
                f"No KubeRay YAML in {needed}: put the shared material in ../shared beside the "
                "checkout, or set EKSRAY_SHARED_DIR to where it is."
            )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``k8s`` tests run last: their control plane starts once, for them alone, and stays
    out of the way of the rest (whose timing it would otherwise share two cores with)."""
    items.sort(key=lambda item: item.get_closest_marker("k8s") is not None)


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private state directory, so tests never see (or touch) a developer's clusters."""
    path = tmp_path / "eksray-state"
    path.mkdir()
    monkeypatch.setenv("EKSRAY_STATE_DIR", str(path))
    return path


@pytest.fixture
def backend_class() -> str:
    """Override in a module to run the server with another backend."""
    return "tests.memory_backend.MemoryBackend"


@pytest.fixture
def eksray_settings() -> dict[str, Any]:
    """Override in a module for more ``EKSRay`` settings of the test server (a job runner, ...)."""
    return {}


@pytest.fixture
def jp_server_config(state_dir: Path, backend_class: str, eksray_settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"eksray_jupyter": True}},
        "EKSRay": {"state_dir": str(state_dir), "backend": backend_class, **eksray_settings},
        # No heartbeats among the messages tests expect (tests/test_stream_lifecycle.py sets them).
        "EKSRayExtension": {"stream_heartbeat_seconds": 0},
    }


@pytest.fixture
def services(jp_serverapp: Any) -> Any:
    """The running extension's clusters and jobs (the objects the handlers use)."""
    return jp_serverapp.web_app.settings["eksray_services"]


@pytest.fixture
def service(services: Any) -> Any:
    """The running extension's ClusterService (same backend object the handlers use)."""
    return services.clusters


@pytest.fixture
def jobs(services: Any) -> Any:
    """The running extension's JobService."""
    return services.jobs
