"""Push for jobs: one thread reads the owner's job records while someone listens, and reports changes.

Job records are written by other processes (a job's supervisor, a CLI) or by threads of this
one (a submit or stop, the KubeRay runner's follower). While at least one subscriber exists, a
single daemon thread reads the jobs at once (after a short pause that gathers a burst) when
a record is written: by a store of the service's registry in this process
(:meth:`~.store.JobStores.on_record_written`), or by any process to the local store (a
file-system notification, :mod:`..core.wakeup`); and every ``c.EKSRay.job_watch_seconds``
anyway (S3 stores, which cannot notify, and a file system without notifications). It reads through
:meth:`JobService.list_with_warnings` (so a job whose runner died is reconciled to ``failed``
exactly as the REST list does), compares them with
the previous read by id (and ``updatedAt``, and the rest of the record), and calls each
subscriber with a :class:`JobChange`: a job that is new or changed, a job that is gone,
or new ``warnings`` (stores that could not be read, whose jobs are then missing, as in
``GET /jobs``). The last unsubscribe stops and joins the thread.

It is cheap: the local store reuses the parsed record of every ``job.json`` whose file did
not change, S3 stores are listed at most every ``c.EKSRay.job_watch_s3_seconds`` (one LIST,
then a GET only of the records whose ETag changed), and between two S3 listings their last
answer is used again, with the records the registry's stores wrote since put in (no listing
for them).

A subscriber gets changes relative to the watcher's state, never the state itself: call
:meth:`JobWatcher.snapshot` after subscribing. Its ``deliver`` callback runs under the lock
the changes are emitted under, so whatever a subscriber queues from there is ordered with
the changes (the server's stream relies on that: snapshot first, then only newer changes).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from ..core.errors import EKSRayError
from ..core.wakeup import Wakeup
from .models import Job
from .service import JobService
from .store import JobStore, JobStores, owner_key

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


class _Pending:
    """What woke a watcher thread: the ids of records written (read just those), or a need
    for a whole read (the interval passed, an S3 write, a record that vanished)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ids: set[str] = set()
        self.full = True  # a thread's first read is a whole one

    def add(self, job_id: str) -> None:
        with self._lock:
            self.ids.add(job_id)

    def need_full(self) -> None:
        with self._lock:
            self.full = True

    def take(self) -> tuple[set[str], bool]:
        with self._lock:
            ids, full = self.ids, self.full
            self.ids, self.full = set(), False
            return ids, full


@dataclass(frozen=True)
class JobChange:
    """One change of the owner's jobs: ``job`` (new or changed), ``deleted`` or ``warnings``."""

    kind: Literal["job", "deleted", "warnings"]
    owner: str
    job_id: str | None = None
    job: Job | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class JobSnapshot:
    """The owner's jobs (newest first) and the stores that could not be read, as ``GET /jobs``."""

    jobs: list[Job]
    warnings: list[str]


