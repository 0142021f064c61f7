"""A job waiting on its cluster says what the cluster waits for (local runner's supervisor)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.models import Cluster, Node, Phase
from eksray_jupyter.core.service import ClusterService
from eksray_jupyter.jobs import supervisor as supervisor_module
from eksray_jupyter.jobs.models import JobState, new_record
from eksray_jupyter.jobs.spec import resolve_job_spec
from eksray_jupyter.jobs.store import JobStores
from eksray_jupyter.jobs.supervisor import Supervisor

MEMORY = "tests.memory_backend.MemoryBackend"


def test_the_job_reason_follows_the_clusters_while_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clusters = ClusterService(EKSRay(state_dir=str(tmp_path), backend=MEMORY, owner="alice"))
    spec = resolve_job_spec(
        {"entrypoint": "python x.py", "clusterName": "x"}, {}, default_store={"type": "local"}
    )
    record = new_record("x-abcde", "alice", spec, "x", {"type": "local"}, "", "local")
    stores = JobStores.from_config(clusters.config)
    stores.local.create(record)
    supervisor = Supervisor(clusters, stores, stores.local, dict(record), tmp_path / "run")

    def starting(reason: str) -> Cluster:
        return Cluster("x", "local", "alice", Phase.STARTING, {}, 0.0, reason=reason)

    head = Node("h", "head", "head", "alive")
    answers = iter(
        [
            starting("Starting the head node: its GCS is not up yet"),  # the first look
            starting("Starting the head node: its GCS is not up yet"),
            starting(
                "The head node is up (drivers can connect); waiting for workers to register: 1 of group w"
            ),
            Cluster("x", "local", "alice", Phase.READY, {}, 0.0, nodes=[head]),
        ]
    )
    monkeypatch.setattr(clusters, "get", lambda name: next(answers))
    monkeypatch.setattr(supervisor_module, "POLL_S", 0.0)
    supervisor.ensure_cluster()

    saved = stores.local.read("alice", "x-abcde")
    reasons = [h["reason"] for h in saved["history"] if h["state"] == JobState.STARTING.value]
    assert reasons == [
        None,
        "waiting for cluster x: Starting the head node: its GCS is not up yet",
        "waiting for cluster x: The head node is up (drivers can connect); waiting for workers to register: "
        "1 of group w",
    ]
