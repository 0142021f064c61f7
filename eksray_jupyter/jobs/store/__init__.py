"""Where jobs are persisted: records, logs and result files, in a local directory or S3.

Every job lives under ``<root>/<owner>/<id>/``::

    job.json          the record (spec, state, timestamps, reason, attempts, cluster, results)
                      (S3: also copied to ``<root>/<owner>/_index/<id>.json``, which the list reads)
    log.txt           the complete log (local store), appended while the job runs
    logs/<offset>     the same log in S3: one object per flush, keyed by its byte offset

Logs are read in pages (``JobStore.read_log``: an offset and at most ``limit`` bytes, or the
tail), each read touching only that part of the log: a seek in a file, ranged GETs in S3.
    results/...       the result files, relative paths kept

The local root is ``<EKSRay.state_dir>/jobs``; an S3 root is ``s3://<bucket>/<prefix>``.
Records outlive servers and clusters: the job list is read back from the stores.

One writer at a time per record: the server writes the first record, then the runner
(the job's supervisor or RayJob follower) owns it; another process writes again only for
a runner that died or to record a stop. An end is never written over: the runner saves
a running job with :meth:`JobStore.write_unless_ended` (checked and written in one step).

``base`` holds the contract and what the stores share, ``local`` and ``s3`` the two stores,
``registry`` the stores a server knows (:class:`JobStores`) and who hears of their writes.
"""

from __future__ import annotations

from .base import (
    ID_PATTERN,
    LOG_PAGE_BYTES,
    JobStore,
    LogPage,
    RecordListener,
    RecordListeners,
    ResultFile,
    check_id,
    check_log_offset,
    owner_key,
    read_page,
)
from .local import LocalJobStore
from .registry import JobStores
from .s3 import INDEX_DIR, S3JobStore

__all__ = [
    "ID_PATTERN",
    "INDEX_DIR",
    "LOG_PAGE_BYTES",
    "JobStore",
    "JobStores",
    "LocalJobStore",
    "LogPage",
    "RecordListener",
    "RecordListeners",
    "ResultFile",
    "S3JobStore",
    "check_id",
    "check_log_offset",
    "owner_key",
    "read_page",
]
