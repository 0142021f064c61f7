"""The price per hour of an EKS node, from its labels, so each Ray pod can be charged its share.

On-demand prices come from the AWS Price List API, spot prices from EC2's spot price history,
and an admin price table (``c.KubeRayBackend.node_prices``) wins over both. Prices are kept in
a small JSON file and refreshed once a day; a failing AWS call is remembered for a while, so a
cluster listing never waits on it twice. boto3 is imported only when a price is looked up.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...core.state_files import write_json_atomic

PRICING_REGION = "us-east-1"  # the Price List API only answers in a few regions
ON_DEMAND = "on-demand"
SPOT = "spot"


@dataclass(frozen=True)
class NodePrice:
    dollars_per_hour: float
    source: str  # plain words for users: where the price comes from


def node_market(labels: Mapping[str, str]) -> tuple[str | None, str]:
    """(instance type, ``"spot"`` or ``"on-demand"``) from a Node's labels (Karpenter's or EKS
    managed node groups'); anything but spot (reserved, capacity blocks) is priced on-demand."""
    itype = labels.get("node.kubernetes.io/instance-type") or labels.get("beta.kubernetes.io/instance-type")
    capacity = labels.get("karpenter.sh/capacity-type") or labels.get("eks.amazonaws.com/capacityType") or ""
    return itype or None, SPOT if capacity.strip().lower() == SPOT else ON_DEMAND


def node_zone(labels: Mapping[str, str]) -> str | None:
    """The node's availability zone (spot prices differ by zone)."""
    return labels.get("topology.kubernetes.io/zone") or labels.get("failure-domain.beta.kubernetes.io/zone")


