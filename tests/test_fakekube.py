"""Tests of the fake Kubernetes API server (tests/fakekube), driven by the real client."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import urllib3
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

try:
    from tests.fakekube import FakeKubeServer, OperatorConfig
    from tests.fakekube.pytest_plugin import fakekube, fakekube_kubeconfig
    from tests.fakekube.schema import SAMPLES_DIR
    from tests.stub_http import JSONHandler, StubServer
    from tests.waiting import wait_until
except ModuleNotFoundError:  # pytest put tests/ (not the repo root) on sys.path
    from fakekube import FakeKubeServer, OperatorConfig  # type: ignore[no-redef]
    from fakekube.pytest_plugin import fakekube, fakekube_kubeconfig  # type: ignore[no-redef] # noqa: F401
    from fakekube.schema import SAMPLES_DIR  # type: ignore[no-redef]
    from stub_http import JSONHandler, StubServer  # type: ignore[no-redef]
    from waiting import wait_until  # type: ignore[no-redef]

T = TypeVar("T")
G, V = "ray.io", "v1"
NS = "default"
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------
# helpers & fixtures


def status_body(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == exc.status
    assert body["message"]
    assert body["reason"]
    return body


def load_sample(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((SAMPLES_DIR / name).read_text()) if d]


def sample_cluster(name: str = "raycluster-kuberay") -> dict[str, Any]:
    doc = copy.deepcopy(load_sample("ray-cluster.sample.yaml")[0])
    doc["metadata"]["name"] = name
    return doc


def raw(
    fk: FakeKubeServer, method: str, path: str, body: bytes | None = None, ctype: str = "application/json"
) -> tuple[int, Any]:
    """A request that bypasses the client's own body/content-type handling."""
    req = urllib.request.Request(
        fk.url + path,
        data=body,
        method=method,
        headers={"Authorization": f"Bearer {fk.token}", "Content-Type": ctype},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


@pytest.fixture
def fk() -> Iterator[FakeKubeServer]:
    server = FakeKubeServer(
        operator_config=OperatorConfig(pod_ready_delay=0.05), bookmark_interval=0.1
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api_client(fk: FakeKubeServer) -> Iterator[client.ApiClient]:
    c = fk.api_client()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def crs(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


def get_rc(crs: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    return crs.get_namespaced_custom_object(G, V, NS, "rayclusters", name)


def wait_ready(crs: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    return wait_until(
        lambda: (o := get_rc(crs, name)).get("status", {}).get("state") == "ready" and o, f"{name} ready"
    )


def events_for(core: client.CoreV1Api, name: str) -> list[client.CoreV1Event]:
    return core.list_namespaced_event(NS, field_selector=f"involvedObject.name={name}").items


def reasons_for(core: client.CoreV1Api, name: str) -> list[str]:
    return [e.reason for e in events_for(core, name)]


class _Dashboard(JSONHandler):
    def do_GET(self) -> None:
        self.send_json({"path": self.path, "ray_version": "2.52.0"})

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_json({"echo": json.loads(data or b"null")}, status=201)


@pytest.fixture
def dashboard() -> Iterator[str]:
    stub = StubServer(_Dashboard)
    try:
        yield stub.url
    finally:
        stub.close()


# ------------------------------------------------------------------------------------------
# auth, discovery


def test_requests_without_valid_token_get_401(fk: FakeKubeServer) -> None:
    for token in (None, "wrong"):
        with fk.api_client(token=token) as c:
            with pytest.raises(ApiException) as ei:
                client.CoreV1Api(c).list_namespace()
            body = status_body(ei.value)
            assert ei.value.status == 401 and body["reason"] == "Unauthorized"
    with fk.api_client() as c:
        assert {n.metadata.name for n in client.CoreV1Api(c).list_namespace().items} >= {"default"}


def test_configurable_tokens() -> None:
    with FakeKubeServer(tokens=["alpha", "beta"]) as server:
        for tok in ("alpha", "beta"):
            with server.api_client(token=tok) as c:
                client.CoreV1Api(c).list_namespace()
        with server.api_client(token="fake-token") as c, pytest.raises(ApiException) as ei:
            client.CoreV1Api(c).list_namespace()
        assert ei.value.status == 401
    with FakeKubeServer(tokens=None, operator=False) as server, server.api_client(token=None) as c:
        client.CoreV1Api(c).list_namespace()


def test_discovery_and_dynamic_client(api_client: client.ApiClient) -> None:
    from kubernetes.dynamic import DynamicClient

    dyn = DynamicClient(api_client)
    rc_api = dyn.resources.get(api_version="ray.io/v1", kind="RayCluster")
    created = rc_api.create(body=sample_cluster("dyn"), namespace=NS)
    assert created.metadata.name == "dyn"
    assert [i.metadata.name for i in rc_api.get(namespace=NS).items] == ["dyn"]
    assert client.VersionApi(api_client).get_code().git_version.startswith("v1.")


# ------------------------------------------------------------------------------------------
# CRUD, conflicts, generation, status subresource


def test_raycluster_crud(crs: client.CustomObjectsApi) -> None:
    body = sample_cluster("crud")
    created = crs.create_namespaced_custom_object(G, V, NS, "rayclusters", body)
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["resourceVersion"]
    assert meta["generation"] == 1 and meta["namespace"] == NS
    # CRD defaults applied (numOfHosts default 1)
    assert created["spec"]["workerGroupSpecs"][0]["numOfHosts"] == 1

    got = get_rc(crs, "crud")
    assert got["metadata"]["uid"] == meta["uid"]

    listed = crs.list_namespaced_custom_object(G, V, NS, "rayclusters")
    assert listed["kind"] == "RayClusterList" and listed["apiVersion"] == "ray.io/v1"
    assert int(listed["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])
    assert [i["metadata"]["name"] for i in listed["items"]] == ["crud"]
    cluster_wide = crs.list_cluster_custom_object(G, V, "rayclusters")
    assert len(cluster_wide["items"]) == 1

    with pytest.raises(ApiException) as ei:
        crs.create_namespaced_custom_object(G, V, NS, "rayclusters", body)
    st = status_body(ei.value)
    assert ei.value.status == 409 and st["reason"] == "AlreadyExists"
    assert st["details"] == {"name": "crud", "group": "ray.io", "kind": "rayclusters"}

    gen = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"generateName": "gen-"}}
    gen["spec"] = body["spec"]
    made = crs.create_namespaced_custom_object(G, V, NS, "rayclusters", gen)
    assert made["metadata"]["name"].startswith("gen-") and len(made["metadata"]["name"]) == 9

    deleted = crs.delete_namespaced_custom_object(G, V, NS, "rayclusters", "crud")
    # As the real API server answers (tests/test_fakekube_differential.py): a Status, not the object.
    assert (deleted["kind"], deleted["status"], deleted["details"]["name"]) == ("Status", "Success", "crud")
    with pytest.raises(ApiException) as ei:
        get_rc(crs, "crud")
    st = status_body(ei.value)
    assert ei.value.status == 404 and st["reason"] == "NotFound"
    assert st["message"] == 'rayclusters.ray.io "crud" not found'
    with pytest.raises(ApiException) as ei:
        crs.delete_namespaced_custom_object(G, V, NS, "rayclusters", "crud")
    assert ei.value.status == 404


def test_create_in_missing_namespace_and_namespace_cascade(core: client.CoreV1Api) -> None:
    cm = {"metadata": {"name": "x"}, "data": {}}
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_config_map("nope", cm)
    assert ei.value.status == 404 and 'namespaces "nope" not found' in status_body(ei.value)["message"]
    core.create_namespace({"metadata": {"name": "team-a"}})
    core.create_namespaced_config_map("team-a", cm)
    core.delete_namespace("team-a")
    assert core.list_config_map_for_all_namespaces(field_selector="metadata.namespace=team-a").items == []


def test_stale_resource_version_conflict(fk: FakeKubeServer, crs: client.CustomObjectsApi) -> None:
    fk.configure_operator(enabled=False)  # its status writes would race the two reads below
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("c1"))
    a = get_rc(crs, "c1")
    b = get_rc(crs, "c1")
    a["spec"]["workerGroupSpecs"][0]["replicas"] = 2
    updated = crs.replace_namespaced_custom_object(G, V, NS, "rayclusters", "c1", a)
    assert updated["metadata"]["generation"] == 2
    assert int(updated["metadata"]["resourceVersion"]) > int(b["metadata"]["resourceVersion"])
    b["spec"]["workerGroupSpecs"][0]["replicas"] = 3
    with pytest.raises(ApiException) as ei:
        crs.replace_namespaced_custom_object(G, V, NS, "rayclusters", "c1", b)
    st = status_body(ei.value)
    assert ei.value.status == 409 and st["reason"] == "Conflict"
    assert "the object has been modified" in st["message"]
    # PUT of a custom resource without resourceVersion -> 422
    del b["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as ei:
        crs.replace_namespaced_custom_object(G, V, NS, "rayclusters", "c1", b)
    assert ei.value.status == 422
    assert "metadata.resourceVersion" in status_body(ei.value)["message"]


def test_generation_and_status_subresource(fk: FakeKubeServer, crs: client.CustomObjectsApi) -> None:
    fk.configure_operator(enabled=False)
    body = sample_cluster("st")
    body["status"] = {"state": "ready"}
    created = crs.create_namespaced_custom_object(G, V, NS, "rayclusters", body)
    assert "status" not in created  # status is dropped on create
    rv0 = int(created["metadata"]["resourceVersion"])

    # metadata-only change: new resourceVersion, same generation
    created["metadata"]["labels"] = {"team": "a"}
    labeled = crs.replace_namespaced_custom_object(G, V, NS, "rayclusters", "st", created)
    assert labeled["metadata"]["generation"] == 1 and int(labeled["metadata"]["resourceVersion"]) > rv0

    # main-resource write ignores status
    labeled["status"] = {"state": "ready"}
    labeled["spec"]["workerGroupSpecs"][0]["replicas"] = 2
    out = crs.replace_namespaced_custom_object(G, V, NS, "rayclusters", "st", labeled)
    assert "status" not in out and out["metadata"]["generation"] == 2

    # /status write ignores everything but status
    out["status"] = {"state": "ready", "readyWorkerReplicas": 2}
    out["spec"]["workerGroupSpecs"][0]["replicas"] = 5
    out["metadata"]["labels"] = {"team": "b"}
    st = crs.replace_namespaced_custom_object_status(G, V, NS, "rayclusters", "st", out)
    assert st["status"]["readyWorkerReplicas"] == 2
    assert st["spec"]["workerGroupSpecs"][0]["replicas"] == 2
    assert st["metadata"]["labels"] == {"team": "a"} and st["metadata"]["generation"] == 2

    # stale /status write -> 409; merge patch of status works
    with pytest.raises(ApiException) as ei:
        crs.replace_namespaced_custom_object_status(G, V, NS, "rayclusters", "st", out)
    assert ei.value.status == 409
    patched = crs.patch_namespaced_custom_object_status(
        G, V, NS, "rayclusters", "st", {"status": {"state": "suspended"}, "spec": {"suspend": True}}
    )
    assert patched["status"] == {"state": "suspended", "readyWorkerReplicas": 2}
    assert "suspend" not in patched["spec"]
    got = crs.get_namespaced_custom_object_status(G, V, NS, "rayclusters", "st")
    assert got["status"]["state"] == "suspended"

    # no-op update: resourceVersion unchanged
    same = crs.replace_namespaced_custom_object(G, V, NS, "rayclusters", "st", got)
    assert same["metadata"]["resourceVersion"] == got["metadata"]["resourceVersion"]


def test_status_write_is_validated(fk: FakeKubeServer, crs: client.CustomObjectsApi) -> None:
    fk.configure_operator(enabled=False)
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("sv"))
    with pytest.raises(ApiException) as ei:
        crs.patch_namespaced_custom_object_status(
            G, V, NS, "rayclusters", "sv", {"status": {"readyWorkerReplicas": "two"}}
        )
    assert ei.value.status == 422


# ------------------------------------------------------------------------------------------
# patches


def test_merge_patch(crs: client.CustomObjectsApi) -> None:
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("mp"))
    cur = get_rc(crs, "mp")
    patch = {"metadata": {"labels": {"a": "1"}}, "spec": {"rayVersion": None, "suspend": False}}
    out = crs.patch_namespaced_custom_object(G, V, NS, "rayclusters", "mp", patch)
    assert out["metadata"]["labels"] == {"a": "1"}
    assert "rayVersion" not in out["spec"] and out["spec"]["suspend"] is False
    assert out["metadata"]["generation"] == 2
    # lists are replaced wholesale
    groups = copy.deepcopy(cur["spec"]["workerGroupSpecs"])
    groups[0]["replicas"] = 3
    out = crs.patch_namespaced_custom_object(
        G, V, NS, "rayclusters", "mp", {"spec": {"workerGroupSpecs": groups}}
    )
    assert out["spec"]["workerGroupSpecs"][0]["replicas"] == 3
    # merge patch carrying a stale resourceVersion -> 409
    stale = {"metadata": {"resourceVersion": cur["metadata"]["resourceVersion"]}, "spec": {"suspend": True}}
    with pytest.raises(ApiException) as ei:
        crs.patch_namespaced_custom_object(G, V, NS, "rayclusters", "mp", stale)
    assert ei.value.status == 409 and status_body(ei.value)["reason"] == "Conflict"
    # patch of a missing object -> 404
    with pytest.raises(ApiException) as ei:
        crs.patch_namespaced_custom_object(G, V, NS, "rayclusters", "nope", {"spec": {}})
    assert ei.value.status == 404


def test_json_patch_and_test_op(fk: FakeKubeServer, crs: client.CustomObjectsApi) -> None:
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("jp"))
    cur = get_rc(crs, "jp")
    rv = cur["metadata"]["resourceVersion"]
    jp = "application/json-patch+json"
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "test", "path": "/spec/workerGroupSpecs/0/groupName", "value": "workergroup"},
        {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 2},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}},
    ]
    out = crs.patch_namespaced_custom_object(G, V, NS, "rayclusters", "jp", ops, _content_type=jp)
    assert out["spec"]["workerGroupSpecs"][0]["replicas"] == 2 and out["metadata"]["labels"] == {"x": "y"}
    # the same test op now fails -> 422, nothing applied
    with pytest.raises(ApiException) as ei:
        crs.patch_namespaced_custom_object(G, V, NS, "rayclusters", "jp", ops, _content_type=jp)
    st = status_body(ei.value)
    assert ei.value.status == 422 and st["reason"] == "Invalid"
    # as the real server: a generic message that does not say which op failed
    assert st["message"] == "the server rejected our request due to an error in our request"
    after = get_rc(crs, "jp")
    assert after["spec"] == out["spec"] and after["metadata"]["generation"] == out["metadata"]["generation"]
    # path that does not exist -> 422; malformed body -> 400
    with pytest.raises(ApiException) as ei:
        crs.patch_namespaced_custom_object(
            G, V, NS, "rayclusters", "jp", [{"op": "remove", "path": "/spec/nope"}], _content_type=jp
        )
    assert ei.value.status == 422
    code, body = raw(fk, "PATCH", f"/apis/ray.io/v1/namespaces/{NS}/rayclusters/jp", b'{"op": "x"}', jp)
    assert code == 400 and body["reason"] == "BadRequest"
    # a patch producing an invalid object -> 422 from schema validation
    bad = [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": "many"}]
    with pytest.raises(ApiException) as ei:
        crs.patch_namespaced_custom_object(G, V, NS, "rayclusters", "jp", bad, _content_type=jp)
    assert ei.value.status == 422 and "must be of type integer" in status_body(ei.value)["message"]


def test_unsupported_patch_types_415(
    fk: FakeKubeServer, crs: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("smp"))
    # what the client sends for a dict body with the json-patch content type: strategic merge
    with pytest.raises(ApiException) as ei:
        crs.patch_namespaced_custom_object(
            G, V, NS, "rayclusters", "smp", {"spec": {}}, _content_type="application/json-patch+json"
        )
    st = status_body(ei.value)
    assert ei.value.status == 415 and st["reason"] == "UnsupportedMediaType"
    code, body = raw(fk, "PATCH", f"/apis/ray.io/v1/namespaces/{NS}/rayclusters/smp", b"{}", "text/plain")
    assert code == 415 and body["reason"] == "UnsupportedMediaType"
    # built-in kinds accept strategic merge (what the client sends for dict bodies)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    out = core.patch_namespaced_config_map("cm", NS, {"data": {"b": "2"}})
    assert out.data == {"a": "1", "b": "2"}


def test_server_side_apply(crs: client.CustomObjectsApi) -> None:
    body = sample_cluster("ssa")
    ctype = "application/apply-patch+yaml"
    # creates (HTTP 201, which this client method maps to None)
    crs.patch_namespaced_custom_object(
        G, V, NS, "rayclusters", "ssa", body, field_manager="test", _content_type=ctype
    )
    assert get_rc(crs, "ssa")["metadata"]["generation"] == 1
    with pytest.raises(ApiException) as ei:
        crs.patch_namespaced_custom_object(G, V, NS, "rayclusters", "ssa", body, _content_type=ctype)
    assert ei.value.status == 422  # fieldManager is required
    body["spec"]["workerGroupSpecs"][0]["replicas"] = 4
    out = crs.patch_namespaced_custom_object(
        G, V, NS, "rayclusters", "ssa", body, field_manager="test", _content_type=ctype
    )
    assert out["spec"]["workerGroupSpecs"][0]["replicas"] == 4


# ------------------------------------------------------------------------------------------
# validation


def test_crd_validation_422(fk: FakeKubeServer, crs: client.CustomObjectsApi) -> None:
    fk.configure_operator(enabled=False)
    bad = sample_cluster("bad")
    bad["spec"]["workerGroupSpecs"][0]["replicas"] = "three"
    bad["spec"]["autoscalerOptions"] = {"upscalingMode": "Turbo"}
    bad["spec"]["managedBy"] = "someone-else"
    del bad["spec"]["headGroupSpec"]["template"]
    with pytest.raises(ApiException) as ei:
        crs.create_namespaced_custom_object(G, V, NS, "rayclusters", bad)
    st = status_body(ei.value)
    assert ei.value.status == 422 and st["reason"] == "Invalid"
    assert st["details"]["kind"] == "RayCluster" and st["details"]["group"] == "ray.io"
    fields = {c["field"]: c["reason"] for c in st["details"]["causes"]}
    # As the real API server: CEL rules (managedBy's) are skipped while the schema fails.
    assert fields == {
        "spec.workerGroupSpecs[0].replicas": "FieldValueTypeInvalid",
        "spec.autoscalerOptions.upscalingMode": "FieldValueNotSupported",
        "spec.headGroupSpec.template": "FieldValueRequired",
        "<nil>": "FieldValueInvalid",
    }
    assert st["message"].startswith('RayCluster.ray.io "bad" is invalid: [')
    only_rule = sample_cluster("rule")
    only_rule["spec"]["managedBy"] = "someone-else"
    with pytest.raises(ApiException) as ei:
        crs.create_namespaced_custom_object(G, V, NS, "rayclusters", only_rule)
    assert [c["field"] for c in status_body(ei.value)["details"]["causes"]] == ["spec.managedBy"]

    # int-or-string quantities, pruning of unknown fields
    ok = sample_cluster("ok")
    ok["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"cpu": 2, "memory": "1Gi"}
    }
    ok["spec"]["notAField"] = True
    created = crs.create_namespaced_custom_object(G, V, NS, "rayclusters", ok)
    assert "notAField" not in created["spec"]

    # CEL transition rule: managedBy is immutable
    created["spec"]["managedBy"] = "ray.io/kuberay-operator"
    created = crs.replace_namespaced_custom_object(G, V, NS, "rayclusters", "ok", created)
    created["spec"]["managedBy"] = "kueue.x-k8s.io/multikueue"
    with pytest.raises(ApiException) as ei:
        crs.replace_namespaced_custom_object(G, V, NS, "rayclusters", "ok", created)
    assert ei.value.status == 422 and "immutable" in status_body(ei.value)["message"]

    bad_name = sample_cluster("Bad_Name")
    with pytest.raises(ApiException) as ei:
        crs.create_namespaced_custom_object(G, V, NS, "rayclusters", bad_name)
    assert ei.value.status == 422 and "metadata.name" in status_body(ei.value)["message"]


def test_rayjob_validation_and_status(crs: client.CustomObjectsApi) -> None:
    job = load_sample("ray-job.sample.yaml")[0]
    created = crs.create_namespaced_custom_object(G, V, NS, "rayjobs", job)
    assert created["spec"]["submissionMode"] == "K8sJobMode"  # CRD default
    name = created["metadata"]["name"]
    st = crs.patch_namespaced_custom_object_status(
        G, V, NS, "rayjobs", name, {"status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}}
    )
    assert st["status"]["jobStatus"] == "RUNNING"
    bad = copy.deepcopy(job)
    bad["metadata"]["name"] = "bad-job"
    bad["spec"]["deletionStrategy"] = {"onSuccess": {"policy": "DeleteCluster"}}
    with pytest.raises(ApiException) as ei:
        crs.create_namespaced_custom_object(G, V, NS, "rayjobs", bad)
    assert ei.value.status == 422 and "deletionStrategy requires" in status_body(ei.value)["message"]


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES_DIR.glob("*.yaml")))
def test_every_official_sample_can_be_created(fk: FakeKubeServer, sample: str) -> None:
    docs = load_sample(sample)
    assert docs
    created = fk.apply_manifest(docs)
    kinds = {o["kind"] for o in created}
    assert kinds & {"RayCluster", "RayJob"}
    for obj in created:
        if obj["kind"] in ("RayCluster", "RayJob"):
            assert obj["metadata"]["generation"] == 1


