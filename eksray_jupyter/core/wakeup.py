"""Wake a polling loop the moment something it looks at changes: a file or a process.

The local backend's observer and the local job store's watcher look at state others write
(a CLI, a job supervisor, Ray itself). Polling faster would cost CPU on every machine all
the time; instead each loop waits on a :class:`Wakeup`, which is set by

* file-system notifications (``watchdog``: inotify on Linux) for chosen directories, filtered
  by file name, and
* process exits, through Linux pidfds (``os.pidfd_open``), for any process, not only children.

A loop still wakes at its timeout: what neither source sees (a dashboard-only change) is
found as before, only later. Where pidfds or notifications are unavailable, that is all it does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# watchdog's recursive watch warns (from its thread) when a directory made while it adds the
# directories is added twice; harmless, and the watch stays right.
warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)

PathFilter = Callable[[str], bool]


class Wakeup:
    """A flag set by watched directories and processes; :meth:`wait` returns when it is, or at the timeout."""

    def __init__(self, name: str, flag: threading.Event | None = None) -> None:
        self.name = name
        self._flag = flag if flag is not None else threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        # Directories: path -> (its watchdog watch, which file names count).
        self._observer: Any = None
        self._dirs: dict[str, tuple[Any, tuple[PathFilter, bool]]] = {}  # path -> (watch, how)
        # Processes: pid -> pidfd, waited on by one selector thread; the pipe re-arms it.
        self._selector: selectors.BaseSelector | None = None
        self._pipe: tuple[int, int] | None = None
        self._pidfds: dict[int, int] = {}
        self._pid_thread: threading.Thread | None = None

    def set(self) -> None:
        self._flag.set()

    def wait(self, timeout: float) -> bool:
        """Until something changed (True) or ``timeout`` passed (False); then ready for the next."""
        fired = self._flag.wait(timeout)
        self._flag.clear()
        return fired

    # --- directories ------------------------------------------------------------------------

    def watch_dirs(self, wanted: dict[Path, tuple[PathFilter, bool]]) -> None:
        """Watch exactly these directories (others are dropped), each with (filter, recursive): a
        change to a file whose path passes its filter sets the flag. Missing ones are skipped."""
        try:
            from watchdog.observers import Observer
        except ImportError:  # not installed: the loops poll at their interval
            return
        with self._lock:
            if self._closed:
                return
            if self._observer is None:
                self._observer = Observer()
                self._observer.daemon = True
                self._observer.start()
            keys = {str(p): f for p, f in wanted.items()}
            # Dropped, or watched another way now (a filter that changed): unscheduled.
            for path in [p for p, (_, how) in self._dirs.items() if keys.get(p) != how]:
                watch, _ = self._dirs.pop(path)
                with contextlib.suppress(Exception):  # gone with its directory
                    self._observer.unschedule(watch)
            for path, (accepts, recursive) in keys.items():
                if path in self._dirs or not os.path.isdir(path):
                    continue
                try:
                    watch = self._observer.schedule(_Handler(self, accepts), path, recursive=recursive)
                except OSError as e:  # e.g. the inotify watch limit: polling still finds it
                    log.debug("eksray %s: cannot watch %s: %s", self.name, path, e)
                    continue
                self._dirs[path] = (watch, (accepts, recursive))

    # --- processes --------------------------------------------------------------------------

    def watch_pids(self, pids: Iterable[int]) -> None:
        """Watch exactly these processes: the flag is set when one of them exits."""
        if not hasattr(os, "pidfd_open"):
            return
        wanted = set(pids)
        with self._lock:
            if self._closed:
                return
            if self._selector is None:
                self._selector = selectors.DefaultSelector()
                self._pipe = os.pipe()
                self._selector.register(self._pipe[0], selectors.EVENT_READ, None)
                self._pid_thread = threading.Thread(
                    target=self._wait_pids, name=f"eksray-{self.name}-pids", daemon=True
                )
                self._pid_thread.start()
            for pid in set(self._pidfds) - wanted:
                self._forget_pid(pid)
            for pid in wanted - set(self._pidfds):
                try:
                    fd = os.pidfd_open(pid)
                except OSError:  # already gone: that is a change
                    self._flag.set()
                    continue
                self._pidfds[pid] = fd
                self._selector.register(fd, selectors.EVENT_READ, pid)

    def _forget_pid(self, pid: int) -> None:
        fd = self._pidfds.pop(pid, None)
        if fd is None or self._selector is None:
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    def _wait_pids(self) -> None:
        selector = self._selector
        assert selector is not None and self._pipe is not None
        while not self._closed:
            try:
                ready = selector.select(timeout=5.0)
            except (OSError, ValueError):  # an fd closed under us by watch_pids: look again
                continue
            for key, _ in ready:
                if key.data is None:  # the pipe: closing
                    with contextlib.suppress(OSError):
                        os.read(self._pipe[0], 64)
                    continue
                with self._lock:
                    self._forget_pid(key.data)
                self._flag.set()

    # --- the end ----------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            observer, self._observer = self._observer, None
            self._dirs.clear()
            for pid in list(self._pidfds):
                self._forget_pid(pid)
            pipe = self._pipe
        if observer is not None:
            observer.stop()
            observer.join(5.0)
        if pipe is not None:
            with contextlib.suppress(OSError):
                os.write(pipe[1], b"x")
            if self._pid_thread is not None:
                self._pid_thread.join(5.0)
            for fd in pipe:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self._selector is not None:
            self._selector.close()
        self._flag.set()  # a waiter returns at once


class _Handler:
    """watchdog's handler protocol (``dispatch``): sets the flag for files that pass ``accepts``."""

    def __init__(self, wakeup: Wakeup, accepts: PathFilter) -> None:
        self.wakeup = wakeup
        self.accepts = accepts

    def dispatch(self, event: Any) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (ours among them) change nothing
        paths = (str(event.src_path), str(getattr(event, "dest_path", "") or ""))
        if any(p and self.accepts(p) for p in paths):
            self.wakeup.set()
