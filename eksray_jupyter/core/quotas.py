"""Quotas and budgets: the admin's limits per user and group, and the checks that make them act.

``c.EKSRay.quotas = {"default": {...}, "users": {"alice": {...}}, "groups": {"ml-team": {...}}}``,
each with any of ``maxClusters``, ``maxCpus``, ``maxGpus``, ``maxMemoryGiB``,
``maxDollarsPerHour``, ``monthlyBudget`` (``null``: no limit). A user's own entry wins field by
field; else the most generous of their groups' entries; else ``default``.

What counts against a quota is what a cluster *may grow to*: its head plus, per worker group,
``maxReplicas`` workers when autoscaling is on (Ray's autoscaler adds workers without asking
us, so a quota that ignored the maximum could be overrun without anyone acting), else
``replicas``. A suspended cluster counts only as a cluster. Checks are pure: the caller gives
the usage and serialises the check with the change it guards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConflictError
from .usage import RESOURCES, Resources, add, scaled

#: Quota field → (usage key, how it reads, unit).
LIMITS: dict[str, tuple[str, str, str]] = {
    "maxClusters": ("clusters", "clusters", ""),
    "maxCpus": ("cpu", "CPUs", ""),
    "maxGpus": ("gpu", "GPUs", ""),
    "maxMemoryGiB": ("memoryGiB", "memory", " GiB"),
    "maxDollarsPerHour": ("dollarsPerHour", "dollars per hour", ""),
}
FIELDS = (*LIMITS, "monthlyBudget")
#: Budget states: below the warning fraction, at or above it, at or above the budget.
WARNING_FRACTION = 0.8


def check_quotas_config(value: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``c.EKSRay.quotas`` (raises ValueError saying what to fix)."""
    for key in value:
        if key not in ("default", "users", "groups"):
            raise ValueError(f"EKSRay.quotas: unknown key {key!r}; use 'default', 'users' and 'groups'")

    def check_entry(where: str, entry: Any) -> None:
        if not isinstance(entry, Mapping):
            raise ValueError(f"EKSRay.quotas{where} must be a dict of limits, not {entry!r}")
        for name, limit in entry.items():
            if name not in FIELDS:
                raise ValueError(f"EKSRay.quotas{where}: unknown limit {name!r}; use {', '.join(FIELDS)}")
            if limit is not None and (
                isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0
            ):
                raise ValueError(
                    f"EKSRay.quotas{where}[{name!r}] must be a number ≥ 0 or None, not {limit!r}"
                )

    check_entry("['default']", value.get("default") or {})
    for section in ("users", "groups"):
        entries = value.get(section) or {}
        if not isinstance(entries, Mapping):
            raise ValueError(f"EKSRay.quotas[{section!r}] must map names to limits")
        for name, entry in entries.items():
            check_entry(f"[{section!r}][{name!r}]", entry)
    return dict(value)


@dataclass(frozen=True)
class Limits:
    """One user's effective limits (None: no limit) and where each came from."""

    values: dict[str, float | None]
    sources: dict[str, str]

    def get(self, name: str) -> float | None:
        return self.values.get(name)

    def to_dict(self) -> dict[str, Any]:
        return {"limits": self.values, "sources": self.sources}


def limits_for(quotas: Mapping[str, Any], owner: str, groups: Iterable[str]) -> Limits:
    values: dict[str, float | None] = {}
    sources: dict[str, str] = {}
    user = (quotas.get("users") or {}).get(owner) or {}
    group_entries = [(g, (quotas.get("groups") or {}).get(g)) for g in sorted(set(groups))]
    default = quotas.get("default") or {}
    for name in FIELDS:
        if name in user:
            values[name], sources[name] = user[name], f"user {owner}"
            continue
        given = [(g, e[name]) for g, e in group_entries if e and name in e]
        if given:
            # The most generous group wins: a user in two teams gets the larger allowance.
            if any(limit is None for _, limit in given):
                group = next(g for g, limit in given if limit is None)
                values[name], sources[name] = None, f"group {group}"
            else:
                group, limit = max(given, key=lambda item: item[1])
                values[name], sources[name] = limit, f"group {group}"
            continue
        if name in default:
            values[name], sources[name] = default[name], "default"
        else:
            values[name], sources[name] = None, "none set"
    return Limits(values, sources)


