"""Bounded work per request with the kuberay backend (issue 12), against the fake API server.

A hung API server (requests held by the fake until released) gets a create or scale a 504
within ``request_timeout``; one that refuses connections, a 502; reads are answered from the
cache meanwhile, on threads writes never take, and say when that cache is not current.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from eksray_jupyter.backends.kuberay.errors import KubeError, KubeTimeout, kube_call
from eksray_jupyter.server.errors import http_status

from .fakekube import FakeKubeServer, pytest_plugin
from .waiting import eventually

# The fake API server's fixtures, used by name below.
fakekube = pytest_plugin.fakekube
fakekube_kubeconfig = pytest_plugin.fakekube_kubeconfig

NS = "eksray-alice"
#: c.KubeRayBackend.request_timeout in these tests (seconds).
TIMEOUT = 2.0
#: How much later than the timeout an answer may come on a busy test machine.
SLACK = 5.0


@pytest.fixture
def tuning(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings a test asks for with ``@pytest.mark.parametrize("tuning", [{...}], indirect=True)``."""
    return dict(getattr(request, "param", None) or {})


@pytest.fixture
def jp_server_config(
    state_dir: Path, fakekube: FakeKubeServer, fakekube_kubeconfig: Path, tuning: dict[str, Any]
) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"eksray_jupyter": True}},
        "EKSRay": {"state_dir": str(state_dir), "backend": "kuberay", "owner": "alice"},
        "EKSRayExtension": tuning.get("extension", {}),
        "KubeRayBackend": {
            "credentials": "kubeconfig",
            "kubeconfig": str(fakekube_kubeconfig),
            "dashboard_events": False,
            "request_timeout": tuning.get("request_timeout", TIMEOUT),
        },
    }


async def call(jp_fetch: Any, *path: str, method: str = "GET", body: Any = None) -> Any:
    response = await jp_fetch(
        "eksray",
        "api",
        *path,
        method=method,
        body=None if body is None else json.dumps(body),
        request_timeout=60,
    )
    return response


async def body_of(jp_fetch: Any, *path: str, method: str = "GET", body: Any = None) -> Any:
    response = await call(jp_fetch, *path, method=method, body=body)
    return json.loads(response.body) if response.body else response.code


async def failure(jp_fetch: Any, *path: str, method: str = "GET", body: Any = None) -> tuple[int, str, float]:
    """The status and message of a request that fails, and how long its answer took."""
    started = time.monotonic()
    with pytest.raises(HTTPClientError) as info:
        await call(jp_fetch, *path, method=method, body=body)
    assert info.value.response is not None
    return info.value.code, json.loads(info.value.response.body)["message"], time.monotonic() - started


DEMO = {"name": "demo", "profile": "cpu-small"}


async def test_a_create_against_a_hung_api_server_is_a_504_within_the_timeout(
    jp_fetch: Any, fakekube: FakeKubeServer
) -> None:
    assert await body_of(jp_fetch, "clusters") == {"clusters": []}  # the cache is synced
    hold = fakekube.hold("POST", r"/rayclusters$")

    code, message, took = await failure(jp_fetch, "clusters", method="POST", body=DEMO)
    assert code == 504
    assert hold.waiting == 1  # the API server still has it: the answer did not wait for it
    assert TIMEOUT - 0.5 <= took <= TIMEOUT + SLACK, took  # before: 4 timeouts (urllib3 retries)
    assert "did not answer in time" in message and "creating RayCluster" in message
    assert "c.KubeRayBackend.request_timeout" in message
    assert "may still have been made" in message

    # ...and so it was, once the API server got to it: the cache shows it.
    fakekube.release(hold)

    async def listed() -> bool:
        return [c["name"] for c in (await body_of(jp_fetch, "clusters"))["clusters"]] == ["demo"]

    await eventually(listed, "the cluster the API server made after all")


async def test_a_scale_against_a_hung_api_server_is_a_504_within_the_timeout(
    jp_fetch: Any, fakekube: FakeKubeServer
) -> None:
    await body_of(jp_fetch, "clusters", method="POST", body=DEMO)
    hold = fakekube.hold(path=r"/rayclusters/demo$")  # its GET and PATCH, not the list or watch

    scale = {"workerGroups": [{"groupName": "cpu", "maxReplicas": 3}]}
    code, message, took = await failure(jp_fetch, "clusters", "demo", method="PATCH", body=scale)
    assert code == 504
    assert hold.waiting == 1
    assert TIMEOUT - 0.5 <= took <= TIMEOUT + SLACK, took
    assert "did not answer in time" in message and "RayCluster eksray-alice/demo" in message

    fakekube.release(hold)
    scaled = await body_of(jp_fetch, "clusters", "demo", method="PATCH", body=scale)
    assert scaled["workerGroups"][0]["maxReplicas"] == 3


