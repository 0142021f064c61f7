"""The detached process that runs one job from ``pending`` to the end, and cleans up.

Started by :class:`~eksray_jupyter.jobs.runner.LocalJobRunner` as
``python -m eksray_jupyter.jobs.supervisor JOB_ID --store JSON --run-dir DIR`` in its own
session, with the server's settings in ``$EKSRAY_CONFIG``; it outlives the server or CLI
that started it. For each attempt (1 + ``backoffLimit``) it:

1. creates the job's cluster through the ClusterService (or checks the named existing
   one) and waits until it is ready — state ``starting``;
2. submits the entrypoint with Ray's Jobs API (``JobSubmissionClient`` against the
   cluster's dashboard; ray is imported here only) with the working directory, pip
   packages and environment variables as Ray's runtime_env — state ``running``;
3. follows the Ray job, appending its log to the store every ``LOG_FLUSH_S`` seconds
   (streamed from Ray's answer and appended in parts: the log is never held whole),
   and stops it on a stop request (SIGTERM or the run directory's ``stop`` file) or
   when ``activeDeadlineSeconds`` have passed since submission.

Then it copies the last attempt's results directory to the store, records the terminal
state (``succeeded``, ``failed`` with a reason, ``stopped``), and deletes the cluster it
created (after ``ttlSecondsAfterFinished``) — never an existing one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

from ..core.errors import EKSRayError, NotFoundError
from ..core.models import Phase
from ..core.service import ClusterService
from .models import JobState, log_read_interval, transition
from .ray_log import copy_log
from .runner import HEARTBEAT_S, STOP_WAIT_S
from .spec import ATTEMPT_ENV, JOB_ID_ENV, JOB_LABEL, RESULTS_DIR_ENV
from .store import JobStore, JobStores

POLL_S = 1.0
LOG_FLUSH_S = 2.0
LOG_FLUSH_BYTES = 256 * 1024
LOG_PART_BYTES = 8 << 20  # the most one append writes (one S3 object)
LOG_MEMORY_BYTES = 8 << 20  # log not stored yet (the store fails) held in memory; the rest on disk
LOG_RETRY_S = 10.0  # after the store failed, the next try of a flush (an explicit flush tries at once)
RAY_LOG_TIMEOUT_S = 30.0
TAIL_BYTES = 16 * 1024  # of a Ray job's log kept for a failure's reason (its last TAIL_LINES lines)
CLUSTER_START_TIMEOUT_S = 900.0
SUBMIT_RETRY_S = 90.0
LOST_CONTACT_S = 60.0
TAIL_LINES = 15

RAY_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


class Interrupted(Exception):
    """The job must end now: a stop request or the deadline."""

    def __init__(self, state: JobState, reason: str) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason


class AttemptFailed(Exception):
    """This attempt failed; another may succeed. ``summary``: one line for the job's log."""

    def __init__(self, reason: str, summary: str | None = None) -> None:
        super().__init__(reason)
        self.summary = summary or reason.splitlines()[0]


class Fatal(Exception):
    """The job cannot run at all (e.g. its existing cluster is gone); no retry."""


