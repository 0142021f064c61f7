"""The fake API server (tests/fakekube) against the real kube-apiserver: the same requests to
both, the same answers (status codes, reasons, and every field the backend reads), so the fake
cannot drift from the real server again. Where they differ, the real server is right.

The RayClusters here carry ``spec.managedBy: kueue.x-k8s.io/multikueue``: neither the real
operator nor the simulated one reconciles them, so only the API servers answer.
"""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from eksray_jupyter.backends.kuberay.names import GROUP as G
from eksray_jupyter.backends.kuberay.names import RAYCLUSTERS as PLURAL
from eksray_jupyter.backends.kuberay.names import VERSION as V

from .fakekube import FakeKubeServer, pytest_plugin
from .k8s import ControlPlane

pytestmark = pytest.mark.k8s

JSON_PATCH = "application/json-patch+json"
NS = "eksray-differential"

CLUSTER: dict[str, Any] = {
    "apiVersion": "ray.io/v1",
    "kind": "RayCluster",
    "metadata": {
        "name": "diff",
        "labels": {"eksray.io/owner": "alice", "eksray.io/managed-by": "eksray-jupyter"},
    },
    "spec": {
        "managedBy": "kueue.x-k8s.io/multikueue",
        "enableInTreeAutoscaling": True,
        "notAField": "pruned by the structural schema",
        "headGroupSpec": {
            "rayStartParams": {},
            "template": {"spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.41.0"}]}},
        },
        "workerGroupSpecs": [
            {
                "groupName": "cpu",
                "replicas": 1,
                "minReplicas": 0,
                "maxReplicas": 4,
                "rayStartParams": {},
                "template": {
                    "spec": {"containers": [{"name": "ray-worker", "image": "rayproject/ray:2.41.0"}]}
                },
            }
        ],
    },
}


def _error(e: ApiException) -> dict[str, Any]:
    body = json.loads(e.body)
    details = body.get("details") or {}
    return {
        "code": e.status,
        "kind": body.get("kind"),
        "status": body.get("status"),
        "reason": body.get("reason"),
        "details": {k: details.get(k) for k in ("name", "group", "kind") if k in details},
        "causes": sorted((c.get("field", ""), c.get("reason", "")) for c in details.get("causes") or []),
    }


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "labels": meta.get("labels"),
        "annotations": meta.get("annotations"),
        "generation": meta.get("generation"),
        # Opaque values: only that they are there (and change) is the contract.
        "uid": bool(meta.get("uid")),
        "resourceVersion": bool(meta.get("resourceVersion")),
        "creationTimestamp": bool(meta.get("creationTimestamp")),
        "deletionTimestamp": bool(meta.get("deletionTimestamp")),
    }


def _cluster(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": _meta(obj),
        "spec": obj.get("spec"),
    }


def _owners(obj: dict[str, Any], owner: dict[str, Any]) -> list[Any]:
    refs = obj["metadata"].get("ownerReferences") or []
    return [
        ({k: v for k, v in r.items() if k != "uid"}, r.get("uid") == owner["metadata"]["uid"]) for r in refs
    ]


def _try(fn: Any) -> Any:
    try:
        return fn()
    except ApiException as e:
        return _error(e)


