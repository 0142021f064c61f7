"""In-memory object store with Kubernetes API semantics.

Everything here runs on one thread (the server's event loop): no locks. Listeners are
called synchronously, in commit order, after each write; a listener must not expect to
see its own writes re-entrantly (re-entrant writes are queued and dispatched in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    invalid,
    not_found,
    precondition_failed,
    unsupported_media_type,
)
from .kinds import KindStrategies, metadata_causes
from .objects import meta_of
from .patches import jcopy, json_equal, json_patch, merge_patch, strategic_merge
from .schema import DEFAULT_CRD_DIR, Cause, CrdSchema, crd_schema
from .selection import FieldSelector, LabelSelector

log = logging.getLogger("fakekube.store")

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def rfc3339(ts: _dt.datetime | None = None) -> str:
    return (ts or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(ts: _dt.datetime | None = None) -> str:
    return (ts or now()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(_NAME_ALPHABET) for _ in range(n))


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False
    crd_file: str | None = None  # set for custom resources
    short_names: tuple[str, ...] = ()
    name_rule: str = "subdomain"  # subdomain | label | dns1035

    @property
    def custom(self) -> bool:
        return self.crd_file is not None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}" if self.group else self.plural

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


CORE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", False, True, None, ("ns",), "label"),
    ResourceType("", "v1", "pods", "Pod", True, True, None, ("po",)),
    ResourceType("", "v1", "services", "Service", True, True, None, ("svc",), "dns1035"),
    ResourceType("", "v1", "events", "Event", True, False, None, ("ev",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, False, None, ("cm",)),
    ResourceType("", "v1", "secrets", "Secret", True, False, None, ()),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, False, None, ("sa",)),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, False, None,
                 ("netpol",)),
)  # fmt: skip

RAY_TYPES: tuple[ResourceType, ...] = (
    ResourceType("ray.io", "v1", "rayclusters", "RayCluster", True, True,
                 "ray.io_rayclusters.yaml", ()),
    ResourceType("ray.io", "v1", "rayjobs", "RayJob", True, True, "ray.io_rayjobs.yaml", ()),
    ResourceType("ray.io", "v1", "rayservices", "RayService", True, True,
                 "ray.io_rayservices.yaml", ()),
)  # fmt: skip

# Kinds whose objects start life with metadata.generation (and bump it on spec changes).
_GENERATION_KINDS = {"pods", "networking.k8s.io/networkpolicies"}


@dataclass
class WatchEvent:
    type: str  # ADDED | MODIFIED | DELETED
    rtype: str  # ResourceType.key
    obj: dict[str, Any]  # snapshot; never mutated after creation
    old: dict[str, Any] | None
    rv: int


Listener = Callable[[WatchEvent], None]


@dataclass
class Scheduler:
    """Deferral hooks; the server passes its event loop, unit use runs things inline."""

    loop: asyncio.AbstractEventLoop | None = None

    def soon(self, fn: Callable[[], None]) -> None:
        if self.loop is not None:
            self.loop.call_soon(fn)
        else:
            fn()

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        if self.loop is not None:
            self.loop.call_later(max(0.0, delay), fn)
        else:
            fn()


def _spec_part(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _without_rv(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    meta = dict(meta_of(obj))
    meta.pop("resourceVersion", None)
    out["metadata"] = meta
    return out


class Store:
    """The fake cluster state: typed collections, a global resourceVersion, bounded
    history of changes for watches, generic garbage collection of owned objects."""

    START_RV = 1000

    def __init__(
        self,
        *,
        crd_dir: Path | str = DEFAULT_CRD_DIR,
        history_size: int = 2000,
        strict_namespaces: bool = True,
        scheduler: Scheduler | None = None,
        initial_namespaces: Iterable[str] = ("default", "kube-system", "kube-public"),
    ) -> None:
        self.crd_dir = Path(crd_dir)
        self.history_size = history_size
        self.strict_namespaces = strict_namespaces
        self.scheduler = scheduler or Scheduler()
        self.types: dict[str, ResourceType] = {}
        for rt in (*CORE_TYPES, *RAY_TYPES):
            self.types[rt.key] = rt
        self._objs: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in self.types}
        self._rv = self.START_RV
        self._history: deque[WatchEvent] = deque()
        self.compacted_rv = self._rv
        self._listeners: list[Listener] = []
        self._queue: deque[WatchEvent] = deque()
        self._dispatching = False
        self.kinds = KindStrategies()
        # hook: (rtype, obj, requested_grace) -> seconds to keep a deleted object around
        # with deletionTimestamp before it disappears (pods with a kubelet); None = now.
        self.graceful_delete: Callable[[ResourceType, dict[str, Any], int | None], float | None]
        self.graceful_delete = lambda rt, obj, grace: None
        for ns in initial_namespaces:
            self.create(self.types["namespaces"], "", {"metadata": {"name": ns}})

    # -- type lookup -----------------------------------------------------------------------

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        rt = self.types.get(f"{group}/{plural}" if group else plural)
        if rt is None or rt.version != version:
            return None
        return rt

    def schema_for(self, rt: ResourceType) -> CrdSchema | None:
        if not rt.crd_file:
            return None
        return crd_schema(self.crd_dir / rt.crd_file, rt.version)

    @property
    def resource_version(self) -> int:
        return self._rv

    # -- listeners & history --------------------------------------------------------------

    def subscribe(self, fn: Listener) -> Callable[[], None]:
        self._listeners.append(fn)

        def unsubscribe() -> None:
            if fn in self._listeners:
                self._listeners.remove(fn)

        return unsubscribe

    def _emit(self, ev: WatchEvent) -> None:
        self._history.append(ev)
        while len(self._history) > self.history_size:
            dropped = self._history.popleft()
            self.compacted_rv = dropped.rv
        self._queue.append(ev)
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._queue:
                item = self._queue.popleft()
                for fn in list(self._listeners):
                    try:
                        fn(item)
                    except Exception:  # pragma: no cover - listener bugs must not kill writes
                        log.exception("store listener failed")
        finally:
            self._dispatching = False

    def compact(self) -> None:
        """Forget all history (like an etcd compaction at the current revision)."""
        self._history.clear()
        self.compacted_rv = self._rv

    def events_since(self, rv: int, rtype: str | None = None) -> list[WatchEvent]:
        """Changes after ``rv``; raises 410 Expired when they are no longer retained."""
        if rv < self.compacted_rv:
            raise ApiError(
                410,
                f"too old resource version: {rv} ({self.compacted_rv + 1})",
                "Expired",
            )
        return [e for e in self._history if e.rv > rv and (rtype is None or e.rtype == rtype)]

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    # -- reads ------------------------------------------------------------------------------

    def _key(self, rt: ResourceType, namespace: str, name: str) -> tuple[str, str]:
        return (namespace if rt.namespaced else "", name)

    def peek(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object itself (do not mutate) or None."""
        return self._objs[rt.key].get(self._key(rt, namespace, name))

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.peek(rt, namespace, name)
        if obj is None:
            raise not_found(rt, name)
        return jcopy(obj)

    def select(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
        *,
        copy: bool = True,
    ) -> list[dict[str, Any]]:
        items = []
        for (ns, _name), obj in sorted(self._objs[rt.key].items()):
            if namespace and rt.namespaced and ns != namespace:
                continue
            if labels and not labels.matches(meta_of(obj).get("labels")):
                continue
            if fields and not fields.matches(obj):
                continue
            items.append(jcopy(obj) if copy else obj)
        return items

    def matches(
        self,
        obj: Mapping[str, Any],
        namespace: str | None,
        labels: LabelSelector | None,
        fields: FieldSelector | None,
    ) -> bool:
        meta = meta_of(obj)
        if namespace and meta.get("namespace", "") != namespace:
            return False
        if labels and not labels.matches(meta.get("labels")):
            return False
        return not (fields and not fields.matches(obj))

    def list_object(self, rt: ResourceType, items: list[dict[str, Any]]) -> dict[str, Any]:
        if not rt.custom:
            for it in items:
                it.pop("kind", None)
                it.pop("apiVersion", None)
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    # -- validation helpers ------------------------------------------------------------------

    def _check_type_fields(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        api_version = obj.get("apiVersion")
        kind = obj.get("kind")
        if rt.custom and not kind:
            raise bad_request(f"Object 'Kind' is missing in '{json.dumps(obj)[:200]}'")
        if api_version and api_version != rt.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})"
            )
        if kind and kind != rt.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind

    def _structural(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
                    ) -> list[Cause]:  # fmt: skip
        schema = self.schema_for(rt)
        if schema is None:
            return []
        schema.prune(obj)
        schema.default(obj)
        return schema.validate(obj, old)

    # -- writes -----------------------------------------------------------------------------

    def _ensure_namespace(self, rt: ResourceType, namespace: str) -> None:
        if not rt.namespaced:
            return
        if not namespace:
            raise bad_request("the server could not find the requested resource")
        if self.strict_namespaces and self.peek(self.types["namespaces"], "", namespace) is None:
            raise ApiError(
                404,
                f'namespaces "{namespace}" not found',
                "NotFound",
                {"name": namespace, "kind": "namespaces"},
            )

    def create(
        self,
        rt: ResourceType,
        namespace: str,
        body: Any,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        obj = jcopy(body)
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        self._check_type_fields(rt, obj)
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            self._ensure_namespace(rt, namespace)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = ""
        if meta.get("resourceVersion"):
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        name = meta.get("name")
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise invalid(
                    rt,
                    "",
                    [
                        Cause(
                            "FieldValueRequired",
                            "metadata.name",
                            "Required value: name or generateName is required",
                        )
                    ],
                )
            prefix = str(prefix)[:58]
            for _ in range(100):
                name = prefix + random_suffix()
                if self.peek(rt, namespace, name) is None:
                    break
            meta["name"] = name
        elif self.peek(rt, namespace, name) is not None:
            raise already_exists(rt, name)
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339()
        if rt.custom or rt.key in _GENERATION_KINDS:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        causes = metadata_causes(rt, meta)
        causes.extend(self.kinds.prepare_create(rt, obj))
        causes.extend(self._structural(rt, obj, None))
        if causes:
            raise invalid(rt, str(name), causes)
        if dry_run:
            return obj
        return self._commit("ADDED", rt, obj, None)

    def _commit(
        self, etype: str, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        rv = self._next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        meta = obj["metadata"]
        self._objs[rt.key][self._key(rt, meta.get("namespace", ""), meta["name"])] = obj
        self._emit(WatchEvent(etype, rt.key, jcopy(obj), old, rv))
        return jcopy(obj)

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        old = self.peek(rt, namespace, name)
        if old is None:
            raise not_found(rt, name)
        meta = meta_of(body)
        rv = meta.get("resourceVersion")
        if not rv:
            if rt.custom:
                raise invalid(
                    rt,
                    name,
                    [
                        Cause(
                            "FieldValueInvalid",
                            "metadata.resourceVersion",
                            "Invalid value: 0x0: must be specified for an update",
                        )
                    ],
                )
        elif str(rv) != meta_of(old)["resourceVersion"]:
            raise conflict(rt, name)
        return self._update(rt, namespace, name, body, old, subresource, dry_run)

    def _update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: dict[str, Any],
        old: dict[str, Any],
        subresource: str | None,
        dry_run: bool,
    ) -> dict[str, Any]:
        new = jcopy(body)
        if not isinstance(new.get("metadata"), dict):
            new["metadata"] = {}
        meta = new["metadata"]
        self._check_type_fields(rt, new)
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        old_meta = meta_of(old)
        if subresource == "status":
            status = new.get("status")
            new = jcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
            meta = new["metadata"]
        else:
            for k in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "name",
                "namespace",
            ):
                if k in old_meta:
                    meta[k] = old_meta[k]
                else:
                    meta.pop(k, None)
            if rt.status_subresource:
                if "status" in old:
                    new["status"] = jcopy(old["status"])
                else:
                    new.pop("status", None)
        meta.pop("managedFields", None)
        meta.pop("selfLink", None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise ApiError(
                    422,
                    f'{rt.qualified_kind} "{name}" is invalid: metadata.finalizers: Forbidden: '
                    f"no new finalizers can be added if the object is being deleted, found new "
                    f"finalizers {sorted(added)!r}",
                    "Invalid",
                )
        causes = metadata_causes(rt, meta)
        if subresource != "status":
            causes.extend(self.kinds.prepare_update(rt, new, old))
        causes.extend(self._structural(rt, new, old))
        if causes:
            raise invalid(rt, name, causes)
        if "generation" in old_meta and not json_equal(_spec_part(new), _spec_part(old)):
            meta["generation"] = int(old_meta["generation"]) + 1
        if json_equal(_without_rv(new), _without_rv(old)):
            return jcopy(old)
        if dry_run:
            return new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # The write that removes the last finalizer deletes: watchers see DELETED only,
            # carrying the object as written.
            self._objs[rt.key][self._key(rt, namespace, name)] = new
            return self._remove(rt, namespace, name)
        return self._commit("MODIFIED", rt, new, jcopy(old))

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        body: bytes | str | Any,
        *,
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Returns (object, created)."""
        ct = (content_type or "").split(";")[0].strip().lower()
        accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
        if not rt.custom:
            accepted.insert(2, STRATEGIC_PATCH)
        if ct not in accepted:
            raise unsupported_media_type(ct, accepted)
        patch_doc = self._decode_patch(ct, body)
        old = self.peek(rt, namespace, name)
        if ct == APPLY_PATCH and not field_manager:
            raise ApiError(
                422,
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is '
                "required for apply patch",
                "Invalid",
            )
        if old is None:
            if ct == APPLY_PATCH and subresource is None:
                if not isinstance(patch_doc, dict):
                    raise bad_request("apply patch must be an object")
                doc = jcopy(patch_doc)
                doc.setdefault("metadata", {})["name"] = name
                return self.create(rt, namespace, doc, dry_run=dry_run), True
            raise not_found(rt, name)
        current = jcopy(old)
        if ct == JSON_PATCH:
            patched = json_patch(current, patch_doc)
        elif ct == MERGE_PATCH:
            if not isinstance(patch_doc, dict):
                raise bad_request(
                    "json: cannot unmarshal array into Go value of type map[string]interface {}"
                )
            patched = merge_patch(current, patch_doc)
        else:
            if not isinstance(patch_doc, dict):
                raise bad_request("the patch must be a JSON object")
            patched = strategic_merge(current, patch_doc, apply=ct == APPLY_PATCH)
        if not isinstance(patched, dict):
            raise ApiError(422, "the patched document is not an object", "Invalid")
        rv = meta_of(patched).get("resourceVersion")
        if rv and str(rv) != meta_of(old)["resourceVersion"]:
            raise conflict(rt, name)
        return self._update(rt, namespace, name, patched, old, subresource, dry_run), False

    @staticmethod
    def _decode_patch(ct: str, body: bytes | str | Any) -> Any:
        if not isinstance(body, bytes | str):
            return body
        try:
            if ct == APPLY_PATCH:
                return yaml.safe_load(body)
            return json.loads(body)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"error decoding patch: {exc}") from None

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Returns (object, gone). ``gone`` is False while finalizers or a grace period
        keep the object around with ``deletionTimestamp`` set."""
        old = self.peek(rt, namespace, name)
        if old is None:
            raise not_found(rt, name)
        options = options or {}
        pre = options.get("preconditions") or {}
        meta = meta_of(old)
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise precondition_failed(
                rt,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                f"{meta.get('uid')}",
            )
        if pre.get("resourceVersion") and str(pre["resourceVersion"]) != meta["resourceVersion"]:
            raise precondition_failed(
                rt,
                name,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                f"{meta['resourceVersion']}",
            )
        if dry_run:
            return jcopy(old), True
        propagation = options.get("propagationPolicy") or "Background"
        if propagation == "Foreground":
            for dep in self._dependents(meta.get("uid", "")):
                self._delete_dependent(dep, meta.get("uid", ""))
        grace = options.get("gracePeriodSeconds")
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return jcopy(old), False
            new = jcopy(old)
            new["metadata"]["deletionTimestamp"] = rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            # As the real server: marking for deletion is a new generation.
            if "generation" in new["metadata"]:
                new["metadata"]["generation"] = int(new["metadata"]["generation"]) + 1
            return self._commit("MODIFIED", rt, new, jcopy(old)), False
        delay = self.graceful_delete(rt, old, grace)
        if delay and delay > 0:
            if meta.get("deletionTimestamp"):
                return jcopy(old), False
            new = jcopy(old)
            new["metadata"]["deletionTimestamp"] = rfc3339(now() + _dt.timedelta(seconds=delay))
            new["metadata"]["deletionGracePeriodSeconds"] = round(delay)
            result = self._commit("MODIFIED", rt, new, jcopy(old))
            uid = meta.get("uid")

            def finish() -> None:
                cur = self.peek(rt, namespace, name)
                if cur is not None and meta_of(cur).get("uid") == uid:
                    self._remove(rt, namespace, name, orphan=propagation == "Orphan")

            self.scheduler.later(delay, finish)
            return result, False
        return self._remove(rt, namespace, name, orphan=propagation == "Orphan"), True

    def _remove(self, rt: ResourceType, namespace: str, name: str, *, orphan: bool = False) -> dict[str, Any]:
        key = self._key(rt, namespace, name)
        old = self._objs[rt.key].pop(key)
        rv = self._next_rv()
        final = jcopy(old)
        final["metadata"]["resourceVersion"] = str(rv)
        self._emit(WatchEvent("DELETED", rt.key, final, jcopy(old), rv))
        uid = meta_of(old).get("uid", "")
        if rt.key == "namespaces":
            for other in self.types.values():
                if not other.namespaced:
                    continue
                for ns, oname in list(self._objs[other.key]):
                    if ns == name:
                        self._remove(other, ns, oname, orphan=True)
        if not orphan and uid:
            self.scheduler.soon(lambda: self._collect_garbage(uid))
        return jcopy(final)

    def _dependents(self, uid: str) -> list[tuple[ResourceType, dict[str, Any]]]:
        out = []
        for rt in self.types.values():
            for obj in self._objs[rt.key].values():
                refs = meta_of(obj).get("ownerReferences") or []
                if any(isinstance(r, dict) and r.get("uid") == uid for r in refs):
                    out.append((rt, obj))
        return out

    def _delete_dependent(self, dep: tuple[ResourceType, dict[str, Any]], uid: str) -> None:
        rt, obj = dep
        meta = meta_of(obj)
        ns, name = meta.get("namespace", ""), meta["name"]
        if self.peek(rt, ns, name) is not obj:
            return
        refs = [r for r in meta.get("ownerReferences") or [] if r.get("uid") != uid]
        if refs:
            new = jcopy(obj)
            new["metadata"]["ownerReferences"] = refs
            self._commit("MODIFIED", rt, new, jcopy(obj))
            return
        with contextlib.suppress(ApiError):
            self.delete(rt, ns, name)

    def _collect_garbage(self, uid: str) -> None:
        for dep in self._dependents(uid):
            self._delete_dependent(dep, uid)

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector | None,
        fields: FieldSelector | None,
        options: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        out = []
        for obj in self.select(rt, namespace, labels, fields, copy=False):
            meta = meta_of(obj)
            try:
                deleted, _gone = self.delete(rt, meta.get("namespace", ""), meta["name"], options)
                out.append(deleted)
            except ApiError:
                continue
        return out

    # -- helpers for simulated controllers --------------------------------------------------

    def replace(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """Controller-internal write (scheduler binding, kubelet status): stores ``obj`` as
        given, without update strategies or validation; bumps resourceVersion and emits
        MODIFIED unless nothing changed."""
        meta = meta_of(obj)
        ns, name = meta.get("namespace", ""), meta["name"]
        old = self.peek(rt, ns, name)
        if old is None:
            raise not_found(rt, name)
        new = jcopy(obj)
        new["metadata"]["resourceVersion"] = meta_of(old)["resourceVersion"]
        if json_equal(new, old):
            return jcopy(old)
        return self._commit("MODIFIED", rt, new, jcopy(old))

    def write_status(
        self, rt: ResourceType, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Controller-side status write through the normal /status path (in-loop, so it
        never conflicts)."""
        cur = self.get(rt, namespace, name)
        cur["status"] = status
        return self.update(rt, namespace, name, cur, subresource="status")