class LogSink:
    """The job's log in the store, written in batches (one S3 object per flush, at most
    ``LOG_PART_BYTES``). What the store has not taken yet (it may fail for a while) is held in
    memory up to ``LOG_MEMORY_BYTES`` and in a temporary file beyond that: a job printing
    gigabytes while S3 is down does not fill the supervisor's memory."""

    def __init__(self, store: JobStore, owner: str, job_id: str, spool_dir: Path | None = None) -> None:
        self.store, self.owner, self.job_id = store, owner, job_id
        self.spool_dir = spool_dir
        self._buffer = bytearray()  # the oldest bytes not stored yet
        self._spool: BinaryIO | None = None  # the newer ones, once the buffer is full
        self._spool_read = 0  # where the spool's bytes not stored yet start
        self._spool_end = 0
        self._last_flush = time.monotonic()
        self._retry_at = 0.0

    @property
    def pending(self) -> int:
        """Bytes written here that the store does not have yet."""
        return len(self._buffer) + self._spool_end - self._spool_read

    def write(self, data: str | bytes) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", errors="replace")
        if not data:
            return
        if self._spool is None and len(self._buffer) + len(data) <= LOG_MEMORY_BYTES:
            self._buffer += data
        else:
            if self._spool is None:
                self._spool = self._open_spool()
            self._spool.seek(self._spool_end)
            self._spool.write(data)
            self._spool_end += len(data)
        self.tick()

    def _open_spool(self) -> BinaryIO:
        if self.spool_dir is not None:
            with contextlib.suppress(OSError):
                self.spool_dir.mkdir(parents=True, exist_ok=True)
                return tempfile.TemporaryFile(dir=self.spool_dir, prefix="log-pending-")
        return tempfile.TemporaryFile(prefix="eksray-log-pending-")

    def tick(self) -> None:
        """Flush if enough was written or enough time passed since the last flush (and, after the
        store failed, not before ``LOG_RETRY_S``)."""
        now = time.monotonic()
        if (
            self.pending
            and now >= self._retry_at
            and (self.pending >= LOG_FLUSH_BYTES or now - self._last_flush >= LOG_FLUSH_S)
        ):
            self.flush()

    def _piece(self) -> bytes:
        """The oldest bytes not stored yet, at most ``LOG_PART_BYTES``."""
        if self._buffer:
            return bytes(self._buffer[:LOG_PART_BYTES])
        assert self._spool is not None
        self._spool.seek(self._spool_read)
        return self._spool.read(min(LOG_PART_BYTES, self._spool_end - self._spool_read))

    def _stored(self, size: int) -> None:
        if self._buffer:
            del self._buffer[:size]
            return
        self._spool_read += size
        if self._spool is not None and self._spool_read >= self._spool_end:
            self._spool.close()
            self._spool, self._spool_read, self._spool_end = None, 0, 0

    def flush(self) -> bool:
        """Write what is pending, a part at a time; keep the rest for the next try if the store fails."""
        self._last_flush = time.monotonic()
        while self.pending:
            piece = self._piece()
            try:
                self.store.append_log(self.owner, self.job_id, piece)
            except EKSRayError as e:
                print(f"eksray: could not save the log: {e}", file=sys.stderr, flush=True)
                self._retry_at = time.monotonic() + LOG_RETRY_S
                return False
            self._stored(len(piece))
        return True

    def drain_to(self, store: JobStore) -> None:
        """Write what is pending to another store (this machine's, when S3 failed), a part at a time."""
        while self.pending:
            piece = self._piece()
            store.append_log(self.owner, self.job_id, piece)
            self._stored(len(piece))

    def take(self) -> bytes:
        """Everything pending, at once, and forget it (small logs; :meth:`drain_to` writes in parts)."""
        parts = []
        while self.pending:
            parts.append(self._piece())
            self._stored(len(parts[-1]))
        return b"".join(parts)


class RayLog:
    """How much of one attempt's Ray job log is in the sink, and its last bytes (for a failure's
    reason): the log itself is never held."""

    def __init__(self, sink: LogSink) -> None:
        self.sink = sink
        self.copied = 0
        self.last = bytearray()

    def write(self, data: bytes) -> None:
        self.sink.write(data)
        self.copied += len(data)
        self.last += data
        del self.last[: max(0, len(self.last) - TAIL_BYTES)]

    def tail(self, lines: int) -> str:
        text = bytes(self.last).decode("utf-8", errors="replace")
        return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def open_ray_log(client: Any, submission_id: str, timeout: float = RAY_LOG_TIMEOUT_S) -> Any:
    """Ray's answer to ``GET /api/jobs/{submission_id}/logs`` (``{"logs": ...}``), not read yet:
    read it in pieces (:func:`.ray_log.copy_log`). Sent like the client's own requests (its
    address, headers, cookies and TLS settings); ``JobSubmissionClient.get_job_logs`` would read
    the whole log into memory."""
    address = str(client._address).rstrip("/")
    headers = {"Accept": "application/json", **(getattr(client, "_headers", None) or {})}
    cookies = getattr(client, "_cookies", None) or {}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    context = getattr(client, "_ssl_context", None)
    if context is False or getattr(client, "_verify", True) is False:
        context = ssl._create_unverified_context()  # the client was told not to verify
    elif not isinstance(context, ssl.SSLContext):
        context = None
    url = f"{address}/api/jobs/{urllib.parse.quote(submission_id, safe='')}/logs"
    request = urllib.request.Request(url, headers=headers)
    if not url.startswith("https:"):
        context = None
    return urllib.request.urlopen(request, timeout=timeout, context=context)


