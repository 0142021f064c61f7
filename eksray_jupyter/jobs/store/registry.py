"""The job stores a server knows (:class:`JobStores`): the local one, the configured S3 one, and
S3 places jobs were sent to; and who is told of the records they write."""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...core.state_files import read_json, write_json_atomic
from .base import JobStore, RecordListener, RecordListeners
from .local import LocalJobStore
from .s3 import S3JobStore


class JobStores:
    """The stores a server knows: the local one, the configured S3 one, and S3 places jobs were sent to.

    Jobs may name their own bucket (``"store": {"type": "s3", "bucket": ...}``); such places
    are remembered in ``<state_dir>/jobs/.locations.json`` so the job list finds them again.

    Every store it opens tells the registry's listeners (:meth:`on_record_written`) of the
    records it writes.
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
        self._listeners = RecordListeners()
        self.local = LocalJobStore(Path(state_dir) / "jobs", listeners=self._listeners)
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

    def on_record_written(self, callback: RecordListener) -> Callable[[], None]:
        """Call ``callback(location, record)`` (on the writer's thread, so it must be quick) after
        each record a store of this registry writes; returns the function that stops it.

        The push watcher uses it to report the server's own writes (a submit, a stop, the KubeRay
        follower) at once instead of at its next poll. Other registries' writes, and other
        processes', are not seen.
        """
        return self._listeners.add(callback)

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
                self._opened[key] = S3JobStore(
                    key[0], key[1], self.s3_endpoint_url, self.s3_region, listeners=self._listeners
                )
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
