"""Run the fake Kubernetes API server as a process.

    python -m tests.fakekube --port 8001 [--token T] [--no-auth] [--kubeconfig PATH]
        [--load manifest.yaml] [--upstream ns/service[:port]=http://127.0.0.1:8265]
        [--pod-ready-delay 2] [--rayjobs]

Prints ``FAKEKUBE_URL=http://127.0.0.1:N`` (and the token / kubeconfig path) on stdout,
then serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import yaml

from .operator import OperatorConfig
from .server import DEFAULT_TOKEN, FakeKubeServer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.fakekube", description=__doc__.split("\n")[1])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--token", action="append", help=f"accepted bearer token (default {DEFAULT_TOKEN})")
    p.add_argument("--no-auth", action="store_true", help="accept requests without a token")
    p.add_argument("--no-operator", action="store_true", help="disable the simulated KubeRay operator")
    p.add_argument("--pod-ready-delay", type=float, default=0.5)
    p.add_argument("--pod-termination-delay", type=float, default=0.0)
    p.add_argument("--rayjobs", action="store_true", help="simulate the RayJob life cycle")
    p.add_argument("--job-duration", type=float, default=5.0)
    p.add_argument("--bookmark-interval", type=float, default=5.0)
    p.add_argument("--history-size", type=int, default=5000)
    p.add_argument("--crd-dir", default=None)
    p.add_argument("--namespace", action="append", default=[], help="extra namespace to create")
    p.add_argument("--load", action="append", default=[], help="YAML manifest to create at start")
    p.add_argument(
        "--upstream",
        action="append",
        default=[],
        help="service proxy target: ns/service[:port]=URL (e.g. a fake Ray dashboard)",
    )
    p.add_argument("--kubeconfig", help="write a kubeconfig for this server to PATH")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


async def _amain(args: argparse.Namespace) -> None:
    config = OperatorConfig(
        enabled=not args.no_operator,
        pod_ready_delay=args.pod_ready_delay,
        pod_termination_delay=args.pod_termination_delay,
        rayjob_lifecycle=args.rayjobs,
        job_duration=args.job_duration,
    )
    kwargs = {}
    if args.crd_dir:
        kwargs["crd_dir"] = args.crd_dir
    server = FakeKubeServer(
        args.host,
        args.port,
        tokens=None if args.no_auth else (args.token or [DEFAULT_TOKEN]),
        operator_config=config,
        bookmark_interval=args.bookmark_interval,
        history_size=args.history_size,
        namespaces=("default", "kube-system", "kube-public", *args.namespace),
        **kwargs,
    )
    await server.start_async()
    for docs in args.manifests:
        server.apply_manifest(docs)
    for spec in args.upstream:
        target, _, url = spec.partition("=")
        ns, _, svc = target.partition("/")
        svc, _, port = svc.partition(":")
        server.set_proxy_upstream(ns, svc, url, port or None)
    print(f"FAKEKUBE_URL={server.url}", flush=True)
    if server.token:
        print(f"FAKEKUBE_TOKEN={server.token}", flush=True)
    if args.kubeconfig:
        server.write_kubeconfig(args.kubeconfig)
        print(f"FAKEKUBE_KUBECONFIG={args.kubeconfig}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop_async()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.manifests = [
        [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d] for path in args.load
    ]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(_amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