async def test_an_unreachable_api_server_is_a_502_and_reads_say_the_cache_is_stale(
    jp_fetch: Any, fakekube: FakeKubeServer
) -> None:
    await body_of(jp_fetch, "clusters", method="POST", body=DEMO)
    response = await call(jp_fetch, "clusters", "demo")
    assert "X-Cache-Stale-Since" not in response.headers
    assert "cache" not in await body_of(jp_fetch, "clusters")

    fakekube.api_down(120, mode="refuse")  # connections refused; the watches are cut
    code, message, took = await failure(jp_fetch, "clusters", method="POST", body={**DEMO, "name": "other"})
    assert code == 502
    assert took <= TIMEOUT + SLACK
    assert "not reachable" in message and "Check the API server" in message

    async def stale() -> Any:
        listed = await body_of(jp_fetch, "clusters")
        return listed if "cache" in listed else None

    listed = await eventually(stale, "the list saying its cache is not current")
    # Still answered from the cache, and saying since when and why it may be behind.
    assert [c["name"] for c in listed["clusters"]] == ["demo"]
    cache = listed["cache"]
    assert cache["current"] is False and cache["since"].endswith("Z")
    assert "interrupted" in cache["reason"] and NS in cache["reason"]
    assert "fake-token" not in json.dumps(listed)
    detail = await call(jp_fetch, "clusters", "demo")
    assert json.loads(detail.body)["name"] == "demo"
    assert detail.headers["X-Cache-Stale-Since"] == cache["since"]
    events = await call(jp_fetch, "clusters", "demo", "events")
    assert events.headers["X-Cache-Stale-Since"] == cache["since"]

    fakekube.api_up()

    async def current() -> bool:
        listed = await body_of(jp_fetch, "clusters")
        response = await call(jp_fetch, "clusters", "demo")
        return "cache" not in listed and "X-Cache-Stale-Since" not in response.headers

    await eventually(current, "the cache current again once the watches are back")


async def test_a_stale_cache_is_in_the_stream_snapshot(
    jp_fetch: Any, jp_ws_fetch: Any, fakekube: FakeKubeServer
) -> None:
    await body_of(jp_fetch, "clusters", method="POST", body=DEMO)
    fakekube.api_down(120, mode="refuse")
    await eventually(lambda: _stale_list(jp_fetch), "the cache not current")
    ws = await jp_ws_fetch("eksray", "api", "stream")
    try:
        snapshot = json.loads(await asyncio.wait_for(ws.read_message(), 15))
        assert snapshot["type"] == "snapshot" and [c["name"] for c in snapshot["clusters"]] == ["demo"]
        assert snapshot["cache"]["current"] is False
    finally:
        ws.close()
        fakekube.api_up()


async def _stale_list(jp_fetch: Any) -> bool:
    return "cache" in await body_of(jp_fetch, "clusters")


@pytest.mark.parametrize(
    "tuning",
    [{"request_timeout": 60, "extension": {"backend_threads": 1, "backend_write_threads": 2}}],
    indirect=True,
)
async def test_reads_never_wait_behind_slow_writes(jp_fetch: Any, fakekube: FakeKubeServer) -> None:
    """One read thread, two write threads, two creates held by the API server: a list is answered
    while both are still held (with one shared pool it would queue behind them), and a third
    change is refused at once rather than queued."""
    assert await body_of(jp_fetch, "clusters") == {"clusters": []}
    hold = fakekube.hold("POST", r"/rayclusters$")
    creates = [
        asyncio.ensure_future(body_of(jp_fetch, "clusters", method="POST", body={**DEMO, "name": name}))
        for name in ("one", "two")
    ]
    try:
        await eventually(lambda: hold.waiting == 2, "both creates held by the API server")

        listed = await asyncio.wait_for(body_of(jp_fetch, "clusters"), 10)
        assert listed == {"clusters": []}
        assert hold.waiting == 2 and not any(c.done() for c in creates)  # the writes are still blocked

        with pytest.raises(HTTPClientError) as info:
            await asyncio.wait_for(
                call(jp_fetch, "clusters", method="POST", body={**DEMO, "name": "three"}), 10
            )
        assert info.value.code == 503 and info.value.response is not None
        assert info.value.response.headers["Retry-After"] == "1"
        assert "backend_write_threads = 2" in json.loads(info.value.response.body)["message"]
        assert hold.waiting == 2
    finally:
        fakekube.release(hold)
    created = await asyncio.wait_for(asyncio.gather(*creates), 30)
    assert sorted(c["name"] for c in created) == ["one", "two"]


# --- kube_call: what is retried, within one budget -------------------------------------------------


