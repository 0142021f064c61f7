"""Usage, cost, quotas and budgets: the meter with a controlled clock, quota precedence and
refusals (409 at create, scale and resume), the budget's warnings, the report and its CSV."""

from __future__ import annotations

import calendar
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from eksray_jupyter.core import quotas
from eksray_jupyter.core.accounting import BudgetNotice
from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.errors import ConflictError
from eksray_jupyter.core.service import ClusterService
from eksray_jupyter.core.usage import Meter

from .memory_backend import MemoryBackend

HOUR = 3600.0
T0 = calendar.timegm((2026, 12, 3, 12, 0, 0))


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_service(state_dir: Path, clock: Clock, **settings: Any) -> ClusterService:
    config = EKSRay(state_dir=str(state_dir), owner="alice", **settings)
    service = ClusterService(config, MemoryBackend(profiles=config.profiles))
    service.accounting.clock = clock
    return service


def spec(
    name: str, cpu: float = 1, replicas: int = 1, max_replicas: int = 2, autoscaling: bool = False
) -> dict:
    return {
        "name": name,
        "head": {"cpu": cpu},
        "workerGroups": [
            {
                "groupName": "cpu",
                "replicas": replicas,
                "minReplicas": 0,
                "maxReplicas": max_replicas,
                "cpu": cpu,
            }
        ],
        "autoscaling": {"enabled": autoscaling},
    }


# --- the meter --------------------------------------------------------------------------------


def test_a_meter_charges_each_rate_for_the_time_it_held() -> None:
    meter = Meter.start(T0, T0)
    meter.advance(T0, 2.0, {"cpu": 4})
    meter.advance(T0 + HOUR, 0.5, {"cpu": 1})  # one hour at $2
    meter.advance(T0 + 3 * HOUR, 0.5, {"cpu": 1})  # two hours at $0.50
    assert meter.accrued == pytest.approx(3.0)
    assert meter.resource_hours["cpu"] == pytest.approx(4 + 2)
    # Going back in time charges nothing (a clock step, two processes' clocks).
    meter.advance(T0, 0.5, {"cpu": 1})
    assert meter.accrued == pytest.approx(3.0)


def test_a_charge_across_a_month_boundary_is_split_between_the_months() -> None:
    end_of_november = calendar.timegm((2026, 11, 30, 23, 0, 0))
    meter = Meter.start(end_of_november, end_of_november)
    meter.advance(end_of_november, 1.0, {"cpu": 1})
    meter.advance(end_of_november + 3 * HOUR, 1.0, {"cpu": 1})  # 1 h in November, 2 h in December
    assert meter.accrued == pytest.approx(3.0)
    assert meter.month == "2026-12"
    assert meter.accrued_in("2026-12") == pytest.approx(2.0)
    assert meter.accrued_in("2026-11") == 0.0


# --- quotas -----------------------------------------------------------------------------------


def test_a_users_entry_wins_then_the_most_generous_group_then_the_default() -> None:
    config = {
        "default": {"maxClusters": 2, "maxCpus": 8, "monthlyBudget": 100},
        "users": {"alice": {"maxCpus": 4}},
        "groups": {"ml": {"maxClusters": 5, "maxGpus": 1}, "big": {"maxClusters": 9, "maxGpus": None}},
    }
    limits = quotas.limits_for(config, "alice", ["ml", "big"])
    assert limits.values["maxCpus"] == 4 and limits.sources["maxCpus"] == "user alice"
    assert limits.values["maxClusters"] == 9 and limits.sources["maxClusters"] == "group big"
    assert limits.values["maxGpus"] is None and limits.sources["maxGpus"] == "group big"
    assert limits.values["monthlyBudget"] == 100 and limits.sources["monthlyBudget"] == "default"
    assert limits.values["maxMemoryGiB"] is None
    bob = quotas.limits_for(config, "bob", [])
    assert bob.values["maxCpus"] == 8 and bob.values["maxClusters"] == 2


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"defaults": {}}, "unknown key 'defaults'"),
        ({"default": {"maxCPUs": 3}}, "unknown limit 'maxCPUs'"),
        ({"default": {"maxCpus": -1}}, "must be a number ≥ 0"),
        ({"users": {"alice": 3}}, "must be a dict of limits"),
    ],
)
def test_a_wrong_quota_setting_is_refused_saying_what_to_fix(setting: dict, message: str) -> None:
    with pytest.raises(Exception, match=message):
        EKSRay(quotas=setting)


