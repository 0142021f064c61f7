"""One namespace's RayClusters, Ray pods and events, indexed for the backend's reads.

A :class:`~.reflector.Reflector` per kind keeps it current (lists, watches, re-lists after
a 410); this index applies what they see: full lists as a difference, watch events one by
one. Readers (``list``/``get`` of the backend) take the lock briefly and never call the
API, so they are fast however many pods there are.

Changes are reported through ``on_change(kind, namespace, cluster, payload)``:
``("cluster", ns, name, None)`` when a RayCluster or one of its pods changed,
``("deleted", ns, name, last_object)`` and ``("event", ns, name, trimmed_event)``. The
first list of each kind reports nothing (it is the starting state, not a change).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .kubeapi import KINDS
from .names import RAYCLUSTERS
from .reflector import Reflector
from .status import trim_event, trim_pod

if TYPE_CHECKING:
    from .kubeapi import KubeApi

OnChange = Callable[[str, str, str, Any], None]
_POD_NAME = re.compile(r"^(?P<cluster>.+?)-(?:head|(?P<group>.+)-worker)-[a-z0-9]{5}$")


def _rv_newer(new: Any, old: Any) -> bool:
    """resourceVersions are opaque; in practice integers (etcd revisions), compared as such."""
    if isinstance(new, str) and isinstance(old, str) and new.isdigit() and old.isdigit():
        return int(new) > int(old)
    return new != old


def _kept_deletion_mark(old: dict[str, Any] | None, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj``, still marked as being deleted if ``old`` (the same object) was.

    A deletionTimestamp is never taken back; a newer object without one is a change made
    before the delete that this server marked in its cache (it shows "stopping" at once).
    """
    if old is None or "deletionTimestamp" not in old["metadata"] or "deletionTimestamp" in obj["metadata"]:
        return obj
    if old["metadata"].get("uid") != obj["metadata"].get("uid"):
        return obj
    return dict(obj, metadata=dict(obj["metadata"], deletionTimestamp=old["metadata"]["deletionTimestamp"]))


def _relevant(event: dict[str, Any]) -> bool:
    """Only events about RayClusters and pods are kept (a namespace may hold other apps)."""
    return (event.get("involvedObject") or {}).get("kind") in ("RayCluster", "Pod")


