"""This kernel's Ray driver: where it points, and keeping it in step with its cluster.

The helpers point the next ``ray.init()`` at a cluster and tell whether two addresses reach the
same GCS. :class:`DriverGuard` carries a driver across its cluster's suspend and resume, for
what Ray 2.60 does here (measured on this project's local backend):

- Ray ends a driver's *process* once its GCS has been gone for
  ``gcs_rpc_server_reconnect_timeout_s`` (60 s by default, fixed when the driver connects):
  a kernel connected to a cluster that is suspended would die, and its variables with it.
- A driver that outlives its GCS floods the next GCS at the same address (the resumed cluster)
  with requests refused as ``WrongClusterID``: over a million in ten minutes, enough to keep
  the resumed cluster's workers from registering.
- ``ray.shutdown()`` blocks while the GCS is gone, and takes ~0.2 s once a GCS answers again.

So, in a kernel with the extension loaded (every kernel the server starts):

- before a cell, while no driver is connected and ``RAY_ADDRESS`` names an eksray cluster: if
  it answers, a driver the cell connects gets a long reconnect timeout (suspending its cluster
  does not end the kernel); if it does not, Ray's default stands (``ray.init()`` against a
  suspended cluster fails as usual rather than waiting for ever);
- while such a driver is connected, a thread checks its GCS port every ``interval`` seconds;
  once the port has closed and opened again (the cluster was resumed) and no cell runs, it
  shuts the stale driver down before it floods the new GCS;
- the next cell connects again, with the cluster's current address and token, and says so;
  a cell run while the cluster is down says why Ray calls wait.

Nothing here imports ray: it is used only once the user's code has imported it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .core.net import port_open
from .core.ray_auth import AUTH_MODE_ENV, TOKEN_PATH_ENV
from .core.service import CLUSTER_ENV, ClusterService, Connection

#: Ray's setting for how long a driver waits for a lost GCS before Ray ends the process.
RECONNECT_TIMEOUT_ENV = "RAY_gcs_rpc_server_reconnect_timeout_s"
#: A week: a cluster suspended over a weekend finds its kernels still there.
SUSPEND_PROOF_TIMEOUT_S = 7 * 24 * 3600


def this_kernel_id() -> str | None:
    """This kernel's id (from its connection file's name, ``kernel-<id>.json``), if it has one."""
    try:
        from ipykernel.connect import get_connection_file

        stem = Path(get_connection_file()).stem
    except Exception:  # not in an ipykernel (a test shell, a console without a connection file)
        return None
    return stem[len("kernel-") :] if stem.startswith("kernel-") else None


def bind_kernel(clusters: ClusterService, name: str) -> None:
    """Tell the server's idle keeper that this kernel uses ``name`` now (core/kernel_bindings.py)."""
    kernel_id = this_kernel_id()
    if kernel_id is not None:
        with contextlib.suppress(OSError):
            clusters.kernel_bindings.bind(kernel_id, name)


