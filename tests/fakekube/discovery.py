"""API discovery: ``/version``, ``/api``, ``/apis`` and the group and resource lists the
``kubernetes`` client's DynamicClient and kubectl read, built from the store's types."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import path_not_found
from .events_v1 import EVENTS_GROUP
from .store import ResourceType

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


def discovery_document(segs: list[str], types: Iterable[ResourceType], port: int) -> dict[str, Any] | None:
    """The document for a discovery path (its segments), or None when ``segs`` is no
    discovery path; 404 for a group or version not served."""
    types = list(types)
    if segs == ["version"]:
        return K8S_VERSION
    if segs == ["api"]:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{port}"}],
        }
    if segs == ["apis"]:
        return discovery_groups(types)
    if segs == ["api", "v1"]:
        return discovery_resources(types, "", "v1")
    if len(segs) == 2 and segs[0] == "apis":
        group_doc = discovery_group(types, segs[1])
        if group_doc is None:
            raise path_not_found()
        return group_doc
    if len(segs) == 3 and segs[0] == "apis":
        doc = discovery_resources(types, segs[1], segs[2])
        if not doc["resources"]:
            raise path_not_found()
        return doc
    return None


def _groups(types: list[ResourceType]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {EVENTS_GROUP: ["v1"]}
    for rt in types:
        if rt.group:
            versions = groups.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
    return groups


def discovery_group(types: list[ResourceType], group: str) -> dict[str, Any] | None:
    versions = _groups(types).get(group)
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


def discovery_groups(types: list[ResourceType]) -> dict[str, Any]:
    groups = []
    for g in _groups(types):
        doc = discovery_group(types, g)
        assert doc is not None
        doc.pop("kind")
        doc.pop("apiVersion")
        groups.append(doc)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def discovery_resources(types: list[ResourceType], group: str, version: str) -> dict[str, Any]:
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
    for rt in types:
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
