"""The Jupyter server extension (``jupyter server extension list`` shows ``eksray_jupyter``)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Int

from ..core.config import EKSRay
from ..core.service import ClusterService
from ..kernel import setup_kernel_provisioner
from ..services import Services
from . import handlers, jobs
from .lifecycle import LifecycleRunner
from .pools import WritePool
from .proxy import proxy_handlers
from .stream import StreamHub, stream_handlers


class EKSRayExtension(ExtensionApp):
    name = "eksray_jupyter"
    description = "Ray clusters (local or KubeRay on EKS) for Jupyter"
    load_other_extensions = True

    classes = [EKSRay]

    backend_threads = Int(
        8, help="Threads for blocking backend calls that read (lists, details, events, jobs, logs)."
    ).tag(config=True)
    backend_write_threads = Int(
        8,
        help="Threads for backend calls that change something (create, scale, delete; submitting and "
        "stopping jobs), apart from the reads: a slow backend holds these, never the reads. A change "
        "asked for while all are busy is refused at once (503, Retry-After).",
    ).tag(config=True)
    stream_heartbeat_seconds = Float(
        10.0,
        help="Seconds between two heartbeats on the push stream (0: none), sent while changes flow; "
        "a panel that misses three takes its stream for dead, polls and reconnects.",
    ).tag(config=True)
    shutdown_timeout = Float(
        10.0,
        help="Seconds the server's shutdown waits for the extension's threads to end (the push "
        "stream's observer and job watcher, RayJob followers, working directory uploads). What "
        "still runs then is named in the log and left to end with the process.",
    ).tag(config=True)

    def initialize_settings(self) -> None:
        # ray/kubernetes/boto3 are not imported here: backends import them on first use.
        config = EKSRay(parent=self, log=self.log)
        self.services = Services(ClusterService(config))
        self.executor = ThreadPoolExecutor(self.backend_threads, thread_name_prefix="eksray")
        self.writes = WritePool(self.backend_write_threads)  # see server/pools.py
        self.hub = StreamHub(
            self.services,
            lambda name: handlers.dashboard_path(self.serverapp.base_url, name),
            heartbeat_seconds=self.stream_heartbeat_seconds,
        )
        self.settings.update(
            eksray_services=self.services,
            eksray_executor=self.executor,
            eksray_writes=self.writes,
            eksray_stream_hub=self.hub,
        )
        self.log.info("eksray: %s backend for user %s", self.services.clusters.backend.name, config.owner)
        setup_kernel_provisioner(self.serverapp, self.services.clusters)
        # Idle timeouts and lifetimes are enforced with or without a panel open.
        self.lifecycle = LifecycleRunner(
            self.services,
            self.serverapp.kernel_manager,
            self.hub.on_lifecycle,
            interval=config.lifecycle_interval_seconds,
        )
        self.lifecycle.start()

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers.handlers("/"))
        self.handlers.extend(jobs.job_handlers("/"))
        self.handlers.extend(stream_handlers("/"))
        self.handlers.extend(proxy_handlers("/"))

    async def stop_extension(self) -> None:
        # Clusters keep running: their state lives in the backend, not in this process.
        # Stopping joins threads: on a thread of its own, never on the event loop, and bounded.
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        unsubscribes = self.hub.detach()
        step = ["stopping the push stream's observer and job watcher"]

        def close() -> None:
            try:
                self.lifecycle.stop()
                for unsubscribe in unsubscribes:
                    unsubscribe()
                step[0] = "stopping the job runner (its followers, uploads) and the backend"
                self.services.close()  # followers release their RayJob leases; watches stop
            except Exception:
                self.log.exception("eksray: shutting down failed")
            finally:
                with contextlib.suppress(RuntimeError):  # a loop already closed: nobody waits
                    loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        closer = threading.Thread(target=close, name="eksray-shutdown", daemon=True)
        closer.start()
        try:
            await asyncio.wait_for(asyncio.shield(done), self.shutdown_timeout)
        except TimeoutError:
            running = sorted(
                t.name
                for t in threading.enumerate()
                if t.name.startswith("eksray-") and t is not closer and t.is_alive()
            )
            self.log.warning(
                "eksray: shutdown gave up after %g s %s; left to end with the process: %s",
                self.shutdown_timeout,
                step[0],
                ", ".join(running) or "nothing",
            )
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.writes.shutdown()
