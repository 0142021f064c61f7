"""The kuberay backend against the real control plane: the real kube-apiserver (schema
validation, defaulting, pruning, RBAC, watches), the real KubeRay operator, scheduler, garbage
collector and KWOK's pod life cycle. Each test has its own users, so its own namespaces.

Here the real components decide what is right; ``tests/fakekube`` is kept for what they
cannot do on this machine (a Ray dashboard, injected faults, RayJob completion).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from eksray_jupyter.backends.kuberay import KubeRayBackend
from eksray_jupyter.backends.kuberay.names import parse_quantity
from eksray_jupyter.core.config import DEFAULT_PROFILES, EKSRay
from eksray_jupyter.core.errors import BackendError, NotFoundError
from eksray_jupyter.core.models import Phase
from eksray_jupyter.core.service import ClusterService
from eksray_jupyter.core.spec import resolve_cluster_spec
from eksray_jupyter.core.usage import Prices

from .k8s import ControlPlane
from .k8s.pytest_plugin import K8sUser
from .waiting import eventually, wait_until

pytestmark = pytest.mark.k8s

# Starting pods on the real control plane takes a few seconds per step on 2 busy cores.
TIMEOUT = 90.0


def spec_of(request: dict[str, Any]) -> dict[str, Any]:
    return resolve_cluster_spec(request, DEFAULT_PROFILES)


def cpu_spec(name: str, replicas: int = 1, autoscaling: bool = False, **group: Any) -> dict[str, Any]:
    worker = {"groupName": "cpu", "replicas": replicas, "minReplicas": 0, "maxReplicas": 5, "cpu": 1, **group}
    return spec_of({"name": name, "workerGroups": [worker], "autoscaling": {"enabled": autoscaling}})


@pytest.fixture
def make_backend(k8s_plane: ControlPlane) -> Iterator[Callable[..., KubeRayBackend]]:
    made: list[KubeRayBackend] = []

    def make(user: K8sUser, **settings: Any) -> KubeRayBackend:
        settings.setdefault("credentials", "kubeconfig")
        settings.setdefault("kubeconfig", str(user.kubeconfig))
        settings.setdefault("create_namespaces", False)
        settings.setdefault("dashboard_poll_seconds", 0.5)
        backend = KubeRayBackend(**settings)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def admin(plane: ControlPlane) -> tuple[Any, Any]:
    import kubernetes.client

    return kubernetes.client.CoreV1Api(plane.admin), kubernetes.client.CustomObjectsApi(plane.admin)


def pods(plane: ControlPlane, namespace: str, selector: str = "") -> list[Any]:
    core, _ = admin(plane)
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def ready(backend: KubeRayBackend, owner: str, name: str) -> Any:
    return wait_until(
        lambda: (c := backend.get_cluster(owner, name)).phase == Phase.READY and c,
        f"{name} ready",
        timeout=TIMEOUT,
    )


# --- create, status, events -----------------------------------------------------------------


def test_create_scale_delete_on_the_real_operator(
    k8s_plane: ControlPlane, k8s_user: Callable[..., K8sUser], make_backend: Callable[..., KubeRayBackend]
) -> None:
    alice = k8s_user("alice")
    backend = make_backend(alice)
    backend.create_cluster(alice.owner, cpu_spec("demo", replicas=1))
    cluster = ready(backend, alice.owner, "demo")
    assert [n.kind for n in cluster.nodes] == ["head", "worker"]
    assert all(n.state == "alive" and n.address.startswith("127.") for n in cluster.nodes), cluster.nodes
    group = cluster.worker_groups[0]
    assert (group.replicas, group.desired, group.ready, group.min_replicas, group.max_replicas) == (
        1,
        1,
        1,
        0,
        5,
    )

    core, crs = admin(k8s_plane)
    service = core.read_namespaced_service("demo-head-svc", alice.namespace)
    assert {p.name for p in service.spec.ports} >= {"dashboard", "gcs-server", "client"}
    # The operator's own events, through the events watch.
    reasons = wait_until(
        lambda: (
            (r := {e.reason for e in backend.cluster_events(alice.owner, "demo")})
            >= {"Created", "CreatedHeadPod", "CreatedWorkerPod", "CreatedService"}
            and r
        ),
        "the operator's events",
        timeout=TIMEOUT,
    )
    assert reasons

    # Up: the operator makes two more workers.
    backend.scale_cluster_request(alice.owner, "demo", _scale("cpu", replicas=3), None)
    wait_until(
        lambda: (
            (g := backend.get_cluster(alice.owner, "demo").worker_groups[0]).ready == 3 and g.desired == 3
        ),
        "three workers",
        timeout=TIMEOUT,
    )
    # Bounds only: replicas stays.
    backend.scale_cluster_request(alice.owner, "demo", _scale("cpu", minReplicas=1, maxReplicas=4), None)
    body = crs.get_namespaced_custom_object("ray.io", "v1", alice.namespace, "rayclusters", "demo")
    group_spec = body["spec"]["workerGroupSpecs"][0]
    assert (group_spec["replicas"], group_spec["minReplicas"], group_spec["maxReplicas"]) == (3, 1, 4)

    # Down without autoscaling: the operator removes the surplus itself.
    backend.scale_cluster_request(alice.owner, "demo", _scale("cpu", replicas=1), None)
    wait_until(
        lambda: len(pods(k8s_plane, alice.namespace, "ray.io/node-type=worker")) == 1,
        "surplus workers deleted",
        timeout=TIMEOUT,
    )
    assert ready(backend, alice.owner, "demo").worker_groups[0].ready == 1

    # Delete: the garbage collector removes the pods and the Service; nothing is left.
    backend.delete_cluster(alice.owner, "demo")
    wait_until(lambda: backend.list_clusters(alice.owner) == [], "cluster gone", timeout=TIMEOUT)
    wait_until(lambda: not pods(k8s_plane, alice.namespace), "pods garbage-collected", timeout=TIMEOUT)
    wait_until(
        lambda: not core.list_namespaced_service(alice.namespace).items,
        "Service garbage-collected",
        timeout=TIMEOUT,
    )
    assert not crs.list_namespaced_custom_object("ray.io", "v1", alice.namespace, "rayclusters")["items"]


def _scale(group: str, **fields: Any) -> dict[str, Any]:
    return {"workerGroups": [{"groupName": group, **fields}]}


def test_scaling_down_with_autoscaling_removes_exactly_the_named_workers(
    k8s_plane: ControlPlane, k8s_user: Callable[..., K8sUser], make_backend: Callable[..., KubeRayBackend]
) -> None:
    alice = k8s_user("alice")
    backend = make_backend(alice)
    backend.create_cluster(alice.owner, cpu_spec("auto", replicas=3, autoscaling=True))
    ready(backend, alice.owner, "auto")
    before = {p.metadata.name for p in pods(k8s_plane, alice.namespace, "ray.io/node-type=worker")}
    assert len(before) == 3

    backend.scale_cluster_request(alice.owner, "auto", _scale("cpu", replicas=1), None)
    _, crs = admin(k8s_plane)
    body = crs.get_namespaced_custom_object("ray.io", "v1", alice.namespace, "rayclusters", "auto")
    victims = set(body["spec"]["workerGroupSpecs"][0]["scaleStrategy"]["workersToDelete"])
    assert len(victims) == 2 and victims <= before
    wait_until(
        lambda: (
            {p.metadata.name for p in pods(k8s_plane, alice.namespace, "ray.io/node-type=worker")}
            == before - victims
        ),
        "exactly the named workers removed",
        timeout=TIMEOUT,
    )
    assert ready(backend, alice.owner, "auto").worker_groups[0].ready == 1


@pytest.mark.parametrize(
    ("resource", "message"), [("cpu", "Insufficient cpu"), ("gpu", "Insufficient nvidia.com/gpu")]
)
def test_a_group_no_node_can_hold_shows_the_schedulers_reason(
    k8s_user: Callable[..., K8sUser], make_backend: Callable[..., KubeRayBackend], resource: str, message: str
) -> None:
    alice = k8s_user("alice")
    backend = make_backend(alice)
    # The biggest KWOK node has 16 CPUs and 4 GPUs.
    group = {"cpu": 64} if resource == "cpu" else {"cpu": 1, "gpu": 8}
    backend.create_cluster(alice.owner, cpu_spec("big", replicas=1, **group))
    cluster = wait_until(
        lambda: (
            (c := backend.get_cluster(alice.owner, "big")).reason and "cannot be scheduled" in c.reason and c
        ),
        "the unschedulable reason",
        timeout=TIMEOUT,
    )
    # Never ready. KubeRay 1.6/1.7 may set RayClusterProvisioned while only the head pod exists
    # (its check runs on the pods its cache holds, without the count check `state: ready` has),
    # so a ready head with a worker no node can hold reads as starting or scaling.
    assert cluster.phase in (Phase.STARTING, Phase.SCALING), cluster.phase
    assert message in (cluster.reason or ""), cluster.reason
    warning = wait_until(
        lambda: [e for e in backend.cluster_events(alice.owner, "big") if e.reason == "FailedScheduling"],
        "the FailedScheduling event",
        timeout=TIMEOUT,
    )[0]
    assert warning.source == "kubernetes" and warning.severity.value == "warning"
    assert message in warning.message


def test_a_pod_larger_than_every_node_is_told_apart_with_what_to_change(
    k8s_user: Callable[..., K8sUser], make_backend: Callable[..., KubeRayBackend]
) -> None:
    # A server that may list nodes (the documented optional rule) compares the waiting pod
    # with every node: the scheduler's "Insufficient cpu" becomes "can never fit" and a fix.
    carol = k8s_user("carol", cluster_wide=True)
    backend = make_backend(carol, create_namespaces=True)
    backend.create_cluster(carol.owner, cpu_spec("huge", replicas=1, cpu=64))
    cluster = wait_until(
        lambda: (c := backend.get_cluster(carol.owner, "huge")).reason and "never fit" in c.reason and c,
        "the never-fits reason",
        timeout=TIMEOUT,
    )
    reason = cluster.reason or ""
    assert "asks for 64 CPU" in reason and "the largest node has 16 CPU, 128.0 GiB memory, 4 GPU" in reason
    assert "ask for at most 16 CPUs per pod" in reason, reason
    # The timeline says where the time went: the head's steps, then the worker's wait.
    steps = wait_until(
        lambda: (
            (t := backend.get_cluster(carol.owner, "huge").timeline)
            and {"node-registered", "not-scheduled"} <= {m.step for m in t}
            and t
        ),
        "the head's steps and the worker's wait in the timeline",
        timeout=TIMEOUT,
    )
    assert steps[0].step == "created"
    head = [m.step for m in steps if m.node and "-head-" in m.node]
    assert head[0] == "pod-created" and head.index("pod-scheduled") < head.index("node-registered"), head
    waiting = next(m for m in steps if m.step == "not-scheduled")
    assert "Insufficient cpu" in waiting.message and waiting.node and "-head-" not in waiting.node


def test_each_pod_is_charged_its_share_of_its_nodes_price(
    k8s_plane: ControlPlane,
    k8s_user: Callable[..., K8sUser],
    make_backend: Callable[..., KubeRayBackend],
    tmp_path: Path,
) -> None:
    # The admin's price table per instance type and capacity type (AWS itself is not reachable
    # here: tests/test_kuberay_pricing.py covers those answers); the real scheduler places pods.
    dave = k8s_user("dave", cluster_wide=True)
    table = {"m5.4xlarge": {"on-demand": 0.768, "spot": 0.3}, "g5.12xlarge": 5.672}
    backend = make_backend(dave, create_namespaces=True, node_prices=table, aws_pricing=False)
    service = ClusterService(EKSRay(state_dir=str(tmp_path), owner=dave.owner), backend)
    service.create(cpu_spec("priced", replicas=1))
    cluster = ready(backend, dave.owner, "priced")
    core, _ = admin(k8s_plane)
    rates = wait_until(
        lambda: (
            (r := backend.price_nodes(backend.get_cluster(dave.owner, "priced"), Prices()))
            and all(rate.dollars_per_hour is not None for rate in r.values())
            and r
        ),
        "every pod priced",
        timeout=TIMEOUT,
    )
    for node in cluster.nodes:
        host = core.read_node(node.host)
        labels = host.metadata.labels
        allocatable = host.status.allocatable
        itype = labels["node.kubernetes.io/instance-type"]
        assert node.instance_type == itype
        # A pod without GPUs pays the mean of its CPU and memory fractions of the node.
        share = (
            1 / parse_quantity(allocatable["cpu"]) + 2 * 1024**3 / parse_quantity(allocatable["memory"])
        ) / 2
        if itype == "g5.12xlarge":
            price, basis = 5.672, "admin price table (g5.12xlarge)"
        elif labels.get("eks.amazonaws.com/capacityType") == "SPOT":
            price, basis = 0.3, "admin price table (m5.4xlarge, spot)"
        else:
            price, basis = 0.768, "admin price table (m5.4xlarge, on-demand)"
        assert rates[node.id].dollars_per_hour == pytest.approx(price * share), (node.host, rates[node.id])
        assert rates[node.id].basis == basis
    report = service.accounting.report()
    total = sum(r.dollars_per_hour or 0.0 for r in rates.values())
    assert report["clusters"][0]["dollarsPerHour"] == pytest.approx(total, abs=1e-6)
    assert report["clusters"][0]["resources"]["memoryGiB"] == 4.0  # head 2 GiB + worker 2 GiB requested
    service.delete("priced")


# --- watches ----------------------------------------------------------------------------------


def test_watches_converge_after_an_apiserver_restart_and_a_compaction(
    k8s_plane: ControlPlane, k8s_user: Callable[..., K8sUser], make_backend: Callable[..., KubeRayBackend]
) -> None:
    alice = k8s_user("alice")
    backend = make_backend(alice, watch_timeout_seconds=3600)
    backend.create_cluster(alice.owner, cpu_spec("demo", replicas=1))
    backend.create_cluster(alice.owner, cpu_spec("other", replicas=0))
    ready(backend, alice.owner, "demo")
    ready(backend, alice.owner, "other")
    stats_before = dict(backend.watch_stats()[alice.namespace])

    # The API server goes away (every watch drops) and comes back; meanwhile nothing is lost.
    k8s_plane.restart_apiserver()
    _, crs = admin(k8s_plane)
    patch = [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 2}]
    crs.patch_namespaced_custom_object(
        "ray.io",
        "v1",
        alice.namespace,
        "rayclusters",
        "demo",
        patch,
        _content_type="application/json-patch+json",
    )
    wait_until(
        lambda: (
            (g := backend.get_cluster(alice.owner, "demo").worker_groups[0]).ready == 2 and g.replicas == 2
        ),
        "the scale made after the restart",
        timeout=TIMEOUT,
    )
    wait_until(
        lambda: backend.watch_stats()[alice.namespace]["watches"] > stats_before["watches"],
        "the watches opened again",
        timeout=TIMEOUT,
    )

    # Compacted history: a watch resuming from before it is answered 410 Gone and re-lists.
    expired_before = backend.watch_stats()[alice.namespace].get("expired", 0)
    k8s_plane.restart_apiserver()
    crs.delete_namespaced_custom_object("ray.io", "v1", alice.namespace, "rayclusters", "other")
    k8s_plane.compact_etcd()
    wait_until(
        lambda: [c.name for c in backend.list_clusters(alice.owner)] == ["demo"],
        "the delete seen",
        timeout=TIMEOUT,
    )
    stats = wait_until(
        lambda: (s := backend.watch_stats()[alice.namespace]).get("expired", 0) > expired_before and s,
        "a 410 and a re-list",
        timeout=TIMEOUT,
    )
    assert stats["lists"] > stats_before["lists"]


# --- isolation ----------------------------------------------------------------------------------


def test_two_service_accounts_never_reach_each_others_clusters(
    k8s_plane: ControlPlane, k8s_user: Callable[..., K8sUser], make_backend: Callable[..., KubeRayBackend]
) -> None:
    alice, bob = k8s_user("alice"), k8s_user("bob")
    alices, bobs = make_backend(alice), make_backend(bob)
    bobs.create_cluster(bob.owner, cpu_spec("secret", replicas=0))
    ready(bobs, bob.owner, "secret")

    # Alice's identity cannot read Bob's namespace at all: the real RBAC says 403.
    with pytest.raises(BackendError) as info:
        alices.list_clusters(bob.owner)
    # The cache for Bob's namespace never syncs; the error carries the API server's refusal.
    message = str(info.value)
    assert f"Cannot read namespace {bob.namespace}" in message and "forbidden" in message.lower(), message
    assert alices.list_clusters(alice.owner) == []
    with pytest.raises(NotFoundError):
        alices.get_cluster(alice.owner, "secret")
    # Nor with her token straight at the API server.
    import kubernetes.client

    with k8s_plane.api_client(alice.token) as client:
        with pytest.raises(kubernetes.client.ApiException) as denied:
            kubernetes.client.CustomObjectsApi(client).delete_namespaced_custom_object(
                "ray.io", "v1", bob.namespace, "rayclusters", "secret"
            )
        assert denied.value.status == 403
    assert [c.name for c in bobs.list_clusters(bob.owner)] == ["secret"]


# --- the REST API, the push stream and the dashboard proxy -------------------------------------


@pytest.fixture
def rest_user(k8s_user: Callable[..., K8sUser]) -> K8sUser:
    # Bound cluster-wide, namespaces included: the server makes the user's namespace itself.
    return k8s_user("carol", cluster_wide=True)


@pytest.fixture
def jp_server_config(state_dir: Path, rest_user: K8sUser) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"eksray_jupyter": True}},
        "EKSRay": {"state_dir": str(state_dir), "backend": "kuberay", "owner": rest_user.owner},
        "KubeRayBackend": {
            "credentials": "kubeconfig",
            "kubeconfig": str(rest_user.kubeconfig),
            "dashboard_access": "apiserver-proxy",
            "dashboard_poll_seconds": 0.5,
        },
    }


async def call(jp_fetch: Any, *path: str, method: str = "GET", body: Any = None) -> Any:
    response = await jp_fetch(
        "eksray", "api", *path, method=method, body=None if body is None else json.dumps(body)
    )
    return json.loads(response.body) if response.body else response.code


async def test_rest_and_stream_on_the_real_control_plane(
    jp_fetch: Any,
    jp_ws_fetch: Any,
    k8s_plane: ControlPlane,
    rest_user: K8sUser,
    k8s_user: Callable[..., K8sUser],
    make_backend: Callable[..., KubeRayBackend],
) -> None:
    ws = await jp_ws_fetch("eksray", "api", "stream")
    try:
        snapshot = json.loads(await asyncio.wait_for(ws.read_message(), 30))
        assert snapshot["type"] == "snapshot" and snapshot["clusters"] == []
        created = await call(
            jp_fetch, "clusters", method="POST", body={"name": "demo", "profile": "cpu-small"}
        )
        assert created["namespace"] == rest_user.namespace
        core, _ = admin(k8s_plane)
        labels = core.read_namespace(rest_user.namespace).metadata.labels
        assert labels["eksray.io/owner"] == rest_user.owner, "the namespace was made by the backend"

        async def pushed_ready() -> bool:
            while True:
                message = json.loads(await asyncio.wait_for(ws.read_message(), TIMEOUT))
                if message["type"] == "cluster" and message["cluster"]["phase"] == "ready":
                    return True

        assert await asyncio.wait_for(pushed_ready(), TIMEOUT)
    finally:
        ws.close()
    detail = await call(jp_fetch, "clusters", "demo")
    assert detail["phase"] == "ready" and detail["dashboardUrl"].endswith("/eksray/clusters/demo/dashboard/")

    async def operator_events() -> Any:
        events = (await call(jp_fetch, "clusters", "demo", "events"))["events"]
        return {"Created", "CreatedHeadPod"} <= {e["reason"] for e in events} and events

    events = await eventually(operator_events, "the operator's events", timeout=TIMEOUT)
    assert rest_user.token not in json.dumps(events)

    # Bad input is a 400 that says what to fix, and changes nothing.
    with pytest.raises(HTTPClientError) as info:
        await call(
            jp_fetch,
            "clusters",
            "demo",
            method="PATCH",
            body={"workerGroups": [{"groupName": "cpu", "maxReplicas": -1}]},
        )
    assert info.value.code == 400 and "maxReplicas" in info.value.response.body.decode()

    # Another user's cluster: a 404 through the API and through the dashboard proxy.
    dave = k8s_user("dave")
    daves = make_backend(dave)
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: daves.create_cluster(dave.owner, cpu_spec("daves"))
    )
    for path in (("eksray", "api", "clusters", "daves"), ("eksray", "clusters", "daves", "dashboard/")):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(*path)
        assert info.value.code == 404, path

    assert await call(jp_fetch, "clusters", "demo", method="DELETE") == 204

    async def gone() -> bool:
        return (await call(jp_fetch, "clusters"))["clusters"] == []

    await eventually(gone, "the cluster gone", timeout=TIMEOUT)
    # Polled off the event loop: the Jupyter server under test runs on it.
    no_pods = asyncio.get_running_loop().run_in_executor
    await eventually(
        lambda: no_pods(None, lambda: not pods(k8s_plane, rest_user.namespace)),
        "pods garbage-collected",
        timeout=TIMEOUT,
    )


# --- the CLI ------------------------------------------------------------------------------------


def face_config(user: K8sUser, tmp_path: Path) -> str:
    """``$EKSRAY_CONFIG`` as the server hands it to kernels (and a CLI may set it): ``user``'s."""
    config = {
        "EKSRay": {"backend": "kuberay", "owner": user.owner, "state_dir": str(tmp_path / "state")},
        "KubeRayBackend": {
            "credentials": "kubeconfig",
            "kubeconfig": str(user.kubeconfig),
            "create_namespaces": False,
        },
    }
    return json.dumps(config)


