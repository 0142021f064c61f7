"""The plumbing every simulated controller shares: a work queue that coalesces reconcile
requests per object onto the server's event loop.

To add a controller: subclass :class:`Controller`, set ``watches`` (store type keys),
set ``primary``, implement ``keys_for(event)`` and ``reconcile(namespace, name)``, and register
it in ``RayOperator.__init__``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .objects import meta_of
from .store import ResourceType, WatchEvent

if TYPE_CHECKING:
    from .operator import RayOperator

log = logging.getLogger("fakekube.operator")


class Controller:
    """Base: coalesces reconcile requests per (namespace, name) onto the loop."""

    watches: tuple[str, ...] = ()
    primary: ResourceType  # the kind this controller reconciles

    def __init__(self, op: RayOperator) -> None:
        self.op = op
        self.store = op.store
        self._dirty: set[tuple[str, str]] = set()
        self._scheduled = False

    def keys_for(self, ev: WatchEvent) -> Iterable[tuple[str, str]]:
        return ()

    def enqueue(self, key: tuple[str, str]) -> None:
        self._dirty.add(key)
        if not self._scheduled:
            self._scheduled = True
            self.op.loop.call_soon(self._drain)

    def enqueue_later(self, delay: float, key: tuple[str, str]) -> None:
        self.op.call_later(delay, lambda: self.enqueue(key))

    def _drain(self) -> None:
        self._scheduled = False
        keys, self._dirty = sorted(self._dirty), set()
        for ns, name in keys:
            if not self.op.running:
                return
            try:
                self.reconcile(ns, name)
            except Exception:  # pragma: no cover - bug in the fake
                log.exception("%s reconcile of %s/%s failed", type(self).__name__, ns, name)

    def reconcile(self, namespace: str, name: str) -> None:
        raise NotImplementedError

    def resync(self) -> None:
        """Enqueue every object of the primary kind."""
        for obj in self.store.select(self.primary, copy=False):
            meta = meta_of(obj)
            self.enqueue((meta["namespace"], meta["name"]))
