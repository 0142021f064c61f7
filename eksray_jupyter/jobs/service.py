"""The job operations every face offers: submit, list, get, read logs (by pages), stop.

Each face builds one on its :class:`~eksray_jupyter.core.service.ClusterService` (through
:class:`eksray_jupyter.services.Services`): the REST handlers (``server/jobs.py``), the
``eksray rj`` CLI and the ``%eksray job`` magics. Methods block (stores may be S3); the
server calls them on its thread pool.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from traitlets.utils.importstring import import_item

from ..core.config import JOB_RUNNERS
from ..core.errors import (
    BackendError,
    EKSRayError,
    FieldError,
    InvalidRequestError,
    NotFoundError,
)
from .models import Job, JobState, new_record, transition
from .runner import JobRunner
from .spec import new_job_id, resolve_job_spec
from .store import LOG_PAGE_BYTES, JobStore, JobStores, LogPage, ResultFile, check_id, read_page

if TYPE_CHECKING:
    from ..core.service import ClusterService


@dataclass(frozen=True)
class LogChunk:
    """A page of a job's log: bytes ``[offset, next_offset)``, the log's ``size`` and the job's
    state, both as they were when read (the state first: an ended job's log is complete)."""

    data: bytes
    offset: int
    next_offset: int
    state: JobState
    size: int = 0

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")

    @property
    def complete(self) -> bool:
        """The job has ended and this page reaches the end of its log: nothing more will come."""
        return self.state.terminal and self.next_offset >= self.size


def make_runner(clusters: ClusterService, stores: JobStores) -> JobRunner:
    """The configured runner; unset, the backend's own (RayJobs on kuberay, else a supervisor)."""
    config = clusters.config
    cls = config.job_runner
    if cls is None:
        backend = getattr(clusters.backend, "name", "")
        cls = import_item(JOB_RUNNERS["kuberay" if backend == "kuberay" else "local"])
    if not (isinstance(cls, type) and issubclass(cls, JobRunner)):
        raise TypeError(f"c.EKSRay.job_runner: {cls!r} is not a JobRunner subclass")
    return cls(parent=config, log=config.log, service=clusters, stores=stores)


class JobService:
    def __init__(
        self,
        clusters: ClusterService,
        runner: JobRunner | None = None,
        stores: JobStores | None = None,
    ) -> None:
        self.clusters = clusters
        self.config = clusters.config
        self.stores = stores if stores is not None else JobStores.from_config(self.config)
        self.runner = runner if runner is not None else make_runner(clusters, self.stores)
        if self.runner.stores is None:  # a runner made elsewhere uses this service's stores
            self.runner.stores = self.stores

    @property
    def owner(self) -> str:
        return self.config.owner

    def close(self) -> None:
        """Stop the runner's background threads (RayJob followers release their leases)."""
        self.runner.close()

    # --- submit -----------------------------------------------------------------------------

    def submit(self, request: Any, base_dir: str | None = None) -> Job:
        """Validate, persist (state ``pending``) and hand to the runner; returns at once.

        ``base_dir`` resolves a relative ``workingDir`` (the server's root dir, the CLI's cwd).
        A store that cannot be written (e.g. a bucket that does not exist) is refused here,
        before anything is created: the user gets the reason at once and nothing is lost.
        """
        spec = resolve_job_spec(
            request,
            self.config.profiles,
            default_profile=self.config.default_profile,
            default_store=self.stores.default_spec(),
            base_dir=base_dir,
            working_dir_max_bytes=self.config.job_working_dir_max_mb << 20,
        )
        if "clusterName" in spec:
            try:
                self.clusters.get(spec["clusterName"])
            except NotFoundError:
                raise InvalidRequestError(
                    "Invalid job spec",
                    [
                        FieldError(
                            "clusterName",
                            f"you have no cluster named {spec['clusterName']!r}; list your clusters, "
                            "or give `cluster` to have the job create one",
                        )
                    ],
                ) from None
        store = self.stores.open(spec["store"])
        store.check()
        self.runner.check(spec, store)
        job_id = new_job_id(spec["name"])
        cluster_name = spec.get("clusterName") or job_id
        record = new_record(
            job_id,
            self.owner,
            spec,
            cluster_name,
            store.location,
            store.describe(self.owner, job_id),
            self.runner.name,
        )
        store.create(record)
        self.stores.remember(store.location)
        job = Job.from_record(record)
        try:
            self.runner.start(job)
        except Exception as e:
            # Recorded, so the job is not lost; the answer keeps the error's kind (a 4xx the
            # user can act on stays one). On the freshest record: the runner may have noted
            # where its resources are (a stop must still find them).
            with contextlib.suppress(EKSRayError):
                record = store.read(self.owner, job_id) or record
            transition(record, JobState.FAILED, f"the job could not be started: {e}")
            store.write(record)
            if isinstance(e, EKSRayError):
                raise
            raise BackendError(f"Job {job_id} could not be started: {e}") from e
        return job

    # --- read -------------------------------------------------------------------------------

    def _find(self, job_id: str) -> tuple[JobStore, dict[str, Any]]:
        """The job's newest record among the stores (a copy kept locally when S3 failed may be newer).

        A store that cannot be read does not hide the others; its error is raised only if
        no other store has the job.
        """
        check_id(job_id)
        found: list[tuple[JobStore, dict[str, Any]]] = []
        failures: list[EKSRayError] = []
        for store in self.stores.known():
            try:
                record = store.read(self.owner, job_id)
            except EKSRayError as e:
                failures.append(e)
                continue
            if record is not None:
                found.append((store, record))
                if store is self.stores.local and (record.get("store") or {}).get("type") != "s3":
                    break
        if not found:
            if failures:
                raise failures[0]
            raise NotFoundError(f"No job with id {job_id!r}. List your jobs to see their ids.")
        store, record = max(found, key=lambda f: f[1].get("updatedAt") or 0)
        return store, self._reconcile(store, record)

    def _reconcile(self, store: JobStore, record: dict[str, Any]) -> dict[str, Any]:
        """A job whose runner died without recording an end is failed; record that."""
        if JobState(record["state"]).terminal:
            return record
        job = Job.from_record(record)
        if self.runner.name != job.runner:
            return record
        active = self.runner.is_active(job)
        if active is None or (active and not self.runner.took_over(job)):
            return record
        fresh = store.read(job.owner, job.id) or record  # the runner may have caught it up, or ended it
        if active:
            return fresh
        if JobState(fresh["state"]).terminal:
            return fresh
        reason = self.runner.failure_hint(job)
        if (
            fresh.get("clusterCreated")
            and not fresh.get("clusterDeletedAt")
            and self.runner.may_have_left_a_cluster(job)
        ):
            reason += f"; its cluster {fresh['clusterName']} may still be running: delete it if so"
        transition(fresh, JobState.FAILED, reason)
        store.write(fresh)
        return fresh

    def list(self) -> list[Job]:
        """Every job of the owner in every readable store, newest first."""
        return self.list_with_warnings()[0]

    def list_with_warnings(self) -> tuple[list[Job], list[str]]:
        """:meth:`list`, and why a store could not be read (its jobs are missing from the list)."""
        newest: dict[str, dict[str, Any]] = {}
        where: dict[str, JobStore] = {}
        warnings: list[str] = []
        for store in self.stores.known():
            try:
                records = store.list(self.owner)
            except EKSRayError as e:
                self.config.log.warning("eksray: cannot list jobs in %s: %s", store.location, e)
                warnings.append(e.message)
                continue
            for record in records:
                current = newest.get(record["id"])
                if current is None or (record.get("updatedAt") or 0) > (current.get("updatedAt") or 0):
                    newest[record["id"]] = record
                    where[record["id"]] = store
        jobs = [Job.from_record(self._reconcile(where[i], r)) for i, r in newest.items()]
        return sorted(jobs, key=lambda j: j.created_at, reverse=True), warnings

    def get(self, job_id: str) -> Job:
        return Job.from_record(self._find(job_id)[1])

    def local_job(self, job_id: str) -> Job | None:
        """The job as the local store has it (reconciled like a list's), or None if it has not."""
        check_id(job_id)
        record = self.stores.local.read(self.owner, job_id)
        return Job.from_record(self._reconcile(self.stores.local, record)) if record else None

    @property
    def log_page_max(self) -> int:
        """The most bytes one read of a log answers (``c.EKSRay.job_log_page_max_bytes``)."""
        return max(1, int(self.config.job_log_page_max_bytes))

    def logs(
        self, job_id: str, offset: int = 0, limit: int | None = None, tail: int | None = None
    ) -> LogChunk:
        """A page of the job's log: at most ``limit`` bytes from byte ``offset``, or with ``tail`` its
        last ``tail`` bytes, from a line start where there is one in them.

        ``limit`` defaults to :data:`~.store.LOG_PAGE_BYTES`; it and ``tail`` are clamped to
        :attr:`log_page_max`. Read on from ``next_offset`` until it reaches ``size``; only the
        page is read from the store, never the whole log.
        """
        if offset < 0:
            raise InvalidRequestError("Invalid query", [FieldError("offset", "must be 0 or more")])
        if tail is not None and tail < 0:
            raise InvalidRequestError("Invalid query", [FieldError("tail", "must be 0 or more")])
        limit = min(LOG_PAGE_BYTES if limit is None else max(0, limit), self.log_page_max)
        if tail is not None:
            tail = min(tail, self.log_page_max)
        found, record = self._find(job_id)
        state = JobState(record["state"])
        declared = self.stores.open(record.get("store") or {"type": "local"})
        if found is declared:
            page = declared.read_log(self.owner, job_id, offset, limit, tail)
        else:
            page = self._split_log(declared, found, job_id, offset, limit, tail)
        return LogChunk(page.data, page.offset, page.next_offset, state, page.size)

    def _split_log(
        self, declared: JobStore, local: JobStore, job_id: str, offset: int, limit: int, tail: int | None
    ) -> LogPage:
        """A page of a log split by an S3 failure while the job ran: its runner kept the record and
        the rest of the log on this machine (see the supervisor). The log is the S3 part, then the
        local part."""
        try:
            head = declared.read_log(self.owner, job_id, 0, 0).size
        except EKSRayError:
            head = 0  # S3 still unreachable: what this machine has
        rest = local.read_log(self.owner, job_id, 0, 0).size

        def read_range(start: int, end: int) -> bytes:
            data = b""
            if start < head:
                data = declared.read_log(self.owner, job_id, start, min(end, head) - start).data
                if start + len(data) < min(end, head):
                    return data  # a short read: the next page goes on from there
            if end > head:
                begin = max(start, head) - head
                data += local.read_log(self.owner, job_id, begin, end - head - begin).data
            return data

        return read_page(head + rest, read_range, offset, limit, tail)

    def open_result(self, job_id: str, path: str) -> ResultFile:
        """One result file (a path from the job's ``results``), open for reading in pieces."""
        _, record = self._find(job_id)
        if path not in {r.get("path") for r in record.get("results") or []}:
            raise NotFoundError(f"Job {job_id!r} has no result {path!r}.")
        return self.stores.open(record.get("store") or {"type": "local"}).open_result(
            self.owner, job_id, path
        )

    def result(self, job_id: str, path: str) -> bytes:
        """The content of one result file, whole (small files; see :meth:`open_result`)."""
        with contextlib.closing(self.open_result(job_id, path)) as result:
            return result.read()

    def wait(self, job_id: str, timeout: float = 600.0, interval: float = 1.0) -> Job:
        """Block until the job is terminal; BackendError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.terminal:
                return job
            if time.monotonic() > deadline:
                raise BackendError(f"Job {job_id!r} is still {job.state.value} after {timeout:.0f} s.")
            time.sleep(interval)

    # --- stop -------------------------------------------------------------------------------

    def stop(self, job_id: str, wait: float = 0.0) -> Job:
        """Stop a job: its runner stops the Ray job, records ``stopped`` and deletes its cluster.

        Waits up to ``wait`` seconds for the job to be stopped. A finished job is returned as
        it is (a cluster it still keeps for ``ttlSecondsAfterFinished`` is deleted now).
        """
        store, record = self._find(job_id)
        job = Job.from_record(record)
        if job.terminal:
            if job.cluster_created and job.cluster_deleted_at is None:
                self.runner.stop(job)
            return job
        if not self.runner.stop(job):
            # No runner this process can signal: record the stop here, and remove what it may
            # have left behind. A runner elsewhere (a supervisor on another machine, a RayJob
            # follower in another process) sees the record and ends too.
            elsewhere = self.runner.is_active(job) is True
            fresh = store.read(self.owner, job_id) or record
            if not JobState(fresh["state"]).terminal:
                why = "" if elsewhere else " (its runner was not running)"
                transition(fresh, JobState.STOPPED, f"stopped on request{why}")
                if fresh.get("clusterCreated") and not fresh.get("clusterDeletedAt"):
                    try:
                        self.clusters.delete(fresh["clusterName"])
                        fresh["clusterDeletedAt"] = time.time()
                    except NotFoundError:
                        fresh["clusterDeletedAt"] = time.time()
                    except EKSRayError:
                        pass
                store.write(fresh)
            return Job.from_record(fresh)
        deadline = time.monotonic() + wait
        while True:
            job = self.get(job_id)
            if job.terminal or time.monotonic() >= deadline:
                return job
            time.sleep(0.25)
