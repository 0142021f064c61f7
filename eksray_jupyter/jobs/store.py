"""Where jobs are persisted: records, logs and result files, in a local directory or S3.

Every job lives under ``<root>/<owner>/<id>/``::

    job.json          the record (spec, state, timestamps, reason, attempts, cluster, results)
                      (S3: also copied to ``<root>/<owner>/_index/<id>.json``, which the list reads)
    log.txt           the complete log (local store), appended while the job runs
    logs/<offset>     the same log in S3: one object per flush, keyed by its byte offset
    results/...       the result files, relative paths kept

The local root is ``<EKSRay.state_dir>/jobs``; an S3 root is ``s3://<bucket>/<prefix>``.
Records outlive servers and clusters: the job list is read back from the stores.

One writer at a time per record: the server writes the first record, then the runner
(the job's supervisor or RayJob follower) owns it; another process writes again only for
a runner that died or to record a stop. An end is never written over: the runner saves
a running job with :meth:`JobStore.write_unless_ended` (checked and written in one step).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..core.errors import BackendError, ConflictError, FieldError, InvalidRequestError, NotFoundError
from ..core.state_files import read_json, write_json_atomic
from .models import JobState

ID_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
#: The S3 owner folder's index of job records: never a job id (those start with a letter).
INDEX_DIR = "_index"
_ID_RE = re.compile(ID_PATTERN)

log = logging.getLogger(__name__)

#: Called after a store of this process wrote a record: ``callback(location, record)``.
RecordListener = Callable[[dict[str, Any], dict[str, Any]], None]
_record_listeners: list[RecordListener] = []
_record_listeners_lock = threading.Lock()


def on_record_written(callback: RecordListener) -> Callable[[], None]:
    """Call ``callback`` (on the writer's thread, so it must be quick) after each record this
    process writes to any store; returns the function that stops it.

    The push watcher uses it to report the server's own writes (a submit, a stop, the KubeRay
    follower) at once instead of at its next poll. Other processes' writes are not seen.
    """
    with _record_listeners_lock:
        _record_listeners.append(callback)

    def remove() -> None:
        with _record_listeners_lock, contextlib.suppress(ValueError):
            _record_listeners.remove(callback)

    return remove


def _announce_written(location: dict[str, Any], record: dict[str, Any]) -> None:
    with _record_listeners_lock:
        listeners = list(_record_listeners)
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


def _ended(stored: Any, owner: str) -> bool:
    """Whether a stored record (as read, maybe None or not a record) is of an ended job."""
    if not isinstance(stored, dict) or stored.get("owner") != owner:
        return False
    try:
        return JobState(stored.get("state")).terminal
    except ValueError:
        return False


#: S3 error codes of a conditional write whose object changed (or appeared) meanwhile.
_CHANGED_CODES = ("PreconditionFailed", "ConditionalRequestConflict")


def _error_code(error: Any) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def check_id(job_id: str) -> None:
    if not isinstance(job_id, str) or len(job_id) > 63 or not _ID_RE.match(job_id):
        raise NotFoundError(f"No job with id {job_id!r}. List your jobs to see their ids.")


class JobStore:
    """One place where job records, logs and results are kept."""

    #: ``{"type": "local"}`` or ``{"type": "s3", "bucket", "prefix"}``: recorded in each job.
    location: dict[str, Any]

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


class LocalJobStore(JobStore):
    """Jobs in ``<state_dir>/jobs/<owner>/<id>/``, written with a lock and atomic replaces."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.location = {"type": "local"}
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
        _announce_written(self.location, record)

    def write_unless_ended(self, record: dict[str, Any]) -> dict[str, Any] | None:
        path = self._dir(record["owner"], record["id"])
        with self._locked(path):  # every writer of the record takes this lock
            stored = read_json(path / "job.json")
            if _ended(stored, record["owner"]):
                return stored
            write_json_atomic(path / "job.json", record)
        _announce_written(self.location, record)
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

    def read_log(self, owner: str, job_id: str, offset: int = 0) -> tuple[bytes, int]:
        offset = max(0, offset)
        try:
            with open(self._dir(owner, job_id) / "log.txt", "rb") as f:
                size = os.fstat(f.fileno()).st_size
                check_log_offset(offset, size)
                f.seek(offset)
                data = f.read()
                return data, offset + len(data)
        except FileNotFoundError:
            check_log_offset(offset, 0)
            return b"", 0

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


