"""The kuberay backend against the fake Kubernetes API (tests/fakekube), through the real client."""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kubernetes.client
import pytest
import yaml

from eksray_jupyter.backends.kuberay import KubeRayBackend
from eksray_jupyter.backends.kuberay.cache import NamespaceCache
from eksray_jupyter.core.config import DEFAULT_PROFILES
from eksray_jupyter.core.errors import (
    BackendError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    NotReadyError,
)
from eksray_jupyter.core.models import Change, Phase
from eksray_jupyter.core.spec import resolve_cluster_spec
from tests.stub_http import JSONHandler, StubServer

from .fakekube import FakeKubeServer, pytest_plugin
from .fakekube.schema import DEFAULT_CRD_DIR, SAMPLES_DIR, crd_schema
from .waiting import wait_until

T = TypeVar("T")
ALICE_NS = "eksray-alice"

# The fake API server's fixtures, used by name below.
fakekube = pytest_plugin.fakekube
fakekube_kubeconfig = pytest_plugin.fakekube_kubeconfig


def spec_of(request: dict[str, Any]) -> dict[str, Any]:
    return resolve_cluster_spec(request, DEFAULT_PROFILES)


CPU_SPEC = {
    "name": "demo",
    "workerGroups": [{"groupName": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 5, "cpu": 1}],
}


@pytest.fixture
def make_backend(
    fakekube: FakeKubeServer,
    fakekube_kubeconfig: Path,
) -> Iterator[Callable[..., KubeRayBackend]]:
    made: list[KubeRayBackend] = []

    def make(**settings: Any) -> KubeRayBackend:
        settings.setdefault("credentials", "kubeconfig")
        settings.setdefault("kubeconfig", str(fakekube_kubeconfig))
        settings.setdefault("dashboard_poll_seconds", 0.1)
        backend = KubeRayBackend(**settings)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def backend(make_backend: Callable[..., KubeRayBackend]) -> KubeRayBackend:
    return make_backend()


def ready(backend: KubeRayBackend, owner: str, name: str) -> Any:
    return wait_until(
        lambda: (c := backend.get_cluster(owner, name)).phase == Phase.READY and c, f"{name} ready"
    )


def cr(fk: FakeKubeServer, name: str, namespace: str = ALICE_NS) -> dict[str, Any]:
    obj = fk.get("rayclusters", namespace, name)
    assert obj is not None
    return obj


# --- generated objects ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_body",
    [
        {"name": "small", "profile": "cpu-small"},
        {"name": "tagged", "profile": "tagged"},
        {
            "name": "full",
            "head": {"cpu": 0, "memory": 4, "rayStartParams": {"object-store-memory": "100000000"}},
            "workerGroups": [
                {"groupName": "gpu", "replicas": 0, "minReplicas": 0, "maxReplicas": 2, "cpu": 0.5, "gpu": 1,
                 "memory": 1.5, "resources": {"accel": 2}},
                {"groupName": "cpu", "replicas": 2, "minReplicas": 1, "maxReplicas": 3, "cpu": 4},
            ],
            "autoscaling": {"enabled": False},
            "labels": {"team": "ml", "eksray.io/owner": "mallory"},
            "image": "rayproject/ray:2.60.0-gpu",
            "rayVersion": "2.60.0",
        },
    ],
)  # fmt: skip
def test_generated_rayclusters_validate_against_the_crd(request_body: dict[str, Any]) -> None:
    backend = KubeRayBackend(
        pod_templates={
            "*": {"labels": {"cost-center": "42"}},
            "workers": {"nodeSelector": {"pool": "workers"}},
            "gpu": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
            "group/cpu": {"nodeSelector": {"pool": "cpu"}, "priorityClassName": "low"},
        },
        batch_scheduler="kueue",
        queue="team-{username}",
        gang_scheduling=True,
        object_store_memory_fraction=0.25,
    )
    body = backend.manifest("alice", spec_of(request_body))
    schema = crd_schema(DEFAULT_CRD_DIR / "ray.io_rayclusters.yaml")
    assert schema.validate(body, None) == []
    pruned = copy.deepcopy(body)
    schema.prune(pruned)
    assert pruned == body, "every generated field is known to the CRD (nothing would be pruned)"
    meta = body["metadata"]
    assert meta["labels"]["eksray.io/owner"] == "alice"  # a spec's label cannot claim another owner
    assert meta["labels"]["eksray.io/managed-by"] == "eksray-jupyter"
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team-alice"
    assert meta["labels"]["ray.io/gang-scheduling-enabled"] == "true"
    assert meta["annotations"]["eksray.io/owner"] == "alice"
    if request_body["name"] == "full":
        spec = body["spec"]
        assert spec["enableInTreeAutoscaling"] is False and "autoscalerOptions" not in spec
        head = spec["headGroupSpec"]
        assert head["rayStartParams"]["num-cpus"] == "0"
        assert head["template"]["spec"]["containers"][0]["resources"]["limits"] == {
            "cpu": "1",
            "memory": "4Gi",
        }
        gpu, cpu = spec["workerGroupSpecs"]
        limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits == {"cpu": "500m", "memory": "1536Mi", "nvidia.com/gpu": "1"}
        assert gpu["rayStartParams"]["resources"] == '"{\\"accel\\": 2}"'
        assert gpu["rayStartParams"]["num-gpus"] == "1" and "num-cpus" not in gpu["rayStartParams"]
        assert gpu["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert gpu["template"]["spec"]["nodeSelector"] == {"pool": "workers"}
        assert cpu["template"]["spec"]["nodeSelector"] == {"pool": "cpu"}
        assert cpu["template"]["spec"]["priorityClassName"] == "low"
        assert cpu["template"]["metadata"]["labels"]["cost-center"] == "42"
        assert cpu["rayStartParams"]["object-store-memory"] == str(int(8 * 1024**3 * 0.25))
        assert head["template"]["spec"]["containers"][0]["image"] == "rayproject/ray:2.60.0-gpu"
    else:
        assert body["spec"]["enableInTreeAutoscaling"] is True
        assert body["spec"]["autoscalerOptions"] == {"upscalingMode": "Default", "idleTimeoutSeconds": 60}


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"head": {"rayStartParams": {"num-cpus": "4"}}}, "head.rayStartParams.num-cpus"),
        ({"workerGroups": [{"groupName": "g", "rayStartParams": {"port": "1"}}]}, "workerGroups[0].rayStartParams.port"),
        ({"workerGroups": [{"groupName": "g", "resources": {"tag": 0.5}}]}, "workerGroups[0].resources.tag"),
        ({"image": "evil/miner:latest"}, "image"),
    ],
)  # fmt: skip
def test_kubernetes_only_rules_are_400(change: dict[str, Any], path: str) -> None:
    backend = KubeRayBackend(allowed_images=["rayproject/ray:*"])
    with pytest.raises(InvalidRequestError) as info:
        backend.manifest("alice", spec_of({"name": "bad", **change}))
    assert path in {e.path for e in info.value.errors}


def test_pod_templates_setting_is_checked() -> None:
    with pytest.raises(Exception, match="unknown keys"):
        KubeRayBackend(pod_templates={"head": {"hostNetwork": True}})
    with pytest.raises(Exception, match="'group/<name>'"):
        KubeRayBackend(pod_templates={"gpus": {}})


def test_namespaces_and_owner_labels_are_dns_safe() -> None:
    backend = KubeRayBackend()
    assert backend.namespace_for("alice") == "eksray-alice"
    odd = backend.namespace_for("Alice.Smith@example.com")
    assert odd.startswith("eksray-alice-smith-example-com-") and len(odd) <= 63
    assert backend.namespace_for("alice") != backend.namespace_for("Alice")
    assert len(backend.namespace_for("x" * 200)) <= 63
    assert KubeRayBackend(namespace="ray").namespace_for("bob") == "ray"
    # Injective: a user named like another user's hashed label never gets that user's namespace.
    squatter = backend.namespace_for("Alice").removeprefix("eksray-")
    assert backend.namespace_for(squatter) != backend.namespace_for("Alice")
    assert backend.namespace_for(squatter).startswith(f"eksray-{squatter}-")


def test_a_namespace_not_labelled_for_the_owner_is_never_used(
    backend: KubeRayBackend, fakekube: FakeKubeServer
) -> None:
    fakekube.create(
        "namespaces", "", {"metadata": {"name": "eksray-bob", "labels": {"eksray.io/owner": "mallory"}}}
    )
    with pytest.raises(ConflictError, match="not labelled for you"):
        backend.create_cluster("bob", spec_of({"name": "demo"}))
    assert fakekube.list_objects("rayclusters", "eksray-bob") == []
    # Made by eksray for this owner: used.
    backend.create_cluster("alice", spec_of({"name": "demo"}))
    backend.create_cluster("alice", spec_of({"name": "again"}))
    assert {c.name for c in backend.list_clusters("alice")} == {"demo", "again"}


