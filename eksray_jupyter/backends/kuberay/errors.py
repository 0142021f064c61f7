"""The one place where Kubernetes API failures become eksray errors.

Every call the backend makes to the API server goes through :func:`kube_call`, which
maps ``ApiException`` and connection errors onto ``core.errors`` (always chained with
``from e``) and keeps the HTTP status on the error for the few callers that branch on it
(the scale loop retries 409/422, watches re-list on 410). Messages come from the API
server's ``Status.message`` — never from request headers, so no token can leak.

Time: a call given ``_request_timeout`` as one number gets that many seconds in all. The
client's own retries are off (``Configuration.retries``, see :func:`no_client_retries`; urllib3
would otherwise retry an idempotent request's read timeout three times: four timeouts in
all). Within the time left, :func:`kube_call` retries only what is safe: a connection that
was never made (nothing was sent), a read whose connection broke, a 429 with ``Retry-After``.
Running out of time is a :class:`KubeTimeout` (HTTP 504); an API server that cannot be
reached, a :class:`KubeError` with status 0 (502).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ...core.errors import (
    BackendError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    UpstreamTimeoutError,
)

T = TypeVar("T")

#: Attempts of one call at most (retries only of what is safe; see the module doc).
ATTEMPTS = 3
#: Pause before the first retry after a connection failure; doubled for the next.
RETRY_PAUSE = 0.1
#: Client methods that only read (GET): a broken connection may be retried.
_READS = ("get_", "read_", "list_")
#: Client methods that change something: a timeout leaves the outcome unknown.
_WRITES = ("create_", "patch_", "replace_", "delete_")


class KubeError(BackendError):
    """The API server refused or failed a request (``status`` 0 = not reachable)."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeNotFound(NotFoundError):
    status = 404


class KubeConflict(ConflictError):
    """409: a stale resourceVersion, a name taken. (A failed JSON-patch ``test`` is a bare 422
    that does not say so: callers that send one re-read to tell, see ``scaling``.)"""

    def __init__(self, message: str, status: int = 409, reason: str = "Conflict") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeInvalid(InvalidRequestError):
    status = 422


class KubeExpired(KubeError):
    """410 Gone/Expired: a watch's resourceVersion (or a list continue token) is too old."""


class KubeTimeout(KubeError, UpstreamTimeoutError):
    """The API server did not answer in the time the call had (HTTP 504 to our clients)."""


def no_client_retries() -> Any:
    """``Configuration.retries`` for a client whose calls go through :func:`kube_call`: urllib3
    retries nothing (its default, ``Retry(3)``, multiplies a GET's or DELETE's timeout by 4 and
    sleeps out ``Retry-After``); redirects are not followed (the API server sends none)."""
    from urllib3.util.retry import Retry

    return Retry(total=0, redirect=False)


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
    return KubeError(
        f"Kubernetes API not reachable while {what} ({type(error).__name__}). Check the API server's "
        "address and that it is up, and the network between it and the Jupyter server."
    )


def _timeout_error(what: str, fn: Callable[..., Any], seconds: float | None) -> KubeTimeout:
    took = f" ({seconds:.1f}".rstrip("0").rstrip(".") + " s)" if seconds else ""
    message = (
        f"Kubernetes did not answer in time{took} while {what}. Check that the API server is up "
        "and not overloaded, and the network between it and the Jupyter server "
        "(c.KubeRayBackend.request_timeout sets how long eksray waits)."
    )
    if getattr(fn, "__name__", "").startswith(_WRITES):
        message += " The change may still have been made: list your clusters before trying again."
    return KubeTimeout(message)


def _transport_error(
    error: Exception, what: str, fn: Callable[..., Any], timeout: Any
) -> tuple[Exception, bool]:
    """The eksray error for a urllib3/socket failure, and whether the call may be sent again."""
    import urllib3.exceptions

    cause = error.reason if isinstance(error, urllib3.exceptions.MaxRetryError) else error
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        return map_api_error(cause, what), True  # no connection, so nothing was sent
    if isinstance(cause, urllib3.exceptions.TimeoutError | TimeoutError):
        if isinstance(timeout, tuple):  # (connect, read)
            timeout = timeout[0] if isinstance(cause, urllib3.exceptions.ConnectTimeoutError) else timeout[1]
        return _timeout_error(what, fn, timeout), False
    # The connection broke: only a read may be sent again.
    return map_api_error(cause, what), getattr(fn, "__name__", "").startswith(_READS)


def _retry_after(error: Any) -> float | None:
    """Seconds a 429 asks to wait (``Retry-After``), if it says."""
    if error.status != 429:
        return None
    try:
        return max(0.0, float((error.headers or {}).get("Retry-After", "")))
    except ValueError:
        return None


def kube_call(what: str, fn: Callable[..., T], *args: Any, not_found: str | None = None, **kwargs: Any) -> T:
    """Call ``fn`` (a kubernetes client method) within its time and map its failures (see module doc).

    ``_request_timeout`` as one number: the seconds the call has in all, retries included (0 or
    less: none left); as a (connect, read) pair (watches) or absent: one attempt, as given.
    """
    import urllib3.exceptions
    from kubernetes.client.exceptions import ApiException

    budget = kwargs.get("_request_timeout")
    if not isinstance(budget, int | float) or isinstance(budget, bool):
        try:
            return fn(*args, **kwargs)
        except ApiException as e:
            raise map_api_error(e, what, not_found) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise _transport_error(e, what, fn, budget)[0] from e

    deadline = time.monotonic() + budget
    for attempt in range(ATTEMPTS):
        left = deadline - time.monotonic()
        if left <= 0:
            raise _timeout_error(what, fn, budget)
        try:
            return fn(*args, **dict(kwargs, _request_timeout=left))
        except ApiException as e:
            pause = _retry_after(e)  # refused before it was served: safe to send again
            if pause is None or attempt + 1 == ATTEMPTS or time.monotonic() + pause >= deadline:
                raise map_api_error(e, what, not_found) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            error, retry = _transport_error(e, what, fn, budget)
            if not retry or attempt + 1 == ATTEMPTS:
                raise error from e
            pause = RETRY_PAUSE * 2**attempt
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