def test_a_wrong_price_setting_is_refused() -> None:
    with pytest.raises(Exception, match="unknown key 'cpu'"):
        EKSRay(prices={"cpu": 1})
    with pytest.raises(Exception, match="must be a number"):
        EKSRay(prices={"cpuHour": "cheap"})


def test_create_past_the_cpu_quota_is_refused_with_the_limit_the_usage_and_what_to_do(tmp_path: Path) -> None:
    service = make_service(tmp_path, Clock(), quotas={"default": {"maxCpus": 6}})
    service.create(spec("one", cpu=2, replicas=1))  # head 2 + 1 worker x 2 = 4 CPUs
    with pytest.raises(ConflictError) as info:
        service.create(spec("two", cpu=2, replicas=1))
    message = str(info.value)
    assert "CPUs: 8 would exceed the limit of 6 (default; in use now: 4)" in message
    assert "Delete or suspend a cluster" in message
    assert [c.name for c in service.list()] == ["one"]  # nothing half-made


def test_the_autoscaling_maximum_counts_against_the_quota(tmp_path: Path) -> None:
    service = make_service(tmp_path, Clock(), quotas={"users": {"alice": {"maxCpus": 3}}})
    with pytest.raises(ConflictError, match=r"CPUs: 5 would exceed the limit of 3 \(user alice"):
        service.create(spec("auto", replicas=0, max_replicas=4, autoscaling=True))
    service.create(spec("fixed", replicas=2, max_replicas=4))  # without autoscaling: replicas count
    assert service.get("fixed")


def test_scaling_past_a_quota_is_refused_and_scaling_down_stays_possible(tmp_path: Path) -> None:
    service = make_service(tmp_path, Clock(), quotas={"default": {"maxCpus": 3}})
    service.create(spec("demo", replicas=1, max_replicas=4))
    with pytest.raises(ConflictError, match=r"Scaling cluster 'demo'.*CPUs: 4 would exceed the limit of 3"):
        service.scale("demo", {"workerGroups": [{"groupName": "cpu", "replicas": 3}]})
    assert service.get("demo").spec["workerGroups"][0]["replicas"] == 1
    # An admin lowers the quota below what runs: shrinking is still allowed.
    service.config.quotas = {"default": {"maxCpus": 1}}
    service.scale("demo", {"workerGroups": [{"groupName": "cpu", "replicas": 0}]})
    assert service.get("demo").spec["workerGroups"][0]["replicas"] == 0


def test_raising_max_replicas_with_autoscaling_counts(tmp_path: Path) -> None:
    service = make_service(tmp_path, Clock(), quotas={"default": {"maxCpus": 3}})
    service.create(spec("demo", replicas=0, max_replicas=2, autoscaling=True))
    with pytest.raises(ConflictError, match="CPUs: 5 would exceed"):
        service.scale("demo", {"workerGroups": [{"groupName": "cpu", "maxReplicas": 4}]})


def test_the_cluster_count_and_dollars_per_hour_limits_act(tmp_path: Path) -> None:
    service = make_service(
        tmp_path,
        Clock(),
        prices={"cpuHour": 0.5},
        quotas={"default": {"maxClusters": 2, "maxDollarsPerHour": 1.6}},
    )
    service.create(spec("a", replicas=1))  # 2 CPUs: $1/h
    with pytest.raises(ConflictError, match=r"dollars per hour: \$2.00/h would exceed the limit of \$1.60/h"):
        service.create(spec("b", replicas=1))
    service.create(spec("b", replicas=0))  # 1 CPU: $0.50/h → $1.50/h in all
    with pytest.raises(ConflictError, match="clusters: 3 would exceed the limit of 2"):
        service.create(spec("c", cpu=0.1, replicas=0))


# --- cost and budget --------------------------------------------------------------------------


