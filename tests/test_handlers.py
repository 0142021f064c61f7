"""REST handler tests against the in-memory backend (no Ray): auth, validation, error mapping."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from .memory_backend import MemoryBackend

SPEC = {
    "name": "demo",
    "workerGroups": [{"groupName": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 3}],
}


async def call(jp_fetch: Any, *path: str, method: str = "GET", body: Any = None, **kwargs: Any) -> Any:
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    return await jp_fetch("eksray", "api", *path, method=method, body=body, **kwargs)


async def error_of(jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(HTTPClientError) as info:
        await call(jp_fetch, *path, **kwargs)
    return info.value.code, json.loads(info.value.response.body)


async def test_list_starts_empty(jp_fetch: Any) -> None:
    response = await call(jp_fetch, "clusters")
    assert response.code == 200
    assert json.loads(response.body) == {"clusters": []}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", ("clusters",), None),
        ("POST", ("clusters",), SPEC),
        ("GET", ("clusters", "demo"), None),
        ("PATCH", ("clusters", "demo"), {"workerGroups": [{"groupName": "cpu", "replicas": 2}]}),
        ("DELETE", ("clusters", "demo"), None),
        ("GET", ("clusters", "demo", "events"), None),
        ("POST", ("clusters", "demo", "suspend"), {}),
        ("POST", ("clusters", "demo", "resume"), {}),
        ("POST", ("clusters", "demo", "keepalive"), {}),
        ("GET", ("config",), None),
    ],
)
async def test_every_route_refuses_unauthenticated(
    jp_fetch: Any, service: Any, method: str, path: tuple[str, ...], body: Any
) -> None:
    service.create({**SPEC})
    code, _ = await error_of(jp_fetch, *path, method=method, body=body, headers={"Authorization": ""})
    assert code == 403
    # Nothing was changed by the refused request.
    assert [c.name for c in service.list()] == ["demo"]
    assert service.get("demo").worker_groups[0].replicas == 1


async def test_create_get_scale_delete(jp_fetch: Any) -> None:
    response = await call(jp_fetch, "clusters", method="POST", body=SPEC)
    assert response.code == 201
    assert response.headers["Location"].endswith("/eksray/api/clusters/demo")
    created = json.loads(response.body)
    assert created["name"] == "demo"
    assert created["phase"] == "ready"
    assert created["spec"]["autoscaling"]["idleTimeoutSeconds"] == 60  # defaults filled from the schema

    detail = json.loads((await call(jp_fetch, "clusters", "demo")).body)
    assert detail["workerGroups"][0] == {
        "groupName": "cpu",
        "replicas": 1,
        "desired": 1,
        "ready": 1,
        "minReplicas": 0,
        "maxReplicas": 3,
        "resources": {},
    }
    assert detail["address"] == "127.0.0.1:6379"

    scaled = await call(
        jp_fetch,
        "clusters",
        "demo",
        method="PATCH",
        body={"workerGroups": [{"groupName": "cpu", "replicas": 3}]},
    )
    assert json.loads(scaled.body)["workerGroups"][0]["replicas"] == 3

    bounds = await call(
        jp_fetch,
        "clusters",
        "demo",
        method="PATCH",
        body={"workerGroups": [{"groupName": "cpu", "maxReplicas": 2}]},
    )
    group = json.loads(bounds.body)["workerGroups"][0]
    assert (group["replicas"], group["maxReplicas"]) == (2, 2)  # replicas carried into the new bounds

    deleted = await call(jp_fetch, "clusters", "demo", method="DELETE")
    assert deleted.code == 204
    code, body = await error_of(jp_fetch, "clusters", "demo")
    assert code == 404
    assert "demo" in body["message"]


async def test_duplicate_name_is_409(jp_fetch: Any) -> None:
    await call(jp_fetch, "clusters", method="POST", body=SPEC)
    code, body = await error_of(jp_fetch, "clusters", method="POST", body=SPEC)
    assert code == 409
    assert "already exists" in body["message"]


async def test_invalid_spec_lists_every_field(jp_fetch: Any, service: Any) -> None:
    bad = {
        "name": "Not_A_Name",
        "colour": "blue",
        "head": {"cpu": -1},
        "workerGroups": [
            {"groupName": "cpu", "minReplicas": 3, "maxReplicas": 1},
            {"groupName": "cpu", "replicas": "two"},
        ],
    }
    code, body = await error_of(jp_fetch, "clusters", method="POST", body=bad)
    assert code == 400
    paths = {e["path"] for e in body["errors"]}
    assert {
        "name",
        "colour",
        "head.cpu",
        "workerGroups[0].minReplicas",
        "workerGroups[1].replicas",
        "workerGroups[1].groupName",
    } <= paths
    messages = " ".join(e["message"] for e in body["errors"])
    assert "lower-case letters" in messages
    assert "allowed fields" in messages
    assert "must not exceed maxReplicas" in messages
    assert service.list() == []  # nothing half-made


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"name": "x" * 54}), "at most 53 characters"),
        (json.dumps({"name": "ok", "profile": "huge"}), "no profile 'huge'"),
        (json.dumps({"name": "ok", "workerGroups": [{"groupName": "g", "replicas": -1}]}), "at least 0"),
        (json.dumps({"name": "ok", "head": {"resources": {"CPU": 2}}}), "invalid resource name"),
    ],
)
async def test_bad_create_bodies_are_400(jp_fetch: Any, body: Any, needle: str) -> None:
    code, response = await error_of(jp_fetch, "clusters", method="POST", body=body)
    assert code == 400
    assert needle in response["message"]


async def test_oversize_body_is_400(jp_fetch: Any) -> None:
    body = {"name": "big", "labels": {"x": "y" * 70_000}}
    code, response = await error_of(jp_fetch, "clusters", method="POST", body=body)
    assert code == 400
    assert "limit is 65536 bytes" in response["message"]


async def test_an_oversize_body_is_refused_before_it_is_sent(
    http_server_client: Any, jp_http_port: int, jp_base_url: str, jp_auth_header: dict[str, str]
) -> None:
    """The limit is checked from Content-Length: the answer comes before any of the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    try:
        head = [
            f"POST {jp_base_url.rstrip('/')}/eksray/api/clusters HTTP/1.1",
            f"Host: 127.0.0.1:{jp_http_port}",
            *(f"{k}: {v}" for k, v in jp_auth_header.items()),
            "Content-Type: application/json",
            "Content-Length: 50000000",  # 50 MB that never come
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), timeout=10)
    finally:
        writer.close()
    status_line, _, rest = answer.decode(errors="replace").partition("\r\n")
    assert " 400 " in status_line, status_line
    assert "limit is 65536 bytes" in rest


