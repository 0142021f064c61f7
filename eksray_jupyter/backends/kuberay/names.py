"""Names, labels and quantities shared by the KubeRay backend's modules (pure functions).

Label keys of KubeRay are those of ``ray-operator/controllers/ray/utils/constant.go``
(v1.7); ours live under ``eksray.io/``.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# KubeRay's custom resources: their API group and version, and the plural of each kind.
GROUP, VERSION = "ray.io", "v1"
API_VERSION = f"{GROUP}/{VERSION}"
RAYCLUSTERS = "rayclusters"
RAYJOBS = "rayjobs"
INT32_MAX = 2**31 - 1

# Ours. The owner label is a sanitised form (label values are restricted); the annotation
# keeps the exact owner and is what ownership checks compare.
LABEL_MANAGED_BY = "eksray.io/managed-by"
MANAGED_BY = "eksray-jupyter"
LABEL_OWNER = "eksray.io/owner"
ANNOTATION_OWNER = "eksray.io/owner"
ANNOTATION_SPEC = "eksray.io/spec"
# The idle keeper's (core/keeper.py): seconds since the epoch, as strings.
ANNOTATION_LAST_ACTIVE = "eksray.io/last-active-at"
ANNOTATION_SUSPENDED_AT = "eksray.io/suspended-at"
EVENT_COMPONENT = "eksray-jupyter"

# KubeRay's.
L_CLUSTER = "ray.io/cluster"
L_NODE_TYPE = "ray.io/node-type"
L_GROUP = "ray.io/group"
L_ORIGIN_CRD = "ray.io/originated-from-crd"
L_ORIGIN_NAME = "ray.io/originated-from-cr-name"
L_GANG = "ray.io/gang-scheduling-enabled"
HEAD_GROUP = "headgroup"
#: The key of the token in the Secret KubeRay (>= 1.5) makes for a cluster with
#: ``authOptions {mode: token}`` (``raycluster_controller.go`` reconcileAuthSecret).
AUTH_TOKEN_KEY = "auth_token"

# Ours, for the NetworkPolicy: the submitter pods of RayJobs on a user's cluster carry the
# cluster they submit to, so the cluster's policy can let exactly them in.
LABEL_SUBMITS_TO = "eksray.io/submits-to"

DASHBOARD_PORT = 8265
CLIENT_PORT = 10001
GCS_PORT = 6379

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


_HASHED = re.compile(r"-[0-9a-f]{8}$")


def dns_label(text: str, max_len: int = 63) -> str:
    """``text`` as a DNS-1123 label (also a valid label value); two texts never share one.

    Unchanged when already valid and not ending like a hashed label; otherwise lower-cased,
    invalid characters replaced and a short hash of the original appended. So "Alice" and
    "alice" stay apart, and a user named like another's hashed label ("alice-1a2b3c4d") is
    hashed too instead of getting that user's namespace.
    """
    if _DNS1123_LABEL.match(text) and len(text) <= max_len and not _HASHED.search(text):
        return text
    cleaned = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", text.lower())).strip("-")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    head = cleaned[: max_len - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}" if head else f"u-{digest}"


def is_dns_label(text: str) -> bool:
    return bool(_DNS1123_LABEL.match(text)) and len(text) <= 63


def head_service(cluster: dict[str, Any]) -> str:
    """The head Service's name: ``status.head.serviceName``, the custom name, or ``<name>-head-svc``."""
    status_name = ((cluster.get("status") or {}).get("head") or {}).get("serviceName")
    if status_name:
        return str(status_name)
    head = (cluster.get("spec") or {}).get("headGroupSpec") or {}
    custom = ((head.get("headService") or {}).get("metadata") or {}).get("name")
    return str(custom or f"{cluster['metadata']['name']}-head-svc")


def auth_secret_name(cluster: str) -> str:
    """The name of the token Secret KubeRay makes for a cluster: its ``utils.CheckName`` of the
    cluster's name (the last 50 characters; a leading digit or punctuation becomes ``r``)."""
    name = cluster[-50:]
    if name[:1].isdigit():
        name = "r" + name[1:]
    if name[:1] in ("-", "."):
        name = "r" + name[1:]
    return name


def network_policy_name(cluster: str) -> str:
    """The NetworkPolicy eksray makes for a cluster."""
    return f"{cluster}-eksray"


def parse_time(text: Any) -> float | None:
    """RFC 3339 (``2026-01-01T00:00:00Z`` or with microseconds) to epoch seconds."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --- quantities -----------------------------------------------------------------------------

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal(10**3),
            "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15),
            "E": Decimal(10**18)}  # fmt: skip
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$")


def parse_quantity(value: Any) -> float | None:
    """A Kubernetes quantity (``"500m"``, ``"4Gi"``, ``2``) as a number; None if unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        return None
    suffix = match.group(2) or ""
    if suffix in _BINARY:
        number *= _BINARY[suffix]
    elif suffix[:1] in ("e", "E"):
        number *= Decimal(10) ** int(suffix[1:])
    elif suffix:
        number *= _DECIMAL[suffix]
    return float(number)


def cpu_quantity(cpus: float) -> str:
    """``2`` -> ``"2"``, ``0.5`` -> ``"500m"``."""
    if float(cpus).is_integer():
        return str(int(cpus))
    return f"{math.ceil(cpus * 1000)}m"


def memory_quantity(gib: float) -> str:
    """GiB as a quantity: ``2`` -> ``"2Gi"``, ``1.5`` -> ``"1536Mi"``."""
    if float(gib).is_integer():
        return f"{int(gib)}Gi"
    return f"{math.ceil(gib * 1024)}Mi"


def number(value: float) -> int | float:
    """Whole floats as ints, so JSON shows ``1`` rather than ``1.0``."""
    return int(value) if float(value).is_integer() else value
