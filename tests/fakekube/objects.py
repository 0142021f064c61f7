"""Small readers of Kubernetes objects (plain JSON dicts) shared by the store, the simulated
controllers and the proxy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import ResourceType


def meta_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return meta_of(obj).get("labels") or {}


def condition(obj: Mapping[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return None


def pod_ready(pod: Mapping[str, Any]) -> bool:
    c = condition(pod, "Ready")
    return bool(c and c.get("status") == "True")


def pod_phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def owner_ref(obj: Mapping[str, Any], rtype: ResourceType) -> dict[str, Any]:
    meta = meta_of(obj)
    return {
        "apiVersion": rtype.api_version,
        "kind": rtype.kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
