"""Start a new local cluster's initial workers once its GCS answers.

Run detached (``python -m eksray_jupyter.backends.local.bootstrap CLUSTER_DIR``) so that a
CLI that created the cluster, or a server that restarts, does not take the start-up
with it. It exits when the initial replicas are launched, or gives up (a head whose GCS does not
answer within GCS_TIMEOUT_S); then the backend's next reader starts them once the GCS answers.

It is one of the cluster's processes (its ref is in the record as ``bootstrap``), so a
delete or a head restart stops it; and it starts workers and writes ``bootstrapped`` in
one step under the cluster's lock, on the freshest record, so it never writes to a
cluster that was deleted meanwhile.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ...core.net import port_open
from ...core.processes import is_alive
from .state import ClusterDir, ClusterGone, CorruptFileError
from .workers import converge_group, replicas_target, running_record

GCS_TIMEOUT_S = 120.0


def bootstrap(cdir: ClusterDir) -> int:
    try:
        record = cdir.read()
    except CorruptFileError:
        return 1
    if record is None:
        return 1
    deadline = time.monotonic() + GCS_TIMEOUT_S
    while not port_open(record["ports"]["gcs"], timeout=0.2):
        if time.monotonic() > deadline or not is_alive(record.get("head")):
            return 1  # the backend reports the head's failure from its log
        time.sleep(0.1)
    try:
        with cdir.locked():
            fresh = running_record(cdir)
            if fresh.get("head") != record.get("head"):
                return 0  # the head was started again; so was a bootstrap for it
            nodes = cdir.read_nodes()
            for group in fresh["spec"].get("workerGroups", []):
                converge_group(cdir, fresh, nodes, group["groupName"], replicas_target(group), stop=False)
            cdir.write_nodes(nodes)
            # From now on the backend replaces initial workers that fail to start.
            fresh["bootstrapped"] = True
            cdir.write(fresh)
    except ClusterGone:
        return 0  # deleted meanwhile: nothing to start, nothing to write
    return 0


if __name__ == "__main__":
    sys.exit(bootstrap(ClusterDir(Path(sys.argv[1]))))
