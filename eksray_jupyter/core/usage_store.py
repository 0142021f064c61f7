"""Where usage is kept: one file per owner and backend, ``<state_dir>/usage/<backend>-<owner>.json``.

It holds each cluster's :class:`..usage.Meter` and, per month, what clusters that are gone
cost (``closed``) and which budget warnings were given. The server, the CLI, a kernel and a
job's supervisor all update it, so every change is a read-modify-write under the file's
``fcntl`` lock (a sibling ``.lock`` file), replaced atomically; the same lock serialises a quota
check with the create it allows. A file that cannot be read is refused (never taken for empty:
that would forget the month's spending).
"""

from __future__ import annotations

import contextlib
import fcntl
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConflictError
from .state_files import CorruptFileError, read_json_checked, write_json_atomic

T = TypeVar("T")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


class UsageStore:
    def __init__(self, state_dir: str | Path, backend: str, owner: str) -> None:
        self.path = Path(state_dir) / "usage" / f"{_safe(backend)}-{_safe(owner)}.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the owner's usage lock (re-entrant within one ``with`` only: do not nest)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield

    def read(self) -> dict[str, Any]:
        try:
            data = read_json_checked(self.path)
        except CorruptFileError as e:
            raise ConflictError(
                f"The usage record {self.path} cannot be read ({e.reason}); fix or move it away "
                "(moving it away forgets this month's spending)."
            ) from None
        if data is None:
            return {"clusters": {}, "months": {}}
        if not isinstance(data, dict):
            raise ConflictError(f"The usage record {self.path} is not a JSON object; fix or move it away.")
        data.setdefault("clusters", {})
        data.setdefault("months", {})
        return data

    def update(self, change: Callable[[dict[str, Any]], T], *, lock: bool = True) -> T:
        """Apply ``change`` to the freshest record and write it (``lock=False``: the caller holds it)."""
        with self.locked() if lock else contextlib.nullcontext():
            data = self.read()
            result = change(data)
            write_json_atomic(self.path, data)
            return result