def test_the_cli_on_the_real_control_plane(
    k8s_plane: ControlPlane, k8s_user: Callable[..., K8sUser], tmp_path: Path
) -> None:
    erin = k8s_user("erin")
    env = {
        "EKSRAY_CONFIG": face_config(erin, tmp_path),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "none"),
        "PATH": "/usr/bin:/bin",
    }

    def eksray(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "eksray_jupyter.cli", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    out = eksray("rc", "create", "cli", "--workers", "1", "--wait")
    assert out.returncode == 0, out.stderr
    listed = eksray("rc", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [(c["name"], c["phase"]) for c in json.loads(listed.stdout)["clusters"]] == [("cli", "ready")]
    out = eksray("rc", "scale", "cli", "cpu", "--replicas", "2", "--wait")
    assert out.returncode == 0, out.stderr
    assert len(pods(k8s_plane, erin.namespace, "ray.io/node-type=worker")) == 2
    bad = eksray("rc", "scale", "cli", "nope", "--replicas", "2")
    assert bad.returncode == 2 and "nope" in bad.stderr
    out = eksray("rc", "delete", "cli")
    assert out.returncode == 0, out.stderr
    wait_until(
        lambda: json.loads(eksray("rc", "list", "-o", "json").stdout)["clusters"] == [],
        "rc list empty",
        timeout=TIMEOUT,
    )
    wait_until(lambda: not pods(k8s_plane, erin.namespace), "pods garbage-collected", timeout=TIMEOUT)


# --- RayJobs ------------------------------------------------------------------------------------


def test_a_rayjob_as_far_as_the_real_operator_takes_it(
    k8s_plane: ControlPlane,
    k8s_user: Callable[..., K8sUser],
    make_backend: Callable[..., KubeRayBackend],
    tmp_path: Path,
) -> None:
    """KWOK pods run no Ray, so the Ray job itself never runs: the real operator creates the
    RayCluster from ``rayClusterSpec`` (with our labels, so it is the user's), waits until it
    is ready, runs the K8sJobMode submitter Job (which KWOK completes) and holds the RayJob
    ``Running``, unable to ask a dashboard. Completion is covered on the simulation."""
    import kubernetes.client
    from traitlets.config import Config

    from eksray_jupyter.core.config import EKSRay
    from eksray_jupyter.core.service import ClusterService
    from eksray_jupyter.jobs.models import JobState
    from eksray_jupyter.jobs.service import JobService

    frank = k8s_user("frank")
    backend = make_backend(frank, dashboard_access="apiserver-proxy")
    config = Config({"KubeRayJobRunner": {"poll_seconds": 0.2}})
    service = ClusterService(
        EKSRay(config=config, owner=frank.owner, backend="local", state_dir=str(tmp_path / "state")),
        backend=backend,
    )
    jobs = JobService(service)
    try:
        job = jobs.submit({"entrypoint": "python train.py", "cluster": {"profile": "cpu-small"}})
        _, crs = admin(k8s_plane)

        def rayjob_status() -> dict[str, Any]:
            rj = crs.get_namespaced_custom_object("ray.io", "v1", frank.namespace, "rayjobs", job.id)
            return dict(rj.get("status") or {})

        status = wait_until(
            lambda: (s := rayjob_status()).get("jobDeploymentStatus") == "Running" and s,
            "RayJob Running",
            timeout=TIMEOUT,
        )
        cluster = status["rayClusterName"]
        assert cluster.startswith(job.id) and status.get("jobId")
        running = wait_until(
            lambda: (j := jobs.get(job.id)).state == JobState.RUNNING and j,
            "job running",
            timeout=TIMEOUT,
        )
        assert running.cluster_name == cluster
        # "starting" (Initializing) is recorded if a poll falls within it; the operator may be quicker.
        assert [h["state"] for h in running.history] in (
            ["pending", "starting", "running"],
            ["pending", "running"],
        )
        # The operator copied our ownership labels: the job's cluster is the user's own.
        assert cluster in [c.name for c in service.list()]
        assert ready(backend, frank.owner, cluster).phase == Phase.READY
        with k8s_plane.api_client() as client:
            submitters = kubernetes.client.BatchV1Api(client).list_namespaced_job(frank.namespace).items
            # The cluster the operator made for the job is guarded like the user's own ones.
            networking = kubernetes.client.NetworkingV1Api(client)
            policy = wait_until(
                lambda: next(
                    (p for p in networking.list_namespaced_network_policy(frank.namespace).items
                     if p.metadata.name == f"{cluster}-eksray"),
                    None,
                ),
                "the job cluster's NetworkPolicy",
                timeout=TIMEOUT,
            )  # fmt: skip
        assert [r.name for r in policy.metadata.owner_references] == [cluster]
        assert policy.spec.pod_selector.match_labels == {"ray.io/cluster": cluster}
        assert [j.metadata.name for j in submitters] == [job.id]

        stopped = jobs.stop(job.id, wait=30)
        assert stopped.state == JobState.STOPPED
        # The RayJob goes; the garbage collector takes its RayCluster, pods and submitter Job.
        wait_until(lambda: not crs.list_namespaced_custom_object("ray.io", "v1", frank.namespace, "rayjobs")["items"],
                   "RayJob deleted", timeout=TIMEOUT)  # fmt: skip
        wait_until(lambda: service.list() == [], "the job's cluster gone", timeout=TIMEOUT)
        wait_until(lambda: not pods(k8s_plane, frank.namespace), "pods garbage-collected", timeout=TIMEOUT)
    finally:
        jobs.close()


# --- the magics -------------------------------------------------------------------------------


def test_the_magics_on_the_real_control_plane(
    k8s_plane: ControlPlane, k8s_user: Callable[..., K8sUser], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``%eksray`` as a kernel the server started runs it: its settings from ``$EKSRAY_CONFIG``."""
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from eksray_jupyter.magics import EKSRayMagics

    from .fakes import isolate_env

    gina = k8s_user("gina")
    isolate_env(monkeypatch)
    monkeypatch.setenv("EKSRAY_CONFIG", face_config(gina, tmp_path))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "none"))
    shell = InteractiveShell.instance()
    magics = EKSRayMagics(shell)
    shell.register_magics(magics)

    def run(line: str) -> str:
        with capture_output() as cap:
            shell.run_line_magic("eksray", line)
        return cap.stdout + "".join(str(o.data.get("text/plain", "")) for o in cap.outputs)

    try:
        assert "nb" in run("up nb --workers 1 --wait")
        assert len(pods(k8s_plane, gina.namespace, "ray.io/node-type=worker")) == 1
        run("scale nb cpu --replicas 2 --wait")
        assert len(pods(k8s_plane, gina.namespace, "ray.io/node-type=worker")) == 2
        assert "ready" in run("status nb")
        with pytest.raises(UsageError, match="nope"):
            run("scale nb nope --replicas 1")
        run("down nb")
        wait_until(lambda: not pods(k8s_plane, gina.namespace), "pods garbage-collected", timeout=TIMEOUT)
    finally:
        magics.services.close()


# --- only the owner reaches a cluster: Ray's token and the NetworkPolicy ----------------------


def _secret_token(plane: ControlPlane, namespace: str, name: str) -> Any:
    import base64

    core, _ = admin(plane)
    secret = core.read_namespaced_secret(name, namespace)
    return secret, base64.b64decode(secret.data["auth_token"]).decode()


def _not_found(read: Callable[[], Any]) -> bool:
    import kubernetes.client

    try:
        read()
    except kubernetes.client.ApiException as e:
        return e.status == 404
    return False


def test_token_auth_and_the_network_policy_on_the_real_operator(
    k8s_plane: ControlPlane,
    k8s_user: Callable[..., K8sUser],
    make_backend: Callable[..., KubeRayBackend],
    tmp_path: Path,
) -> None:
    """The documented Role suffices; the operator makes the token Secret and wires it into
    the Ray containers by reference; eksray hands it out as a private file and makes the
    cluster's NetworkPolicy, and both go with the cluster."""
    import kubernetes.client

    alice = k8s_user("alice")
    backend = make_backend(alice, state_dir=str(tmp_path / "state"))
    backend.create_cluster(alice.owner, cpu_spec("sec", replicas=1, autoscaling=True))
    ready(backend, alice.owner, "sec")
    core, crs = admin(k8s_plane)
    cr = crs.get_namespaced_custom_object("ray.io", "v1", alice.namespace, "rayclusters", "sec")
    assert cr["spec"]["authOptions"] == {"mode": "token"}
    uid = cr["metadata"]["uid"]

    secret, token = _secret_token(k8s_plane, alice.namespace, "sec")
    assert secret.metadata.labels["ray.io/cluster"] == "sec"
    assert [(r.kind, r.uid, r.controller) for r in secret.metadata.owner_references] == [
        ("RayCluster", uid, True)
    ]
    assert len(token) >= 32

    # Every Ray container (head, worker, the autoscaler beside the head) takes the token from
    # the Secret by reference: it is in no pod spec.
    ray_pods = pods(k8s_plane, alice.namespace, "ray.io/cluster=sec")
    assert {p.metadata.labels["ray.io/node-type"] for p in ray_pods} == {"head", "worker"}
    serialize = k8s_plane.admin.sanitize_for_serialization
    for pod in ray_pods:
        assert token not in json.dumps(serialize(pod))
        containers = {c.name: c for c in pod.spec.containers}
        wanted = (
            {"ray-head", "autoscaler"}
            if pod.metadata.labels["ray.io/node-type"] == "head"
            else {"ray-worker"}
        )
        assert set(containers) == wanted
        for container in containers.values():
            env = {e.name: e for e in container.env}
            assert env["RAY_AUTH_MODE"].value == "token"
            ref = env["RAY_AUTH_TOKEN"].value_from.secret_key_ref
            assert (env["RAY_AUTH_TOKEN"].value, ref.name, ref.key) == (None, "sec", "auth_token")

    # The token, as a file only its owner can read.
    path = backend.ray_auth_token_file(alice.owner, "sec")
    assert path is not None and path.read_text() == token
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700 and path.parent.parent.stat().st_mode & 0o777 == 0o700
    before = path.stat()
    assert backend.ray_auth_token_file(alice.owner, "sec") == path
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "not rewritten"
    assert backend.ray_auth_token(alice.owner, "sec") == token

    # The NetworkPolicy: every pod of the cluster, from its own pods, its RayJob submitters, the
    # Jupyter pods, and the operator on the dashboard port only; owned by the cluster.
    networking = kubernetes.client.NetworkingV1Api(k8s_plane.admin)
    policy = networking.read_namespaced_network_policy("sec-eksray", alice.namespace)
    assert [(r.kind, r.name, r.uid) for r in policy.metadata.owner_references] == [("RayCluster", "sec", uid)]
    assert policy.spec.pod_selector.match_labels == {"ray.io/cluster": "sec"}
    assert policy.spec.policy_types == ["Ingress"]
    everything, operator = policy.spec.ingress
    selectors = [(p.pod_selector.match_labels, p.namespace_selector) for p in everything._from]
    assert selectors[0] == ({"ray.io/cluster": "sec"}, None)
    assert selectors[1] == ({"eksray.io/submits-to": "sec", "eksray.io/managed-by": "eksray-jupyter"}, None)
    assert selectors[2][0] == {"app": "jupyterhub", "component": "singleuser-server"}
    assert everything.ports is None
    assert operator._from[0].pod_selector.match_labels == {"app.kubernetes.io/name": "kuberay-operator"}
    assert [(p.port, p.protocol) for p in operator.ports] == [(8265, "TCP")]

    # Deleted with the cluster: the file at once, the policy by eksray, the Secret by the GC.
    backend.delete_cluster(alice.owner, "sec")
    assert not path.exists()
    assert _not_found(lambda: networking.read_namespaced_network_policy("sec-eksray", alice.namespace))
    wait_until(
        lambda: _not_found(lambda: core.read_namespaced_secret("sec", alice.namespace)),
        "the Secret garbage-collected",
        timeout=TIMEOUT,
    )
    wait_until(lambda: backend.list_clusters(alice.owner) == [], "cluster gone", timeout=TIMEOUT)


def test_the_network_policy_goes_with_the_cluster_whoever_deletes_it(
    k8s_plane: ControlPlane, k8s_user: Callable[..., K8sUser], make_backend: Callable[..., KubeRayBackend]
) -> None:
    import kubernetes.client

    alice = k8s_user("alice")
    backend = make_backend(alice)
    backend.create_cluster(alice.owner, cpu_spec("gc", replicas=0))
    networking = kubernetes.client.NetworkingV1Api(k8s_plane.admin)
    assert networking.read_namespaced_network_policy("gc-eksray", alice.namespace)
    _, crs = admin(k8s_plane)
    crs.delete_namespaced_custom_object("ray.io", "v1", alice.namespace, "rayclusters", "gc")  # kubectl
    wait_until(
        lambda: _not_found(lambda: networking.read_namespaced_network_policy("gc-eksray", alice.namespace)),
        "the NetworkPolicy garbage-collected",
        timeout=TIMEOUT,
    )


def test_another_owner_never_gets_the_token(
    k8s_plane: ControlPlane,
    k8s_user: Callable[..., K8sUser],
    make_backend: Callable[..., KubeRayBackend],
    tmp_path: Path,
) -> None:
    """One namespace for everyone (the same identity may read every Secret there): the
    ownership check still keeps one owner's token from another. Across namespaces, RBAC does."""
    import kubernetes.client

    alice, dave = k8s_user("alice"), k8s_user("dave")
    shared = make_backend(alice, namespace=alice.namespace, state_dir=str(tmp_path / "state"))
    shared.create_cluster("ann", cpu_spec("anns", replicas=0))
    ready(shared, "ann", "anns")
    assert shared.ray_auth_token_file("ann", "anns") is not None
    for ask in (shared.ray_auth_token_file, shared.ray_auth_token, shared.dashboard_request_headers):
        with pytest.raises(NotFoundError):
            ask("bob", "anns")
    assert not (tmp_path / "state" / "kuberay" / "ray-tokens" / alice.namespace / "bob").exists()

    # Another namespace's identity: its backend cannot even read the cluster, nor its Secret.
    daves = make_backend(dave, state_dir=str(tmp_path / "dave"))
    with pytest.raises(NotFoundError):
        daves.ray_auth_token_file(dave.owner, "anns")
    with k8s_plane.api_client(dave.token) as client:
        with pytest.raises(kubernetes.client.ApiException) as denied:
            kubernetes.client.CoreV1Api(client).read_namespaced_secret("anns", alice.namespace)
        assert denied.value.status == 403


def test_a_secret_not_made_for_the_cluster_is_never_trusted(
    k8s_plane: ControlPlane,
    k8s_user: Callable[..., K8sUser],
    make_backend: Callable[..., KubeRayBackend],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator takes any Secret of the cluster's name as its token Secret; someone who
    made one would know the token. Creating over such a Secret is refused; and if it appears
    between that check and the create, eksray refuses to hand its token out."""
    from eksray_jupyter.core.errors import ConflictError

    alice = k8s_user("alice")
    backend = make_backend(alice, state_dir=str(tmp_path / "state"))
    planted = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "trap", "namespace": alice.namespace, "labels": {"ray.io/cluster": "trap"}},
        "stringData": {"auth_token": "known-to-mallory"},
    }
    k8s_plane.apply([planted])
    with pytest.raises(ConflictError, match="Secret named 'trap'"):
        backend.create_cluster(alice.owner, cpu_spec("trap", replicas=0))
    _, crs = admin(k8s_plane)
    assert not crs.list_namespaced_custom_object("ray.io", "v1", alice.namespace, "rayclusters")["items"]

    # The race: the Secret is made after the check. The real operator uses it ...
    monkeypatch.setattr(backend, "_check_no_token_secret", lambda namespace, name: None)
    backend.create_cluster(alice.owner, cpu_spec("trap", replicas=0))
    head = wait_until(
        lambda: pods(k8s_plane, alice.namespace, "ray.io/cluster=trap"), "the head pod", timeout=TIMEOUT
    )[0]
    env = {e.name: e for e in head.spec.containers[0].env}
    assert env["RAY_AUTH_TOKEN"].value_from.secret_key_ref.name == "trap"
    # ... eksray does not.
    for ask in (backend.ray_auth_token_file, backend.ray_auth_token):
        with pytest.raises(BackendError, match="not owned by the cluster"):
            ask(alice.owner, "trap")
    assert not (tmp_path / "state" / "kuberay" / "ray-tokens" / alice.namespace / "trap").exists()
    events = backend.cluster_events(alice.owner, "trap")  # the timeline works without the token
    assert "known-to-mallory" not in json.dumps([e.to_dict() for e in events])


def test_a_network_policy_that_cannot_be_made_leaves_no_cluster(
    k8s_plane: ControlPlane, k8s_user: Callable[..., K8sUser], make_backend: Callable[..., KubeRayBackend]
) -> None:
    from eksray_jupyter.core.errors import ConflictError

    alice = k8s_user("alice")
    backend = make_backend(alice)
    theirs = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "held-eksray", "namespace": alice.namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    k8s_plane.apply([theirs])
    with pytest.raises(ConflictError, match="was not created: its NetworkPolicy could not be made"):
        backend.create_cluster(alice.owner, cpu_spec("held", replicas=0))
    _, crs = admin(k8s_plane)
    assert not crs.list_namespaced_custom_object("ray.io", "v1", alice.namespace, "rayclusters")["items"]
    wait_until(lambda: backend.list_clusters(alice.owner) == [], "the watch saw it go", timeout=TIMEOUT)
    # Without a NetworkPolicy of ours the cluster is made as before (once a token Secret the
    # operator may have made for the rolled-back cluster is collected: see the test above).
    core, _ = admin(k8s_plane)
    wait_until(
        lambda: _not_found(lambda: core.read_namespaced_secret("held", alice.namespace)),
        "no Secret left",
        timeout=TIMEOUT,
    )
    plain = make_backend(alice, network_policy=False)
    plain.create_cluster(alice.owner, cpu_spec("held", replicas=0))
    assert [c.name for c in plain.list_clusters(alice.owner)] == ["held"]


def test_a_rayjob_on_a_users_cluster_gets_its_token_and_is_let_in(
    k8s_plane: ControlPlane,
    k8s_user: Callable[..., K8sUser],
    make_backend: Callable[..., KubeRayBackend],
    tmp_path: Path,
) -> None:
    """clusterSelector: the real operator gives the submitter the cluster's token (from its
    Secret, by reference) and keeps our submitter pod's labels, which the policy lets in."""
    import kubernetes.client
    from traitlets.config import Config

    from eksray_jupyter.core.config import EKSRay
    from eksray_jupyter.core.service import ClusterService
    from eksray_jupyter.jobs.service import JobService

    hana = k8s_user("hana")
    backend = make_backend(hana, dashboard_access="apiserver-proxy")
    config = Config({"KubeRayJobRunner": {"poll_seconds": 0.2}})
    service = ClusterService(
        EKSRay(config=config, owner=hana.owner, backend="local", state_dir=str(tmp_path / "state")),
        backend=backend,
    )
    jobs = JobService(service)
    try:
        service.create(cpu_spec("shared", replicas=0))
        ready(backend, hana.owner, "shared")
        job = jobs.submit({"entrypoint": "python eval.py", "clusterName": "shared"})
        with k8s_plane.api_client() as client:
            batch = kubernetes.client.BatchV1Api(client)
            submitter = wait_until(
                lambda: batch.list_namespaced_job(hana.namespace).items, "the submitter Job", timeout=TIMEOUT
            )[0]
        template = submitter.spec.template
        assert template.metadata.labels["eksray.io/submits-to"] == "shared"
        container = template.spec.containers[0]
        env = {e.name: e for e in container.env}
        assert env["RAY_AUTH_MODE"].value == "token"
        ref = env["RAY_AUTH_TOKEN"].value_from.secret_key_ref
        assert (ref.name, ref.key) == ("shared", "auth_token")
        _, token = _secret_token(k8s_plane, hana.namespace, "shared")
        assert token not in json.dumps(k8s_plane.admin.sanitize_for_serialization(submitter))
        policy = kubernetes.client.NetworkingV1Api(k8s_plane.admin).read_namespaced_network_policy(
            "shared-eksray", hana.namespace
        )
        allowed = [p.pod_selector.match_labels for p in policy.spec.ingress[0]._from if p.pod_selector]
        assert any(labels.items() <= template.metadata.labels.items() for labels in allowed)
        jobs.stop(job.id, wait=30)
    finally:
        jobs.close()


def test_suspend_and_resume_on_the_real_operator(
    k8s_plane: ControlPlane, k8s_user: Callable[..., K8sUser], make_backend: Callable[..., KubeRayBackend]
) -> None:
    """Issue 14: ``spec.suspend`` makes the real operator delete the pods and keep the RayCluster;
    resuming brings them back. Activity is persisted as an annotation for other enforcers."""
    carol = k8s_user("carol")
    backend = make_backend(carol)
    backend.create_cluster(carol.owner, cpu_spec("nap", replicas=1))
    ready(backend, carol.owner, "nap")

    suspending = backend.suspend_cluster(carol.owner, "nap", "Suspending: idle for 30 min")
    assert suspending.phase in (Phase.SUSPENDING, Phase.SUSPENDED)
    suspended = wait_until(
        lambda: (c := backend.get_cluster(carol.owner, "nap")).phase == Phase.SUSPENDED and c,
        "suspended",
        timeout=TIMEOUT,
    )
    assert suspended.suspended_at is not None and not suspended.nodes
    wait_until(lambda: not pods(k8s_plane, carol.namespace), "pods deleted by the operator", timeout=TIMEOUT)
    _, crs = admin(k8s_plane)
    body = crs.get_namespaced_custom_object("ray.io", "v1", carol.namespace, "rayclusters", "nap")
    assert body["spec"]["suspend"] is True
    # Suspending again changes nothing; the reason is in the cluster's events.
    assert backend.suspend_cluster(carol.owner, "nap").phase == Phase.SUSPENDED
    wait_until(
        lambda: any(
            e.reason == "Suspending" and "idle for 30 min" in e.message
            for e in backend.cluster_events(carol.owner, "nap")
        ),
        "the Suspending event",
        timeout=TIMEOUT,
    )

    backend.resume_cluster(carol.owner, "nap")
    resumed = ready(backend, carol.owner, "nap")
    assert resumed.suspended_at is None and resumed.last_active_at is not None
    assert [n.kind for n in resumed.nodes] == ["head", "worker"]
    before = resumed.last_active_at
    backend.mark_active(carol.owner, "nap", before + 60, "keep-alive from a test")
    body = crs.get_namespaced_custom_object("ray.io", "v1", carol.namespace, "rayclusters", "nap")
    assert float(body["metadata"]["annotations"]["eksray.io/last-active-at"]) == pytest.approx(before + 60)
    wait_until(
        lambda: backend.get_cluster(carol.owner, "nap").last_active_at == pytest.approx(before + 60),
        "the annotation read back",
        timeout=TIMEOUT,
    )
    backend.mark_active(carol.owner, "nap", before, "an older activity")  # never moves back
    assert backend.get_cluster(carol.owner, "nap").last_active_at == pytest.approx(before + 60)
    backend.delete_cluster(carol.owner, "nap")
    wait_until(lambda: backend.list_clusters(carol.owner) == [], "cluster gone", timeout=TIMEOUT)
