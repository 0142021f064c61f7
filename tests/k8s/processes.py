"""Child processes of the test control plane: started with their output in a log file,
stopped by PID (SIGTERM, then SIGKILL), never by name."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessFailed(RuntimeError):
    pass


class Process:
    def __init__(
        self, name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
        env.update(self.env or {})
        with open(self.log_path, "ab") as log:
            # Own process group: a Ctrl-C in the launcher's terminal reaches the launcher only,
            # which then stops each child in order.
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise ProcessFailed(
                f"{self.name} exited with {self.popen.returncode}; last lines of {self.log_path}:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout)


def wait_for(fn: Callable[[], T], what: str, process: Process | None = None, timeout: float = 120.0) -> T:
    """Poll ``fn`` until truthy; fail at once, with its log, if ``process`` dies meanwhile."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if process is not None:
            process.check()
        try:
            value = fn()
            if value:
                return value
        except Exception as e:  # not up yet
            last_error = e
        if time.monotonic() > deadline:
            tail = f"\nlast lines of {process.log_path}:\n{process.log_tail()}" if process else ""
            raise TimeoutError(f"{what} not within {timeout:.0f} s (last error: {last_error!r}){tail}")
        time.sleep(0.1)