# ------------------------------------------------------------------------------------------
# selectors, lists


def test_label_and_field_selectors(core: client.CoreV1Api) -> None:
    labels = {
        "a": {"env": "prod", "tier": "web"},
        "b": {"env": "dev", "tier": "web"},
        "c": {"env": "qa"},
        "d": {},
    }
    for name, lab in labels.items():
        core.create_namespaced_config_map(NS, {"metadata": {"name": name, "labels": lab}})

    def sel(s: str) -> list[str]:
        return sorted(i.metadata.name for i in core.list_namespaced_config_map(NS, label_selector=s).items)

    assert sel("env=prod") == ["a"]
    assert sel("env==prod") == ["a"]
    assert sel("env!=prod") == ["b", "c", "d"]
    assert sel("env in (prod, dev)") == ["a", "b"]
    assert sel("env notin (prod,dev)") == ["c", "d"]
    assert sel("tier") == ["a", "b"]
    assert sel("!tier") == ["c", "d"]
    assert sel("tier=web,env!=dev") == ["a"]
    assert sel("") == ["a", "b", "c", "d"]
    with pytest.raises(ApiException) as ei:
        sel("env in prod")
    assert ei.value.status == 400 and status_body(ei.value)["reason"] == "BadRequest"

    names = core.list_namespaced_config_map(NS, field_selector="metadata.name=c").items
    assert [i.metadata.name for i in names] == ["c"]
    names = core.list_namespaced_config_map(NS, field_selector="metadata.name!=c").items
    assert sorted(i.metadata.name for i in names) == ["a", "b", "d"]
    with pytest.raises(ApiException) as ei:
        core.list_namespaced_config_map(NS, field_selector="data.x=1")
    assert ei.value.status == 400


