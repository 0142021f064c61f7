"""A local cluster's event timeline.

Three sources, merged and sorted: what the backend recorded in ``events.jsonl``
(:func:`record_event`), the Ray autoscaler's own events from the session logs, and
nodes joining and leaving as the dashboard's node table shows them.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from ...core.models import ClusterEvent, Severity
from .ray_start import HEAD_NODE_ID
from .state import ClusterDir


def record_event(cdir: ClusterDir, reason: str, message: str, severity: Severity = Severity.INFO) -> None:
    """Append one of the backend's events to the cluster's timeline."""
    cdir.append_event(
        {
            "id": f"b-{time.time_ns()}",
            "time": time.time(),
            "source": "backend",
            "severity": severity.value,
            "reason": reason,
            "message": message,
        }
    )


def _autoscaler_events(record: dict[str, Any]) -> list[ClusterEvent]:
    events: dict[str, ClusterEvent] = {}
    temp = Path(record["tempDir"])
    # Every node's log monitor may copy the autoscaler's lines: keep one per event id.
    for path in temp.glob("session_*/logs/events/event_AUTOSCALER*.log"):
        with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
            for line in f:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    raw = json.loads(line)
                    severity = {"WARNING": Severity.WARNING, "ERROR": Severity.ERROR}.get(
                        raw.get("severity", "INFO"), Severity.INFO
                    )
                    event_id = str(raw.get("event_id"))
                    events[event_id] = ClusterEvent(
                        time=float(raw["timestamp"]),
                        source="autoscaler",
                        severity=severity,
                        message=raw["message"],
                        id=f"a-{event_id}",
                    )
    return list(events.values())


def _node_events(nodes: list[dict[str, Any]], groups: dict[str, str]) -> list[ClusterEvent]:
    events = []
    for n in nodes:
        node_id = n.get("node_id", "")
        if node_id == HEAD_NODE_ID:
            continue
        group = groups.get(node_id, "unknown")
        if n.get("start_time_ms"):
            events.append(
                ClusterEvent(
                    time=n["start_time_ms"] / 1000,
                    source="ray",
                    severity=Severity.INFO,
                    reason="NodeJoined",
                    message=f"Worker node {node_id[:8]} of group {group} joined the cluster",
                    id=f"n-{node_id}-up",
                )
            )
        if n.get("state") == "DEAD" and n.get("end_time_ms"):
            why = n.get("state_message") or n.get("death_reason_message") or n.get("death_reason") or ""
            events.append(
                ClusterEvent(
                    time=n["end_time_ms"] / 1000,
                    source="ray",
                    severity=Severity.INFO,
                    reason="NodeLeft",
                    message=f"Worker node {node_id[:8]} of group {group} left the cluster"
                    + (f": {why}" if why else ""),
                    id=f"n-{node_id}-down",
                )
            )
    return events


def timeline(
    cdir: ClusterDir,
    record: dict[str, Any],
    ray_nodes: list[dict[str, Any]] | None,
    since: float | None,
) -> list[ClusterEvent]:
    """Every event of the cluster in time order (those after ``since``, if given)."""
    events = [
        ClusterEvent(
            time=e["time"],
            source=e["source"],
            severity=Severity(e["severity"]),
            message=e["message"],
            id=e["id"],
            reason=e.get("reason"),
        )
        for e in cdir.read_events()
    ]
    events += _autoscaler_events(record)
    if ray_nodes:
        groups: dict[str, str] = {}
        with contextlib.suppress(ValueError):  # an unreadable node list: groups from the record
            groups = {nid: n["group"] for nid, n in cdir.read_nodes().items()}
        groups.update(record.get("nodeGroups", {}))
        events += _node_events(ray_nodes, groups)
    events.sort(key=lambda e: (e.time, e.id))
    if since is not None:
        events = [e for e in events if e.time > since]
    return events
