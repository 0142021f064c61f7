"""schema/openapi.yaml and the server agree: same routes and methods, same model fields, and the
request schemas are the server's rules (the cluster and job specs referenced from their files,
the rules beyond them refused alike by the document and the server).

tests/test_api_fuzz.py holds the running server to the document with generated requests.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jupyter_server.base.handlers import APIHandler
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from tornado import web

from eksray_jupyter.core.config import DEFAULT_PROFILES
from eksray_jupyter.core.errors import InvalidRequestError
from eksray_jupyter.core.models import (
    CacheStatus,
    Cluster,
    ClusterEvent,
    Milestone,
    Node,
    Phase,
    Severity,
    WorkerGroupStatus,
)
from eksray_jupyter.core.spec import load_schema, resolve_cluster_spec, validate_scale_request
from eksray_jupyter.jobs.spec import resolve_job_spec
from eksray_jupyter.server.handlers import handlers
from eksray_jupyter.server.jobs import job_handlers
from eksray_jupyter.server.proxy import proxy_handlers
from eksray_jupyter.server.stream import stream_handlers

SCHEMA_DIR = Path(__file__).parent.parent / "schema"
DOC_PATH = SCHEMA_DIR / "openapi.yaml"
DOC = yaml.safe_load(DOC_PATH.read_text())
METHODS = ("get", "head", "options", "post", "put", "patch", "delete")


def template(pattern: str) -> str:
    """A tornado route regex as an OpenAPI path template."""
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
    path = path.replace("/dashboard(.*)", "/dashboard/{path}").replace("([^/]+)", "{name}")
    return path


def served() -> set[tuple[str, str]]:
    """(path, method) of every route and method the server answers. Tornado's own methods are its
    405s; Jupyter's ``APIHandler.options`` is the CORS preflight every REST path answers (said once,
    in the document's description)."""
    routes = handlers("/") + job_handlers("/") + stream_handlers("/") + proxy_handlers("/")
    out = set()
    for pattern, cls in routes:
        for method in METHODS:
            impl = getattr(cls, method, None)
            if impl is None or impl is getattr(web.RequestHandler, method):
                continue
            if method == "options" and impl is APIHandler.options:
                continue
            out.add((template(pattern), method))
    return out


def documented() -> set[tuple[str, str]]:
    return {(path, method) for path, item in DOC["paths"].items() for method in item if method in METHODS}


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    assert served() == documented()


def test_the_document_is_openapi_3_1() -> None:
    """3.1: its schemas are JSON Schema 2020-12, so they can reference the spec files. 3.0's
    ``nullable`` means nothing there (``type: [string, "null"]`` does)."""
    assert DOC["openapi"].startswith("3.1.")
    assert "nullable" not in DOC_PATH.read_text()


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def registry() -> Registry:
    """The document and the spec files, as a client resolving ``cluster.schema.json#/...`` next to
    the document sees them (the spec files also under their own ``$id``)."""
    resources = [(DOC_PATH.as_uri(), DRAFT202012.create_resource(DOC))]
    for name in ("cluster", "job"):
        resource = DRAFT202012.create_resource(load_schema(name))
        resources += [((SCHEMA_DIR / f"{name}.schema.json").as_uri(), resource), (resource.id(), resource)]
    return Registry().with_resources(resources)


def test_every_reference_resolves() -> None:
    resolver = registry().resolver(DOC_PATH.as_uri())
    for ref in set(refs(DOC)):
        assert resolver.lookup(ref).contents is not None, ref


def validator(component: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"{DOC_PATH.as_uri()}#/components/schemas/{component}"}
    return jsonschema.Draft202012Validator(schema, registry=registry())


def cluster_refs(component: str) -> dict[str, str]:
    return {
        key: value.get("$ref", "")
        for key, value in DOC["components"]["schemas"][component]["properties"].items()
        if key != "profile"
    }


def test_cluster_requests_are_the_cluster_spec_plus_a_profile() -> None:
    """Each field of a create request is cluster.schema.json's own (a reference, never a copy)."""
    spec = load_schema()
    request = DOC["components"]["schemas"]["ClusterRequest"]
    assert cluster_refs("ClusterRequest") == {
        key: f"cluster.schema.json#/properties/{key}" for key in spec["properties"]
    }
    assert request["required"] == spec["required"] == ["name"]
    assert request["additionalProperties"] is False
    assert request["properties"]["profile"]["type"] == "string"
    # A job's cluster: the same without the name (the job names it).
    job_cluster = DOC["components"]["schemas"]["JobCluster"]
    without_name = {k: v for k, v in cluster_refs("ClusterRequest").items() if k != "name"}
    assert cluster_refs("JobCluster") == without_name
    assert job_cluster["additionalProperties"] is False and "required" not in job_cluster