def test_loading_the_backend_imports_neither_kubernetes_nor_boto3(tmp_path: Path) -> None:
    code = f"""
import sys
from jupyter_server.serverapp import ServerApp
app = ServerApp(jpserver_extensions={{"eksray_jupyter": True}}, allow_root=True, open_browser=False)
app.initialize(argv=["--EKSRay.state_dir={tmp_path}", "--EKSRay.backend=kuberay", "--ServerApp.port=0"])
backend = app.web_app.settings["eksray_services"].clusters.backend
assert backend.name == "kuberay"
backend.manifest("alice", {{"name": "x", "head": {{"cpu": 1}}, "workerGroups": [], "autoscaling": {{}}}})
print("HEAVY", sorted(m for m in ("ray", "kubernetes", "boto3", "botocore") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout, out.stdout


# --- life cycle ---------------------------------------------------------------------------------


def test_create_becomes_ready_then_delete(backend: KubeRayBackend, fakekube: FakeKubeServer) -> None:
    created = backend.create_cluster("alice", spec_of({"name": "demo", "profile": "tagged"}))
    assert created.namespace == ALICE_NS
    assert created.phase in (Phase.PENDING, Phase.STARTING)
    assert created.address == f"ray://demo-head-svc.{ALICE_NS}.svc:10001"
    assert fakekube.get("namespaces", "", ALICE_NS)["metadata"]["labels"]["eksray.io/owner"] == "alice"

    cluster = ready(backend, "alice", "demo")
    assert [n.kind for n in cluster.nodes] == ["head", "worker"]
    assert all(n.state == "alive" and n.address for n in cluster.nodes)
    groups = {g.group_name: g for g in cluster.worker_groups}
    assert (groups["cpu"].desired, groups["cpu"].ready, groups["cpu"].max_replicas) == (1, 1, 2)
    assert groups["tagged"].resources == {"CPU": 1, "tag": 1}
    assert cluster.spec["workerGroups"][1]["resources"] == {"tag": 1}
    assert cluster.dashboard_available and not cluster.read_only
    assert [c.name for c in backend.list_clusters("alice")] == ["demo"]

    with pytest.raises(ConflictError, match="already exists"):
        backend.create_cluster("alice", spec_of({"name": "demo"}))
    # Events come through their own watch, which may lag the cluster's.
    wait_until(
        lambda: (
            {"Created", "CreatedHeadPod", "CreatedWorkerPod"}
            <= {e.reason for e in backend.cluster_events("alice", "demo")}
        ),
        what="the creation events",
    )

    backend.delete_cluster("alice", "demo")
    with contextlib.suppress(NotFoundError):  # stopping until the watch sees it go (maybe already)
        assert backend.get_cluster("alice", "demo").phase == Phase.STOPPING
    wait_until(lambda: backend.list_clusters("alice") == [], what="cluster gone")
    with pytest.raises(NotFoundError):
        backend.get_cluster("alice", "demo")
    wait_until(lambda: not fakekube.list_objects("pods", ALICE_NS), what="pods garbage-collected")


def test_cluster_limit(make_backend: Callable[..., KubeRayBackend]) -> None:
    backend = make_backend(max_clusters_per_owner=1)
    backend.create_cluster("alice", spec_of({"name": "one"}))
    with pytest.raises(ConflictError, match="max_clusters_per_owner"):
        backend.create_cluster("alice", spec_of({"name": "two"}))


def test_operator_refusal_is_failed(backend: KubeRayBackend, fakekube: FakeKubeServer) -> None:
    body = backend.manifest("alice", spec_of(CPU_SPEC))
    body["spec"]["workerGroupSpecs"][0]["minReplicas"] = 9  # > maxReplicas: only the operator checks it
    fakekube.create("namespaces", "", {"metadata": {"name": ALICE_NS}})
    fakekube.create("rayclusters", ALICE_NS, body)
    failed = wait_until(lambda: (c := backend.get_cluster("alice", "demo")).phase == Phase.FAILED and c)
    assert "InvalidRayClusterSpec" in (failed.reason or "")


def test_head_image_pull_failure_is_failed(backend: KubeRayBackend, fakekube: FakeKubeServer) -> None:
    fakekube.configure_operator(pod_ready_delay=None)
    backend.create_cluster("alice", spec_of({"name": "demo"}))
    head = wait_until(lambda: fakekube.list_objects("pods", ALICE_NS, "ray.io/node-type=head"))[0]

    def break_image() -> None:
        pod = fakekube.store.get(fakekube.store.types["pods"], ALICE_NS, head["metadata"]["name"])
        pod["status"]["containerStatuses"][0]["state"] = {
            "waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}
        }
        fakekube.store.replace(fakekube.store.types["pods"], pod)

    wait_until(
        lambda: fakekube.get("pods", ALICE_NS, head["metadata"]["name"])["status"].get("containerStatuses")
    )
    fakekube.call(break_image)
    failed = wait_until(lambda: (c := backend.get_cluster("alice", "demo")).phase == Phase.FAILED and c)
    assert "ImagePullBackOff" in (failed.reason or "")


def test_head_creation_failure_is_failed(backend: KubeRayBackend, fakekube: FakeKubeServer) -> None:
    fakekube.configure_operator(fail_pod_creation=True)
    backend.create_cluster("alice", spec_of({"name": "demo"}))
    failed = wait_until(lambda: (c := backend.get_cluster("alice", "demo")).phase == Phase.FAILED and c)
    assert "exceeded quota" in (failed.reason or "")
    fakekube.configure_operator(fail_pod_creation=False)
    ready(backend, "alice", "demo")  # ReplicaFailure clears once the operator succeeds


def test_suspended_by_kueue_is_stopped(
    make_backend: Callable[..., KubeRayBackend], fakekube: FakeKubeServer
) -> None:
    backend = make_backend(batch_scheduler="kueue", queue="{username}-queue")
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    ready(backend, "alice", "demo")
    assert cr(fakekube, "demo")["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "alice-queue"
    rc = fakekube.store.types["ray.io/rayclusters"]
    fakekube.call(
        lambda: fakekube.store.patch(
            rc, ALICE_NS, "demo", "application/merge-patch+json", {"spec": {"suspend": True}}
        )
    )
    stopped = wait_until(lambda: (c := backend.get_cluster("alice", "demo")).phase == Phase.SUSPENDED and c)
    assert stopped.reason == "Waiting for admission by Kueue (LocalQueue alice-queue)"
    assert not stopped.nodes and not stopped.dashboard_available


def test_clusters_work_without_rbac_for_events(
    make_backend: Callable[..., KubeRayBackend], fakekube: FakeKubeServer, caplog: pytest.LogCaptureFixture
) -> None:
    fakekube.inject_error(403, count=1000, method="GET", path="/events")
    backend = make_backend()
    with caplog.at_level(logging.WARNING):
        backend.create_cluster("alice", spec_of({"name": "demo"}))
        ready(backend, "alice", "demo")
    assert "may not list events" in caplog.text
    assert all(e.source != "kubernetes" for e in backend.cluster_events("alice", "demo"))
    fakekube.clear_faults()


# --- scaling alongside the autoscaler -------------------------------------------------------------


def test_scale_retries_on_fresh_state_without_losing_the_autoscalers_write(
    backend: KubeRayBackend,
    fakekube: FakeKubeServer,
) -> None:
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    before = ready(backend, "alice", "demo")
    real_get = backend.api.get_cluster
    reads: list[str] = []

    def get_then_autoscaler_writes(namespace: str, name: str, not_found: str) -> dict[str, Any]:
        obj = real_get(namespace, name, not_found)
        reads.append(obj["metadata"]["resourceVersion"])
        if len(reads) == 1:  # the in-tree autoscaler writes between our read and our write
            fakekube.autoscale(namespace, name, "cpu", replicas=3)
        return obj

    backend.api.get_cluster = get_then_autoscaler_writes  # type: ignore[method-assign]
    scaled = backend.scale_cluster_request(
        "alice", "demo", {"workerGroups": [{"groupName": "cpu", "maxReplicas": 8}]}, before
    )
    live = cr(fakekube, "demo")["spec"]["workerGroupSpecs"][0]
    assert (live["replicas"], live["maxReplicas"]) == (3, 8), "the autoscaler's replicas survived"
    assert (scaled.worker_groups[0].replicas, scaled.worker_groups[0].max_replicas) == (3, 8)
    assert len(set(reads)) >= 2, "retried on a fresh read"
    events = wait_until(lambda: [e for e in backend.cluster_events("alice", "demo") if e.reason == "Scaled"])
    assert events[0].message == "Scaled by alice: cpu: maxReplicas 5→8"
    assert events[0].source == "backend"


def test_scale_through_the_service_under_concurrent_autoscaler(
    make_backend: Callable[..., KubeRayBackend],
    fakekube: FakeKubeServer,
) -> None:
    """Many bound changes while the autoscaler keeps writing replicas: every write survives."""
    from eksray_jupyter.core.config import EKSRay
    from eksray_jupyter.core.service import ClusterService

    # An autoscaler far busier than a real one: a slow machine may lose more races than the default allows.
    backend = make_backend(scale_retries=30)
    service = ClusterService(EKSRay(owner="alice", backend="local"), backend=backend)
    service.create(CPU_SPEC)
    ready(backend, "alice", "demo")
    stop = threading.Event()
    written: list[int] = []

    def autoscaler() -> None:
        n = 0
        while not stop.is_set():
            n = n % 4 + 1
            fakekube.autoscale(ALICE_NS, "demo", "cpu", replicas=n)
            written.append(n)
            stop.wait(0.02)  # a very busy autoscaler (the real one writes every few seconds)

    thread = threading.Thread(target=autoscaler)
    thread.start()
    try:
        for i in range(10):
            service.scale("demo", {"workerGroups": [{"groupName": "cpu", "maxReplicas": 6 + i % 2}]})
    finally:
        stop.set()
        thread.join()
    live = cr(fakekube, "demo")["spec"]["workerGroupSpecs"][0]
    assert live["replicas"] == written[-1], "our bound changes never overwrote replicas"
    assert live["maxReplicas"] == 7


def test_lowering_replicas_with_autoscaling_names_the_victims(
    backend: KubeRayBackend,
    fakekube: FakeKubeServer,
) -> None:
    backend.create_cluster(
        "alice", spec_of({**CPU_SPEC, "workerGroups": [{**CPU_SPEC["workerGroups"][0], "replicas": 3}]})
    )
    cluster = ready(backend, "alice", "demo")
    newest = max((n for n in cluster.nodes if n.kind == "worker"), key=lambda n: (n.started_at or 0, n.id))
    scaled = backend.scale_cluster_request(
        "alice", "demo", {"workerGroups": [{"groupName": "cpu", "replicas": 1}]}, cluster
    )
    victims = cr(fakekube, "demo")["spec"]["workerGroupSpecs"][0]["scaleStrategy"]["workersToDelete"]
    assert len(victims) == 2 and all(v.startswith("demo-cpu-worker-") for v in victims)
    assert scaled.worker_groups[0].replicas == 1
    after = ready(backend, "alice", "demo")
    remaining = [n.id for n in after.nodes if n.kind == "worker"]
    assert len(remaining) == 1 and remaining[0] not in victims
    assert newest.id in victims or (newest.started_at or 0) == max(n.started_at or 0 for n in cluster.nodes)


def test_lowering_max_leaves_the_victims_to_the_autoscaler(
    backend: KubeRayBackend,
    fakekube: FakeKubeServer,
) -> None:
    backend.create_cluster(
        "alice", spec_of({**CPU_SPEC, "workerGroups": [{**CPU_SPEC["workerGroups"][0], "replicas": 3}]})
    )
    cluster = ready(backend, "alice", "demo")
    backend.scale_cluster_request(
        "alice", "demo", {"workerGroups": [{"groupName": "cpu", "maxReplicas": 2}]}, cluster
    )
    live = cr(fakekube, "demo")["spec"]["workerGroupSpecs"][0]
    assert (live["maxReplicas"], live["replicas"]) == (2, 3)
    assert not (live.get("scaleStrategy") or {}).get("workersToDelete")
    scaling = backend.get_cluster("alice", "demo")
    assert scaling.phase == Phase.SCALING and scaling.worker_groups[0].desired == 2
    fakekube.autoscale(ALICE_NS, "demo", "cpu", replicas=2, workers_to_delete=[scaling.nodes[-1].id])
    ready(backend, "alice", "demo")


def test_scale_without_autoscaling_and_direct_scale_cluster(
    backend: KubeRayBackend,
    fakekube: FakeKubeServer,
) -> None:
    backend.create_cluster("alice", spec_of({**CPU_SPEC, "autoscaling": {"enabled": False}}))
    ready(backend, "alice", "demo")
    groups = [{"groupName": "cpu", "replicas": 2, "minReplicas": 0, "maxReplicas": 5}]
    backend.scale_cluster("alice", "demo", groups)
    assert cr(fakekube, "demo")["spec"]["workerGroupSpecs"][0]["replicas"] == 2
    cluster = ready(backend, "alice", "demo")
    assert cluster.worker_groups[0].ready == 2
    with pytest.raises(InvalidRequestError):
        backend.scale_cluster_request(
            "alice", "demo", {"workerGroups": [{"groupName": "gpu", "replicas": 1}]}, cluster
        )


# --- isolation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [False, True], ids=["namespace-per-user", "one-namespace"])
def test_users_never_see_each_others_clusters(
    make_backend: Callable[..., KubeRayBackend],
    fakekube: FakeKubeServer,
    shared: bool,
) -> None:
    settings = {"namespace": "ray-shared"} if shared else {}
    if shared:
        fakekube.create("namespaces", "", {"metadata": {"name": "ray-shared"}})
    backend = make_backend(**settings)
    backend.create_cluster("alice", spec_of({"name": "demo"}))
    backend.create_cluster("bob", spec_of({"name": "bobs"}))
    ready(backend, "alice", "demo")
    ready(backend, "bob", "bobs")
    assert [c.name for c in backend.list_clusters("alice")] == ["demo"]
    assert [c.name for c in backend.list_clusters("bob")] == ["bobs"]
    for call in (
        lambda: backend.get_cluster("bob", "demo"),
        lambda: backend.scale_cluster_request(
            "bob", "demo", {"workerGroups": [{"groupName": "x", "replicas": 1}]}, None
        ),
        lambda: backend.delete_cluster("bob", "demo"),
        lambda: backend.cluster_events("bob", "demo"),
        lambda: backend.dashboard_address("bob", "demo"),
        lambda: backend.dashboard_request_headers("bob", "demo"),
        lambda: backend.connection_address("bob", "demo"),
    ):
        with pytest.raises(NotFoundError):
            call()
    assert backend.get_cluster("alice", "demo").phase == Phase.READY  # untouched
    if shared:
        # One namespace: a name is taken for everyone, yet the other's cluster stays invisible.
        with pytest.raises(ConflictError):
            backend.create_cluster("bob", spec_of({"name": "demo"}))
        assert [c.name for c in backend.list_clusters("bob")] == ["bobs"]
    else:
        assert cr(fakekube, "bobs", "eksray-bob")["metadata"]["labels"]["eksray.io/owner"] == "bob"


def test_spec_namespace_must_be_allowed(
    make_backend: Callable[..., KubeRayBackend], fakekube: FakeKubeServer
) -> None:
    fakekube.create("namespaces", "", {"metadata": {"name": "team"}})
    backend = make_backend(allowed_namespaces=["team"])
    with pytest.raises(InvalidRequestError, match="namespace"):
        backend.create_cluster("alice", spec_of({"name": "x", "namespace": "kube-system"}))
    created = backend.create_cluster("alice", spec_of({"name": "x", "namespace": "team"}))
    assert created.namespace == "team"
    assert [c.name for c in backend.list_clusters("alice")] == ["x"]
    assert backend.list_clusters("bob") == []


def test_tampered_owner_label_hides_the_cluster(backend: KubeRayBackend, fakekube: FakeKubeServer) -> None:
    backend.create_cluster("alice", spec_of({"name": "demo"}))
    obj = cr(fakekube, "demo")
    obj["metadata"]["labels"]["eksray.io/owner"] = "bob"
    fakekube.call(
        lambda: fakekube.store.update(fakekube.store.types["ray.io/rayclusters"], ALICE_NS, "demo", obj)
    )
    wait_until(lambda: backend.list_clusters("alice") == [], what="alice loses it")
    assert backend.list_clusters("bob") == []


# --- clusters not made by eksray --------------------------------------------------------------------


def test_every_official_sample_reads_without_error(
    make_backend: Callable[..., KubeRayBackend],
    fakekube: FakeKubeServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fakekube.configure_operator(rayjob_lifecycle=True, job_duration=60)
    backend = make_backend()
    fakekube.create("namespaces", "", {"metadata": {"name": ALICE_NS}})
    names = []
    for path in sorted(SAMPLES_DIR.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in docs:
            doc.setdefault("metadata", {})["namespace"] = ALICE_NS
            if doc["kind"] == "ConfigMap" and fakekube.get("configmaps", ALICE_NS, doc["metadata"]["name"]):
                continue  # several samples share one
            if doc["kind"] == "RayCluster":
                names.append(doc["metadata"]["name"])
            fakekube.apply_manifest([doc], ALICE_NS)
    # Plus one broken by hand: claims to be ours but its spec annotation is not JSON.
    broken = yaml.safe_load((SAMPLES_DIR / "ray-cluster.sample.yaml").read_text())
    broken["metadata"] = {
        "name": "broken",
        "labels": {"eksray.io/managed-by": "eksray-jupyter", "eksray.io/owner": "alice"},
        "annotations": {"eksray.io/owner": "alice", "eksray.io/spec": "{not json"},
    }
    fakekube.create("rayclusters", ALICE_NS, broken)

    def listed() -> list[Any]:
        clusters = backend.list_clusters("alice")
        return clusters if len(clusters) > len(names) else []

    with caplog.at_level(logging.WARNING):
        clusters = wait_until(listed, what="RayJob clusters appear")
    by_name = {c.name: c for c in clusters}
    assert set(names) <= set(by_name)
    assert "broken" not in by_name
    assert "skipping RayCluster eksray-alice/broken" in caplog.text
    assert all(c.read_only for c in clusters)
    assert any(n.startswith("rayjob-sample") for n in by_name), "clusters made by RayJobs are listed too"
    sample = wait_until(
        lambda: (c := backend.get_cluster("alice", "raycluster-kuberay")).phase == Phase.READY and c
    )
    assert sample.spec["head"] == {"cpu": 1, "memory": 5}
    assert sample.worker_groups[0].max_replicas == 5
    labelled = backend.get_cluster("alice", "ray-label-cluster")
    assert labelled.spec["head"]["cpu"] == 0  # from headGroupSpec.resources
    json.dumps([c.to_dict() for c in clusters])  # serialisable
    with pytest.raises(ConflictError, match="read-only"):
        backend.delete_cluster("alice", "raycluster-kuberay")
    with pytest.raises(ConflictError, match="read-only"):
        backend.scale_cluster_request(
            "alice",
            "raycluster-kuberay",
            {"workerGroups": [{"groupName": "workergroup", "replicas": 2}]},
            sample,
        )
    assert backend.list_clusters("bob") == []


def test_foreign_clusters_are_skipped_in_a_shared_namespace(
    make_backend: Callable[..., KubeRayBackend],
    fakekube: FakeKubeServer,
) -> None:
    fakekube.create("namespaces", "", {"metadata": {"name": "ray-shared"}})
    sample = yaml.safe_load((SAMPLES_DIR / "ray-cluster.sample.yaml").read_text())
    fakekube.create("rayclusters", "ray-shared", sample)
    backend = make_backend(namespace="ray-shared")
    assert backend.list_clusters("alice") == []


# --- watches ------------------------------------------------------------------------------------------


def test_watch_resumes_after_a_dropped_stream(backend: KubeRayBackend, fakekube: FakeKubeServer) -> None:
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    ready(backend, "alice", "demo")
    wait_until(lambda: fakekube.open_watch_count() >= 3, what="the three watches open")
    lists_before = backend.watch_stats()[ALICE_NS]["lists"]
    assert fakekube.drop_watches() >= 3
    fakekube.autoscale(ALICE_NS, "demo", "cpu", replicas=2)
    # The RayCluster and its pods come through separate watches: wait for both to show the change.
    wait_until(
        lambda: (g := backend.get_cluster("alice", "demo").worker_groups[0]).ready == 2 and g.replicas == 2
    )
    # Each of the three dropped watches (rayclusters, pods, events) is opened again, without a list.
    stats = wait_until(
        lambda: (s := backend.watch_stats()[ALICE_NS])["watches"] >= 6 and s, what="re-watches"
    )
    assert stats["lists"] == lists_before, "resumed from the last resourceVersion, no re-list"


@pytest.mark.parametrize("how", ["force_410", "compact"])
def test_watch_relists_after_410(backend: KubeRayBackend, fakekube: FakeKubeServer, how: str) -> None:
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    ready(backend, "alice", "demo")
    backend.create_cluster("alice", spec_of({"name": "other"}))
    ready(backend, "alice", "other")
    lists_before = backend.watch_stats()[ALICE_NS]["lists"]
    if how == "force_410":
        fakekube.force_410(3)
        fakekube.drop_watches()
    else:
        # The API is away (watches dropped, reconnects refused) while history is compacted,
        # so the watches come back from resourceVersions that are gone.
        fakekube.api_down(3600)
    # Changes while the watches were away: one scaled, one deleted.
    fakekube.autoscale(ALICE_NS, "demo", "cpu", replicas=3)
    fakekube.delete("rayclusters", ALICE_NS, "other")
    if how == "compact":
        fakekube.compact()
        fakekube.api_up()
    wait_until(lambda: [c.name for c in backend.list_clusters("alice")] == ["demo"], what="deletion seen")
    wait_until(
        lambda: (g := backend.get_cluster("alice", "demo").worker_groups[0]).ready == 3 and g.replicas == 3,
        what="scale seen",
    )
    stats = wait_until(
        lambda: (s := backend.watch_stats()[ALICE_NS])["expired"] >= 1 and s["lists"] > lists_before and s,
        what="a re-list after 410",
    )
    assert stats["expired"] >= 1


def test_api_errors_become_backend_errors(backend: KubeRayBackend, fakekube: FakeKubeServer) -> None:
    from eksray_jupyter.core.errors import BackendError

    backend.list_clusters("alice")
    fakekube.inject_error(403, count=1, method="POST", path="rayclusters")
    with pytest.raises(BackendError, match="denied") as info:
        backend.create_cluster("alice", spec_of({"name": "demo"}))
    assert info.value.__cause__ is not None  # chained from the ApiException
    fakekube.inject_error(500, count=1, method="POST", path="rayclusters")
    with pytest.raises(BackendError, match="500"):
        backend.create_cluster("alice", spec_of({"name": "demo"}))


# --- observing ----------------------------------------------------------------------------------------


class DashboardStub:
    """A tiny Ray dashboard answering /api/v0/cluster_events, and the task, actor and job counts
    the idle keeper reads (``open_tasks``, ``live_actors``, ``jobs``; the query it got is kept)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.open_tasks = 0
        self.live_actors = 0
        self.jobs: list[dict[str, Any]] = []
        self.queries: list[str] = []
        self.nodes: list[dict[str, Any]] = []  # the node table (/api/v0/nodes)
        self.usage: dict[str, dict[str, list[float]]] = {}  # the load report's usageByNode
        stub = self

        class Handler(JSONHandler):
            def do_GET(self) -> None:
                stub.queries.append(self.path)
                counts = {"/api/v0/tasks?": stub.open_tasks, "/api/v0/actors?": stub.live_actors}
                for prefix, count in counts.items():
                    if self.path.startswith(prefix):
                        body = {"num_filtered": count, "total": count + 7, "result": []}
                        self.send_json({"result": True, "msg": "", "data": {"result": body}})
                        return
                if self.path.startswith("/api/jobs/"):
                    self.send_json(stub.jobs)
                    return
                if self.path.startswith("/api/cluster_status"):
                    report = {"loadMetricsReport": {"usageByNode": stub.usage}}
                    self.send_json({"result": True, "data": {"clusterStatus": report}})
                    return
                if self.path.startswith("/api/v0/nodes"):
                    self.send_json({"result": True, "msg": "", "data": {"result": {"result": stub.nodes}}})
                    return
                if not self.path.startswith("/api/v0/cluster_events"):
                    self.send_error(404)
                    return
                self.send_json(
                    {
                        "result": True,
                        "msg": "",
                        "data": {"result": {"total": len(stub.events), "result": stub.events}},
                    }
                )

        self.server = StubServer(Handler)
        self.url = self.server.url

    def add(self, message: str, severity: str = "INFO") -> None:
        self.events.append(
            {"event_id": f"e{len(self.events)}", "source_type": "AUTOSCALER", "severity": severity,
             "message": message, "timestamp": int(time.time())}
        )  # fmt: skip

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def dashboard_stub() -> Iterator[DashboardStub]:
    stub = DashboardStub()
    try:
        yield stub
    finally:
        stub.close()


