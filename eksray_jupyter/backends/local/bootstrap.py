"""Start a new local cluster's initial workers once its GCS answers.

Run detached (``python -m eksray_jupyter.backends.local.bootstrap CLUSTER_DIR``) so that a
CLI that created the cluster, or a server that restarts, does not take the start-up
with it. It exits when the initial replicas are launched, or gives up with an event.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ...core.net import port_open
from ...core.processes import is_alive
from .state import ClusterDir
from .workers import launch_worker, live_workers

GCS_TIMEOUT_S = 120.0


def bootstrap(cdir: ClusterDir) -> int:
    record = cdir.read()
    if record is None:
        return 1
    deadline = time.monotonic() + GCS_TIMEOUT_S
    while not port_open(record["ports"]["gcs"], timeout=0.2):
        if time.monotonic() > deadline or not is_alive(record.get("head")):
            return 1  # the backend reports the head's failure from its log
        time.sleep(0.1)
    for group in record["spec"].get("workerGroups", []):
        current = sum(1 for n in live_workers(cdir).values() if n["group"] == group["groupName"])
        for _ in range(max(0, group["replicas"] - current)):
            if (cdir.read() or {}).get("status") != "running":
                return 0  # deleted meanwhile
            launch_worker(cdir, group["groupName"], launched_by="backend")
    # From now on the backend replaces initial workers that fail to start.
    cdir.update(bootstrapped=True)
    return 0


if __name__ == "__main__":
    sys.exit(bootstrap(ClusterDir(Path(sys.argv[1]))))
