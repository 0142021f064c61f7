"""The contract every job store keeps (:class:`JobStore`), and what the stores share.

Job ids and owners as path segments or keys (``check_id``, ``owner_key``), log pages
(:class:`LogPage`, :func:`read_page`: an offset plus at most ``limit`` bytes, or the tail),
whether a stored record has ended, and :class:`RecordListeners`: who is told when a store
writes a record.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
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


#: Bytes of a log page when the reader names no limit.
LOG_PAGE_BYTES = 256 * 1024


@dataclass(frozen=True)
class LogPage:
    """Bytes ``[offset, next_offset)`` of a job's log, and the log's ``size`` when they were read.

    A page may end before ``size`` (its limit, or a store's bound on the work of one read): read
    on from ``next_offset`` until it reaches ``size``.
    """

    data: bytes
    offset: int
    next_offset: int
    size: int


def read_page(
    size: int,
    read_range: Callable[[int, int], bytes],
    offset: int = 0,
    limit: int = LOG_PAGE_BYTES,
    tail: int | None = None,
) -> LogPage:
    """A page of a log of ``size`` bytes, whose bytes ``[a, b)`` ``read_range(a, b)`` reads (it may
    return fewer, never bytes past ``b``): at most ``limit`` bytes from ``offset``; or with ``tail``,
    its last ``tail`` bytes (``offset`` and ``limit`` unused), starting at a line start when one is in
    them, else at a character start. Only the bytes of the page are read (and, for a tail, the one
    before it, to know whether it starts a line).

    InvalidRequestError for an offset past the end: a client must not skip what it never read.
    """
    if tail is None:
        offset = max(0, offset)
        check_log_offset(offset, size)
        end = min(size, offset + max(0, limit))
        data = read_range(offset, end) if end > offset else b""
        return LogPage(data, offset, offset + len(data), size)
    start = max(0, size - max(0, tail))
    if start >= size:
        return LogPage(b"", size, size, size)
    before = start - 1 if start > 0 else start  # the byte before: does ``start`` begin a line?
    data = read_range(before, size)
    if start > 0:
        if not data:
            return LogPage(b"", start, start, size)
        newline = data.find(b"\n", 0, len(data) - 1)  # a line that starts before the page's end
        skip = newline + 1 if newline >= 0 else 1
        if newline < 0:  # one long line: at least start at a character, not inside one
            while skip < len(data) and skip < 4 and 0x80 <= data[skip] < 0xC0:
                skip += 1
        data, start = data[skip:], before + skip
    return LogPage(data, start, start + len(data), size)


def has_ended(stored: Any, owner: str) -> bool:
    """Whether a stored record (as read, maybe None or not a record) is of an ended job."""
    if not isinstance(stored, dict) or stored.get("owner") != owner:
        return False
    try:
        return JobState(stored.get("state")).terminal
    except ValueError:
        return False


def check_id(job_id: str) -> None:
    if not isinstance(job_id, str) or len(job_id) > 63 or not ID_RE.fullmatch(job_id):
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

    def read_log(
        self,
        owner: str,
        job_id: str,
        offset: int = 0,
        limit: int = LOG_PAGE_BYTES,
        tail: int | None = None,
    ) -> LogPage:
        """A page of the log: at most ``limit`` bytes from byte ``offset``, or with ``tail`` its last
        ``tail`` bytes from a line start (see :func:`read_page`). Reads only that part of the log,
        never all of it; ``limit=0`` tells only its size.

        InvalidRequestError for an offset past the end: a client must not skip what it never read.
        """
        raise NotImplementedError

    def iter_log(
        self, owner: str, job_id: str, offset: int = 0, page: int = LOG_PAGE_BYTES
    ) -> Iterator[LogPage]:
        """The log from ``offset`` to its end as read now, page by page (never all of it at once)."""
        while True:
            current = self.read_log(owner, job_id, offset, page)
            if current.data:
                yield current
            if not current.data or current.next_offset >= current.size:
                return
            offset = current.next_offset

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