def test_observer_pushes_changes_events_and_autoscaler_events(
    make_backend: Callable[..., KubeRayBackend],
    fakekube: FakeKubeServer,
    dashboard_stub: DashboardStub,
) -> None:
    backend = make_backend(dashboard_access="apiserver-proxy")
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    ready(backend, "alice", "demo")
    fakekube.set_proxy_upstream(ALICE_NS, "demo-head-svc", dashboard_stub.url, port="dashboard")
    changes: list[Change] = []
    unsubscribe = backend.subscribe(changes.append)
    try:
        dashboard_stub.add("Adding 1 node(s) of type cpu.")
        fakekube.autoscale(ALICE_NS, "demo", "cpu", replicas=2)
        wait_until(
            lambda: any(
                c.kind == "cluster" and c.cluster and c.cluster.worker_groups[0].ready == 2 for c in changes
            ),
            what="cluster change pushed",
        )
        wait_until(
            lambda: any(c.kind == "event" and c.event and c.event.source == "autoscaler" for c in changes),
            what="autoscaler event pushed",
        )
        wait_until(
            lambda: any(
                c.kind == "event" and c.event and c.event.reason == "CreatedWorkerPod" for c in changes
            ),
            what="operator event pushed",
        )
        assert all(c.owner == "alice" and c.name == "demo" for c in changes)
        states = [c.cluster.to_dict() for c in changes if c.kind == "cluster" and c.cluster]
        assert all(a != b for a, b in itertools.pairwise(states)), "unchanged states are not resent"
        assert len(states) <= 8, "bursts are coalesced"
        events = backend.cluster_events("alice", "demo")
        autoscaler = [e for e in events if e.source == "autoscaler"]
        assert autoscaler[0].message == "Adding 1 node(s) of type cpu." and autoscaler[0].id == "a-e0"
        backend.delete_cluster("alice", "demo")
        wait_until(lambda: any(c.kind == "deleted" for c in changes), what="deletion pushed")
    finally:
        unsubscribe()


