"""What the Jupyter servers under fuzzing (tests/test_api_fuzz.py) run with, by import path.

:class:`InstantRunner`: a job runner with no processes. The local runner starts a supervisor
process per job (and that a Ray cluster): far too slow for hundreds of generated submissions.
This one runs each job on a timer thread: ``running`` with one log line at once, ``succeeded``
with one result file (``out/metrics.csv``) after ``DURATION_S``, unless it is stopped first.
Stops take effect at once.

:class:`DashboardMemoryBackend`: the in-memory backend whose clusters' dashboards are all the
upstream named by ``$EKSRAY_FUZZ_DASHBOARD`` (a stub the test serves), so the dashboard proxy
has something to pass requests to.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from eksray_jupyter.jobs.models import Job, JobState, transition
from eksray_jupyter.jobs.runner import JobRunner

from .memory_backend import MemoryBackend

DASHBOARD_ENV = "EKSRAY_FUZZ_DASHBOARD"

#: Seconds a job runs: short, so a followed log (``?follow=1``) ends soon.
DURATION_S = 0.3
RESULT = ("out/metrics.csv", b"epoch,loss\n1,0.5\n")


class InstantRunner(JobRunner):
    name = "instant"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self._timers: dict[str, threading.Timer] = {}

    def start(self, job: Job) -> None:
        store = self.stores.open(job.store)
        record = store.read(job.owner, job.id)
        store.write(transition(record, JobState.RUNNING))
        store.append_log(job.owner, job.id, f"{job.id}: running\n".encode())
        timer = threading.Timer(DURATION_S, self._finish, (job,))
        timer.daemon = True
        with self._lock:
            self._timers[job.id] = timer
        timer.start()

    def _finish(self, job: Job, state: JobState = JobState.SUCCEEDED) -> None:
        with self._lock:
            if self._timers.pop(job.id, None) is None:
                return  # already stopped or finished
        store = self.stores.open(job.store)
        record = store.read(job.owner, job.id)
        if state == JobState.SUCCEEDED:
            with tempfile.TemporaryDirectory() as staging:
                source = Path(staging) / "file"
                source.write_bytes(RESULT[1])
                store.put_result(job.owner, job.id, RESULT[0], source)
            record["results"] = [{"path": RESULT[0], "size": len(RESULT[1])}]
            store.append_log(job.owner, job.id, b"done\n")
            transition(record, state)
        else:
            transition(record, state, "stopped on request")
        store.write(record)

    def stop(self, job: Job) -> bool:
        with self._lock:
            timer = self._timers.get(job.id)
        if timer is None:
            return False
        timer.cancel()
        self._finish(job, JobState.STOPPED)
        return True

    def is_active(self, job: Job) -> bool | None:
        with self._lock:
            return job.id in self._timers

    def close(self) -> None:
        with self._lock:
            timers, self._timers = list(self._timers.values()), {}
        for timer in timers:
            timer.cancel()


class DashboardMemoryBackend(MemoryBackend):
    name = "memory"

    def dashboard_address(self, owner: str, name: str) -> str:
        self._cluster(owner, name)
        return os.environ[DASHBOARD_ENV]