def test_pagination(core: client.CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map(NS, {"metadata": {"name": f"p{i}"}})
    first = core.list_namespaced_config_map(NS, limit=2)
    assert [i.metadata.name for i in first.items] == ["p0", "p1"]
    assert first.metadata.remaining_item_count == 3
    second = core.list_namespaced_config_map(NS, limit=2, _continue=first.metadata._continue)
    assert [i.metadata.name for i in second.items] == ["p2", "p3"]


# ------------------------------------------------------------------------------------------
# watch


def collect(
    func: Callable[..., Any], *args: Any, n: int | None = None, **kwargs: Any
) -> list[dict[str, Any]]:
    """Watch events (bookmarks excluded) until ``n`` arrived or, with ``n=None``, until the
    first BOOKMARK: the server sends backlog/initial events before any bookmark, and a
    bookmark only after ``bookmark_interval`` (0.1 s here) without events."""
    w = watch.Watch()
    out: list[dict[str, Any]] = []
    for e in w.stream(func, *args, allow_watch_bookmarks=True, timeout_seconds=5, **kwargs):
        if e["type"] == "BOOKMARK":
            if n is None:
                break
            continue
        out.append(e)
        if n is not None and len(out) >= n:
            break
    w.stop()
    return out


def cm_events(core: client.CoreV1Api, rv: str | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    if rv is not None:
        kwargs["resource_version"] = rv
    return collect(core.list_namespaced_config_map, NS, **kwargs)


def _names(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (e["type"], e["raw_object"]["metadata"].get("name", "")) for e in events if e["type"] != "BOOKMARK"
    ]


def test_watch_resumes_from_resource_version(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "a", "labels": {"w": "1"}}})
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, {"metadata": {"name": "b", "labels": {"w": "1"}}})
    core.patch_namespaced_config_map("a", NS, {"data": {"k": "v"}})
    core.delete_namespaced_config_map("b", NS)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "other"}})
    events = cm_events(core, rv, label_selector="w=1")
    assert _names(events) == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    rvs = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    # the typed object is deserialized, and the watcher tracks the last resourceVersion
    assert events[1]["object"].data == {"k": "v"}
    w = watch.Watch()
    assert (
        len(list(w.stream(core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=1))) == 4
    )
    assert int(w.resource_version) > rvs[-1]

    # without resourceVersion: synthetic ADDED for the current state
    assert _names(cm_events(core)) == [("ADDED", "a"), ("ADDED", "other")]