def test_what_ray_uses_on_each_pod_is_read_from_the_heads_dashboard(
    make_backend: Callable[..., KubeRayBackend],
    fakekube: FakeKubeServer,
    dashboard_stub: DashboardStub,
) -> None:
    from eksray_jupyter.core.config import EKSRay
    from eksray_jupyter.core.service import ClusterService

    backend = make_backend(dashboard_access="apiserver-proxy")
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    cluster = ready(backend, "alice", "demo")
    fakekube.set_proxy_upstream(ALICE_NS, "demo-head-svc", dashboard_stub.url, port="dashboard")
    head = next(n for n in cluster.nodes if n.kind == "head")
    worker = next(n for n in cluster.nodes if n.kind == "worker")
    dashboard_stub.nodes = [
        {"node_id": "ray-head", "node_ip": head.address, "state": "ALIVE"},
        {"node_id": "ray-worker", "node_ip": worker.address, "state": "ALIVE"},
        {"node_id": "ray-gone", "node_ip": "10.9.9.9", "state": "DEAD"},
    ]
    dashboard_stub.usage = {
        "ray-head": {"CPU": [0.0, 1.0], "node:__internal_head__": [0.0, 1.0]},
        "ray-worker": {"CPU": [1.0, 1.0], "memory": [2**30, 2**31], "objectStoreMemory": [2**27, 2**29]},
        "ray-gone": {"CPU": [1.0, 1.0]},
    }
    service = ClusterService(EKSRay(owner="alice", state_dir=str(backend.state_dir)), backend)
    used = wait_until(
        lambda: (r := service.accounting.report()["clusters"][0]["used"])["cpu"] == 1 and r,
        what="the worker's use in the report",
    )
    assert used["memoryGiB"] == 1.0 and used["objectStoreGiB"] == 0.125
    seen = service.accounting.with_use(backend.get_cluster("alice", "demo"))
    on_worker = next(n for n in seen.nodes if n.kind == "worker")
    assert on_worker.used["CPU"] == 1.0 and on_worker.utilization["CPU"] == 1.0
    assert next(n for n in seen.nodes if n.kind == "head").used == {"CPU": 0.0}
    # Panels get it pushed (their utilisation chart), and again when it changes.
    changes: list[Change] = []
    unsubscribe = backend.subscribe(changes.append)
    try:

        def pushed_worker_cpu(value: float) -> bool:
            return any(
                c.kind == "cluster"
                and c.cluster
                and any(n.kind == "worker" and n.used.get("CPU") == value for n in c.cluster.nodes)
                for c in changes
            )

        wait_until(lambda: pushed_worker_cpu(1.0), what="the worker's use pushed")
        dashboard_stub.usage["ray-worker"]["CPU"] = [0.0, 1.0]
        wait_until(lambda: pushed_worker_cpu(0.0), what="the worker's use pushed again when it fell")
    finally:
        unsubscribe()
    # The dashboard stops answering: the nodes show no use, nothing fails.
    fakekube.set_proxy_upstream(ALICE_NS, "demo-head-svc", "http://127.0.0.1:9", port="dashboard")
    backend.autoscaler_events.forget((ALICE_NS, "demo"))
    assert all(not n.used for n in service.accounting.with_use(backend.get_cluster("alice", "demo")).nodes)