class Supervisor:
    def __init__(
        self,
        service: ClusterService,
        stores: JobStores,
        store: JobStore,
        record: dict[str, Any],
        run_dir: Path,
    ) -> None:
        self.service = service
        self.stores = stores
        self.store = store
        self.record = record
        self.run_dir = run_dir
        self.spec: dict[str, Any] = record["spec"]
        self.owner: str = record["owner"]
        self.job_id: str = record["id"]
        self.log = LogSink(store, self.owner, self.job_id, spool_dir=run_dir)
        #: How the Ray job's log is opened (a test's fake dashboard replaces it).
        self.open_ray_log = open_ray_log
        self.stop_event = threading.Event()
        deadline = self.spec.get("activeDeadlineSeconds")
        self.deadline = record["createdAt"] + deadline if deadline else None
        self.cluster_name: str = record["clusterName"]
        self.created = bool(record.get("clusterCreated"))
        self.results_dir: Path | None = None
        self.record["supervisor"] = {"host": socket.gethostname(), "pid": os.getpid()}
        self._saved_at = 0.0
        # A job is stopped from a machine that cannot signal this process by recording it
        # ``stopped`` in the store; every save while the job runs (and the heartbeat: the record
        # rewritten every HEARTBEAT_S) is written only if no such end is stored, in one step
        # (``write_unless_ended``), else it keeps that end here and check() then ends the job.
        self.ended: dict[str, Any] | None = None

    # --- small helpers ----------------------------------------------------------------------

    def say(self, message: str) -> None:
        """A line of our own in the job's log (Ray's lines have no prefix)."""
        self.log.write(f"[eksray] {message}\n")

    def save(self, state: JobState | None = None, reason: str | None = None, **changes: Any) -> None:
        """Write the record; while the job runs, never over an end another machine recorded (a stop)."""
        running = not JobState(self.record["state"]).terminal and not (state and state.terminal)
        if running and self.ended is not None:
            return  # check() ends the job; the final save writes the stop it found
        if state is not None:
            transition(self.record, state, reason)
        self.record.update(changes)
        self.record["updatedAt"] = time.time()
        self._saved_at = time.monotonic()
        try:
            if running:
                self.ended = self.store.write_unless_ended(self.record)
            else:
                self.store.write(self.record)
        except EKSRayError as e:
            if self.store is self.stores.local:
                raise
            # The job must not be lost: keep its record on this machine, saying why.
            print(f"eksray: could not save the record: {e}", file=sys.stderr, flush=True)
            if JobState(self.record["state"]).terminal:
                note = f"(could not be saved to {self.record.get('location')}: {e.message})"
                if note not in (self.record.get("reason") or ""):
                    self.record["reason"] = ((self.record.get("reason") or "") + " " + note).strip()
            self.stores.local.write(self.record)

    def stop_requested(self) -> bool:
        return self.stop_event.is_set() or (self.run_dir / "stop").exists()

    def check(self, heartbeat_now: bool = False) -> None:
        """Raise Interrupted when the job must end now; keep the record's heartbeat."""
        if self.stop_requested():
            raise Interrupted(JobState.STOPPED, "stopped on request")
        if heartbeat_now or time.monotonic() - self._saved_at >= HEARTBEAT_S:
            self.save()  # the heartbeat; it also notices an end recorded elsewhere
        if self.ended is not None:
            raise Interrupted(JobState(self.ended["state"]), self.ended.get("reason") or "stopped on request")
        if self.deadline is not None and time.time() >= self.deadline:
            raise Interrupted(
                JobState.FAILED,
                f"deadline exceeded: the job ran longer than activeDeadlineSeconds "
                f"({self.spec['activeDeadlineSeconds']} s)",
            )

    def ended_elsewhere(self) -> dict[str, Any] | None:
        """The stored record if another machine recorded the job's end (a stop), else None."""
        try:
            current = self.store.read(self.owner, self.job_id)
        except EKSRayError:
            return None
        return current if current is not None and JobState(current["state"]).terminal else None

    def copy_ray_log(self, client: Any, submission_id: str, ray_log: RayLog) -> None:
        """Append what the Ray job printed since the last copy: Ray answers the whole log each
        time, so it is streamed and what was copied already is skipped, never held."""
        with contextlib.closing(self.open_ray_log(client, submission_id)) as response:
            copy_log(response, ray_log.copied, ray_log.write)

    def final_log(self, client: Any, submission_id: str, ray_log: RayLog) -> None:
        """Copy the rest of the Ray job's log once it has ended (retried: it is the last chance)."""
        for attempt in range(3):
            try:
                self.copy_ray_log(client, submission_id, ray_log)
                return
            except Exception as e:
                if attempt == 2:
                    self.say(f"could not read the end of the log: {e}")
                    return
                self.stop_event.wait(1.0)

    def pause(self, seconds: float) -> None:
        self.log.tick()
        self.stop_event.wait(seconds)

    # --- the cluster ------------------------------------------------------------------------

    def ensure_cluster(self) -> None:
        """Have a ready cluster for the next attempt (creating it if the job owns it)."""
        name = self.cluster_name
        if self.created:
            try:
                cluster = self.service.get(name)
                if cluster.phase in (Phase.FAILED, Phase.SUSPENDING, Phase.SUSPENDED):
                    self.say(f"cluster {name} is {cluster.phase.value}; deleting it to start a new one")
                    self.service.delete(name)
                    cluster = None
            except NotFoundError:
                cluster = None
            if cluster is None:
                self.save(JobState.STARTING)
                self.say(f"creating cluster {name}")
                try:
                    cluster_spec = dict(self.spec["cluster"])
                    # The label ties the cluster to its job (the panel and kubectl can show it).
                    labels = {**(cluster_spec.get("labels") or {}), JOB_LABEL: self.job_id}
                    self.service.create({**cluster_spec, "name": name, "labels": labels})
                except EKSRayError as e:
                    raise Fatal(f"could not create the cluster {name}: {e.message}") from e
        else:
            try:
                cluster = self.service.get(name)
            except NotFoundError as e:
                raise Fatal(f"the cluster {name} does not exist (any more)") from e
            if cluster.phase not in (Phase.READY, Phase.SCALING):
                self.save(JobState.STARTING)
        started = time.monotonic()
        while True:
            self.check()
            try:
                cluster = self.service.get(name)
            except NotFoundError as e:
                message = f"the cluster {name} was deleted while the job waited for it"
                raise (AttemptFailed(message) if self.created else Fatal(message)) from e
            # Ready, and its head registered with Ray: a dashboard can answer before the head's
            # raylet has (and `ray start` gives up on a raylet that takes more than 30 s).
            head_alive = any(n.kind == "head" and n.state == "alive" for n in cluster.nodes)
            if cluster.phase in (Phase.READY, Phase.SCALING) and head_alive:
                return
            if cluster.phase in (Phase.FAILED, Phase.SUSPENDING, Phase.SUSPENDED, Phase.STOPPING):
                message = (
                    f"the cluster {name} is {cluster.phase.value}: {cluster.reason or 'no reason given'}"
                )
                if self.created:
                    raise AttemptFailed(message)
                raise Fatal(message)
            if cluster.reason and self.record.get("state") == JobState.STARTING.value:
                # What the cluster waits for is what the job waits for (panel, rj list/status, magic).
                self.save(JobState.STARTING, f"waiting for cluster {name}: {cluster.reason}")
            if time.monotonic() - started > CLUSTER_START_TIMEOUT_S:
                raise AttemptFailed(
                    f"the cluster {name} was not ready after {CLUSTER_START_TIMEOUT_S:.0f} s "
                    f"(still {cluster.phase.value})"
                )
            self.pause(POLL_S)

    def delete_cluster(self) -> None:
        if not self.created or self.record.get("clusterDeletedAt"):
            return
        ttl = int(self.spec.get("ttlSecondsAfterFinished") or 0)
        until = time.monotonic() + ttl
        while time.monotonic() < until and not self.stop_requested():
            self.stop_event.wait(min(1.0, until - time.monotonic()))
        meter = None
        with contextlib.suppress(NotFoundError):
            meter = self.service.delete(self.cluster_name)
        cost = meter.cost() if meter is not None else None
        self.save(clusterDeletedAt=time.time(), **({"cost": cost} if cost else {}))

    # --- one attempt ------------------------------------------------------------------------

    def runtime_env(self, attempt: int) -> dict[str, Any]:
        runtime = self.spec.get("runtimeEnv") or {}
        env = dict(runtime.get("envVars") or {})
        env.update(
            {
                JOB_ID_ENV: self.job_id,
                ATTEMPT_ENV: str(attempt),
                RESULTS_DIR_ENV: str(self.results_dir),
            }
        )
        out: dict[str, Any] = {"env_vars": env}
        if self.spec.get("workingDir"):
            out["working_dir"] = self.spec["workingDir"]
        if runtime.get("pip"):
            out["pip"] = list(runtime["pip"])
        return out

    def entrypoint(self) -> str:
        patterns = self.spec.get("results") or []
        if not patterns:
            return self.spec["entrypoint"]
        return " ".join(
            [
                shlex.quote(sys.executable),
                "-m",
                "eksray_jupyter.jobs.driver",
                "--results",
                shlex.quote(json.dumps(patterns)),
                "--",
                shlex.quote(self.spec["entrypoint"]),
            ]
        )

    def submit(self, client: Any, submission_id: str, attempt: int) -> None:
        started = time.monotonic()
        while True:
            self.check()
            try:
                client.submit_job(
                    entrypoint=self.entrypoint(),
                    submission_id=submission_id,
                    runtime_env=self.runtime_env(attempt),
                    metadata={"eksray.job": self.job_id, "eksray.owner": self.owner},
                )
                return
            except Exception as e:
                message = str(e)
                if "already exists" in message:
                    return  # an earlier try got through before its answer was lost
                transient = isinstance(e, ConnectionError) or any(
                    s in message for s in ("status code 5", "Connection", "agent", "timed out")
                )
                if not transient or time.monotonic() - started > SUBMIT_RETRY_S:
                    raise AttemptFailed(f"Ray refused the job: {message[:2000]}") from e
                self.pause(2.0)

    def run_attempt(self, attempt: int, total: int) -> None:
        """One submission; returns on success, raises AttemptFailed/Interrupted/Fatal otherwise."""
        from ray.job_submission import JobSubmissionClient  # lazy: only the supervisor needs ray

        self.ensure_cluster()
        try:
            address = self.service.dashboard_address(self.cluster_name)
            # Ray's token for the cluster (secret: never logged or recorded).
            headers = self.service.dashboard_headers(self.cluster_name)
        except EKSRayError as e:
            raise AttemptFailed(
                f"the Ray dashboard of {self.cluster_name} is not available: {e.message}"
            ) from e
        self.results_dir = self.run_dir / f"attempt-{attempt}" / "results"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        submission_id = f"{self.job_id}-{attempt}"
        entry: dict[str, Any] = {
            "attempt": attempt,
            "rayJobId": submission_id,
            "status": "SUBMITTING",
            "exitCode": None,
            "message": None,
            "startedAt": time.time(),
            "finishedAt": None,
        }
        self.record.setdefault("attempts", []).append(entry)
        self.say(
            f"attempt {attempt} of {total}: submitting to cluster {self.cluster_name} as {submission_id}"
        )
        try:
            client = JobSubmissionClient(address, headers=headers)
        except Exception as e:
            raise AttemptFailed(f"cannot reach the Ray dashboard of {self.cluster_name}: {e}") from e
        self.submit(client, submission_id, attempt)
        entry["status"] = "PENDING"
        self.save(JobState.RUNNING)
        ray_log = RayLog(self.log)
        last_contact = time.monotonic()
        interrupted: Interrupted | None = None
        stop_by = 0.0
        status = "PENDING"
        info: Any = None
        logs_read_at = 0.0
        while True:
            try:
                info = client.get_job_info(submission_id)
                status = str(getattr(info.status, "value", info.status))
                every = log_read_interval(ray_log.copied, POLL_S)
                if status in RAY_TERMINAL:
                    self.final_log(client, submission_id, ray_log)
                elif time.monotonic() - logs_read_at >= every:
                    self.copy_ray_log(client, submission_id, ray_log)
                    logs_read_at = time.monotonic()
                last_contact = time.monotonic()
            except Exception as e:
                if time.monotonic() - last_contact > LOST_CONTACT_S:
                    entry.update(status="UNKNOWN", message=str(e)[:2000], finishedAt=time.time())
                    raise AttemptFailed(f"lost contact with the Ray job on {self.cluster_name}: {e}") from e
            if entry["status"] != status:
                entry["status"] = status
                self.save()
            if status in RAY_TERMINAL:
                break
            if interrupted is None:
                try:
                    self.check()
                except Interrupted as e:
                    interrupted = e
                    self.say(f"stopping the Ray job ({e.reason})")
                    stop_by = time.monotonic() + STOP_WAIT_S
                    with contextlib.suppress(Exception):
                        client.stop_job(submission_id)
            elif time.monotonic() > stop_by:
                break
            self.pause(POLL_S)
        self.log.flush()
        exit_code = getattr(info, "driver_exit_code", None)
        message = getattr(info, "message", None)
        entry.update(
            status=status,
            exitCode=exit_code,
            message=str(message)[:2000] if message else None,
            finishedAt=time.time(),
        )
        if interrupted is not None:
            raise interrupted
        if status == "SUCCEEDED":
            return
        if exit_code is not None:
            tail = ray_log.tail(TAIL_LINES)
            summary = f"the entrypoint exited with code {exit_code}"
            raise AttemptFailed(f"{summary}; the last lines of its log:\n{tail}", summary)
        raise AttemptFailed(f"the Ray job ended {status}: {entry['message'] or 'no message'}")

    # --- the whole job ----------------------------------------------------------------------

    def persist_results(self) -> None:
        if self.results_dir is None or not self.results_dir.is_dir():
            return
        results = []
        for path in sorted(p for p in self.results_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(self.results_dir).as_posix()
            self.store.put_result(self.owner, self.job_id, rel, path)
            results.append({"path": rel, "size": path.stat().st_size})
        if results:
            where = str(self.record.get("location") or "").rstrip("/")
            self.say(f"saved {len(results)} result file(s) to {where}/results/")
        self.record["results"] = results
        # The store has them now; the staging copies of every attempt can go.
        for staged in self.run_dir.glob("attempt-*"):
            shutil.rmtree(staged, ignore_errors=True)

    def run(self) -> int:
        total = int(self.spec.get("backoffLimit") or 0) + 1
        state, reason = JobState.FAILED, "no attempt ran"
        summary: str | None = None  # the reason in one line, for the log
        try:
            for attempt in range(1, total + 1):
                try:
                    self.check(heartbeat_now=attempt > 1)
                    self.run_attempt(attempt, total)
                    state, reason = JobState.SUCCEEDED, None
                    break
                except AttemptFailed as e:
                    state, reason, summary = JobState.FAILED, str(e), e.summary
                    self.say(f"attempt {attempt} of {total} failed: {e.summary}")
                    self.save()
        except Interrupted as e:
            state, reason, summary = e.state, e.reason, None
        except Fatal as e:
            state, reason, summary = JobState.FAILED, str(e), None
        except Exception as e:
            traceback.print_exc()
            state, reason, summary = JobState.FAILED, f"eksray could not run the job: {e}", None
        try:
            self.persist_results()
        except Exception as e:
            traceback.print_exc()
            reason = ((reason or "") + f" (its result files could not be saved: {e})").strip()
        ended = self.ended or self.ended_elsewhere()
        if ended is not None:  # stopped from another machine: its record stands
            state, reason, summary = JobState(ended["state"]), ended.get("reason"), None
        if reason:
            summary = summary or reason.splitlines()[0]
        self.say(f"job {state.value}" + (f": {summary}" if reason else ""))
        if self.created:
            ttl = int(self.spec.get("ttlSecondsAfterFinished") or 0)
            self.say(f"deleting cluster {self.cluster_name}" + (f" in {ttl} s" if ttl else ""))
        if not self.log.flush() and self.store is not self.stores.local:
            # Keep the rest of the log with the local copy of the record.
            self.log.drain_to(self.stores.local)
        self.save(state, reason)
        try:
            self.delete_cluster()
        except Exception:
            traceback.print_exc()
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eksray_jupyter.jobs.supervisor")
    parser.add_argument("job_id")
    parser.add_argument("--store", required=True, help="the job's store location (JSON)")
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    service = ClusterService.from_environment()
    stores = JobStores.from_config(service.config)
    store = stores.open(json.loads(args.store))
    record = store.read(service.owner, args.job_id)
    if record is None:
        print(f"eksray: no job {args.job_id} in {store.location}", file=sys.stderr)
        return 1
    supervisor = Supervisor(service, stores, store, record, args.run_dir)

    def on_signal(_signum: int, _frame: object) -> None:
        supervisor.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"eksray: supervising job {args.job_id} (pid {os.getpid()})", flush=True)
    try:
        return supervisor.run()
    finally:
        service.backend.close()


if __name__ == "__main__":
    sys.exit(main())
