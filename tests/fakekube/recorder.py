"""How the simulated components (scheduler, kubelet, KubeRay controllers) write core/v1 Events."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from .errors import ApiError
from .store import ResourceType, Store, now, rfc3339, rfc3339_micro


class EventRecorder:
    """Writes core/v1 Events the way the new events API shows through core/v1 (the KubeRay
    operator and the scheduler): ``eventTime``, ``reportingComponent``, ``action``, no
    ``count``/``firstTimestamp``. ``legacy=True`` gives kubelet-style events instead."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.events = store.types["events"]

    def record(
        self,
        regarding: Mapping[str, Any],
        rtype: ResourceType,
        etype: str,
        reason: str,
        message: str,
        *,
        component: str,
        action: str,
        legacy: bool = False,
        host: str | None = None,
    ) -> dict[str, Any] | None:
        meta = regarding.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        ts = now()
        involved = {
            "kind": rtype.kind,
            "namespace": ns,
            "name": meta.get("name", ""),
            "uid": meta.get("uid", ""),
            "apiVersion": rtype.api_version,
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        body: dict[str, Any] = {
            "metadata": {"name": f"{meta.get('name', 'x')}.{secrets.token_hex(8)}"},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": etype,
        }
        if legacy:
            body.update(
                {
                    "source": {"component": component, **({"host": host} if host else {})},
                    "firstTimestamp": rfc3339(ts),
                    "lastTimestamp": rfc3339(ts),
                    "count": 1,
                    "reportingComponent": component,
                    "reportingInstance": host or "",
                    "eventTime": None,
                }
            )
        else:
            body.update(
                {
                    "source": {},
                    "firstTimestamp": None,
                    "lastTimestamp": None,
                    "eventTime": rfc3339_micro(ts),
                    "reportingComponent": component,
                    "reportingInstance": f"{component}-fakekube",
                    "action": action,
                }
            )
        try:
            return self.store.create(self.events, ns, body)
        except ApiError:  # e.g. namespace deleted meanwhile
            return None