def test_watch_label_selector_transitions(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "t", "labels": {"sel": "yes"}}})
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    core.patch_namespaced_config_map("t", NS, {"metadata": {"labels": {"sel": "no"}}})
    core.patch_namespaced_config_map("t", NS, {"metadata": {"labels": {"sel": "yes"}}})
    assert _names(cm_events(core, rv, label_selector="sel=yes")) == [("DELETED", "t"), ("ADDED", "t")]


def test_watch_live_events_and_bookmarks(fk: FakeKubeServer, core: client.CoreV1Api) -> None:
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    seen: list[dict[str, Any]] = []
    w = watch.Watch()

    def consume() -> None:
        for e in w.stream(
            core.list_namespaced_config_map,
            NS,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=5,
        ):
            seen.append(e)
            if e["type"] == "BOOKMARK" and any(x["type"] == "ADDED" for x in seen):
                w.stop()

    t = threading.Thread(target=consume)
    t.start()
    wait_until(lambda: fk.open_watch_count() == 1)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "live"}})
    t.join(10)
    assert not t.is_alive()
    # Bookmarks come every 0.1 s, so some may precede the ADDED event; the last one follows it.
    added = [e for e in seen if e["type"] != "BOOKMARK"]
    assert _names(added) == [("ADDED", "live")]
    bookmark = seen[-1]
    assert bookmark["type"] == "BOOKMARK" and bookmark["raw_object"]["kind"] == "ConfigMap"
    assert int(bookmark["raw_object"]["metadata"]["resourceVersion"]) >= int(
        added[0]["raw_object"]["metadata"]["resourceVersion"]
    )
    assert w.resource_version == bookmark["raw_object"]["metadata"]["resourceVersion"]