def _lowest_on_demand(price_list: Any) -> float | None:
    """The lowest non-zero hourly USD price among Price List products (JSON strings)."""
    prices: list[float] = []
    for item in price_list or []:
        try:
            product = json.loads(item) if isinstance(item, str) else item
            for term in product["terms"]["OnDemand"].values():
                for dimension in term["priceDimensions"].values():
                    if str(dimension.get("unit", "")).lower() in ("hrs", "hours"):
                        prices.append(float(dimension["pricePerUnit"]["USD"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # one odd product does not spoil the others
    positive = [p for p in prices if p > 0]
    return min(positive) if positive else None


def _lowest_spot(history: Any) -> float | None:
    """The newest price of each zone, then the lowest across zones."""
    newest: dict[str, tuple[Any, float]] = {}
    for entry in history or []:
        try:
            zone, stamp, price = entry["AvailabilityZone"], entry["Timestamp"], float(entry["SpotPrice"])
            if zone not in newest or stamp > newest[zone][0]:
                newest[zone] = (stamp, price)
        except (ValueError, KeyError, TypeError):
            continue
    positive = [price for _, price in newest.values() if price > 0]
    return min(positive) if positive else None


class NodePricer:
    """Prices nodes of one region; safe to share between threads."""

    def __init__(
        self,
        *,
        region: str,
        cache_file: Path | None,
        overrides: Mapping[str, Any] | None = None,
        session_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.time,
        refresh_seconds: float = 86400.0,
        retry_seconds: float = 600.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.region = region
        self.cache_file = cache_file
        self.refresh_seconds = refresh_seconds
        self.retry_seconds = retry_seconds
        self._session_factory = session_factory
        self._clock = clock
        self._log = log or logging.getLogger(__name__)
        self._overrides = self._read_overrides(overrides or {})
        self._lock = threading.Lock()  # guards _cache, _failures, _key_locks and the file
        self._cache: dict[str, tuple[float, float]] | None = None  # key -> (price, fetched at)
        self._failures: dict[str, float] = {}  # key -> when the lookup last failed
        self._key_locks: dict[str, threading.Lock] = {}  # one AWS call per key at a time
        self._clients_lock = threading.Lock()  # boto3 sessions are not thread-safe
        self._session: Any = None
        self._clients: dict[str, Any] = {}

    def _read_overrides(self, table: Mapping[str, Any]) -> dict[str, dict[str, float]]:
        """``{type: {capacity or "*": price}}``; a value that is not a price is skipped (logged)."""

        def valid(value: Any) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0

        result: dict[str, dict[str, float]] = {}
        for itype, value in table.items():
            if valid(value):
                result[itype] = {"*": float(value)}
            elif isinstance(value, Mapping) and value and all(valid(v) for v in value.values()):
                result[itype] = {str(k).lower().replace("_", "-"): float(v) for k, v in value.items()}
            else:
                self._log.warning("Ignoring node_prices[%r]: not a price or {capacity type: price}", itype)
        return result

    def price(self, labels: Mapping[str, str]) -> NodePrice | None:
        """The node's price per hour, or None when it cannot be known (the caller says so)."""
        itype, capacity = node_market(labels)
        if not itype:
            return None
        if capacity == ON_DEMAND:
            return self._on_demand(itype)
        override = self._override(itype, SPOT)
        if override is not None:
            return override
        zone = node_zone(labels)
        where = f"in {zone}" if zone else f"across {self.region} zones (lowest)"
        key, source = f"spot|{self.region}|{zone or ''}|{itype}", f"EC2 spot price of {itype} {where}"
        spot = self._lookup(key, source, lambda: self._spot(itype, zone))
        if spot is not None:
            return spot
        fallback = self._on_demand(itype)
        return fallback and NodePrice(fallback.dollars_per_hour, f"{fallback.source} (no spot price found)")

    def _override(self, itype: str, capacity: str) -> NodePrice | None:
        prices = self._overrides.get(itype, {})
        if capacity in prices:
            return NodePrice(prices[capacity], f"admin price table ({itype}, {capacity})")
        return NodePrice(prices["*"], f"admin price table ({itype})") if "*" in prices else None

    def _on_demand(self, itype: str) -> NodePrice | None:
        override = self._override(itype, ON_DEMAND)
        if override is not None:
            return override
        source = f"AWS on-demand price of {itype} in {self.region}"
        return self._lookup(f"on-demand|{self.region}|{itype}", source, lambda: self._on_demand_aws(itype))

    def _lookup(self, key: str, source: str, fetch: Callable[[], float | None]) -> NodePrice | None:
        """The cached price if fresh; else fetched (without holding the cache lock); else stale.
        A failure is logged and remembered, so the next ``retry_seconds`` make no call."""
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # threads asking for the same price wait for one call, then read the cache
            with self._lock:
                known = self._known(key, source)
                if known is not None:
                    return known[0]
            try:
                value, reason = fetch(), "no price in the answer"
            except Exception as e:  # botocore: no credentials, network, AccessDenied, throttling...
                response = getattr(e, "response", None)
                code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
                value, reason = None, code or type(e).__name__
            with self._lock:
                now = self._clock()
                if value is None:
                    self._failures[key] = now
                    self._log.info("No %s (%s); trying again in %.0f s", source, reason, self.retry_seconds)
                    return self._stale(key, source)
                self._failures.pop(key, None)
                assert self._cache is not None
                self._cache[key] = (value, now)
                self._save()
                return NodePrice(value, source)

    def _known(self, key: str, source: str) -> tuple[NodePrice | None] | None:
        """Under the lock: ``(answer,)`` when no AWS call should be made now, else None."""
        cache = self._load()
        entry = cache.get(key)
        now = self._clock()
        if entry is not None and now - entry[1] < self.refresh_seconds:
            return (NodePrice(entry[0], source),)
        failed = self._failures.get(key)
        if failed is not None and now - failed < self.retry_seconds:
            return (self._stale(key, source),)
        return None

    def _stale(self, key: str, source: str) -> NodePrice | None:
        entry = (self._cache or {}).get(key)
        if entry is None:
            return None
        day = datetime.fromtimestamp(entry[1], tz=timezone.utc).strftime("%Y-%m-%d")
        return NodePrice(entry[0], f"{source} as of {day}")

    def _load(self) -> dict[str, tuple[float, float]]:
        """The cache, read from its file the first time; an unreadable file is ignored."""
        if self._cache is not None:
            return self._cache
        self._cache = {}
        if self.cache_file is None:
            return self._cache
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
            for key, entry in data["prices"].items():
                price, fetched = float(entry["price"]), float(entry["fetched_at"])
                if price >= 0:
                    self._cache[key] = (price, fetched)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            self._cache.clear()
            self._log.info("Ignoring the node price cache %s (%s)", self.cache_file, type(e).__name__)
        return self._cache

    def _save(self) -> None:
        if self.cache_file is None or self._cache is None:
            return
        prices = {k: {"price": p, "fetched_at": t} for k, (p, t) in self._cache.items()}
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.cache_file, {"version": 1, "prices": prices})
        except OSError as e:
            self._log.info("Cannot write the node price cache %s (%s)", self.cache_file, e)

    def _client(self, service: str, region: str) -> Any:
        with self._clients_lock:
            if service not in self._clients:
                import boto3
                import botocore.config

                if self._session is None:
                    self._session = (self._session_factory or boto3.session.Session)()
                quick = botocore.config.Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2})
                self._clients[service] = self._session.client(service, region_name=region, config=quick)
            return self._clients[service]

    def _on_demand_aws(self, itype: str) -> float | None:
        filters = {
            "instanceType": itype,
            "regionCode": self.region,
            "operatingSystem": "Linux",
            "tenancy": "Shared",
            "preInstalledSw": "NA",
            "capacitystatus": "Used",
        }
        answer = self._client("pricing", PRICING_REGION).get_products(
            ServiceCode="AmazonEC2",
            Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()],
            MaxResults=100,
        )
        return _lowest_on_demand(answer.get("PriceList"))

    def _spot(self, itype: str, zone: str | None) -> float | None:
        params: dict[str, Any] = {
            "InstanceTypes": [itype],
            "ProductDescriptions": ["Linux/UNIX"],
            "StartTime": datetime.fromtimestamp(self._clock(), tz=timezone.utc),
        }
        if zone:
            params["AvailabilityZone"] = zone
        answer = self._client("ec2", self.region).describe_spot_price_history(**params)
        history = answer.get("SpotPriceHistory") or []
        return _lowest_spot([h for h in history if not zone or h.get("AvailabilityZone") == zone])
