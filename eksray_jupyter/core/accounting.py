"""Usage, cost, quotas and budgets of one owner: what every face shows and what makes limits act.

:class:`Accounting` belongs to a :class:`..service.ClusterService`. It keeps each cluster's
meter in the owner's :class:`..usage_store.UsageStore` (sampled by the server every
``lifecycle_interval_seconds``, and at every change made through the service), checks quotas
and the budget before a create, a scale or a resume (under the usage lock, so two creates of
one user cannot both pass a check meant for one), and builds the usage report
(``GET /eksray/api/usage``, ``eksray usage``, ``%eksray usage``). See docs/usage.md.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import quotas, usage
from .errors import EKSRayError, NotFoundError
from .models import Cluster, Phase, Severity, iso
from .usage import Meter, NodeRate, Prices
from .usage_store import UsageStore

if TYPE_CHECKING:
    from .service import ClusterService

log = logging.getLogger(__name__)

#: Phases that cost nothing: no Ray node runs.
_FREE = frozenset({Phase.SUSPENDED})


@dataclass(frozen=True)
class BudgetNotice:
    """A budget threshold crossed this month (pushed to panels, added to the clusters' events)."""

    owner: str
    state: str  # "warning" | "exceeded"
    message: str
    budget: quotas.Budget

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "message": self.message, **self.budget.to_dict()}


@dataclass(frozen=True)
class ClusterCost:
    dollars_per_hour: float
    meter: Meter | None
    unknown: list[str]  # why some nodes have no price
    suspended: bool
    priced: bool  # the admin set prices (else: resource-hours are what to show)