def test_watch_410_when_history_is_gone(fk: FakeKubeServer, core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "x"}})
    old_rv = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, {"metadata": {"name": "y"}})
    fk.compact()
    # raw stream: HTTP 200, one ERROR event with a 410 Status, then the stream ends
    resp = core.list_namespaced_config_map(NS, watch=True, resource_version=old_rv, _preload_content=False)
    assert resp.status == 200
    lines = [json.loads(line) for line in resp.data.decode().splitlines() if line]
    assert len(lines) == 1 and lines[0]["type"] == "ERROR"
    obj = lines[0]["object"]
    assert obj["kind"] == "Status" and obj["code"] == 410 and obj["reason"] == "Expired"
    # Watch.stream retries once with its last RV, then raises ApiException(410)
    with pytest.raises(ApiException) as ei:
        list(watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=old_rv))
    assert ei.value.status == 410
    # a fresh list + watch from its RV works
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    assert cm_events(core, rv) == []


def test_bounded_history_expires_old_versions() -> None:
    with FakeKubeServer(history_size=5, operator=False) as server, server.api_client() as c:
        core = client.CoreV1Api(c)
        rv = core.list_namespaced_config_map(NS).metadata.resource_version
        for i in range(10):
            core.create_namespaced_config_map(NS, {"metadata": {"name": f"h{i}"}})
        with pytest.raises(ApiException) as ei:
            list(watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=rv))
        assert ei.value.status == 410
        recent = int(core.list_namespaced_config_map(NS).metadata.resource_version) - 3
        assert len(collect(core.list_namespaced_config_map, NS, resource_version=str(recent), n=3)) == 3


def test_watch_timeout_seconds(core: client.CoreV1Api) -> None:
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    t0 = time.monotonic()
    resp = core.list_namespaced_config_map(
        NS, watch=True, resource_version=rv, timeout_seconds=1, _preload_content=False
    )
    assert resp.data == b"" and resp.status == 200
    assert 0.9 <= time.monotonic() - t0 < 30  # ended by the server, not by a client timeout


def test_custom_object_watch(fk: FakeKubeServer, crs: client.CustomObjectsApi) -> None:
    fk.configure_operator(enabled=False)
    rv = crs.list_namespaced_custom_object(G, V, NS, "rayclusters")["metadata"]["resourceVersion"]
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("w1"))
    crs.patch_namespaced_custom_object_status(G, V, NS, "rayclusters", "w1", {"status": {"state": "ready"}})
    events = collect(crs.list_namespaced_custom_object, G, V, NS, "rayclusters", resource_version=rv)
    assert [(e["type"], e["object"].get("status", {}).get("state")) for e in events] == [
        ("ADDED", None),
        ("MODIFIED", "ready"),
    ]


# ------------------------------------------------------------------------------------------
# operator


