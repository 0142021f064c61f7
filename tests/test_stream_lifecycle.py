"""Starting and stopping what feeds the push stream, when panels come and go at once.

A reloaded panel closes its socket and opens a new one: the last unsubscribe and the next
subscribe race. Each test forces one interleaving with Events (a stop paused between its
decision and its work, an observer paused in the middle of a round) and checks that the
newest subscriber is served: it gets the next change, and exactly one observer runs.
No Ray: local clusters are records on disk whose processes are gone.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.websocket import WebSocketClientConnection

from eksray_jupyter.backends.kuberay import KubeRayBackend
from eksray_jupyter.backends.local import LocalBackend
from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.models import Change
from eksray_jupyter.core.service import ClusterService
from eksray_jupyter.jobs.watch import JobWatcher

from . import test_kuberay
from .fakekube import FakeKubeServer, pytest_plugin
from .test_jobs_stream import MEMORY, job_service
from .test_kuberay import ALICE_NS, CPU_SPEC, ready, spec_of
from .waiting import eventually, wait_until

# The fake API server's fixtures, used by name below.
fakekube = pytest_plugin.fakekube
fakekube_kubeconfig = pytest_plugin.fakekube_kubeconfig
make_backend = test_kuberay.make_backend

TIMEOUT = 10.0


class Changes:
    """A listener that queues what it hears."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Change] = queue.Queue()

    def __call__(self, change: Change) -> None:
        self.queue.put(change)

    def next_matching(self, match: Callable[[Change], bool], timeout: float = TIMEOUT) -> Change:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching change within {timeout} s")
            try:
                change = self.queue.get(timeout=remaining)
            except queue.Empty:
                raise AssertionError(f"no matching change within {timeout} s") from None
            if match(change):
                return change


def threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


# --- the local backend ----------------------------------------------------------------------------


@pytest.fixture
def local(state_dir: Path) -> Iterator[LocalBackend]:
    service = ClusterService(EKSRay(state_dir=str(state_dir), owner="alice"))
    backend = service.backend
    assert isinstance(backend, LocalBackend)
    backend.observe_interval = 0.02
    yield backend
    backend.close()


