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
process and the autoscaler's node provider may all write at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...core.state_files import read_json, write_json_atomic


class ClusterDir:
    """Paths and locked read-modify-write helpers for one cluster's directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cluster_file = root / "cluster.json"
        self.nodes_file = root / "nodes.json"
        self.events_file = root / "events.jsonl"
        self.autoscaler_file = root / "autoscaler.yaml"
        self.logs = root / "logs"

    @property
    def name(self) -> str:
        return self.root.name

    def exists(self) -> bool:
        return self.cluster_file.is_file()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> dict[str, Any] | None:
        return read_json(self.cluster_file)

    def write(self, record: dict[str, Any]) -> None:
        write_json_atomic(self.cluster_file, record)

    def update(self, **changes: Any) -> dict[str, Any]:
        with self.locked():
            record = self.read() or {}
            record.update(changes)
            self.write(record)
            return record

    def read_nodes(self) -> dict[str, dict[str, Any]]:
        return (read_json(self.nodes_file) or {}).get("nodes", {})

    def write_nodes(self, nodes: dict[str, dict[str, Any]]) -> None:
        write_json_atomic(self.nodes_file, {"nodes": nodes})

    def append_event(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, sort_keys=True) + "\n"
        # O_APPEND writes of one short line are atomic, so concurrent writers do not interleave.
        fd = os.open(self.events_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def read_events(self) -> list[dict[str, Any]]:
        try:
            with open(self.events_file, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []
