"""What clusters use and cost, in one unit system: resources, prices and the meter that accrues.

Resources are ``{"cpu", "gpu", "memoryGiB", "objectStoreGiB"}`` (floats). A node's come from what
the backend reports Ray schedules on it (Ray's ``CPU``/``GPU``/``memory``/``object_store_memory``,
or a pod's requests on kuberay); what Ray has in use from its load report.

Money is dollars per hour (``rate``). A cluster's rate is the sum of its nodes' rates, which the
backend prices (:meth:`..backend.ClusterBackend.price_nodes`): the admin's price per resource-hour
by default, each pod's share of its node's price on kuberay. A suspended cluster has no nodes,
so it costs nothing.

A :class:`Meter` turns rates into money over time: each sample charges the rate seen at the
previous sample for the time since, and splits the charge at month boundaries (budgets are
monthly). Nothing here reads a clock or a file.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .models import Cluster, Node

GIB = 1024**3
RESOURCES = ("cpu", "gpu", "memoryGiB", "objectStoreGiB")
#: The resources that are priced and counted in resource-hours (the object store is memory too).
METERED = ("cpu", "gpu", "memoryGiB")

Resources = dict[str, float]


def zero() -> Resources:
    return dict.fromkeys(RESOURCES, 0.0)


def add(*items: Mapping[str, float]) -> Resources:
    total = zero()
    for item in items:
        for key in RESOURCES:
            total[key] += float(item.get(key, 0.0) or 0.0)
    return total


def scaled(resources: Mapping[str, float], factor: float) -> Resources:
    return {key: float(resources.get(key, 0.0) or 0.0) * factor for key in RESOURCES}


def from_ray(values: Mapping[str, Any]) -> Resources:
    """Ray's resource names (memory in bytes) → ours."""

    def num(key: str) -> float:
        value = values.get(key, 0)
        return float(value) if isinstance(value, int | float) else 0.0

    return {
        "cpu": num("CPU"),
        "gpu": num("GPU"),
        "memoryGiB": num("memory") / GIB,
        "objectStoreGiB": num("object_store_memory") / GIB,
    }


def costs(node: Node) -> bool:
    """Whether a node is running (or being started) and so is paid for."""
    return node.state != "dead"


def running_resources(cluster: Cluster) -> Resources:
    """What the cluster's nodes that exist now ask for (what Ray may schedule on them)."""
    return add(*(from_ray(n.resources) for n in cluster.nodes if costs(n)))


def used_resources(cluster: Cluster) -> Resources:
    """What Ray has in use on the cluster's nodes (tasks' and actors' requests; object store bytes)."""
    return add(*(from_ray(n.used) for n in cluster.nodes if costs(n)))


def utilisation(used: Mapping[str, float], total: Mapping[str, float]) -> dict[str, float]:
    """Used / total per resource the cluster has (0..1); resources it lacks are left out."""
    return {k: round(min(1.0, used.get(k, 0.0) / total[k]), 3) for k in RESOURCES if total.get(k)}


@dataclass(frozen=True)
class Prices:
    """The admin's prices per resource-hour (``c.EKSRay.prices``): the local backend's notional
    price, or kuberay's fallback where a node's own price is unknown."""

    cpu_hour: float = 0.0
    gpu_hour: float = 0.0
    memory_gib_hour: float = 0.0

    @classmethod
    def from_config(cls, value: Mapping[str, Any]) -> Prices:
        return cls(
            float(value.get("cpuHour", 0.0)),
            float(value.get("gpuHour", 0.0)),
            float(value.get("memoryGiBHour", 0.0)),
        )

    @property
    def configured(self) -> bool:
        return any((self.cpu_hour, self.gpu_hour, self.memory_gib_hour))

    def rate(self, resources: Mapping[str, float]) -> float:
        return (
            resources.get("cpu", 0.0) * self.cpu_hour
            + resources.get("gpu", 0.0) * self.gpu_hour
            + resources.get("memoryGiB", 0.0) * self.memory_gib_hour
        )

    def to_dict(self) -> dict[str, float]:
        return {"cpuHour": self.cpu_hour, "gpuHour": self.gpu_hour, "memoryGiBHour": self.memory_gib_hour}


PRICE_KEYS = ("cpuHour", "gpuHour", "memoryGiBHour")


