"""Ray's token authentication on Kubernetes: each cluster's token, from the Secret KubeRay made.

A RayCluster with ``authOptions {mode: token}`` (``KubeRayBackend.ray_token_auth``) gets a
Secret from the KubeRay operator (>= 1.5; ``raycluster_controller.go`` reconcileAuthSecret):
named after the cluster (``names.auth_secret_name``), key ``auth_token``, labelled
``ray.io/cluster=<name>`` and controller-owned by the RayCluster. The operator gives every Ray
container ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` from that Secret (a ``secretKeyRef``:
the value is never in a pod spec), as it does for the autoscaler and RayJob submitters.

* **Trust.** The operator uses *any* Secret of that name it finds, so a Secret someone else
  made (or one left from an earlier cluster of the same name) would decide the token. Only
  a Secret controller-owned by this very RayCluster (its uid) and labelled for it is used;
  any other is refused, never handed to a driver.
* **Cache.** The token is kept in memory per cluster incarnation (uid) and read again at
  most every ``recheck_seconds``; so the dashboard proxy, which asks on every request, costs
  no API call. While a re-read fails, the known token of the same incarnation is kept.
* **A new cluster.** Right after a create (``%eksray up`` makes the cluster the active one
  at once) the operator may not have made the Secret yet: for a cluster younger than a
  minute, a request waits for it up to ``wait()`` seconds before it is "not ready".
* **The file** drivers read (``RAY_AUTH_TOKEN_PATH``): ``<root>/<namespace>/<cluster>``,
  mode 0600 in 0700 directories, rewritten only when the token changed, removed with the
  cluster (:meth:`RayTokens.forget`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.errors import BackendError, EKSRayError, NotReadyError
from ...core.ray_auth import TokenError, read_token_file, write_token_file
from .names import AUTH_TOKEN_KEY, L_CLUSTER, auth_secret_name, parse_time

if TYPE_CHECKING:
    from .kubeapi import KubeApi


@dataclass
class _Known:
    uid: str
    token: str
    read_at: float


def auth_mode(cr: dict[str, Any]) -> str:
    """``token`` for a cluster that demands Ray's token, else what it says (``disabled``, ``""``)."""
    return str(((cr.get("spec") or {}).get("authOptions") or {}).get("mode") or "")


def _refusal(secret: dict[str, Any], name: str, uid: str) -> str | None:
    """Why ``secret`` is not the token Secret the operator made for RayCluster ``name``/``uid``."""
    meta = secret.get("metadata") or {}
    refs = [r for r in meta.get("ownerReferences") or [] if isinstance(r, dict)]
    clusters = [r for r in refs if r.get("kind") == "RayCluster" and r.get("controller")]
    if not any(r.get("uid") == uid for r in clusters):
        if any(r.get("name") == name for r in clusters):
            return "it was made for an earlier cluster of that name"
        return "it is not owned by the cluster (someone else made it)"
    if (meta.get("labels") or {}).get(L_CLUSTER) != name:
        return f"it lacks the label {L_CLUSTER}={name}"
    return None


