"""The simulated cluster side of the fake, run on the server's event loop.

:class:`RayOperator` hosts the kubelet (``kubelet.PodSimulator``: every pod bound to one fake
node and started after ``pod_ready_delay``), the RayCluster controller (``raycluster``) and
the optional RayJob controller (``rayjob``), feeds them the store's changes, and owns their
timers and the :class:`OperatorConfig` tests change while it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .controller import Controller
from .errors import ApiError
from .kubelet import PodSimulator
from .raycluster import RayClusterController
from .rayjob import RayJobController
from .recorder import EventRecorder
from .store import ResourceType, Store, WatchEvent


@dataclass
class OperatorConfig:
    enabled: bool = True  # the KubeRay controllers (pods are simulated regardless)
    # Pod life cycle: seconds from binding to Running+Ready; None = stay Pending/not-ready
    # until PodSimulator.release() is called.
    pod_ready_delay: float | None = 0.1
    # Graceful deletion period for pods (deletionTimestamp set, then gone); 0 = immediate.
    pod_termination_delay: float = 0.0
    # Make every head/worker pod creation fail (quota / admission webhook rejections).
    fail_pod_creation: bool = False
    # RayJob controller (simple life cycle); off by default: RayJobs are just stored.
    rayjob_lifecycle: bool = False
    job_duration: float = 0.5
    job_result: str = "SUCCEEDED"  # or FAILED
    # True: a Running RayJob stays Running (no job_duration timer) until the test hook
    # ``RayJobController.finish_job(ns, name, result)`` decides its outcome.
    rayjob_hold: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RayOperator:
    """Hosts the simulated controllers on the server loop."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop,
                 config: OperatorConfig | None = None) -> None:  # fmt: skip
        self.store = store
        self.loop = loop
        self.config = config or OperatorConfig()
        self.recorder = EventRecorder(store)
        self.pods = PodSimulator(self)
        self.rayclusters = RayClusterController(self)
        self.rayjobs = RayJobController(self)
        self.controllers: list[Controller] = [self.rayclusters, self.rayjobs]
        self.running = False
        self._unsubscribe: Any = None
        self._timers: set[asyncio.TimerHandle] = set()
        store.graceful_delete = self._grace

    def start(self) -> None:
        self.running = True
        self._unsubscribe = self.store.subscribe(self._on_event)
        for c in self.controllers:
            c.resync()

    def stop(self) -> None:
        self.running = False
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        for t in list(self._timers):
            t.cancel()
        self._timers.clear()

    def call_later(self, delay: float, fn: Any) -> None:
        handle: asyncio.TimerHandle | None = None

        def run() -> None:
            if handle is not None:
                self._timers.discard(handle)
            if self.running:
                fn()

        handle = self.loop.call_later(max(0.0, delay), run)
        self._timers.add(handle)

    def _grace(self, rt: ResourceType, obj: Mapping[str, Any], grace: int | None) -> float | None:
        if rt.key != "pods" or grace == 0:
            return None
        if not (obj.get("spec") or {}).get("nodeName"):
            return None
        return self.config.pod_termination_delay or None

    def _on_event(self, ev: WatchEvent) -> None:
        if not self.running:
            return
        self.pods.on_event(ev)
        for c in self.controllers:
            if ev.rtype in c.watches:
                for key in c.keys_for(ev):
                    c.enqueue(key)

    def configure(self, **changes: Any) -> OperatorConfig:
        """Change config fields (e.g. ``enabled``, ``pod_ready_delay``, ``fail_pod_creation``)
        and resync everything. On the loop (``FakeKubeServer.configure_operator`` from others)."""
        for k, v in changes.items():
            if not hasattr(self.config, k):
                raise ApiError(400, f"unknown operator setting {k!r}")
            setattr(self.config, k, v)
        if self.config.pod_ready_delay is not None and self.pods.held():
            self.call_later(self.config.pod_ready_delay, self.pods.release)
        for c in self.controllers:
            c.resync()
        return self.config