def check_prices_config(value: Mapping[str, Any]) -> dict[str, Any]:
    """``c.EKSRay.prices``: known keys, numbers ≥ 0 (raises ValueError saying what to fix)."""
    for key, price in value.items():
        if key not in PRICE_KEYS:
            raise ValueError(f"EKSRay.prices: unknown key {key!r}; use {', '.join(PRICE_KEYS)}")
        if isinstance(price, bool) or not isinstance(price, int | float) or price < 0:
            raise ValueError(f"EKSRay.prices[{key!r}] must be a number ≥ 0 (dollars per hour), not {price!r}")
    return dict(value)


@dataclass(frozen=True)
class NodeRate:
    """A node's price: dollars per hour (None: unknown) and where it comes from, in plain words."""

    dollars_per_hour: float | None
    basis: str


def cluster_rate(rates: Mapping[str, NodeRate]) -> tuple[float, list[str]]:
    """The cluster's dollars per hour (unknown node prices count 0) and the notes to show."""
    total = sum(r.dollars_per_hour or 0.0 for r in rates.values())
    unknown = sorted({r.basis for r in rates.values() if r.dollars_per_hour is None})
    return total, unknown


def month_of(at: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(at))


def month_start(month: str) -> float:
    return float(calendar.timegm(time.strptime(month + "-01", "%Y-%m-%d")))


def next_month(month: str) -> str:
    year, mon = (int(p) for p in month.split("-"))
    return f"{year + mon // 12}-{mon % 12 + 1:02d}"


@dataclass
class Meter:
    """What one cluster has cost since it was created (kept by the usage store)."""

    created_at: float
    at: float  # the last sample
    rate: float = 0.0  # dollars per hour seen at the last sample
    resources: Resources = field(default_factory=zero)  # running resources at the last sample
    accrued: float = 0.0
    resource_hours: Resources = field(default_factory=lambda: dict.fromkeys(METERED, 0.0))
    month: str = ""  # the month ``month_accrued`` belongs to
    month_accrued: float = 0.0

    @classmethod
    def start(cls, created_at: float, now: float) -> Meter:
        # Created before anything sampled it (by the CLI with no server running): nothing is
        # known of its rate until now, so it accrues from now.
        return cls(created_at=created_at, at=now, month=month_of(now))

    def advance(self, now: float, rate: float, resources: Mapping[str, float]) -> None:
        """Charge the previous rate for the time since the last sample; then take the new one."""
        if now > self.at:
            start = self.at
            while start < now:
                month = month_of(start)
                end = min(now, month_start(next_month(month)))
                hours = (end - start) / 3600
                charge = self.rate * hours
                self.accrued += charge
                for key in METERED:
                    self.resource_hours[key] = (
                        self.resource_hours.get(key, 0.0) + self.resources.get(key, 0.0) * hours
                    )
                if month != self.month:
                    self.month, self.month_accrued = month, 0.0
                self.month_accrued += charge
                start = end
            self.at = now
        self.rate = rate
        self.resources = {k: float(resources.get(k, 0.0)) for k in RESOURCES}

    def cost(self) -> dict[str, Any]:
        """What a job records of its cluster's meter when the cluster is deleted."""
        return {
            "dollars": round(self.accrued, 6),
            "dollarsPerHour": round(self.rate, 6),
            "resourceHours": {k: round(v, 6) for k, v in self.resource_hours.items()},
        }

    def accrued_in(self, month: str) -> float:
        return self.month_accrued if self.month == month else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "createdAt": self.created_at,
            "at": self.at,
            "rate": self.rate,
            "resources": self.resources,
            "accrued": self.accrued,
            "resourceHours": self.resource_hours,
            "month": self.month,
            "monthAccrued": self.month_accrued,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Meter:
        return cls(
            created_at=float(data["createdAt"]),
            at=float(data["at"]),
            rate=float(data.get("rate", 0.0)),
            resources={k: float(v) for k, v in (data.get("resources") or {}).items()},
            accrued=float(data.get("accrued", 0.0)),
            resource_hours={k: float(v) for k, v in (data.get("resourceHours") or {}).items()},
            month=str(data.get("month", "")),
            month_accrued=float(data.get("monthAccrued", 0.0)),
        )


def resource_hours_text(hours: Mapping[str, float]) -> str:
    parts = [f"{hours.get('cpu', 0.0):.2f} CPU-h"]
    if hours.get("gpu"):
        parts.append(f"{hours['gpu']:.2f} GPU-h")
    parts.append(f"{hours.get('memoryGiB', 0.0):.1f} GiB-h")
    return ", ".join(parts)


def sum_hours(items: Iterable[Mapping[str, float]]) -> dict[str, float]:
    total = dict.fromkeys(METERED, 0.0)
    for item in items:
        for key in METERED:
            total[key] += float(item.get(key, 0.0))
    return total