def blocked_in(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread`` is (somewhere down its stack) inside a function of that name."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def write_dead_cluster(backend: LocalBackend, name: str, owner: str) -> None:
    """A cluster as an earlier server left it, its head long gone: the observer reports it."""
    cdir = backend._dir(name)
    cdir.root.mkdir(parents=True)
    cdir.logs.mkdir()
    cdir.write(
        {
            "name": name,
            "owner": owner,
            "spec": {"name": name, "workerGroups": []},
            "createdAt": 1.0,
            "readyAt": 2.0,
            "status": "running",
            "ports": {"gcs": 1, "dashboard": 2, "client": 3},
            "tempDir": str(cdir.root / "tmp"),
            "objectStoreBytes": 1,
            "head": {"pid": 999_999_999, "createTime": 1.0},
        }
    )


def is_cluster(name: str) -> Callable[[Change], bool]:
    return lambda change: change.kind == "cluster" and change.name == name


def test_a_late_stop_never_stops_the_observer_of_a_new_subscriber(
    local: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last unsubscribe decides to stop; before it does, a new subscriber arrives."""
    unsubscribe_old = local.subscribe(Changes())
    wait_until(lambda: threads_named("eksray-local-observer"), "the observer runs")
    new = Changes()
    subscribed = threading.Event()
    unsubscribe_new: list[Callable[[], None]] = []
    real_stop = local.stop_observing

    def late_stop() -> None:  # the stop the last unsubscribe decided on, and a panel that comes back
        monkeypatch.setattr(local, "stop_observing", real_stop)
        threading.Thread(
            target=lambda: (unsubscribe_new.append(local.subscribe(new)), subscribed.set()), daemon=True
        ).start()
        # Without the fix the new subscriber is in at once (the observer still runs, so nothing is
        # started), and this stop then stops the observer it relies on. With the fix it waits for
        # this stop to finish, which this bounded wait lets happen.
        subscribed.wait(1.0)
        real_stop()

    monkeypatch.setattr(local, "stop_observing", late_stop)
    unsubscribe_old()
    assert subscribed.wait(TIMEOUT)
    try:
        write_dead_cluster(local, "after", "alice")
        new.next_matching(is_cluster("after"))
        assert len(threads_named("eksray-local-observer")) == 1
    finally:
        unsubscribe_new[0]()
    wait_until(lambda: not threads_named("eksray-local-observer"), "the observer stopped")


def test_a_start_while_the_old_observer_still_finishes_its_round_observes(
    local: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() waits for the old thread to finish its round; a start() meanwhile must still leave
    an observer running once both are done (and only one)."""
    changes = Changes()
    unsubscribe = local.subscribe(changes)
    try:
        wait_until(lambda: threads_named("eksray-local-observer"), "the observer runs")
        in_round, finish_round = threading.Event(), threading.Event()
        real_all_records = local._all_records

        def slow_round() -> list[Any]:
            if threading.current_thread() is old:
                in_round.set()
                assert finish_round.wait(TIMEOUT)
            return real_all_records()

        [old] = threads_named("eksray-local-observer")
        monkeypatch.setattr(local, "_all_records", slow_round)
        assert in_round.wait(TIMEOUT)
        stopper = threading.Thread(target=local.stop_observing, daemon=True)
        stopper.start()
        wait_until(lambda: blocked_in(stopper, "join"), "the stop waits for the old observer")
        local.start_observing()  # as a subscriber that comes back while the stop joins
        finish_round.set()
        stopper.join(TIMEOUT)
        assert not stopper.is_alive()
        wait_until(lambda: not old.is_alive(), "the old observer ended")
        write_dead_cluster(local, "later", "alice")
        changes.next_matching(is_cluster("later"))
        assert threads_named("eksray-local-observer") != [old]
        assert len(threads_named("eksray-local-observer")) == 1
    finally:
        unsubscribe()


# --- the kuberay backend --------------------------------------------------------------------------

KUBERAY_OBSERVER = "eksray-kuberay-observer"


def scaled_to(replicas: int) -> Callable[[Change], bool]:
    return lambda change: (
        change.kind == "cluster"
        and change.cluster is not None
        and change.cluster.worker_groups[0].ready == replicas
    )


@pytest.fixture
def kuberay(make_backend: Callable[..., KubeRayBackend]) -> KubeRayBackend:
    backend = make_backend(dashboard_events=False)
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    ready(backend, "alice", "demo")
    return backend


def test_kuberay_a_late_stop_never_stops_the_dispatcher_of_a_new_subscriber(
    kuberay: KubeRayBackend, fakekube: FakeKubeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    unsubscribe_old = kuberay.subscribe(Changes())
    wait_until(lambda: threads_named(KUBERAY_OBSERVER), "the dispatcher runs")
    new = Changes()
    subscribed = threading.Event()
    unsubscribe_new: list[Callable[[], None]] = []
    real_stop = kuberay.stop_observing

    def late_stop() -> None:  # as in the local test above
        monkeypatch.setattr(kuberay, "stop_observing", real_stop)
        threading.Thread(
            target=lambda: (unsubscribe_new.append(kuberay.subscribe(new)), subscribed.set()), daemon=True
        ).start()
        subscribed.wait(1.0)
        real_stop()

    monkeypatch.setattr(kuberay, "stop_observing", late_stop)
    unsubscribe_old()
    assert subscribed.wait(TIMEOUT)
    try:
        fakekube.autoscale(ALICE_NS, "demo", "cpu", replicas=2)
        new.next_matching(scaled_to(2))
        assert len(threads_named(KUBERAY_OBSERVER)) == 1
    finally:
        unsubscribe_new[0]()
    wait_until(lambda: not threads_named(KUBERAY_OBSERVER), "the dispatcher stopped")


def test_kuberay_a_start_while_the_old_dispatcher_finishes_leaves_exactly_one(
    kuberay: KubeRayBackend, fakekube: FakeKubeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop joins the dispatcher while it is busy with a change; a start comes meanwhile.
    Exactly one dispatcher must remain (two pushed everything twice, and one of them leaked)."""
    changes = Changes()
    unsubscribe = kuberay.subscribe(changes)
    try:
        [old] = wait_until(lambda: threads_named(KUBERAY_OBSERVER), "the dispatcher runs")
        in_dispatch, finish_dispatch = threading.Event(), threading.Event()
        real_build = kuberay.build_safe

        def slow_build(*args: Any) -> Any:
            if threading.current_thread() is old and not finish_dispatch.is_set():
                in_dispatch.set()
                assert finish_dispatch.wait(TIMEOUT)
            return real_build(*args)

        monkeypatch.setattr(kuberay, "build_safe", slow_build)
        fakekube.autoscale(ALICE_NS, "demo", "cpu", replicas=2)
        assert in_dispatch.wait(TIMEOUT)
        stopper = threading.Thread(target=kuberay._observer.stop, daemon=True)
        stopper.start()
        wait_until(lambda: blocked_in(stopper, "join"), "the stop waits for the dispatcher")
        kuberay._observer.start()  # as a subscriber that comes back while the stop joins
        finish_dispatch.set()
        stopper.join(TIMEOUT)
        assert not stopper.is_alive()
        wait_until(lambda: not old.is_alive(), "the old dispatcher ended", timeout=TIMEOUT)
        assert len(threads_named(KUBERAY_OBSERVER)) == 1
        fakekube.autoscale(ALICE_NS, "demo", "cpu", replicas=3)
        changes.next_matching(scaled_to(3))
    finally:
        unsubscribe()
    wait_until(lambda: not threads_named(KUBERAY_OBSERVER), "the dispatcher stopped")


# --- the server's stream --------------------------------------------------------------------------


async def read_json(ws: WebSocketClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.read_message(), timeout)
    assert message is not None, "stream closed"
    return json.loads(message)


async def connect(jp_ws_fetch: Any) -> tuple[WebSocketClientConnection, dict[str, Any]]:
    ws = await jp_ws_fetch("eksray", "api", "stream")
    snapshot = await read_json(ws)
    assert snapshot["type"] == "snapshot"
    assert (await read_json(ws))["type"] == "jobs"
    return ws, snapshot


async def next_not_heartbeat(ws: WebSocketClientConnection) -> dict[str, Any]:
    while (message := await read_json(ws))["type"] == "heartbeat":
        pass
    return message


async def test_a_panel_reloaded_while_the_last_stop_is_slow_is_served_and_the_loop_never_waits(
    jp_ws_fetch: Any, jp_fetch: Any, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = service.backend
    stopping, finish_stop = threading.Event(), threading.Event()
    real_stop = backend.stop_observing

    def slow_stop() -> None:  # as a join of an observer thread busy with a round
        stopping.set()
        finish_stop.wait(TIMEOUT)
        real_stop()

    monkeypatch.setattr(backend, "stop_observing", slow_stop)
    # Before the fix the event loop itself waited for the stop: this lets it go on, eventually.
    watchdog = threading.Timer(TIMEOUT, finish_stop.set)
    watchdog.start()
    try:
        old, _ = await connect(jp_ws_fetch)
        old.close()  # the panel reloads: its old socket goes...
        await eventually(stopping.is_set, "the last unsubscribe stopping the observer")
        new = await jp_ws_fetch("eksray", "api", "stream")  # ... and the new one comes at once
        await jp_fetch("eksray", "api", "clusters")  # the server answers meanwhile
        assert not finish_stop.is_set(), "the event loop waited for the observer's stop"
        finish_stop.set()
        assert (await read_json(new))["type"] == "snapshot"
        assert (await read_json(new))["type"] == "jobs"
        await asyncio.get_running_loop().run_in_executor(None, service.create, {"name": "later"})
        message = await next_not_heartbeat(new)
        assert message.get("name", message.get("cluster", {}).get("name")) == "later"
        assert len(backend._listeners) == 1
        new.close()
    finally:
        watchdog.cancel()
        finish_stop.set()


async def test_heartbeats_flow_while_changes_do_and_a_dead_observer_is_restarted(
    jp_ws_fetch: Any, jp_serverapp: Any, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = jp_serverapp.web_app.settings["eksray_stream_hub"]
    hub.heartbeat_seconds = 0.05
    ws, snapshot = await connect(jp_ws_fetch)
    assert snapshot["heartbeat"] == 0.05  # the panel knows what to expect
    assert await read_json(ws) == {"type": "heartbeat"}

    # The observer dies (an error it does not survive): no more heartbeats, so panels would take
    # the stream for dead. The hub closes the sockets; their panels reconnect for a fresh
    # snapshot, and the first one starts the observer again.
    observing = threading.Event()  # not set: dead
    starts: list[float] = []
    monkeypatch.setattr(type(service.backend), "observing", property(lambda self: observing.is_set()))
    monkeypatch.setattr(service.backend, "start_observing", lambda: (starts.append(1), observing.set()))
    while (message := await asyncio.wait_for(ws.read_message(), TIMEOUT)) is not None:
        assert json.loads(message) == {"type": "heartbeat"}  # only those sent before it died
    assert ws.close_code == 1012
    ws.close()
    assert starts == []
    again, _ = await connect(jp_ws_fetch)
    assert await read_json(again) == {"type": "heartbeat"}
    assert starts == [1]
    again.close()


# --- shutdown -------------------------------------------------------------------------------------


def test_the_last_unsubscribe_waits_for_a_busy_job_watcher_only_so_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    watcher = JobWatcher(job_service(tmp_path), interval=0.02)
    watcher.stop_timeout = 0.2
    reading, release = threading.Event(), threading.Event()
    real_list = watcher._service.list_with_warnings

    def stuck_read() -> Any:  # a store that does not answer
        if watcher.polls > 0:
            reading.set()
            release.wait(TIMEOUT)
        return real_list()

    monkeypatch.setattr(watcher._service, "list_with_warnings", stuck_read)
    watchdog = threading.Timer(TIMEOUT, release.set)  # before the fix the unsubscribe waited for it
    watchdog.start()
    try:
        unsubscribe = watcher.subscribe(lambda change: None)
        assert reading.wait(TIMEOUT)
        unsubscribe()
        assert not release.is_set(), "the unsubscribe waited for the read to end"
        assert not watcher.running
        assert "job watcher's thread did not end within" in caplog.text
    finally:
        release.set()
        watchdog.cancel()


def test_followers_share_one_timeout_when_the_runner_closes(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from eksray_jupyter.backends.kuberay.rayjob_runner import KubeRayJobRunner, _Follower

    class Stuck:
        """A follower's thread that does not end: records how long it was waited for."""

        def __init__(self, name: str) -> None:
            self.name = name
            self.waited: list[float] = []

        def join(self, timeout: float | None = None) -> None:
            self.waited.append(float("inf") if timeout is None else timeout)
            threading.Event().wait(timeout)  # as a thread that does not end in time

        def is_alive(self) -> bool:
            return True

    runner = KubeRayJobRunner(service=ClusterService(EKSRay(state_dir=str(state_dir), backend=MEMORY)))
    threads = [Stuck(f"eksray-rayjob-job-{i}") for i in range(4)]
    for i, thread in enumerate(threads):
        runner._followers[("alice", f"job-{i}")] = _Follower(thread)  # type: ignore[arg-type]
    runner.close(timeout=0.3)
    assert sum(sum(t.waited) for t in threads) <= 0.3  # before: 0.3 s each, 1.2 s in all
    assert "4 RayJob follower(s) did not end within 0.3 s" in caplog.text
    assert "eksray-rayjob-job-3" in caplog.text


async def test_shutdown_never_waits_on_the_event_loop_and_names_what_it_left(
    jp_ws_fetch: Any, jp_serverapp: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    [app] = jp_serverapp.extension_manager.extension_apps["eksray_jupyter"]
    app.shutdown_timeout = 0.5
    hub = jp_serverapp.web_app.settings["eksray_stream_hub"]
    ws, _ = await connect(jp_ws_fetch)  # the job watcher runs
    watcher = hub.job_watcher
    reading, release = threading.Event(), threading.Event()
    real_list = watcher._service.list_with_warnings

    def stuck_read() -> Any:  # a store that does not answer
        reading.set()
        release.wait(TIMEOUT)
        return real_list()

    monkeypatch.setattr(watcher._service, "list_with_warnings", stuck_read)
    # Before the fix the event loop waited for the watcher's thread: let it go on, eventually.
    watchdog = threading.Timer(TIMEOUT, release.set)
    watchdog.start()
    try:
        await eventually(reading.is_set, "the watcher stuck in a read")
        await app.stop_extension()
        assert not release.is_set(), "the shutdown waited for the job watcher"
        assert "eksray: shutdown gave up after 0.5 s stopping the push stream's observer" in caplog.text
        assert "eksray-job-watch" in caplog.text
    finally:
        release.set()
        watchdog.cancel()
        ws.close()
