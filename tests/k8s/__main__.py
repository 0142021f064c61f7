"""``python -m tests.k8s build`` builds the binaries (what ``make k8s-bin`` runs);
``python -m tests.k8s up`` starts the control plane, prints its KUBECONFIG and stays up
until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from . import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.k8s", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build what is missing of the pinned binaries")
    commands.add_parser("where", help="print the binaries' cache directory")
    up = commands.add_parser("up", help="run a control plane until Ctrl-C")
    up.add_argument("--workdir", type=Path, help="keep state and logs here (default: a temp dir, removed)")
    up.add_argument("--no-operator", action="store_true", help="do not start the KubeRay operator")
    args = parser.parse_args(argv)

    if args.command == "build":
        build.build()
        return 0
    if args.command == "where":
        print(build.binaries().directory)
        return 0

    from .controlplane import ControlPlane

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.monotonic()
    with ControlPlane(workdir=args.workdir, operator=not args.no_operator) as plane:
        print(f"export KUBECONFIG={plane.kubeconfig}")
        print(
            f"# API server {plane.server}; logs in {plane.log_dir}; up in {time.monotonic() - started:.1f} s"
        )
        print(f"# PIDs: {plane.pids()}; Ctrl-C stops everything", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        print("stopping ...", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