def test_dashboard_and_driver_addresses(
    make_backend: Callable[..., KubeRayBackend], fakekube: FakeKubeServer
) -> None:
    fakekube.configure_operator(pod_ready_delay=None)
    proxy = make_backend(dashboard_access="apiserver-proxy")
    proxy.create_cluster("alice", spec_of({"name": "demo"}))
    wait_until(lambda: proxy.get_cluster("alice", "demo").nodes, what="head pod")
    with pytest.raises(NotReadyError):
        proxy.dashboard_address("alice", "demo")
    fakekube.release_pods()
    ready(proxy, "alice", "demo")
    assert proxy.dashboard_address("alice", "demo") == (
        f"{fakekube.url}/api/v1/namespaces/{ALICE_NS}/services/demo-head-svc:dashboard/proxy"
    )
    assert proxy.dashboard_request_headers("alice", "demo") == {"Authorization": "Bearer fake-token"}
    assert proxy.dashboard_request_options("alice", "demo") == {}  # plain http to the fake
    service = make_backend(
        dashboard_access="service", driver_address="gcs", service_domain="svc.cluster.local"
    )
    assert (
        service.dashboard_address("alice", "demo")
        == f"http://demo-head-svc.{ALICE_NS}.svc.cluster.local:8265"
    )
    assert service.dashboard_request_headers("alice", "demo") == {}
    assert service.connection_address("alice", "demo") == f"demo-head-svc.{ALICE_NS}.svc.cluster.local:6379"
    assert proxy.connection_address("alice", "demo") == f"ray://demo-head-svc.{ALICE_NS}.svc:10001"


