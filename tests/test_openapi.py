"""schema/openapi.yaml and the server agree: same routes and methods, same model fields."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado import web

from eksray_jupyter.core.models import (
    CacheStatus,
    Cluster,
    ClusterEvent,
    Node,
    Phase,
    Severity,
    WorkerGroupStatus,
)
from eksray_jupyter.server.handlers import handlers
from eksray_jupyter.server.jobs import job_handlers
from eksray_jupyter.server.proxy import proxy_handlers
from eksray_jupyter.server.stream import stream_handlers

DOC = yaml.safe_load((Path(__file__).parent.parent / "schema" / "openapi.yaml").read_text())
METHODS = ("get", "post", "put", "patch", "delete")


def template(pattern: str) -> str:
    """A tornado route regex as an OpenAPI path template."""
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
    path = path.replace("/dashboard(.*)", "/dashboard/{path}").replace("([^/]+)", "{name}")
    return path


def served() -> set[tuple[str, str]]:
    routes = handlers("/") + job_handlers("/") + stream_handlers("/") + proxy_handlers("/")
    out = set()
    for pattern, cls in routes:
        for method in METHODS:
            impl = getattr(cls, method, None)
            if impl is not None and impl is not getattr(web.RequestHandler, method):
                out.add((template(pattern), method))
    return out


def documented() -> set[tuple[str, str]]:
    return {(path, method) for path, item in DOC["paths"].items() for method in item if method in METHODS}


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    rest = {(p, m) for p, m in served() if not p.startswith("/eksray/clusters/")}
    proxy_gets = {(p, m) for p, m in served() if p.startswith("/eksray/clusters/") and m == "get"}
    assert rest | proxy_gets == documented()


def props(name: str) -> set[str]:
    return set(DOC["components"]["schemas"][name]["properties"])


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ("Cluster", Cluster("n", "local", "o", Phase.READY, {}, 0.0).to_dict("/x")),
        ("WorkerGroup", WorkerGroupStatus("g", 1, 1, 1, 0, 2).to_dict()),
        ("Node", Node("i", "g", "worker", "alive").to_dict()),
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
