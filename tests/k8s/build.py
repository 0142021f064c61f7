"""Build the real control plane's binaries from the pinned Go modules in ``tests/k8s/go``.

The binaries go to a cache directory outside the checkout, keyed by a hash of every
``go.mod``/``go.sum``, our own Go sources and the Go version, so a warm cache builds nothing
and a version bump builds anew beside the old one. KWOK's stages (node and pod life cycle)
are copied from the pinned KWOK module next to the binaries: the ``kwok`` binary ships none.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

GO_DIR = Path(__file__).resolve().parent / "go"
KUBERNETES_VERSION = "v1.36.3"
# (module dir, what to build); built one after another: each ``go build`` uses every core.
MODULES = (
    ("controlplane", ["./cmd/etcd", "tool"]),
    ("kwok", ["tool"]),
    ("kuberay", ["tool"]),
)
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "ray-operator")
# KWOK's own stages, as kwokctl configures them: nodes become Ready and keep a lease; pods
# the scheduler binds become Running and Ready with an IP, and go away when deleted.
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


@dataclass(frozen=True)
class Binaries:
    directory: Path

    def path(self, name: str) -> str:
        return str(self.directory / name)

    @property
    def kwok_stages(self) -> Path:
        return self.directory / "kwok-stages.yaml"

    def complete(self) -> bool:
        return all((self.directory / name).is_file() for name in BINARIES) and self.kwok_stages.is_file()


def _go_version() -> str:
    return subprocess.run(
        ["go", "env", "GOVERSION"], check=True, capture_output=True, text=True
    ).stdout.strip()


def cache_key() -> str:
    digest = hashlib.sha256(_go_version().encode())
    for path in sorted(GO_DIR.rglob("*")):
        if path.is_file() and path.suffix in {".mod", ".sum", ".go"}:
            digest.update(str(path.relative_to(GO_DIR)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    configured = os.environ.get("EKSRAY_K8S_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eksray-k8s"


def binaries() -> Binaries:
    """Where the binaries for the pinned versions are (built or not)."""
    return Binaries(cache_root() / cache_key())


def _ldflags(module: str) -> str:
    flags = "-s -w"
    if module == "controlplane":  # what /version reports, as a release build does
        major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
        pkg = "k8s.io/component-base/version"
        flags += (
            f" -X {pkg}.gitVersion={KUBERNETES_VERSION} -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor}"
        )
        flags += f" -X {pkg}.gitTreeState=clean"
    return flags


def build(log: bool = True) -> Binaries:
    """Build what is missing; returns the binaries. Raises ``CalledProcessError`` on a failed build.

    Builds of one key take turns (a lock file beside it): a second test run started meanwhile
    waits and then finds the binaries, instead of building into the same staging directory.
    """
    target = binaries()
    if target.complete():
        return target
    target.directory.parent.mkdir(parents=True, exist_ok=True)
    with open(target.directory.with_name(target.directory.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.complete():
            return target
        return _build(target, log)


def _build(target: Binaries, log: bool) -> Binaries:
    staging = target.directory.with_name(target.directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    started = time.monotonic()
    for module, packages in MODULES:
        if log:
            print(f"[k8s] building {module} ({' '.join(packages)}) ...", file=sys.stderr, flush=True)
        subprocess.run(
            ["go", "build", "-trimpath", f"-ldflags={_ldflags(module)}", "-o", str(staging) + "/", *packages],
            cwd=GO_DIR / module,
            check=True,
        )
    kwok_dir = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"],
        cwd=GO_DIR / "kwok",
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    stages = [Path(kwok_dir, stage).read_text() for stage in KWOK_STAGES]
    (staging / "kwok-stages.yaml").write_text("\n---\n".join(s.strip() for s in stages) + "\n")
    missing = [name for name in BINARIES if not (staging / name).is_file()]
    if missing:
        raise RuntimeError(f"the build made no {', '.join(missing)} in {staging}")
    # A finished build appears at once, so an interrupted one is never taken for complete.
    shutil.rmtree(target.directory, ignore_errors=True)
    staging.rename(target.directory)
    if log:
        print(f"[k8s] built in {time.monotonic() - started:.0f} s: {target.directory}", file=sys.stderr)
    return target