class S3JobStore(JobStore):
    """Jobs under ``s3://<bucket>/<prefix>/<owner>/<id>/`` (boto3, imported on first use).

    S3 objects cannot be appended to, so the log is a series of objects ``logs/<offset>``
    (zero-padded byte offset of their first byte), one per flush of the runner; reading
    from an offset lists them and fetches only the ones that reach past it.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self.location = {"type": "s3", "bucket": bucket, "prefix": self.prefix}
        self._client_obj: Any = None
        self._lock = threading.Lock()
        self._log_ends: dict[tuple[str, str], int] = {}
        self._listed: dict[str, tuple[tuple[str, str], dict[str, Any] | None]] = {}  # see list()
        self._indexed_owners: set[str] = set()

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def _client(self) -> Any:
        with self._lock:
            if self._client_obj is None:
                import boto3  # lazy: the server must start without boto3
                from botocore.config import Config

                self._client_obj = boto3.client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    config=Config(
                        retries={"max_attempts": 3, "mode": "standard"},
                        connect_timeout=5,
                        read_timeout=30,
                        # Explicit: without it a presigned POST policy may be signed with legacy SigV2.
                        signature_version="s3v4",
                        s3={"addressing_style": "path"} if self.endpoint_url else {},
                    ),
                )
            return self._client_obj

    def _owner_base(self, owner: str) -> str:
        """``<prefix>/<owner>/``: the owner's jobs and their index."""
        return "/".join([*([self.prefix] if self.prefix else []), owner_key(owner)]) + "/"

    def _key(self, owner: str, job_id: str, *rest: str) -> str:
        check_id(job_id)
        return self._owner_base(owner) + "/".join([job_id, *rest])

    def _where(self) -> str:
        return f"s3://{self.bucket}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def _fail(self, error: Exception, doing: str) -> Exception:
        """A domain error for a boto3/botocore failure, saying what to do."""
        code = ""
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket", "404", "NotFound"):
            return ConflictError(
                f"The S3 bucket {self.bucket!r} does not exist ({self._where()}). Create it "
                f'(aws s3 mb s3://{self.bucket}) or choose another: "store": {{"type": "s3", '
                f'"bucket": ...}} in the job, c.EKSRay.job_s3_bucket for everyone, or '
                '"store": {"type": "local"} to keep the job on this machine.'
            )
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return ConflictError(
                f"No access to the S3 bucket {self.bucket!r} ({code}) while {doing}. Check the AWS "
                "credentials of the Jupyter server (its IAM role or AWS_* environment variables)."
            )
        return BackendError(f"S3 failed while {doing} in {self._where()}: {error}")

    def describe(self, owner: str, job_id: str) -> str:
        return f"s3://{self.bucket}/{self._key(owner, job_id)}/"

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as e:
            raise self._fail(e, "checking the bucket") from e

    def _put(
        self,
        key: str,
        body: bytes,
        doing: str,
        content_type: str = "application/octet-stream",
        if_match: str | None = None,
    ) -> bool:
        """Put the object; with ``if_match`` (an ETag, or ``""`` for "no object yet") only if it
        is still that one: False when it changed meanwhile (S3 conditional writes)."""
        from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

        condition = {} if if_match is None else {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, **condition
            )
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if condition and (status in (409, 412) or _error_code(e) in _CHANGED_CODES):
                return False
            if condition and _error_code(e) == "NotImplemented":
                # An S3-compatible store without conditional writes: check-then-write is all it allows.
                return self._put(key, body, doing, content_type)
            raise self._fail(e, doing) from e
        except ParamValidationError:
            if not condition:
                raise
            return self._put(key, body, doing, content_type)  # a botocore too old for conditional PUTs
        except BotoCoreError as e:
            raise self._fail(e, doing) from e
        return True

    def _open(self, key: str, doing: str, byte_range: str | None = None) -> dict[str, Any] | None:
        """``get_object``'s response (its ``Body`` not read yet), None if there is no such object."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            kwargs = {"Range": byte_range} if byte_range else {}
            return dict(self._client.get_object(Bucket=self.bucket, Key=key, **kwargs))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._fail(e, doing) from e
        except BotoCoreError as e:
            raise self._fail(e, doing) from e

    def _get(self, key: str, doing: str, byte_range: str | None = None) -> bytes | None:
        response = self._open(key, doing, byte_range)
        return None if response is None else bytes(response["Body"].read())

    def _upload(self, source: Path, key: str, doing: str) -> None:
        """A file to ``key`` (multipart for large ones)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.upload_file(str(source), self.bucket, key)
        except (ClientError, BotoCoreError) as e:
            raise self._fail(e, doing) from e
        except Exception as e:  # boto3's S3UploadFailedError wraps ClientError
            raise self._fail(getattr(e, "__cause__", None) or e, doing) from e

    def _list(self, prefix: str, doing: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(**kwargs):
                for item in page.get("CommonPrefixes") or []:
                    yield {"Prefix": item["Prefix"]}
                yield from page.get("Contents") or []
        except (ClientError, BotoCoreError) as e:
            raise self._fail(e, doing) from e

    # --- records ----------------------------------------------------------------------------

    def create(self, record: dict[str, Any]) -> None:
        if self.read(record["owner"], record["id"]) is not None:
            raise ConflictError(f"A job with id {record['id']!r} already exists.")
        self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        body = json.dumps(record, indent=1, sort_keys=True).encode()
        key = self._key(record["owner"], record["id"], "job.json")
        self._put(key, body, "saving the job record", "application/json")
        self._put_index(record, body)
        _announce_written(self.location, record)

    #: Attempts of a conditional record write while other writers keep changing it.
    CONDITIONAL_TRIES = 5

    def write_unless_ended(self, record: dict[str, Any]) -> dict[str, Any] | None:
        body = json.dumps(record, indent=1, sort_keys=True).encode()
        key = self._key(record["owner"], record["id"], "job.json")
        for _ in range(self.CONDITIONAL_TRIES):
            response = self._open(key, "reading the job record")
            etag = "" if response is None else str(response.get("ETag") or "")
            stored = (
                None if response is None else self._parse(bytes(response["Body"].read()), record["owner"])
            )
            if _ended(stored, record["owner"]):
                return stored
            # Only over the record just read: a stop written in between makes S3 refuse it (412).
            if self._put(key, body, "saving the job record", "application/json", if_match=etag):
                self._put_index(record, body)
                _announce_written(self.location, record)
                return None
        raise BackendError(
            f"The record of job {record['id']!r} in s3://{self.bucket} kept changing while it was being saved."
        )

    def _put_index(self, record: dict[str, Any], body: bytes) -> None:
        """The same record in the owner's index, which the list reads with one LIST (see list())."""
        check_id(record["id"])
        key = f"{self._owner_base(record['owner'])}{INDEX_DIR}/{record['id']}.json"
        self._put(key, body, "indexing the job record", "application/json")

    def read(self, owner: str, job_id: str) -> dict[str, Any] | None:
        return self._parse(self._get(self._key(owner, job_id, "job.json"), "reading the job record"), owner)

    @staticmethod
    def _parse(raw: bytes | None, owner: str) -> dict[str, Any] | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return data if isinstance(data, dict) and data.get("owner") == owner else None

    def list(self, owner: str) -> list[dict[str, Any]]:
        """The owner's records: one LIST of the owner's index (``<owner>/_index/<id>.json``, a copy of
        each record written with it), then a GET only of the entries whose ETag changed since this
        store object last read them. Jobs' logs and results are never listed.

        Jobs without an index entry (written by an older version) are found once per store
        object by listing the owner's job folders, and indexed then.
        The records returned are shared with that cache: callers must not change them.
        """
        base = self._owner_base(owner)
        index = f"{base}{INDEX_DIR}/"
        out: dict[str, dict[str, Any]] = {}
        seen: set[str] = set()
        indexed: set[str] = set()
        for item in self._list(index, "listing jobs"):
            key = item.get("Key", "")
            job_id = key[len(index) :].removesuffix(".json")
            if not key.endswith(".json") or not _ID_RE.match(job_id):
                continue
            seen.add(key)
            indexed.add(job_id)
            version = (str(item.get("ETag", "")), str(item.get("LastModified", "")))
            cached = self._listed.get(key)
            if cached is not None and cached[0] == version:
                record = cached[1]
            else:
                record = self._parse(self._get(key, "reading the job index"), owner)
                self._listed[key] = (version, record)
            if record is not None:
                out[job_id] = record
        for gone in [k for k in list(self._listed) if k.startswith(index) and k not in seen]:
            self._listed.pop(gone, None)
        if owner not in self._indexed_owners:
            out.update(self._index_unindexed(owner, base, indexed))
            self._indexed_owners.add(owner)
        return list(out.values())

    def _index_unindexed(self, owner: str, base: str, indexed: set[str]) -> dict[str, dict[str, Any]]:
        """Index the owner's jobs that have no index entry (one LIST of the job folders); their records."""
        found = {}
        for item in self._list(base, "listing jobs", delimiter="/"):
            job_id = item.get("Prefix", "")[len(base) :].rstrip("/")
            if job_id and _ID_RE.match(job_id) and job_id not in indexed:
                record = self.read(owner, job_id)
                if record is not None:
                    self._put_index(record, json.dumps(record, indent=1, sort_keys=True).encode())
                    found[job_id] = record
        return found

    # --- logs -------------------------------------------------------------------------------

    def _chunks(self, owner: str, job_id: str) -> list[tuple[int, int, str]]:
        """``(offset, size, key)`` of the log's objects, in order, up to the first gap."""
        base = self._key(owner, job_id, "logs") + "/"
        found = []
        for item in self._list(base, "reading the job's log"):
            name = item.get("Key", "")[len(base) :]
            if name.isdigit():
                found.append((int(name), int(item["Size"]), item["Key"]))
        found.sort()
        chunks, end = [], 0
        for start, size, key in found:
            if start != end:
                break  # a chunk still being written by the runner; the rest comes next read
            chunks.append((start, size, key))
            end = start + size
        return chunks

    def append_log(self, owner: str, job_id: str, data: bytes) -> None:
        if not data:
            return
        key = (owner, job_id)
        end = self._log_ends.get(key)
        if end is None:
            end = sum(size for _, size, _ in self._chunks(owner, job_id))
        self._put(self._key(owner, job_id, "logs", f"{end:016d}"), data, "saving the job's log", "text/plain")
        self._log_ends[key] = end + len(data)

    def read_log(self, owner: str, job_id: str, offset: int = 0) -> tuple[bytes, int]:
        offset = max(0, offset)
        chunks = self._chunks(owner, job_id)
        check_log_offset(offset, chunks[-1][0] + chunks[-1][1] if chunks else 0)
        parts = []
        for start, size, key in chunks:
            if start + size <= offset:
                continue
            skip = max(0, offset - start)
            data = self._get(key, "reading the job's log", f"bytes={skip}-" if skip else None)
            if data is None:
                break
            parts.append(data)
        data = b"".join(parts)
        return data, offset + len(data)

    # --- results ----------------------------------------------------------------------------

    def put_result(self, owner: str, job_id: str, relpath: str, source: Path) -> None:
        self._upload(source, self._key(owner, job_id, "results", relpath), f"saving the result {relpath}")

    def open_result(self, owner: str, job_id: str, relpath: str) -> ResultFile:
        response = None
        if ".." not in relpath.split("/"):
            key = self._key(owner, job_id, "results", relpath)
            response = self._open(key, f"reading the result {relpath}")
        if response is None:
            raise NotFoundError(f"No result {relpath!r} in job {job_id!r}.")
        return ResultFile(response["Body"], int(response.get("ContentLength") or 0))

    # --- for a head on another machine (the kuberay runner) --------------------------------------

    def put_package(self, owner: str, job_id: str, source: Path, digest: str) -> str:
        """Upload a working-directory zip; return its ``s3://`` URI for Ray's ``working_dir``.

        The name carries the content digest: Ray caches a remote package by its URI.
        """
        key = self._key(owner, job_id, "package", f"working_dir-{digest}.zip")
        self._upload(source, key, "uploading the working directory")
        return f"s3://{self.bucket}/{key}"

    def results_upload(self, owner: str, job_id: str, expires_seconds: int) -> dict[str, Any]:
        """A presigned POST with which a head uploads files under the job's ``results/`` and nowhere else.

        ``{"url", "fields", "prefix"}``: the head needs no AWS credentials of its own, and the
        signature is good for ``expires_seconds`` (bounded by the server's own credentials).
        """
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = self._key(owner, job_id, "results") + "/"
        try:
            post = self._client.generate_presigned_post(
                self.bucket,
                prefix + "${filename}",
                Conditions=[["starts-with", "$key", prefix]],
                ExpiresIn=int(expires_seconds),
            )
        except (ClientError, BotoCoreError) as e:
            raise self._fail(e, "signing the results upload") from e
        return {"url": post["url"], "fields": post["fields"], "prefix": prefix}

    def list_results(self, owner: str, job_id: str) -> list[dict[str, Any]]:
        """The result files a head uploaded: ``[{"path", "size"}]``, sorted by path."""
        prefix = self._key(owner, job_id, "results") + "/"
        found = [
            {"path": item["Key"][len(prefix) :], "size": int(item.get("Size") or 0)}
            for item in self._list(prefix, "listing the results")
            if "Key" in item and not item["Key"].endswith("/")
        ]
        return sorted(found, key=lambda r: r["path"])


class JobStores:
    """The stores a server knows: the local one, the configured S3 one, and S3 places jobs were sent to.

    Jobs may name their own bucket (``"store": {"type": "s3", "bucket": ...}``); such places
    are remembered in ``<state_dir>/jobs/.locations.json`` so the job list finds them again.
    """

    def __init__(
        self,
        state_dir: str,
        default_type: str = "local",
        s3_bucket: str = "",
        s3_prefix: str = "",
        s3_endpoint_url: str = "",
        s3_region: str = "",
    ) -> None:
        self.local = LocalJobStore(Path(state_dir) / "jobs")
        self.default_type = default_type
        self.s3_bucket = s3_bucket
        self.s3_prefix = s3_prefix.strip("/")
        self.s3_endpoint_url = s3_endpoint_url
        self.s3_region = s3_region
        self._opened: dict[tuple[str, str], S3JobStore] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Any) -> JobStores:
        """From ``EKSRay`` settings (``state_dir`` and the ``job_*`` traits)."""
        return cls(
            config.state_dir,
            config.job_store,
            config.job_s3_bucket,
            config.job_s3_prefix,
            config.job_s3_endpoint_url,
            config.job_s3_region,
        )

    def default_spec(self) -> dict[str, Any]:
        """The ``store`` a job gets when it names none, and the defaults of an ``s3`` one."""
        return {"type": self.default_type, "bucket": self.s3_bucket, "prefix": self.s3_prefix}

    def open(self, location: dict[str, Any]) -> JobStore:
        """The store of a resolved spec's or a record's ``store``."""
        if location.get("type") != "s3":
            return self.local
        key = (location["bucket"], (location.get("prefix") or "").strip("/"))
        with self._lock:
            if key not in self._opened:
                self._opened[key] = S3JobStore(key[0], key[1], self.s3_endpoint_url, self.s3_region)
            return self._opened[key]

    @property
    def _index(self) -> Path:
        return self.local.root / ".locations.json"

    def remember(self, location: dict[str, Any]) -> None:
        if location.get("type") != "s3":
            return
        entry = {"type": "s3", "bucket": location["bucket"], "prefix": location.get("prefix") or ""}
        self.local.root.mkdir(parents=True, exist_ok=True)
        with open(self.local.root / ".locations.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            known = read_json(self._index) or []
            if entry not in known:
                write_json_atomic(self._index, [*known, entry])

    def known(self) -> list[JobStore]:
        """Every store to list jobs from: local, the configured S3 place, the remembered ones."""
        locations: list[dict[str, Any]] = []
        if self.s3_bucket:
            locations.append({"type": "s3", "bucket": self.s3_bucket, "prefix": self.s3_prefix})
        for entry in read_json(self._index) or []:
            if isinstance(entry, dict) and entry.get("bucket"):
                locations.append(entry)
        stores: list[JobStore] = [self.local]
        for location in locations:
            store = self.open(location)
            if store not in stores:
                stores.append(store)
        return stores
