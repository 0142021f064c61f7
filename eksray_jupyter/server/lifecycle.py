"""The server's idle keeper: its owner's clusters, every ``lifecycle_interval_seconds``, with or
without a panel open (core/keeper.py decides; this adds what only the server knows).

Beyond Ray's own activity, two probes only the server has: its kernels (a kernel connected to
the cluster that is busy, and when it last did anything) and its jobs (one not finished on the
cluster). Notices go to the push stream.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..core.keeper import Keeper, Outcome, Usage
from ..core.kernel_bindings import KernelBindings
from ..core.models import Cluster
from ..jobs.models import TERMINAL_STATES
from ..services import Services

log = logging.getLogger(__name__)


class KernelProbe:
    """A cluster is in use while a kernel connected to it is busy; an idle one says when it last
    did anything (a cell run, output)."""

    def __init__(self, kernel_manager: Any, bindings: KernelBindings) -> None:
        self.kernel_manager = kernel_manager
        self.bindings = bindings

    def __call__(self, cluster: Cluster) -> Usage:
        busy: list[str] = []
        last: float | None = None
        for kernel_id in list(self.kernel_manager.list_kernel_ids()):
            if self.bindings.cluster_of(kernel_id) != cluster.name:
                continue
            try:
                kernel = self.kernel_manager.get_kernel(kernel_id)
            except KeyError:
                continue  # shut down meanwhile
            state = getattr(kernel, "execution_state", None)
            if state in ("busy", "starting"):
                busy.append(f"kernel {kernel_id[:8]} is {state}")
            activity = getattr(kernel, "last_activity", None)
            if activity is not None:
                last = max(last or 0.0, activity.timestamp())
        return Usage(tuple(busy), last)


class JobProbe:
    """A cluster is in use while one of our jobs on it has not ended."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def __call__(self, cluster: Cluster) -> Usage:
        busy = tuple(
            f"job {job.id} {job.state.value}"
            for job in self.services.jobs.list()
            if job.cluster_name == cluster.name and job.state not in TERMINAL_STATES
        )
        return Usage(busy)


class LifecycleRunner:
    def __init__(
        self,
        services: Services,
        kernel_manager: Any,
        notify: Any,
        interval: float,
    ) -> None:
        service = services.clusters
        self.services = services
        self.interval = interval
        bindings = service.kernel_bindings
        self.keeper = Keeper(
            service.backend,
            warning_seconds=service.config.lifecycle_warning_minutes * 60,
            probes=[KernelProbe(kernel_manager, bindings), JobProbe(services)],
            notify=notify,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="eksray-lifecycle", daemon=True)
        self._thread.start()

    def run_once(self) -> list[Outcome]:
        clusters = self.services.clusters.list()
        return self.keeper.pass_over(clusters)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:
                log.exception("eksray: the idle keeper's pass failed")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
