"""The one place where domain errors become HTTP responses."""

from __future__ import annotations

from typing import Any

from ..core.errors import (
    BackendError,
    BusyError,
    ConflictError,
    EKSRayError,
    InvalidRequestError,
    NotFoundError,
    NotReadyError,
    UpstreamTimeoutError,
)

_STATUS: list[tuple[type[EKSRayError], int]] = [
    (InvalidRequestError, 400),
    (NotFoundError, 404),
    (ConflictError, 409),
    (UpstreamTimeoutError, 504),  # before BackendError, its base
    (BackendError, 502),
    (NotReadyError, 503),
    (BusyError, 503),
]


def http_status(error: BaseException) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def error_body(error: BaseException) -> dict[str, Any]:
    if not isinstance(error, EKSRayError):
        # Never leak internals (paths, tokens) in a 500: the details go to the server log.
        return {"message": "Internal error in eksray; the Jupyter server log has the details."}
    body: dict[str, Any] = {"message": error.message}
    if isinstance(error, InvalidRequestError) and error.errors:
        body["errors"] = [e.to_dict() for e in error.errors]
    return body
