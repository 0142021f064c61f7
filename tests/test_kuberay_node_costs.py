"""A pod's share of its node's price; prices looked up off the caller's thread; the estimate
quotas use before a pod is placed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import pytest

from eksray_jupyter.backends.kuberay.node_costs import NodeCosts, pod_share
from eksray_jupyter.backends.kuberay.pricing import NodePrice
from eksray_jupyter.core.errors import BackendError
from eksray_jupyter.core.models import Node
from eksray_jupyter.core.usage import GIB, Prices

from .waiting import wait_until

LOG = logging.getLogger(__name__)


def kube_node(name: str, itype: str | None, cpu: str = "16", memory: str = "64Gi", gpu: int = 0) -> dict:
    labels = {"node.kubernetes.io/instance-type": itype} if itype else {}
    allocatable = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpu)} if gpu else {})}
    return {"metadata": {"name": name, "labels": labels}, "status": {"allocatable": allocatable}, "spec": {}}


class Pricer:
    """Answers from a table, once ``release`` is set (a slow AWS call), counting calls."""

    def __init__(self, table: Mapping[str, float]) -> None:
        self.table = table
        self.calls: list[str] = []
        self.release = threading.Event()

    def price(self, labels: Mapping[str, str]) -> NodePrice | None:
        itype = labels.get("node.kubernetes.io/instance-type", "")
        self.calls.append(itype)
        self.release.wait(10)
        value = self.table.get(itype)
        return None if value is None else NodePrice(value, f"table {itype}")


def pod(host: str | None, cpu: float = 1, memory_gib: float = 2, gpu: float = 0) -> Node:
    resources = {"CPU": cpu, "memory": memory_gib * GIB, **({"GPU": gpu} if gpu else {})}
    return Node("p", "cpu", "worker", "alive", resources, host=host)


def test_a_pods_share_is_the_mean_of_its_cpu_and_memory_fractions_or_its_gpus() -> None:
    size = {"cpu": 16, "memory": 64 * GIB, "gpu": 0}
    assert pod_share({"cpu": 4, "memoryGiB": 32}, size) == pytest.approx((4 / 16 + 32 / 64) / 2)
    gpu_node = {"cpu": 48, "memory": 192 * GIB, "gpu": 4}
    assert pod_share({"cpu": 4, "memoryGiB": 16, "gpu": 1}, gpu_node) == 0.25
    assert pod_share({"cpu": 64, "memoryGiB": 512}, size) == 1.0  # never more than the node


def test_prices_are_looked_up_off_the_callers_thread_and_then_used() -> None:
    pricer = Pricer({"m5.4xlarge": 0.768})
    costs = NodeCosts(lambda: [kube_node("n1", "m5.4xlarge")], pricer, LOG)  # type: ignore[arg-type]
    try:
        first = costs.pod_rate(pod("n1"), Prices())
        # The lookup waits on `release`: the caller did not.
        assert first.dollars_per_hour is None and first.basis == "the price of m5.4xlarge is being looked up"
        pricer.release.set()
        rate = wait_until(
            lambda: (r := costs.pod_rate(pod("n1"), Prices())).dollars_per_hour is not None and r,
            "the looked-up price",
            timeout=10,
        )
        assert rate.dollars_per_hour == pytest.approx(0.768 * (1 / 16 + 2 / 64) / 2)
        assert rate.basis == "table m5.4xlarge"
        costs.pod_rate(pod("n1"), Prices())
        assert pricer.calls == ["m5.4xlarge"]  # once, however often it is asked
    finally:
        costs.close()


def test_unknown_prices_fall_back_to_the_admins_prices_or_say_why() -> None:
    pricer = Pricer({})
    pricer.release.set()
    costs = NodeCosts(lambda: [kube_node("bare", None)], pricer, LOG)  # type: ignore[arg-type]
    try:
        unknown = costs.pod_rate(pod("bare"), Prices())
        assert unknown.dollars_per_hour is None and unknown.basis == "node bare has no instance-type label"
        table = Prices(cpu_hour=0.05, memory_gib_hour=0.01)
        fallback = costs.pod_rate(pod("bare"), table)
        assert fallback.dollars_per_hour == pytest.approx(0.05 + 0.02)
        assert fallback.basis == "price table (node bare has no instance-type label)"
        assert costs.pod_rate(pod(None), Prices()).dollars_per_hour == 0.0  # not placed: not paid
        assert pricer.calls == []
    finally:
        costs.close()


def test_the_estimate_before_placement_is_the_cheapest_node_it_fits() -> None:
    pricer = Pricer({"m5.xlarge": 0.192, "m5.4xlarge": 0.768, "g5.xlarge": 1.006})
    pricer.release.set()
    nodes = [
        kube_node("small", "m5.xlarge", cpu="4", memory="16Gi"),
        kube_node("big", "m5.4xlarge"),
        kube_node("gpu", "g5.xlarge", cpu="4", memory="16Gi", gpu=1),
    ]
    costs = NodeCosts(lambda: nodes, pricer, LOG)  # type: ignore[arg-type]
    try:
        request = {"cpu": 2.0, "memoryGiB": 4.0, "gpu": 0.0}
        wait_until(
            lambda: costs.estimate(request, Prices()) == pytest.approx(0.192 * (2 / 4 + 4 / 16) / 2),
            "estimate",
            timeout=10,
        )
        big = {"cpu": 8.0, "memoryGiB": 16.0, "gpu": 0.0}  # only the 16-CPU node holds it
        assert costs.estimate(big, Prices()) == pytest.approx(0.768 * (8 / 16 + 16 / 64) / 2)
        assert costs.estimate({"cpu": 64.0, "memoryGiB": 1.0, "gpu": 0.0}, Prices()) is None
        assert costs.estimate(request, Prices(cpu_hour=1.0)) == 2.0  # the admin's prices win
    finally:
        costs.close()


def test_a_role_that_cannot_list_nodes_is_asked_again_only_after_a_while() -> None:
    calls: list[int] = []
    now = [0.0]

    def refuse() -> list[Any]:
        calls.append(1)
        raise BackendError("nodes is forbidden")

    costs = NodeCosts(refuse, Pricer({}), LOG, clock=lambda: now[0])  # type: ignore[arg-type]
    assert costs.sizes() is None and costs.pod_rate(pod("n1"), Prices()).dollars_per_hour is None
    now[0] += 599
    costs.sizes()
    assert len(calls) == 1
    now[0] += 2
    costs.sizes()
    assert len(calls) == 2
