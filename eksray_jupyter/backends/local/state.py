"""On-disk state of the local backend: one directory per cluster.

Everything the backend knows is here (never only in a server's memory), so a server
restart, the CLI and the magics all see the same clusters::

    <state_dir>/local/clusters/<name>/
        cluster.json      spec, owner, ports, head process, lifecycle status
        nodes.json        worker nodes (pid, group) - shared with the autoscaler's node provider
        events.jsonl      lifecycle events written by the backend
        autoscaler.yaml   the Ray autoscaler's config (rewritten atomically to scale)
        logs/             stdout/stderr of the ray processes

Writers take an exclusive ``fcntl`` lock on ``<dir>/.lock``: the Jupyter server, a CLI
process and the autoscaler's node provider may all write at once. Every change of the record
is a read-modify-write of its freshest state under that lock (:meth:`ClusterDir.editing`),
and nothing recreates a directory that a delete removed: :meth:`ClusterDir.locked` never
creates it, and a writer that finds the record gone under the lock gets :class:`ClusterGone`.
A delete marks the record ``stopping``, stops the processes, then removes the record under
the lock before the directory goes. A file that cannot be read is never taken for "empty":
reads raise :class:`CorruptFileError`, and an update refuses to write (with an event).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...core.state_files import CorruptFileError, read_json_checked, write_json_atomic

__all__ = ["ClusterDir", "ClusterGone", "CorruptFileError"]


class ClusterGone(Exception):
    """The cluster was deleted, or is being deleted: nothing may be written or started for it."""


class ClusterDir:
    """Paths and locked read-modify-write helpers for one cluster's directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cluster_file = root / "cluster.json"
        self.nodes_file = root / "nodes.json"
        self.events_file = root / "events.jsonl"
        self.autoscaler_file = root / "autoscaler.yaml"
        self.lock_file = root / ".lock"
        self.logs = root / "logs"

    @property
    def name(self) -> str:
        return self.root.name

    def exists(self) -> bool:
        return self.cluster_file.is_file()

    def create(self) -> None:
        """Make a new cluster's directory (it must not exist) with its lock and event files."""
        self.root.mkdir()
        for path in (self.lock_file, self.events_file):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cluster's lock. Never creates the directory: a deleted cluster stays deleted."""
        try:
            fd = os.open(self.lock_file, os.O_RDWR)
        except FileNotFoundError:
            if not self.exists():
                raise ClusterGone(self.name) from None
            try:  # a directory made before the lock file was made with it
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
            except (FileNotFoundError, NotADirectoryError):
                raise ClusterGone(self.name) from None
        except NotADirectoryError:
            raise ClusterGone(self.name) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def read(self) -> dict[str, Any] | None:
        """The record, or None if there is none; :class:`CorruptFileError` if it cannot be read."""
        record = read_json_checked(self.cluster_file)
        if record is not None and not isinstance(record, dict):
            raise CorruptFileError(self.cluster_file, "not a JSON object")
        return record

    def current(self) -> dict[str, Any]:
        """The freshest record, for a writer that holds the lock.

        :class:`ClusterGone` if it was deleted. A record that cannot be read is refused (with
        an event), never replaced by the change alone: that would erase its owner and spec.
        """
        try:
            record = self.read()
        except CorruptFileError as e:
            self.append_event(
                {
                    "id": f"b-{time.time_ns()}",
                    "time": time.time(),
                    "source": "backend",
                    "severity": "error",
                    "reason": "StateUnreadable",
                    "message": f"Not changed: {e}. Restore the file, or delete the cluster's "
                    f"directory {self.root} once its processes are stopped.",
                }
            )
            raise
        if record is None:
            raise ClusterGone(self.name)
        return record

    def write(self, record: dict[str, Any]) -> None:
        """Replace the record (the caller holds the lock and has read it with :meth:`current`)."""
        write_json_atomic(self.cluster_file, record)

    @contextlib.contextmanager
    def editing(self) -> Iterator[dict[str, Any]]:
        """Change the record in place on its freshest state, under the lock; written if changed."""
        with self.locked():
            record = self.current()
            before = copy.deepcopy(record)
            yield record
            if record != before:
                self.write(record)

    def update(self, **changes: Any) -> dict[str, Any]:
        with self.editing() as record:
            record.update(changes)
        return record

    def remove_record(self) -> None:
        """Forget the cluster: from now on every writer finds it gone. The caller holds the lock."""
        self.cluster_file.unlink(missing_ok=True)

    def read_nodes(self) -> dict[str, dict[str, Any]]:
        data = read_json_checked(self.nodes_file)
        if data is None:
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("nodes", {}), dict):
            raise CorruptFileError(self.nodes_file, "not a node list")
        nodes: dict[str, dict[str, Any]] = data.get("nodes", {})
        return nodes

    def write_nodes(self, nodes: dict[str, dict[str, Any]]) -> None:
        write_json_atomic(self.nodes_file, {"nodes": nodes})

    def append_event(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, sort_keys=True) + "\n"
        # O_APPEND writes of one short line are atomic, so concurrent writers do not interleave.
        # Never O_CREAT on a deleted cluster: that would bring its directory's entry back.
        try:
            fd = os.open(self.events_file, os.O_WRONLY | os.O_APPEND)
        except (FileNotFoundError, NotADirectoryError):
            if not self.exists():
                return  # deleted: its events went with it
            try:
                fd = os.open(self.events_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except (FileNotFoundError, NotADirectoryError):
                return
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def read_events(self) -> list[dict[str, Any]]:
        """The backend's events; a torn line (a crash mid-append) is skipped, not fatal."""
        events = []
        try:
            with open(self.events_file, encoding="utf-8", errors="replace") as f:
                for line in f:
                    with contextlib.suppress(ValueError):
                        event = json.loads(line) if line.strip() else None
                        if isinstance(event, dict):
                            events.append(event)
        except (FileNotFoundError, NotADirectoryError):
            pass
        return events
