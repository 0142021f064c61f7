"""The fake's HTTP face: one tornado handler for every path. Each API request meets the
faults, then the bearer token check, then is routed: discovery, the service/pod proxy, pod
logs, events.k8s.io/v1, or the store's CRUD, list (selectors, pagination), watch, patch and
delete on a resource type."""

from __future__ import annotations

import http
import json
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any

import tornado.iostream
import tornado.web
import yaml

from .admin import serve_admin
from .discovery import discovery_document
from .errors import ApiError, bad_request, method_not_allowed, path_not_found
from .events_v1 import EVENTS_GROUP, event_core_to_v1, event_v1_to_core, v1_event_fields
from .selection import FieldSelector, LabelSelector
from .store import ResourceType
from .watch import WatchSession, serve_watch

if TYPE_CHECKING:
    from .server import FakeKubeServer

log = logging.getLogger("fakekube.server")


#: Built-in kinds whose immediate delete is answered with a Status too (the rest: the object).
_STATUS_ON_DELETE = {"networking.k8s.io/networkpolicies"}


def deleted_status(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": meta.get("name"), "group": rt.group, "kind": rt.plural, "uid": meta.get("uid")},
    }


def status_line_reason(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


class ApiHandler(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    fk: FakeKubeServer
    watch_session: WatchSession | None

    def initialize(self, server: FakeKubeServer) -> None:
        self.fk = server
        self.watch_session = None

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
        if self.watch_session is not None:
            self.watch_session.close()

    # -- helpers -------------------------------------------------------------------------------

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.request.query_arguments.get(name)
        if not values:
            return default
        return values[-1].decode("utf-8", "replace")

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "").lower() in ("1", "true", "yes")

    def send_json(self, code: int, obj: Any) -> None:
        self.set_status(code, status_line_reason(code))
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

    async def _handle(self, *args: str) -> None:
        path = self.request.path
        if path == "/_fake" or path.startswith("/_fake/"):
            try:
                serve_admin(self.fk, self)
            except ApiError as err:
                self.send_error_status(err)
            except (KeyError, TypeError, ValueError) as exc:
                self.send_error_status(bad_request(f"bad admin request: {exc!r}"))
            return
        try:
            await self.fk.faults.before_request(self.request.method or "GET", path)
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

    get = head = post = put = patch = delete = options = _handle

    async def _route(self) -> None:
        raw = self.request.path
        segs = [urllib.parse.unquote(s) for s in raw.split("/")[1:]]
        if segs and segs[-1] == "":
            segs = segs[:-1]
        store = self.fk.store
        if segs and segs[0] in ("healthz", "livez", "readyz"):
            self.set_header("Content-Type", "text/plain")
            self.finish("ok")
            return None
        doc = discovery_document(segs, store.types.values(), self.fk.port)
        if doc is not None:
            return self.send_json(200, doc)
        if len(segs) >= 3 and segs[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", segs[2:]
        elif len(segs) >= 4 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise path_not_found()

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
                raise path_not_found()
            if name is not None and namespace is None:
                raise path_not_found()
            return await self._events_v1(namespace, name)
        rt = store.lookup(group, version, plural)
        if rt is None:
            raise path_not_found()
        if namespace is not None and not rt.namespaced:
            raise path_not_found()
        if name is not None and rt.namespaced and namespace is None:
            raise path_not_found()
        if name is None:
            return await self._collection(rt, namespace)
        return await self._object(rt, namespace or "", name, sub, tail)

    async def _collection(self, rt: ResourceType, namespace: str | None) -> None:
        store = self.fk.store
        method = self.request.method or "GET"
        ns = namespace or ""
        if method in ("GET", "HEAD"):
            if self.flag("watch"):
                return await serve_watch(self, rt, namespace, *self._selectors(rt))
            return self._list(rt, namespace)
        if method == "POST":
            if rt.namespaced and namespace is None:
                raise method_not_allowed()
            obj = store.create(rt, ns, self.body_json(), dry_run=self._dry_run())
            return self.send_json(201, obj)
        if method == "DELETE":
            labels, fields = self._selectors(rt)
            items = store.delete_collection(rt, namespace, labels, fields, self.body_json())
            return self.send_json(200, store.list_object(rt, items))
        raise method_not_allowed()

    async def _object(self, rt: ResourceType, ns: str, name: str, sub: str | None, tail: list[str]) -> None:
        store = self.fk.store
        method = self.request.method or "GET"
        if sub == "proxy" and rt.key in ("services", "pods"):
            # The real proxy keeps a trailing slash (Ray's dashboard serves /api/jobs/, not /api/jobs).
            slash = "/" if tail and self.request.path.endswith("/") else ""
            return await self.fk.proxy.forward(self, store, rt, ns, name, "/".join(tail) + slash)
        if sub == "log" and rt.key == "pods" and method == "GET":
            store.get(rt, ns, name)
            self.set_header("Content-Type", "text/plain")
            self.finish(self.fk.pod_logs.get((ns, name), ""))
            return None
        if sub not in (None, "status") or (sub == "status" and not rt.status_subresource):
            raise path_not_found()
        if tail:
            raise path_not_found()
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
            if gone and (rt.custom or rt.key in _STATUS_ON_DELETE):
                # A custom resource deleted at once is answered with a Status, not the object
                # (core kinds such as pods and services return the object).
                obj = deleted_status(rt, obj)
            return self.send_json(code, obj)
        raise method_not_allowed()

    def _dry_run(self) -> bool:
        return self.arg("dryRun") == "All"

    def _selectors(self, rt: ResourceType, v1_events: bool = False) -> tuple[LabelSelector, FieldSelector]:
        field_text = self.arg("fieldSelector")
        if v1_events and field_text:
            field_text = v1_event_fields(field_text)
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
                    labels, fields = self._selectors(rt, v1_events=True)
                    return await serve_watch(self, rt, namespace, labels, fields, v1_events=True)
                return self._list(rt, namespace, v1_events=True)
            if method == "POST" and namespace is not None:
                obj = store.create(rt, ns, event_v1_to_core(self.body_json()), dry_run=self._dry_run())
                return self.send_json(201, event_core_to_v1(obj))
            raise method_not_allowed()
        if method in ("GET", "HEAD"):
            return self.send_json(200, event_core_to_v1(store.get(rt, ns, name)))
        if method == "PUT":
            obj = store.update(rt, ns, name, event_v1_to_core(self.body_json()), dry_run=self._dry_run())
            return self.send_json(200, event_core_to_v1(obj))
        if method == "DELETE":
            obj, _gone = store.delete(rt, ns, name, self.body_json() or {}, dry_run=self._dry_run())
            return self.send_json(200, event_core_to_v1(obj))
        raise method_not_allowed()

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
