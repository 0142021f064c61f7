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

from ..core.keeper import Keeper, Outcome, Probe, Usage
from ..core.kernel_bindings import KernelBindings
from ..jobs.models import TERMINAL_STATES
from ..services import Services

log = logging.getLogger(__name__)


def kernel_usage(kernel_manager: Any, bindings: KernelBindings) -> dict[str, Usage]:
    """Per cluster name, what the server's kernels connected to it do: a busy (or starting)
    kernel is use now; an idle one says when it last did anything (a cell run, output). One
    read of each kernel's binding per pass; the bindings of kernels gone are removed."""
    busy: dict[str, list[str]] = {}
    last: dict[str, float] = {}
    kernel_ids = list(kernel_manager.list_kernel_ids())
    for kernel_id in kernel_ids:
        name = bindings.cluster_of(kernel_id)
        if name is None:
            continue
        try:
            kernel = kernel_manager.get_kernel(kernel_id)
        except KeyError:
            continue  # shut down meanwhile
        state = getattr(kernel, "execution_state", None)
        if state in ("busy", "starting"):
            busy.setdefault(name, []).append(f"kernel {kernel_id[:8]} is {state}")
        activity = getattr(kernel, "last_activity", None)
        if activity is not None:
            last[name] = max(last.get(name, 0.0), activity.timestamp())
    try:
        bindings.forget_except(set(kernel_ids))
    except OSError as e:
        log.warning("eksray: cannot remove the bindings of kernels that are gone: %s", e)
    return {name: Usage(tuple(busy.get(name, ())), last.get(name)) for name in set(busy) | set(last)}


def job_usage(services: Services) -> dict[str, Usage]:
    """Per cluster name, the server's jobs on it that have not ended (one list per pass)."""
    busy: dict[str, list[str]] = {}
    for job in services.jobs.list():
        if job.cluster_name and job.state not in TERMINAL_STATES:
            busy.setdefault(job.cluster_name, []).append(f"job {job.id} {job.state.value}")
    return {name: Usage(tuple(reasons)) for name, reasons in busy.items()}


def probe_of(usage: dict[str, Usage]) -> Probe:
    return lambda cluster: usage.get(cluster.name, Usage())


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
        self.kernel_manager = kernel_manager
        self.interval = interval
        self.notify = notify
        self.keeper = Keeper(
            service.backend,
            warning_seconds=service.config.lifecycle_warning_minutes * 60,
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
        self._account(clusters)
        # Kernels and jobs looked at once per pass, not once per cluster.
        kernels = kernel_usage(self.kernel_manager, self.services.clusters.kernel_bindings)
        jobs = job_usage(self.services)
        return self.keeper.pass_over(clusters, [probe_of(kernels), probe_of(jobs)])

    def _account(self, clusters: list[Any]) -> None:
        """Advance the clusters' cost meters; warn once at 80 % and 100 % of the monthly budget."""
        try:
            notice = self.services.clusters.accounting.budget_pass(clusters)
        except Exception:  # metering must never stop the idle keeper
            log.exception("eksray: the usage pass failed")
            return
        if notice is not None:
            self.notify(notice)

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
