from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_server"]


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
def jp_server_config(state_dir: Path, backend_class: str) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"eksray_jupyter": True}},
        "EKSRay": {"state_dir": str(state_dir), "backend": backend_class},
    }


@pytest.fixture
def service(jp_serverapp: Any) -> Any:
    """The running extension's ClusterService (same backend object the handlers use)."""
    return jp_serverapp.web_app.settings["eksray_service"]