def test_operator_creates_pods_service_status_and_events(
    fk: FakeKubeServer, crs: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("rc"))
    rc = wait_ready(crs, "rc")
    st = rc["status"]
    assert st["desiredWorkerReplicas"] == 1 and st["readyWorkerReplicas"] == 1
    assert st["availableWorkerReplicas"] == 1
    assert (st["minWorkerReplicas"], st["maxWorkerReplicas"]) == (1, 5)
    assert st["observedGeneration"] == 1
    assert st["desiredCPU"] == "2" and st["desiredMemory"] == "6Gi"
    assert st["head"]["serviceName"] == "rc-head-svc" and st["head"]["podIP"]
    assert st["endpoints"] == {
        "gcs-server": "6379",
        "dashboard": "8265",
        "client": "10001",
        "metrics": "8080",
    }
    conds = {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}
    assert conds["HeadPodReady"] == ("True", "HeadPodRunningAndReady")
    assert conds["RayClusterProvisioned"] == ("True", "AllPodRunningAndReadyFirstTime")
    assert "ReplicaFailure" not in conds

    pods = core.list_namespaced_pod(NS, label_selector="ray.io/cluster=rc").items
    head = [p for p in pods if p.metadata.labels["ray.io/node-type"] == "head"]
    workers = [p for p in pods if p.metadata.labels["ray.io/node-type"] == "worker"]
    assert len(head) == 1 and len(workers) == 1
    assert head[0].metadata.name.startswith("rc-head-") and len(head[0].metadata.name) == len("rc-head-") + 5
    assert workers[0].metadata.name.startswith("rc-workergroup-worker-")
    assert head[0].metadata.labels == {
        "ray.io/cluster": "rc",
        "ray.io/node-type": "head",
        "ray.io/group": "headgroup",
        "ray.io/is-ray-node": "yes",
        "ray.io/identifier": "rc-head",
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
    }
    assert workers[0].metadata.labels["ray.io/group"] == "workergroup"
    assert workers[0].metadata.labels["ray.io/identifier"] == "rc-worker"
    for p in pods:
        assert p.status.phase == "Running" and p.status.pod_ip
        assert p.metadata.owner_references[0].kind == "RayCluster"
        assert {c.type: c.status for c in p.status.conditions}["Ready"] == "True"
    svc = core.read_namespaced_service("rc-head-svc", NS)
    assert svc.spec.cluster_ip == "None" and svc.spec.selector["ray.io/node-type"] == "head"

    evs = events_for(core, "rc")
    assert {e.reason for e in evs} >= {"CreatedHeadPod", "CreatedWorkerPod", "CreatedService"}
    created_head = next(e for e in evs if e.reason == "CreatedHeadPod")
    assert created_head.message == f"Created head Pod default/{head[0].metadata.name}"
    assert created_head.type == "Normal" and created_head.reporting_component == "raycluster-controller"
    assert created_head.involved_object.kind == "RayCluster"
    assert created_head.involved_object.api_version == "ray.io/v1"
    assert created_head.event_time is not None


def test_scaling_workers_to_delete_and_autoscaler_conflict(
    fk: FakeKubeServer, crs: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("sc"))
    wait_ready(crs, "sc")

    def workers() -> list[str]:
        items = core.list_namespaced_pod(NS, label_selector="ray.io/cluster=sc,ray.io/node-type=worker").items
        return sorted(p.metadata.name for p in items if not p.metadata.deletion_timestamp)

    # replicas above maxReplicas is clamped (5)
    crs.patch_namespaced_custom_object(
        G,
        V,
        NS,
        "rayclusters",
        "sc",
        [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 9}],
        _content_type="application/json-patch+json",
    )
    wait_until(lambda: len(workers()) == 5)
    rc = wait_until(lambda: (o := get_rc(crs, "sc"))["status"].get("readyWorkerReplicas") == 5 and o)
    assert rc["status"]["desiredWorkerReplicas"] == 5 and rc["status"]["observedGeneration"] == 2

    # the autoscaler bumps replicas concurrently: the client's stale PUT gets 409, retry wins
    stale = get_rc(crs, "sc")
    fk.autoscale(NS, "sc", "workergroup", replicas=3)
    stale["spec"]["workerGroupSpecs"][0]["minReplicas"] = 2
    with pytest.raises(ApiException) as ei:
        crs.replace_namespaced_custom_object(G, V, NS, "rayclusters", "sc", stale)
    assert ei.value.status == 409
    fresh = get_rc(crs, "sc")
    assert fresh["spec"]["workerGroupSpecs"][0]["replicas"] == 3
    fresh["spec"]["workerGroupSpecs"][0]["minReplicas"] = 2
    crs.replace_namespaced_custom_object(G, V, NS, "rayclusters", "sc", fresh)
    wait_until(lambda: len(workers()) == 3)
    assert "DeletedWorkerPod" in reasons_for(core, "sc")

    # workersToDelete removes exactly the named pods (replicas lowered accordingly)
    victim = workers()[0]
    fk.autoscale(NS, "sc", "workergroup", replicas=2, workers_to_delete=[victim])
    wait_until(lambda: len(workers()) == 2 and victim not in workers())
    msgs = [e.message for e in events_for(core, "sc") if e.reason == "DeletedWorkerPod"]
    assert f"Deleted pod default/{victim}" in msgs
    rc = wait_until(lambda: (o := get_rc(crs, "sc"))["status"].get("desiredWorkerReplicas") == 2 and o)
    assert rc["status"]["minWorkerReplicas"] == 2


