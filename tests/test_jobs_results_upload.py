"""How a RayJob's head uploads its result files, and what anyone who reads the RayJob learns.

A RayJob is readable by whoever may ``get rayjobs`` in its namespace, so what it carries for
the upload is narrow: a presigned POST for this job's prefix only, files of bounded size,
valid for an hour by default (less with a deadline); or, with ``results_upload = 'pod-role'``,
no credential at all (the head uploads with its pods' own IAM role).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from eksray_jupyter.jobs.driver import upload
from eksray_jupyter.jobs.store import S3JobStore

from .fakekube import pytest_plugin
from .test_jobs_kuberay import Env, make_bucket, moto_url, s3env

__all__ = ["moto_url", "s3env"]  # fixtures, used by name
fakekube = pytest_plugin.fakekube
fakekube_kubeconfig = pytest_plugin.fakekube_kubeconfig

MIB = 1024 * 1024


def results_upload_of(env: Env, job_id: str) -> dict[str, Any]:
    rayjob = env.rayjob(job_id)
    assert rayjob is not None
    runtime_env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    return json.loads(runtime_env["env_vars"]["EKSRAY_RESULTS_UPLOAD"])


def policy_of(target: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(target["fields"]["policy"]))


def expires_in(policy: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00")).timestamp() - time.time()


@pytest.mark.parametrize(
    ("deadline", "longest"),
    [(None, 3600), (120, 720)],  # the default hour; a deadline's end plus 10 minutes
)
def test_a_presigned_upload_is_narrow_and_short_lived(s3env: Env, deadline: int | None, longest: int) -> None:
    spec: dict[str, Any] = {
        "entrypoint": "python train.py",
        "results": ["out/*"],
        "cluster": {"profile": "cpu-small"},
    }
    if deadline:
        spec["activeDeadlineSeconds"] = deadline
    job = s3env.jobs.submit(spec)
    target = results_upload_of(s3env, job.id)
    prefix = f"eksray/jobs/alice/{job.id}/results/"
    assert target["prefix"] == prefix and target["maxBytes"] == 1024 * MIB
    policy = policy_of(target)
    assert ["starts-with", "$key", prefix] in policy["conditions"]
    assert ["content-length-range", 0, 1024 * MIB] in policy["conditions"]
    assert longest - 60 < expires_in(policy) <= longest
    assert abs(target["expiresAt"] - (time.time() + longest)) < 60


@pytest.fixture
def pod_role_env(s3env: Env) -> Iterator[Env]:
    s3env.jobs.runner.results_upload = "pod-role"
    yield s3env


def test_with_the_pods_own_role_the_rayjob_carries_no_credential(
    pod_role_env: Env, moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = pod_role_env.jobs.submit(
        {"entrypoint": "python train.py", "results": ["out/*"], "cluster": {"profile": "cpu-small"}}
    )
    target = results_upload_of(pod_role_env, job.id)
    assert target == {
        "bucket": "team-jobs",
        "prefix": f"eksray/jobs/alice/{job.id}/results/",
        "region": None,
        "endpointUrl": moto_url,
        "maxBytes": 1024 * MIB,
    }
    rayjob_text = json.dumps(pod_role_env.rayjob(job.id))
    assert not any(word in rayjob_text for word in ("policy", "x-amz-signature", "X-Amz-Credential"))

    # The head uploads with its own identity (here: the test's moto credentials, as a pod's
    # IAM role would give it), under the job's prefix.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "pod-role")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "pod-role")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    assert upload(["out/metrics.csv"], str(tmp_path), target) == []
    store = S3JobStore("team-jobs", "eksray/jobs", endpoint_url=moto_url)
    assert store.list_results("alice", job.id) == [{"path": "out/metrics.csv", "size": 17}]


def test_the_driver_keeps_to_the_size_limit_and_the_expiry(
    moto_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    make_bucket(moto_url, "limits")
    store = S3JobStore("limits", "p", endpoint_url=moto_url)
    (tmp_path / "small.txt").write_bytes(b"x" * 10)
    (tmp_path / "big.bin").write_bytes(b"x" * (MIB + 1))
    target = store.results_upload("alice", "train-abcde", 600, MIB)
    assert upload(["small.txt", "big.bin"], str(tmp_path), target) == ["big.bin"]
    assert "not uploading the result big.bin: larger than 1 MiB" in capfd.readouterr().out
    assert store.list_results("alice", "train-abcde") == [{"path": "small.txt", "size": 10}]

    expired = {**store.results_upload("alice", "train-fghij", 600, MIB), "expiresAt": int(time.time()) - 1}
    assert upload(["small.txt"], str(tmp_path), expired) == ["small.txt"]
    assert "presigned results upload expired" in capfd.readouterr().out
    assert store.list_results("alice", "train-fghij") == []