@dataclass(frozen=True)
class Footprint:
    """What one cluster counts against the quotas: resources at its maximum and their price."""

    name: str
    resources: Resources
    dollars_per_hour: float
    suspended: bool = False

    def counted(self) -> dict[str, float]:
        resources = scaled(self.resources, 0.0) if self.suspended else self.resources
        return {
            "clusters": 1.0,
            **{k: resources[k] for k in RESOURCES},
            "dollarsPerHour": 0.0 if self.suspended else self.dollars_per_hour,
        }


def totals(footprints: Iterable[Footprint]) -> dict[str, float]:
    out = {"clusters": 0.0, **add(), "dollarsPerHour": 0.0}
    for fp in footprints:
        for key, value in fp.counted().items():
            out[key] += value
    return out


def _amount(value: float, unit: str, key: str) -> str:
    if key == "dollarsPerHour":
        return f"${value:,.2f}/h"
    return f"{value:g}{unit}"


def check(
    limits: Limits,
    current: Iterable[Footprint],
    proposed: Footprint,
    *,
    replacing: str | None = None,
    action: str = "create",
) -> None:
    """Refuse (409) a change that would take the user past a limit.

    ``proposed`` is the cluster as it would be; ``replacing`` the name of the cluster it replaces
    (a scale or resume: that cluster's current footprint is taken out). A change that does not
    raise a figure already over its limit is allowed (scaling down stays possible).
    """
    current = list(current)
    before = totals(current)
    others = [fp for fp in current if fp.name != replacing]
    after = totals([*others, proposed])
    problems = []
    for name, (key, words, unit) in LIMITS.items():
        limit = limits.get(name)
        if limit is None or after[key] <= limit + 1e-9 or after[key] <= before[key] + 1e-9:
            continue
        problems.append(
            f"{words}: {_amount(after[key], unit, key)} would exceed the limit of "
            f"{_amount(limit, unit, key)} ({limits.sources[name]}; in use now: {_amount(before[key], unit, key)})"
        )
    if problems:
        what = {"create": "Creating", "scale": "Scaling", "resume": "Resuming"}.get(action, "This change to")
        raise ConflictError(
            f"{what} cluster {proposed.name!r} would exceed your quota — "
            + "; ".join(problems)
            + ". Delete or suspend a cluster, ask for less (fewer workers, a lower maxReplicas), "
            "or ask your administrator for a larger quota. Suspended clusters count only as clusters.",
        )


@dataclass(frozen=True)
class Budget:
    """The month's spending against the monthly budget."""

    month: str
    spent: float
    budget: float | None

    @property
    def fraction(self) -> float | None:
        if self.budget is None:
            return None
        if self.budget == 0:
            return 1.0 if self.spent > 0 else 0.0
        return self.spent / self.budget

    @property
    def state(self) -> str:
        fraction = self.fraction
        if fraction is None or fraction < WARNING_FRACTION:
            return "ok"
        return "exceeded" if fraction >= 1.0 else "warning"

    def to_dict(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "spentDollars": round(self.spent, 4),
            "monthlyBudget": self.budget,
            "fraction": None if self.fraction is None else round(self.fraction, 4),
            "state": self.state,
        }

    def refuse_if_exceeded(self, what: str) -> None:
        if self.state == "exceeded":
            raise ConflictError(
                f"{what} is refused: this month's spending (${self.spent:,.2f}) has reached your monthly "
                f"budget of ${self.budget:,.2f}. Existing clusters keep running; ask your administrator "
                f"to raise the budget, or wait for next month."
            )
