"""A job whose supervisor runs on another machine (e.g. a Jupyter pod that was replaced).

The supervisor rewrites the record every HEARTBEAT_S; a reader elsewhere takes a record
older than ``LocalJobRunner.lost_after_seconds`` for a lost job and fails it, and a stop
from elsewhere is recorded in the store, where the supervisor sees it.
"""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.service import ClusterService
from eksray_jupyter.jobs import supervisor as supervisor_module
from eksray_jupyter.jobs.models import JobState, new_record, transition
from eksray_jupyter.jobs.runner import LocalJobRunner
from eksray_jupyter.jobs.service import JobService
from eksray_jupyter.jobs.spec import resolve_job_spec
from eksray_jupyter.jobs.store import JobStores
from eksray_jupyter.jobs.supervisor import Interrupted, RayLog, Supervisor

MEMORY = "tests.memory_backend.MemoryBackend"


def setup(state_dir: Path) -> tuple[JobService, dict[str, Any]]:
    clusters = ClusterService(EKSRay(state_dir=str(state_dir), backend=MEMORY, owner="alice"))
    jobs = JobService(clusters, runner=LocalJobRunner(service=clusters))
    spec = resolve_job_spec(
        {"entrypoint": "python train.py", "clusterName": "x"}, {}, default_store={"type": "local"}
    )
    record = new_record("train-abcde", "alice", spec, "x", {"type": "local"}, "", "local")
    transition(record, JobState.RUNNING)
    return jobs, record


def running_elsewhere(jobs: JobService, record: dict[str, Any], silent_for: float) -> None:
    record["supervisor"] = {"host": "jupyter-alice-old-pod", "pid": 4242}
    record["updatedAt"] = time.time() - silent_for
    jobs.stores.local.create(record)


def test_a_job_driven_from_another_machine_that_still_reports_stays_running(tmp_path: Path) -> None:
    jobs, record = setup(tmp_path)
    running_elsewhere(jobs, record, silent_for=20)
    assert jobs.get("train-abcde").state == JobState.RUNNING


def test_a_job_whose_remote_supervisor_went_silent_is_failed(tmp_path: Path) -> None:
    jobs, record = setup(tmp_path)
    running_elsewhere(jobs, record, silent_for=600)
    job = jobs.get("train-abcde")
    assert job.state == JobState.FAILED
    assert job.reason is not None
    assert re.match(r"its supervisor on jupyter-alice-old-pod stopped reporting 6\d\d s ago", job.reason)
    assert jobs.stores.local.read("alice", "train-abcde")["state"] == "failed"  # recorded, not only shown


def test_a_stop_from_another_machine_is_recorded_and_the_supervisor_obeys(tmp_path: Path) -> None:
    jobs, record = setup(tmp_path)
    running_elsewhere(jobs, record, silent_for=5)
    stopped = jobs.stop("train-abcde")
    assert stopped.state == JobState.STOPPED and stopped.reason == "stopped on request"

    # The supervisor on that machine: its next heartbeat reads the stop and ends the job.
    stores = JobStores.from_config(jobs.config)
    mine = dict(record, state="running")
    supervisor = Supervisor(jobs.clusters, stores, stores.local, mine, tmp_path / "run")
    with pytest.raises(Interrupted) as ended:
        supervisor.check(heartbeat_now=True)
    assert ended.value.state == JobState.STOPPED
    assert stores.local.read("alice", "train-abcde")["state"] == "stopped"  # not overwritten


def test_the_supervisor_rewrites_its_record_as_a_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs, record = setup(tmp_path)
    record["updatedAt"] = time.time() - 100
    jobs.stores.local.create(record)
    stores = JobStores.from_config(jobs.config)
    supervisor = Supervisor(jobs.clusters, stores, stores.local, dict(record), tmp_path / "run")
    monkeypatch.setattr(supervisor_module, "HEARTBEAT_S", 0.0)
    supervisor.check()
    saved = stores.local.read("alice", "train-abcde")
    assert saved["updatedAt"] > time.time() - 5
    assert saved["supervisor"]["pid"] > 0 and saved["supervisor"]["host"]


