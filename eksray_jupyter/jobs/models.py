"""What a job is: its states and the record every store keeps.

A job record is a plain JSON document (``job.json`` in the job's store directory) with
timestamps in seconds; :class:`Job` reads it and ``to_dict`` gives the JSON of the REST
API (camelCase, ISO times), the same shapes for every runner.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..core.models import iso


class JobState(str, Enum):
    """Where a job is in its life (KubeRay's RayJob deployment status, simplified)."""

    PENDING = "pending"  # accepted and persisted; the runner has not started on it yet
    STARTING = "starting"  # the job's cluster is being created or waited for
    RUNNING = "running"  # submitted to Ray (runtime env setup included)
    SUCCEEDED = "succeeded"  # the entrypoint exited with 0
    FAILED = "failed"  # see ``reason``: exit code and log tail, deadline exceeded, cluster failure, ...
    STOPPED = "stopped"  # stopped on request

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED})


def new_record(
    job_id: str,
    owner: str,
    spec: dict[str, Any],
    cluster_name: str,
    store: dict[str, Any],
    location: str,
    runner: str,
    now: float | None = None,
) -> dict[str, Any]:
    """The first record of a job, as persisted before its runner starts."""
    now = time.time() if now is None else now
    return {
        "id": job_id,
        "name": spec["name"],
        "owner": owner,
        "state": JobState.PENDING.value,
        "reason": None,
        "spec": spec,
        "createdAt": now,
        "updatedAt": now,
        "startedAt": None,
        "finishedAt": None,
        "clusterName": cluster_name,
        "clusterCreated": "clusterName" not in spec,
        "clusterDeletedAt": None,
        "attempts": [],
        "history": [{"state": JobState.PENDING.value, "time": now, "reason": None}],
        "store": store,
        "location": location,
        "results": [],
        "runner": runner,
    }


def transition(record: dict[str, Any], state: JobState, reason: str | None = None) -> dict[str, Any]:
    """Move ``record`` to ``state`` (in place), keeping its history and timestamps; returns it."""
    now = time.time()
    if record.get("state") == state.value and record.get("reason") == reason:
        return record
    record["state"] = state.value
    record["reason"] = reason
    record["updatedAt"] = now
    record.setdefault("history", []).append({"state": state.value, "time": now, "reason": reason})
    if state != JobState.PENDING and record.get("startedAt") is None:
        record["startedAt"] = now
    if state.terminal and record.get("finishedAt") is None:
        record["finishedAt"] = now
    return record


def log_read_interval(log_bytes: int, poll_seconds: float) -> float:
    """How long to wait between two reads of a running Ray job's log.

    Ray's API returns the whole log each time: a long one is read less often (one second
    per MiB, at most every 10 s), so following it stays linear in its size. Runners always
    read it once more when the job has ended.
    """
    return min(10.0, max(poll_seconds, log_bytes / (1 << 20)))


@dataclass
class Job:
    """One job, as read from its store."""

    id: str
    name: str
    owner: str
    state: JobState
    spec: dict[str, Any]
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    reason: str | None = None
    cluster_name: str | None = None
    cluster_created: bool = False
    cluster_deleted_at: float | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    store: dict[str, Any] = field(default_factory=dict)
    location: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)
    runner: str = ""
    #: What the cluster the job created cost, recorded when it is deleted: {"dollars",
    #: "dollarsPerHour", "resourceHours"} (None: the job used a cluster of its owner's, or
    #: its cluster is not deleted yet).
    cost: dict[str, Any] | None = None
    #: The machine whose supervisor drives the job (local runner), if it said.
    runner_host: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        return cls(
            id=record["id"],
            name=record["name"],
            owner=record["owner"],
            state=JobState(record["state"]),
            spec=copy.deepcopy(record["spec"]),
            created_at=record["createdAt"],
            updated_at=record.get("updatedAt") or record["createdAt"],
            started_at=record.get("startedAt"),
            finished_at=record.get("finishedAt"),
            reason=record.get("reason"),
            cluster_name=record.get("clusterName"),
            cluster_created=bool(record.get("clusterCreated")),
            cluster_deleted_at=record.get("clusterDeletedAt"),
            attempts=copy.deepcopy(record.get("attempts") or []),
            history=copy.deepcopy(record.get("history") or []),
            store=dict(record.get("store") or {}),
            location=record.get("location") or "",
            results=copy.deepcopy(record.get("results") or []),
            runner=record.get("runner") or "",
            runner_host=(record.get("supervisor") or {}).get("host"),
            cost=copy.deepcopy(record.get("cost")) if isinstance(record.get("cost"), dict) else None,
        )

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "state": self.state.value,
            "reason": self.reason,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "startedAt": iso(self.started_at),
            "finishedAt": iso(self.finished_at),
            "spec": self.spec,
            "clusterName": self.cluster_name,
            "clusterCreated": self.cluster_created,
            "clusterDeletedAt": iso(self.cluster_deleted_at),
            "attempts": [
                {
                    "attempt": a.get("attempt"),
                    "rayJobId": a.get("rayJobId"),
                    "status": a.get("status") or "SUBMITTING",  # records written before Ray had it
                    "exitCode": a.get("exitCode"),
                    "message": a.get("message"),
                    "startedAt": iso(a.get("startedAt")),
                    "finishedAt": iso(a.get("finishedAt")),
                }
                for a in self.attempts
            ],
            "history": [
                {"state": h["state"], "time": iso(h["time"]), "reason": h.get("reason")} for h in self.history
            ],
            "store": self.store,
            "location": self.location,
            "results": self.results,
            "runner": self.runner,
            "cost": self.cost,
        }
