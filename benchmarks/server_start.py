"""Jupyter server start time with and without eksray-jupyter, as a ratio measured in one run.

    .venv/bin/python -m benchmarks.server_start [--runs 7]

Starts `jupyter server` alternately with the extension enabled and disabled, and times
from process start until `GET /api/status` answers. Prints medians and their ratio
(goal: with / without <= 1.05). Each server is stopped by its own PID.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_once(enabled: bool, state_dir: str) -> float:
    port, token = free_port(), secrets.token_hex(8)
    config = os.path.join(state_dir, f"config-{enabled}.json")
    with open(config, "w") as f:
        json.dump({"ServerApp": {"jpserver_extensions": {"eksray_jupyter": enabled}}}, f)
    argv = [
        sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--EKSRay.state_dir={state_dir}", f"--config={config}",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        deadline = started + 120
        while time.perf_counter() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/status?token={token}", timeout=1
                ) as r:
                    if r.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("server did not start within 120 s")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state_dir:
        start_once(True, state_dir)  # warm the file cache for both variants
        start_once(False, state_dir)
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.runs):
            for enabled in (False, True):
                times[enabled].append(start_once(enabled, state_dir))
    without, with_ext = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"server start without eksray: median {without:.3f} s over {args.runs} runs {sorted(round(t, 3) for t in times[False])}"
    )
    print(
        f"server start with eksray:    median {with_ext:.3f} s over {args.runs} runs {sorted(round(t, 3) for t in times[True])}"
    )
    print(f"ratio with/without: {with_ext / without:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
