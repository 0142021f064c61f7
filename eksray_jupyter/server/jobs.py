"""REST handlers for jobs: thin translations between HTTP and :class:`~eksray_jupyter.jobs.service.JobService`.

Same rules as :mod:`.handlers`: authenticated and authorized (resource ``eksray``), service
calls on the extension's thread pools (submit and stop on the write pool), domain errors
mapped in :mod:`.errors` only.

``GET /jobs/{id}/logs`` returns a page of the log as text: ``?offset=N`` starts at byte N and
``?limit=L`` answers at most L bytes (default 256 KiB, clamped to ``c.EKSRay.job_log_page_max_bytes``),
or ``?tail=T`` answers the last T bytes from a line start; the headers say where the page starts
and where the next one does (``X-Log-Offset``, ``X-Next-Offset``), the log's size
(``X-Log-Size``) and the job's state. ``?follow=1`` streams it (chunked, page by page) until the
job ends. ``GET /jobs/{id}/results/{path}`` downloads one of the job's result files.
"""

from __future__ import annotations

import asyncio
import mimetypes
import posixpath
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from ..core.errors import FieldError, InvalidRequestError, NotFoundError
from ..jobs.runner import STOP_WAIT_S
from .handlers import EKSRayHandler

if TYPE_CHECKING:
    from ..jobs.service import JobService

JOB_ID = r"(?P<job_id>[^/]+)"
#: A result's path below ``results/`` (tornado URL-decodes it: ``out%2Fa%20b.csv`` is ``out/a b.csv``).
RESULT_PATH = r"(?P<path>.+)"
#: Seconds between two reads of the record while ``DELETE`` waits (on the event loop, not a worker).
STOP_POLL_S = 0.25
#: Seconds between two reads of the store while following a log.
FOLLOW_POLL_S = 1.0
#: Bytes of a result file read and sent at a time.
RESULT_CHUNK = 1 << 20
TEXT = "text/plain; charset=utf-8"


class JobsBaseHandler(EKSRayHandler):
    @property
    def jobs(self) -> JobService:
        return self.services.jobs

    def int_query(self, name: str, default: int) -> int:
        value = self.optional_int_query(name)
        return default if value is None else value

    def optional_int_query(self, name: str) -> int | None:
        """A query argument that must be a whole number, 0 or more (400 saying so otherwise)."""
        raw = self.get_query_argument(name, None)
        if raw is None:
            return None
        value = int(raw) if raw.isascii() and raw.isdigit() else -1
        if value < 0:
            raise InvalidRequestError(
                "Invalid query", [FieldError(name, f"must be a whole number, 0 or more (not {raw[:40]!r})")]
            )
        return value