async def test_an_oversize_chunked_body_is_refused(jp_fetch: Any) -> None:
    """Without Content-Length the body is read as it comes and kept no further than the limit."""

    async def body_producer(write: Any) -> None:
        for _ in range(20):
            await write(b" " * 10_000)

    code, response = await error_of(
        jp_fetch, "clusters", method="POST", body_producer=body_producer, body=None,
        headers={"Transfer-Encoding": "chunked"},
    )  # fmt: skip
    assert code == 400
    assert "200000 bytes; the limit is 65536 bytes" in response["message"]


async def test_profile_with_overrides(jp_fetch: Any) -> None:
    body = {
        "name": "fromprofile",
        "profile": "tagged",
        "workerGroups": [{"groupName": "tagged", "maxReplicas": 2}],
    }
    created = json.loads((await call(jp_fetch, "clusters", method="POST", body=body)).body)
    groups = {g["groupName"]: g for g in created["spec"]["workerGroups"]}
    # Only the named group of the override list is kept, merged with the profile's group of that name.
    assert groups["tagged"]["maxReplicas"] == 2
    assert groups["tagged"]["resources"] == {"tag": 1}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"workerGroups": [{"groupName": "nope", "replicas": 1}]}, "workerGroups[0].groupName"),
        ({"workerGroups": [{"groupName": "cpu", "minReplicas": 5}]}, "workerGroups[0].minReplicas"),
        ({"workerGroups": [{"groupName": "cpu", "replicas": 1.5}]}, "workerGroups[0].replicas"),
        ({"workerGroups": [{"groupName": "cpu"}]}, "workerGroups[0]"),
        ({"workerGroups": []}, "workerGroups"),
        ({"name": "other", "workerGroups": [{"groupName": "cpu", "replicas": 1}]}, "name"),
        # Found by fuzzing: these were 500s.
        ({"workerGroups": [{"groupName": {}, "replicas": 1}]}, "workerGroups[0].groupName"),
        ({"workerGroups": [{"groupName": ["cpu"], "replicas": 1}]}, "workerGroups[0].groupName"),
    ],
)
async def test_bad_scale_is_400(jp_fetch: Any, service: Any, body: Any, path: str) -> None:
    service.create({**SPEC})
    code, response = await error_of(jp_fetch, "clusters", "demo", method="PATCH", body=body)
    assert code == 400
    assert path in {e["path"] for e in response["errors"]}
    assert service.get("demo").worker_groups[0].replicas == 1


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ('{"name": "x", "head": {"cpu": NaN}}', "head.cpu"),
        ('{"name": "x", "head": {"memory": NaN}}', "head.memory"),
        ('{"name": "x", "workerGroups": [{"groupName": "g", "cpu": Infinity}]}', "workerGroups[0].cpu"),
        ('{"name": "x", "head": {"cpu": -Infinity}}', "head.cpu"),
    ],
)
async def test_numbers_json_cannot_carry_are_refused(
    jp_fetch: Any, service: Any, raw: str, path: str
) -> None:
    """Found by fuzzing: NaN was accepted (201) and the list then carried a bare NaN no browser parses."""
    code, response = await error_of(jp_fetch, "clusters", method="POST", body=raw)
    assert code == 400
    assert path in {e["path"] for e in response["errors"]}, response
    assert "NaN" in response["message"] or "finite" in response["message"]
    assert service.list() == []
    listed = (await call(jp_fetch, "clusters")).body.decode()
    json.loads(listed, parse_constant=lambda name: pytest.fail(f"{name} in the cluster list"))


