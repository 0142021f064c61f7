"""Node prices for the KubeRay backend: the AWS answers are stubbed on real boto3 clients."""

from __future__ import annotations

import functools
import json
import logging
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.stub import Stubber

from eksray_jupyter.backends.kuberay.pricing import NodePrice, NodePricer, node_market, node_zone

REGION = "us-east-1"
T0 = 1_700_000_000.0  # 2023-11-14 UTC
NOW = datetime.fromtimestamp(T0, tz=timezone.utc)
ON_DEMAND_M5 = "AWS on-demand price of m5.xlarge in us-east-1"


def labels(itype: str = "m5.xlarge", zone: str | None = None, **extra: str) -> dict[str, str]:
    result = {"node.kubernetes.io/instance-type": itype, "kubernetes.io/os": "linux", **extra}
    if zone:
        result["topology.kubernetes.io/zone"] = zone
    return result


def spot_labels(itype: str = "m5.xlarge", zone: str | None = None) -> dict[str, str]:
    return labels(itype, zone, **{"karpenter.sh/capacity-type": "spot"})


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@functools.cache
def _botocore_session() -> Any:
    """One botocore session for the module: it loads the (large) EC2 model once."""
    return botocore.session.get_session()


class FakeAWS:
    """A session_factory whose session hands out stubbed real clients, counting every API call
    (also unstubbed ones, which the pricer would swallow as a failure)."""

    def __init__(self) -> None:
        session = boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=REGION,
            botocore_session=_botocore_session(),
        )
        self.clients = {
            "pricing": session.client("pricing", region_name="us-east-1"),
            "ec2": session.client("ec2", region_name=REGION),
        }
        self.calls: list[str] = []
        self.client_kwargs: dict[str, dict[str, Any]] = {}
        self.delay = 0.0
        self.stubs = {}
        for name, client in self.clients.items():
            client.meta.events.register("provide-client-params.*.*", self._count)
            self.stubs[name] = Stubber(client)
            self.stubs[name].activate()

    def _count(self, model: Any, **_kwargs: Any) -> None:
        self.calls.append(model.name)
        time.sleep(self.delay)

    def __call__(self) -> FakeAWS:  # the session factory: returns "the session"
        return self

    def client(self, name: str, **kwargs: Any) -> Any:
        self.client_kwargs[name] = kwargs
        return self.clients[name]

    def on_demand(self, *prices: str, itype: str = "m5.xlarge") -> None:
        self.stubs["pricing"].add_response(
            "get_products",
            {"FormatVersion": "aws_v1", "PriceList": [product(itype, p, i) for i, p in enumerate(prices)]},
            {
                "ServiceCode": "AmazonEC2",
                "Filters": [
                    {"Type": "TERM_MATCH", "Field": "instanceType", "Value": itype},
                    {"Type": "TERM_MATCH", "Field": "regionCode", "Value": REGION},
                    {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
                    {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
                    {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
                    {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
                ],
                "MaxResults": 100,
            },
        )

    def spot(self, history: list[tuple[str, str, float]], zone: str | None = None, at: float = T0) -> None:
        expected: dict[str, Any] = {
            "InstanceTypes": ["m5.xlarge"],
            "ProductDescriptions": ["Linux/UNIX"],
            "StartTime": datetime.fromtimestamp(at, tz=timezone.utc),
        }
        if zone:
            expected["AvailabilityZone"] = zone
        entries = [
            {
                "AvailabilityZone": z,
                "InstanceType": "m5.xlarge",
                "ProductDescription": "Linux/UNIX",
                "SpotPrice": price,
                "Timestamp": datetime.fromtimestamp(stamp, tz=timezone.utc),
            }
            for z, price, stamp in history
        ]
        self.stubs["ec2"].add_response("describe_spot_price_history", {"SpotPriceHistory": entries}, expected)

    def error(self, service: str, method: str, code: str) -> None:
        self.stubs[service].add_client_error(method, service_error_code=code, http_status_code=400)

    def done(self) -> None:
        for stub in self.stubs.values():
            stub.assert_no_pending_responses()


def product(itype: str, usd: str, n: int = 0) -> str:
    """A Price List entry as AWS sends it: a JSON string."""
    sku = f"SKU{n}EXAMPLE"
    return json.dumps(
        {
            "product": {
                "productFamily": "Compute Instance",
                "attributes": {
                    "instanceType": itype,
                    "regionCode": REGION,
                    "location": "US East (N. Virginia)",
                    "operatingSystem": "Linux",
                    "tenancy": "Shared",
                    "preInstalledSw": "NA",
                    "capacitystatus": "Used",
                    "vcpu": "4",
                    "memory": "16 GiB",
                },
                "sku": sku,
            },
            "serviceCode": "AmazonEC2",
            "terms": {
                "OnDemand": {
                    f"{sku}.JRTCKXETXF": {
                        "offerTermCode": "JRTCKXETXF",
                        "sku": sku,
                        "effectiveDate": "2023-11-01T00:00:00Z",
                        "termAttributes": {},
                        "priceDimensions": {
                            f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "description": f"${usd} per On Demand Linux {itype} Instance Hour",
                                "beginRange": "0",
                                "endRange": "Inf",
                                "appliesTo": [],
                                "rateCode": f"{sku}.JRTCKXETXF.6YS6EN2CT7",
                                "pricePerUnit": {"USD": usd},
                            }
                        },
                    }
                }
            },
            "version": "20231101000000",
            "publicationDate": "2023-11-01T00:00:00Z",
        }
    )


@pytest.fixture
def aws() -> FakeAWS:
    return FakeAWS()


def pricer(aws: FakeAWS, cache: Path | None = None, clock: Clock | None = None, **kw: Any) -> NodePricer:
    return NodePricer(region=REGION, cache_file=cache, session_factory=aws, clock=clock or Clock(), **kw)


# -- labels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_labels", "expected"),
    [
        ({"node.kubernetes.io/instance-type": "m5.xlarge", "karpenter.sh/capacity-type": "spot"}, ("m5.xlarge", "spot")),
        ({"node.kubernetes.io/instance-type": "m5.xlarge", "karpenter.sh/capacity-type": "on-demand"}, ("m5.xlarge", "on-demand")),
        ({"node.kubernetes.io/instance-type": "g5.xlarge", "eks.amazonaws.com/capacityType": "SPOT"}, ("g5.xlarge", "spot")),
        ({"node.kubernetes.io/instance-type": "g5.xlarge", "eks.amazonaws.com/capacityType": "ON_DEMAND"}, ("g5.xlarge", "on-demand")),
        ({"beta.kubernetes.io/instance-type": "c5.large"}, ("c5.large", "on-demand")),
        ({"kubernetes.io/os": "linux"}, (None, "on-demand")),
    ],
)  # fmt: skip
def test_node_market(node_labels: dict[str, str], expected: tuple[str | None, str]) -> None:
    assert node_market(node_labels) == expected


def test_node_zone() -> None:
    assert node_zone({"topology.kubernetes.io/zone": "us-east-1b"}) == "us-east-1b"
    assert node_zone({"failure-domain.beta.kubernetes.io/zone": "us-east-1c"}) == "us-east-1c"
    assert node_zone({}) is None


def test_node_without_instance_type_has_no_price(aws: FakeAWS) -> None:
    assert pricer(aws).price({"kubernetes.io/os": "linux"}) is None
    assert aws.calls == []


# -- AWS answers -------------------------------------------------------------------------------


def test_on_demand_price_is_the_lowest_non_zero_of_the_products(aws: FakeAWS) -> None:
    aws.on_demand("0.2140000000", "0.0000000000", "0.1920000000")
    assert pricer(aws).price(labels()) == NodePrice(0.192, ON_DEMAND_M5)
    assert aws.calls == ["GetProducts"]
    kwargs = aws.client_kwargs["pricing"]
    assert kwargs["region_name"] == "us-east-1"
    assert (kwargs["config"].connect_timeout, kwargs["config"].read_timeout) == (2, 5)
    assert kwargs["config"].retries == {"max_attempts": 2}
    aws.done()


def test_odd_products_are_skipped(aws: FakeAWS) -> None:
    odd = json.loads(product("m5.xlarge", "0.5"))
    odd["terms"]["OnDemand"] = {
        "x": {"priceDimensions": {"y": {"unit": "Quantity", "pricePerUnit": {"USD": "9"}}}}
    }
    aws.stubs["pricing"].add_response(
        "get_products",
        {"PriceList": ["not json", json.dumps({"terms": {}}), json.dumps(odd), product("m5.xlarge", "0.25")]},
    )
    assert pricer(aws).price(labels()) == NodePrice(0.25, ON_DEMAND_M5)


def test_spot_price_of_the_zone_is_its_newest_entry(aws: FakeAWS) -> None:
    aws.spot([("us-east-1a", "0.0500", T0 - 7200), ("us-east-1a", "0.0712", T0 - 60)], zone="us-east-1a")
    assert pricer(aws).price(spot_labels(zone="us-east-1a")) == NodePrice(
        0.0712, "EC2 spot price of m5.xlarge in us-east-1a"
    )
    assert aws.calls == ["DescribeSpotPriceHistory"]
    assert aws.client_kwargs["ec2"]["region_name"] == REGION
    aws.done()


def test_spot_price_without_zone_is_the_lowest_across_zones(aws: FakeAWS) -> None:
    aws.spot(
        [
            ("us-east-1a", "0.0400", T0 - 7200),  # old: not the price any more
            ("us-east-1a", "0.0800", T0 - 60),
            ("us-east-1b", "0.0650", T0 - 300),
            ("us-east-1c", "0.0900", T0 - 30),
        ]
    )
    assert pricer(aws).price(spot_labels()) == NodePrice(
        0.065, "EC2 spot price of m5.xlarge across us-east-1 zones (lowest)"
    )
    aws.done()


def test_spot_without_answer_falls_back_to_on_demand(aws: FakeAWS) -> None:
    aws.spot([], zone="us-east-1a")
    aws.on_demand("0.192")
    assert pricer(aws).price(spot_labels(zone="us-east-1a")) == NodePrice(
        0.192, f"{ON_DEMAND_M5} (no spot price found)"
    )
    assert aws.calls == ["DescribeSpotPriceHistory", "GetProducts"]
    aws.done()


def test_spot_error_falls_back_to_on_demand(aws: FakeAWS) -> None:
    aws.error("ec2", "describe_spot_price_history", "UnauthorizedOperation")
    aws.on_demand("0.192")
    p = pricer(aws)
    assert p.price(spot_labels(zone="us-east-1a")) == NodePrice(
        0.192, f"{ON_DEMAND_M5} (no spot price found)"
    )
    # Both remembered: the spot failure for retry_seconds, the on-demand price in the cache.
    assert p.price(spot_labels(zone="us-east-1a")) == NodePrice(
        0.192, f"{ON_DEMAND_M5} (no spot price found)"
    )
    assert aws.calls == ["DescribeSpotPriceHistory", "GetProducts"]
    aws.done()


# -- the admin price table ---------------------------------------------------------------------


def test_override_table_wins_and_calls_no_aws(aws: FakeAWS) -> None:
    table = {"m5.xlarge": 0.2, "g5.xlarge": {"on-demand": 1.006, "spot": 0.45}}
    p = pricer(aws, overrides=table)
    assert p.price(labels()) == NodePrice(0.2, "admin price table (m5.xlarge)")
    assert p.price(spot_labels(zone="us-east-1a")) == NodePrice(0.2, "admin price table (m5.xlarge)")
    eks_spot = labels("g5.xlarge", "us-east-1a", **{"eks.amazonaws.com/capacityType": "SPOT"})
    assert p.price(eks_spot) == NodePrice(0.45, "admin price table (g5.xlarge, spot)")
    assert p.price(labels("g5.xlarge")) == NodePrice(1.006, "admin price table (g5.xlarge, on-demand)")
    assert aws.calls == []
    assert aws.client_kwargs == {}


def test_override_for_one_capacity_type_leaves_the_other_to_aws(aws: FakeAWS) -> None:
    aws.spot([], zone="us-east-1a")
    p = pricer(aws, overrides={"m5.xlarge": {"on-demand": 0.3}, "bad": "cheap"})
    assert p.price(spot_labels(zone="us-east-1a")) == NodePrice(
        0.3, "admin price table (m5.xlarge, on-demand) (no spot price found)"
    )
    assert aws.calls == ["DescribeSpotPriceHistory"]
    aws.done()


# -- the cache file ----------------------------------------------------------------------------


def test_cache_file_is_reused_by_a_new_pricer(aws: FakeAWS, tmp_path: Path) -> None:
    cache = tmp_path / "not-yet" / "prices.json"
    aws.on_demand("0.192")
    assert pricer(aws, cache).price(labels()) == NodePrice(0.192, ON_DEMAND_M5)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert json.loads(cache.read_text())["prices"] == {
        "on-demand|us-east-1|m5.xlarge": {"price": 0.192, "fetched_at": T0}
    }
    again = FakeAWS()
    assert pricer(again, cache, Clock(T0 + 3600)).price(labels()) == NodePrice(0.192, ON_DEMAND_M5)
    assert again.calls == []


def test_cache_is_refreshed_after_refresh_seconds(aws: FakeAWS, tmp_path: Path) -> None:
    cache = tmp_path / "prices.json"
    clock = Clock()
    p = pricer(aws, cache, clock, refresh_seconds=1000)
    aws.on_demand("0.192")
    aws.on_demand("0.2")
    assert p.price(labels()) == NodePrice(0.192, ON_DEMAND_M5)
    clock.now += 999
    assert p.price(labels()) == NodePrice(0.192, ON_DEMAND_M5)
    assert aws.calls == ["GetProducts"]
    clock.now += 1
    assert p.price(labels()) == NodePrice(0.2, ON_DEMAND_M5)
    assert aws.calls == ["GetProducts", "GetProducts"]
    assert json.loads(cache.read_text())["prices"]["on-demand|us-east-1|m5.xlarge"] == {
        "price": 0.2,
        "fetched_at": T0 + 1000,
    }
    aws.done()


def test_failed_refresh_keeps_the_stale_price(aws: FakeAWS, tmp_path: Path) -> None:
    clock = Clock()
    p = pricer(aws, tmp_path / "prices.json", clock, refresh_seconds=86400, retry_seconds=600)
    aws.on_demand("0.192")
    aws.error("pricing", "get_products", "ThrottlingException")
    assert p.price(labels()) == NodePrice(0.192, ON_DEMAND_M5)
    clock.now += 2 * 86400
    stale = NodePrice(0.192, f"{ON_DEMAND_M5} as of 2023-11-14")
    assert p.price(labels()) == stale
    clock.now += 599
    assert p.price(labels()) == stale  # the failure is remembered: no call
    assert aws.calls == ["GetProducts", "GetProducts"]
    aws.done()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"prices": {"k": {"price": "x"}}}'])
def test_unreadable_cache_file_is_ignored(
    aws: FakeAWS, tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "prices.json"
    cache.write_text(content)
    aws.on_demand("0.192")
    with caplog.at_level(logging.INFO, logger="eksray_jupyter.backends.kuberay.pricing"):
        assert pricer(aws, cache).price(labels()) == NodePrice(0.192, ON_DEMAND_M5)
    assert any("Ignoring the node price cache" in r.getMessage() for r in caplog.records)
    assert json.loads(cache.read_text())["prices"] == {
        "on-demand|us-east-1|m5.xlarge": {"price": 0.192, "fetched_at": T0}
    }


def test_cache_file_that_cannot_be_written_is_not_fatal(aws: FakeAWS, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    aws.on_demand("0.192")
    assert pricer(aws, blocker / "prices.json").price(labels()) == NodePrice(0.192, ON_DEMAND_M5)


# -- failures ----------------------------------------------------------------------------------


def test_failure_is_remembered_for_retry_seconds_then_retried(
    aws: FakeAWS, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    p = pricer(aws, clock=clock, retry_seconds=600)
    aws.error("pricing", "get_products", "AccessDeniedException")
    aws.on_demand("0.192")
    with caplog.at_level(logging.INFO, logger="eksray_jupyter.backends.kuberay.pricing"):
        assert p.price(labels()) is None
        clock.now += 599
        assert p.price(labels()) is None
    assert aws.calls == ["GetProducts"]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert messages == [f"No {ON_DEMAND_M5} (AccessDeniedException); trying again in 600 s"]
    clock.now += 1
    assert p.price(labels()) == NodePrice(0.192, ON_DEMAND_M5)
    assert aws.calls == ["GetProducts", "GetProducts"]
    aws.done()


def test_no_product_is_a_failure(aws: FakeAWS) -> None:
    clock = Clock()
    p = pricer(aws, clock=clock)
    aws.on_demand()  # an empty PriceList
    assert p.price(labels()) is None
    assert p.price(labels()) is None
    assert aws.calls == ["GetProducts"]
    aws.done()


def test_a_session_that_cannot_be_made_is_a_failure() -> None:
    def no_session() -> Any:
        raise RuntimeError("The config profile (nope) could not be found")

    p = NodePricer(region=REGION, cache_file=None, session_factory=no_session, clock=Clock())
    assert p.price(labels()) is None


# -- threads and imports -----------------------------------------------------------------------


def test_threads_asking_for_one_price_make_one_call(aws: FakeAWS) -> None:
    aws.on_demand("0.192")
    aws.delay = 0.2  # the call is slow, so the other threads arrive while it runs
    p = pricer(aws)
    start = threading.Barrier(6)
    results: list[NodePrice | None] = []

    def ask() -> None:
        start.wait()
        results.append(p.price(labels()))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [NodePrice(0.192, ON_DEMAND_M5)] * 6
    assert aws.calls == ["GetProducts"]
    aws.done()


def test_importing_the_module_does_not_import_boto3() -> None:
    code = (
        "import sys, eksray_jupyter.backends.kuberay.pricing\n"
        "print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