def _decode(secret: dict[str, Any]) -> str:
    raw = (secret.get("data") or {}).get(AUTH_TOKEN_KEY)
    try:
        token = base64.b64decode(str(raw or ""), validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        token = ""
    return token


class RayTokens:
    """The Ray tokens of one backend's clusters, keyed by (namespace, name)."""

    #: A cluster this young (seconds) may still be waiting for the operator to make its Secret.
    YOUNG_SECONDS = 60.0
    #: How often the Secret is looked for while waiting.
    POLL_SECONDS = 0.25

    def __init__(
        self,
        api: Callable[[], KubeApi],
        root: Callable[[], Path],
        wait: Callable[[], float] = lambda: 0.0,
        recheck_seconds: float = 60.0,
    ) -> None:
        self._api = api
        self._root = root
        self._wait = wait
        self.recheck_seconds = recheck_seconds
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], _Known] = {}
        self._written: dict[tuple[str, str], tuple[str, str]] = {}  # key -> (uid, token) on disk

    # --- the token ------------------------------------------------------------------------------

    def token(self, namespace: str, cr: dict[str, Any], wait: bool = True) -> str | None:
        """The token ``cr`` demands; None if it demands none (created without ``authOptions``).

        ``wait``: for a young cluster, wait a while for the operator to make the Secret (our own
        dashboard requests need not: they are made once the head is up, and so the Secret is).

        NotReadyError while the operator has not made the Secret yet; BackendError for a
        Secret that is not the operator's for this cluster, or a cluster we cannot serve.
        """
        if auth_mode(cr) != "token":
            return None
        meta = cr["metadata"]
        name, uid = str(meta["name"]), str(meta.get("uid") or "")
        auth = (cr.get("spec") or {}).get("authOptions") or {}
        if auth.get("enableK8sTokenAuth"):
            raise BackendError(
                f"Cluster {name!r} authenticates Ray clients with Kubernetes service account tokens "
                "(authOptions.enableK8sTokenAuth), which eksray does not support."
            )
        key = (namespace, name)
        with self._lock:
            known = self._known.get(key)
        if known is not None and known.uid == uid and time.monotonic() - known.read_at < self.recheck_seconds:
            return known.token
        created = parse_time(meta.get("creationTimestamp"))
        young = created is not None and time.time() - created < self.YOUNG_SECONDS
        secret_name = str(auth.get("secretName") or auth_secret_name(name))
        try:
            token = self._read(namespace, name, uid, secret_name, self._wait() if young and wait else 0.0)
        except BackendError:
            if known is not None and known.uid == uid:
                return known.token  # the API is unwell; this incarnation's token has not changed
            raise
        with self._lock:
            self._known[key] = _Known(uid, token, time.monotonic())
        return token

    def _read(self, namespace: str, name: str, uid: str, secret_name: str, wait: float) -> str:
        deadline = time.monotonic() + wait
        secret = self._api().get_secret(namespace, secret_name)
        while secret is None and time.monotonic() < deadline:
            time.sleep(min(self.POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            secret = self._api().get_secret(namespace, secret_name)
        if secret is None:
            raise NotReadyError(
                f"The Ray token of cluster {name!r} does not exist yet: the KubeRay operator makes it "
                f"(Secret {namespace}/{secret_name}) just after the cluster. Try again in a few seconds; "
                "if it never appears, the operator is older than KubeRay 1.5 and ignores token "
                "authentication (see docs/kuberay.md)."
            )
        problem = _refusal(secret, name, uid)
        if problem is not None:
            raise BackendError(
                f"The Secret {namespace}/{secret_name} is not the Ray token KubeRay made for cluster "
                f"{name!r} ({problem}), so it is not used. Delete the cluster and that Secret, then "
                "create the cluster again."
            )
        token = _decode(secret)
        if not token:
            raise BackendError(
                f"The Secret {namespace}/{secret_name} of cluster {name!r} holds no readable "
                f"{AUTH_TOKEN_KEY!r}; delete and re-create the cluster."
            )
        return token

    # --- the file ---------------------------------------------------------------------------------

    def path(self, namespace: str, name: str) -> Path:
        for part in (namespace, name):
            if not part or "/" in part or part.startswith("."):
                raise BackendError(f"Cannot keep a Ray token for the odd name {part!r}")
        return self._root() / namespace / name

    def file(self, namespace: str, cr: dict[str, Any]) -> Path | None:
        """The 0600 file holding ``cr``'s token (see :meth:`token`); None if it demands none."""
        name, uid = str(cr["metadata"]["name"]), str(cr["metadata"].get("uid") or "")
        token = self.token(namespace, cr)
        key = (namespace, name)
        path = self.path(namespace, name)
        if token is None:
            self._remove(key, path)  # a file left from an earlier cluster of that name
            return None
        with self._lock:
            if self._written.get(key) == (uid, token) and path.exists():
                return path
            self._private_dirs(path.parent)
            try:
                current = read_token_file(path)
            except TokenError:
                current = None
            if current != token:
                write_token_file(path, token)
            self._written[key] = (uid, token)
        return path

    def _private_dirs(self, directory: Path) -> None:
        """``<root>/<namespace>``, and the root, made (or narrowed to) 0700."""
        root = self._root()
        for d in (root, directory):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            if d.stat().st_mode & 0o077:
                os.chmod(d, 0o700)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept of a deleted cluster: the cached token and the file."""
        key = (namespace, name)
        with self._lock:
            self._known.pop(key, None)
        with contextlib.suppress(EKSRayError):
            self._remove(key, self.path(namespace, name))

    def _remove(self, key: tuple[str, str], path: Path) -> None:
        with self._lock:
            self._written.pop(key, None)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