def test_a_shared_state_dir_does_not_make_another_hosts_supervisor_look_dead(tmp_path: Path) -> None:
    """With the state dir on a volume, supervisor.json is visible here but its pid is another host's."""
    jobs, record = setup(tmp_path)
    running_elsewhere(jobs, record, silent_for=5)
    run_dir = tmp_path / "job-runs" / "alice" / "train-abcde"
    run_dir.mkdir(parents=True)
    (run_dir / "supervisor.json").write_text('{"pid": 999999, "start": 1.0}')
    assert jobs.get("train-abcde").state == JobState.RUNNING


def test_a_status_save_never_overwrites_a_stop_recorded_elsewhere(tmp_path: Path) -> None:
    jobs, record = setup(tmp_path)
    running_elsewhere(jobs, record, silent_for=5)
    stores = JobStores.from_config(jobs.config)
    supervisor = Supervisor(jobs.clusters, stores, stores.local, dict(record), tmp_path / "run")
    jobs.stop("train-abcde")  # from this machine: recorded in the store
    supervisor.record["attempts"] = [{"attempt": 1, "status": "RUNNING"}]
    supervisor.save()  # e.g. the Ray job's status changed
    assert stores.local.read("alice", "train-abcde")["state"] == "stopped"
    with pytest.raises(Interrupted) as ended:
        supervisor.check()
    assert ended.value.state == JobState.STOPPED


class FlakyLogs:
    """Ray's log answer (``{"logs": ...}``), after ``failures`` failed tries."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def __call__(self, client: Any, submission_id: str) -> io.BytesIO:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("dashboard restarting")
        return io.BytesIO(json.dumps({"logs": "some\nall of it\n"}).encode())


def test_the_final_log_read_is_retried(tmp_path: Path) -> None:
    jobs, record = setup(tmp_path)
    jobs.stores.local.create(record)
    stores = JobStores.from_config(jobs.config)
    supervisor = Supervisor(jobs.clusters, stores, stores.local, dict(record), tmp_path / "run")
    supervisor.stop_event.set()  # no waiting between tries in the test
    ray_log = RayLog(supervisor.log)
    ray_log.write(b"some\n")  # copied while the job ran
    supervisor.open_ray_log = FlakyLogs(2)
    supervisor.final_log(None, "train-abcde-1", ray_log)
    assert ray_log.copied == len(b"some\nall of it\n") and ray_log.tail(1) == "all of it"
    supervisor.open_ray_log = FlakyLogs(3)
    supervisor.final_log(None, "train-abcde-1", ray_log)
    supervisor.log.flush()
    log = jobs.stores.local.read_log("alice", "train-abcde").data.decode()
    assert log.startswith("some\nall of it\n")  # what was copied before is not copied again
    assert "[eksray] could not read the end of the log: dashboard restarting" in log


def test_after_a_stop_from_elsewhere_the_end_and_the_cluster_deletion_are_saved(tmp_path: Path) -> None:
    jobs, record = setup(tmp_path)
    running_elsewhere(jobs, record, silent_for=5)
    stores = JobStores.from_config(jobs.config)
    supervisor = Supervisor(jobs.clusters, stores, stores.local, dict(record), tmp_path / "run")
    jobs.stop("train-abcde")
    with pytest.raises(Interrupted):
        supervisor.check(heartbeat_now=True)
    supervisor.save(JobState.STOPPED, "stopped on request")  # run()'s final save
    supervisor.save(clusterDeletedAt=123.0)  # delete_cluster() afterwards
    saved = stores.local.read("alice", "train-abcde")
    assert saved["state"] == "stopped" and saved["clusterDeletedAt"] == 123.0
