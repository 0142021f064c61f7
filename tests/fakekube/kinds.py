"""What the API server does on a write that depends on the kind, beyond the store's generic
metadata handling: each kind's name rule, the label and annotation rules, and per-kind
defaults and checks (namespaces, pods, services with cluster IPs and node ports allocated;
secrets with ``stringData`` folded into base64 ``data``; network policies with their
``policyTypes`` and port protocols; custom resources with a status subresource are created
without a status)."""

from __future__ import annotations

import base64
import itertools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .objects import meta_of
from .patches import jcopy, json_equal
from .schema import Cause
from .selection import label_key_errors, label_value_errors

if TYPE_CHECKING:
    from .store import ResourceType

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def metadata_causes(rt: ResourceType, meta: Mapping[str, Any]) -> list[Cause]:
    """Field errors of an object's name, labels and annotations."""
    causes: list[Cause] = []
    name = meta.get("name", "")
    if name:
        causes.extend(_name_causes(rt, name))
    for key, value in (meta.get("labels") or {}).items():
        err = label_key_errors(str(key))
        if err:
            causes.append(Cause("FieldValueInvalid", "metadata.labels", f'Invalid value: "{key}": {err}'))
        if not isinstance(value, str):
            causes.append(Cause("FieldValueInvalid", f"metadata.labels.{key}", "must be a string"))
            continue
        err = label_value_errors(value)
        if err:
            causes.append(Cause("FieldValueInvalid", "metadata.labels", f'Invalid value: "{value}": {err}'))
    for key, value in (meta.get("annotations") or {}).items():
        if not isinstance(value, str):
            causes.append(Cause("FieldValueInvalid", f"metadata.annotations.{key}", "must be a string"))
    return causes


