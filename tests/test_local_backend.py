"""Local backend rules that need no running Ray: limits, ports, flags, state read back from disk."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from eksray_jupyter.backends.local import LocalBackend
from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.errors import (
    ConflictError,
    InvalidRequestError,
    LimitExceededError,
    NotFoundError,
    NotReadyError,
)
from eksray_jupyter.core.models import Phase
from eksray_jupyter.core.service import ClusterService


@pytest.fixture
def service(state_dir: Path) -> ClusterService:
    return ClusterService(EKSRay(state_dir=str(state_dir)))


def spec(name: str, **group: Any) -> dict[str, Any]:
    return {
        "name": name,
        "workerGroups": [{"groupName": "cpu", "replicas": 0, "minReplicas": 0, "maxReplicas": 2, **group}],
    }


def test_local_is_the_default_backend(service: ClusterService) -> None:
    assert isinstance(service.backend, LocalBackend)


def test_machine_wide_node_limit(service: ClusterService) -> None:
    service.backend.max_local_nodes = 4
    with pytest.raises(LimitExceededError) as info:
        service.create(spec("big", maxReplicas=5))
    assert "may grow to 6 Ray nodes" in info.value.message
    assert "max_local_nodes" in info.value.message
    assert service.list() == []


def test_port_in_use_is_a_clear_conflict(service: ClusterService) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        request = {"name": "ported", "head": {"rayStartParams": {"dashboard-port": str(port)}}}
        with pytest.raises(ConflictError) as info:
            service.create(request)
    assert f"Port {port} (head.rayStartParams.dashboard-port) is already in use" in info.value.message
    assert service.list() == []


def test_reserved_and_unknown_start_flags_are_refused(service: ClusterService) -> None:
    request = {
        "name": "flags",
        "head": {"rayStartParams": {"address": "10.0.0.1:6379", "no-such-flag": "1"}},
        "workerGroups": [{"groupName": "g", "rayStartParams": {"port": "6379"}}],
    }
    with pytest.raises(InvalidRequestError) as info:
        service.create(request)
    paths = {e.path: e.message for e in info.value.errors}
    assert "is set by eksray" in paths["head.rayStartParams.address"]
    assert "not a `ray start` option" in paths["head.rayStartParams.no-such-flag"]
    assert "is set by eksray" in paths["workerGroups[0].rayStartParams.port"]
    assert service.list() == []


def test_a_cluster_whose_processes_died_is_failed_not_ready(service: ClusterService, state_dir: Path) -> None:
    """State written by an earlier server whose head process is gone reads back as failed."""
    backend = service.backend
    assert isinstance(backend, LocalBackend)
    cdir = backend._dir("ghosty")
    cdir.root.mkdir(parents=True)
    (cdir.logs).mkdir()
    (cdir.logs / "head.log").write_text("starting\nValueError: something failed badly\n")
    cdir.write(
        {
            "name": "ghosty",
            "owner": service.owner,
            "spec": service.config.resolve_spec(spec("ghosty")),
            "createdAt": 1.0,
            "readyAt": 2.0,
            "status": "running",
            "ports": {"gcs": 1, "dashboard": 2, "client": 3},
            "tempDir": str(state_dir / "tmp-ghosty"),
            "objectStoreBytes": 1,
            "head": {"pid": 999_999_999, "createTime": 1.0},
        }
    )
    # A fresh backend (as after a server restart) finds it, and tells the truth about it.
    again = ClusterService(EKSRay(state_dir=str(state_dir)))
    [cluster] = again.list()
    assert cluster.phase == Phase.FAILED
    assert "something failed badly" in (cluster.reason or "")
    assert [e.reason for e in again.events("ghosty")] == ["Failed"]
    again.delete("ghosty")
    assert again.list() == []
    assert not cdir.root.exists()


def test_other_owners_clusters_are_invisible(service: ClusterService, state_dir: Path) -> None:
    other = ClusterService(EKSRay(state_dir=str(state_dir), owner="somebody-else"))
    backend = other.backend
    assert isinstance(backend, LocalBackend)
    cdir = backend._dir("theirs")
    cdir.root.mkdir(parents=True)
    cdir.write(
        {
            "name": "theirs",
            "owner": "somebody-else",
            "spec": {"name": "theirs"},
            "createdAt": 1.0,
            "status": "running",
            "ports": {"gcs": 1, "dashboard": 2, "client": 3},
            "tempDir": "/nonexistent",
            "objectStoreBytes": 1,
            "head": None,
        }
    )
    assert service.list() == []
    for call in (service.get, service.delete, service.events, service.dashboard_address):
        with pytest.raises(NotFoundError):
            call("theirs")
    assert cdir.root.exists()


def test_workers_that_exit_on_their_own_are_replaced(
    service: ClusterService, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose `ray start` died (e.g. timed out on a busy laptop) is replaced, with events."""
    import subprocess
    import sys

    from eksray_jupyter.backends.local import ray_start
    from eksray_jupyter.backends.local.workers import live_workers
    from eksray_jupyter.core import processes

    # Stand-ins for `ray`: the head and any worker just sleep, so no Ray is needed here.
    monkeypatch.setattr(
        ray_start, "ray_command", lambda: [sys.executable, "-c", "import time; time.sleep(120)"]
    )
    backend = service.backend
    assert isinstance(backend, LocalBackend)
    head = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    dead.wait()
    cdir = backend._dir("flaky")
    cdir.logs.mkdir(parents=True)
    (cdir.logs / "worker-cpu-deadbeefdead.log").write_text(
        "Exception: The current node timed out during startup.\n"
    )
    cdir.write(
        {
            "name": "flaky",
            "owner": service.owner,
            "spec": service.config.resolve_spec(
                {**spec("flaky", replicas=1), "autoscaling": {"enabled": False}}
            ),
            "createdAt": 1e12,  # not timed out
            "status": "running",
            "bootstrapped": True,
            "ports": {"gcs": 1, "dashboard": 2, "client": 3},
            "tempDir": str(state_dir / "tmp-flaky"),
            "objectStoreBytes": 1,
            "head": processes.ref_of(head),
        }
    )
    cdir.write_nodes(
        {
            "deadbeefdead" + "0" * 44: {
                "group": "cpu",
                "process": {"pid": dead.pid, "createTime": 1.0},
                "launchedAt": 1.0,
                "tags": {},
            }
        }
    )
    try:
        cluster = service.get("flaky")
        workers = live_workers(cdir)
        assert len(workers) == 1 and "deadbeefdead" + "0" * 44 not in workers
        assert cluster.worker_groups[0].desired == 1
        reasons = [e.reason for e in service.events("flaky")]
        assert reasons == ["WorkerExited", "WorkerReplaced"]
        assert "timed out during startup" in service.events("flaky")[0].message
        service.get("flaky")  # a second reader does not replace it again
        assert len(live_workers(cdir)) == 1
    finally:
        service.delete("flaky")
    assert head.wait(timeout=30) is not None


