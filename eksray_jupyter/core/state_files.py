"""Small helpers for state kept in files: atomic, durable writes; tolerant and strict reads.

Atomic writes go to a temporary file that is flushed to disk (fsync) before it replaces the
old one, and the directory is synced after: a crash leaves the old or the new file, never an
empty or half-written one. Readers that update a file choose :func:`read_json_checked`, which
tells a missing file from a corrupt one, so a corrupt file is never taken for "empty" and
overwritten with only the change.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


class CorruptFileError(ValueError):
    """A state file exists but does not hold what it should (not JSON, or not the right shape)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} cannot be read: {reason}")
        self.path = path
        self.reason = reason


def _sync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on directories
            os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, atomically and durably; the new file has mode 0600
    (``mkstemp``'s) from its first byte."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _sync_dir(path.parent)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def read_json_checked(path: Path) -> Any:
    """The file's JSON, or None if it does not exist; :class:`CorruptFileError` if it is not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise CorruptFileError(path, f"not valid JSON ({e})") from None


def read_json(path: Path, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return default