class Accounting:
    def __init__(self, service: ClusterService, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.clock = clock
        self.groups: tuple[str, ...] = tuple(service.config.user_groups.get(service.owner, ()))
        self.store = UsageStore(service.config.state_dir, service.backend.name, service.owner)

    @property
    def backend(self) -> Any:
        return self.service.backend

    @property
    def prices(self) -> Prices:
        return Prices.from_config(self.service.config.prices)

    def limits(self) -> quotas.Limits:
        return quotas.limits_for(self.service.config.quotas, self.service.owner, self.groups)

    # --- footprints (what counts against quotas) ---------------------------------------------

    def spec_footprint(self, name: str, spec: dict[str, Any], suspended: bool = False) -> quotas.Footprint:
        """What a cluster of ``spec`` may grow to: head + per group maxReplicas with autoscaling,
        else replicas; priced with the backend's estimate for a node of each shape."""
        autoscaling = bool((spec.get("autoscaling") or {}).get("enabled"))
        shapes: list[tuple[dict[str, Any], bool, int]] = [(spec.get("head") or {}, True, 1)]
        for group in spec.get("workerGroups", []):
            count = group.get("maxReplicas", 0) if autoscaling else group.get("replicas", 0)
            shapes.append((group, False, int(count)))
        resources = usage.zero()
        rate = 0.0
        for shape, head, count in shapes:
            if count <= 0:
                continue
            requests = self.backend.node_requests(shape, head)
            resources = usage.add(resources, usage.scaled(requests, count))
            rate += (self.backend.estimate_rate(requests, self.prices) or 0.0) * count
        return quotas.Footprint(name, resources, rate, suspended)

    def footprint(self, cluster: Cluster) -> quotas.Footprint:
        suspended = cluster.phase in (Phase.SUSPENDED, Phase.SUSPENDING)
        return self.spec_footprint(cluster.name, cluster.spec, suspended)

    # --- checks --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def guard(self, action: str, name: str, spec: dict[str, Any] | None) -> Iterator[None]:
        """Check quotas and the budget for ``action`` on ``name`` (the cluster becoming ``spec``;
        None: unchanged, e.g. a resume), and hold the usage lock while the caller makes the change."""
        limits = self.limits()
        if all(value is None for value in limits.values.values()):
            # Nothing to check: no reason to serialise this user's changes (a slow create would
            # hold the next one back); a changed cluster is charged at its old rate up to now.
            if action != "create":
                self.sample()
            yield
            return
        with self.store.locked():
            clusters = self.service.list()
            # Charged at the old rate up to now: the change takes effect from here.
            meters = self.sample(clusters, lock=False)
            if action in ("create", "resume"):
                self._budget_of(meters).refuse_if_exceeded(
                    f"{'Creating' if action == 'create' else 'Resuming'} cluster {name!r}"
                )
            if spec is None:
                spec = next((c.spec for c in clusters if c.name == name), None)
            if spec is not None and any(limits.get(limit) is not None for limit in quotas.LIMITS):
                current = [self.footprint(c) for c in clusters]
                proposed = self.spec_footprint(name, spec)
                quotas.check(
                    limits, current, proposed, replacing=None if action == "create" else name, action=action
                )
            yield

    # --- metering ------------------------------------------------------------------------------

    def rates(self, cluster: Cluster) -> dict[str, NodeRate]:
        if cluster.phase in _FREE:
            return {}
        try:
            return self.backend.price_nodes(cluster, self.prices)
        except EKSRayError as e:  # a price that cannot be found is shown as unknown, never fatal
            log.info("eksray: cannot price the nodes of %s: %s", cluster.name, e)
            return {}

    def sample(
        self, clusters: Iterable[Cluster] | None = None, *, lock: bool = True, complete: bool = True
    ) -> dict[str, Meter]:
        """Advance the meters of the owner's clusters to now; close those of clusters gone
        (``complete=False``: ``clusters`` are only some of them, close nothing)."""
        clusters = list(self.service.list() if clusters is None else clusters)
        now = self.clock()
        sampled = {c.name: (c, usage.cluster_rate(self.rates(c))[0]) for c in clusters}

        def advance(data: dict[str, Any]) -> dict[str, Meter]:
            meters = data["clusters"]
            out: dict[str, Meter] = {}
            for name, (cluster, rate) in sampled.items():
                meter = _meter_of(meters.get(name), cluster, now)
                if meter is None:  # a new cluster of the same name: the old one is gone
                    _close(data, Meter.from_dict(meters[name]), now)
                    meter = Meter.start(cluster.created_at, now)
                meter.advance(now, rate, usage.running_resources(cluster) if _runs(cluster) else {})
                meters[name] = meter.to_dict()
                out[name] = meter
            for name in [n for n in meters if complete and n not in sampled]:
                # Deleted by someone who did not close its meter: charged up to the last sample.
                _close(data, Meter.from_dict(meters.pop(name)), None)
            return out

        return self.store.update(advance, lock=lock)

    def cluster_cost(self, cluster: Cluster) -> ClusterCost:
        """One cluster's dollars per hour and what it has cost (``rc status``, ``%eksray status``)."""
        rate, unknown = usage.cluster_rate(self.rates(cluster))
        meter = self.sample([cluster], complete=False).get(cluster.name)
        priced = self.prices.configured or rate > 0 or bool(meter and meter.accrued > 0)
        return ClusterCost(rate, meter, unknown, cluster.phase in _FREE, priced)

    def close(self, name: str) -> Meter | None:
        """Charge a cluster being deleted up to now and move its cost to the month's closed sum.

        Returns its final meter (a job records it), or None if it was never metered."""
        try:
            cluster: Cluster | None = self.service.get(name)
            rate = usage.cluster_rate(self.rates(cluster))[0]
        except NotFoundError:
            cluster, rate = None, None
        now = self.clock()

        def finish(data: dict[str, Any]) -> Meter | None:
            raw = data["clusters"].pop(name, None)
            if isinstance(raw, dict):
                meter = Meter.from_dict(raw)
            elif cluster is not None:
                # Never sampled (made and deleted with no server running, e.g. a job's cluster
                # from the CLI): charged its rate now for its whole life.
                meter = Meter(created_at=cluster.created_at, at=cluster.created_at, month=usage.month_of(now))
                meter.resources = usage.running_resources(cluster)
            else:
                return None
            if rate is not None:
                meter.rate = rate
            _close(data, meter, now)
            return meter

        return self.store.update(finish)

    def budget(self, clusters: Iterable[Cluster] | None = None, *, lock: bool = True) -> quotas.Budget:
        return self._budget_of(self.sample(clusters, lock=lock))

    def _budget_of(self, meters: dict[str, Meter]) -> quotas.Budget:
        month = usage.month_of(self.clock())
        data = self.store.read()
        closed = float((data["months"].get(month) or {}).get("closed", 0.0))
        spent = closed + sum(m.accrued_in(month) for m in meters.values())
        return quotas.Budget(month, spent, self.limits().get("monthlyBudget"))

    # --- budget warnings and actions (the server's periodic pass) --------------------------------

    def budget_pass(self, clusters: list[Cluster]) -> BudgetNotice | None:
        """Once per month and threshold: a notice at 80 % and at 100 % of the budget (with an
        event on every running cluster); at 100 %, if the admin chose so, idle clusters suspended."""
        budget = self.budget(clusters)
        if budget.state == "ok":
            return None

        def first_time(data: dict[str, Any]) -> bool:
            month = data["months"].setdefault(budget.month, {})
            told = month.setdefault("told", [])
            if budget.state in told:
                return False
            told.append(budget.state)
            return True

        if not self.store.update(first_time):
            return None
        if budget.state == "warning":
            message = (
                f"You have spent ${budget.spent:,.2f} of your ${budget.budget:,.2f} budget for "
                f"{budget.month} ({budget.fraction:.0%}). At 100 % new clusters are refused."
            )
        else:
            message = (
                f"Your ${budget.budget:,.2f} budget for {budget.month} is used up (${budget.spent:,.2f}). "
                "New clusters and resumes are refused until next month or a larger budget."
            )
        for cluster in clusters:
            if cluster.phase not in _FREE:
                self.backend.record_event(
                    self.service.owner,
                    cluster.name,
                    "BudgetExceeded" if budget.state == "exceeded" else "BudgetWarning",
                    message,
                    usage_severity(budget.state),
                )
        if budget.state == "exceeded" and self.service.config.budget_exceeded_action == "suspend-idle":
            self._suspend_idle(clusters)
        return BudgetNotice(self.service.owner, budget.state, message, budget)

    def _suspend_idle(self, clusters: list[Cluster]) -> None:
        for cluster in clusters:
            if cluster.phase not in (Phase.READY, Phase.SCALING):
                continue
            try:
                if self.backend.busy_reasons(self.service.owner, cluster.name):
                    continue
                self.service.suspend(cluster.name, "the monthly budget is used up and the cluster was idle")
            except EKSRayError as e:  # not looked at is not idle: leave it running
                log.info("eksray: budget: not suspending %s: %s", cluster.name, e)

    # --- the report ----------------------------------------------------------------------------

    def with_use(self, cluster: Cluster) -> Cluster:
        """``cluster`` with what Ray has in use on each node (:meth:`ClusterBackend.with_use`)."""
        try:
            return self.backend.with_use(self.service.owner, cluster)
        except EKSRayError as e:  # shown without use, never failed for it
            log.info("eksray: cannot read what Ray uses on %s: %s", cluster.name, e)
            return cluster

    def report(self) -> dict[str, Any]:
        """Per cluster and in total: resources, what Ray uses, $/h, accrued; quota and budget."""
        clusters = [self.with_use(c) for c in self.service.list()]
        meters = self.sample(clusters)
        now = self.clock()
        month = usage.month_of(now)
        data = self.store.read()
        closed = data["months"].get(month) or {}
        footprints = {c.name: self.footprint(c) for c in clusters}
        rows = []
        for cluster in clusters:
            rates = self.rates(cluster)
            rate, unknown = usage.cluster_rate(rates)
            running = usage.running_resources(cluster)
            used = usage.used_resources(cluster)
            meter = meters.get(cluster.name)
            rows.append(
                {
                    "name": cluster.name,
                    "phase": cluster.phase.value,
                    "suspended": cluster.phase in _FREE,
                    "createdAt": iso(cluster.created_at),
                    "resources": running,
                    "used": used,
                    "utilization": usage.utilisation(used, running),
                    "maxResources": footprints[cluster.name].resources,
                    "dollarsPerHour": round(rate, 6),
                    "accruedDollars": round(meter.accrued, 6) if meter else 0.0,
                    "monthDollars": round(meter.accrued_in(month), 6) if meter else 0.0,
                    "resourceHours": meter.resource_hours if meter else usage.sum_hours([]),
                    "priceBasis": sorted({r.basis for r in rates.values() if r.dollars_per_hour is not None}),
                    "priceUnknown": unknown,
                }
            )
        limits = self.limits()
        footprint_totals = quotas.totals(footprints.values())
        spent = float(closed.get("closed", 0.0)) + sum(r["monthDollars"] for r in rows)
        budget = quotas.Budget(month, spent, limits.get("monthlyBudget"))
        return {
            "owner": self.service.owner,
            "backend": self.backend.name,
            "at": iso(now),
            "currency": "USD",
            "prices": self.prices.to_dict(),
            "clusters": rows,
            "totals": {
                "resources": usage.add(*(r["resources"] for r in rows)),
                "used": usage.add(*(r["used"] for r in rows)),
                "dollarsPerHour": round(sum(r["dollarsPerHour"] for r in rows), 6),
                "accruedDollars": round(sum(r["accruedDollars"] for r in rows), 6),
                "resourceHours": usage.sum_hours(r["resourceHours"] for r in rows),
                "closedDollars": round(float(closed.get("closed", 0.0)), 6),
                "closedResourceHours": usage.sum_hours([closed.get("closedResourceHours") or {}]),
            },
            "quota": {
                "limits": limits.values,
                "sources": limits.sources,
                "groups": list(self.groups),
                "usage": footprint_totals,
            },
            "budget": budget.to_dict(),
        }


CSV_COLUMNS = (
    "name",
    "phase",
    "cpu",
    "gpu",
    "memoryGiB",
    "objectStoreGiB",
    "cpuUsed",
    "gpuUsed",
    "memoryGiBUsed",
    "objectStoreGiBUsed",
    "dollarsPerHour",
    "accruedDollars",
    "monthDollars",
    "cpuHours",
    "gpuHours",
    "memoryGiBHours",
    "createdAt",
)


def report_csv(report: dict[str, Any]) -> str:
    """The report's clusters, one row each (for a spreadsheet)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report["clusters"]:
        res, used, hours = row["resources"], row["used"], row["resourceHours"]
        writer.writerow(
            [
                row["name"],
                row["phase"],
                *(f"{res.get(k, 0.0):g}" for k in usage.RESOURCES),
                *(f"{used.get(k, 0.0):.4g}" for k in usage.RESOURCES),
                f"{row['dollarsPerHour']:.6f}",
                f"{row['accruedDollars']:.6f}",
                f"{row['monthDollars']:.6f}",
                *(f"{hours.get(k, 0.0):.4f}" for k in usage.METERED),
                row["createdAt"],
            ]
        )
    return out.getvalue()


def usage_severity(state: str) -> Severity:
    return Severity.ERROR if state == "exceeded" else Severity.WARNING


def _runs(cluster: Cluster) -> bool:
    return cluster.phase not in _FREE and any(usage.costs(n) for n in cluster.nodes)


def _meter_of(raw: Any, cluster: Cluster, now: float) -> Meter | None:
    """The cluster's meter; a fresh one if it has none; None if the record is another cluster's
    (one deleted and created again under the same name)."""
    if not isinstance(raw, dict):
        return Meter.start(cluster.created_at, now)
    try:
        meter = Meter.from_dict(raw)
    except (KeyError, TypeError, ValueError):
        log.warning("eksray: the usage meter of %s cannot be read; starting it again", cluster.name)
        return Meter.start(cluster.created_at, now)
    if abs(meter.created_at - cluster.created_at) > 1.0:
        return None
    return meter


def _close(data: dict[str, Any], meter: Meter, now: float | None) -> None:
    if now is not None:
        meter.advance(now, 0.0, {})
    month = data["months"].setdefault(meter.month or usage.month_of(meter.at), {})
    month["closed"] = float(month.get("closed", 0.0)) + meter.month_accrued
    month["closedResourceHours"] = usage.sum_hours(
        [month.get("closedResourceHours") or {}, meter.resource_hours]
    )
