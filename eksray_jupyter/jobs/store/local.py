"""Jobs in a local directory, ``<EKSRay.state_dir>/jobs/<owner>/<id>/``: the store of one machine."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...core.errors import ConflictError, NotFoundError
from ...core.state_files import read_json, write_json_atomic
from .base import (
    LOG_PAGE_BYTES,
    JobStore,
    LogPage,
    RecordListeners,
    ResultFile,
    check_id,
    has_ended,
    owner_key,
    read_page,
)


class LocalJobStore(JobStore):
    """Jobs in ``<state_dir>/jobs/<owner>/<id>/``, written with a lock and atomic replaces."""

    def __init__(self, root: Path, listeners: RecordListeners | None = None) -> None:
        self.root = Path(root)
        self.location = {"type": "local"}
        self.listeners = listeners
        self._parsed: dict[Path, tuple[tuple[int, int, int], Any]] = {}  # see list()
        self._parsed_lock = threading.Lock()

    def _dir(self, owner: str, job_id: str) -> Path:
        check_id(job_id)
        return self.root / owner_key(owner) / job_id

    def describe(self, owner: str, job_id: str) -> str:
        return str(self._dir(owner, job_id))

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        path.mkdir(parents=True, exist_ok=True)
        with open(path / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield

    def create(self, record: dict[str, Any]) -> None:
        path = self._dir(record["owner"], record["id"])
        # Only the user reads a job (its spec, log and results may hold anything): 0700 dirs.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            raise ConflictError(f"A job with id {record['id']!r} already exists.") from None
        self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        path = self._dir(record["owner"], record["id"])
        with self._locked(path):
            write_json_atomic(path / "job.json", record)
        self._announce_written(record)

    def write_unless_ended(self, record: dict[str, Any]) -> dict[str, Any] | None:
        path = self._dir(record["owner"], record["id"])
        with self._locked(path):  # every writer of the record takes this lock
            stored = read_json(path / "job.json")
            if has_ended(stored, record["owner"]):
                return stored
            write_json_atomic(path / "job.json", record)
        self._announce_written(record)
        return None

    def read(self, owner: str, job_id: str) -> dict[str, Any] | None:
        data = read_json(self._dir(owner, job_id) / "job.json")
        return data if isinstance(data, dict) and data.get("owner") == owner else None

    def list(self, owner: str) -> list[dict[str, Any]]:
        """The owner's records. Polled every second while a panel watches (``jobs/watch.py``), so
        a ``job.json`` whose (mtime_ns, size, inode) did not change is not parsed again.

        The records returned are shared with that cache: callers must not change them.
        """
        base = self.root / owner_key(owner)
        if not base.is_dir():
            return []
        out = []
        seen: set[Path] = set()
        for path in sorted(base.iterdir()):
            data = self._parse(path / "job.json")
            seen.add(path / "job.json")
            if isinstance(data, dict) and data.get("owner") == owner:
                out.append(data)
        with self._parsed_lock:
            for gone in [p for p in self._parsed if p.parent.parent == base and p not in seen]:
                del self._parsed[gone]
        return out

    def _parse(self, path: Path) -> Any:
        """``read_json(path)``, reusing the last parse while the file is unchanged (replaced files
        are new inodes: ``write_json_atomic`` renames)."""
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._parsed_lock:
            cached = self._parsed.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        data = read_json(path)
        with self._parsed_lock:
            self._parsed[path] = (key, data)
        return data

    def append_log(self, owner: str, job_id: str, data: bytes) -> None:
        path = self._dir(owner, job_id)
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / "log.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def read_log(
        self,
        owner: str,
        job_id: str,
        offset: int = 0,
        limit: int = LOG_PAGE_BYTES,
        tail: int | None = None,
    ) -> LogPage:
        try:
            f = open(self._dir(owner, job_id) / "log.txt", "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            return read_page(0, lambda a, b: b"", offset, limit, tail)
        with f:

            def read_range(start: int, end: int) -> bytes:
                f.seek(start)
                return f.read(end - start)

            return read_page(os.fstat(f.fileno()).st_size, read_range, offset, limit, tail)

    def _result_path(self, owner: str, job_id: str, relpath: str) -> Path:
        base = (self._dir(owner, job_id) / "results").resolve()
        target = (base / relpath).resolve()
        if base not in target.parents:
            raise NotFoundError(f"No result {relpath!r} in job {job_id!r}.")
        return target

    def put_result(self, owner: str, job_id: str, relpath: str, source: Path) -> None:
        target = self._result_path(owner, job_id, relpath)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod(0o600)

    def open_result(self, owner: str, job_id: str, relpath: str) -> ResultFile:
        try:
            stream = open(self._result_path(owner, job_id, relpath), "rb")  # noqa: SIM115 (ResultFile closes it)
        except (FileNotFoundError, IsADirectoryError):
            raise NotFoundError(f"No result {relpath!r} in job {job_id!r}.") from None
        return ResultFile(stream, os.fstat(stream.fileno()).st_size)