def test_the_cli_exits_cleanly_after_a_refusal(
    fakekube: FakeKubeServer, fakekube_kubeconfig: Path, tmp_path: Path
) -> None:
    """A refused create leaves the backend's watch threads running; the CLI closes them before exiting.

    Without that the interpreter aborted at exit (SIGABRT, code 134) instead of exiting 1.
    """
    config = {
        "EKSRay": {"backend": "kuberay", "owner": "alice", "state_dir": str(tmp_path / "state")},
        "KubeRayBackend": {
            "credentials": "kubeconfig",
            "kubeconfig": str(fakekube_kubeconfig),
            "max_clusters_per_owner": 0,
        },
    }
    env = {
        "EKSRAY_CONFIG": json.dumps(config),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "none"),
        "PATH": "/usr/bin:/bin",
    }
    for argv in (["rc", "create", "t1"], ["rj", "submit", "--entrypoint", "python a.py"]):
        out = subprocess.run(
            [sys.executable, "-m", "eksray_jupyter.cli", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert out.returncode == 1, (argv, out.returncode, out.stderr)
        assert "max_clusters_per_owner = 0" in out.stderr


def test_a_cluster_deleted_here_stays_stopping_when_an_older_change_arrives() -> None:
    """The backend marks a cluster it deleted at once; a status update the operator made just
    before the delete (newer resourceVersion, no deletionTimestamp) must not bring back "ready"."""
    cache = NamespaceCache(ALICE_NS, api=None, on_change=lambda *_: None, log=logging.getLogger("t"))  # type: ignore[arg-type]

    def cr(rv: int, uid: str = "u1", **meta: Any) -> dict[str, Any]:
        return {"metadata": {"name": "demo", "uid": uid, "resourceVersion": str(rv), **meta}}

    cache.put_cluster(cr(5))
    cache.clusters["demo"] = cr(5, deletionTimestamp="2026-11-26T10:00:00Z")  # as delete_cluster marks it
    cache._apply("rayclusters", "MODIFIED", cr(6))
    assert cache.clusters["demo"]["metadata"]["resourceVersion"] == "6"
    assert cache.clusters["demo"]["metadata"]["deletionTimestamp"] == "2026-11-26T10:00:00Z"
    cache._replace("rayclusters", [cr(7)], initial=False)  # a re-list after a 410
    assert cache.clusters["demo"]["metadata"]["deletionTimestamp"] == "2026-11-26T10:00:00Z"
    # A new cluster of the same name (another uid) is not the one being deleted.
    cache._apply("rayclusters", "MODIFIED", cr(8, uid="u2"))
    assert "deletionTimestamp" not in cache.clusters["demo"]["metadata"]


def test_a_change_made_while_the_observer_starts_is_pushed(
    backend: KubeRayBackend, fakekube: FakeKubeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A panel's snapshot may be read before the observer's baseline: a change that lands in
    between is in the baseline, and must still be pushed."""
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    ready(backend, "alice", "demo")
    go = threading.Event()
    default_owner = backend.default_owner

    def late_start() -> str | None:  # the observer's thread, slow to start
        go.wait(30)
        return default_owner()

    monkeypatch.setattr(backend, "default_owner", late_start)
    changes: list[Change] = []
    unsubscribe = backend.subscribe(changes.append)
    try:
        fakekube.autoscale(ALICE_NS, "demo", "cpu", replicas=2)
        wait_until(lambda: backend.get_cluster("alice", "demo").worker_groups[0].ready == 2, what="scaled")
        go.set()
        wait_until(
            lambda: any(
                c.kind == "cluster" and c.cluster and c.cluster.worker_groups[0].ready == 2 for c in changes
            ),
            what="the change pushed",
        )
    finally:
        go.set()
        unsubscribe()


def test_a_deletion_seen_before_the_delete_returns_is_pushed_last(
    backend: KubeRayBackend, fakekube: FakeKubeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the chaos suite on the real control plane (no finalizer keeps a deleted RayCluster
    there): the watch saw the cluster go while the delete still made its other calls, and the
    delete then pushed "stopping" after "deleted"; panels showed a deleted cluster for ever."""
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    ready(backend, "alice", "demo")
    changes: list[Change] = []
    unsubscribe = backend.subscribe(changes.append)
    delete_policy = backend._delete_network_policy

    def after_the_watch_saw_it_go(*args: Any) -> None:
        wait_until(lambda: any(c.kind == "deleted" for c in changes), what="the deletion pushed")
        delete_policy(*args)

    monkeypatch.setattr(backend, "_delete_network_policy", after_the_watch_saw_it_go)
    try:
        backend.delete_cluster("alice", "demo")
        wait_until(lambda: backend.list_clusters("alice") == [], what="gone from the cache")
        assert [c.kind for c in changes if c.name == "demo" and c.kind != "event"][-1] == "deleted"
    finally:
        unsubscribe()


def test_a_cluster_whose_creator_died_before_its_network_policy_gets_it(
    make_backend: Callable[..., KubeRayBackend], fakekube: FakeKubeServer
) -> None:
    """Found by the chaos suite: a server or CLI killed between creating the RayCluster and its
    NetworkPolicy left the cluster without one for ever. The next process that lists it makes it."""
    make_backend(network_policy=False).create_cluster("alice", spec_of(CPU_SPEC))  # as a creator that died
    assert fakekube.get("networkpolicies", ALICE_NS, "demo-eksray") is None
    survivor = make_backend()
    assert [c.name for c in survivor.list_clusters("alice")] == ["demo"]
    policy = wait_until(
        lambda: fakekube.get("networkpolicies", ALICE_NS, "demo-eksray"), what="its NetworkPolicy"
    )
    assert policy["metadata"]["ownerReferences"][0]["uid"] == cr(fakekube, "demo")["metadata"]["uid"]
    created = policy["metadata"]["uid"]
    survivor.list_clusters("alice")  # checked once: not made again
    survivor.create_cluster("alice", spec_of({**CPU_SPEC, "name": "other"}))
    survivor.list_clusters("alice")
    assert fakekube.get("networkpolicies", ALICE_NS, "demo-eksray")["metadata"]["uid"] == created
    assert fakekube.get("networkpolicies", ALICE_NS, "other-eksray") is not None


def test_a_failing_dashboard_is_asked_again_later_and_later(monkeypatch: pytest.MonkeyPatch) -> None:
    from eksray_jupyter.backends.kuberay import dashboard_events
    from eksray_jupyter.core.errors import BackendError

    now = [1000.0]
    monkeypatch.setattr(dashboard_events.time, "monotonic", lambda: now[0])
    answers: list[Any] = []
    asked: list[float] = []

    def fetch(key: tuple[str, str]) -> Any:
        asked.append(now[0])
        answer = answers.pop(0) if answers else {"data": {"result": {"result": []}}}
        if isinstance(answer, Exception):
            raise answer
        return answer

    reader = dashboard_events.EventsReader(fetch, ttl=5.0, backoff=30.0, first_backoff=2.0)
    key = (ALICE_NS, "demo")
    # Six failures, an answer, one more failure, then answers.
    answers.extend([BackendError("slow")] * 6 + [{"data": {"result": {"result": []}}}, BackendError("slow")])
    for _ in range(240):  # a poll every 0.5 s (exact in binary) for two minutes
        reader.events(key, "uid")
        now[0] += 0.5
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(asked)]
    # Doubled up to the cap; an answer is kept for ttl; the failure after it waits 2 s again, not 30.
    assert gaps[:8] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 5.0, 2.0]

    # A dashboard that never answers (weeks of polls) stays at the cap.
    answers.extend([BackendError("down")] * 2000)
    for _ in range(2000):
        now[0] += 30.0
        assert reader.events(key, "uid") == []
    assert not answers


def test_the_watch_backs_off_while_down_and_starts_over_once_it_was_back() -> None:
    """After an outage the reconnect delay returns to its minimum once the API server answered."""
    from eksray_jupyter.backends.kuberay.reflector import Reflector

    class Outage(Exception):
        pass

    # Four failed lists (the server is down), then a list and a watch that opens and breaks.
    script = ["down", "down", "down", "down", "up"]
    waits: list[float] = []

    class Api:
        def list_raw(self, kind: str, namespace: str, cont: str | None = None) -> dict[str, Any]:
            if not script or script.pop(0) == "down":
                raise Outage()
            return {"items": [], "metadata": {"resourceVersion": "7"}}

        def watch_raw(self, kind: str, namespace: str, rv: str, timeout: int) -> Any:
            raise Outage()  # opened, then reset at once

    reflector = Reflector(
        Api(), "pods", "ns", lambda items, first: None, lambda t, o: None, logging.getLogger()
    )  # type: ignore[arg-type]

    def wait(delay: float) -> bool:
        waits.append(delay)
        if len(waits) >= 7:
            reflector._stop.set()
        return reflector._stop.is_set()

    reflector._stop.wait = wait  # type: ignore[method-assign]
    reflector._run()
    # Backing off while down; after the list answered, the broken watch is retried at once again.
    assert waits[:4] == [0.1, 0.2, 0.4, 0.8]
    assert waits[4] == 0.1, waits


# --- Ray's token and the NetworkPolicy (what the real control plane cannot be driven into) ------


def test_token_auth_is_in_every_manifest_and_needs_ray_2_52() -> None:
    body = KubeRayBackend().manifest("alice", spec_of({"name": "demo"}))
    assert body["spec"]["authOptions"] == {"mode": "token"}
    with pytest.raises(InvalidRequestError) as info:
        KubeRayBackend().manifest("alice", spec_of({"name": "old", "rayVersion": "2.51.1"}))
    assert [e.path for e in info.value.errors] == ["rayVersion"] and "2.52.0" in str(info.value)
    with pytest.raises(InvalidRequestError):
        KubeRayBackend(ray_version="2.41.0").manifest("alice", spec_of({"name": "old"}))
    plain = KubeRayBackend(ray_token_auth=False).manifest(
        "alice", spec_of({"name": "old", "rayVersion": "2.41.0"})
    )
    assert "authOptions" not in plain["spec"]


@pytest.mark.parametrize(
    ("cluster", "secret"),
    [
        ("demo", "demo"),
        ("a" * 53, "a" * 50),
        ("x" * 3 + "-" + "y" * 49, "r" + "y" * 49),  # KubeRay's CheckName: the end, no leading '-'
        ("job-" + "0" * 49, "r" + "0" * 49),  # nor a leading digit
    ],
)
def test_the_token_secret_is_named_as_kuberay_names_it(cluster: str, secret: str) -> None:
    from eksray_jupyter.backends.kuberay.names import auth_secret_name

    assert auth_secret_name(cluster) == secret


def test_the_token_file_waits_for_the_secret_is_cached_and_goes_with_the_cluster(
    make_backend: Callable[..., KubeRayBackend], fakekube: FakeKubeServer, tmp_path: Path
) -> None:
    import base64

    backend = make_backend(state_dir=str(tmp_path / "state"), ray_token_wait_seconds=0)
    fakekube.configure_operator(enabled=False)  # an operator that has not acted yet
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    with pytest.raises(NotReadyError, match="does not exist yet"):
        backend.ray_auth_token_file("alice", "demo")

    # A new cluster's token is waited for (e.g. made the active cluster right after creating it).
    reads: list[str] = []
    get_secret = backend.api.get_secret
    backend.api.get_secret = lambda ns, name: reads.append(name) or get_secret(ns, name)  # type: ignore[method-assign]
    backend.ray_token_wait_seconds = 60
    answer: dict[str, Any] = {}
    asking = threading.Thread(target=lambda: answer.update(path=backend.ray_auth_token_file("alice", "demo")))
    asking.start()
    wait_until(lambda: len(reads) >= 2, what="the Secret looked for again")
    fakekube.configure_operator(enabled=True)
    asking.join(30)
    secret = fakekube.get("secrets", ALICE_NS, "demo")
    assert secret is not None
    token = base64.b64decode(secret["data"]["auth_token"]).decode()
    path = answer["path"]
    assert path == tmp_path / "state" / "kuberay" / "ray-tokens" / ALICE_NS / "demo"
    assert path.read_text() == token and path.stat().st_mode & 0o777 == 0o600

    reads.clear()
    for _ in range(20):  # what the dashboard proxy does on every request
        assert backend.ray_auth_token_file("alice", "demo") == path
    assert reads == [], "the known token: no Secret read"

    # A re-created cluster of that name is another incarnation: its token is read and written anew.
    backend.delete_cluster("alice", "demo")
    assert not path.exists()
    wait_until(lambda: fakekube.get("secrets", ALICE_NS, "demo") is None, what="the old Secret collected")
    wait_until(lambda: backend.list_clusters("alice") == [], what="the old cluster gone")
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    fresh = wait_until(lambda: fakekube.get("secrets", ALICE_NS, "demo"), what="the new Secret")
    assert backend.ray_auth_token_file("alice", "demo") == path
    assert path.read_text() == base64.b64decode(fresh["data"]["auth_token"]).decode() != token


def test_a_cluster_made_without_token_auth_needs_no_token(
    make_backend: Callable[..., KubeRayBackend], fakekube: FakeKubeServer, tmp_path: Path
) -> None:
    old = make_backend(ray_token_auth=False, state_dir=str(tmp_path / "state"))
    old.create_cluster("alice", spec_of({**CPU_SPEC, "rayVersion": "2.41.0"}))
    ready(old, "alice", "demo")
    assert fakekube.get("secrets", ALICE_NS, "demo") is None
    # Turned on later: the cluster made before keeps working without a token; a file left from
    # an earlier cluster of that name is removed.
    now = make_backend(state_dir=str(tmp_path / "state"))
    stale = now.ray_tokens.path(ALICE_NS, "demo")
    stale.parent.mkdir(parents=True)
    stale.write_text("stale")
    assert now.ray_auth_token_file("alice", "demo") is None
    assert not stale.exists()
    assert now.ray_auth_token("alice", "demo") is None
    assert now.dashboard_address("alice", "demo")


def test_autoscaler_events_present_the_clusters_token(
    make_backend: Callable[..., KubeRayBackend], fakekube: FakeKubeServer
) -> None:
    import base64

    seen: list[str | None] = []

    class Handler(JSONHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("X-Ray-Authorization"))
            self.send_json({"result": True, "msg": "", "data": {"result": {"total": 0, "result": []}}})

    stub = StubServer(Handler)
    try:
        backend = make_backend(dashboard_access="apiserver-proxy")
        backend.create_cluster("alice", spec_of(CPU_SPEC))
        ready(backend, "alice", "demo")
        fakekube.set_proxy_upstream(ALICE_NS, "demo-head-svc", stub.url, port="dashboard")
        backend.cluster_events("alice", "demo")
        token = base64.b64decode(fakekube.get("secrets", ALICE_NS, "demo")["data"]["auth_token"]).decode()
        assert seen == [f"Bearer {token}"]
    finally:
        stub.close()


def test_a_network_policy_that_fails_rolls_the_cluster_back(
    backend: KubeRayBackend, fakekube: FakeKubeServer
) -> None:
    from eksray_jupyter.core.errors import BackendError

    fakekube.inject_error(500, method="POST", path="/networkpolicies$")
    with pytest.raises(BackendError, match="'demo' was not created: its NetworkPolicy could not be made"):
        backend.create_cluster("alice", spec_of(CPU_SPEC))
    assert fakekube.get("rayclusters", ALICE_NS, "demo") is None
    wait_until(lambda: backend.list_clusters("alice") == [], what="the watch saw it go")

    # When the roll-back fails too, the error says what is left and how to remove it.
    fakekube.inject_error(500, method="POST", path="/networkpolicies$")
    fakekube.inject_error(500, method="DELETE", path="/rayclusters/demo$")
    with pytest.raises(BackendError, match="delete it yourself"):
        backend.create_cluster("alice", spec_of(CPU_SPEC))
    assert fakekube.get("rayclusters", ALICE_NS, "demo") is not None


def test_a_left_over_network_policy_of_the_owner_is_replaced(
    backend: KubeRayBackend, fakekube: FakeKubeServer
) -> None:
    """One left from an earlier cluster of that name the garbage collector has not removed yet."""
    backend.create_cluster("alice", spec_of({"name": "first"}))  # makes the namespace
    earlier = {
        "metadata": {
            "name": "demo-eksray",
            "labels": {"eksray.io/managed-by": "eksray-jupyter", "eksray.io/owner": "alice"},
            "ownerReferences": [
                {"apiVersion": "ray.io/v1", "kind": "RayCluster", "name": "demo", "uid": "gone"}
            ],
        },
        "spec": {"podSelector": {"matchLabels": {"ray.io/cluster": "demo"}}},
    }
    fakekube.create("networking.k8s.io/networkpolicies", ALICE_NS, earlier)
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    policy = fakekube.get("networking.k8s.io/networkpolicies", ALICE_NS, "demo-eksray")
    assert policy is not None
    uid = cr(fakekube, "demo")["metadata"]["uid"]
    assert [r["uid"] for r in policy["metadata"]["ownerReferences"]] == [uid]
    assert len(policy["spec"]["ingress"]) == 2


def test_network_policy_settings_shape_the_policy(
    make_backend: Callable[..., KubeRayBackend], fakekube: FakeKubeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "jhub")
    backend = make_backend(
        credentials="kubeconfig",
        jupyter_pod_selector={"app": "notebook"},
        operator_peer={},
        network_policy_ingress_from=[{"ipBlock": {"cidr": "10.0.0.0/24"}}],
    )
    monkeypatch.setattr(backend, "_in_cluster", lambda: True)
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    policy = fakekube.get("networking.k8s.io/networkpolicies", ALICE_NS, "demo-eksray")
    assert policy is not None
    (rule,) = policy["spec"]["ingress"]  # no operator rule
    assert rule["from"][2:] == [
        {"podSelector": {"matchLabels": {"app": "notebook"}}, "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "jhub"}}},
        {"ipBlock": {"cidr": "10.0.0.0/24"}},
    ]  # fmt: skip
    off = make_backend(network_policy=False)
    off.create_cluster("alice", spec_of({**CPU_SPEC, "name": "open"}))
    assert fakekube.get("networking.k8s.io/networkpolicies", ALICE_NS, "open-eksray") is None
    with pytest.raises(Exception, match="unknown keys"):
        KubeRayBackend(network_policy_ingress_from=[{"pods": {}}])
    with pytest.raises(Exception, match="ipBlock cannot be combined"):
        KubeRayBackend(operator_peer={"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}})


def test_suspend_resume_and_activity(
    make_backend: Callable[..., KubeRayBackend], fakekube: FakeKubeServer, dashboard_stub: DashboardStub
) -> None:
    """Issue 14 on the fake (the real operator's part is in test_k8s_kuberay.py): what the idle
    keeper asks of Ray through the API server's proxy, and suspend/resume as annotations."""
    backend = make_backend(dashboard_access="apiserver-proxy")
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    ready(backend, "alice", "demo")
    fakekube.set_proxy_upstream(ALICE_NS, "demo-head-svc", dashboard_stub.url, port="dashboard")
    assert backend.busy_reasons("alice", "demo") == []
    # A connected driver is a RUNNING job of type DRIVER: not work. Submitted jobs and tasks are.
    dashboard_stub.jobs = [
        {"type": "DRIVER", "status": "RUNNING", "job_id": "01000000"},
        {"type": "SUBMISSION", "status": "RUNNING", "submission_id": "raysubmit_1"},
        {"type": "SUBMISSION", "status": "SUCCEEDED", "submission_id": "raysubmit_0"},
    ]
    dashboard_stub.open_tasks, dashboard_stub.live_actors = 3, 1
    assert backend.busy_reasons("alice", "demo") == [
        "3 Ray task(s) running or waiting",
        "1 Ray actor(s) alive",
        "Ray job raysubmit_1 running",
    ]
    tasks_query = next(q for q in dashboard_stub.queries if q.startswith("/api/v0/tasks?"))
    assert "filter_values=DRIVER_TASK" in tasks_query and "filter_values=FINISHED" in tasks_query
    fakekube.set_proxy_upstream(ALICE_NS, "demo-head-svc", None, port="dashboard")
    with pytest.raises(BackendError):  # cannot be asked: never taken for idle
        backend.busy_reasons("alice", "demo")

    earlier = round(time.time() - 100, 3)
    backend.mark_active("alice", "demo", earlier, "a test")
    assert cr(fakekube, "demo")["metadata"]["annotations"]["eksray.io/last-active-at"] == f"{earlier:.3f}"
    assert backend.get_cluster("alice", "demo").last_active_at == earlier

    backend.suspend_cluster("alice", "demo", "Suspending: idle for 30 min")
    suspended = wait_until(lambda: (c := backend.get_cluster("alice", "demo")).phase == Phase.SUSPENDED and c)
    assert suspended.suspended_at is not None and cr(fakekube, "demo")["spec"]["suspend"] is True
    assert backend.busy_reasons("alice", "demo") == []  # nothing runs
    assert [c.name for c in backend.all_clusters()] == ["demo"]
    backend.resume_cluster("alice", "demo")
    resumed = ready(backend, "alice", "demo")
    assert resumed.suspended_at is None and resumed.last_active_at > earlier + 99
    assert "eksray.io/suspended-at" not in cr(fakekube, "demo")["metadata"]["annotations"]
    reasons = {e.reason for e in backend.cluster_events("alice", "demo")}
    assert {"Suspending", "Resumed"} <= reasons


def test_suspend_and_resume_retry_while_the_operator_writes(
    backend: KubeRayBackend, fakekube: FakeKubeServer
) -> None:
    """The real operator writes a RayCluster often while its pods come and go, so the patch's
    ``test`` of the version read fails, more than once in a row (CI saw it on the real control
    plane); the API server says only "rejected" (a bare 422). Suspend and resume re-read and send
    again while the object keeps changing; a patch refused on an unchanged object is not retried."""
    backend.create_cluster("alice", spec_of(CPU_SPEC))
    ready(backend, "alice", "demo")
    real_patch = backend.api.patch_cluster
    writer = kubernetes.client.CustomObjectsApi(fakekube.api_client())
    sent: list[list[dict[str, Any]]] = []
    writes = {"before each of": 3}

    def operator_writes_first(namespace: str, name: str, ops: Any, *rest: Any) -> dict[str, Any]:
        sent.append(ops)
        if (
            len(sent) <= writes["before each of"]
        ):  # a write lands between each read and its patch (a label: no reconcile)
            writer.patch_namespaced_custom_object(
                "ray.io",
                "v1",
                namespace,
                "rayclusters",
                name,
                {"metadata": {"labels": {"touched": str(len(sent))}}},
            )
        return real_patch(namespace, name, ops, *rest)

    backend.api.patch_cluster = operator_writes_first  # type: ignore[method-assign]
    backend.suspend_cluster("alice", "demo")
    assert len(sent) == 4 and cr(fakekube, "demo")["spec"]["suspend"] is True
    assert len({op[0]["value"] for op in sent}) == 4, "each attempt tested the version it read"
    wait_until(lambda: backend.get_cluster("alice", "demo").phase == Phase.SUSPENDED)
    sent.clear()
    backend.resume_cluster("alice", "demo")
    assert len(sent) == 4 and cr(fakekube, "demo")["spec"]["suspend"] is False
    resumed = wait_until(
        lambda: [e for e in backend.cluster_events("alice", "demo") if e.reason == "Resumed"]
    )
    assert len(resumed) == 1, "one event for one resume, however many attempts"

    # Refused with nothing changed: the patch itself is wrong, said without sending it again.
    # (While the simulated operator still writes the resumed cluster, a refusal on a changed
    # object is retried, rightly: the refusals outnumber any such retries, and it must stop
    # at the first refusal of an unchanged object, long before they run out.)
    wait_until(lambda: backend.get_cluster("alice", "demo").phase == Phase.READY)
    sent.clear()
    writes["before each of"] = 0
    fakekube.inject_error(422, count=20, method="PATCH", path="/rayclusters/demo")
    with pytest.raises(InvalidRequestError):
        backend.suspend_cluster("alice", "demo")
    assert 1 <= len(sent) < 20 and cr(fakekube, "demo")["spec"]["suspend"] is False


def test_suspend_resume_keepalive_and_reap_from_the_cli(
    make_backend: Callable[..., KubeRayBackend],
    fakekube: FakeKubeServer,
    fakekube_kubeconfig: Path,
    tmp_path: Path,
    dashboard_stub: DashboardStub,
) -> None:
    backend = make_backend()
    spec = spec_of({**CPU_SPEC, "lifecycle": {"idleTimeoutMinutes": 1}})
    backend.create_cluster("alice", spec)
    ready(backend, "alice", "demo")
    fakekube.set_proxy_upstream(ALICE_NS, "demo-head-svc", dashboard_stub.url, port="dashboard")
    config = {
        "EKSRay": {
            "backend": "kuberay",
            "owner": "alice",
            "state_dir": str(tmp_path / "state"),
            "lifecycle_warning_minutes": 0.25,
        },
        "KubeRayBackend": {"credentials": "kubeconfig", "kubeconfig": str(fakekube_kubeconfig)},
    }
    env = {
        "EKSRAY_CONFIG": json.dumps(config),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "none"),
        "PATH": "/usr/bin:/bin",
    }

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "eksray_jupyter.cli", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    out = cli("rc", "suspend", "demo")
    assert out.returncode == 0, out.stderr
    assert "demo is suspended" in out.stdout and "eksray rc resume demo" in out.stdout
    wait_until(lambda: backend.get_cluster("alice", "demo").phase == Phase.SUSPENDED)
    out = cli("rc", "keepalive", "demo")
    assert out.returncode == 1 and "is suspended; resume it" in out.stderr
    out = cli("rc", "resume", "demo", "--wait", "--timeout", "60", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["phase"] == "ready"
    out = cli("rc", "keepalive", "demo")
    assert out.returncode == 0 and "idle time starts again" in out.stdout
    assert backend.get_cluster("alice", "demo").last_active_at is not None
    # The reaper, as a dry run: the cluster is not idle yet (just kept alive) and nothing changes.
    out = cli("admin", "reap", "--dry-run", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["clusters"] == [
        {
            "owner": "alice",
            "name": "demo",
            "decision": "none",
            "acted": False,
            "reason": None,
            "busy": [],
            "error": None,
        }
    ]
    dashboard_stub.live_actors = 2
    out = cli("admin", "reap", "--dry-run")
    assert out.returncode == 0 and "alice/demo: none [busy: 2 Ray actor(s) alive]" in out.stdout
    out = cli("rc", "create", "bad", "--idle-timeout", "-3")
    assert out.returncode == 2 and "lifecycle.idleTimeoutMinutes" in out.stderr
