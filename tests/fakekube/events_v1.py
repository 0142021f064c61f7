"""The ``events.k8s.io/v1`` API as a view of the core/v1 Events (one storage, converted each
way), as the real API server serves it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import bad_request

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


def v1_event_fields(text: str) -> str:
    """Translate an events.k8s.io field selector to the core/v1 field names."""
    out = []
    for term in text.split(","):
        for core_key, v1_key in _EVENT_FIELDS:
            if term.startswith(v1_key + ".") or re.match(rf"^{v1_key}\s*(!=|==|=)", term):
                term = core_key + term[len(v1_key) :]
                break
        out.append(term)
    return ",".join(out)