def test_job_requests_are_the_job_spec() -> None:
    job = DOC["components"]["schemas"]["JobSpec"]
    assert job["allOf"][0] == {"$ref": "job.schema.json"}
    # What the document adds only narrows fields the job spec has.
    assert set(job["allOf"][1]["properties"]) <= set(load_schema("job")["properties"])


def test_scale_requests_use_the_worker_group_bounds() -> None:
    group = load_schema()["$defs"]["workerGroup"]["properties"]
    items = DOC["components"]["schemas"]["ScaleRequest"]["properties"]["workerGroups"]["items"]
    for key, field in items["properties"].items():
        keywords = ("type", "minimum", "maximum", "minLength", "maxLength", "pattern")
        assert field == {k: group[key][k] for k in keywords if k in group[key]}, key


def test_path_parameters_match_the_server() -> None:
    from eksray_jupyter.jobs.store.base import ID_PATTERN

    job_id = DOC["components"]["parameters"]["jobId"]["schema"]
    assert (job_id["pattern"], job_id["maxLength"]) == (ID_PATTERN, 63)
    # Names eksray gives clusters are a subset of the names the path takes (read-only clusters
    # keep their Kubernetes names).
    name = DOC["components"]["parameters"]["name"]["schema"]
    assert re.fullmatch(name["pattern"], "a-b.c-1") and not re.fullmatch(name["pattern"], "A_b")


PROFILES = {**DEFAULT_PROFILES, "named": {"name": "fixed", "head": {"cpu": 2}}}
GROUPS = {
    "name": "c",
    "workerGroups": [{"groupName": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 4}],
}


def server_accepts(component: str, request: Any) -> bool:
    """Whether the server's validation of ``component`` takes ``request`` (no state needed)."""
    try:
        if component == "ClusterRequest":
            resolve_cluster_spec(copy.deepcopy(request), PROFILES)
        elif component == "ScaleRequest":
            validate_scale_request(resolve_cluster_spec(copy.deepcopy(GROUPS), {}), copy.deepcopy(request))
        else:
            resolve_job_spec(copy.deepcopy(request), PROFILES, default_store={"type": "s3", "bucket": "b"})
    except InvalidRequestError:
        return False
    return True


