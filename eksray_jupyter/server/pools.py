"""Where the server runs blocking backend calls: reads and changes on separate threads.

Reads (lists, details, events, jobs, logs) go to the extension's read pool
(``eksray_executor``); the kuberay backend answers them from its watch cache, so they take
milliseconds. Changes (create, scale, delete; submitting and stopping jobs) go to a
:class:`WritePool` of their own: a slow backend (a Kubernetes API server that does not answer
holds each for up to ``KubeRayBackend.request_timeout``) can fill it, never the read pool. It
runs at most ``size`` changes at once and queues none: one more is refused at once with a
:class:`~eksray_jupyter.core.errors.BusyError` (503, ``Retry-After``), so every admitted change
starts at once and answers within the backend's own bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..core.errors import BusyError

T = TypeVar("T")


class WritePool:
    """Threads for backend calls that change something, at most ``size`` at once."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.executor = ThreadPoolExecutor(self.size, thread_name_prefix="eksray-write")
        #: Changes running now. Only touched on the event loop, so no lock.
        self.running = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a thread of this pool; BusyError if all are taken."""
        if self.running >= self.size:
            raise BusyError(
                f"{self.running} changes are already under way, the most at once "
                f"(c.EKSRayExtension.backend_write_threads = {self.size}); the backend may be slow "
                "to answer. Try again when one has finished."
            )
        self.running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.running -= 1

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
