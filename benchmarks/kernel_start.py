"""Kernel start time with the eksray provisioner against jupyter_client's default, as ratios from one run.

    .venv/bin/python -m benchmarks.kernel_start [--runs 10] [--no-cluster]

Starts ipykernels the way the Jupyter server does (``AsyncKernelManager``), timed from
``start_kernel`` until the kernel answers ``kernel_info`` (extensions are loaded by then).
Variants, interleaved run by run so load on the machine hits them alike:

- ``plain``: jupyter_client's LocalProvisioner;
- ``chosen``: ours, with a cluster the user chose (``%eksray use``/``up``): a file read and a TCP probe;
- ``latest``: ours, nothing chosen, so the backend lists clusters to find the newest ready one.

By default a real local Ray cluster is started in a temporary state dir (10-60 s) and
deleted at the end by its own processes; ``--no-cluster`` skips it and measures only
``--ext=eksray_jupyter`` and the environment. Goal: every ratio to ``plain`` <= 1.10.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import KernelProvisionerFactory

from eksray_jupyter import kernel
from eksray_jupyter.core.config import EKSRay
from eksray_jupyter.core.service import ClusterService

REPO = Path(__file__).resolve().parent.parent
CHECK = "import os; print(os.environ.get('RAY_ADDRESS'), get_ipython().find_line_magic('eksray') is not None)"


async def start_once(provisioner: str, env: dict[str, str], check: bool = False) -> tuple[float, str]:
    KernelProvisionerFactory.instance().default_provisioner_name = provisioner
    km = AsyncKernelManager(kernel_name="python3")
    started = time.perf_counter()
    await km.start_kernel(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=120)
        elapsed = time.perf_counter() - started
        seen = ""
        if check:
            out: list[str] = []
            await client.execute_interactive(
                CHECK, output_hook=lambda m: out.append(m["content"].get("text", "")), timeout=60
            )
            seen = "".join(out).strip()
        return elapsed, seen
    finally:
        client.stop_channels()
        await km.shutdown_kernel(now=True)


async def measure(svc: ClusterService, runs: int, with_cluster: bool) -> dict[str, list[float]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    kernel.configure(svc)
    kernel.register(KernelProvisionerFactory.instance())
    variants = {"plain": "local-provisioner", "chosen": kernel.PROVISIONER_NAME}
    if with_cluster:
        variants["latest"] = kernel.PROVISIONER_NAME

    async def run(variant: str, check: bool = False) -> tuple[float, str]:
        if variant == "chosen" and with_cluster:
            svc.use("bench")
        elif variant == "latest":
            svc.clear_active()
        return await start_once(variants[variant], env, check)

    for variant in variants:  # warm caches, and show that the variants do what they claim
        _, seen = await run(variant, check=True)
        print(f"{variant:>6}: kernel sees RAY_ADDRESS, %eksray loaded = {seen}", flush=True)
    times: dict[str, list[float]] = {v: [] for v in variants}
    names = list(variants)
    for i in range(runs):
        for variant in names[i % len(names) :] + names[: i % len(names)]:  # rotate the order
            times[variant].append((await run(variant))[0])
    return times


def resolution(svc: ClusterService, runs: int = 20) -> None:
    """What pre_launch spends finding the active cluster, alone (the kernel start hides it)."""
    for label, prepare in (("chosen", lambda: svc.use("bench")), ("latest", svc.clear_active)):
        prepare()
        values = []
        for _ in range(runs):
            started = time.perf_counter()
            assert svc.active_connection() is not None
            values.append(time.perf_counter() - started)
        print(f"active_connection ({label}): median {statistics.median(values) * 1000:.1f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-cluster", action="store_true", help="do not start a real local Ray cluster")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eksray-bench-") as state_dir:
        svc = ClusterService(EKSRay(state_dir=state_dir))
        try:
            if not args.no_cluster:
                started = time.monotonic()
                svc.create({"name": "bench", "profile": "cpu-small"})
                svc.wait_ready("bench", timeout=300)
                print(f"cluster ready after {time.monotonic() - started:.1f} s", flush=True)
                resolution(svc)
            times = asyncio.run(measure(svc, args.runs, not args.no_cluster))
        finally:
            if any(c.name == "bench" for c in svc.list()):
                svc.delete("bench")
    plain = statistics.median(times["plain"])
    for variant, values in times.items():
        median = statistics.median(values)
        print(
            f"{variant:>6}: median {median:.3f} s over {len(values)} runs "
            f"(min {min(values):.3f}, max {max(values):.3f}); ratio to plain {median / plain:.3f}"
        )
    print("goal: every ratio <= 1.10")


if __name__ == "__main__":
    main()