def test_autoscaling_cluster_only_deletes_listed_workers(
    fk: FakeKubeServer, crs: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    body = load_sample("ray-cluster.autoscaler.yaml")[0]
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", body)
    name = body["metadata"]["name"]
    rc = wait_ready(crs, name)
    assert rc["status"]["desiredWorkerReplicas"] == 0
    head = core.list_namespaced_pod(NS, label_selector=f"ray.io/cluster={name},ray.io/node-type=head").items[
        0
    ]
    assert [c.name for c in head.spec.containers] == ["ray-head", "autoscaler"]
    fk.autoscale(NS, name, "small-group", replicas=2)
    sel = f"ray.io/cluster={name},ray.io/node-type=worker"
    wait_until(lambda: len(core.list_namespaced_pod(NS, label_selector=sel).items) == 2)
    # lowering replicas alone deletes nothing while autoscaling is on
    fk.autoscale(NS, name, "small-group", replicas=1)
    wait_until(lambda: get_rc(crs, name)["status"].get("desiredWorkerReplicas") == 1)
    assert len(core.list_namespaced_pod(NS, label_selector=sel).items) == 2


def test_cluster_delete_removes_owned_pods_and_services(
    crs: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("gc"))
    wait_ready(crs, "gc")
    crs.delete_namespaced_custom_object(G, V, NS, "rayclusters", "gc")
    wait_until(lambda: not core.list_namespaced_pod(NS, label_selector="ray.io/cluster=gc").items)
    wait_until(lambda: not core.list_namespaced_service(NS, label_selector="ray.io/cluster=gc").items)


def test_suspend_and_pod_failure(
    fk: FakeKubeServer, crs: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("sus"))
    wait_ready(crs, "sus")
    worker = core.list_namespaced_pod(NS, label_selector="ray.io/cluster=sus,ray.io/node-type=worker").items[
        0
    ]
    fk.fail_pod(NS, worker.metadata.name)
    wait_until(
        lambda: worker.metadata.name not in [p.metadata.name for p in core.list_namespaced_pod(NS).items]
    )
    wait_ready(crs, "sus")
    crs.patch_namespaced_custom_object(G, V, NS, "rayclusters", "sus", {"spec": {"suspend": True}})
    rc = wait_until(lambda: (o := get_rc(crs, "sus"))["status"].get("state") == "suspended" and o)
    assert not core.list_namespaced_pod(NS, label_selector="ray.io/cluster=sus").items
    assert "DeletedPod" in reasons_for(core, "sus")
    assert any(c["type"] == "RayClusterSuspended" for c in rc["status"]["conditions"])


def test_invalid_cluster_spec_warning_event(crs: client.CustomObjectsApi, core: client.CoreV1Api) -> None:
    body = sample_cluster("x" * 54)
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", body)
    ev = wait_until(
        lambda: [e for e in events_for(core, "x" * 54) if e.reason == "InvalidRayClusterMetadata"]
    )
    assert ev[0].type == "Warning"
    assert not core.list_namespaced_pod(NS).items


def test_pod_creation_failure_sets_replica_failure(
    fk: FakeKubeServer, crs: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    fk.configure_operator(fail_pod_creation=True)
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("rf"))

    def replica_failure() -> dict[str, Any] | None:
        conds = get_rc(crs, "rf").get("status", {}).get("conditions", [])
        return next((c for c in conds if c["type"] == "ReplicaFailure"), None)

    cond = wait_until(replica_failure)
    assert cond["reason"] == "FailedCreateHeadPod"
    assert "FailedToCreateHeadPod" in reasons_for(core, "rf")
    fk.configure_operator(fail_pod_creation=False)
    wait_ready(crs, "rf")
    assert replica_failure() is None


def test_operator_can_be_disabled(
    fk: FakeKubeServer, crs: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    fk.configure_operator(enabled=False)
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("off"))
    assert fk.call(lambda: fk.request_count) > 0
    assert "status" not in get_rc(crs, "off")
    assert not core.list_namespaced_pod(NS).items
    fk.configure_operator(enabled=True)
    wait_ready(crs, "off")


def test_rayjob_lifecycle(fk: FakeKubeServer, crs: client.CustomObjectsApi) -> None:
    fk.configure_operator(rayjob_lifecycle=True, job_duration=0.1)
    job = load_sample("ray-job.shutdown.yaml")[0]
    job["spec"]["ttlSecondsAfterFinished"] = 0
    crs.create_namespaced_custom_object(G, V, NS, "rayjobs", job)
    name = job["metadata"]["name"]

    def job_status() -> dict[str, Any]:
        return crs.get_namespaced_custom_object(G, V, NS, "rayjobs", name).get("status", {})

    st = wait_until(lambda: (s := job_status()).get("jobDeploymentStatus") == "Complete" and s)
    assert st["jobStatus"] == "SUCCEEDED" and st["dashboardURL"].endswith(".svc.cluster.local:8265")
    cluster = st["rayClusterName"]
    assert cluster.startswith(name + "-")
    wait_until(lambda: not crs.list_namespaced_custom_object(G, V, NS, "rayclusters")["items"])


def test_events_v1_view_of_operator_events(
    crs: client.CustomObjectsApi, api_client: client.ApiClient
) -> None:
    events_api = client.EventsV1Api(api_client)
    rv = events_api.list_namespaced_event(NS).metadata.resource_version
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("ev"))
    wait_ready(crs, "ev")
    evs = events_api.list_namespaced_event(NS, field_selector="regarding.name=ev").items
    by_reason = {e.reason: e for e in evs}
    assert {"CreatedHeadPod", "CreatedWorkerPod", "CreatedService"} <= set(by_reason)
    e = by_reason["CreatedHeadPod"]
    assert e.reporting_controller == "raycluster-controller" and e.action == "Create"
    assert e.regarding.kind == "RayCluster" and e.note.startswith("Created head Pod default/ev-head-")
    watched = collect(
        events_api.list_namespaced_event, NS, resource_version=rv, field_selector="regarding.name=ev"
    )
    assert {x["object"].reason for x in watched} >= {"CreatedHeadPod", "CreatedWorkerPod"}


