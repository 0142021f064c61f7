"""What a Ray pod costs: its share (by requests) of its Kubernetes node's price.

The nodes are listed at most once a minute (their sizes also tell a waiting pod that can never
fit, :mod:`.startup`); a node's price comes from :class:`.pricing.NodePricer` on a background
thread, so neither a cluster listing nor a usage read ever waits on AWS: until a price is known,
the pod's price is unknown (or the admin's per-resource prices, where set).

A pod's share of its node: on a GPU node, its GPUs over the node's; elsewhere the mean of its
CPU and memory fractions (a node's price pays for both). Shares of the pods on one node never
add up to more than the node.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ...core.errors import EKSRayError
from ...core.models import Node
from ...core.usage import GIB, NodeRate, Prices, Resources, from_ray
from . import startup
from .pricing import NodePrice, NodePricer, node_market, node_zone

NODE_LIST_TTL_S = 60.0  # how old the node list (sizes, labels) may be
NODE_LIST_RETRY_S = 600.0  # after the API refused to list nodes (a namespaced role)


@dataclass(frozen=True)
class NodeInfo:
    name: str
    size: dict[str, Any]  # startup.node_size: cpu, memory (bytes), gpu, unschedulable
    labels: dict[str, str]

    @property
    def instance_type(self) -> str | None:
        return node_market(self.labels)[0]

    @property
    def price_key(self) -> tuple[str | None, str, str | None]:
        itype, capacity = node_market(self.labels)
        return itype, capacity, node_zone(self.labels)


def pod_share(requests: Resources, size: Mapping[str, Any]) -> float:
    """The fraction of a node a pod's requests take (0..1)."""
    if size.get("gpu") and requests.get("gpu"):
        return min(1.0, requests["gpu"] / size["gpu"])
    parts = []
    if size.get("cpu"):
        parts.append(requests.get("cpu", 0.0) / size["cpu"])
    if size.get("memory"):
        parts.append(requests.get("memoryGiB", 0.0) * GIB / size["memory"])
    return min(1.0, sum(parts) / len(parts)) if parts else 0.0


class NodeCosts:
    def __init__(
        self,
        list_nodes: Callable[[], list[dict[str, Any]]],
        pricer: NodePricer,
        log: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._list_nodes = list_nodes
        self._pricer = pricer
        self._log = log
        self._clock = clock
        self._lock = threading.Lock()
        # (when, nodes by name, or None when the API does not let us list them)
        self._seen: tuple[float, dict[str, NodeInfo] | None] = (float("-inf"), None)
        self._prices: dict[tuple[str | None, str, str | None], NodePrice | None] = {}
        self._looking: set[tuple[str | None, str, str | None]] = set()
        self._executor: ThreadPoolExecutor | None = None

    # --- nodes --------------------------------------------------------------------------------

    def nodes(self) -> dict[str, NodeInfo] | None:
        now = self._clock()
        with self._lock:
            at, nodes = self._seen
            if now - at < (NODE_LIST_TTL_S if nodes is not None else NODE_LIST_RETRY_S):
                return nodes
        try:
            raw = self._list_nodes()
            nodes = {
                info.name: info
                for info in (
                    NodeInfo(
                        (n.get("metadata") or {}).get("name", ""),
                        startup.node_size(n),
                        dict((n.get("metadata") or {}).get("labels") or {}),
                    )
                    for n in raw
                )
            }
        except EKSRayError as e:
            self._log.info("eksray: cannot list nodes (sizes, prices): %s", e)
            nodes = None
        with self._lock:
            self._seen = (now, nodes)
        return nodes

    def sizes(self) -> list[dict[str, Any]] | None:
        nodes = self.nodes()
        return None if nodes is None else [n.size for n in nodes.values()]

    def instance_types(self) -> dict[str, str]:
        return {name: n.instance_type for name, n in (self.nodes() or {}).items() if n.instance_type}

    # --- prices -------------------------------------------------------------------------------

    def node_price(self, info: NodeInfo) -> tuple[NodePrice | None, str]:
        """The node's price if known now (never waits); else None and why."""
        if info.instance_type is None:
            return None, f"node {info.name} has no instance-type label"
        key = info.price_key
        with self._lock:
            if key in self._prices:
                price = self._prices[key]
                return price, "" if price else f"no price found for {info.instance_type}"
            if key not in self._looking:
                self._looking.add(key)
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="eksray-prices")
                self._executor.submit(self._look_up, key, dict(info.labels))
        return None, f"the price of {info.instance_type} is being looked up"

    def _look_up(self, key: tuple[str | None, str, str | None], labels: dict[str, str]) -> None:
        try:
            price = self._pricer.price(labels)
        except Exception:  # the pricer logs its own failures; never let this thread die silently
            self._log.exception("eksray: looking up a node price failed")
            price = None
        with self._lock:
            self._prices[key] = price
            self._looking.discard(key)

    def pod_rate(self, node: Node, prices: Prices) -> NodeRate:
        """A pod's dollars per hour: its share of its node's price; the admin's per-resource
        prices where the node's is unknown; 0 while it is not on a node."""
        requests = from_ray(node.resources)
        if not node.host:
            return NodeRate(0.0, "not on a node yet")
        info = (self.nodes() or {}).get(node.host)
        why = f"node {node.host} is not listed (no permission to list nodes?)"
        if info is not None:
            price, why = self.node_price(info)
            if price is not None:
                return NodeRate(price.dollars_per_hour * pod_share(requests, info.size), price.source)
        if prices.configured:
            return NodeRate(prices.rate(requests), f"price table ({why})")
        return NodeRate(None, why)

    def estimate(self, requests: Resources, prices: Prices) -> float | None:
        """A pod's dollars per hour before it is placed: the admin's per-resource prices, else its
        share of the cheapest priced node it fits on."""
        if prices.configured:
            return prices.rate(requests)
        best: float | None = None
        for info in (self.nodes() or {}).values():
            size = info.size
            if size.get("unschedulable"):
                continue
            fits = (
                requests.get("cpu", 0.0) <= size.get("cpu", 0)
                and requests.get("memoryGiB", 0.0) * GIB <= size.get("memory", 0)
                and requests.get("gpu", 0.0) <= size.get("gpu", 0)
            )
            if not fits:
                continue
            price, _ = self.node_price(info)
            if price is not None:
                rate = price.dollars_per_hour * pod_share(requests, size)
                best = rate if best is None else min(best, rate)
        return best

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