async def test_unknown_cluster_is_404_everywhere(jp_fetch: Any) -> None:
    for method, path, body in [
        ("GET", ("clusters", "ghost"), None),
        ("PATCH", ("clusters", "ghost"), {"workerGroups": [{"groupName": "cpu", "replicas": 1}]}),
        ("DELETE", ("clusters", "ghost"), None),
        ("GET", ("clusters", "ghost", "events"), None),
        ("POST", ("clusters", "ghost", "suspend"), {}),
        ("POST", ("clusters", "ghost", "resume"), {}),
        ("POST", ("clusters", "ghost", "keepalive"), {}),
    ]:
        code, response = await error_of(jp_fetch, *path, method=method, body=body)
        assert code == 404, (method, path)
        assert "ghost" in response["message"]


async def test_events_since(jp_fetch: Any, service: Any) -> None:
    service.create({**SPEC})
    service.scale("demo", {"workerGroups": [{"groupName": "cpu", "replicas": 2}]})
    events = json.loads((await call(jp_fetch, "clusters", "demo", "events")).body)["events"]
    assert [e["message"] for e in events] == ["Cluster demo created", "Scaled"]
    first = events[0]["timestamp"]
    newer = json.loads(
        (await call(jp_fetch, "clusters", "demo", "events", params={"since": str(first)})).body
    )["events"]
    assert [e["message"] for e in newer] == ["Scaled"]
    code, response = await error_of(jp_fetch, "clusters", "demo", "events", params={"since": "yesterday"})
    assert code == 400
    assert "since" in response["message"]


@pytest.mark.parametrize("since", ["nan", "inf", "-Infinity"])
async def test_events_since_must_be_a_finite_number(jp_fetch: Any, service: Any, since: str) -> None:
    """Found by fuzzing: float() takes these, so they were answered as if they were timestamps."""
    service.create({**SPEC})
    code, response = await error_of(jp_fetch, "clusters", "demo", "events", params={"since": since})
    assert code == 400
    assert [e["path"] for e in response["errors"]] == ["since"]


async def test_a_profile_is_named_by_a_string(jp_fetch: Any, service: Any) -> None:
    """Found by fuzzing: ``"profile": null`` was taken as no profile (201), though the document
    says a profile is a string."""
    code, response = await error_of(jp_fetch, "clusters", method="POST", body={"name": "x", "profile": None})
    assert code == 400
    assert [e["path"] for e in response["errors"]] == ["profile"]
    assert "cpu-small" in response["errors"][0]["message"]  # what to give instead
    assert service.list() == []


async def test_the_request_names_the_cluster_never_a_profile(jp_fetch: Any, service: Any) -> None:
    """``name`` is required in the request (as the document says), even from a profile that has one."""
    service.config.profiles = {**service.config.profiles, "named": {"name": "fixed"}}
    code, response = await error_of(jp_fetch, "clusters", method="POST", body={"profile": "named"})
    assert code == 400
    assert [(e["path"], e["message"]) for e in response["errors"]] == [("name", "is required")]
    created = await call(jp_fetch, "clusters", method="POST", body={"name": "mine", "profile": "named"})
    assert json.loads(created.body)["name"] == "mine"


