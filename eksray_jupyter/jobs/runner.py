"""Who runs a job: the :class:`JobRunner` interface and the local implementation.

A runner takes a job whose first record is persisted (state ``pending``) and drives it to
a terminal state, writing the record, logs and results to the job's store. It must
survive the caller: the server or a CLI may exit while the job runs.

:class:`LocalJobRunner` starts one detached supervisor process per job
(``python -m eksray_jupyter.jobs.supervisor``) that creates the cluster through the
:class:`~eksray_jupyter.core.service.ClusterService` (so it works with any backend whose
dashboard this machine can reach), submits with Ray's Jobs API and cleans up. The KubeRay
runner (:mod:`eksray_jupyter.backends.kuberay.rayjob_runner`, the kuberay backend's default)
creates a RayJob instead and mirrors its status and log into the store.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from traitlets import Any as AnyTrait
from traitlets import Float
from traitlets.config import LoggingConfigurable

from ..core.service import CONFIG_ENV
from ..core.state_files import read_json, write_json_atomic
from .models import Job
from .store import JobStore, owner_key

#: How often a supervisor rewrites its running job's record even if nothing changed: readers
#: on other machines take a record older than LocalJobRunner.lost_after_seconds for a dead one.
HEARTBEAT_S = 30.0
#: How long a runner gives Ray to stop a job, and so how long a stop request (``DELETE``,
#: ``eksray rj stop``, ``%eksray job stop``) waits for the end to be recorded.
STOP_WAIT_S = 30.0


class JobRunner(LoggingConfigurable):
    """Base class of job runners. Subclasses implement the methods that raise NotImplementedError."""

    #: Short name recorded in each job (``runner``).
    name = "abstract"

    service = AnyTrait(help="The ClusterService whose settings and backend the runner uses.")

    stores = AnyTrait(help="The JobStores registry the runner opens job stores from (the JobService's).")

    def check(self, spec: dict[str, Any], store: JobStore) -> None:
        """Refuse a resolved spec this runner cannot run (InvalidRequestError, LimitExceededError, ...).

        Called before anything is persisted or created, so a refusal leaves nothing behind.
        """

    def start(self, job: Job) -> None:
        """Begin running a persisted ``pending`` job; return at once. Raise BackendError if it cannot start."""
        raise NotImplementedError

    def stop(self, job: Job) -> bool:
        """Ask the job to stop (the runner records ``stopped``); return at once.

        Returns False when no live runner drives the job (the caller records the stop).
        """
        raise NotImplementedError

    def is_active(self, job: Job) -> bool | None:
        """Whether a runner still drives ``job``; None when this machine cannot tell."""
        raise NotImplementedError

    def took_over(self, job: Job) -> bool:
        """Whether the last ``is_active(job)`` took the job over and updated its stored record
        (then the reader reads it again); asking clears it."""
        return False

    def close(self) -> None:
        """Stop this runner's background threads, if it has any."""

    def may_have_left_a_cluster(self, job: Job) -> bool:
        """Whether a job that ended without its runner may have left its cluster running."""
        return True

    def failure_hint(self, job: Job) -> str:
        """The reason recorded for a job whose runner ended without recording an end."""
        return "its runner stopped unexpectedly without recording how the job ended"


class LocalJobRunner(JobRunner):
    """One detached supervisor process per job on this machine.

    Its run directory ``<state_dir>/job-runs/<owner>/<id>/`` holds ``supervisor.json`` (pid
    and start time, written by the spawner), ``supervisor.log`` (its own output), the stop
    request file and each attempt's results directory ($EKSRAY_RESULTS_DIR).
    """

    name = "local"

    lost_after_seconds = Float(
        120.0,
        help="A job whose supervisor runs on another machine is taken as lost (and failed) when its "
        f"record is older than this; supervisors rewrite it every {HEARTBEAT_S:.0f} s.",
    ).tag(config=True)

    def run_dir(self, owner: str, job_id: str) -> Path:
        return Path(self.service.config.state_dir) / "job-runs" / owner_key(owner) / job_id

    def start(self, job: Job) -> None:
        from ..core import processes

        run_dir = self.run_dir(job.owner, job.id)
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "eksray_jupyter.jobs.supervisor",
            job.id,
            "--store",
            json.dumps(job.store),
            "--run-dir",
            str(run_dir),
        ]
        # The server's effective settings (backend, owner, state dir, stores) travel as for kernels.
        env = processes.child_env({CONFIG_ENV: self.service.environment_config()})
        ref = processes.spawn(argv, env, run_dir / "supervisor.log")
        write_json_atomic(run_dir / "supervisor.json", ref)

    def _process(self, job: Job) -> Any:
        from ..core import processes

        return processes.process_of(read_json(self.run_dir(job.owner, job.id) / "supervisor.json"))

    def stop(self, job: Job) -> bool:
        run_dir = self.run_dir(job.owner, job.id)
        if run_dir.is_dir():
            (run_dir / "stop").touch()  # read by the supervisor even if the signal is missed
        proc = self._process(job)
        if proc is None:
            return False
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGTERM)
        return True

    def is_active(self, job: Job) -> bool | None:
        if job.runner_host and job.runner_host != socket.gethostname():
            # A supervisor on another machine (a replaced Jupyter pod, a state dir on a shared
            # volume): its pid means nothing here; it is alive while it keeps rewriting the record.
            return time.time() - job.updated_at < self.lost_after_seconds
        if (self.run_dir(job.owner, job.id) / "supervisor.json").is_file():
            return self._process(job) is not None
        return None  # not started yet, or this machine's state was lost

    def failure_hint(self, job: Job) -> str:
        if job.runner_host and job.runner_host != socket.gethostname():
            silent = time.time() - job.updated_at
            return (
                f"its supervisor on {job.runner_host} stopped reporting {silent:.0f} s ago (it reports "
                f"every {HEARTBEAT_S:.0f} s): that machine or its Jupyter server went away while the job ran"
            )
        log = self.run_dir(job.owner, job.id) / "supervisor.log"
        try:
            with open(log, "rb") as f:  # its end only: a log is never read whole
                f.seek(max(0, os.fstat(f.fileno()).st_size - 16384))
                lines = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        last = f" (last words: {lines[-1].strip()[:300]})" if lines else ""
        return f"its supervisor process exited without recording how the job ended{last}; see {log}"