def test_finalizers_and_graceful_pod_deletion(
    fk: FakeKubeServer, crs: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    fk.configure_operator(enabled=False, pod_termination_delay=0.3)
    body = sample_cluster("fin")
    body["metadata"]["finalizers"] = ["example.com/keep"]
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", body)
    out = crs.delete_namespaced_custom_object(G, V, NS, "rayclusters", "fin")
    assert out["metadata"]["deletionTimestamp"]
    assert get_rc(crs, "fin")["metadata"]["deletionTimestamp"]
    crs.patch_namespaced_custom_object(G, V, NS, "rayclusters", "fin", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as ei:
        get_rc(crs, "fin")
    assert ei.value.status == 404

    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}
    core.create_namespaced_pod(NS, pod)
    wait_until(lambda: core.read_namespaced_pod("p", NS).status.phase == "Running")
    fk.set_pod_log(NS, "p", "hello\n")
    assert core.read_namespaced_pod_log("p", NS) == "hello\n"
    deleted = core.delete_namespaced_pod("p", NS)
    assert deleted.metadata.deletion_timestamp is not None
    wait_until(lambda: not core.list_namespaced_pod(NS, field_selector="metadata.name=p").items)
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_pod(NS, {"metadata": {"name": "bad"}, "spec": {"containers": []}})
    assert ei.value.status == 422


# ------------------------------------------------------------------------------------------
# service proxy


def test_service_proxy_503_until_head_ready_then_200(
    fk: FakeKubeServer, crs: client.CustomObjectsApi, core: client.CoreV1Api, dashboard: str
) -> None:
    fk.configure_operator(pod_ready_delay=None)  # hold pods Pending until released
    fk.set_proxy_upstream(NS, "px-head-svc", dashboard)
    crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("px"))
    wait_until(lambda: core.list_namespaced_service(NS, label_selector="ray.io/cluster=px").items)
    with pytest.raises(ApiException) as ei:
        core.connect_get_namespaced_service_proxy_with_path("px-head-svc:dashboard", NS, "api/version")
    st = status_body(ei.value)
    assert ei.value.status == 503 and st["reason"] == "ServiceUnavailable"
    assert "no endpoints available" in st["message"]
    with pytest.raises(ApiException) as ei:
        core.connect_get_namespaced_service_proxy_with_path("nope-svc:dashboard", NS, "x")
    assert ei.value.status == 404

    assert fk.release_pods() >= 1
    wait_ready(crs, "px")
    resp = core.connect_get_namespaced_service_proxy_with_path(
        "px-head-svc:dashboard", NS, "api/version", _preload_content=False
    )
    assert resp.status == 200 and json.loads(resp.data)["path"] == "/api/version"
    # raw HTTP: query string, POST body and status code are forwarded
    url = f"{fk.url}/api/v1/namespaces/{NS}/services/px-head-svc:8265/proxy/api/jobs/?limit=1"
    req = urllib.request.Request(
        url,
        data=json.dumps({"entrypoint": "echo"}).encode(),
        headers={"Authorization": f"Bearer {fk.token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 201
        assert json.loads(resp.read()) == {"echo": {"entrypoint": "echo"}}


# ------------------------------------------------------------------------------------------
# faults


def test_fault_latency_and_injected_errors(fk: FakeKubeServer, core: client.CoreV1Api) -> None:
    fk.set_latency(0.3)
    t0 = time.monotonic()
    core.list_namespace()
    assert time.monotonic() - t0 >= 0.3
    fk.set_latency(0)
    fk.inject_error(500, count=1, method="GET", path="/configmaps")
    with pytest.raises(ApiException) as ei:
        core.list_namespaced_config_map(NS)
    assert ei.value.status == 500 and status_body(ei.value)["reason"] == "InternalError"
    core.list_namespaced_config_map(NS)


def test_fault_drop_watches_and_force_410(fk: FakeKubeServer, core: client.CoreV1Api) -> None:
    outcome: dict[str, Any] = {}

    def consume(key: str) -> None:
        try:
            list(watch.Watch().stream(core.list_namespaced_config_map, NS, timeout_seconds=10))
            outcome[key] = "ended"
        except Exception as exc:  # connection reset surfaces from urllib3
            outcome[key] = exc

    for graceful in (True, False):
        t = threading.Thread(target=consume, args=(str(graceful),))
        t.start()
        wait_until(lambda: fk.open_watch_count() == 1)
        assert fk.drop_watches(graceful=graceful) == 1
        t.join(5)
        assert not t.is_alive()
    assert outcome["True"] == "ended"
    assert isinstance(outcome["False"], urllib3.exceptions.ProtocolError)

    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    fk.force_410(1)
    resp = core.list_namespaced_config_map(NS, watch=True, resource_version=rv, _preload_content=False)
    lines = [json.loads(x) for x in resp.data.decode().splitlines() if x]
    assert lines[0]["type"] == "ERROR" and lines[0]["object"]["code"] == 410
    # only the next watch is affected
    assert cm_events(core, rv) == []


def test_fault_api_down_503_and_refused(fk: FakeKubeServer, core: client.CoreV1Api) -> None:
    fk.api_down(30, mode="503")
    with pytest.raises(ApiException) as ei:
        core.list_namespace()
    assert ei.value.status == 503 and status_body(ei.value)["reason"] == "ServiceUnavailable"
    fk.api_up()
    core.list_namespace()

    port = fk.port
    fk.api_down(30, mode="refuse")
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_namespace(_request_timeout=2)
    fk.api_up()
    assert fk.port == port
    assert core.list_namespace().items

    fk.api_down(0.3, mode="503")  # heals by itself
    wait_until(lambda: not fk.faults.api_down())
    core.list_namespace()


def test_admin_endpoint(fk: FakeKubeServer, core: client.CoreV1Api) -> None:
    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            fk.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    state = post("/_fake/faults", {"errors": [{"code": 429, "count": 1}], "force_410": 2, "latency": 0.01})
    assert state["force_410"] == 2 and state["latency"] == 0.01 and state["errors"][0]["code"] == 429
    with pytest.raises(ApiException) as ei:
        core.list_namespace()
    assert ei.value.status == 429
    post("/_fake/faults", {"clear": True})
    assert fk.faults.force_410 == 0
    post("/_fake/faults", {"api_down": {"seconds": 30, "mode": "503"}})
    wait_until(lambda: fk.faults.api_down())
    with pytest.raises(ApiException) as ei:
        core.list_namespace()
    assert ei.value.status == 503
    post("/_fake/faults", {"clear": True})
    core.list_namespace()
    cfg = post("/_fake/operator", {"pod_ready_delay": 0.2})
    assert cfg["pod_ready_delay"] == 0.2


# ------------------------------------------------------------------------------------------
# process mode, plugin fixtures


@pytest.mark.parametrize("fakekube", [{"operator": False}], indirect=True)
def test_plugin_fixtures_and_kubeconfig(fakekube: FakeKubeServer, fakekube_kubeconfig: Path) -> None:
    from kubernetes import config

    assert os.environ["KUBECONFIG"] == str(fakekube_kubeconfig)
    with config.new_client_from_config() as c:
        crs = client.CustomObjectsApi(c)
        crs.create_namespaced_custom_object(G, V, NS, "rayclusters", sample_cluster("plug"))
    assert fakekube.get("rayclusters", NS, "plug") is not None
    assert not fakekube.list_objects("pods")  # operator disabled by the parameter


def test_cli_runs_as_a_process(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakekube", "--port", "0", "--kubeconfig", str(kubeconfig)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("FAKEKUBE_URL=http://127.0.0.1:")
        url = line.split("=", 1)[1]
        req = urllib.request.Request(
            url + "/api/v1/namespaces", headers={"Authorization": "Bearer fake-token"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
        wait_until(kubeconfig.exists)
        from kubernetes import config

        with config.new_client_from_config(str(kubeconfig)) as c:
            assert client.CoreV1Api(c).list_namespace().items
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0