def test_cost_accrues_with_the_clock_and_a_deleted_cluster_keeps_counting_for_the_month(
    tmp_path: Path,
) -> None:
    clock = Clock()
    service = make_service(tmp_path, clock, prices={"cpuHour": 0.25, "memoryGiBHour": 0.01})
    service.create({**spec("demo", cpu=2, replicas=1), "head": {"cpu": 2, "memory": 4}})
    service.accounting.sample()
    clock.now += 2 * HOUR
    report = service.accounting.report()
    row = report["clusters"][0]
    # head: 2 CPU at $0.25 + 4 GiB at $0.01 = $0.54; worker: 2 CPU at $0.25 = $0.50
    assert row["dollarsPerHour"] == pytest.approx(1.04)
    assert row["accruedDollars"] == pytest.approx(2.08)
    assert row["resourceHours"]["cpu"] == pytest.approx(8.0)
    assert row["resources"]["cpu"] == 4 and row["resources"]["memoryGiB"] == 4
    meter = service.delete("demo")
    assert meter is not None and meter.accrued == pytest.approx(2.08)
    clock.now += HOUR
    after = service.accounting.report()
    assert after["clusters"] == []
    assert after["totals"]["closedDollars"] == pytest.approx(2.08)
    assert after["budget"]["spentDollars"] == pytest.approx(2.08)


def test_without_prices_usage_is_shown_in_resource_hours(tmp_path: Path) -> None:
    clock = Clock()
    service = make_service(tmp_path, clock)
    service.create(spec("demo", replicas=1))
    service.accounting.sample()
    clock.now += HOUR / 2
    row = service.accounting.report()["clusters"][0]
    assert row["dollarsPerHour"] == 0 and row["priceBasis"] == ["no prices set"]
    assert row["resourceHours"]["cpu"] == pytest.approx(1.0)


def test_the_budget_warns_once_at_80_percent_then_refuses_new_clusters_at_100(tmp_path: Path) -> None:
    clock = Clock()
    service = make_service(
        tmp_path, clock, prices={"cpuHour": 1.0}, quotas={"default": {"monthlyBudget": 10}}
    )
    service.create(spec("demo", replicas=1))  # $2/h
    clusters = service.list()
    assert service.accounting.budget_pass(clusters) is None
    clock.now += 4.1 * HOUR  # $8.20: 82 %
    notice = service.accounting.budget_pass(service.list())
    assert isinstance(notice, BudgetNotice) and notice.state == "warning"
    assert "$8.20 of your $10.00 budget" in notice.message
    assert any("$8.20 of your $10.00" in e.message for e in service.events("demo"))
    assert service.accounting.budget_pass(service.list()) is None  # once per month and threshold
    clock.now += HOUR  # $10.20
    exceeded = service.accounting.budget_pass(service.list())
    assert exceeded is not None and exceeded.state == "exceeded"
    with pytest.raises(
        ConflictError, match=r"Creating cluster 'more' is refused: this month's spending \(\$10.20\)"
    ):
        service.create(spec("more", replicas=0))
    # Next month the budget starts again.
    clock.now = calendar.timegm((2027, 1, 1, 0, 30, 0))
    service.create(spec("more", replicas=0))


def test_the_report_totals_and_csv(tmp_path: Path) -> None:
    clock = Clock()
    service = make_service(tmp_path, clock, prices={"cpuHour": 0.1}, quotas={"default": {"maxCpus": 10}})
    service.create(spec("a", replicas=1))
    service.create(spec("b", replicas=2))
    service.accounting.sample()
    clock.now += HOUR
    report = service.accounting.report()
    assert report["totals"]["dollarsPerHour"] == pytest.approx(0.5)
    assert report["totals"]["accruedDollars"] == pytest.approx(0.5)
    assert report["quota"]["usage"]["cpu"] == 5 and report["quota"]["limits"]["maxCpus"] == 10
    from eksray_jupyter.core.accounting import report_csv

    rows = list(csv.DictReader(io.StringIO(report_csv(report))))
    assert [(r["name"], r["cpu"], r["accruedDollars"]) for r in rows] == [
        ("a", "2", "0.200000"),
        ("b", "3", "0.300000"),
    ]


def test_an_unreadable_usage_record_is_refused_never_taken_for_empty(tmp_path: Path) -> None:
    service = make_service(tmp_path, Clock(), quotas={"default": {"monthlyBudget": 5}})
    service.accounting.store.path.parent.mkdir(parents=True)
    service.accounting.store.path.write_text("{half")
    with pytest.raises(ConflictError, match=r"cannot be read.*fix or move it away"):
        service.create(spec("demo"))
    assert service.accounting.store.path.read_text() == "{half"


# --- REST -------------------------------------------------------------------------------------