# ResourceType.name_rule -> (longest name, pattern, the real API server's words for the rule)
_NAME_RULES = {
    "label": (
        63,
        _DNS1123_LABEL,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
        "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
        "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
    ),
    "dns1035": (
        63,
        _DNS1035_LABEL,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
        "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
        "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
    ),
    "subdomain": (
        253,
        _DNS1123_SUBDOMAIN,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
        "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
        "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    ),
}


def _name_causes(rt: ResourceType, name: str) -> list[Cause]:
    longest, pattern, rule = _NAME_RULES.get(rt.name_rule, _NAME_RULES["subdomain"])
    if len(name) > longest or not pattern.match(name):
        return [Cause("FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": {rule}')]
    return []


class KindStrategies:
    """Per-kind defaults and checks on create and update; holds the cluster IP and node port
    allocators."""

    def __init__(self) -> None:
        self._ip_counter = itertools.count(10)
        self._node_port_counter = itertools.count(30000)

    def prepare_create(self, rt: ResourceType, obj: dict[str, Any]) -> list[Cause]:
        causes: list[Cause] = []
        if rt.custom and rt.status_subresource:
            obj.pop("status", None)
        if rt.key == "namespaces":
            obj["status"] = {"phase": "Active"}
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            labels = meta_of(obj).setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = meta_of(obj)["name"]
        elif rt.key == "pods":
            causes.extend(_pod_causes(obj))
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("serviceAccountName", "default")
            spec.setdefault("securityContext", {})
            for c in spec.get("containers") or []:
                if isinstance(c, dict):
                    image = str(c.get("image", ""))
                    tag_latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
                    c.setdefault("imagePullPolicy", "Always" if tag_latest else "IfNotPresent")
                    c.setdefault("terminationMessagePath", "/dev/termination-log")
                    c.setdefault("terminationMessagePolicy", "File")
                    c.setdefault("resources", {})
                    for p in c.get("ports") or []:
                        if isinstance(p, dict):
                            p.setdefault("protocol", "TCP")
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
        elif rt.key == "services":
            spec = obj.setdefault("spec", {})
            stype = spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if spec.get("clusterIP") != "None" and stype != "ExternalName":
                n = next(self._ip_counter)
                ip = spec.get("clusterIP") or f"10.96.{n // 250 % 250}.{n % 250 + 2}"
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
            elif spec.get("clusterIP") == "None":
                spec["clusterIPs"] = ["None"]
            for p in spec.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
                    p.setdefault("targetPort", p.get("port"))
                    if stype in ("NodePort", "LoadBalancer") and "nodePort" not in p:
                        p["nodePort"] = next(self._node_port_counter)
            obj["status"] = {"loadBalancer": {}}
        elif rt.key == "secrets":
            _fold_string_data(obj)
        elif rt.key == "networking.k8s.io/networkpolicies":
            causes.extend(_network_policy_defaults(obj))
        return causes

    def prepare_update(self, rt: ResourceType, new: dict[str, Any], old: dict[str, Any]
                        ) -> list[Cause]:  # fmt: skip
        if rt.key == "secrets":
            _fold_string_data(new)
            return []
        if rt.key == "networking.k8s.io/networkpolicies":
            return _network_policy_defaults(new)
        if rt.key == "pods":
            return _pod_update_causes(new, old)
        if rt.key == "services":
            old_ip = (old.get("spec") or {}).get("clusterIP")
            spec = new.setdefault("spec", {})
            if spec.get("clusterIP") in (None, "") and old_ip:
                spec["clusterIP"] = old_ip
                spec.setdefault("clusterIPs", (old.get("spec") or {}).get("clusterIPs"))
            elif spec.get("clusterIP") != old_ip:
                return [
                    Cause(
                        "FieldValueInvalid",
                        "spec.clusterIPs[0]",
                        f'Invalid value: ["{spec.get("clusterIP")}"]: may not change once set',
                    )
                ]
        return []


def _fold_string_data(secret: dict[str, Any]) -> None:
    """``stringData`` is write-only: the API server stores it base64 in ``data``."""
    data = secret.get("data") or {}
    for key, value in (secret.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    secret["data"] = data
    secret.setdefault("type", "Opaque")


def _network_policy_defaults(policy: dict[str, Any]) -> list[Cause]:
    """``networking/v1`` defaulting (policyTypes from the rules, ports TCP) and the required podSelector."""
    spec = policy.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("podSelector"), dict):
        return [Cause("FieldValueRequired", "spec.podSelector", "Required value")]
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    for direction in ("ingress", "egress"):
        for rule in spec.get(direction) or []:
            for port in (rule or {}).get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
    return []


def _pod_causes(pod: Mapping[str, Any]) -> list[Cause]:
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return [Cause("FieldValueRequired", "spec.containers", "Required value")]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [Cause("FieldValueRequired", "spec.containers", "Required value")]
    causes = []
    names: set[str] = set()
    for i, c in enumerate(containers):
        if not isinstance(c, dict) or not c.get("name"):
            causes.append(Cause("FieldValueRequired", f"spec.containers[{i}].name", "Required value"))
            continue
        if not c.get("image"):
            causes.append(Cause("FieldValueRequired", f"spec.containers[{i}].image", "Required value"))
        if c["name"] in names:
            causes.append(
                Cause(
                    "FieldValueDuplicate",
                    f"spec.containers[{i}].name",
                    f'Duplicate value: "{c["name"]}"',
                )
            )
        names.add(c["name"])
    return causes


def _pod_update_causes(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    def mutable_view(spec: Any) -> Any:
        spec = jcopy(spec or {})
        for key in ("containers", "initContainers"):
            for c in spec.get(key) or []:
                if isinstance(c, dict):
                    c.pop("image", None)
        for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
            spec.pop(key, None)
        return spec

    if not json_equal(mutable_view(new.get("spec")), mutable_view(old.get("spec"))):
        return [
            Cause(
                "FieldValueForbidden",
                "spec",
                "Forbidden: pod updates may not change fields other than "
                "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing "
                "tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if "
                "it was previously negative)",
            )
        ]
    return []


def _qos_class(spec: Mapping[str, Any]) -> str:
    requests_any = False
    guaranteed = True
    for c in spec.get("containers") or []:
        res = (c or {}).get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            requests_any = True
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and str(req[r]) != str(lim[r])):
                guaranteed = False
    if not requests_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"