AGREEMENT = [
    # (component, request, valid): the document and the server both take it, or both refuse it.
    ("ClusterRequest", {"name": "a"}, True),
    ("ClusterRequest", {"name": "a", "profile": "cpu-small"}, True),
    ("ClusterRequest", {"profile": "named"}, False),  # the request names the cluster, never a profile
    ("ClusterRequest", {"name": "a", "profile": None}, False),
    ("ClusterRequest", {"name": "a", "colour": "blue"}, False),
    ("ClusterRequest", {"name": "A"}, False),
    ("ClusterRequest", {"name": "a", "workerGroups": [{"groupName": "g", "replicas": 2.0}]}, True),
    ("ClusterRequest", {"name": "a", "workerGroups": [{"groupName": "g", "replicas": 2.5}]}, False),
    ("ClusterRequest", {"name": "a", "head": {"resources": {"CPU": 1}}}, False),
    ("ClusterRequest", {"name": "a", "labels": {"k": "v" * 64}}, False),
    ("ScaleRequest", {"workerGroups": [{"groupName": "cpu", "replicas": 2}]}, True),
    ("ScaleRequest", {"workerGroups": [{"groupName": "cpu", "maxReplicas": 3.0}]}, True),
    ("ScaleRequest", {"workerGroups": [{"groupName": "cpu"}]}, False),  # nothing to change
    ("ScaleRequest", {"workerGroups": [{"groupName": "cpu", "replicas": 1001}]}, False),
    ("ScaleRequest", {"workerGroups": [{"groupName": "cpu", "replicas": -1}]}, False),
    ("ScaleRequest", {"workerGroups": [{"groupName": "cpu", "replicas": 1, "cpu": 2}]}, False),
    ("ScaleRequest", {"workerGroups": [{"groupName": "Bad_Name", "replicas": 1}]}, False),
    ("ScaleRequest", {"workerGroups": []}, False),
    ("ScaleRequest", {"workerGroups": [{"groupName": "cpu", "replicas": 1}], "name": "x"}, False),
    ("JobSpec", {"entrypoint": "python a.py"}, True),
    ("JobSpec", {"entrypoint": ""}, False),
    ("JobSpec", {"entrypoint": "x", "cluster": {"profile": "cpu-small", "head": {"cpu": 2}}}, True),
    ("JobSpec", {"entrypoint": "x", "cluster": {"name": "mine"}}, False),
    ("JobSpec", {"entrypoint": "x", "cluster": {"profile": None}}, False),
    ("JobSpec", {"entrypoint": "x", "cluster": {"head": {"cpu": -1}}}, False),
    ("JobSpec", {"entrypoint": "x", "cluster": {}, "clusterName": "c"}, False),
    ("JobSpec", {"entrypoint": "x", "clusterName": "c", "ttlSecondsAfterFinished": 5}, False),
    ("JobSpec", {"entrypoint": "x", "clusterName": "c", "ttlSecondsAfterFinished": 0}, True),
    ("JobSpec", {"entrypoint": "x", "ttlSecondsAfterFinished": 5}, True),
    ("JobSpec", {"entrypoint": "x", "runtimeEnv": {"envVars": {"EKSRAY_JOB_ID": "x"}}}, False),
    ("JobSpec", {"entrypoint": "x", "runtimeEnv": {"envVars": {"eksray_x": "x"}}}, False),
    ("JobSpec", {"entrypoint": "x", "runtimeEnv": {"envVars": {"MY_EKSRAY_X": "x"}}}, True),
    ("JobSpec", {"entrypoint": "x", "results": ["out/*.csv", "a..b", "..x/y"]}, True),
    ("JobSpec", {"entrypoint": "x", "results": ["/etc/passwd"]}, False),
    ("JobSpec", {"entrypoint": "x", "results": ["~/x"]}, False),
    ("JobSpec", {"entrypoint": "x", "results": ["a/../../b"]}, False),
    ("JobSpec", {"entrypoint": "x", "results": ["a\\..\\b"]}, False),
    ("JobSpec", {"entrypoint": "x", "results": [".."]}, False),
    ("JobSpec", {"entrypoint": "x", "store": {"type": "local"}}, True),
    ("JobSpec", {"entrypoint": "x", "store": {"type": "local", "bucket": "abc"}}, False),
    ("JobSpec", {"entrypoint": "x", "store": {"type": "s3", "prefix": "a/b"}}, True),
    ("JobSpec", {"entrypoint": "x", "store": {"type": "s3", "bucket": "UPPER"}}, False),
    ("JobSpec", {"entrypoint": "x", "backoffLimit": 1.0}, True),
    ("JobSpec", {"entrypoint": "x", "backoffLimit": 11}, False),
]


@pytest.mark.parametrize(("component", "request_body", "valid"), AGREEMENT)
def test_the_document_and_the_server_take_the_same_requests(
    component: str, request_body: Any, valid: bool
) -> None:
    errors = [e.message for e in validator(component).iter_errors(request_body)]
    assert (not errors) is valid, f"the document says {errors or 'valid'}"
    assert server_accepts(component, request_body) is valid, "the server disagrees"


def props(name: str) -> set[str]:
    return set(DOC["components"]["schemas"][name]["properties"])


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ("Cluster", Cluster("n", "local", "o", Phase.READY, {}, 0.0).to_dict("/x")),
        ("WorkerGroup", WorkerGroupStatus("g", 1, 1, 1, 0, 2).to_dict()),
        ("Node", Node("i", "g", "worker", "alive").to_dict()),
        ("Milestone", Milestone("gcs-up", 0.0, "GCS up").to_dict()),
        ("Event", ClusterEvent(0.0, "backend", Severity.INFO, "m", "i").to_dict()),
        ("CacheStatus", CacheStatus(False, 0.0, "the watch of pods is interrupted").to_dict()),
    ],
)
def test_models_match_the_document(schema: str, instance: dict[str, Any]) -> None:
    assert set(instance) == props(schema)
    assert set(DOC["components"]["schemas"][schema]["required"]) == set(instance)


def test_phases_and_severities_match() -> None:
    cluster = DOC["components"]["schemas"]["Cluster"]["properties"]
    assert cluster["phase"]["enum"] == [p.value for p in Phase]
    event = DOC["components"]["schemas"]["Event"]["properties"]
    assert event["severity"]["enum"] == [s.value for s in Severity]
