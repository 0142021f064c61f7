"""``%eksray`` in an IPython shell on the fake backend: parsing, output bundles, errors, env."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import CapturedIO, capture_output

from eksray_jupyter.core.service import ClusterService
from eksray_jupyter.magics import EKSRayMagics
from eksray_jupyter.services import Services
from tests.fakes import isolate_env, make_service
from tests.magic_cells import fail, run
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def make(tmp_path: Path) -> Callable[..., ClusterService]:
    """Services on one fake state dir; keyword arguments are FakeBackend settings."""
    return lambda **backend: make_service(tmp_path / "state", **backend)


@pytest.fixture
def svc(make: Callable[..., ClusterService]) -> ClusterService:
    return make()


@pytest.fixture
def shell(svc: ClusterService, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    isolate_env(monkeypatch)
    ip = InteractiveShell.instance()
    ip.register_magics(EKSRayMagics(ip, services_factory=lambda: Services(svc)))
    yield ip


def bundles(cap: CapturedIO) -> list[dict[str, str]]:
    return [o.data for o in cap.outputs]


# --- parsing and help --------------------------------------------------------------------------


def test_help_lists_every_command_and_never_exits(shell: InteractiveShell) -> None:
    for line in ("", "--help", "-h"):
        out = run(shell, line).stdout
        for command in ("up", "list", "status", "scale", "events", "dashboard", "use", "connect", "down"):
            assert command in out
    up = run(shell, "up --help").stdout
    assert "usage: %eksray up" in up and "--workers N" in up and "--wait" in up
    assert "GROUP" in run(shell, "scale --help").stdout


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("nope", "invalid choice: 'nope'"),
        ("scale t1", "the following arguments are required: GROUP"),
        ("up --workers x", "'x' is not a whole number"),
        ("up --workers -1", "is not between 0 and 1000"),
        ("up --timeout 0", "more than 0 seconds"),
        ("list extra", "unrecognized arguments: extra"),
        ("status 'unbalanced", "No closing quotation"),
    ],
)
def test_usage_errors_are_one_line(shell: InteractiveShell, line: str, expected: str) -> None:
    message = fail(shell, line)
    assert expected in message
    assert message.startswith("%eksray")


def test_a_failing_cell_shows_one_line_and_stops_run_all(shell: InteractiveShell) -> None:
    with capture_output() as cap:
        result = shell.run_cell("%eksray status nope")
    assert isinstance(result.error_in_exec, UsageError)  # the cell failed: "run all" stops here
    lines = cap.stderr.strip().splitlines()
    assert lines == [
        "UsageError: %eksray status: No cluster named 'nope'. List your clusters to see their names."
    ]


# --- up ----------------------------------------------------------------------------------------


def test_up_picks_a_free_name_makes_it_active_and_points_this_kernel_at_it(
    shell: InteractiveShell, svc: ClusterService
) -> None:
    run(shell, "up")
    run(shell, "up")
    assert [c.name for c in svc.list()] == ["ray-alice-1", "ray-alice-2"]
    assert svc.active_name() == "ray-alice-2"
    assert os.environ["EKSRAY_CLUSTER"] == "ray-alice-2"
    assert os.environ["RAY_ADDRESS"] == svc.get("ray-alice-2").address


def test_up_uses_the_default_profile_and_worker_flags_set_its_first_group(
    shell: InteractiveShell, svc: ClusterService
) -> None:
    run(shell, "up a --workers 3")  # cpu-small allows 2: the bound stretches to include 3
    (cpu,) = svc.get("a").spec["workerGroups"]
    assert (cpu["groupName"], cpu["replicas"], cpu["minReplicas"], cpu["maxReplicas"]) == ("cpu", 3, 0, 3)

    run(shell, "up b --profile tagged --min 1 --max 1")  # replicas carried into the new bounds
    cpu, tagged = svc.get("b").spec["workerGroups"]
    assert (cpu["replicas"], cpu["minReplicas"], cpu["maxReplicas"]) == (1, 1, 1)
    assert (tagged["groupName"], tagged["resources"]) == ("tagged", {"tag": 1})  # the other group is kept


def test_up_reports_invalid_input_and_conflicts_in_one_line(shell: InteractiveShell) -> None:
    assert "no profile 'gpu'" in fail(shell, "up --profile gpu")
    assert "minReplicas (3) must not exceed maxReplicas (1)" in fail(shell, "up x --min 3 --max 1")
    assert "is not a valid name" in fail(shell, "up Bad_Name")
    run(shell, "up t1")
    assert fail(shell, "up t1").startswith("%eksray up: A cluster named 't1' already exists")


def test_up_wait_shows_progress_in_one_updating_display(
    make: Callable[..., ClusterService], monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_env(monkeypatch)
    svc = make(start_seconds=1.5)
    ip = InteractiveShell.instance()
    ip.register_magics(EKSRayMagics(ip, services_factory=lambda: Services(svc)))
    cap = run(ip, "up t1 --workers 1 --wait")
    outputs = cap.outputs
    first = outputs[0]
    display_id = first.transient["display_id"]
    assert "Waiting for t1" in first.data["text/plain"] and "starting" in first.data["text/plain"]
    assert "<table" in first.data["text/html"]
    updates = [o for o in outputs if o.update]
    assert updates and all(o.transient["display_id"] == display_id for o in updates)
    final = updates[-1].data
    assert "t1 (ready, active)" in final["text/plain"]
    assert "<td" in final["text/html"] and "cpu" in final["text/html"]
    assert "ready and active" in outputs[-1].data["text/plain"]


def test_up_wait_reports_a_failed_cluster(
    make: Callable[..., ClusterService], monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_env(monkeypatch)
    svc = make(fail=True)
    ip = InteractiveShell.instance()
    ip.register_magics(EKSRayMagics(ip, services_factory=lambda: Services(svc)))
    message = fail(ip, "up t1 --wait")
    assert message == "%eksray up: Cluster 't1' failed: The head node's ray process exited (fake failure)"


def test_up_wait_times_out_with_a_hint(
    make: Callable[..., ClusterService], monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_env(monkeypatch)
    svc = make(start_seconds=60)
    ip = InteractiveShell.instance()
    ip.register_magics(EKSRayMagics(ip, services_factory=lambda: Services(svc)))
    assert "still starting after 1 s; check its events" in fail(ip, "up t1 --wait --timeout 1")


# --- list, status, scale, events, dashboard -----------------------------------------------------


def test_list_is_a_table_in_html_and_text_marking_the_active_cluster(
    shell: InteractiveShell, svc: ClusterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    (empty,) = bundles(run(shell, "list"))
    assert "No clusters. Create one with %eksray up" in empty["text/plain"]

    svc.create({"name": "a", "profile": "cpu-small"})
    svc.create({"name": "b", "profile": "cpu-small"})
    svc.use("a")
    monkeypatch.setenv("JUPYTER_SERVER_URL", "http://localhost:8888/base/")
    (bundle,) = bundles(run(shell, "list"))
    text, html = bundle["text/plain"], bundle["text/html"]
    rows = text.splitlines()
    assert rows[0].split() == ["NAME", "PHASE", "WORKERS", "AGE", "ADDRESS", "DASHBOARD"]
    assert rows[1].startswith("*  a ") and rows[2].startswith("   b ")
    assert "http://localhost:8888/base/eksray/clusters/a/dashboard/" in text
    assert html.count("<tr>") == 3
    assert '<a href="http://localhost:8888/base/eksray/clusters/b/dashboard/" target="_blank"' in html


def test_status_defaults_to_the_active_cluster(shell: InteractiveShell, svc: ClusterService) -> None:
    assert "You have no active cluster. Create one with %eksray up" in fail(shell, "status")
    svc.create({"name": "old", "profile": "cpu-small"})
    time.sleep(0.01)  # "most recent" is by creation time
    svc.create({"name": "new", "profile": "tagged"})
    (bundle,) = bundles(run(shell, "status"))  # nothing chosen: the most recent ready one
    assert bundle["text/plain"].startswith("new (ready, active)")
    assert "tagged" in bundle["text/html"] and "tag 1" in bundle["text/plain"]
    (bundle,) = bundles(run(shell, "status old"))
    assert bundle["text/plain"].startswith("old (ready) address 127.0.0.1:")
    header = bundle["text/plain"].splitlines()[2].split()
    assert header == ["GROUP", "READY", "DESIRED", "MIN", "MAX", "RESOURCES"]


def test_scale(shell: InteractiveShell, svc: ClusterService) -> None:
    svc.create({"name": "t1", "profile": "cpu-small"})
    run(shell, "scale t1 cpu --replicas 2")
    assert svc.get("t1").worker_groups[0].replicas == 2
    run(shell, "scale t1 cpu --max 1")  # replicas follow the new bound
    group = svc.get("t1").worker_groups[0]
    assert (group.replicas, group.max_replicas) == (1, 1)
    assert fail(shell, "scale t1 cpu") == "%eksray scale: Nothing to change: give --replicas, --min or --max"
    assert "no worker group 'gpu'; groups: cpu" in fail(shell, "scale t1 gpu --replicas 1")
    assert "replicas (3) must be between minReplicas (0) and maxReplicas (1)" in fail(
        shell, "scale t1 cpu --replicas 3"
    )


def test_events_and_follow(
    shell: InteractiveShell, svc: ClusterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc.create({"name": "t1", "profile": "cpu-small"})
    (bundle,) = bundles(run(shell, "events t1"))
    assert "Cluster t1 created" in bundle["text/plain"] and "<table" in bundle["text/html"]

    reads: list[list[str]] = []  # the messages of each read the follower made
    events = svc.events

    def counted(name: str, since: float | None = None) -> Any:
        got = events(name, since=since)
        reads.append([e.message for e in got])
        return got

    monkeypatch.setattr(svc, "events", counted)

    def later() -> None:  # an event once the follower has read, the deletion once it saw the event
        wait_until(lambda: reads, "the follower's first read")
        svc.backend.add_event(svc.owner, "t1", "something new")  # type: ignore[attr-defined]
        wait_until(lambda: any("something new" in messages for messages in reads), "the follower saw it")
        svc.delete("t1")

    thread = threading.Thread(target=later)
    thread.start()
    cap = run(shell, "events --follow")  # the active cluster; returns when it is deleted
    thread.join()
    lines = cap.stdout.splitlines()
    assert lines[0] == "Following events of t1; interrupt the kernel to stop."
    assert [line for line in lines if "something new" in line] and lines[-1] == "t1 was deleted."
    assert sum("Cluster t1 created" in line for line in lines) == 0  # already shown in the table


def test_dashboard_link(make: Callable[..., ClusterService], monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_env(monkeypatch)
    svc = make()
    ip = InteractiveShell.instance()
    ip.register_magics(EKSRayMagics(ip, services_factory=lambda: Services(svc)))
    svc.create({"name": "t1"})
    (bundle,) = bundles(run(ip, "dashboard t1"))
    assert bundle["text/plain"] == "Ray dashboard of t1: http://127.0.0.1:8265"  # no server known: direct
    monkeypatch.setenv("JUPYTER_SERVER_URL", "/user/alice/")  # behind JupyterHub: a path
    (bundle,) = bundles(run(ip, "dashboard"))
    assert bundle["text/plain"] == "Ray dashboard of t1: /user/alice/eksray/clusters/t1/dashboard/"
    assert '<a href="/user/alice/eksray/clusters/t1/dashboard/"' in bundle["text/html"]

    slow = make(start_seconds=60)
    slow.create({"name": "t2"})
    ip.register_magics(EKSRayMagics(ip, services_factory=lambda: Services(slow)))
    assert "The Ray dashboard of 't2' is not up (the cluster is starting)" in fail(ip, "dashboard t2")


# --- use, connect, down ------------------------------------------------------------------------


def test_use_records_the_choice_and_points_this_kernel_at_it(
    shell: InteractiveShell, svc: ClusterService
) -> None:
    svc.create({"name": "a"})
    svc.create({"name": "b"})
    run(shell, "use a")
    assert svc.active_name() == "a"
    assert os.environ["RAY_ADDRESS"] == svc.get("a").address and os.environ["EKSRAY_CLUSTER"] == "a"
    assert "No cluster named 'zz'" in fail(shell, "use zz")


def test_connect_refuses_clearly_when_nothing_answers(
    make: Callable[..., ClusterService], monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_env(monkeypatch)
    svc = make()
    ip = InteractiveShell.instance()
    ip.register_magics(EKSRayMagics(ip, services_factory=lambda: Services(svc)))
    assert "You have no active cluster" in fail(ip, "connect")
    svc.create({"name": "t1"})  # the fake's address is a closed port
    message = fail(ip, "connect t1")
    assert message.startswith("%eksray connect: Nothing answers at 127.0.0.1:")
    failed = make(fail=True)
    ip.register_magics(EKSRayMagics(ip, services_factory=lambda: Services(failed)))
    assert "t1 is failed; only a running cluster can be connected to" in fail(ip, "connect t1")


def test_down_deletes_and_unsets_this_kernels_address(shell: InteractiveShell, svc: ClusterService) -> None:
    run(shell, "up t1")
    run(shell, "up t2")
    run(shell, "use t1")
    run(shell, "down t2")  # not the one this kernel points at
    assert os.environ["EKSRAY_CLUSTER"] == "t1"
    (bundle,) = bundles(run(shell, "down t1"))
    assert bundle["text/plain"] == "Deleted t1."
    assert "RAY_ADDRESS" not in os.environ and "EKSRAY_CLUSTER" not in os.environ
    assert svc.list() == [] and svc.active_name() is None
    assert "No cluster named 't1'" in fail(shell, "down t1")
    assert "required: NAME" in fail(shell, "down")  # never a default for deleting


# --- loading -----------------------------------------------------------------------------------


def test_load_ext_registers_the_magic_without_importing_ray(tmp_path: Path) -> None:
    code = """