@pytest.fixture
def eksray_settings() -> dict[str, Any]:
    return {"quotas": {"default": {"maxClusters": 1, "maxCpus": 4}}, "prices": {"cpuHour": 0.04}}


async def fetch(jp_fetch: Any, *path: str, method: str = "GET", body: Any = None, **kw: Any) -> Any:
    return await jp_fetch(
        "eksray", "api", *path, method=method, body=None if body is None else json.dumps(body), **kw
    )


async def test_rest_refuses_a_create_past_the_quota_with_409_and_reports_usage(jp_fetch: Any) -> None:
    await fetch(jp_fetch, "clusters", method="POST", body=spec("one", replicas=1, max_replicas=4))
    with pytest.raises(HTTPClientError) as info:
        await fetch(jp_fetch, "clusters", method="POST", body=spec("two", replicas=0))
    assert info.value.code == 409
    body = json.loads(info.value.response.body)
    assert "clusters: 2 would exceed the limit of 1 (default; in use now: 1)" in body["message"]
    with pytest.raises(HTTPClientError) as scaled:
        await fetch(
            jp_fetch,
            "clusters",
            "one",
            method="PATCH",
            body={"workerGroups": [{"groupName": "cpu", "replicas": 4}]},
        )
    assert (
        scaled.value.code == 409
        and "CPUs: 5 would exceed the limit of 4" in json.loads(scaled.value.response.body)["message"]
    )

    report = json.loads((await fetch(jp_fetch, "usage")).body)
    assert [c["name"] for c in report["clusters"]] == ["one"]
    assert report["clusters"][0]["dollarsPerHour"] == pytest.approx(0.08)
    assert report["quota"]["limits"]["maxClusters"] == 1 and report["quota"]["usage"]["clusters"] == 1
    assert report["budget"]["state"] == "ok" and report["budget"]["monthlyBudget"] is None
    response = await fetch(jp_fetch, "usage", params={"format": "csv"})
    assert response.headers["Content-Type"].startswith("text/csv")
    assert response.body.decode().splitlines()[1].startswith("one,ready,2,")
    with pytest.raises(HTTPClientError) as bad:
        await fetch(jp_fetch, "usage", params={"format": "xml"})
    assert bad.value.code == 400 and "use json or csv" in bad.value.response.body.decode()


def test_a_suspended_cluster_counts_only_as_a_cluster_and_resuming_it_is_checked(tmp_path: Path) -> None:
    from .fakes import FakeBackend

    config = EKSRay(state_dir=str(tmp_path), owner="alice", quotas={"default": {"maxCpus": 4}})
    service = ClusterService(config, FakeBackend(state_dir=str(tmp_path), profiles=config.profiles))
    service.create(spec("first", replicas=1))  # 2 CPUs at its maximum
    service.suspend("first")
    service.create(spec("second", cpu=1, replicas=2, max_replicas=2))  # 3 CPUs: fits beside a suspended one
    with pytest.raises(ConflictError, match=r"Resuming cluster 'first'.*CPUs: 5 would exceed the limit of 4"):
        service.resume("first")
    service.delete("second")
    service.resume("first")
    assert service.get("first").phase.value != "suspended"


def test_a_used_up_budget_suspends_idle_clusters_when_the_admin_chose_so(tmp_path: Path) -> None:
    from .fakes import FakeBackend

    clock = Clock()
    config = EKSRay(
        state_dir=str(tmp_path),
        owner="alice",
        prices={"cpuHour": 1.0},
        quotas={"default": {"monthlyBudget": 1}},
        budget_exceeded_action="suspend-idle",
    )
    backend = FakeBackend(state_dir=str(tmp_path), profiles=config.profiles)
    service = ClusterService(config, backend)
    service.accounting.clock = clock
    service.create(spec("idle", replicas=0))
    service.create(spec("busy", replicas=0))
    backend.busy_reasons = lambda owner, name: ["1 Ray task(s) running or waiting"] if name == "busy" else []  # type: ignore[method-assign]
    service.accounting.sample()
    clock.now += 2 * HOUR  # $1/h each: $4 of $1
    notice = service.accounting.budget_pass(service.list())
    assert notice is not None and notice.state == "exceeded"
    assert service.get("idle").phase.value == "suspended"
    assert service.get("busy").phase.value != "suspended"