class Scripted:
    """A stand-in client method: raises the scripted errors in turn, then answers."""

    def __init__(self, name: str, *errors: BaseException) -> None:
        self.__name__ = name
        self.errors = list(errors)
        self.timeouts: list[float] = []

    def __call__(self, **kwargs: Any) -> str:
        self.timeouts.append(kwargs["_request_timeout"])
        if self.errors:
            raise self.errors.pop(0)
        return "answer"


def refused() -> BaseException:
    import urllib3.exceptions

    return urllib3.exceptions.MaxRetryError(
        None,
        "/x",
        urllib3.exceptions.NewConnectionError(None, "Connection refused"),  # type: ignore[arg-type]
    )


def test_a_refused_connection_is_tried_again_within_the_budget() -> None:
    fn = Scripted("create_namespaced_custom_object", refused(), refused())
    assert kube_call("creating x", fn, _request_timeout=5.0) == "answer"
    assert len(fn.timeouts) == 3
    assert fn.timeouts == sorted(fn.timeouts, reverse=True) and fn.timeouts[0] <= 5.0  # one budget

    fn = Scripted("create_namespaced_custom_object", refused(), refused(), refused())
    with pytest.raises(KubeError) as info:
        kube_call("creating x", fn, _request_timeout=5.0)
    assert len(fn.timeouts) == 3 and http_status(info.value) == 502
    assert "not reachable while creating x (NewConnectionError)" in info.value.message


def test_a_timeout_is_a_504_and_never_retried() -> None:
    import urllib3.exceptions

    timeout = urllib3.exceptions.ReadTimeoutError(None, "/x", "read timed out")  # type: ignore[arg-type]
    fn = Scripted("get_namespaced_custom_object", timeout)
    with pytest.raises(KubeTimeout) as info:
        kube_call("reading x", fn, _request_timeout=5.0)
    assert len(fn.timeouts) == 1 and http_status(info.value) == 504
    assert "(5 s) while reading x" in info.value.message and "may still" not in info.value.message

    fn = Scripted("get_namespaced_custom_object")
    with pytest.raises(KubeTimeout):
        kube_call("reading x", fn, _request_timeout=0.0)  # nothing left of the request's time
    assert fn.timeouts == []


def test_a_broken_connection_is_tried_again_only_for_reads() -> None:
    import urllib3.exceptions

    def broken() -> BaseException:
        return urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())

    read = Scripted("list_namespaced_pod", broken())
    assert kube_call("listing pods", read, _request_timeout=5.0) == "answer"
    assert len(read.timeouts) == 2

    write = Scripted("patch_namespaced_custom_object", broken())
    with pytest.raises(KubeError):
        kube_call("scaling x", write, _request_timeout=5.0)
    assert len(write.timeouts) == 1


def test_a_429_with_retry_after_is_tried_again_in_time() -> None:
    from kubernetes.client.exceptions import ApiException

    def throttled(after: str) -> ApiException:
        error = ApiException(status=429, reason="Too Many Requests")
        error.headers = {"Retry-After": after}
        return error

    fn = Scripted("create_namespaced_custom_object", throttled("0"))
    assert kube_call("creating x", fn, _request_timeout=5.0) == "answer"
    assert len(fn.timeouts) == 2

    fn = Scripted("create_namespaced_custom_object", throttled("60"))  # longer than the budget
    with pytest.raises(KubeError) as info:
        kube_call("creating x", fn, _request_timeout=5.0)
    assert len(fn.timeouts) == 1 and "429" in info.value.message


def test_a_body_that_stops_half_way_is_a_504_not_a_500() -> None:
    """Raw answers are read after the call returned: a server that stops while sending the
    body must still give the 504 (or a 502 for a broken connection), never an unmapped error."""
    import urllib3

    from eksray_jupyter.backends.kuberay.errors import KubeError, KubeTimeout
    from eksray_jupyter.backends.kuberay.kubeapi import read_json

    class Response:
        def __init__(self, error: Exception | None, data: bytes = b"") -> None:
            self.error, self.released, self._data = error, False, data

        @property
        def data(self) -> bytes:
            if self.error is not None:
                raise self.error
            return self._data

        def release_conn(self) -> None:
            self.released = True

    stalled = Response(urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"))  # type: ignore[arg-type]
    with pytest.raises(KubeTimeout, match="stopped answering while listing pods"):
        read_json(stalled, "listing pods")
    broken = Response(urllib3.exceptions.ProtocolError("Connection broken"))
    with pytest.raises(KubeError, match="connection broke while reading x") as info:
        read_json(broken, "reading x")
    assert not isinstance(info.value, KubeTimeout)
    assert stalled.released and broken.released
    assert read_json(Response(None, b'{"a": 1}'), "reading x") == {"a": 1}
    assert read_json(Response(None, b""), "reading x") == {}