def test_a_head_that_fails_to_start_is_retried_then_reported(
    service: ClusterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import time

    from eksray_jupyter.backends.local import ray_start

    failing = "print('Exception: The current node timed out during startup.'); raise SystemExit(1)"
    monkeypatch.setattr(ray_start, "ray_command", lambda: [sys.executable, "-c", failing])
    service.create({"name": "unlucky", "workerGroups": []})
    try:
        deadline = time.monotonic() + 60
        while (cluster := service.get("unlucky")).phase != Phase.FAILED:
            assert time.monotonic() < deadline, cluster
            time.sleep(0.1)
        assert "timed out during startup" in (cluster.reason or "")
        reasons = [e.reason for e in service.events("unlucky")]
        assert reasons.count("HeadRestarted") == 2
        assert reasons[-1] == "Failed"
    finally:
        service.delete("unlucky")


def test_ray_processes_get_none_of_the_servers_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    from eksray_jupyter.core import processes

    secrets = {
        "JUPYTERHUB_API_TOKEN": "hub",
        "JPY_SESSION_NAME": "s",
        "JUPYTER_TOKEN": "t",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "AWS_SESSION_TOKEN": "aws2",
        "AWS_PROFILE": "team",
        "KUBECONFIG": "/k",
        "MY_SERVICE_API_KEY": "k",
        "DB_PASSWORD": "p",
        "GITHUB_TOKEN": "g",
        "RAY_AUTH_MODE": "token",
    }
    for name, value in {**secrets, "HOME_OF_DATA": "/data", "LANG": "C.UTF-8"}.items():
        monkeypatch.setenv(name, value)

    env = processes.ray_env({"EXTRA": "1"})
    assert not set(secrets) & set(env)
    assert env["HOME_OF_DATA"] == "/data" and env["LANG"] == "C.UTF-8" and env["EXTRA"] == "1"

    # An admin passes what Ray should have, by name or pattern; everything else stays out.
    passed = processes.ray_env(passed=["RAY_AUTH_MODE", "AWS_PROFILE"])
    assert passed["RAY_AUTH_MODE"] == "token" and passed["AWS_PROFILE"] == "team"
    assert not (set(secrets) - {"RAY_AUTH_MODE", "AWS_PROFILE"}) & set(passed)

    # A job supervisor is ours, not Ray's: it keeps the cloud credentials its S3 store needs,
    # but never Jupyter's tokens.
    child = processes.child_env()
    assert child["AWS_SECRET_ACCESS_KEY"] == "aws"
    assert not {"JUPYTERHUB_API_TOKEN", "JPY_SESSION_NAME", "JUPYTER_TOKEN", "RAY_AUTH_MODE"} & set(child)


LISTENER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
time.sleep(600)
"""


def start_listener(port: int) -> subprocess.Popen[str]:
    """A process listening on ``port`` (0: any), until the test stops it by PID."""
    proc = subprocess.Popen([sys.executable, "-c", LISTENER, str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def test_a_squatted_dashboard_port_is_never_proxied(service: ClusterService) -> None:
    """Once the dashboard died, another process (any user's) may listen on its port: the
    backend hands out the dashboard only while the listener is a process of the cluster."""
    from eksray_jupyter.core import processes

    backend = service.backend
    assert isinstance(backend, LocalBackend)
    port = processes.free_port()
    head = start_listener(port)  # stands in for the head's tree, whose dashboard listens
    squatter: subprocess.Popen[str] | None = None
    new_head: subprocess.Popen[str] | None = None
    try:
        cdir = backend._dir("squat")
        cdir.root.mkdir(parents=True)
        record = {
            "name": "squat",
            "owner": service.owner,
            "spec": service.config.resolve_spec(spec("squat")),
            "createdAt": 1.0,
            "readyAt": 2.0,
            "status": "running",
            "ports": {"gcs": 1, "dashboard": port, "client": 3},
            "tempDir": "/nonexistent",
            "objectStoreBytes": 1,
            "head": processes.ref_of(psutil.Process(head.pid)),
        }
        cdir.write(record)
        assert backend.dashboard_address(service.owner, "squat") == f"http://127.0.0.1:{port}"

        # The dashboard dies, the head lives on; someone else takes the port.
        stop(head)
        new_head = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        cdir.write({**record, "head": processes.ref_of(psutil.Process(new_head.pid))})
        squatter = start_listener(port)
        with pytest.raises(NotReadyError) as info:
            backend.dashboard_address(service.owner, "squat")
        assert f"Port {port}" in info.value.message and "not part of the cluster" in info.value.message
    finally:
        for proc in (head, squatter, new_head):
            if proc is not None:
                stop(proc)


# --- state on disk under concurrent writers (issue 13) -------------------------------------------

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


def stand_in_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Heads and workers that just sleep (their argv still names the cluster's temp dir)."""
    from eksray_jupyter.backends.local import ray_start

    monkeypatch.setattr(ray_start, "ray_command", lambda: list(SLEEP))


def local(service: ClusterService) -> LocalBackend:
    backend = service.backend
    assert isinstance(backend, LocalBackend)
    return backend


def write_running(
    service: ClusterService, state_dir: Path, name: str, head: dict[str, Any] | None, **extra: Any
) -> Any:
    """A cluster's directory as a server would have left it, with ``head`` as its head process."""
    cdir = local(service)._dir(name)
    cdir.logs.mkdir(parents=True)
    (cdir.logs / "head.log").write_text("Exception: The current node timed out during startup.\n")
    (cdir.root / ".lock").touch()
    record = {
        "name": name,
        "owner": service.owner,
        "spec": service.config.resolve_spec(spec(name)),
        "createdAt": 1e12,  # not timed out
        "status": "running",
        "ports": {"gcs": 1, "dashboard": 2, "client": 3},
        "tempDir": str(state_dir / f"tmp-{name}"),
        "objectStoreBytes": 1,
        "head": head,
        **extra,
    }
    if isinstance(extra.get("spec"), dict):
        record["spec"] = service.config.resolve_spec(extra["spec"])
    cdir.write(record)
    return cdir


def test_a_cluster_deleted_during_an_observer_pass_stays_deleted(
    service: ClusterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The observer read the cluster, then it was deleted (before it was ever ready): what the
    observer writes next must not bring it back, nor start a head for it."""
    import threading

    from .waiting import wait_until

    stand_in_ray(monkeypatch)
    backend = local(service)
    service.create({"name": "brief", "workerGroups": []})
    taken, resume = threading.Event(), threading.Event()
    passes: list[Any] = []
    read_all = backend._all_records

    def pausing() -> Any:
        records = read_all()
        if threading.current_thread().name == "eksray-local-observer":
            passes.append(records)
            if len(passes) == 1:
                taken.set()
                resume.wait(30)  # the delete happens here, between the read and the writes
        return records

    monkeypatch.setattr(backend, "_all_records", pausing)
    unsubscribe = backend.subscribe(lambda change: None)
    try:
        assert taken.wait(30)
        service.delete("brief")
        resume.set()
        wait_until(lambda: len(passes) >= 3, "two more observer passes")
        assert backend._observer is not None and backend._observer.is_alive()
    finally:
        resume.set()
        unsubscribe()
    assert not backend._dir("brief").root.exists()
    assert service.list() == []


def test_the_bootstrap_never_writes_to_a_deleted_cluster(
    service: ClusterService, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eksray_jupyter.backends.local import bootstrap
    from eksray_jupyter.core import processes

    head = subprocess.Popen(SLEEP)
    try:
        cdir = write_running(
            service, state_dir, "gone", processes.ref_of(head), spec={"name": "gone", "workerGroups": []}
        )

        def answers_then_deleted(port: int, timeout: float) -> bool:
            service.delete("gone")  # the GCS answered; the cluster is deleted right after
            return True

        monkeypatch.setattr(bootstrap, "port_open", answers_then_deleted)
        bootstrap.bootstrap(cdir)
        assert not cdir.root.exists()
    finally:
        stop(head)  # type: ignore[arg-type]


def test_broken_entries_are_skipped_and_never_fatal(
    service: ClusterService, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stray file, a record without a name (as a late bootstrap wrote them) and a torn record
    in clusters/ neither break the list, nor every create, nor the observer."""
    import threading

    from .waiting import wait_until

    stand_in_ray(monkeypatch)
    backend = local(service)
    (backend.root / "notes.txt").write_text("not a cluster")
    (backend.root / "zombie").mkdir()
    (backend.root / "zombie" / "cluster.json").write_text('{"bootstrapped": true}')
    (backend.root / "torn").mkdir()
    (backend.root / "torn" / "cluster.json").write_text('{"name": "torn", "own')
    assert service.list() == []
    seen: list[str] = []
    passes = threading.Semaphore(0)
    read_all = backend._all_records

    def counting() -> Any:
        records = read_all()
        if threading.current_thread().name == "eksray-local-observer":
            passes.release()
        return records

    monkeypatch.setattr(backend, "_all_records", counting)
    unsubscribe = backend.subscribe(lambda change: seen.append(change.name))
    try:
        service.create({"name": "fine", "workerGroups": []})
        assert [c.name for c in service.list()] == ["fine"]
        wait_until(lambda: "fine" in seen, "the observer to report the new cluster")
        for _ in range(2):
            assert passes.acquire(timeout=30)
        assert backend._observer is not None and backend._observer.is_alive()
        # The abandoned record's name is free again; the torn one is reported, not overwritten.
        service.create({"name": "zombie", "workerGroups": []})
        with pytest.raises(ConflictError) as info:
            service.create({"name": "torn", "workerGroups": []})
        assert "cannot be read" in info.value.message and str(backend.root / "torn") in info.value.message
    finally:
        unsubscribe()
        for name in ("fine", "zombie"):
            with contextlib.suppress(NotFoundError):
                service.delete(name)
    assert "torn" in caplog.text and "notes.txt" in caplog.text


def test_a_leftover_directory_does_not_block_its_name(
    service: ClusterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_ray(monkeypatch)
    backend = local(service)
    left = backend.root / "left"
    (left / "logs").mkdir(parents=True)
    (left / "logs" / "head.log").write_text("from a server that died while deleting\n")
    service.create({"name": "left", "workerGroups": []})
    assert service.get("left").name == "left"
    service.delete("left")

    # A live process still writes into it: not provably abandoned, so a clear 409.
    busy = backend.root / "busy"
    (busy / "logs").mkdir(parents=True)
    with open(busy / "logs" / "head.log", "ab") as log:
        user = subprocess.Popen(SLEEP, stdout=log)
    try:
        with pytest.raises(ConflictError) as info:
            service.create({"name": "busy", "workerGroups": []})
        assert str(busy) in info.value.message and str(user.pid) in info.value.message
    finally:
        stop(user)  # type: ignore[arg-type]


def test_two_readers_restart_a_failed_head_once(
    service: ClusterService, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server and a CLI both find the head dead before the cluster was ready: one restart."""
    import threading

    from eksray_jupyter.core import processes

    stand_in_ray(monkeypatch)
    first = local(service)
    second = local(ClusterService(EKSRay(state_dir=str(state_dir))))
    cdir = write_running(
        service,
        state_dir,
        "wobbly",
        {"pid": 999_999_999, "createTime": 1.0},
        spec={"name": "wobbly", "workerGroups": []},
    )
    stopping, second_done = threading.Event(), threading.Event()
    stop_processes = LocalBackend._stop_processes

    def slow_stop(self: LocalBackend, *args: Any) -> None:
        if self is first and not stopping.is_set():
            stopping.set()
            second_done.wait(5)  # the second reader comes now (or waits for the first's lock)
        stop_processes(self, *args)

    monkeypatch.setattr(LocalBackend, "_stop_processes", slow_stop)
    reader = threading.Thread(target=first.get_cluster, args=(service.owner, "wobbly"))
    reader.start()
    try:
        assert stopping.wait(30)
        second.get_cluster(service.owner, "wobbly")
        second_done.set()
        reader.join(60)
        record = cdir.read()
        assert record is not None and processes.is_alive(record["head"])
        assert record["headRestarts"] == 1
        assert [e.reason for e in service.events("wobbly")].count("HeadRestarted") == 1
    finally:
        second_done.set()
        reader.join(60)
        service.delete("wobbly")


def test_scales_from_stale_reads_lose_no_update(
    service: ClusterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_ray(monkeypatch)
    backend = local(service)
    groups = [{"groupName": g, "replicas": 0, "maxReplicas": 1} for g in ("a", "b")]
    service.create({"name": "pair", "workerGroups": groups})
    try:
        stale = service.get("pair")  # both requests were read before either was written
        for group in ("a", "b"):
            request = {"workerGroups": [{"groupName": group, "maxReplicas": 2}]}
            backend.scale_cluster_request(service.owner, "pair", request, stale)
        assert {g.group_name: g.max_replicas for g in service.get("pair").worker_groups} == {"a": 2, "b": 2}
    finally:
        service.delete("pair")


def test_the_node_limit_holds_for_concurrent_scales(
    service: ClusterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clusters may each grow alone, not both: the check and the write are one step."""
    import threading

    stand_in_ray(monkeypatch)
    backend = local(service)
    backend.max_local_nodes = 6
    for name in ("p", "q"):
        service.create({"name": name, "workerGroups": [{"groupName": "g", "replicas": 0, "maxReplicas": 1}]})
    checked, other_done = threading.Event(), threading.Event()
    read_all = backend._all_records

    def pausing() -> Any:
        records = read_all()
        if threading.current_thread().name == "scale-p" and not checked.is_set():
            checked.set()
            other_done.wait(3)  # q scales now (or waits for p's check and write)
        return records

    monkeypatch.setattr(backend, "_all_records", pausing)
    outcomes: dict[str, Any] = {}

    def scale(name: str) -> None:
        try:
            service.scale(name, {"workerGroups": [{"groupName": "g", "maxReplicas": 3}]})
            outcomes[name] = "scaled"
        except LimitExceededError as e:
            outcomes[name] = e

    first = threading.Thread(target=scale, args=("p",), name="scale-p")
    first.start()
    try:
        assert checked.wait(30)
        scale("q")
        other_done.set()
        first.join(60)
        assert sorted(str(v) == "scaled" for v in outcomes.values()) == [False, True], outcomes
        nodes = sum(1 + c.worker_groups[0].max_replicas for c in service.list())
        assert nodes <= backend.max_local_nodes
    finally:
        other_done.set()
        first.join(60)
        for name in ("p", "q"):
            service.delete(name)


def test_groups_without_autoscaling_are_reconciled(
    service: ClusterService, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More workers than the spec's replicas (a lost race, a crash mid-scale): the newest go."""
    from eksray_jupyter.backends.local.workers import launch_worker, live_workers

    stand_in_ray(monkeypatch)
    head = subprocess.Popen(SLEEP, start_new_session=True)
    try:
        from eksray_jupyter.core import processes

        cdir = write_running(
            service,
            state_dir,
            "steady",
            processes.ref_of(head),
            bootstrapped=True,
            spec={**spec("steady", replicas=1), "autoscaling": {"enabled": False}},
        )
        ids = [launch_worker(cdir, "cpu", launched_by="backend") for _ in range(3)]
        service.get("steady")
        assert list(live_workers(cdir)) == ids[:1]
        assert service.get("steady").worker_groups[0].desired == 1
    finally:
        service.delete("steady")
    assert head.wait(timeout=30) is not None


def test_a_corrupt_state_file_is_never_overwritten(
    service: ClusterService, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A torn cluster.json is not 'empty': updates are refused (with an event), never `{}` + change."""
    from eksray_jupyter.backends.local.workers import launch_worker

    stand_in_ray(monkeypatch)
    cdir = write_running(service, state_dir, "torn", None, readyAt=2.0)
    torn = cdir.cluster_file.read_text()[:40]
    cdir.cluster_file.write_text(torn)
    with pytest.raises(ValueError) as refused:
        cdir.update(bootstrapped=True)
    assert type(refused.value).__name__ == "CorruptFileError"
    assert cdir.cluster_file.read_text() == torn
    assert [e["reason"] for e in cdir.read_events()] == ["StateUnreadable"]
    with pytest.raises(ConflictError) as info:
        service.get("torn")
    assert str(cdir.cluster_file) in info.value.message
    assert service.list() == []

    # The same for the node list: a torn nodes.json does not lose the workers it names.
    other = write_running(service, state_dir, "nodes", None, readyAt=2.0)
    other.nodes_file.write_text('{"nodes": {"abc": {"gro')
    with pytest.raises(ValueError):
        launch_worker(other, "cpu", launched_by="autoscaler")
    assert other.nodes_file.read_text() == '{"nodes": {"abc": {"gro'


def test_atomic_writes_reach_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from eksray_jupyter.core.state_files import write_json_atomic, write_text_atomic

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_json_atomic(tmp_path / "a.json", {"a": 1})
    write_text_atomic(tmp_path / "b.yaml", "b: 1\n")
    files = [Path(p).name for p in synced if Path(p).parent == tmp_path]
    assert len(files) == 2 and all(f.startswith((".a.json.", ".b.yaml.")) for f in files), synced
    assert synced.count(str(tmp_path)) == 2


# A delete in another process (a server or an `eksray rc delete`) that stops half way: after the
# record says stopping, while it stops the cluster's processes. argv: state dir, owner, name, how.
HALF_DELETE = """
import os, signal, sys, time
from eksray_jupyter.backends.local import LocalBackend

state_dir, owner, name, how = sys.argv[1:]

def stop_processes(self, *args):
    if how == "dies":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)  # still at it

LocalBackend._stop_processes = stop_processes
LocalBackend(state_dir=state_dir).delete_cluster(owner, name)
"""


def test_a_delete_whose_process_died_is_finished_by_the_next_reader(
    service: ClusterService, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the chaos suite (tests/test_chaos.py): a server or CLI killed half way through a
    delete left the cluster stopping for ever, its processes running and its name taken. The next
    reader finishes such a delete; one whose process still runs is left to it."""
    import os
    import signal

    from eksray_jupyter.core import processes

    from .waiting import wait_until

    stand_in_ray(monkeypatch)
    service.create({"name": "halfway", "workerGroups": []})
    cdir = local(service)._dir("halfway")
    head = processes.process_of(cdir.read()["head"])  # type: ignore[index]
    assert head is not None
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    argv = [sys.executable, "-c", HALF_DELETE, str(state_dir), service.owner, "halfway"]

    # Still deleting (slowly): readers show it stopping and leave it to that process.
    deleter = subprocess.Popen([*argv, "slow"], env=env)
    try:
        wait_until(lambda: (cdir.read() or {}).get("status") == "stopping", "the record marked stopping")
        [cluster] = service.list()
        assert cluster.phase == Phase.STOPPING
        assert head.is_running()
    finally:
        deleter.kill()
        deleter.wait(30)

    # Killed half way: the next reader (here a restarted server) finishes the delete.
    killed = subprocess.run([*argv, "dies"], env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert (cdir.read() or {}).get("status") == "stopping"
    again = ClusterService(EKSRay(state_dir=str(state_dir)))
    assert again.list() == []
    assert not cdir.root.exists()
    head.wait(timeout=30)
    again.create({"name": "halfway", "workerGroups": []})  # the name is free again
    again.delete("halfway")
    assert again.list() == []


def test_a_delete_finished_for_a_dead_deleter_is_pushed(service: ClusterService, state_dir: Path) -> None:
    """Found by the chaos suite: the observer's first round finished such a delete, so it never
    had the cluster to report gone, while a new panel's snapshot (read meanwhile) showed it
    stopping; that panel showed it until reloaded."""
    from .waiting import wait_until

    backend = local(service)
    changes: list[Any] = []
    write_running(
        service,
        state_dir,
        "orphan",
        None,
        status="stopping",
        deletedBy={"pid": 999_999_999, "createTime": 1.0},
    )
    unsubscribe = backend.subscribe(changes.append)
    try:
        # Finished by this reader, or by the observer's first round (shown stopping meanwhile).
        wait_until(lambda: service.list() == [], "the delete finished")
        wait_until(
            lambda: [c.name for c in changes if c.kind == "deleted"] == ["orphan"], "orphan deleted, once"
        )
    finally:
        unsubscribe()


def test_first_workers_are_started_when_the_bootstrap_gave_up_on_a_slow_head(
    service: ClusterService, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the chaos suite on a loaded machine: the head's GCS answered only after the
    bootstrap had given up waiting (120 s), so the first workers were never started and the
    cluster stayed starting for ever. The next reader starts them once the GCS answers."""
    from eksray_jupyter.backends.local.workers import live_workers
    from eksray_jupyter.core import processes

    stand_in_ray(monkeypatch)
    gcs = processes.free_port()
    head = start_listener(gcs)  # the head, whose GCS answers at last
    try:
        cdir = write_running(
            service,
            state_dir,
            "slow",
            processes.ref_of(head),  # type: ignore[arg-type]
            spec={
                "name": "slow",
                "autoscaling": {"enabled": False},
                "workerGroups": [{"groupName": "cpu", "replicas": 1, "maxReplicas": 1}],
            },
            ports={"gcs": gcs, "dashboard": 2, "client": 3},
            bootstrapped=False,
            bootstrap={"pid": 999_999_999, "createTime": 1.0},  # exited, having started nobody
        )
        service.get("slow")
        assert len(live_workers(cdir)) == 1
        assert (cdir.read() or {}).get("bootstrapped") is True
        assert "WorkersStarted" in [e.reason for e in service.events("slow")]
        service.get("slow")  # a second reader starts no more
        assert len(live_workers(cdir)) == 1
    finally:
        service.delete("slow")
        stop(head)


def test_orphans_of_a_dead_root_are_found_by_its_session(tmp_path: Path) -> None:
    """A head that dies while starting leaves Ray's agents behind, re-parented to init and renamed
    (no temp dir in their command line): they are still found, by the head's session."""
    from eksray_jupyter.core import processes

    code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(child.pid, flush=True)\n"
    )
    head = processes.spawn([sys.executable, "-c", code], dict(os.environ), tmp_path / "head.log")
    orphan_pid = int(wait_for_line(tmp_path / "head.log"))
    orphan = psutil.Process(orphan_pid)
    try:
        psutil.Process(head["pid"]).wait(30)  # the "head" has exited; its child lives on
        assert not processes.is_alive(head) and orphan.is_running()
        found = {p.pid for p in processes.cluster_processes([head], marker="/no/such/marker")}
        assert orphan_pid in found
        # Another session's process is not taken for the cluster's.
        assert os.getpid() not in found
    finally:
        with contextlib.suppress(psutil.Error):
            orphan.kill()


def wait_for_line(path: Path, timeout: float = 30.0) -> str:
    from .waiting import wait_until

    return wait_until(lambda: path.exists() and path.read_text().strip(), "a line", timeout=timeout)


def test_a_reader_while_a_cluster_is_created_neither_starts_nor_fails_its_head(
    service: ClusterService, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The record exists before its head is launched: an observer woken by that very write (a
    # file-system notification) must see a cluster starting, not a head to restart or a failure.
    stand_in_ray(monkeypatch)  # were one started after all, it would only sleep
    cdir = write_running(service, state_dir, "newborn", None)
    cluster = service.get("newborn")
    assert (cluster.phase, cluster.reason) == (Phase.STARTING, "Starting the head node")
    record = cdir.read()
    assert record["head"] is None and "headRestarts" not in record and "failure" not in record
    assert "bootstrap" not in record  # nothing was launched for it


def test_a_failure_seen_of_a_head_since_replaced_is_not_recorded(
    service: ClusterService, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eksray_jupyter.core import processes

    # A reader saw the old (dead) head; meanwhile a resume started a new one: the failure it
    # derived is of the old head and must not be written onto the resumed cluster.
    stand_in_ray(monkeypatch)
    backend = local(service)
    old = subprocess.Popen(SLEEP)
    dead = processes.ref_of(old)
    old.kill()
    old.wait()
    cdir = write_running(service, state_dir, "resumed", dead, headRestarts=99)
    stale = cdir.read()
    new_head = subprocess.Popen(SLEEP)
    try:
        with cdir.editing() as fresh:
            fresh["head"] = processes.ref_of(new_head)
        backend._observe_one(cdir, stale)
        assert "failure" not in cdir.read()
    finally:
        new_head.kill()
        new_head.wait()
