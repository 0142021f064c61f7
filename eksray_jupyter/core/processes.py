"""Detached processes on this machine: starting, recognising and stopping them.

Used by the local backend (Ray's head and worker processes, the bootstrap) and the local
job runner (one supervisor per job); both outlive the process that started them.

A process is remembered as ``{"pid", "createTime"}`` so a recycled pid is never
mistaken for ours. Stopping a cluster only ever signals processes we can tie to it:
descendants of its own ``ray start`` processes and processes whose command line names
its private temp directory. Never a bare ``ray stop``, which would kill every Ray
process of the user on the machine. Also the port checks and log tails the backend
needs around those processes.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

ProcessRef = dict[str, Any]


def ref_of(proc: psutil.Process | subprocess.Popen[bytes]) -> ProcessRef:
    p = proc if isinstance(proc, psutil.Process) else psutil.Process(proc.pid)
    return {"pid": p.pid, "createTime": p.create_time()}


def process_of(ref: ProcessRef | None) -> psutil.Process | None:
    """The live process behind ``ref``, or None if it exited (or its pid was reused)."""
    if not ref:
        return None
    try:
        proc = psutil.Process(int(ref["pid"]))
        if abs(proc.create_time() - float(ref["createTime"])) > 0.01:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, os.WNOHANG)  # reap our own child
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
        return None


def is_alive(ref: ProcessRef | None) -> bool:
    return process_of(ref) is not None


class _DetachedPopen(subprocess.Popen):  # type: ignore[type-arg]
    """A child meant to outlive its Popen object: dropping it while the child runs is no leak.

    Popen warns (ResourceWarning) when it is collected before its child ended, then keeps it
    on its own list and reaps it later. For a detached process the first part is noise; the
    reaping (here or in :func:`process_of`) stays.
    """

    def __del__(self, _maxsize: int = sys.maxsize, _warn: Any = None) -> None:
        super().__del__(_maxsize, lambda *args, **kwargs: None)  # type: ignore[misc]


def spawn(argv: list[str], env: dict[str, str], log_path: Path) -> ProcessRef:
    """Start a detached process (own session: a Ctrl-C in Jupyter's terminal does not reach it)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = _DetachedPopen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    return ref_of(proc)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0" if host == "127.0.0.1" else host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listener_among(root: ProcessRef | None, port: int) -> ProcessRef | None:
    """The process listening on TCP ``port`` if it is ``root`` or one of its descendants, else None.

    A port number alone proves nothing: after our process died, anyone may listen on it.
    """
    proc = process_of(root)
    if proc is None:
        return None
    with contextlib.suppress(psutil.Error):
        for candidate in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                for conn in candidate.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                        return ref_of(candidate)
    return None


def cluster_processes(refs: list[ProcessRef], marker: str) -> list[psutil.Process]:
    """Every live process of one cluster: our roots, their descendants, anything naming ``marker``,
    and anything still in a root's session.

    The session catches orphans: when a head dies while starting, Ray's agents it started
    (``ray::DashboardAgent``, renamed, so no marker in their command line) are re-parented to
    init and are no root's descendants any more. Each root leads its own session (:func:`spawn`),
    so its session id is its pid; a session whose leader's pid now belongs to another process
    (reused) is not ours.
    """
    found: dict[int, psutil.Process] = {}
    sessions: dict[int, float] = {}  # session id -> the root's start time
    for ref in refs:
        pid, created = int(ref["pid"]), float(ref["createTime"])
        try:
            reused = abs(psutil.Process(pid).create_time() - created) > 0.01
        except psutil.Error:
            reused = False  # the root is gone; its session may live on
        if not reused:
            sessions[pid] = created
        proc = process_of(ref)
        if proc is None:
            continue
        found[proc.pid] = proc
        with contextlib.suppress(psutil.Error):
            for child in proc.children(recursive=True):
                found[child.pid] = child
    uid = os.getuid()
    for proc in psutil.process_iter(["pid", "cmdline", "uids", "create_time"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.info["uids"] and proc.info["uids"].real != uid:
                continue
            if any(marker in arg for arg in proc.info["cmdline"] or ()):
                found[proc.pid] = proc
                continue
            started = sessions.get(os.getsid(proc.pid))
            if started is not None and proc.info["create_time"] >= started - 0.5:
                found[proc.pid] = proc
    found.pop(os.getpid(), None)
    return list(found.values())


def processes_using(path: Path) -> list[psutil.Process]:
    """This user's processes (but this one) that use ``path``: a file under it open, their working
    directory in it, or its name in their command line. Costly (every process's open files): for
    deciding, rarely, whether a directory is abandoned."""
    prefix = str(path)

    def under(p: str) -> bool:
        return p == prefix or p.startswith(prefix + os.sep)

    uid = os.getuid()
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid == os.getpid() or (proc.info["uids"] and proc.info["uids"].real != uid):
                continue
            if (
                any(prefix in arg for arg in proc.info["cmdline"] or ())
                or under(proc.cwd())
                or any(under(f.path) for f in proc.open_files())
            ):
                found.append(proc)
    return found


def terminate(processes: list[psutil.Process], grace: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL whatever is left after ``grace`` seconds. Returns the pids signalled.

    A stopped process (SIGSTOP, Ctrl-Z) is continued too, so it handles its SIGTERM at once.
    """
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in processes]


#: What a Ray process never inherits from the Jupyter server unless an admin passes it by
#: name: Jupyter's and JupyterHub's tokens, cloud and Kubernetes credentials, and anything
#: named like a secret. Ray runs user code, which other users' jobs on a shared cluster (and
#: anything that can read a process's environment) could see.
CREDENTIAL_PATTERNS = (
    "JPY_*",
    "JUPYTER_TOKEN",
    "JUPYTERHUB_*",
    "AWS_*",
    "AZURE_*",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "KUBECONFIG",
    "*TOKEN*",
    "*SECRET*",
    "*PASSWORD*",
    "*PASSWD*",
    "*CREDENTIAL*",
    "*API_KEY*",
    "*APIKEY*",
    "*_KEY",
    "*_KEY_ID",
)


def _matches(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one of our own helper processes (a job supervisor): ours, without
    Jupyter's tokens and Ray's settings (it starts Ray processes with :func:`ray_env`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not _matches(k, ("RAY_*", "JPY_*", "JUPYTER_TOKEN", "JUPYTERHUB_API_TOKEN"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


# Stand-ins for modules that cost seconds at import and are rarely used (see its package docs).
IMPORT_PATH = str(Path(__file__).with_name("import_path"))


def with_import_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with :data:`IMPORT_PATH` first on its ``PYTHONPATH`` (a user's entries kept after it)."""
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != IMPORT_PATH]
    return {**env, "PYTHONPATH": os.pathsep.join([IMPORT_PATH, *rest])}


def use_import_path() -> None:
    """Give this process the stand-ins too (the CLI validates specs with jsonschema)."""
    if IMPORT_PATH not in sys.path:
        sys.path.insert(0, IMPORT_PATH)


def ray_env(extra: dict[str, str] | None = None, passed: tuple[str, ...] | list[str] = ()) -> dict[str, str]:
    """The environment of a Ray process (head, worker, their bootstrap), plus ``extra``.

    Without the server's credentials (:data:`CREDENTIAL_PATTERNS`) and Ray settings (``RAY_*``,
    which would configure the user's cluster from the server's environment), except the
    variables an admin passes by name or pattern (``c.LocalBackend.ray_environment``).
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if _matches(k, passed) or not _matches(k, ("RAY_*", *CREDENTIAL_PATTERNS))
    }
    env.update(
        {
            "RAY_USAGE_STATS_ENABLED": "0",
            # The local backend drives autoscaler v1 (v2 needs files the wheel does not ship).
            "RAY_enable_autoscaler_v2": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return with_import_path(env)


def log_tail(path: Path, lines: int = 1) -> str:
    """The last meaningful line(s) of a process log, for events and failure reasons."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    useful = [
        ln
        for ln in text
        if any(w in ln for w in ("Error", "error", "failed", "Failed", "timed out", "in use"))
    ]
    return " | ".join(line.strip()[:300] for line in (useful or text or ["no output"])[-lines:])