async def test_whole_numbers_may_be_written_as_floats(jp_fetch: Any, service: Any) -> None:
    """Found by fuzzing: JSON Schema takes 2.0 as an integer, so a spec kept the float and the
    backend failed on it (a 500: ``range(2.0)``); a scale request with 2.0 was refused. JSON does
    not tell 2 from 2.0: both are 2, an int, from the spec on."""
    body = {
        "name": "floats",
        "workerGroups": [{"groupName": "cpu", "replicas": 2.0, "minReplicas": 1.0, "maxReplicas": 3.0}],
        "head": {"gpu": 0.0},
    }
    created = json.loads((await call(jp_fetch, "clusters", method="POST", body=body)).body)
    group = created["spec"]["workerGroups"][0]
    values = (group["replicas"], group["minReplicas"], group["maxReplicas"], created["spec"]["head"]["gpu"])
    assert values == (2, 1, 3, 0) and all(type(v) is int for v in values)
    assert len(created["nodes"]) == 1 + 2
    scale = {"workerGroups": [{"groupName": "cpu", "replicas": 3.0}]}
    scaled = await call(jp_fetch, "clusters", "floats", method="PATCH", body=scale)
    assert type(json.loads(scaled.body)["workerGroups"][0]["replicas"]) is int
    assert service.get("floats").spec["workerGroups"][0]["replicas"] == 3
    scale = {"workerGroups": [{"groupName": "cpu", "replicas": 2.5}]}
    code, response = await error_of(jp_fetch, "clusters", "floats", method="PATCH", body=scale)
    assert code == 400
    assert [e["path"] for e in response["errors"]] == ["workerGroups[0].replicas"]


async def test_config_shows_backend_profiles_limits_and_no_secrets(jp_fetch: Any, state_dir: Any) -> None:
    body = json.loads((await call(jp_fetch, "config")).body)
    assert body["backend"] == "memory"
    assert {"cpu-small", "tagged"} <= set(body["profiles"])
    assert body["limits"]["maxClustersPerOwner"] == 10
    assert body["schemaVersion"] == "1"
    assert body["clusterSchema"]["properties"]["name"]["maxLength"] == 53
    assert "entrypoint" in body["jobSchema"]["properties"]
    assert str(state_dir) not in json.dumps(body)


class SlowBackend(MemoryBackend):
    """list_clusters blocks until released: proves the event loop keeps serving meanwhile."""

    release = threading.Event()
    entered = threading.Event()

    def list_clusters(self, owner: str) -> list[Any]:
        self.entered.set()
        assert self.release.wait(30)
        return super().list_clusters(owner)


@pytest.mark.parametrize("backend_class", ["tests.test_handlers.SlowBackend"])
async def test_slow_backend_does_not_block_other_requests(jp_fetch: Any) -> None:
    SlowBackend.release.clear()
    SlowBackend.entered.clear()
    slow = asyncio.ensure_future(call(jp_fetch, "clusters"))
    await asyncio.get_running_loop().run_in_executor(None, SlowBackend.entered.wait, 30)
    # While the backend call is stuck, the server still answers.
    status = await jp_fetch("api", "status")
    assert status.code == 200
    config = await call(jp_fetch, "config")
    assert config.code == 200
    assert not slow.done()
    SlowBackend.release.set()
    assert (await slow).code == 200


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", ("clusters",), {"GET", "POST", "OPTIONS"}),
        ("POST", ("clusters", "demo"), {"GET", "PATCH", "DELETE", "OPTIONS"}),
        ("DELETE", ("config",), {"GET", "OPTIONS"}),
        ("PATCH", ("jobs",), {"GET", "POST", "OPTIONS"}),
    ],
)
async def test_405_says_which_methods_the_route_answers(
    jp_fetch: Any, method: str, path: tuple[str, ...], allowed: set[str]
) -> None:
    with pytest.raises(HTTPClientError) as info:
        await call(jp_fetch, *path, method=method, body=None if method == "DELETE" else "{}")
    assert info.value.code == 405
    assert set(info.value.response.headers["Allow"].split(", ")) == allowed


async def test_lifecycle_actions_refuse_a_body_and_say_what_is_not_possible(
    jp_fetch: Any, service: Any
) -> None:
    service.create({**SPEC})
    code, response = await error_of(jp_fetch, "clusters", "demo", "keepalive", method="POST", body={"x": 1})
    assert code == 400 and "takes no body" in response["message"]
    # The memory backend cannot suspend: a 409 that says so, nothing changed.
    code, response = await error_of(jp_fetch, "clusters", "demo", "suspend", method="POST", body={})
    assert code == 409 and "cannot suspend" in response["message"]
    before = time.time()
    response = await jp_fetch("eksray", "api", "clusters", "demo", "keepalive", method="POST", body="")
    kept = json.loads(response.body)
    assert kept["name"] == "demo" and kept["lastActiveAt"] is not None
    assert service.get("demo").last_active_at >= before
    assert any("keep-alive from the panel or REST API" in e.message for e in service.events("demo"))
