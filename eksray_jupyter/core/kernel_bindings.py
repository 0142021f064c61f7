"""Which kernel is connected to which cluster, kept in the state dir for the idle keeper.

The kernel provisioner writes a binding when it starts a kernel with a cluster's address, and
``%eksray connect`` when a kernel connects by hand; the server's keeper reads them to count a
busy kernel as use of its cluster (core/keeper.py). One small file per kernel, under
``<state_dir>/kernels/<backend>-<owner>/``: written atomically, read without locks (a kernel
has one writer at a time), removed with the kernel.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

from .state_files import read_json, write_json_atomic

_KERNEL_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class KernelBindings:
    def __init__(self, state_dir: str | Path, backend: str, owner: str) -> None:
        self.root = Path(state_dir) / "kernels" / f"{backend}-{owner}"

    def _path(self, kernel_id: str) -> Path | None:
        return self.root / f"{kernel_id}.json" if _KERNEL_ID.match(kernel_id) else None

    def bind(self, kernel_id: str, cluster: str | None) -> None:
        """Record that ``kernel_id`` is connected to ``cluster`` (None: to no cluster)."""
        path = self._path(kernel_id)
        if path is None:
            return
        if cluster is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"cluster": cluster, "at": time.time()})

    def cluster_of(self, kernel_id: str) -> str | None:
        path = self._path(kernel_id)
        if path is None:
            return None
        with contextlib.suppress(ValueError, OSError):
            data = read_json(path)
            if isinstance(data, dict) and isinstance(data.get("cluster"), str):
                return data["cluster"]
        return None

    def forget_except(self, kernel_ids: set[str], grace: float = 300.0) -> None:
        """Remove the bindings of kernels that no longer exist. A binding younger than ``grace``
        seconds stays: the provisioner writes it before its kernel is listed."""
        if not self.root.is_dir():
            return
        cutoff = time.time() - grace
        for path in self.root.glob("*.json"):
            if path.stem in kernel_ids:
                continue
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
