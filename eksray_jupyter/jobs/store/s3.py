"""Jobs in S3, ``s3://<bucket>/<prefix>/<owner>/<id>/``: the store a head on another machine reaches.

boto3 is imported on first use: the server must start without it.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ...core.errors import BackendError, ConflictError, NotFoundError
from .base import (
    ID_RE,
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

#: The S3 owner folder's index of job records: never a job id (those start with a letter).
INDEX_DIR = "_index"

#: S3 error codes of a conditional write whose object changed (or appeared) meanwhile.
_CHANGED_CODES = ("PreconditionFailed", "ConditionalRequestConflict")


def _error_code(error: Any) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


class S3JobStore(JobStore):
    """Jobs under ``s3://<bucket>/<prefix>/<owner>/<id>/`` (boto3, imported on first use).

    S3 objects cannot be appended to, so the log is a series of objects ``logs/<offset>``
    (zero-padded byte offset of their first byte), one per flush of the runner: an append
    never rewrites what is there. A page of the log (:meth:`read_log`) is ranged GETs
    (``Range: bytes=a-b``) of the objects it overlaps, at most :attr:`LOG_GETS_PER_PAGE`; the
    objects' offsets and sizes come from a LIST, and since they never change, this store
    object remembers them and lists only the keys after the last one it knows.
    """

    #: Ranged GETs one page of a log may take (a log of many small flushes: the page ends sooner).
    LOG_GETS_PER_PAGE = 64
    #: Jobs whose log objects a store object remembers (least recently read forgotten first).
    LOG_INDEXES = 256

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        listeners: RecordListeners | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self.location = {"type": "s3", "bucket": bucket, "prefix": self.prefix}
        self.listeners = listeners
        self._client_obj: Any = None
        self._lock = threading.Lock()
        self._log_ends: dict[tuple[str, str], int] = {}
        # (owner, id) -> the log's objects known so far, (offset, size, key), contiguous from 0
        self._log_parts: OrderedDict[tuple[str, str], list[tuple[int, int, str]]] = OrderedDict()
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

    def _upload(
        self, source: Path, key: str, doing: str, progress: Callable[[int], None] | None = None
    ) -> None:
        """A file to ``key`` (multipart for large ones); ``progress`` gets each chunk's byte count."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.upload_file(str(source), self.bucket, key, Callback=progress)
        except (ClientError, BotoCoreError) as e:
            raise self._fail(e, doing) from e
        except Exception as e:  # boto3's S3UploadFailedError wraps ClientError
            raise self._fail(getattr(e, "__cause__", None) or e, doing) from e

    def _list(
        self, prefix: str, doing: str, delimiter: str | None = None, start_after: str | None = None
    ) -> Iterator[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if start_after:
            kwargs["StartAfter"] = start_after
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
        self._announce_written(record)

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
            if has_ended(stored, record["owner"]):
                return stored
            # Only over the record just read: a stop written in between makes S3 refuse it (412).
            if self._put(key, body, "saving the job record", "application/json", if_match=etag):
                self._put_index(record, body)
                self._announce_written(record)
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
            if not key.endswith(".json") or not ID_RE.match(job_id):
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
            if job_id and ID_RE.match(job_id) and job_id not in indexed:
                record = self.read(owner, job_id)
                if record is not None:
                    self._put_index(record, json.dumps(record, indent=1, sort_keys=True).encode())
                    found[job_id] = record
        return found

    # --- logs -------------------------------------------------------------------------------

    def _chunks(self, owner: str, job_id: str) -> list[tuple[int, int, str]]:
        """``(offset, size, key)`` of the log's objects, in order, up to the first gap.

        Objects are written once and never change: those known already are not listed again
        (LIST from the last known key on). The list returned is shared: callers must not change it.
        """
        job = (owner, job_id)
        base = self._key(owner, job_id, "logs") + "/"
        with self._lock:
            known = self._log_parts.pop(job, [])
        end = known[-1][0] + known[-1][1] if known else 0
        found = []
        for item in self._list(base, "reading the job's log", start_after=known[-1][2] if known else None):
            name = item.get("Key", "")[len(base) :]
            if name.isdigit():
                found.append((int(name), int(item["Size"]), item["Key"]))
        found.sort()
        chunks = list(known)
        for start, size, key in found:
            if start != end:
                break  # a chunk still being written by the runner; the rest comes next read
            chunks.append((start, size, key))
            end = start + size
        with self._lock:
            self._log_parts[job] = chunks
            while len(self._log_parts) > self.LOG_INDEXES:
                self._log_parts.popitem(last=False)
        return chunks

    def _forget_chunks(self, owner: str, job_id: str) -> None:
        with self._lock:
            self._log_parts.pop((owner, job_id), None)

    def append_log(self, owner: str, job_id: str, data: bytes) -> None:
        if not data:
            return
        key = (owner, job_id)
        end = self._log_ends.get(key)
        if end is None:
            chunks = self._chunks(owner, job_id)
            end = chunks[-1][0] + chunks[-1][1] if chunks else 0
        self._put(self._key(owner, job_id, "logs", f"{end:016d}"), data, "saving the job's log", "text/plain")
        self._log_ends[key] = end + len(data)

    def read_log(
        self,
        owner: str,
        job_id: str,
        offset: int = 0,
        limit: int = LOG_PAGE_BYTES,
        tail: int | None = None,
    ) -> LogPage:
        """A page of the log (see :meth:`JobStore.read_log`): one LIST of the log objects not
        known yet, then a ranged GET of each object the page overlaps (at most
        :attr:`LOG_GETS_PER_PAGE`; a tail over more objects starts at the last ones)."""
        chunks = self._chunks(owner, job_id)
        starts = [start for start, _, _ in chunks]
        size = chunks[-1][0] + chunks[-1][1] if chunks else 0
        if tail is not None and len(chunks) > self.LOG_GETS_PER_PAGE:
            first = max(0, bisect.bisect_right(starts, size - tail) - 1)
            if len(chunks) - first > self.LOG_GETS_PER_PAGE:
                # (less one: a tail also reads the byte before it, maybe in the object before)
                tail = size - chunks[1 - self.LOG_GETS_PER_PAGE][0]

        def read_range(start: int, end: int) -> bytes:
            parts: list[bytes] = []
            i = bisect.bisect_right(starts, start) - 1
            position = start
            while position < end and i < len(chunks) and len(parts) < self.LOG_GETS_PER_PAGE:
                first, length, key = chunks[i]
                last = min(end, first + length) - 1
                data = self._get(key, "reading the job's log", f"bytes={position - first}-{last - first}")
                if data is None or len(data) != last - position + 1:  # changed meanwhile: list again
                    self._forget_chunks(owner, job_id)
                    if data:
                        parts.append(data[: last - position + 1])
                    break
                parts.append(data)
                position = last + 1
                i += 1
            return b"".join(parts)

        return read_page(size, read_range, offset, limit, tail)

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

    def put_package(
        self,
        owner: str,
        job_id: str,
        source: Path,
        digest: str,
        progress: Callable[[int], None] | None = None,
    ) -> str:
        """Upload a working-directory zip; return its ``s3://`` URI for Ray's ``working_dir``.

        The name carries the content digest: Ray caches a remote package by its URI.
        """
        key = self._key(owner, job_id, "package", f"working_dir-{digest}.zip")
        self._upload(source, key, "uploading the working directory", progress)
        return f"s3://{self.bucket}/{key}"

    def results_upload(self, owner: str, job_id: str, expires_seconds: int, max_bytes: int) -> dict[str, Any]:
        """A presigned POST with which a head uploads files under the job's ``results/`` and nowhere else.

        ``{"url", "fields", "prefix", "maxBytes", "expiresAt"}``: the head needs no AWS
        credentials of its own. Whoever can read the RayJob can read this too, so it is kept
        narrow: this job's prefix only, files of at most ``max_bytes`` (S3 refuses larger
        ones), valid for ``expires_seconds``.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = self._key(owner, job_id, "results") + "/"
        try:
            post = self._client.generate_presigned_post(
                self.bucket,
                prefix + "${filename}",
                Conditions=[["starts-with", "$key", prefix], ["content-length-range", 0, int(max_bytes)]],
                ExpiresIn=int(expires_seconds),
            )
        except (ClientError, BotoCoreError) as e:
            raise self._fail(e, "signing the results upload") from e
        return {
            "url": post["url"],
            "fields": post["fields"],
            "prefix": prefix,
            "maxBytes": int(max_bytes),
            "expiresAt": int(time.time()) + int(expires_seconds),
        }

    def results_location(self, owner: str, job_id: str, max_bytes: int) -> dict[str, Any]:
        """Where a head uploads results with its own IAM role (no credential inside):
        ``{"bucket", "prefix", "region", "endpointUrl", "maxBytes"}``."""
        return {
            "bucket": self.bucket,
            "prefix": self._key(owner, job_id, "results") + "/",
            "region": self.region,
            "endpointUrl": self.endpoint_url,
            "maxBytes": int(max_bytes),
        }

    def list_results(self, owner: str, job_id: str) -> list[dict[str, Any]]:
        """The result files a head uploaded: ``[{"path", "size"}]``, sorted by path."""
        prefix = self._key(owner, job_id, "results") + "/"
        found = [
            {"path": item["Key"][len(prefix) :], "size": int(item.get("Size") or 0)}
            for item in self._list(prefix, "listing the results")
            if "Key" in item and not item["Key"].endswith("/")
        ]
        return sorted(found, key=lambda r: r["path"])