def ray_connected_address() -> str | None:
    """The GCS address this kernel's Ray driver is connected to; never imports ray itself."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # Ray Client sessions have no GCS address; any value differs from ours
        return "unknown"


def set_driver_env(connection: Connection, reload_ray: bool = True) -> None:
    """Point this process's next ``ray.init()`` at ``connection``, with its token (if any).

    Ray reads its authentication settings once per process; if ray is already imported (and
    no driver is connected), it is told to read them again, or the next driver would present
    the previous cluster's token.
    """
    for key in (AUTH_MODE_ENV, TOKEN_PATH_ENV):
        os.environ.pop(key, None)
    os.environ.update(connection.driver_env())
    if reload_ray and "ray" in sys.modules:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def is_this_machine(host: str) -> bool:
    import socket

    import psutil

    if host in ("localhost", "0.0.0.0", "::") or host.startswith("127."):
        return True
    own = {
        a.address.split("%")[0]
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family in (socket.AF_INET, socket.AF_INET6)
    }
    return host in own


def same_address(a: str | None, b: str | None) -> bool:
    """Whether two driver addresses reach the same GCS.

    Ray reports a local cluster under this machine's IP even when joined through
    127.0.0.1, so any two addresses of this machine with the same port are the same.
    """
    if a is None or b is None:
        return False
    host_a, _, port_a = a.split("://")[-1].rpartition(":")
    host_b, _, port_b = b.split("://")[-1].rpartition(":")
    if port_a != port_b:
        return False
    host_a, host_b = host_a.strip("[]"), host_b.strip("[]")
    return host_a == host_b or (is_this_machine(host_a) and is_this_machine(host_b))


class DriverGuard:
    """Keeps one kernel's driver in step with its eksray cluster (see the module doc).

    ``connect_again(name)`` connects a new driver to ``name`` and returns what to tell the user
    (the magics' ``%eksray connect``); ``say`` shows a line in the running cell's output.
    """

    def __init__(
        self,
        connect_again: Callable[[str], str],
        say: Callable[[str], None],
        interval: float = 2.0,
        misses_for_down: int = 2,
    ) -> None:
        self.connect_again = connect_again
        self.say = say
        self.interval = interval
        self.misses_for_down = misses_for_down
        self._lock = threading.Lock()
        self._cell_running = False
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._watched: tuple[str, str] | None = None  # (cluster, address) of the driver watched
        self._down_since: float | None = None
        self._down_said = False
        self._released: str | None = None  # the cluster whose stale driver was shut down

    def install(self, shell: Any) -> None:
        shell.events.register("pre_run_cell", self.pre_run_cell)
        shell.events.register("post_run_cell", self.post_run_cell)

    # --- the cell's side -----------------------------------------------------------------

    def pre_run_cell(self, _info: Any = None) -> None:
        with self._lock:  # a shutdown under way ends first
            self._cell_running = True
            if self._watcher is not None and self._watched is not None:
                # Look now too: the watcher looks only every interval.
                up = port_open(self._watched[1], 0.5)
                if self._down_since is not None and up:
                    self._release(self._watched[0])
                elif self._down_since is None and not up and ray_connected_address() is not None:
                    self._down_since = time.time()
            released, self._released = self._released, None
            down_since, down_said = self._down_since, self._down_said
            if down_since is not None:
                self._down_said = True
        try:
            if released is not None:
                self.say(self.connect_again(released))
            elif down_since is not None and not down_said and self._watched is not None:
                name = self._watched[0]
                self.say(
                    f"{name} is not running (suspended or deleted): Ray calls in this kernel wait for it. "
                    f"%eksray resume {name} starts it again, and the next cell after that reconnects; "
                    "if it was deleted, restart the kernel to use Ray again."
                )
            if ray_connected_address() is None:
                self.prepare_driver_env()
        except Exception as e:  # never stop the user's cell; say what went wrong instead
            self.say(f"eksray: could not reconnect this kernel's Ray driver: {e}")

    def post_run_cell(self, _result: Any = None) -> None:
        with self._lock:
            self._cell_running = False
        self.watch_connected_driver()

    def prepare_driver_env(self) -> None:
        """Before a cell that may connect a driver: the reconnect timeout for the cluster named
        by the environment (long if it answers, Ray's default if not)."""
        address, name = os.environ.get("RAY_ADDRESS"), os.environ.get(CLUSTER_ENV)
        wanted = None
        if address and name and not address.startswith("ray://") and port_open(address, 0.25):
            wanted = str(SUSPEND_PROOF_TIMEOUT_S)
        if os.environ.get(RECONNECT_TIMEOUT_ENV) == wanted:
            return
        if wanted is None:
            os.environ.pop(RECONNECT_TIMEOUT_ENV, None)
        else:
            os.environ[RECONNECT_TIMEOUT_ENV] = wanted
        if "ray" in sys.modules:  # Ray read its settings when imported: read them again
            from ray._raylet import Config

            Config.initialize("")

    # --- the watcher ---------------------------------------------------------------------

    def watch_connected_driver(self) -> None:
        """Start watching the driver's GCS if it is connected to the eksray cluster the
        environment names with a suspend-proof timeout (else Ray's own handling stands)."""
        address, name = os.environ.get("RAY_ADDRESS"), os.environ.get(CLUSTER_ENV)
        connected = ray_connected_address()
        if not (address and name and connected and same_address(connected, address)):
            return
        if os.environ.get(RECONNECT_TIMEOUT_ENV) != str(SUSPEND_PROOF_TIMEOUT_S):
            return
        if self._watcher is not None and self._watcher.is_alive() and self._watched == (name, address):
            return
        self.stop()
        self._stop = threading.Event()
        self._watched = (name, address)
        self._down_since, self._down_said = None, False
        self._watcher = threading.Thread(
            target=self._watch, args=(name, address, self._stop), name="eksray-driver-guard", daemon=True
        )
        self._watcher.start()

    def _watch(self, name: str, address: str, stop: threading.Event) -> None:
        misses = 0
        while not stop.wait(self.interval):
            if ray_connected_address() is None:
                return  # the user shut it down (or %eksray suspend/connect did)
            if not port_open(address, 0.5):
                misses += 1
                if misses >= self.misses_for_down and self._down_since is None:
                    self._down_since = time.time()
                continue
            misses = 0
            if self._down_since is None:
                continue
            with self._lock:
                if self._cell_running:
                    continue  # a cell may be using it; after the cell, next tick
                if self._down_since is not None:  # not released by a cell meanwhile
                    self._release(name)
            return

    def _release(self, name: str) -> None:
        """The cluster is back (resumed): let go of the stale driver before it floods the new
        GCS; the next cell connects again. Called with the lock held."""
        with contextlib.suppress(Exception):
            sys.modules["ray"].shutdown()
        self._down_since, self._down_said, self._released = None, False, name

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout)
        self._watcher = None
