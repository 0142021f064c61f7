"""A local cluster's start-up timeline and, while it starts, why it is not ready yet.

The moments come from Ray's own logs, which stamp them to the millisecond, so nobody has to
poll for them: the GCS logs when it listens and when each node registers (a node id the
backend gave a worker is that worker; the other one is the head), the dashboard when it
serves. The head's start and each worker's launch are in the backend's state files. Logs are
read incrementally (only new bytes, per file), and a ready cluster's timeline is kept in its
record, after which its logs are not read again.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core.models import Milestone

# "[2026-12-03 11:44:17,963 I 20090 20090] (gcs_server) grpc_server.cc:144: GcsServer server started, ..."
_GCS_UP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*GcsServer server started")
_REGISTERED = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*Registering new node\. node_id=([0-9a-f]+)"
)
# "2026-12-03 11:44:51,313\tINFO http_server_head.py:492 -- Dashboard head http address: 127.0.0.1:51489"
_DASHBOARD_UP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\s.*Dashboard head http address")

READY_MESSAGE = "Ready: every group has its workers"
MAX_READ = 4 * 1024 * 1024  # per look: a runaway log never stalls a status read


def _stamp(seconds: str, millis: str) -> float:
    """Ray's log time (local time, like the machine's clock) as epoch seconds."""
    return time.mktime(time.strptime(seconds, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000


@dataclass
class StartFacts:
    gcs_up: float | None = None
    dashboard_up: float | None = None
    registered: dict[str, float] = field(default_factory=dict)  # node id -> when the GCS registered it


class _FileScan:
    """What one log file has said so far, read from where the last look stopped."""

    def __init__(self) -> None:
        self.identity: tuple[int, int] | None = None
        self.offset = 0
        self.matches: list[re.Match[str]] = []

    def scan(self, path: Path, patterns: tuple[re.Pattern[str], ...]) -> list[re.Match[str]]:
        try:
            st = path.stat()
        except OSError:
            return self.matches
        identity = (st.st_dev, st.st_ino)
        if identity != self.identity or st.st_size < self.offset:  # a new file (a restarted head)
            self.identity, self.offset, self.matches = identity, 0, []
        if st.st_size == self.offset:
            return self.matches
        try:
            with open(path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(MAX_READ)
        except OSError:
            return self.matches
        end = chunk.rfind(b"\n") + 1  # whole lines only: the rest is read next time
        self.offset += end
        for line in chunk[:end].decode("utf-8", "replace").splitlines():
            for pattern in patterns:
                match = pattern.match(line)
                if match:
                    self.matches.append(match)
        return self.matches


class StartLogs:
    """Incremental readers of every cluster's Ray logs (one per file), shared by all status reads."""

    def __init__(self) -> None:
        self._scans: dict[str, _FileScan] = {}
        self._lock = threading.Lock()

    def _matches(self, path: Path, *patterns: re.Pattern[str]) -> list[re.Match[str]]:
        with self._lock:
            scan = self._scans.setdefault(str(path), _FileScan())
            return list(scan.scan(path, patterns))

    def facts(self, record: dict[str, Any]) -> StartFacts:
        logs = Path(record["tempDir"]) / "session_latest" / "logs"
        out = StartFacts()
        for m in self._matches(logs / "gcs_server.out", _GCS_UP, _REGISTERED):
            at = _stamp(m.group(1), m.group(2))
            if m.re is _GCS_UP:
                out.gcs_up = at if out.gcs_up is None else out.gcs_up
            else:
                out.registered.setdefault(m.group(3), at)
        for m in self._matches(logs / "dashboard.log", _DASHBOARD_UP):
            out.dashboard_up = _stamp(m.group(1), m.group(2))
            break
        return out

    def forget(self, record: dict[str, Any]) -> None:
        """Drop the readers of a deleted cluster's logs."""
        prefix = str(Path(record["tempDir"])) + os.sep
        with self._lock:
            for key in [k for k in self._scans if k.startswith(prefix)]:
                del self._scans[key]


def timeline(
    record: dict[str, Any], workers: dict[str, dict[str, Any]], facts: StartFacts | None
) -> list[Milestone]:
    """The steps of the latest start (or resume), oldest first; ``facts`` None once it is kept."""
    if record.get("startup") is not None:  # kept when it became ready
        return [Milestone(**m) for m in record["startup"]]
    started = record.get("startedAt")
    if started is None or facts is None:
        return []
    steps = [Milestone("head-started", started, "Head process started")]
    if facts.gcs_up is not None:
        steps.append(Milestone("gcs-up", facts.gcs_up, "GCS up: the cluster's address answers"))
    if facts.dashboard_up is not None:
        steps.append(Milestone("dashboard-up", facts.dashboard_up, "Ray dashboard up"))
    for nid, entry in workers.items():
        steps.append(
            Milestone(
                "worker-launched",
                entry["launchedAt"],
                f"Worker {nid[:8]} of group {entry['group']} launched",
                node=nid,
            )
        )
    for nid, at in facts.registered.items():
        if nid in workers:
            message = f"Worker {nid[:8]} of group {workers[nid]['group']} registered with Ray"
        else:
            message = "Head node registered with Ray: drivers can connect"
        steps.append(Milestone("node-registered", at, message, node=nid))
    if record.get("readyAt") is not None:
        steps.append(Milestone("ready", record["readyAt"], READY_MESSAGE))
    # Anything before this start (a worker of a head that was restarted) is not part of it.
    return sorted((m for m in steps if m.at >= started - 1), key=lambda m: m.at)


def keepable(steps: list[Milestone]) -> list[dict[str, Any]]:
    """The timeline as stored in the record once the cluster is ready (``Milestone(**m)`` reads it)."""
    return [dataclasses.asdict(m) for m in steps]


def waiting_for(steps: list[Milestone], groups: list[tuple[str, int, int]]) -> str:
    """Why a starting cluster is not ready, in plain words, from its timeline so far.

    ``groups`` are (name, ready, desired). Says what is being waited for, never how long (that
    is in the timeline): the reason changes only when the cluster moves on.
    """
    done = {m.step for m in steps}
    head_up = any(m.step == "node-registered" and not m.message.startswith("Worker") for m in steps)
    if "gcs-up" not in done:
        return "Starting the head node: its GCS is not up yet"
    if not head_up:
        if "dashboard-up" not in done:
            return "The GCS is up; Ray is starting the head's dashboard, then its raylet"
        return "The GCS and dashboard are up; the head's raylet is starting"
    missing = [(name, desired - ready) for name, ready, desired in groups if ready < desired]
    if missing:
        parts = ", ".join(f"{n} of group {name}" for name, n in missing)
        return f"The head node is up (drivers can connect); waiting for workers to register: {parts}"
    return "Every node is up; waiting for the dashboard to list them"
