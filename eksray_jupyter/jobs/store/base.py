"""The contract every job store keeps (:class:`JobStore`), and what the stores share.

Job ids and owners as path segments or keys (``check_id``, ``owner_key``), the check of a
log offset, whether a stored record has ended, and :class:`RecordListeners`: who is told
when a store writes a record.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ...core.errors import FieldError, InvalidRequestError, NotFoundError
from ..models import JobState

ID_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
ID_RE = re.compile(ID_PATTERN)

log = logging.getLogger(__name__)

#: Called after a store wrote a record: ``callback(location, record)``.
RecordListener = Callable[[dict[str, Any], dict[str, Any]], None]


class RecordListeners:
    """The callbacks told of each record written by the stores that share this object
    (the stores one :class:`~.registry.JobStores` opened)."""

    def __init__(self) -> None:
        self._listeners: list[RecordListener] = []
        self._lock = threading.Lock()

    def add(self, callback: RecordListener) -> Callable[[], None]:
        """Call ``callback`` after each record written; returns the function that stops it."""
        with self._lock:
            self._listeners.append(callback)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return remove

    def announce(self, location: dict[str, Any], record: dict[str, Any]) -> None:
        """Tell every listener (on the writer's thread) that ``record`` was written at ``location``."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(location, record)
            except Exception:
                log.exception("eksray: a job record listener failed")


def owner_key(owner: str) -> str:
    """The owner as one safe path segment or key part (JupyterHub names may hold '@', '.' or '/')."""
    key = quote(owner, safe="@+")
    return key.replace(".", "%2E") if key.strip(".") == "" else key


def check_log_offset(offset: int, size: int) -> None:
    if offset > size:
        raise InvalidRequestError(
            "Invalid query",
            [
                FieldError(
                    "offset", f"{offset} is past the end of the log ({size} bytes so far); read from {size}"
                )
            ],
        )


def has_ended(stored: Any, owner: str) -> bool:
    """Whether a stored record (as read, maybe None or not a record) is of an ended job."""
    if not isinstance(stored, dict) or stored.get("owner") != owner:
        return False
    try:
        return JobState(stored.get("state")).terminal
    except ValueError:
        return False


def check_id(job_id: str) -> None:
    if not isinstance(job_id, str) or len(job_id) > 63 or not ID_RE.match(job_id):
        raise NotFoundError(f"No job with id {job_id!r}. List your jobs to see their ids.")


class JobStore:
    """One place where job records, logs and results are kept."""

    #: ``{"type": "local"}`` or ``{"type": "s3", "bucket", "prefix"}``: recorded in each job.
    location: dict[str, Any]

    #: Told of each record this store writes (``create``, ``write``, ``write_unless_ended``):
    #: those of the registry that opened it; a store made on its own tells nobody.
    listeners: RecordListeners | None = None

    def _announce_written(self, record: dict[str, Any]) -> None:
        if self.listeners is not None:
            self.listeners.announce(self.location, record)

    def describe(self, owner: str, job_id: str) -> str:
        """Where a job's files are, for people (a directory or an ``s3://`` URI)."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise ConflictError (what to do) or BackendError if jobs cannot be written here."""

    def create(self, record: dict[str, Any]) -> None:
        """Persist a new record; ConflictError if the id exists."""
        raise NotImplementedError

    def write(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def write_unless_ended(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Write a running job's ``record`` unless the stored one has ended (another process
        recorded a stop): then leave it and return it. The check and the write are one step
        against other processes' writes, so an end recorded meanwhile is never written over."""
        raise NotImplementedError

    def read(self, owner: str, job_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def list(self, owner: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def append_log(self, owner: str, job_id: str, data: bytes) -> None:
        """Append to the job's log (only its runner writes logs)."""
        raise NotImplementedError

    def read_log(self, owner: str, job_id: str, offset: int = 0) -> tuple[bytes, int]:
        """The log from byte ``offset`` to its current end, and that end.

        InvalidRequestError for an offset past the end: a client must not skip what it never read.
        """
        raise NotImplementedError

    def put_result(self, owner: str, job_id: str, relpath: str, source: Path) -> None:
        raise NotImplementedError

    def open_result(self, owner: str, job_id: str, relpath: str) -> ResultFile:
        """A result file to read in pieces (results can be large); NotFoundError if there is none."""
        raise NotImplementedError

    def read_result(self, owner: str, job_id: str, relpath: str) -> bytes:
        with contextlib.closing(self.open_result(owner, job_id, relpath)) as result:
            return result.read()


@dataclass
class ResultFile:
    """An open result file: ``read(n)`` its bytes in pieces, then ``close()``."""

    stream: Any  # a binary file, or botocore's StreamingBody
    size: int

    def read(self, size: int = -1) -> bytes:
        return bytes(self.stream.read(size) if size >= 0 else self.stream.read())

    def close(self) -> None:
        self.stream.close()
