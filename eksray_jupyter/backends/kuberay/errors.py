"""The one place where Kubernetes API failures become eksray errors.

Every call the backend makes to the API server goes through :func:`kube_call`, which
maps ``ApiException`` and connection errors onto ``core.errors`` (always chained with
``from e``) and keeps the HTTP status on the error for the few callers that branch on it
(the scale loop retries 409/422, watches re-list on 410). Messages come from the API
server's ``Status.message`` — never from request headers, so no token can leak.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from ...core.errors import BackendError, ConflictError, InvalidRequestError, NotFoundError

T = TypeVar("T")


class KubeError(BackendError):
    """The API server refused or failed a request (``status`` 0 = not reachable)."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeNotFound(NotFoundError):
    status = 404


class KubeConflict(ConflictError):
    """409 (stale resourceVersion, name taken) or a failed JSON-patch ``test`` (422)."""

    def __init__(self, message: str, status: int = 409, reason: str = "Conflict") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeInvalid(InvalidRequestError):
    status = 422


class KubeExpired(KubeError):
    """410 Gone/Expired: a watch's resourceVersion (or a list continue token) is too old."""


def _status_message(body: Any) -> tuple[str, str]:
    try:
        doc = json.loads(body) if isinstance(body, str | bytes) else {}
    except ValueError:
        return "", ""
    if not isinstance(doc, dict):
        return "", ""
    return str(doc.get("message") or "")[:500], str(doc.get("reason") or "")


def map_api_error(error: Exception, what: str, not_found: str | None = None) -> Exception:
    """The eksray error for a failed API call doing ``what`` (e.g. "creating RayCluster x")."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(error, ApiException):
        status = int(error.status or 0)
        message, reason = _status_message(error.body)
        detail = message or str(error.reason or "")
        if status == 404:
            return KubeNotFound(not_found or f"Not found while {what}: {detail}")
        if status == 409:
            return KubeConflict(f"Conflict while {what}: {detail}", 409, reason or "Conflict")
        if status == 410:
            return KubeExpired(f"Expired while {what}: {detail}", 410, reason or "Expired")
        if status == 422 and "test failed" in detail:
            return KubeConflict(f"Changed concurrently while {what}: {detail}", 422, reason or "Invalid")
        if status in (400, 422):
            return KubeInvalid(f"Kubernetes rejected the request while {what}: {detail}")
        if status in (401, 403):
            return KubeError(
                f"Kubernetes denied {what} ({status} {reason or error.reason}): {detail}. "
                "Check the credentials and RBAC of the Jupyter server's identity.",
                status,
                reason,
            )
        return KubeError(f"Kubernetes API error while {what}: {status} {detail}".rstrip(), status, reason)
    # urllib3/socket failures: say what failed, not the (possibly credential-bearing) URL.
    return KubeError(f"Kubernetes API not reachable while {what} ({type(error).__name__})")


def kube_call(what: str, fn: Callable[..., T], *args: Any, not_found: str | None = None, **kwargs: Any) -> T:
    """Call ``fn`` (a kubernetes client method) and map its failures (see module doc)."""
    import urllib3.exceptions
    from kubernetes.client.exceptions import ApiException

    try:
        return fn(*args, **kwargs)
    except ApiException as e:
        raise map_api_error(e, what, not_found) from e
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise map_api_error(e, what) from e