class NamespaceCache:
    def __init__(
        self,
        namespace: str,
        api: KubeApi,
        on_change: OnChange,
        log: logging.Logger | logging.LoggerAdapter[Any],
        watch_timeout: int = 300,
        max_events: int = 5000,
    ) -> None:
        self.namespace = namespace
        self.api = api
        self.on_change = on_change
        self.log = log
        self.watch_timeout = watch_timeout
        self.max_events = max_events
        self.lock = threading.RLock()
        self.clusters: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.pods_by_cluster: dict[str, dict[str, dict[str, Any]]] = {}
        self.events: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Bumped whenever a cluster or one of its pods changes: keys the backend's memo.
        self.versions: Counter[str] = Counter()
        self.event_serial = 0  # bumped on every event change
        self._pod_cluster: OrderedDict[str, str] = OrderedDict()  # pod -> cluster, kept after deletion
        self._reflectors = {kind: self._reflector(kind) for kind in KINDS}
        self.synced = {kind: reflector.synced for kind, reflector in self._reflectors.items()}

    def _reflector(self, kind: str) -> Reflector:
        def replace(items: list[dict[str, Any]], initial: bool) -> None:
            self._replace(kind, items, initial)

        def apply(etype: str, obj: dict[str, Any]) -> None:
            self._apply(kind, etype, obj)

        # Events are extra information: without RBAC for them, clusters still work.
        forbidden = "clusters are shown without them" if kind == "events" else None
        return Reflector(
            self.api, kind, self.namespace, replace, apply, self.log, self.watch_timeout, forbidden
        )

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        for reflector in self._reflectors.values():
            reflector.start()

    def stop(self, timeout: float = 5.0) -> None:
        for reflector in self._reflectors.values():
            reflector.interrupt()
        for reflector in self._reflectors.values():
            reflector.join(timeout)

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(event.wait(max(0.0, deadline - time.monotonic())) for event in self.synced.values())

    @property
    def is_synced(self) -> bool:
        return all(e.is_set() for e in self.synced.values())

    @property
    def stats(self) -> Counter[str]:
        """Lists, watches, expiries (410) and interruptions of the namespace's three watches."""
        total: Counter[str] = Counter()
        for reflector in self._reflectors.values():
            total.update(dict(reflector.stats))  # a copy: the watch thread may add a key meanwhile
        return total

    def staleness(self) -> tuple[float, str] | None:
        """None while all three watches are open; else since when (epoch seconds, the earliest)
        and why the cache may be behind the API server."""
        stale = [s for s in (r.stale for r in self._reflectors.values()) if s is not None]
        if not stale:
            return None
        return min(since for since, _ in stale), "; ".join(reason for _, reason in stale)

    @property
    def last_error(self) -> str | None:
        return next((r.last_error for r in self._reflectors.values() if r.last_error), None)

    # --- applying changes ---------------------------------------------------------------------------

    def _replace(self, kind: str, items: list[dict[str, Any]], initial: bool) -> None:
        """A full list: apply the difference to the cache (and report it unless initial)."""
        signals: list[tuple[str, str, Any]] = []
        with self.lock:
            if kind == RAYCLUSTERS:
                fresh = {o["metadata"]["name"]: o for o in items}
                for name, old in list(self.clusters.items()):
                    if name not in fresh:
                        del self.clusters[name]
                        self.versions[name] += 1
                        signals.append(("deleted", name, old))
                for name, obj in fresh.items():
                    old = self.clusters.get(name)
                    if old is None or old["metadata"].get("resourceVersion") != obj["metadata"].get(
                        "resourceVersion"
                    ):
                        self.clusters[name] = _kept_deletion_mark(old, obj)
                        self.versions[name] += 1
                        signals.append(("cluster", name, None))
            elif kind == "pods":
                fresh_pods = {p["name"]: p for p in map(trim_pod, items)}
                touched = {p["cluster"] for p in self.pods.values()} | {
                    p["cluster"] for p in fresh_pods.values()
                }
                changed = {
                    c
                    for c in touched
                    if {n: p for n, p in self.pods_by_cluster.get(c, {}).items()}
                    != {n: p for n, p in fresh_pods.items() if p["cluster"] == c}
                }
                self.pods = fresh_pods
                self.pods_by_cluster = {}
                for pod in fresh_pods.values():
                    self.pods_by_cluster.setdefault(pod["cluster"], {})[pod["name"]] = pod
                    self._remember_pod(pod)
                for cluster in changed:
                    self.versions[cluster] += 1
                    signals.append(("cluster", cluster, None))
            else:
                self.event_serial += 1
                trimmed = sorted((trim_event(e) for e in items if _relevant(e)), key=lambda e: e["time"])
                known = set(self.events)
                self.events = OrderedDict((e["uid"], e) for e in trimmed[-self.max_events :])
                for ev in self.events.values():
                    if ev["uid"] not in known:
                        cluster = self._event_cluster(ev)
                        if cluster:
                            self.versions[cluster] += 1  # its timeline and reasons read events
                            signals.append(("event", cluster, ev))
        if not initial:
            for signal, name, payload in signals:
                self.on_change(signal, self.namespace, name, payload)

    def _apply(self, kind: str, etype: str, obj: dict[str, Any]) -> None:
        signal: tuple[str, str, Any] | None = None
        with self.lock:
            if kind == RAYCLUSTERS:
                name = obj["metadata"]["name"]
                if etype == "DELETED":
                    old = self.clusters.pop(name, None)
                    if old is not None and old["metadata"].get("uid") == obj["metadata"].get("uid"):
                        signal = ("deleted", name, obj)
                    elif old is not None:
                        self.clusters[name] = old  # a newer incarnation is already cached
                else:
                    old = self.clusters.get(name)
                    if old is not None and not _rv_newer(
                        obj["metadata"].get("resourceVersion"), old["metadata"].get("resourceVersion")
                    ):
                        return  # already have it (written through by the backend)
                    self.clusters[name] = _kept_deletion_mark(old, obj)
                    signal = ("cluster", name, None)
                self.versions[name] += 1
            elif kind == "pods":
                pod = trim_pod(obj)
                cluster = pod["cluster"]
                previous = self.pods.pop(pod["name"], None)
                if previous is not None:
                    self.pods_by_cluster.get(previous["cluster"], {}).pop(pod["name"], None)
                if etype != "DELETED":
                    self.pods[pod["name"]] = pod
                    self.pods_by_cluster.setdefault(cluster, {})[pod["name"]] = pod
                    self._remember_pod(pod)
                self.versions[cluster] += 1
                signal = ("cluster", cluster, None)
            else:
                if not _relevant(obj):
                    return
                ev = trim_event(obj)
                self.event_serial += 1
                if etype == "DELETED":  # expired by the API server's event TTL
                    self.events.pop(ev["uid"], None)
                    return
                old_ev = self.events.pop(ev["uid"], None)
                self.events[ev["uid"]] = ev
                while len(self.events) > self.max_events:
                    self.events.popitem(last=False)
                if (
                    old_ev is not None
                    and old_ev["count"] == ev["count"]
                    and old_ev["message"] == ev["message"]
                ):
                    return
                cluster = self._event_cluster(ev)
                if cluster:
                    self.versions[cluster] += 1  # its timeline and reasons read events
                    signal = ("event", cluster, ev)
        if signal is not None:
            self.on_change(signal[0], self.namespace, signal[1], signal[2])

    def put_cluster(self, obj: dict[str, Any]) -> None:
        """Write-through of an object the backend just wrote: reads see their own writes."""
        name = obj["metadata"]["name"]
        with self.lock:
            old = self.clusters.get(name)
            if old is None or _rv_newer(
                obj["metadata"].get("resourceVersion"), old["metadata"].get("resourceVersion")
            ):
                self.clusters[name] = _kept_deletion_mark(old, obj)
                self.versions[name] += 1

    # --- pods and events of a cluster ----------------------------------------------------------------

    def _remember_pod(self, pod: dict[str, Any]) -> None:
        self._pod_cluster[pod["name"]] = pod["cluster"]
        self._pod_cluster.move_to_end(pod["name"])
        while len(self._pod_cluster) > 20000:
            self._pod_cluster.popitem(last=False)

    def _event_cluster(self, ev: dict[str, Any]) -> str | None:
        if ev["kind"] == "RayCluster":
            return str(ev["name"])
        if ev["kind"] != "Pod":
            return None
        known = self._pod_cluster.get(ev["name"])
        if known:
            return known
        # A pod we never saw (gone before the watch started): KubeRay's naming tells.
        match = _POD_NAME.match(ev["name"])
        if match:
            candidates = [c for c in self.clusters if ev["name"].startswith(c + "-")]
            if candidates:
                return max(candidates, key=len)
        return None

    def cluster_pods(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.pods_by_cluster.get(name, {}).values())

    def cluster_events(self, name: str, uid: str | None, since_created: float) -> list[dict[str, Any]]:
        """Events of the cluster's current incarnation (its uid) and of its pods."""
        with self.lock:
            out = []
            for ev in self.events.values():
                if self._event_cluster(ev) != name:
                    continue
                if ev["kind"] == "RayCluster" and uid and ev["objectUid"] and ev["objectUid"] != uid:
                    continue
                if ev["kind"] == "Pod" and ev["time"] and ev["time"] < since_created - 1:
                    continue
                out.append(ev)
            return out
