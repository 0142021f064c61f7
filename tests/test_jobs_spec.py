"""The job spec: defaults, the cluster (inline, profile + overrides, existing), stores, and
every offending field reported at once; plus the driver wrapper that collects results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eksray_jupyter.core.config import DEFAULT_PROFILES
from eksray_jupyter.core.errors import InvalidRequestError
from eksray_jupyter.jobs.models import Job, JobState, new_record, transition
from eksray_jupyter.jobs.spec import job_name_from, new_job_id, resolve_job_spec


def resolve(request: Any, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("default_profile", "cpu-small")
    return resolve_job_spec(request, DEFAULT_PROFILES, **kwargs)


def paths_of(request: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(InvalidRequestError) as info:
        resolve(request, **kwargs)
    return {e.path: e.message for e in info.value.errors}


def test_minimal_job_gets_name_default_cluster_and_store() -> None:
    spec = resolve({"entrypoint": "python train.py --epochs 3"})
    assert spec["name"] == "train"
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 0
    assert spec["results"] == []
    assert spec["store"] == {"type": "local"}
    # The default profile, complete, without a name (the cluster is named after the job).
    assert "name" not in spec["cluster"]
    assert spec["cluster"]["workerGroups"][0]["groupName"] == "cpu"
    assert spec["cluster"]["autoscaling"]["idleTimeoutSeconds"] == 60
    assert "clusterName" not in spec


def test_every_offending_field_is_listed(tmp_path: Path) -> None:
    errors = paths_of(
        {
            "name": "Bad_Name",
            "entrypoint": "",
            "colour": "blue",
            "backoffLimit": 99,
            "activeDeadlineSeconds": 0,
            "results": ["/etc/passwd", "out/../../x", "ok/*.csv"],
            "runtimeEnv": {"envVars": {"EKSRAY_RESULTS_DIR": "x", "1BAD": "y"}, "conda": "env"},
            "cluster": {
                "name": "mine",
                "head": {"cpu": -1},
                "workerGroups": [{"groupName": "g", "minReplicas": 3, "maxReplicas": 1}],
            },
            "workingDir": "does-not-exist",
            "store": {"type": "ftp"},
        },
        base_dir=str(tmp_path),
    )
    assert {
        "name",
        "entrypoint",
        "colour",
        "backoffLimit",
        "activeDeadlineSeconds",
        "results[0]",
        "results[1]",
        "runtimeEnv.conda",
        "runtimeEnv.envVars.EKSRAY_RESULTS_DIR",
        "runtimeEnv.envVars",  # the invalid name 1BAD
        "cluster.name",
        "cluster.head.cpu",
        "cluster.workerGroups[0].minReplicas",
        "workingDir",
        "store.type",
    } <= set(errors), errors
    assert "results[2]" not in errors
    assert "lower-case letters" in errors["name"]
    assert "must not exceed maxReplicas" in errors["cluster.workerGroups[0].minReplicas"]
    assert "set by eksray" in errors["runtimeEnv.envVars.EKSRAY_RESULTS_DIR"]
    assert str(tmp_path) in errors["workingDir"]


def test_profile_with_overrides_and_several_tagged_groups() -> None:
    spec = resolve(
        {
            "entrypoint": "python etl.py",
            "cluster": {"profile": "tagged", "workerGroups": [{"groupName": "tagged", "maxReplicas": 3}]},
        }
    )
    [group] = spec["cluster"]["workerGroups"]
    assert group["resources"] == {"tag": 1}  # from the profile
    assert group["maxReplicas"] == 3  # the override
    inline = resolve(
        {
            "entrypoint": "python etl.py",
            "cluster": {
                "workerGroups": [
                    {"groupName": "cpu", "replicas": 1, "maxReplicas": 2},
                    {"groupName": "gpuish", "replicas": 0, "maxReplicas": 1, "resources": {"accel": 1}},
                ]
            },
        }
    )
    assert [g.get("resources") for g in inline["cluster"]["workerGroups"]] == [None, {"accel": 1}]
    assert paths_of({"entrypoint": "x", "cluster": {"profile": "huge"}}) == {
        "cluster.profile": "no profile 'huge'; available: cpu-small, tagged"
    }


def test_existing_cluster_rules() -> None:
    spec = resolve({"entrypoint": "x", "clusterName": "shared"})
    assert spec["clusterName"] == "shared" and "cluster" not in spec
    errors = paths_of(
        {"entrypoint": "x", "clusterName": "shared", "cluster": {}, "ttlSecondsAfterFinished": 5}
    )
    assert "not both" in errors["clusterName"]
    assert "only applies to a cluster the job creates" in errors["ttlSecondsAfterFinished"]


def test_stores() -> None:
    default = {"type": "s3", "bucket": "team-bucket", "prefix": "eksray/jobs"}
    assert resolve({"entrypoint": "x"}, default_store=default)["store"] == default
    assert resolve({"entrypoint": "x", "store": {"type": "s3", "bucket": "mine"}}, default_store=default)[
        "store"
    ] == {"type": "s3", "bucket": "mine", "prefix": "eksray/jobs"}
    assert resolve({"entrypoint": "x", "store": {"type": "local"}}, default_store=default)["store"] == {
        "type": "local"
    }
    errors = paths_of({"entrypoint": "x", "store": {"type": "s3"}})
    assert "c.EKSRay.job_s3_bucket" in errors["store.bucket"]
    assert "store.bucket" in paths_of({"entrypoint": "x", "store": {"type": "local", "bucket": "b"}})
    assert "store.bucket" in paths_of({"entrypoint": "x", "store": {"type": "s3", "bucket": "No_Such"}})


def test_working_dir_is_resolved_against_the_base_dir(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    spec = resolve({"entrypoint": "x", "workingDir": "proj"}, base_dir=str(tmp_path))
    assert spec["workingDir"] == str(tmp_path / "proj")
    spec = resolve({"entrypoint": "x", "workingDir": str(tmp_path / "proj")}, base_dir="/nowhere")
    assert spec["workingDir"] == str(tmp_path / "proj")


def test_body_must_be_an_object() -> None:
    with pytest.raises(InvalidRequestError, match="JSON object"):
        resolve(["python x.py"])


@pytest.mark.parametrize(
    ("entrypoint", "name"),
    [
        ("python train.py --epochs 3", "train"),
        ("python3 -u scripts/Run_ETL.py", "run-etl"),
        ("FOO=1 bash ./pipeline.sh", "pipeline"),
        ("echo hi", "echo"),
        ("python -c 'print(1)'", "print-1"),
        ("1234", "job"),
        ("'unbalanced", "unbalanced"),
    ],
)
def test_generated_names(entrypoint: str, name: str) -> None:
    assert job_name_from(entrypoint) == name


def test_ids_are_unique_valid_names() -> None:
    ids = {new_job_id("a" * 41) for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 47 and i.startswith("a" * 41 + "-") for i in ids)


def test_record_history_and_api_shape() -> None:
    spec = resolve({"entrypoint": "python train.py"})
    record = new_record(
        "train-abcde", "alice", spec, "train-abcde", {"type": "local"}, "/x", "local", now=100.0
    )
    transition(record, JobState.STARTING)
    transition(record, JobState.RUNNING)
    transition(record, JobState.FAILED, "exit code 1")
    job = Job.from_record(record)
    assert job.terminal
    body = job.to_dict()
    assert [h["state"] for h in body["history"]] == ["pending", "starting", "running", "failed"]
    assert body["createdAt"] == "1970-01-01T00:01:40.000Z"
    assert body["startedAt"] is not None and body["finishedAt"] is not None
    assert body["reason"] == "exit code 1"
    assert body["clusterCreated"] is True
    json.dumps(body)


# --- the driver wrapper (results collection) ---------------------------------------------------


def test_driver_runs_the_command_and_collects_results(tmp_path: Path) -> None:
    work, results = tmp_path / "work", tmp_path / "results"
    work.mkdir()
    results.mkdir()
    (tmp_path / "secret").write_text("outside")
    command = (
        "mkdir -p out/deep && echo one > out/a.txt && echo two > out/deep/b.txt && echo log > run.log "
        f"&& ln -s {tmp_path / 'secret'} out/escape.txt && echo done && exit 3"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "eksray_jupyter.jobs.driver",
            "--results",
            json.dumps(["out/**/*.txt", "*.log", "missing/*"]),
            "--",
            command,
        ],
        cwd=work,
        env={**os.environ, "EKSRAY_RESULTS_DIR": str(results)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3  # the command's exit code
    assert "done" in out.stdout
    assert "no file matches the results pattern 'missing/*'" in out.stdout
    collected = sorted(p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file())
    assert collected == ["out/a.txt", "out/deep/b.txt", "run.log"]  # never the symlink out of the dir
    assert (results / "out" / "deep" / "b.txt").read_text() == "two\n"


def test_the_driver_removes_the_results_dir_it_made(tmp_path: Path) -> None:
    """With an upload target and no results dir given, the driver makes one and removes it after."""
    tmp, work = tmp_path / "tmp", tmp_path / "work"
    tmp.mkdir()
    work.mkdir()
    target = {"url": "http://127.0.0.1:9/", "fields": {}, "prefix": "r/"}  # nothing listens: reported
    out = subprocess.run(
        [sys.executable, "-m", "eksray_jupyter.jobs.driver", "--results", json.dumps(["*.txt"]), "--",
         "echo hi > a.txt"],
        cwd=work,
        env={**os.environ, "TMPDIR": str(tmp), "EKSRAY_RESULTS_UPLOAD": json.dumps(target)},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "could not upload the result a.txt" in out.stdout
    assert list(tmp.iterdir()) == []


def test_a_working_dir_that_is_home_root_or_too_large_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    project = home / "project"
    (project / "data").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    job = {"entrypoint": "python main.py"}

    assert "the root directory" in paths_of({**job, "workingDir": "/"})["workingDir"]
    assert "your home directory" in paths_of({**job, "workingDir": "~"})["workingDir"]
    assert (
        "your home directory"
        in paths_of({**job, "workingDir": "project/.."}, base_dir=str(home))["workingDir"]
    )

    (project / "data" / "big.bin").write_bytes(b"\0" * (3 << 20))
    (project / "main.py").write_text("print('hi')")
    message = paths_of({**job, "workingDir": str(project)}, working_dir_max_bytes=2 << 20)["workingDir"]
    assert "more than 2 MiB" in message and "at least 3 MiB" in message
    # Under the limit (or with none) it is accepted.
    assert resolve({**job, "workingDir": str(project)}, working_dir_max_bytes=4 << 20)["workingDir"] == str(
        project
    )
    assert resolve({**job, "workingDir": str(project)})["workingDir"] == str(project)
