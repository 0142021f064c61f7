"""The KubeRay job runner: each job is a ``RayJob`` custom resource (:mod:`.rayjob`).

The KubeRay operator does the life cycle (creates the cluster from ``rayClusterSpec`` or
uses ``clusterSelector``, submits, enforces ``activeDeadlineSeconds``/``backoffLimit``,
deletes the cluster after ``ttlSecondsAfterFinished``). The runner creates the RayJob, and a
*follower* thread (one per job, started by the runner) mirrors its status into the job's
record and copies the Ray job's log (read through the backend's dashboard access path, streamed
and appended in pieces: never held whole) into the job's store; :meth:`KubeRayJobRunner.close` ends the runner's followers.

Logs are persisted before the cluster is gone: the RayJob's ``ttlSecondsAfterFinished`` is
the job's TTL plus :attr:`KubeRayJobRunner.log_grace_seconds`, so the operator keeps the
cluster that much longer; the follower reads the final log once the RayJob is terminal,
persists it, records the terminal state and only then deletes the cluster itself (after
the job's own TTL). If this process dies, any process that reads the job resumes
following it (:meth:`KubeRayJobRunner.is_active` adopts a RayJob that still exists) within
the grace window. Every Kubernetes call goes through the backend's
:class:`~.kubeapi.KubeApi`. See docs/jobs.md.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import http.client
import json
import os
import secrets
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from traitlets import Enum, Float, Int, Unicode

from ...core.errors import (
    BackendError,
    ConflictError,
    EKSRayError,
    FieldError,
    InvalidRequestError,
    NotFoundError,
    UpstreamTimeoutError,
)
from ...core.ray_auth import dashboard_headers
from ...jobs.models import Job, JobState, log_read_interval, transition
from ...jobs.ray_log import copy_log
from ...jobs.runner import JobRunner
from ...jobs.store import JobStore, JobStores, S3JobStore
from .names import parse_time
from .rayjob import (
    FOLLOWER_ANNOTATION,
    SUBMISSION_MODE,
    build_rayjob,
    lease_of,
    lease_value,
    map_status,
    record_attempt,
)

#: Where a RayJob's Ray job log is read, relative to the dashboard address.
LOGS_PATH = "api/jobs/{job_id}/logs"
MIB = 1024 * 1024
#: An upload of a working directory with no progress for this long was abandoned (its
#: process died): progress is recorded at least every few seconds while it runs.
PACKAGING_STALE_S = 120.0
#: The longest a follower waits between two tries after failures in a row.
FOLLOW_BACKOFF_MAX_S = 30.0
#: A presigned results upload is short-lived: whoever can read the RayJob can use it.
MAX_PRESIGNED_SECONDS = 12 * 3600


class _Follower:
    """The thread following one job, and what it was asked (stop the job, or let go of it)."""

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.wake = threading.Event()
        self.stop_requested = False
        self.released = False

    def alive(self) -> bool:
        return self.thread.is_alive()


class KubeRayJobRunner(JobRunner):
    """A RayJob per job, followed by a thread of the runner that submitted (or read) it."""

    name = "kuberay"

    poll_seconds = Float(1.0, help="How often the follower reads the RayJob and its log.").tag(config=True)
    log_grace_seconds = Int(
        300,
        help="Added to the job's ttlSecondsAfterFinished on the RayJob: how long the operator keeps a "
        "finished job's cluster for a follower to persist its log (the follower deletes it sooner).",
    ).tag(config=True)
    submission_mode = Unicode(SUBMISSION_MODE, help="The RayJob's submissionMode.").tag(config=True)
    results_upload = Enum(
        ["presigned", "pod-role"],
        "presigned",
        help="How a RayJob's head uploads result files to the S3 job store. 'presigned': a presigned "
        "POST in the RayJob (this job's prefix only, at most results_max_file_mb per file, valid for "
        "results_upload_seconds); anyone who can read the RayJob can use it until then. 'pod-role' "
        "(preferred on EKS): the RayJob names only the bucket and prefix, and the head uploads with "
        "its own IAM role (IRSA or EKS Pod Identity on the Ray pods' ServiceAccount, e.g. a profile's "
        "serviceAccountName); needs boto3 in the Ray image. See docs/jobs.md.",
    ).tag(config=True)
    results_upload_seconds = Int(
        3600,
        help="How long a presigned results upload stays valid, in seconds (for a job with "
        "activeDeadlineSeconds: the deadline plus 10 minutes, if that is shorter). At most 12 hours: "
        "results written later need results_upload = 'pod-role'.",
    ).tag(config=True)
    results_max_file_mb = Int(
        1024, help="The largest result file a head may upload, in MiB (S3 refuses larger ones)."
    ).tag(config=True)

    lease_seconds = Float(
        30.0, help="How long a process's claim to follow a RayJob lasts unless renewed (every half of it)."
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: This runner, as a follower lease holder: another runner, here or in another process,
        #: is another holder.
        self.holder = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self._lock = threading.Lock()
        # One follower per job.
        self._followers: dict[tuple[str, str], _Follower] = {}
        # Jobs whose working directory is being packaged and uploaded (off the request path).
        self._packagers: dict[tuple[str, str], threading.Thread] = {}
        # One look at a RayJob at a time per job (a reader's catch-up and the follower).
        self._step_locks: dict[tuple[str, str], threading.Lock] = {}
        self._next_log_read: dict[tuple[str, str], float] = {}
        self._taken_over: set[tuple[str, str]] = set()

    # --- the RayJob ------------------------------------------------------------------------------

    @property
    def backend(self) -> Any:
        return self.service.backend

    def rayjob(
        self,
        job: Job,
        working_dir: str | None = None,
        results_upload: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The RayJob custom resource for ``job`` (no API call); see :func:`.rayjob.build_rayjob`."""
        return build_rayjob(
            job,
            self.backend,
            submission_mode=self.submission_mode,
            log_grace_seconds=self.log_grace_seconds,
            lease=self._lease_value(),  # the submitter follows it first
            working_dir=working_dir,
            results_upload=results_upload,
        )

    def _lease_value(self, until: float | None = None) -> str:
        return lease_value(self.holder, time.time() + self.lease_seconds if until is None else until)

    def _write_lease(self, rj: dict[str, Any], until: float | None = None) -> bool:
        """Set this runner's lease on ``rj``, with the resourceVersion just read: of two processes
        writing it, one gets a 409. False if it could not be written."""
        body = copy.deepcopy(rj)
        body.pop("status", None)
        meta = body["metadata"]
        meta.setdefault("annotations", {})[FOLLOWER_ANNOTATION] = self._lease_value(until)
        try:
            self.backend.api.replace_rayjob_lease(meta["namespace"], meta["name"], body)
        except (ConflictError, NotFoundError):
            return False
        return True

    def _hold(self, rj: dict[str, Any]) -> bool:
        """Take or renew this runner's lease to follow ``rj``; False while another live holder has it."""
        holder, until = lease_of(rj)
        now = time.time()
        if holder not in (None, self.holder) and until > now:
            return False
        if holder == self.holder and until - now > self.lease_seconds / 2:
            return True
        return self._write_lease(rj)

    def _get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.backend.api.get_rayjob(namespace, name, not_found="gone")
        except NotFoundError:
            return None

    def _delete(self, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFoundError):
            self.backend.api.delete_rayjob(namespace, name, not_found="gone")

    # --- JobRunner ---------------------------------------------------------------------------------

    def check(self, spec: dict[str, Any], store: JobStore) -> None:
        """The head cannot read this machine's disk: a working directory and results need S3."""
        if not isinstance(store, S3JobStore):
            why = (
                "with the kuberay backend {what} through the job's S3 store, and this job's store is "
                'local: give the job "store": {{"type": "s3", "bucket": "..."}} (--s3-bucket BUCKET in '
                '`eksray rj submit` and `%eksray job submit`), or have c.EKSRay.job_store = "s3" set'
            )
            errors = []
            if spec.get("workingDir"):
                errors.append(FieldError("workingDir", why.format(what="the directory is uploaded")))
            if spec.get("results"):
                errors.append(FieldError("results", why.format(what="result files are collected")))
            if errors:
                raise InvalidRequestError("Invalid job spec", errors)
        if "clusterName" in spec and int(spec.get("backoffLimit") or 0) > 0:
            raise InvalidRequestError(
                "Invalid job spec",
                [
                    FieldError(
                        "backoffLimit",
                        "KubeRay retries a job only on a cluster it creates: drop backoffLimit, or give "
                        "`cluster` instead of clusterName",
                    )
                ],
            )
        if "cluster" in spec:  # the operator creates it, so the backend's own check would not run
            self.backend.check_cluster_quota(self.service.owner)

    def package(self, job: Job, store: S3JobStore) -> str:
        """Zip the working directory as Ray would for a local one, upload it; its ``s3://`` URI.

        The job's ``reason`` says how far it got (a pending job's panel and ``rj status`` show it).
        """
        # Ray's own packager: the same .gitignore and exclude rules as a local working_dir,
        # with the directory itself as the single top level Ray strips from a remote package.
        from ray._private.runtime_env.packaging import create_package

        source = Path(job.spec["workingDir"])
        self._progress(store, job, f"packaging the working directory {source}")
        with tempfile.TemporaryDirectory(prefix="eksray-package-") as tmp:
            target = Path(tmp) / "working_dir.zip"
            try:
                create_package(
                    str(source), target, include_gitignore=True, include_parent_dir=True, logger=self.log
                )
            except OSError as e:
                raise InvalidRequestError(
                    "Invalid job spec",
                    [FieldError("workingDir", f"cannot package {source}: {e}; make its files readable")],
                ) from e
            digest = hashlib.sha256(target.read_bytes()).hexdigest()[:16]
            total = target.stat().st_size
            sent = 0
            shown = 0.0

            def uploaded(chunk: int) -> None:
                nonlocal sent, shown
                sent += chunk
                if time.monotonic() - shown >= 1.0 or sent >= total:
                    shown = time.monotonic()
                    self._progress(
                        store,
                        job,
                        f"uploading the working directory: {sent / MIB:.1f} of {total / MIB:.1f} MiB",
                    )

            return store.put_package(job.owner, job.id, target, digest, progress=uploaded)

    @staticmethod
    def _progress(store: JobStore, job: Job, reason: str) -> None:
        """Say what a pending job is doing in its ``reason`` (not in its history: progress is noise)."""
        record = store.read(job.owner, job.id)
        if record is None or record.get("state") != JobState.PENDING.value:
            return
        record["reason"] = reason
        record["updatedAt"] = time.time()
        store.write(record)

    def _package_then_submit(self, job: Job, store: S3JobStore) -> None:
        try:
            working_dir = self.package(job, store)
            record = store.read(job.owner, job.id)
            if record is None or JobState(record["state"]).terminal:
                return  # stopped while its directory was uploading: nothing to submit
            self._submit(job, store, working_dir)
        except Exception as e:  # recorded on the job: nobody waits on this thread for an answer
            message = e.message if isinstance(e, EKSRayError) else str(e)
            if isinstance(e, InvalidRequestError) and e.errors:
                message = "; ".join(f"{err.path}: {err.message}" for err in e.errors)
            record = store.read(job.owner, job.id)
            if record is not None and not JobState(record["state"]).terminal:
                store.write(transition(record, JobState.FAILED, f"the job could not be started: {message}"))
            self.log.warning("eksray: job %s could not be started: %s", job.id, message)
        finally:
            with self._lock:
                self._packagers.pop((job.owner, job.id), None)

    def _results_upload(self, job: Job, store: S3JobStore) -> dict[str, Any]:
        """What the head's results driver uploads with: a narrow, short-lived presigned POST, or
        (pod-role) only where to, for the head's own IAM role."""
        max_bytes = int(self.results_max_file_mb) * MIB
        if self.results_upload == "pod-role":
            return store.results_location(job.owner, job.id, max_bytes)
        seconds = min(int(self.results_upload_seconds), MAX_PRESIGNED_SECONDS)
        deadline = job.spec.get("activeDeadlineSeconds")
        if deadline:
            seconds = min(seconds, int(deadline) + 600)
        return store.results_upload(job.owner, job.id, seconds, max_bytes)

    def start(self, job: Job) -> None:
        store = self._store(job)
        if isinstance(store, S3JobStore) and job.spec.get("workingDir"):
            # Packaging and uploading a directory can take minutes: never on the request path.
            # The job stays pending with its progress in ``reason``; a failure is recorded on it.
            thread = threading.Thread(
                target=self._package_then_submit,
                args=(job, store),
                name=f"eksray-package-{job.id}",
                daemon=True,
            )
            # Who uploads: a reader elsewhere can tell an upload whose process died (no progress).
            record = store.read(job.owner, job.id) or {}
            record["kuberay"] = {"packagingBy": self.holder}
            store.write(record)
            with self._lock:
                self._packagers[(job.owner, job.id)] = thread
            thread.start()
            return
        self._submit(job, store, None)

    def _submit(self, job: Job, store: JobStore, working_dir: str | None) -> None:
        """Create the job's RayJob and follow it."""
        results_upload = self._results_upload(job, store) if isinstance(store, S3JobStore) else None
        body = self.rayjob(job, working_dir=working_dir, results_upload=results_upload)
        namespace = body["metadata"]["namespace"]
        backend = self.backend
        if (
            namespace == backend.namespace_for(job.owner)
            and not backend.namespace
            and backend.create_namespaces
        ):
            backend._ensure_namespace(namespace, job.owner)  # as create_cluster does
        # Recorded before the RayJob exists: whatever happens next, a stop can find it.
        record = store.read(job.owner, job.id) or {}
        record["kuberay"] = {"namespace": namespace, "rayJob": job.id, "logBytes": 0}
        if working_dir:
            record["kuberay"]["workingDir"] = working_dir
        store.write(record)
        try:
            backend.api.create_rayjob(namespace, body)
        except UpstreamTimeoutError:
            # No answer: it may exist. The job is recorded failed, so it must not run on.
            with contextlib.suppress(EKSRayError):
                self._delete(namespace, job.id)
            raise
        self._follow(job)

    def stop(self, job: Job) -> bool:
        follower = self._followers.get((job.owner, job.id))
        if job.terminal:
            self._delete_cluster(self._store(job), job.owner, job.id)
            return True
        if follower is not None and follower.alive():
            follower.stop_requested = True
            follower.wake.set()
            return True
        namespace = self._namespace(job)
        if namespace:
            self._delete(namespace, job.id)  # the finalizer stops the Ray job; the cluster goes with it
        return False

    def is_active(self, job: Job) -> bool | None:
        packager = self._packagers.get((job.owner, job.id))
        if packager is not None and packager.is_alive():
            return True
        follower = self._followers.get((job.owner, job.id))
        if follower is not None and follower.alive():
            return True
        record = self._store(job).read(job.owner, job.id) or {}
        namespace = (record.get("kuberay") or {}).get("namespace")
        if namespace is None:
            return False if self._upload_abandoned(record) else None
        try:
            rj = self._get(namespace, job.id)
            if rj is None:
                return False
            if not self._hold(rj):
                return True  # another process follows it and keeps the record current
            # Started by a process that is gone: catch the record up now, so that this read
            # (e.g. a short-lived CLI) shows the RayJob's state, then follow it from here.
            self._locked_step(self._store(job), job, False)
        except EKSRayError:
            return None
        self._follow(job)
        with self._lock:
            self._taken_over.add((job.owner, job.id))
        return True

    def took_over(self, job: Job) -> bool:
        with self._lock:
            key = (job.owner, job.id)
            taken = key in self._taken_over
            self._taken_over.discard(key)
        return taken

    def _upload_abandoned(self, record: dict[str, Any]) -> bool:
        """Whether the job's working directory was being uploaded by a process that is gone:
        not this runner's, and no progress for PACKAGING_STALE_S."""
        uploader = (record.get("kuberay") or {}).get("packagingBy")
        if not uploader or record.get("state") != JobState.PENDING.value:
            return False
        mine = uploader == self.holder and (record["owner"], record["id"]) in self._packagers
        return not mine and time.time() - float(record.get("updatedAt") or 0) > PACKAGING_STALE_S

    def may_have_left_a_cluster(self, job: Job) -> bool:
        """Not if no RayJob was ever created for it (the operator made no cluster then)."""
        record = self._store(job).read(job.owner, job.id) or {}
        return bool((record.get("kuberay") or {}).get("namespace"))

    def failure_hint(self, job: Job) -> str:
        record = self._store(job).read(job.owner, job.id) or {}
        if self._upload_abandoned(record):
            return (
                "the upload of its working directory was interrupted (the process that uploaded it "
                "stopped); submit the job again"
            )
        return f"its RayJob {job.id} was deleted before the job ended"

    def close(self, timeout: float = 5.0) -> None:
        """End this runner's followers (the RayJobs continue; a later read resumes them).

        Followers get ``timeout`` s all together, not each; those still running then are named
        in the log and left to end by themselves (released, they stop after their current step).
        Uploads of working directories in progress are waited for, however long they take: a
        CLI that submitted a job must not exit and leave it pending forever (the server's
        shutdown bounds its whole wait itself).
        """
        with self._lock:
            packagers = list(self._packagers.values())
        for packager in packagers:
            packager.join()
        with self._lock:
            followers = list(self._followers.values())
            self._followers.clear()
        for follower in followers:
            follower.released = True
            follower.wake.set()
        deadline = time.monotonic() + timeout
        for follower in followers:
            follower.thread.join(max(0.0, deadline - time.monotonic()))
        if left := [f.thread.name for f in followers if f.thread.is_alive()]:
            self.log.warning(
                "eksray: %d RayJob follower(s) did not end within %g s, left to end by themselves: %s",
                len(left),
                timeout,
                ", ".join(left),
            )

    # --- following ---------------------------------------------------------------------------------

    def _store(self, job: Job) -> JobStore:
        if self.stores is None:  # a runner made on its own, not by a JobService
            self.stores = JobStores.from_config(self.service.config)
        return self.stores.open(job.store or {"type": "local"})

    def _namespace(self, job: Job) -> str | None:
        record = self._store(job).read(job.owner, job.id) or {}
        return (record.get("kuberay") or {}).get("namespace")

    def _follow(self, job: Job) -> None:
        key = (job.owner, job.id)
        with self._lock:
            current = self._followers.get(key)
            if current is not None and current.alive():
                return
            follower = _Follower(threading.Thread(name=f"eksray-rayjob-{job.id}", daemon=True))
            follower.thread.run = lambda: self._run(job, follower)  # type: ignore[method-assign]
            self._followers[key] = follower
        follower.thread.start()

    def _run(self, job: Job, follower: _Follower) -> None:
        """Follow until the job is done or this runner lets go of it (``released``).

        A failed step (an API timeout, a throttled store) is tried again, later each time, up
        to FOLLOW_BACKOFF_MAX_S apart: giving up would lose the end of the log once the
        operator deletes the cluster, and keep the lease from others until it expires.
        """
        failures = 0
        while not follower.released:
            follower.wake.clear()
            try:
                if self._locked_step(self._store(job), job, follower.stop_requested):
                    return
                failures = 0
            except Exception as e:  # never die silently: the reason goes to the server log
                failures += 1
                self.log.warning(
                    "eksray: following RayJob %s: %s (failed %d time(s) in a row; trying again)",
                    job.id,
                    e,
                    failures,
                )
            delay = self.poll_seconds * 2 ** min(failures, 10) if failures else self.poll_seconds
            follower.wake.wait(min(delay, max(self.poll_seconds, FOLLOW_BACKOFF_MAX_S)))
        try:
            self._release(job)  # e.g. a CLI exiting: the server may take over at once
        except Exception as e:
            self.log.warning("eksray: could not release the lease on RayJob %s: %s", job.id, e)

    def _release(self, job: Job) -> None:
        """Give up this runner's follower lease on the job's RayJob, if it holds it."""
        namespace = self._namespace(job)
        rj = self._get(namespace, job.id) if namespace else None
        if rj is not None and lease_of(rj)[0] == self.holder:
            with contextlib.suppress(EKSRayError):
                self._write_lease(rj, until=0)

    def _locked_step(self, store: JobStore, job: Job, stop_requested: bool) -> bool:
        with self._lock:
            lock = self._step_locks.setdefault((job.owner, job.id), threading.Lock())
        with lock:
            return self._step(store, job, stop_requested)

    def _step(self, store: JobStore, job: Job, stop_requested: bool) -> bool:
        """One look at the RayJob; True when the follower is done."""
        record = store.read(job.owner, job.id)
        if record is None:
            return True
        before = json.dumps(record, sort_keys=True)
        info = record.setdefault("kuberay", {})
        namespace = info["namespace"]
        if JobState(record["state"]).terminal:
            return self._after_end(store, record)
        rj = self._get(namespace, job.id)
        if rj is None:  # (if stopped by another process, which deleted the RayJob, that end stands)
            transition(record, JobState.STOPPED if stop_requested else JobState.FAILED, (
                "stopped on request" if stop_requested else self.failure_hint(job)
            ))  # fmt: skip
            self._save(store, record)
            return True
        if not stop_requested and not self._hold(rj):
            return True  # another process follows it now
        status = rj.get("status") or {}
        if status.get("rayClusterName") and record.get("clusterCreated"):
            record["clusterName"] = cluster = status["rayClusterName"]
            # The operator made this cluster (one per attempt): it needs its NetworkPolicy too.
            if info.get("networkPolicyFor") != cluster and self.backend.protect_cluster(namespace, cluster):
                info["networkPolicyFor"] = cluster
        record_attempt(record, status)
        self._copy_log(store, record, status)
        if stop_requested:
            transition(record, JobState.STOPPED, "stopped on request")
            store.write(record)
            self._delete(namespace, job.id)  # stops the Ray job; its cluster goes with it
            if record.get("clusterCreated"):
                record["clusterDeletedAt"] = time.time()
                store.write(record)
            return True
        state, reason = map_status(status)
        if state == JobState.STARTING and reason is None and status.get("rayClusterName"):
            waits = self.backend.cluster_waiting_reason(namespace, status["rayClusterName"], job.owner)
            if waits:
                reason = f"waiting for cluster {status['rayClusterName']}: {waits}"
        if state.terminal:
            # The final log is persisted before the end is recorded and before the cluster goes.
            self._copy_log(store, record, status, final=True)
            self._record_results(store, record)
            transition(record, state, reason)
            ended = parse_time(status.get("endTime"))
            if ended is not None and ended <= record["finishedAt"]:
                # The operator's time, not when we noticed (a reader may catch up much later).
                record["finishedAt"] = ended
                record["history"][-1]["time"] = ended
            return self._after_end(store, self._save(store, record) or record)
        if state != JobState(record["state"]) or reason != record.get("reason"):
            transition(record, state, reason)
        if json.dumps(record, sort_keys=True) != before:  # one write per change, not per poll (S3)
            stopped = self._save(store, record)
            if stopped is not None:
                return self._after_end(store, stopped)
        return False

    @staticmethod
    def _save(store: JobStore, record: dict[str, Any]) -> dict[str, Any] | None:
        """Write this step's record unless another process (without the lease) recorded an end
        since the step read it: that end stands, with what this step copied (how much of the
        log, so none is copied twice; attempts, cluster, results), and is returned."""
        ended = store.write_unless_ended(record)
        if ended is None:
            return None
        ended.setdefault("kuberay", {})["logBytes"] = record["kuberay"].get("logBytes", 0)
        for name in ("attempts", "clusterName", "results"):
            if record.get(name):
                ended[name] = record[name]
        store.write(ended)
        return ended

    def _copy_log(
        self, store: JobStore, record: dict[str, Any], status: dict[str, Any], final: bool = False
    ) -> None:
        ray_id, cluster = status.get("jobId"), status.get("rayClusterName")
        if not ray_id or not cluster:
            return
        owner = record["owner"]
        key = (owner, record["id"])
        if not final and time.monotonic() < self._next_log_read.get(key, 0.0):
            return
        size = int(record["kuberay"].get("logBytes") or 0)
        self._next_log_read[key] = time.monotonic() + log_read_interval(size, 0.0)

        def append(data: bytes) -> None:  # a piece at a time, counted as it is stored
            store.append_log(owner, record["id"], data)
            record["kuberay"]["logBytes"] = int(record["kuberay"].get("logBytes") or 0) + len(data)

        tries = 3 if final else 1
        for i in range(tries):
            try:
                # Ray answers the whole log each time: streamed, what was copied skipped, never held.
                with contextlib.closing(self._open_log(owner, cluster, ray_id)) as response:
                    copy_log(response, int(record["kuberay"].get("logBytes") or 0), append)
                return
            except (EKSRayError, OSError, ValueError, http.client.HTTPException) as e:  # (LogFormatError)
                if i == tries - 1:
                    if final:
                        store.append_log(
                            owner, record["id"], f"[eksray] could not read the final log: {e}\n".encode()
                        )
                    return
                time.sleep(self.poll_seconds)

    def _record_results(self, store: JobStore, record: dict[str, Any]) -> None:
        """List the result files the head uploaded (S3 stores only)."""
        if not isinstance(store, S3JobStore):
            return
        try:
            record["results"] = store.list_results(record["owner"], record["id"])
        except EKSRayError as e:
            store.append_log(
                record["owner"], record["id"], f"[eksray] could not list the results: {e}\n".encode()
            )
            return
        if record["results"]:
            where = store.describe(record["owner"], record["id"])
            store.append_log(
                record["owner"],
                record["id"],
                f"[eksray] saved {len(record['results'])} result file(s) to {where}results/\n".encode(),
            )

    def _open_log(self, owner: str, cluster: str, ray_id: str) -> Any:
        """Ray's answer with the Ray job's whole log (``{"logs": ...}``), not read yet (read it in
        pieces: :func:`~eksray_jupyter.jobs.ray_log.copy_log`), through the backend's dashboard
        access path (service or API proxy), presenting the cluster's Ray token if it demands one."""
        backend = self.backend
        base = backend.dashboard_address(owner, cluster)  # NotReadyError until the head is ready
        headers = {
            **backend.dashboard_request_headers(owner, cluster),
            **dashboard_headers(backend.ray_auth_token(owner, cluster)),
        }
        ssl_context = backend.dashboard_request_options(owner, cluster).get("ssl_options")
        url = f"{base.rstrip('/')}/{LOGS_PATH.format(job_id=ray_id)}"
        request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
        try:
            return urllib.request.urlopen(request, timeout=backend.request_timeout, context=ssl_context)
        except (urllib.error.URLError, OSError) as e:
            raise BackendError(f"cannot read the log of Ray job {ray_id}: {e}") from e

    def _after_end(self, store: JobStore, record: dict[str, Any]) -> bool:
        """Delete the created cluster once the job's own TTL has passed; True when nothing is left to do."""
        if not record.get("clusterCreated") or record.get("clusterDeletedAt"):
            return True
        ttl = float(record["spec"].get("ttlSecondsAfterFinished") or 0)
        if time.time() < (record.get("finishedAt") or 0) + ttl:
            return False
        self._delete_cluster(store, record["owner"], record["id"])
        return True

    def _delete_cluster(self, store: JobStore, owner: str, job_id: str) -> None:
        record = store.read(owner, job_id)
        if record is None or not record.get("clusterCreated") or record.get("clusterDeletedAt"):
            return
        name = record.get("clusterName")
        namespace = (record.get("kuberay") or {}).get("namespace")
        if name and name != job_id:
            try:
                self.backend.delete_cluster(owner, name)
            except NotFoundError:
                pass
            except EKSRayError as e:
                self.log.warning("eksray: could not delete cluster %s of job %s: %s", name, job_id, e)
                return  # the operator deletes it after its ttlSecondsAfterFinished
        elif namespace:
            # No cluster was ever seen (e.g. its create got no answer): the RayJob may still
            # exist, and what it made goes with it.
            try:
                self._delete(namespace, job_id)
            except EKSRayError as e:
                self.log.warning("eksray: could not delete RayJob %s: %s", job_id, e)
                return
        record["clusterDeletedAt"] = time.time()
        store.write(record)