class _Throttled(JobStore):
    """A store whose ``list`` asks the real one at most every ``interval`` s, else answers as last time."""

    def __init__(self, store: JobStore, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.location = store.location
        self._at: float | None = None
        self._owner: str | None = None
        self._records: list[dict[str, Any]] = []
        self._error: Exception | None = None
        self._lock = threading.Lock()  # the answer, and whether a listing is under way
        self._listing = False

    def list(self, owner: str) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            relist = self._at is None or owner != self._owner or now - self._at >= self.interval
            if relist:
                self._owner, self._at, self._listing = owner, now, True
        if relist:
            try:
                records, error = self.store.list(owner), None
            except Exception as e:  # the same failure again until the next real listing
                records, error = [], e
            with self._lock:
                self._records, self._error, self._listing = records, error, False
        with self._lock:
            if self._error is not None:
                raise self._error
            return self._records

    def written(self, record: dict[str, Any]) -> None:
        """This process wrote ``record`` to the store: the next answer has it, without a listing
        (the KubeRay follower writes a record each time its log grows)."""
        with self._lock:
            if self._listing or self._error is not None or record.get("owner") != self._owner:
                self._at = None  # a listing under way may predate the write: list again
                return
            # A new list: the old one may be in a caller's hands.
            self._records = [r for r in self._records if r.get("id") != record.get("id")] + [record]

    # Reconciling reads and writes the record itself: straight to the store.
    def read(self, owner: str, job_id: str) -> dict[str, Any] | None:
        return self.store.read(owner, job_id)

    def write(self, record: dict[str, Any]) -> None:
        self.store.write(record)

    def write_unless_ended(self, record: dict[str, Any]) -> dict[str, Any] | None:
        return self.store.write_unless_ended(record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class _WatchStores:
    """The service's stores as the watcher reads them: local ones as they are, S3 ones throttled."""

    def __init__(self, stores: JobStores, s3_interval: float) -> None:
        self.stores = stores
        self.local = stores.local
        self.s3_interval = s3_interval
        self._throttled: dict[int, _Throttled] = {}

    def known(self) -> list[JobStore]:
        out: list[JobStore] = []
        for store in self.stores.known():
            if store is self.stores.local:
                out.append(store)
                continue
            throttled = self._throttled.get(id(store))
            if throttled is None or throttled.store is not store:
                throttled = self._throttled[id(store)] = _Throttled(store, self.s3_interval)
            out.append(throttled)
        return out

    def written(self, location: dict[str, Any], record: dict[str, Any]) -> None:
        """Called on a writer's thread while the watcher's may add stores: iterate over a copy."""
        for throttled in list(self._throttled.values()):
            if throttled.location == location:
                throttled.written(record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stores, name)


class JobWatcher:
    """Reports changes of one owner's jobs to subscribers; a thread runs only while there are some."""

    #: After a write woke the thread: wait this long for the rest of a burst (an atomic write
    #: is a create, a write and a rename; a submit writes twice).
    settle_seconds = 0.02
    #: The last unsubscribe waits this long for the thread to end (a read of a slow store may
    #: hold it); after that the thread is left to end by itself, and the log says so.
    stop_timeout = 5.0

    def __init__(self, jobs: JobService, interval: float = 1.0, s3_interval: float = 10.0) -> None:
        self.owner = jobs.owner
        self.interval = interval
        # The same runner (its followers, its notion of "alive") and stores; S3 listings throttled.
        self._stores = _WatchStores(jobs.stores, s3_interval)
        self._registry = jobs.stores  # its stores tell of the records they write
        self._service = JobService(jobs.clusters, runner=jobs.runner, stores=cast(JobStores, self._stores))
        self._stop_listening: Callable[[], None] | None = None
        self._callbacks: list[Callable[[JobChange], None]] = []
        self._subscribers_lock = threading.Lock()  # callbacks, thread lifecycle
        self._poll_lock = threading.RLock()  # one poll at a time; state and emission
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self._wake: threading.Event | None = None  # the thread's: a record was written here, or stop
        self._generation = 0  # +1 per thread: a new thread starts from a fresh read
        self._state: dict[str, Job] | None = None
        self._state_generation = -1
        self._ordered: list[Job] = []
        self._warnings: list[str] = []
        #: Reads of the owner's whole list done so far, and by the thread (for tests and benchmarks).
        self.polls = 0
        self.thread_reads = 0

    @classmethod
    def for_jobs(cls, jobs: JobService) -> JobWatcher:
        """A watcher at the intervals the user's settings give."""
        config = jobs.config
        return cls(jobs, config.job_watch_seconds, config.job_watch_s3_seconds)

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def alive(self) -> bool:
        """Whether its thread runs (it is started by a subscriber and ends only when stopped)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def subscribe(self, callback: Callable[[JobChange], None]) -> Callable[[], None]:
        """Call ``callback`` (on the watcher's thread) with each change; returns the unsubscribe function.

        The first subscriber starts the thread; the unsubscribe of the last stops and joins it,
        for at most ``stop_timeout`` s (so do not call that from the event loop, nor from
        ``callback``'s own thread).
        """
        with self._subscribers_lock:
            self._callbacks.append(callback)
            if self._thread is None:
                self._generation += 1
                # Each thread has its own events: a stopping thread and its successor may overlap.
                stop, wake, pending = threading.Event(), threading.Event(), _Pending()
                self._thread = threading.Thread(
                    target=self._run,
                    args=(stop, wake, self._generation, pending),
                    name="eksray-job-watch",
                    daemon=True,
                )
                self._stop, self._wake = stop, wake

                def record_written(location: dict[str, Any], record: dict[str, Any]) -> None:
                    if record.get("owner") != self.owner:
                        return
                    if location.get("type") == "s3":
                        self._stores.written(location, copy.deepcopy(record))  # its writer may change it
                        pending.need_full()
                    else:
                        pending.add(str(record.get("id")))
                    wake.set()

                self._stop_listening = self._registry.on_record_written(record_written)
                self._thread.start()
        done = False

        def unsubscribe() -> None:
            nonlocal done
            with self._subscribers_lock:
                if done:
                    return
                done = True
                self._callbacks.remove(callback)
                if self._callbacks or self._thread is None or self._stop is None:
                    return
                thread, stop, wake = self._thread, self._stop, self._wake
                self._thread = self._stop = self._wake = None
                if self._stop_listening is not None:
                    self._stop_listening()
                    self._stop_listening = None
                stop.set()
                if wake is not None:
                    wake.set()
            if thread is not threading.current_thread():
                thread.join(self.stop_timeout)
                if thread.is_alive():  # its stop is set: it emits nothing more, and ends after its read
                    log.warning(
                        "eksray: the job watcher's thread did not end within %g s (a read of the jobs "
                        "still under way); left to end by itself",
                        self.stop_timeout,
                    )

        return unsubscribe

    def snapshot(self, deliver: Callable[[JobSnapshot], None] | None = None) -> JobSnapshot:
        """The jobs as the watcher knows them (read now if no thread keeps them current); blocks.

        ``deliver`` is called with it before any change that comes after it is emitted.
        """
        with self._poll_lock:
            if self._thread is None or self._state is None or self._state_generation != self._generation:
                self._poll(None, self._generation)
            snapshot = JobSnapshot(list(self._ordered), list(self._warnings))
            if deliver is not None:
                deliver(snapshot)
            return snapshot

    def _run(self, stop: threading.Event, wake: threading.Event, generation: int, pending: _Pending) -> None:
        # Another process's write to the local store (a supervisor, a CLI) wakes the thread too,
        # naming the record: only that one is read then, not the owner's whole list.
        local = self._stores.local
        mine = f"{os.sep}{owner_key(self.owner)}{os.sep}"

        def job_record(path: str) -> bool:
            head, _, name = path.rpartition(os.sep)
            parent, _, job_id = head.rpartition(os.sep)
            if name != "job.json" or not (parent + os.sep).endswith(mine):
                return False
            pending.add(job_id)
            return True

        notified = Wakeup("job-watcher", flag=wake)
        try:
            local.root.mkdir(parents=True, exist_ok=True)
            notified.watch_dirs({local.root: (job_record, True)})
        except OSError as e:
            log.warning("eksray: cannot watch %s for job changes (polling instead): %s", local.root, e)
        try:
            while not stop.is_set():
                wake.clear()  # before the read: a write during it brings another read
                ids, full = pending.take()
                try:
                    if full or not ids:
                        self._poll(stop, generation)
                        self.thread_reads += 1
                    else:
                        self._refresh(ids, stop, generation)
                except Exception:
                    log.exception("eksray: reading the jobs for the push stream failed")
                # Until the interval ends (then a whole read), a record is written, or a stop.
                if wake.wait(self.interval) and not stop.is_set():
                    stop.wait(self.settle_seconds)  # gather the rest of a burst
                else:
                    pending.need_full()
        finally:
            notified.close()

    def _refresh(self, ids: set[str], stop: threading.Event | None, generation: int) -> None:
        """Read just these local records (written since the last read) and report what changed."""
        with self._poll_lock:
            state = self._state if self._state_generation == generation else None
            if state is None:
                return self._poll(stop, generation)
            changes = []
            for job_id in sorted(ids):
                try:
                    job = self._service.local_job(job_id)
                except EKSRayError:
                    job = None
                if job is None:  # gone, or unreadable: a whole read says what is true
                    return self._poll(stop, generation)
                old = state.get(job_id)
                if old is not None and (old.updated_at or 0) > (job.updated_at or 0):
                    continue  # a newer copy elsewhere (S3) stands
                if old is None or old.updated_at != job.updated_at or old != job:
                    state[job_id] = job
                    changes.append(JobChange("job", self.owner, job_id, job))
            if changes:
                self._ordered = sorted(state.values(), key=lambda j: j.created_at, reverse=True)
                self._emit(changes)
        return None

    def _poll(self, stop: threading.Event | None, generation: int) -> None:
        with self._poll_lock:
            if stop is not None and stop.is_set():
                return
            jobs, warnings = self._service.list_with_warnings()
            self.polls += 1
            if stop is not None and stop.is_set():
                return  # stopped during the read (and given up on): a newer thread reads for itself
            current = {job.id: job for job in jobs}
            previous = self._state if self._state_generation == generation else None
            previous_warnings = self._warnings
            self._state, self._state_generation = current, generation
            self._ordered, self._warnings = jobs, warnings
            if previous is None:
                return  # the first read of this thread: the baseline, nothing changed yet
            changes = [
                JobChange("job", self.owner, job.id, job)
                for job in jobs
                if (old := previous.get(job.id)) is None or old.updated_at != job.updated_at or old != job
            ]
            changes += [JobChange("deleted", self.owner, gone) for gone in previous.keys() - current.keys()]
            if warnings != previous_warnings:
                changes.append(JobChange("warnings", self.owner, warnings=list(warnings)))
            if changes:
                self._emit(changes)

    def _emit(self, changes: list[JobChange]) -> None:
        """Tell every subscriber (the caller holds the poll lock: changes stay in order)."""
        with self._subscribers_lock:
            callbacks = list(self._callbacks)
        for change in changes:
            for callback in callbacks:
                try:
                    callback(change)
                except Exception:
                    log.exception("eksray: a job watch subscriber failed")