def scenario(api_client: client.ApiClient) -> list[tuple[str, Any]]:
    """What the backend does to the API, step by step, and what it reads back."""
    core, crs = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    seen: list[tuple[str, Any]] = []
    core.create_namespace({"metadata": {"name": NS}})

    created = crs.create_namespaced_custom_object(G, V, NS, PLURAL, copy.deepcopy(CLUSTER))
    seen.append(("create", _cluster(created)))
    seen.append(
        ("create again", _try(lambda: crs.create_namespaced_custom_object(G, V, NS, PLURAL, CLUSTER)))
    )
    got = crs.get_namespaced_custom_object(G, V, NS, PLURAL, "diff")
    seen.append(
        ("get", (_cluster(got), got["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]))
    )
    seen.append(("get missing", _try(lambda: crs.get_namespaced_custom_object(G, V, NS, PLURAL, "nope"))))

    invalid = copy.deepcopy(CLUSTER)
    invalid["metadata"]["name"] = "invalid"
    invalid["spec"]["autoscalerOptions"] = {"upscalingMode": "Bogus"}
    invalid["spec"]["workerGroupSpecs"][0]["replicas"] = "three"
    seen.append(
        ("create invalid", _try(lambda: crs.create_namespaced_custom_object(G, V, NS, PLURAL, invalid)))
    )
    bad_name = copy.deepcopy(CLUSTER)
    bad_name["metadata"]["name"] = "Not_A_Name"
    seen.append(
        ("create bad name", _try(lambda: crs.create_namespaced_custom_object(G, V, NS, PLURAL, bad_name)))
    )

    listed = crs.list_namespaced_custom_object(G, V, NS, PLURAL, label_selector="eksray.io/owner=alice")
    seen.append(
        (
            "list",
            (
                listed["kind"],
                bool(listed["metadata"]["resourceVersion"]),
                [i["metadata"]["name"] for i in listed["items"]],
            ),
        )
    )
    seen.append(
        (
            "list none",
            len(
                crs.list_namespaced_custom_object(G, V, NS, PLURAL, label_selector="eksray.io/owner=bob")[
                    "items"
                ]
            ),
        )
    )

    # A watch from the list's resourceVersion sees what follows, in order.
    events: list[tuple[str, Any]] = []
    started = threading.Event()

    def follow() -> None:
        w = watch.Watch()
        for event in w.stream(
            crs.list_namespaced_custom_object, G, V, NS, PLURAL,
            resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=30,
        ):  # fmt: skip
            started.set()
            obj = event["object"]
            events.append(
                (event["type"], obj["metadata"]["name"], obj["spec"]["workerGroupSpecs"][0]["replicas"])
            )
            if event["type"] == "DELETED" and obj["metadata"]["name"] == "diff":
                w.stop()

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()

    rv = got["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/spec/workerGroupSpecs/0/groupName", "value": "cpu"},
        {"op": "test", "path": "/spec/workerGroupSpecs/0/replicas", "value": 1},
        {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 3},
    ]
    patched = crs.patch_namespaced_custom_object(G, V, NS, PLURAL, "diff", ops, _content_type=JSON_PATCH)
    seen.append(("json patch", (_cluster(patched), patched["metadata"]["resourceVersion"] != rv)))
    try:
        crs.patch_namespaced_custom_object(G, V, NS, PLURAL, "diff", ops, _content_type=JSON_PATCH)
        failed_test: Any = "applied"
    except ApiException as e:
        # The backend reads this message to tell "changed meanwhile" from a bad patch.
        failed_test = {**_error(e), "message": json.loads(e.body).get("message")}
    seen.append(("json patch, failed test", failed_test))
    seen.append(
        (
            "json patch, missing",
            _try(
                lambda: crs.patch_namespaced_custom_object(
                    G, V, NS, PLURAL, "nope", ops, _content_type=JSON_PATCH
                )
            ),
        )
    )
    bad_op = [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": "many"}]
    seen.append(
        (
            "json patch, invalid value",
            _try(
                lambda: crs.patch_namespaced_custom_object(
                    G, V, NS, PLURAL, "diff", bad_op, _content_type=JSON_PATCH
                )
            ),
        )
    )
    labelled = crs.patch_namespaced_custom_object(
        G, V, NS, PLURAL, "diff", {"metadata": {"labels": {"extra": "yes"}}}
    )
    seen.append(("merge patch of metadata", _meta(labelled)))
    stale = copy.deepcopy(got)
    seen.append(
        ("replace stale", _try(lambda: crs.replace_namespaced_custom_object(G, V, NS, PLURAL, "diff", stale)))
    )

    event = {
        "metadata": {"generateName": "diff."},
        "involvedObject": {"apiVersion": "ray.io/v1", "kind": "RayCluster", "name": "diff", "namespace": NS, "uid": created["metadata"]["uid"]},
        "reason": "Scaled", "message": "Scaled by alice", "type": "Normal", "source": {"component": "eksray-jupyter"},
    }  # fmt: skip
    wrong_uid = {
        "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"},
        "propagationPolicy": "Background",
    }
    recorded = core.create_namespaced_event(NS, event)
    seen.append(("event", (recorded.metadata.name.startswith("diff."), recorded.count, recorded.reason)))
    by_object = core.list_namespaced_event(
        NS, field_selector=f"involvedObject.uid={created['metadata']['uid']}"
    )
    seen.append(("events by uid", [e.reason for e in by_object.items]))

    # The token Secret the backend reads (as the operator writes it) and the NetworkPolicy it
    # makes, reads and deletes.
    owner = [
        {"apiVersion": "ray.io/v1", "kind": "RayCluster", "name": "diff", "uid": created["metadata"]["uid"]}
    ]
    secret = {
        "metadata": {"name": "diff", "labels": {"ray.io/cluster": "diff"}, "ownerReferences": owner},
        "stringData": {"auth_token": "s3cr3t"},
    }
    core.create_namespaced_secret(NS, secret)
    raw = json.loads(core.read_namespaced_secret("diff", NS, _preload_content=False).data)
    seen.append(("secret", (_meta(raw), _owners(raw, created), raw["data"], raw.get("type"), "stringData" in raw)))  # fmt: skip
    seen.append(("secret missing", _try(lambda: core.read_namespaced_secret("nope", NS))))
    networking = client.NetworkingV1Api(api_client)
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "diff-eksray", "labels": {"eksray.io/owner": "alice"}, "ownerReferences": owner},
        "spec": {
            "podSelector": {"matchLabels": {"ray.io/cluster": "diff"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"ray.io/cluster": "diff"}}},
                          {"podSelector": {"matchLabels": {"app": "jupyterhub"}}, "namespaceSelector": {}},
                          {"ipBlock": {"cidr": "10.0.0.0/24"}}]},
                {"from": [{"namespaceSelector": {}, "podSelector": {}}], "ports": [{"protocol": "TCP", "port": 8265}]},
            ],
        },
    }  # fmt: skip
    made = json.loads(networking.create_namespaced_network_policy(NS, policy, _preload_content=False).data)
    seen.append(("network policy", (_meta(made), _owners(made, created), made["spec"])))
    seen.append(
        ("network policy again", _try(lambda: networking.create_namespaced_network_policy(NS, policy)))
    )
    got_policy = json.loads(
        networking.read_namespaced_network_policy("diff-eksray", NS, _preload_content=False).data
    )
    seen.append(("network policy read", got_policy["spec"] == made["spec"]))
    seen.append(
        ("network policy missing", _try(lambda: networking.read_namespaced_network_policy("nope", NS)))
    )
    seen.append((
        "network policy, wrong uid",
        _try(lambda: networking.delete_namespaced_network_policy("diff-eksray", NS, body=wrong_uid)),
    ))  # fmt: skip
    gone = json.loads(
        networking.delete_namespaced_network_policy(
            "diff-eksray",
            NS,
            body={"preconditions": {"uid": made["metadata"]["uid"]}},
            _preload_content=False,
        ).data
    )
    seen.append(("network policy deleted", (gone.get("kind"), gone.get("status"))))
    seen.append(
        ("network policy gone", _try(lambda: networking.read_namespaced_network_policy("diff-eksray", NS)))
    )

    kept = copy.deepcopy(CLUSTER)
    kept["metadata"].update(name="kept", finalizers=["eksray.io/test"])
    crs.create_namespaced_custom_object(G, V, NS, PLURAL, kept)
    pending = crs.delete_namespaced_custom_object(
        G, V, NS, PLURAL, "kept", body={"propagationPolicy": "Background"}
    )
    seen.append(("delete with a finalizer", (pending.get("kind"), _meta(pending))))
    release = [{"op": "remove", "path": "/metadata/finalizers"}]
    crs.patch_namespaced_custom_object(G, V, NS, PLURAL, "kept", release, _content_type=JSON_PATCH)
    seen.append(
        ("gone once released", _try(lambda: crs.get_namespaced_custom_object(G, V, NS, PLURAL, "kept")))
    )

    seen.append(
        (
            "delete, wrong uid",
            _try(lambda: crs.delete_namespaced_custom_object(G, V, NS, PLURAL, "diff", body=wrong_uid)),
        )
    )
    body = {"preconditions": {"uid": created["metadata"]["uid"]}, "propagationPolicy": "Background"}
    deleted = crs.delete_namespaced_custom_object(G, V, NS, PLURAL, "diff", body=body)
    seen.append(("delete", {k: deleted.get(k) for k in ("kind", "apiVersion", "status")}))
    seen.append(("delete details", {k: v for k, v in deleted.get("details", {}).items() if k != "uid"}))
    seen.append(
        (
            "delete again",
            _try(lambda: crs.delete_namespaced_custom_object(G, V, NS, PLURAL, "diff", body=body)),
        )
    )

    watcher.join(30)
    seen.append(("watch", events))
    return seen


# The fake API server's fixture, used by name below.
fakekube = pytest_plugin.fakekube


def test_the_fake_answers_as_the_real_api_server_does(
    fakekube: FakeKubeServer, k8s_plane: ControlPlane
) -> None:
    with k8s_plane.api_client() as real_client:
        real = scenario(real_client)
    with fakekube.api_client() as fake_client:
        simulated = scenario(fake_client)
    assert [step for step, _ in simulated] == [step for step, _ in real]
    differences = [(step, s, r) for (step, s), (_, r) in zip(simulated, real, strict=True) if s != r]
    assert not differences, "\n".join(f"{step}:\n  fake: {s}\n  real: {r}" for step, s, r in differences)