class JobsHandler(JobsBaseHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        jobs, warnings = await self.call(self.jobs.list_with_warnings)
        # warnings: stores that could not be read (e.g. a deleted bucket); their jobs are missing.
        self.write_json({"jobs": [j.to_dict() for j in jobs], "warnings": warnings})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        # A relative workingDir is relative to the directory the file browser shows.
        root = self.settings.get("server_root_dir")  # may start with '~'; the spec expands it
        job = await self.call_write(self.jobs.submit, self.json_body(), root)
        self.set_header("Location", url_path_join(self.base_url, "eksray/api/jobs", job.id))
        self.write_json(job.to_dict(), status=201)


class JobHandler(JobsBaseHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        job = await self.call(self.jobs.get, job_id)
        self.write_json(job.to_dict())

    @web.authenticated
    @authorized
    async def delete(self, job_id: str) -> None:
        """Stop the job: 200 once it is stopped (or had ended), 202 while it is still stopping.

        The stop request itself is quick; the wait for its effect happens here, on the event loop,
        so a pool worker is only taken for the stop and each short read (the pools serve every
        REST call).
        """
        job = await self.call_write(self.jobs.stop, job_id, 0.0)
        deadline = time.monotonic() + STOP_WAIT_S
        while not job.terminal and time.monotonic() < deadline:
            await asyncio.sleep(STOP_POLL_S)
            job = await self.call(self.jobs.get, job_id)
        self.write_json(job.to_dict(), status=200 if job.terminal else 202)


class JobLogsHandler(JobsBaseHandler):
    """A page of the log (bounded: at most ``job_log_page_max_bytes``), or the log followed."""

    def log_query(self) -> tuple[int, int | None, int | None, bool]:
        """``offset``, ``limit``, ``tail`` and ``follow``, checked (400 naming what to fix)."""
        offset = self.optional_int_query("offset")
        limit = self.optional_int_query("limit")
        tail = self.optional_int_query("tail")
        follow = self.get_query_argument("follow", "0").lower()
        if follow not in ("0", "1", "true", "false"):
            raise InvalidRequestError(
                "Invalid query", [FieldError("follow", "must be 1 or 0 (true or false)")]
            )
        if tail is not None and offset is not None:
            raise InvalidRequestError(
                "Invalid query",
                [FieldError("tail", "give either offset (read on from there) or tail (the end), not both")],
            )
        if tail is not None and limit is not None:
            raise InvalidRequestError(
                "Invalid query",
                [FieldError("limit", "tail already says how many bytes to answer; drop limit")],
            )
        return offset or 0, limit, tail, follow in ("1", "true")

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        offset, limit, tail, follow = self.log_query()
        if follow and not limit:
            limit = self.jobs.log_page_max  # catch up in as few reads as allowed
        chunk = await self.call(self.jobs.logs, job_id, offset, limit, tail)
        self.set_header("Content-Type", TEXT)
        self.set_header("X-Job-State", chunk.state.value)
        self.set_header("X-Log-Offset", str(chunk.offset))
        if not follow:
            self.set_header("X-Next-Offset", str(chunk.next_offset))
            self.set_header("X-Log-Size", str(chunk.size))
            self.set_header("X-Log-Complete", "true" if chunk.complete else "false")
            self.finish(chunk.data, set_content_type=TEXT)  # APIHandler.finish would say JSON
            return
        # Streamed: the body grows while the job runs; the response ends when the job has. One page
        # at a time, each written out before the next is read: a slow reader holds no more.
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # nginx (JupyterHub's proxy) must not buffer
        try:
            while True:
                if chunk.data:
                    self.write(chunk.data)
                await self.flush()
                if chunk.complete:
                    break  # read after the job ended, to the end: nothing more will come
                if chunk.next_offset >= chunk.size or not chunk.data:
                    await asyncio.sleep(FOLLOW_POLL_S)  # caught up: wait for more
                chunk = await self.call(self.jobs.logs, job_id, chunk.next_offset, limit)
        except StreamClosedError:
            return  # the client went away
        self.finish(set_content_type=TEXT)


#: ``mimetypes`` encodings as the type of the file itself (``a.csv.gz`` is gzip, not CSV).
ENCODED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


def content_type(path: str) -> str:
    """The type guessed from the file's name; ``application/octet-stream`` when there is none."""
    guessed, encoding = mimetypes.guess_type(posixpath.basename(path), strict=False)
    if encoding:
        return ENCODED_TYPES.get(encoding, "application/octet-stream")
    return guessed or "application/octet-stream"


def content_disposition(path: str) -> str:
    """``attachment`` with the file's base name: an ASCII ``filename`` (quotes, backslashes, control
    and non-ASCII characters replaced) and, when that differs, the exact name as ``filename*`` (RFC 6266)."""
    name = posixpath.basename(path) or "result"
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in name)
    header = f'attachment; filename="{fallback}"'
    if fallback != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header


class JobResultHandler(JobsBaseHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str, path: str) -> None:
        # JobService.result only serves paths listed in the job's results; refusing '..' (and
        # empty or absolute segments) here too keeps such a path from ever reaching a store.
        if any(part in ("", ".", "..") for part in path.split("/")):
            raise NotFoundError(f"Job {job_id!r} has no result {path!r}.")
        result = await self.call(self.jobs.open_result, job_id, path)
        try:
            self.set_header("Content-Disposition", content_disposition(path))
            self.set_header("Content-Length", str(result.size))
            self.set_header("X-Content-Type-Options", "nosniff")
            # A result is the job's output, not trusted page content: never scripts on this
            # origin, even if a browser renders it instead of saving it.
            self.set_header("Content-Security-Policy", "sandbox; default-src 'none'")
            self.set_header("Cache-Control", "private, no-cache")
            self.set_header("Content-Type", content_type(path))
            # In pieces, each read on the pool: a model of several GiB never sits in memory.
            while chunk := await self.call(result.read, RESULT_CHUNK):
                self.write(chunk)
                try:
                    await self.flush()
                except StreamClosedError:
                    return  # the client went away
        finally:
            # Here, not on the pool: with Content-Length the client may be done (and the server
            # stopping) before a queued close would run. Closing a file or an S3 body is quick.
            result.close()
        self.finish(set_content_type=content_type(path))  # APIHandler.finish would say JSON


def job_handlers(base_url: str) -> list[tuple[str, type[web.RequestHandler]]]:
    api = url_path_join(base_url, "eksray", "api", "jobs")
    return [
        (api, JobsHandler),
        (url_path_join(api, JOB_ID), JobHandler),
        (url_path_join(api, JOB_ID, "logs"), JobLogsHandler),
        (url_path_join(api, JOB_ID, "results", RESULT_PATH), JobResultHandler),
    ]
