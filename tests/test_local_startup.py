"""A local cluster's start-up timeline from Ray's logs (the format of Ray's own lines), read incrementally."""

from __future__ import annotations

import time
from pathlib import Path

from eksray_jupyter.backends.local.startup import StartLogs, keepable, timeline, waiting_for

HEAD = "c" * 56
WORKER = "a" * 56


def ray_time(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f",{int(at * 1000) % 1000:03d}"


def gcs_line(at: float, text: str) -> str:
    return f"[{ray_time(at)} I 20090 20102] (gcs_server) gcs_node_manager.cc:111: {text}\n"


def setup(tmp_path: Path) -> tuple[dict, Path]:
    record = {"tempDir": str(tmp_path / "ray"), "startedAt": 1000.0}
    logs = tmp_path / "ray" / "session_latest" / "logs"
    logs.mkdir(parents=True)
    return record, logs


def test_steps_come_from_the_gcs_and_dashboard_logs_in_order(tmp_path: Path) -> None:
    record, logs = setup(tmp_path)
    t0 = time.time() - 60
    record["startedAt"] = t0
    (logs / "gcs_server.out").write_text(
        gcs_line(t0 + 1.5, "GcsServer server started, listening on port 46251.")
        + "- RegisterNode request count: 0\n"
        + gcs_line(t0 + 9.25, f"Registering new node. node_id={HEAD} node_name=x node_address=x")
        + gcs_line(t0 + 12.5, f"Registering new node. node_id={WORKER} node_name=x node_address=x")
    )
    (logs / "dashboard.log").write_text(
        f"{ray_time(t0 + 6.0)}\tINFO http_server_head.py:492 -- Dashboard head http address: 127.0.0.1:1\n"
    )
    workers = {WORKER: {"group": "w", "launchedAt": t0 + 1.6}}
    steps = timeline(record, workers, StartLogs().facts(record))
    assert [(m.step, round(m.at - t0, 2)) for m in steps] == [
        ("head-started", 0.0),
        ("gcs-up", 1.5),
        ("worker-launched", 1.6),
        ("dashboard-up", 6.0),
        ("node-registered", 9.25),
        ("node-registered", 12.5),
    ]
    assert steps[4].message.startswith("Head node registered") and steps[5].node == WORKER
    assert "group w" in steps[5].message


def test_logs_are_read_incrementally_and_a_new_file_starts_over(tmp_path: Path) -> None:
    record, logs = setup(tmp_path)
    t0 = time.time() - 60
    gcs = logs / "gcs_server.out"
    reader = StartLogs()
    # Half a line is not read: the rest comes later.
    line = gcs_line(t0 + 2, "GcsServer server started, listening on port 1.")
    gcs.write_text(line[:30])
    assert reader.facts(record).gcs_up is None
    with open(gcs, "a") as f:
        f.write(line[30:] + gcs_line(t0 + 3, f"Registering new node. node_id={HEAD} node_name=x"))
    facts = reader.facts(record)
    assert facts.gcs_up is not None and round(facts.gcs_up - t0, 1) == 2.0 and HEAD in facts.registered
    # A restarted head writes a new file (new inode): what the old one said is forgotten.
    gcs.unlink()
    gcs.write_text(gcs_line(t0 + 20, "GcsServer server started, listening on port 2."))
    facts = reader.facts(record)
    assert round(facts.gcs_up - t0, 1) == 20.0 and not facts.registered


def test_a_kept_timeline_is_used_without_reading_logs(tmp_path: Path) -> None:
    record, logs = setup(tmp_path)
    t0 = time.time() - 60
    record["startedAt"] = t0
    (logs / "gcs_server.out").write_text(gcs_line(t0 + 1, "GcsServer server started, listening on port 1."))
    steps = timeline(record, {}, StartLogs().facts(record))
    record["startup"] = keepable(steps)
    (logs / "gcs_server.out").unlink()  # gone: the kept steps must not need it
    assert timeline(record, {}, None) == steps


def test_nothing_before_this_start_belongs_to_it(tmp_path: Path) -> None:
    record, _ = setup(tmp_path)
    t0 = time.time() - 60
    record["startedAt"] = t0
    workers = {WORKER: {"group": "w", "launchedAt": t0 - 30}}  # of the head that was restarted
    assert [m.step for m in timeline(record, workers, StartLogs().facts(record))] == ["head-started"]


def test_why_it_is_not_ready_follows_the_steps(tmp_path: Path) -> None:
    record, logs = setup(tmp_path)
    t0 = time.time() - 60
    record["startedAt"] = t0
    gcs = logs / "gcs_server.out"
    reader = StartLogs()

    def reason(groups: list[tuple[str, int, int]]) -> str:
        return waiting_for(timeline(record, {}, reader.facts(record)), groups)

    assert reason([]) == "Starting the head node: its GCS is not up yet"
    gcs.write_text(gcs_line(t0 + 1, "GcsServer server started, listening on port 1."))
    assert "starting the head's dashboard" in reason([])
    (logs / "dashboard.log").write_text(
        f"{ray_time(t0 + 5)}\tINFO x.py:1 -- Dashboard head http address: a\n"
    )
    assert reason([]) == "The GCS and dashboard are up; the head's raylet is starting"
    with open(gcs, "a") as f:
        f.write(gcs_line(t0 + 8, f"Registering new node. node_id={HEAD} node_name=x"))
    assert reason([("w", 1, 3), ("gpu", 0, 0)]) == (
        "The head node is up (drivers can connect); waiting for workers to register: 2 of group w"
    )


def test_registrations_of_an_earlier_start_do_not_make_nodes(tmp_path: Path) -> None:
    # Right after a resume, session_latest is still the suspended start's: its head registered
    # then, not now. Taken for this start's, the cluster would read ready before its GCS is up.
    from eksray_jupyter.backends.local.status import nodes_from_gcs_log

    record, logs = setup(tmp_path)
    t0 = time.time() - 600
    record.update(createdAt=t0, startedAt=t0 + 500)  # resumed at t0 + 500
    (logs / "gcs_server.out").write_text(
        gcs_line(t0 + 10, f"Registering new node. node_id={HEAD} node_name=x")
    )
    reader = StartLogs()
    assert nodes_from_gcs_log(record, {}, reader.facts(record)) == []
    with open(logs / "gcs_server.out", "a") as f:
        f.write(gcs_line(t0 + 510, f"Registering new node. node_id={WORKER} node_name=x"))
    assert [n["node_id"] for n in nodes_from_gcs_log(record, {}, reader.facts(record))] == [WORKER]
