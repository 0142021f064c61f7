"""The fake Kubernetes API server: tornado on loopback, driven by the real ``kubernetes``
client (or kubectl-like tools) over plain HTTP with bearer tokens.

Start it in-process (``FakeKubeServer().start()`` runs its own event-loop thread; stop with
``.stop()``), or inside an existing asyncio loop (``await server.start_async()``), or as a
process: ``python -m tests.fakekube --port N``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tornado.httpclient
import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web
import yaml

from .errors import ApiError, bad_request
from .operator import OperatorConfig, RayOperator
from .schema import DEFAULT_CRD_DIR
from .selection import FieldSelector, LabelSelector
from .store import ResourceType, Scheduler, Store, WatchEvent

if TYPE_CHECKING:
    import kubernetes.client

log = logging.getLogger("fakekube.server")

T = TypeVar("T")

DEFAULT_TOKEN = "fake-token"


class _Default(enum.Enum):
    TOKEN = "default"


DEFAULT = _Default.TOKEN  # "use the server's default token"
K8S_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-fakekube",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "authorization",
    "content-encoding",
}


# ------------------------------------------------------------------------------------------
# Fault switches


@dataclass
class ErrorRule:
    code: int
    count: int = 1
    method: str | None = None
    path: str | None = None  # regex searched in the request path
    message: str | None = None
    # Sends a Retry-After header; note urllib3 then retries 413/429/503 transparently.
    retry_after: int | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self.path and not re.search(self.path, path))


@dataclass
class Faults:
    """Fault switches. Plain attributes: safe to set from any thread."""

    latency: float = 0.0
    force_410: int = 0
    api_down_until: float = 0.0
    api_down_mode: str = "503"  # "503" | "refuse"
    errors: list[ErrorRule] = field(default_factory=list)

    def api_down(self) -> bool:
        return time.monotonic() < self.api_down_until

    def take_error(self, method: str, path: str) -> ErrorRule | None:
        for rule in list(self.errors):
            if rule.matches(method, path):
                rule.count -= 1
                if rule.count <= 0:
                    with contextlib.suppress(ValueError):
                        self.errors.remove(rule)
                return rule
        return None

    def take_410(self) -> bool:
        if self.force_410 > 0:
            self.force_410 -= 1
            return True
        return False

    def as_dict(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "force_410": self.force_410,
            "api_down": self.api_down(),
            "api_down_remaining": max(0.0, self.api_down_until - time.monotonic()),
            "api_down_mode": self.api_down_mode,
            "errors": [rule.__dict__ for rule in self.errors],
        }


# ------------------------------------------------------------------------------------------
# Watch sessions


class _WatchSession:
    def __init__(
        self,
        store: Store,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> None:
        self.store = store
        self.rt = rt
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self.closed = False
        self.abrupt = False

    def _match(self, obj: Mapping[str, Any] | None) -> bool:
        return obj is not None and self.store.matches(obj, self.namespace, self.labels, self.fields)

    def transform(self, ev: WatchEvent) -> tuple[str, dict[str, Any]] | None:
        if ev.rtype != self.rt.key:
            return None
        if ev.type == "ADDED":
            return ("ADDED", ev.obj) if self._match(ev.obj) else None
        if ev.type == "DELETED":
            return ("DELETED", ev.obj) if self._match(ev.old or ev.obj) else None
        new_ok, old_ok = self._match(ev.obj), self._match(ev.old)
        if new_ok and old_ok:
            return ("MODIFIED", ev.obj)
        if new_ok:
            return ("ADDED", ev.obj)
        if old_ok:
            return ("DELETED", ev.obj)
        return None

    def on_event(self, ev: WatchEvent) -> None:
        if self.closed:
            return
        item = self.transform(ev)
        if item is not None:
            self.queue.put_nowait(item)

    def close(self, abrupt: bool = False) -> None:
        if not self.closed:
            self.closed = True
            self.abrupt = abrupt
            self.queue.put_nowait(None)


# ------------------------------------------------------------------------------------------
# Request handler


def deleted_status(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": meta.get("name"), "group": rt.group, "kind": rt.plural, "uid": meta.get("uid")},
    }


def _status_line_reason(code: int) -> str | None:
    import http

    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


class ApiHandler(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    fk: FakeKubeServer
    _watch: _WatchSession | None

    def initialize(self, server: FakeKubeServer) -> None:
        self.fk = server
        self._watch = None

    def compute_etag(self) -> str | None:
        return None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors raised by tornado itself (e.g. unsupported HTTP methods) as Status too."""
        err = ApiError(status_code, self._reason or "error")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(err.status()))

    def check_xsrf_cookie(self) -> None:
        return None

    def on_connection_close(self) -> None:
        if self._watch is not None:
            self._watch.close()

    async def get(self, *args: str) -> None:
        await self._handle()

    async def head(self, *args: str) -> None:
        await self._handle()

    async def post(self, *args: str) -> None:
        await self._handle()

    async def put(self, *args: str) -> None:
        await self._handle()

    async def patch(self, *args: str) -> None:
        await self._handle()

    async def delete(self, *args: str) -> None:
        await self._handle()

    async def options(self, *args: str) -> None:
        await self._handle()

    # -- helpers -------------------------------------------------------------------------------

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.request.query_arguments.get(name)
        if not values:
            return default
        return values[-1].decode("utf-8", "replace")

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "").lower() in ("1", "true", "yes")

    def send_json(self, code: int, obj: Any) -> None:
        self.set_status(code, _status_line_reason(code))
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-cache, private")
        self.finish(json.dumps(obj))

    def send_error_status(self, err: ApiError) -> None:
        for k, v in err.headers.items():
            self.set_header(k, v)
        self.send_json(err.code, err.status())

    def body_json(self) -> Any:
        if not self.request.body:
            return None
        try:
            return json.loads(self.request.body)
        except ValueError:
            ctype = self.request.headers.get("Content-Type", "")
            if "yaml" in ctype:
                try:
                    return yaml.safe_load(self.request.body)
                except yaml.YAMLError as exc:
                    raise bad_request(f"invalid YAML body: {exc}") from None
            raise bad_request(
                "the object provided is unrecognized (must be of type JSON): invalid JSON body"
            ) from None

    def authorized(self) -> bool:
        tokens = self.fk.tokens
        if tokens is None:
            return True
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and token.strip() in tokens

    # -- main entry ----------------------------------------------------------------------------

    async def _handle(self) -> None:
        path = self.request.path
        if path == "/_fake" or path.startswith("/_fake/"):
            try:
                self.fk._admin(self)
            except ApiError as err:
                self.send_error_status(err)
            except (KeyError, TypeError, ValueError) as exc:
                self.send_error_status(bad_request(f"bad admin request: {exc!r}"))
            return
        faults = self.fk.faults
        try:
            if faults.api_down() and faults.api_down_mode == "503":
                # No Retry-After: urllib3 would silently retry 503s that carry one.
                raise ApiError(
                    503, "the server is currently unable to handle the request", "ServiceUnavailable"
                )
            rule = faults.take_error(self.request.method or "GET", path)
            if rule is not None:
                headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after else None
                raise ApiError(rule.code, rule.message or f"injected fault {rule.code}", headers=headers)
            if faults.latency > 0:
                await asyncio.sleep(faults.latency)
            if not self.authorized():
                raise ApiError(401, "Unauthorized", "Unauthorized")
            self.fk.request_count += 1
            await self._route()
        except ApiError as err:
            if not self._finished:
                self.send_error_status(err)
        except tornado.iostream.StreamClosedError:
            pass
        except Exception as exc:  # pragma: no cover - bug in the fake
            log.exception("internal error handling %s %s", self.request.method, path)
            if not self._finished:
                self.send_error_status(ApiError(500, f"fakekube internal error: {exc!r}"))

    async def _route(self) -> None:
        raw = self.request.path
        segs = [urllib.parse.unquote(s) for s in raw.split("/")[1:]]
        if segs and segs[-1] == "":
            segs = segs[:-1]
        store = self.fk.store
        method = self.request.method or "GET"
        if segs == ["version"]:
            return self.send_json(200, K8S_VERSION)
        if segs and segs[0] in ("healthz", "livez", "readyz"):
            self.set_header("Content-Type", "text/plain")
            self.finish("ok")
            return None
        if segs == ["api"]:
            return self.send_json(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.fk.port}"}
                    ],
                },
            )
        if segs == ["apis"]:
            return self.send_json(200, self.fk.discovery_groups())
        if segs == ["api", "v1"]:
            return self.send_json(200, self.fk.discovery_resources("", "v1"))
        if len(segs) == 2 and segs[0] == "apis":
            group_doc = self.fk.discovery_group(segs[1])
            if group_doc is None:
                raise _path_not_found()
            return self.send_json(200, group_doc)
        if len(segs) == 3 and segs[0] == "apis":
            doc = self.fk.discovery_resources(segs[1], segs[2])
            if not doc["resources"]:
                raise _path_not_found()
            return self.send_json(200, doc)
        if len(segs) >= 3 and segs[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", segs[2:]
        elif len(segs) >= 4 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise _path_not_found()

        namespace: str | None = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        plural, name = rest[0], (rest[1] if len(rest) > 1 else None)
        sub = rest[2] if len(rest) > 2 else None
        tail = rest[3:]
        if group == EVENTS_GROUP:
            if version != "v1" or plural != "events" or sub is not None:
                raise _path_not_found()
            if name is not None and namespace is None:
                raise _path_not_found()
            return await self._events_v1(namespace, name)
        rt = store.lookup(group, version, plural)
        if rt is None:
            raise _path_not_found()
        if namespace is not None and not rt.namespaced:
            raise _path_not_found()
        if name is not None and rt.namespaced and namespace is None:
            raise _path_not_found()
        ns = namespace or ""

        if name is None:
            if method in ("GET", "HEAD"):
                if self.flag("watch"):
                    return await self._watch_collection(rt, namespace)
                return self._list(rt, namespace)
            if method == "POST":
                if rt.namespaced and namespace is None:
                    raise ApiError(
                        405,
                        "the server does not allow this method on the requested resource",
                        "MethodNotAllowed",
                    )
                obj = store.create(rt, ns, self.body_json(), dry_run=self._dry_run())
                return self.send_json(201, obj)
            if method == "DELETE":
                labels = LabelSelector.parse(self.arg("labelSelector"))
                fields = FieldSelector.parse(self.arg("fieldSelector"), rt.plural, rt.custom)
                items = store.delete_collection(rt, namespace, labels, fields, self.body_json())
                return self.send_json(200, store.list_object(rt, items))
            raise _method_not_allowed()

        if sub == "proxy" and rt.key in ("services", "pods"):
            return await self.fk._proxy(self, rt, ns, name, "/".join(tail))
        if sub == "log" and rt.key == "pods" and method == "GET":
            store.get(rt, ns, name)
            self.set_header("Content-Type", "text/plain")
            self.finish(self.fk.pod_logs.get((ns, name), ""))
            return None
        if sub not in (None, "status") or (sub == "status" and not rt.status_subresource):
            raise _path_not_found()
        if tail:
            raise _path_not_found()
        if method in ("GET", "HEAD"):
            return self.send_json(200, store.get(rt, ns, name))
        if method == "PUT":
            obj = store.update(rt, ns, name, self.body_json(), subresource=sub, dry_run=self._dry_run())
            return self.send_json(200, obj)
        if method == "PATCH":
            obj, created = store.patch(
                rt,
                ns,
                name,
                self.request.headers.get("Content-Type", ""),
                self.request.body,
                subresource=sub,
                field_manager=self.arg("fieldManager"),
                force=self.flag("force"),
                dry_run=self._dry_run(),
            )
            return self.send_json(201 if created else 200, obj)
        if method == "DELETE" and sub is None:
            options = self.body_json() or {}
            for key in ("propagationPolicy", "gracePeriodSeconds"):
                value = self.arg(key)
                if value is not None:
                    options[key] = int(value) if key == "gracePeriodSeconds" else value
            obj, gone = store.delete(rt, ns, name, options, dry_run=self._dry_run())
            code = 202 if (not gone and options.get("propagationPolicy") == "Foreground") else 200
            if gone and rt.custom:
                # A custom resource deleted at once is answered with a Status, not the object
                # (core kinds such as pods and services return the object).
                obj = deleted_status(rt, obj)
            return self.send_json(code, obj)
        raise _method_not_allowed()

    def _dry_run(self) -> bool:
        return self.arg("dryRun") == "All"

    def _selectors(self, rt: ResourceType, v1_events: bool = False) -> tuple[LabelSelector, FieldSelector]:
        field_text = self.arg("fieldSelector")
        if v1_events and field_text:
            field_text = _v1_event_fields(field_text)
        return (
            LabelSelector.parse(self.arg("labelSelector")),
            FieldSelector.parse(field_text, rt.plural, rt.custom),
        )

    async def _events_v1(self, namespace: str | None, name: str | None) -> None:
        """events.k8s.io/v1: a view of the core/v1 events (same storage, converted)."""
        store = self.fk.store
        rt = store.types["events"]
        method = self.request.method or "GET"
        ns = namespace or ""
        if name is None:
            if method in ("GET", "HEAD"):
                if self.flag("watch"):
                    return await self._watch_collection(rt, namespace, v1_events=True)
                return self._list(rt, namespace, v1_events=True)
            if method == "POST" and namespace is not None:
                obj = store.create(rt, ns, event_v1_to_core(self.body_json()), dry_run=self._dry_run())
                return self.send_json(201, event_core_to_v1(obj))
            raise _method_not_allowed()
        if method in ("GET", "HEAD"):
            return self.send_json(200, event_core_to_v1(store.get(rt, ns, name)))
        if method == "PUT":
            obj = store.update(rt, ns, name, event_v1_to_core(self.body_json()), dry_run=self._dry_run())
            return self.send_json(200, event_core_to_v1(obj))
        if method == "DELETE":
            obj, _gone = store.delete(rt, ns, name, self.body_json() or {}, dry_run=self._dry_run())
            return self.send_json(200, event_core_to_v1(obj))
        raise _method_not_allowed()

    def _list(self, rt: ResourceType, namespace: str | None, v1_events: bool = False) -> None:
        store = self.fk.store
        labels, fields = self._selectors(rt, v1_events)
        items = store.select(rt, namespace, labels, fields)
        limit = int(self.arg("limit") or 0)
        cont = self.arg("continue")
        list_rv = store.resource_version
        if cont:
            try:
                token = json.loads(urllib.parse.unquote(cont))
                start_key, list_rv = token["start"], int(token["rv"])
            except (ValueError, KeyError, TypeError):
                raise bad_request("invalid continue token") from None
            if list_rv < store.compacted_rv:
                raise ApiError(
                    410,
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter.",
                    "Expired",
                )
            items = [
                it
                for it in items
                if [it["metadata"].get("namespace", ""), it["metadata"]["name"]] > start_key
            ]
        doc = store.list_object(rt, items)
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            doc["items"] = items[:limit]
            doc["metadata"]["continue"] = urllib.parse.quote(
                json.dumps({"start": [last.get("namespace", ""), last["name"]], "rv": list_rv})
            )
            doc["metadata"]["remainingItemCount"] = len(items) - limit
            doc["metadata"]["resourceVersion"] = str(list_rv)
        if v1_events:
            doc["apiVersion"] = f"{EVENTS_GROUP}/v1"
            doc["items"] = [event_core_to_v1(it) for it in doc["items"]]
        self.send_json(200, doc)

    async def _watch_collection(
        self, rt: ResourceType, namespace: str | None, v1_events: bool = False
    ) -> None:
        store = self.fk.store
        labels, fields = self._selectors(rt, v1_events)

        def line(etype: str, obj: dict[str, Any]) -> str:
            if v1_events and etype in ("ADDED", "MODIFIED", "DELETED"):
                obj = event_core_to_v1(obj)
            return json.dumps({"type": etype, "object": obj}) + "\n"

        rv_arg = self.arg("resourceVersion") or ""
        timeout_arg = self.arg("timeoutSeconds")
        timeout = float(timeout_arg) if timeout_arg else self.fk.default_watch_timeout
        bookmarks = self.flag("allowWatchBookmarks")
        send_initial = self.flag("sendInitialEvents")
        session = _WatchSession(store, rt, namespace, labels, fields)
        initial: list[tuple[str, dict[str, Any]]] = []
        error: ApiError | None = None
        if rv_arg not in ("", "0") and not rv_arg.isdigit():
            raise bad_request(f'invalid resource version "{rv_arg}"')
        if rv_arg not in ("", "0") and self.fk.faults.take_410():
            error = ApiError(410, f"too old resource version: {rv_arg}", "Expired")
        elif rv_arg in ("", "0") or send_initial:
            initial = [("ADDED", o) for o in store.select(rt, namespace, labels, fields)]
        else:
            try:
                events = store.events_since(int(rv_arg), rt.key)
            except ApiError as err:
                error = err
            else:
                for ev in events:
                    item = session.transform(ev)
                    if item is not None:
                        initial.append(item)
        unsubscribe: Callable[[], None] | None = None
        if error is None:
            unsubscribe = store.subscribe(session.on_event)
            self._watch = session
            self.fk._watches.add(session)
        try:
            self.set_status(200)
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "no-cache, private")
            if error is not None:
                self.write(json.dumps({"type": "ERROR", "object": error.status()}) + "\n")
                await self.flush()
                self.finish()
                return
            for etype, obj in initial:
                self.write(line(etype, obj))
            if send_initial and bookmarks:
                self.write(json.dumps(self._bookmark(rt, initial_end=True, v1_events=v1_events)) + "\n")
            await self.flush()
            deadline = time.monotonic() + timeout if timeout else None
            interval = self.fk.bookmark_interval
            next_bookmark = time.monotonic() + interval
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                wait = next_bookmark - now if bookmarks else 3600.0
                if deadline is not None:
                    wait = min(wait, deadline - now)
                try:
                    item = await asyncio.wait_for(session.queue.get(), timeout=max(wait, 0.0))
                except asyncio.TimeoutError:
                    if bookmarks and time.monotonic() >= next_bookmark:
                        self.write(json.dumps(self._bookmark(rt, v1_events=v1_events)) + "\n")
                        await self.flush()
                        next_bookmark = time.monotonic() + interval
                    continue
                if item is None:
                    break
                chunk = [item]
                while not session.queue.empty():
                    extra = session.queue.get_nowait()
                    if extra is None:
                        session.queue.put_nowait(None)
                        break
                    chunk.append(extra)
                self.write("".join(line(t, o) for t, o in chunk))
                await self.flush()
        except tornado.iostream.StreamClosedError:
            return
        finally:
            if unsubscribe is not None:
                unsubscribe()
            self.fk._watches.discard(session)
            self._watch = None
        if session.abrupt:
            stream = getattr(self.request.connection, "stream", None)
            if stream is not None:
                with contextlib.suppress(Exception):
                    sock = stream.socket
                    if sock is not None:
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                        )
                stream.close()
            return
        if not self._finished:
            self.finish()

    def _bookmark(
        self, rt: ResourceType, initial_end: bool = False, v1_events: bool = False
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(self.fk.store.resource_version)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        api_version = f"{EVENTS_GROUP}/v1" if v1_events else rt.api_version
        return {
            "type": "BOOKMARK",
            "object": {"kind": rt.kind, "apiVersion": api_version, "metadata": meta},
        }


EVENTS_GROUP = "events.k8s.io"
# core/v1 Event field <-> events.k8s.io/v1 Event field
_EVENT_FIELDS = (
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
)
_EVENT_SAME = ("metadata", "eventTime", "series", "reportingInstance", "action", "reason", "related", "type")


def event_core_to_v1(obj: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "Event", "apiVersion": f"{EVENTS_GROUP}/v1"}
    for key in _EVENT_SAME:
        if obj.get(key) is not None:
            out[key] = obj[key]
    for core_key, v1_key in _EVENT_FIELDS:
        if obj.get(core_key) not in (None, {}):
            out[v1_key] = obj[core_key]
    return out


def event_v1_to_core(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise bad_request("the request body must be a JSON object")
    out: dict[str, Any] = {"kind": "Event", "apiVersion": "v1"}
    for key in _EVENT_SAME:
        if obj.get(key) is not None:
            out[key] = obj[key]
    for core_key, v1_key in _EVENT_FIELDS:
        if obj.get(v1_key) is not None:
            out[core_key] = obj[v1_key]
    return out


def _v1_event_fields(text: str) -> str:
    """Translate an events.k8s.io field selector to the core/v1 field names."""
    out = []
    for term in text.split(","):
        for core_key, v1_key in _EVENT_FIELDS:
            if term.startswith(v1_key + ".") or re.match(rf"^{v1_key}\s*(!=|==|=)", term):
                term = core_key + term[len(v1_key) :]
                break
        out.append(term)
    return ",".join(out)


def _path_not_found() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", "NotFound", {})


def _method_not_allowed() -> ApiError:
    return ApiError(
        405, "the server does not allow this method on the requested resource", "MethodNotAllowed"
    )


# ------------------------------------------------------------------------------------------
# The server


class FakeKubeServer:
    """A fake Kubernetes API server with a simulated KubeRay operator.

    Thread model: all state lives on the server's event loop. From other threads use the
    public methods (they marshal onto the loop) or :meth:`call`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: Iterable[str] | None = (DEFAULT_TOKEN,),
        operator: bool = True,
        operator_config: OperatorConfig | None = None,
        history_size: int = 2000,
        bookmark_interval: float = 1.0,
        default_watch_timeout: float | None = None,
        crd_dir: Path | str = DEFAULT_CRD_DIR,
        strict_namespaces: bool = True,
        namespaces: Iterable[str] = ("default", "kube-system", "kube-public"),
    ) -> None:
        self.host = host
        self.port = port
        self.tokens: set[str] | None = set(tokens) if tokens is not None else None
        self.faults = Faults()
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.request_count = 0
        self.pod_logs: dict[tuple[str, str], str] = {}
        self._upstreams: dict[tuple[str, str, str], dict[str | None, str]] = {}
        self._history_size = history_size
        self._crd_dir = Path(crd_dir)
        self._strict_namespaces = strict_namespaces
        self._initial_namespaces = tuple(namespaces)
        config = operator_config or OperatorConfig()
        if not operator:
            config.enabled = False
        self._operator_config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http: tornado.httpserver.HTTPServer | None = None
        self._app: tornado.web.Application | None = None
        self._watches: set[_WatchSession] = set()
        self._reopen_handle: asyncio.TimerHandle | None = None
        self._http_client: tornado.httpclient.AsyncHTTPClient | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self.store: Store
        self.operator: RayOperator

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str | None:
        if not self.tokens:
            return None
        return DEFAULT_TOKEN if DEFAULT_TOKEN in self.tokens else sorted(self.tokens)[0]

    async def start_async(self) -> FakeKubeServer:
        """Start on the running asyncio loop."""
        self._loop = asyncio.get_running_loop()
        self.store = Store(
            crd_dir=self._crd_dir,
            history_size=self._history_size,
            strict_namespaces=self._strict_namespaces,
            scheduler=Scheduler(self._loop),
            initial_namespaces=self._initial_namespaces,
        )
        self.operator = RayOperator(self.store, self._loop, self._operator_config)
        self.operator.start()
        self._app = tornado.web.Application(
            [(r"/(.*)", ApiHandler, {"server": self})], log_function=self._log_request
        )
        self._listen()
        return self

    @staticmethod
    def _log_request(handler: tornado.web.RequestHandler) -> None:
        req = handler.request
        log.debug("%s %s -> %s", req.method, req.uri, handler.get_status())

    def _listen(self) -> None:
        assert self._app is not None
        sockets = tornado.netutil.bind_sockets(self.port, self.host, family=socket.AF_INET)
        self.port = sockets[0].getsockname()[1]
        self._http = tornado.httpserver.HTTPServer(self._app, idle_connection_timeout=60)
        self._http.add_sockets(sockets)

    def _stop_listening(self) -> tornado.httpserver.HTTPServer | None:
        """Close the listening socket and every open connection now (connection refused /
        reset from here on); returns the server for an async clean-up."""
        http, self._http = self._http, None
        if http is None:
            return None
        http.stop()
        for session in list(self._watches):
            session.close(abrupt=True)
        for conn in list(getattr(http, "_connections", ())):
            stream = getattr(conn, "stream", None)
            if stream is not None:
                stream.close()
        return http

    async def _close_listener(self) -> None:
        http = self._stop_listening()
        if http is not None:
            await asyncio.sleep(0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(http.close_all_connections(), timeout=2)

    async def stop_async(self) -> None:
        if self._reopen_handle is not None:
            self._reopen_handle.cancel()
            self._reopen_handle = None
        self.operator.stop()
        for session in list(self._watches):
            session.close()
        await asyncio.sleep(0)
        await self._close_listener()
        if self._http_client is not None:
            self._http_client.close()
            self._http_client = None

    def start(self, timeout: float = 30.0) -> FakeKubeServer:
        """Start in a background thread with its own event loop."""
        started = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:  # pragma: no cover
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name=f"fakekube-{id(self):x}", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise RuntimeError("fake kube server did not start")
        if failure:
            raise failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self.stop_async(), loop)
        with contextlib.suppress(Exception):
            fut.result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> FakeKubeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- running code on the loop -----------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the server loop and return its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("server not started")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return fn(*args, **kwargs)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(30)

    def wait_for(
        self, predicate: Callable[[FakeKubeServer], T], timeout: float = 10.0, interval: float = 0.02
    ) -> T:
        """Poll ``predicate(server)`` (run on the loop) until it returns a truthy value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.call(predicate, self)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(interval)

    # -- client helpers ---------------------------------------------------------------------------

    def configuration(self, token: str | _Default | None = DEFAULT) -> kubernetes.client.Configuration:
        """A client Configuration for this server; ``token=None`` sends no token."""
        import kubernetes.client

        cfg = kubernetes.client.Configuration()
        cfg.host = self.url
        tok = self.token if isinstance(token, _Default) else token
        if tok:
            cfg.api_key = {"authorization": f"Bearer {tok}"}
        return cfg

    def api_client(self, token: str | _Default | None = DEFAULT) -> kubernetes.client.ApiClient:
        import kubernetes.client

        return kubernetes.client.ApiClient(self.configuration(token))

    def kubeconfig(self, namespace: str = "default", token: str | None = None) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fakekube", "cluster": {"server": self.url}}],
            "users": [{"name": "fakekube", "user": {"token": token or self.token or "none"}}],
            "contexts": [
                {
                    "name": "fakekube",
                    "context": {"cluster": "fakekube", "user": "fakekube", "namespace": namespace},
                }
            ],
            "current-context": "fakekube",
            "preferences": {},
        }

    def write_kubeconfig(
        self, path: str | Path, namespace: str = "default", token: str | None = None
    ) -> Path:
        p = Path(path)
        p.write_text(yaml.safe_dump(self.kubeconfig(namespace, token), sort_keys=False))
        return p

    # -- state shortcuts (thread-safe) -------------------------------------------------------------

    def _rt(self, kind: str) -> ResourceType:
        """``kind`` is a plural (``pods``, ``rayclusters``) or ``group/plural``."""
        for rt in self.store.types.values():
            if kind in (rt.key, rt.plural, rt.kind):
                return rt
        raise KeyError(kind)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        def run() -> dict[str, Any] | None:
            try:
                return self.store.get(self._rt(kind), namespace, name)
            except ApiError:
                return None

        return self.call(run)

    def list_objects(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return self.call(
            lambda: self.store.select(self._rt(kind), namespace, LabelSelector.parse(label_selector))
        )

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call(lambda: self.store.create(self._rt(kind), namespace, body))

    def delete(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.call(lambda: self.store.delete(self._rt(kind), namespace, name)[0])

    def apply_manifest(
        self, docs: Iterable[dict[str, Any]], namespace: str = "default"
    ) -> list[dict[str, Any]]:
        """Create each document (any supported kind); returns the created objects."""
        out = []
        for doc in docs:
            if not doc:
                continue
            rt = self._rt_for_doc(doc)
            ns = (doc.get("metadata") or {}).get("namespace") or namespace
            out.append(self.create(rt.key, ns if rt.namespaced else "", doc))
        return out

    def _rt_for_doc(self, doc: Mapping[str, Any]) -> ResourceType:
        api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        for rt in self.store.types.values():
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        raise KeyError(f"{api_version} {kind} is not served by the fake")

    def compact(self) -> None:
        """Drop the watch history: every watch from an older resourceVersion gets 410."""
        self.call(self.store.compact)

    # -- simulation controls (thread-safe) -----------------------------------------------------------

    def configure_operator(self, **changes: Any) -> OperatorConfig:
        """Change :class:`OperatorConfig` fields (``enabled``, ``pod_ready_delay``,
        ``fail_pod_creation``, ``rayjob_lifecycle``...)."""
        return self.call(self.operator.configure, **changes)

    def release_pods(self, namespace: str | None = None, name: str | None = None) -> int:
        """Start pods held Pending by ``pod_ready_delay=None``; returns how many."""
        return self.call(self.operator.pods.release, namespace, name)

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> None:
        """Flip a running pod's Ready condition (readiness probe failing / recovering)."""
        self.call(self.operator.pods.set_ready, namespace, name, ready)

    def fail_pod(self, namespace: str, name: str, reason: str = "Error") -> None:
        """Terminate a pod (phase Failed); the operator replaces Ray pods."""
        self.call(self.operator.pods.fail, namespace, name, reason)

    def set_pod_log(self, namespace: str, name: str, text: str) -> None:
        """What ``GET .../pods/{name}/log`` returns."""
        self.pod_logs[(namespace, name)] = text

    # -- faults -----------------------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        self.faults.latency = seconds

    def force_410(self, count: int = 1) -> None:
        self.faults.force_410 = count

    def inject_error(
        self,
        code: int,
        count: int = 1,
        method: str | None = None,
        path: str | None = None,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """The next ``count`` API requests matching ``method``/``path`` (regex) fail with a
        ``code`` Status."""
        self.faults.errors.append(ErrorRule(code, count, method, path, message, retry_after))

    def drop_watches(self, graceful: bool = False) -> int:
        """Close every open watch stream (abruptly unless ``graceful``); returns how many."""

        def run() -> int:
            sessions = list(self._watches)
            for s in sessions:
                s.close(abrupt=not graceful)
            return len(sessions)

        return self.call(run)

    def open_watch_count(self) -> int:
        return self.call(lambda: len(self._watches))

    def api_down(self, seconds: float, mode: str = "503") -> None:
        """Make the API unavailable for ``seconds``: ``503`` answers every request with a
        503 Status; ``refuse`` closes the listening socket (connection refused) and
        reopens it on the same port afterwards. Open watches are dropped in both modes."""
        if mode not in ("503", "refuse"):
            raise ValueError("mode must be '503' or 'refuse'")
        self.call(self._api_down_in_loop, seconds, mode)

    def api_up(self) -> None:
        """End an ``api_down`` period now."""
        self.faults.api_down_until = 0.0

        def run() -> None:
            if self._http is None:
                if self._reopen_handle is not None:
                    self._reopen_handle.cancel()
                self._reopen()

        self.call(run)

    def _reopen(self) -> None:
        self._reopen_handle = None
        if self._http is None:
            try:
                self._listen()
            except OSError:  # port still busy: retry shortly
                assert self._loop is not None
                self._reopen_handle = self._loop.call_later(0.1, self._reopen)

    def clear_faults(self) -> None:
        self.faults.latency = 0.0
        self.faults.force_410 = 0
        self.faults.errors.clear()
        if self.faults.api_down():
            self.api_up()

    # -- proxy ------------------------------------------------------------------------------------

    def set_proxy_upstream(
        self,
        namespace: str,
        service: str,
        url: str | None,
        port: str | int | None = None,
        kind: str = "services",
    ) -> None:
        """Forward ``/api/v1/namespaces/{ns}/services/{service}[:port]/proxy/...`` to
        ``url`` (e.g. a local fake Ray dashboard). ``port`` None matches any port.
        ``url=None`` removes the mapping. ``kind="pods"`` does the same for the pod proxy."""
        key = (kind, namespace, service)
        ports = self._upstreams.setdefault(key, {})
        pkey = None if port is None else str(port)
        if url is None:
            ports.pop(pkey, None)
        else:
            ports[pkey] = url.rstrip("/")

    def _upstream(self, kind: str, ns: str, name: str, port_keys: Iterable[str]) -> str | None:
        ports = self._upstreams.get((kind, ns, name)) or {}
        for key in port_keys:
            if key in ports:
                return ports[key]
        return ports.get(None)

    async def _proxy(self, handler: ApiHandler, rt: ResourceType, ns: str, name_spec: str, path: str) -> None:
        parts = name_spec.split(":")
        scheme = "http"
        if len(parts) == 3:
            scheme, name, port = parts
        elif len(parts) == 2 and parts[0] in ("http", "https"):
            scheme, name, port = parts[0], parts[1], ""
        elif len(parts) == 2:
            name, port = parts
        else:
            name, port = parts[0], ""
        store = self.store
        obj = store.peek(rt, ns, name)
        if obj is None:
            raise store.not_found(rt, name)
        if rt.key == "services":
            spec = obj.get("spec") or {}
            ports = spec.get("ports") or []
            chosen: dict[str, Any] | None = None
            if port:
                chosen = next(
                    (p for p in ports if p.get("name") == port or str(p.get("port")) == port),
                    None,
                )
            elif ports:
                chosen = ports[0]
            pods = self._service_endpoints(ns, obj) if chosen is not None else []
            if not pods:
                raise ApiError(503, f'no endpoints available for service "{name_spec}"', "ServiceUnavailable")
            assert chosen is not None
            keys = [str(chosen.get("name", "")), str(chosen.get("port", ""))]
            target_ip = (pods[0].get("status") or {}).get("podIP", "")
            target_port = chosen.get("targetPort", chosen.get("port"))
        else:
            status = obj.get("status") or {}
            if not status.get("podIP"):
                raise ApiError(
                    503,
                    f'pod "{name}" has no IP address assigned yet',
                    "ServiceUnavailable",
                )
            keys = [port] if port else []
            target_ip, target_port = status.get("podIP", ""), port or "80"
        upstream = self._upstream(rt.key, ns, name, keys)
        if upstream is None:
            raise ApiError(
                503,
                f"error trying to reach service: dial tcp {target_ip}:{target_port}: connect: "
                f"connection refused",
                "ServiceUnavailable",
            )
        del scheme
        url = f"{upstream}/{path}" if path else upstream + "/"
        if handler.request.query:
            url += "?" + handler.request.query
        headers = {k: v for k, v in handler.request.headers.get_all() if k.lower() not in _HOP_HEADERS}
        method = handler.request.method or "GET"
        body = handler.request.body if method in ("POST", "PUT", "PATCH", "DELETE") else None
        if method in ("POST", "PUT", "PATCH") and body is None:
            body = b""
        request = tornado.httpclient.HTTPRequest(
            url,
            method=method,
            headers=headers,
            body=body,
            follow_redirects=False,
            request_timeout=60,
            allow_nonstandard_methods=True,
            decompress_response=False,
        )
        if self._http_client is None:
            self._http_client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        try:
            resp = await self._http_client.fetch(request, raise_error=False)
        except Exception as exc:
            raise ApiError(503, f"error trying to reach service: {exc}", "ServiceUnavailable") from None
        if resp.code == 599:
            raise ApiError(503, f"error trying to reach service: {resp.error}", "ServiceUnavailable")
        handler.set_status(resp.code, resp.reason or _status_line_reason(resp.code))
        handler.clear_header("Content-Type")
        for k, v in resp.headers.get_all():
            if k.lower() not in _HOP_HEADERS and k.lower() not in ("server", "date"):
                handler.add_header(k, v)
        if resp.body:
            handler.write(resp.body)
        handler.finish()

    def _service_endpoints(self, ns: str, svc: Mapping[str, Any]) -> list[dict[str, Any]]:
        spec = svc.get("spec") or {}
        selector = spec.get("selector") or {}
        if not selector:
            return []
        publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
        sel = LabelSelector.from_match_labels(selector)
        out = []
        for pod in self.store.select(self.store.types["pods"], ns, sel, copy=False):
            meta, status = pod.get("metadata") or {}, pod.get("status") or {}
            if meta.get("deletionTimestamp") or not status.get("podIP"):
                continue
            if status.get("phase") in ("Succeeded", "Failed"):
                continue
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
            )
            if ready or publish_not_ready:
                out.append(pod)
        return out

    # -- discovery --------------------------------------------------------------------------------

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {EVENTS_GROUP: ["v1"]}
        for rt in self.store.types.values():
            if rt.group:
                versions = groups.setdefault(rt.group, [])
                if rt.version not in versions:
                    versions.append(rt.version)
        return groups

    def discovery_group(self, group: str) -> dict[str, Any] | None:
        versions = self._groups().get(group)
        if not versions:
            return None
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": gvs,
            "preferredVersion": gvs[0],
        }

    def discovery_groups(self) -> dict[str, Any]:
        groups = []
        for g in self._groups():
            doc = self.discovery_group(g)
            assert doc is not None
            doc.pop("kind")
            doc.pop("apiVersion")
            groups.append(doc)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def discovery_resources(self, group: str, version: str) -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        if (group, version) == (EVENTS_GROUP, "v1"):
            resources.append(
                {
                    "name": "events",
                    "singularName": "event",
                    "namespaced": True,
                    "kind": "Event",
                    "verbs": ["create", "delete", "get", "list", "update", "watch"],
                    "shortNames": ["ev"],
                }
            )
        for rt in self.store.types.values():
            if rt.group != group or rt.version != version:
                continue
            entry: dict[str, Any] = {
                "name": rt.plural,
                "singularName": rt.kind.lower(),
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": verbs,
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.custom:
                entry["categories"] = ["all"]
            resources.append(entry)
            if rt.status_subresource:
                resources.append(
                    {
                        "name": f"{rt.plural}/status",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
            if rt.key in ("services", "pods"):
                resources.append(
                    {
                        "name": f"{rt.plural}/proxy",
                        "singularName": "",
                        "namespaced": True,
                        "kind": f"{rt.kind}ProxyOptions",
                        "verbs": ["create", "delete", "get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # -- autoscaler hook ----------------------------------------------------------------------------

    def autoscale(
        self,
        namespace: str,
        cluster: str,
        group: str,
        replicas: int | None = None,
        workers_to_delete: list[str] | None = None,
    ) -> dict[str, Any]:
        """What the in-tree Ray autoscaler does: a JSON patch ``replace`` of
        ``/spec/workerGroupSpecs/<i>/replicas`` (capped at maxReplicas) and optionally of
        ``.../scaleStrategy`` -- a normal write that bumps resourceVersion, so a client
        holding an older copy gets 409 on its next PUT."""

        def run() -> dict[str, Any]:
            return self.operator.autoscaler_patch(namespace, cluster, group, replicas, workers_to_delete)

        return self.call(run)

    # -- admin endpoint ---------------------------------------------------------------------------

    def _admin(self, handler: ApiHandler) -> None:
        path = handler.request.path.rstrip("/")
        method = handler.request.method
        body = handler.body_json() if method == "POST" else None
        if body is not None and not isinstance(body, dict):
            raise bad_request("admin requests take a JSON object")
        body = body or {}
        if path == "/_fake/healthz":
            return handler.send_json(200, {"ok": True})
        if path == "/_fake/faults":
            if method == "POST":
                self._admin_faults(body)
            return handler.send_json(200, self.faults.as_dict())
        if path == "/_fake/operator":
            if method == "POST":
                self.operator.configure(**body)
            return handler.send_json(200, self.operator.config.as_dict())
        if path == "/_fake/upstreams" and method == "POST":
            self.set_proxy_upstream(
                body["namespace"],
                body["service"],
                body.get("url"),
                body.get("port"),
                body.get("kind", "services"),
            )
            return handler.send_json(200, {"ok": True})
        if path == "/_fake/autoscale" and method == "POST":
            obj = self.operator.autoscaler_patch(
                body.get("namespace", "default"),
                body["cluster"],
                body["group"],
                body.get("replicas"),
                body.get("workersToDelete"),
            )
            return handler.send_json(200, obj)
        if path == "/_fake/compact" and method == "POST":
            self.store.compact()
            return handler.send_json(200, {"compactedResourceVersion": self.store.compacted_rv})
        if path == "/_fake/pods" and method == "POST":
            self.operator.pods.admin(body)
            return handler.send_json(200, {"ok": True})
        if path == "/_fake/tokens" and method == "POST":
            tokens = body.get("tokens")
            self.tokens = set(tokens) if tokens is not None else None
            return handler.send_json(200, {"ok": True})
        raise _path_not_found()

    def _admin_faults(self, body: Mapping[str, Any]) -> None:
        if body.get("clear"):
            self.clear_faults()
        if "latency" in body:
            self.faults.latency = float(body["latency"])
        if "force_410" in body:
            self.faults.force_410 = int(body["force_410"])
        if body.get("drop_watches"):
            graceful = body["drop_watches"] == "graceful"
            for s in list(self._watches):
                s.close(abrupt=not graceful)
        for rule in body.get("errors") or []:
            self.faults.errors.append(
                ErrorRule(
                    int(rule["code"]),
                    int(rule.get("count", 1)),
                    rule.get("method"),
                    rule.get("path"),
                    rule.get("message"),
                    rule.get("retry_after"),
                )
            )
        down = body.get("api_down")
        if down:
            if isinstance(down, int | float):
                seconds, mode = float(down), "503"
            else:
                seconds, mode = float(down["seconds"]), str(down.get("mode", "503"))
            assert self._loop is not None
            self.faults.api_down_mode = mode
            self.faults.api_down_until = time.monotonic() + seconds
            # We are on the loop thread; delay a little so the admin response goes out first.
            self._loop.call_later(0.05, lambda: self._api_down_in_loop(seconds - 0.05, mode))

    def _api_down_in_loop(self, seconds: float, mode: str) -> None:
        self.faults.api_down_mode = mode
        self.faults.api_down_until = time.monotonic() + seconds
        if mode == "refuse":
            http = self._stop_listening()
            assert self._loop is not None
            if self._reopen_handle is not None:
                self._reopen_handle.cancel()
            self._reopen_handle = self._loop.call_later(seconds, self._reopen)
            if http is not None:
                task = asyncio.ensure_future(http.close_all_connections())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        else:
            for s in list(self._watches):
                s.close(abrupt=True)
