"""Choosing the backend and the job runner: classes, import paths or short names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from traitlets import TraitError

from eksray_jupyter.backends.kuberay import KubeRayBackend
from eksray_jupyter.backends.local import LocalBackend
from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.service import CONFIG_ENV, ClusterService
from eksray_jupyter.jobs.runner import LocalJobRunner
from eksray_jupyter.jobs.service import JobService
from tests.fakes import FakeBackend


def test_short_names_import_paths_and_classes_choose_the_backend() -> None:
    assert EKSRay().backend is LocalBackend
    assert EKSRay(backend="kuberay").backend is KubeRayBackend
    assert EKSRay(backend="tests.fakes.FakeBackend").backend is FakeBackend
    assert EKSRay(backend=FakeBackend).backend is FakeBackend


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("kubray", "unknown backend 'kubray'; use one of local, kuberay or an import path"),
        ("no_such_module.Backend", "backend 'no_such_module.Backend' cannot be imported"),
        (
            "eksray_jupyter.jobs.runner.LocalJobRunner",
            "backend eksray_jupyter.jobs.runner.LocalJobRunner is not a ClusterBackend subclass",
        ),
    ],
)
def test_a_wrong_backend_says_what_to_fix(value: str, message: str) -> None:
    with pytest.raises(TraitError, match=message.replace(".", r"\.")):
        EKSRay(backend=value)


def test_the_job_runner_follows_the_backend_unless_chosen(tmp_path: Path) -> None:
    def runner(**settings: str) -> str:
        config = EKSRay(owner="alice", state_dir=str(tmp_path), **settings)
        return JobService(ClusterService(config, backend=KubeRayBackend())).runner.name

    assert runner() == "kuberay"  # RayJobs
    assert runner(job_runner="local") == "local"  # never silently the KubeRay runner
    assert runner(job_runner="eksray_jupyter.jobs.runner.LocalJobRunner") == "local"
    with pytest.raises(TraitError, match="unknown job runner 'supervisor'"):
        EKSRay(job_runner="supervisor")


def test_a_chosen_class_reaches_child_processes_as_its_import_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = ClusterService(
        EKSRay(owner="alice", state_dir=str(tmp_path), backend=FakeBackend, job_runner=LocalJobRunner)
    )
    sections = json.loads(service.environment_config())
    assert sections["EKSRay"]["backend"] == "tests.fakes.FakeBackend"
    assert sections["EKSRay"]["job_runner"] == "eksray_jupyter.jobs.runner.LocalJobRunner"
    monkeypatch.setenv(CONFIG_ENV, service.environment_config())
    child = ClusterService.from_environment()
    assert child.config.backend is FakeBackend and child.config.job_runner is LocalJobRunner
