"""The ``local`` backend: real Ray clusters made of processes on this machine.

Kept import-light: the bootstrap and the autoscaler's node provider run in their own
processes and import only the modules they need, not the backend class.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalBackend"]


def __getattr__(name: str) -> Any:
    if name == "LocalBackend":
        from .backend import LocalBackend

        return LocalBackend
    raise AttributeError(name)