import sys, time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
started = time.perf_counter()
ip.run_line_magic("load_ext", "eksray_jupyter")
print("LOAD", time.perf_counter() - started)
assert ip.find_line_magic("eksray") is not None
print("RAY", "ray" in sys.modules)
"""
    env: dict[str, Any] = {**os.environ, "PYTHONPATH": str(REPO), "EKSRAY_STATE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "RAY False" in out.stdout
    load = float(out.stdout.split("LOAD ")[1].split()[0])
    assert load < 2.0, f"loading the extension took {load:.2f} s"


def test_addresses_of_this_machine_with_the_same_port_are_one_cluster() -> None:
    import socket

    import psutil

    from eksray_jupyter.kernel_driver import same_address as _same_address

    own = next(
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    )
    assert _same_address("127.0.0.1:6379", f"{own}:6379")  # how Ray reports a cluster joined via 127.0.0.1
    assert _same_address("localhost:6379", "127.0.0.1:6379")
    assert not _same_address("127.0.0.1:6379", "127.0.0.1:6380")
    assert not _same_address("127.0.0.1:6379", "203.0.113.9:6379")
    assert _same_address("ray://head.example:10001", "head.example:10001")
    assert not _same_address(None, "127.0.0.1:6379")


def test_suspend_resume_and_keepalive(shell: InteractiveShell, svc: ClusterService) -> None:
    svc.create({"name": "t1", "profile": "cpu-small", "lifecycle": {"idleTimeoutMinutes": 30}})
    assert "Lifecycle: suspend after 30 min idle." in bundles(run(shell, "status t1"))[0]["text/plain"]
    out = run(shell, "suspend t1")
    assert (
        "t1 is suspended: no Ray node runs. %eksray resume t1 starts it again."
        in out.outputs[-1].data["text/plain"]
    )
    assert svc.get("t1").phase.value == "suspended"
    assert (
        fail(shell, "keepalive t1")
        == "%eksray keepalive: Cluster 't1' is suspended; resume it to use it again."
    )
    run(shell, "resume t1 --wait --timeout 10")
    assert svc.get("t1").phase.value == "ready"
    run(shell, "keepalive t1")
    assert any(e.reason == "KeptAlive" and "from a notebook" in e.message for e in svc.events("t1"))
    assert "invalid choice: 'nap'" in fail(shell, "up t2 --idle-timeout 5 --idle-action nap")
    assert "lifecycle.idleTimeoutMinutes: must be at most 43200" in fail(shell, "up t2 --idle-timeout 99999")


def test_usage_and_the_cost_in_status(shell: InteractiveShell, svc: ClusterService) -> None:
    svc.create({"name": "demo", "profile": "cpu-small"})
    (bundle,) = bundles(run(shell, "usage"))
    assert "demo" in bundle["text/html"] and "CPU-h" in bundle["text/plain"]  # no prices: resource-hours
    csv_out = run(shell, "usage --csv").stdout
    assert csv_out.splitlines()[0].startswith("name,phase,cpu,") and csv_out.splitlines()[1].startswith(
        "demo,"
    )
    (status,) = bundles(run(shell, "status demo"))
    assert "Usage: " in status["text/plain"] and "no prices are set" in status["text/plain"]
    assert "object store used" in status["text/html"]
