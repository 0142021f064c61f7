"""Kubernetes-style API errors rendered as ``Status`` objects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .schema import Cause
    from .store import ResourceType

_REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def reason_for(code: int) -> str:
    return _REASONS.get(code, "Unknown")


class ApiError(Exception):
    """An error that the fake API server returns as a ``kind: Status`` body."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or reason_for(code)
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body

    def __repr__(self) -> str:
        return f"ApiError({self.code}, {self.reason}, {self.message!r})"


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)}",
        "UnsupportedMediaType",
    )


def path_not_found() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", "NotFound", {})


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "the server does not allow this method on the requested resource", "MethodNotAllowed"
    )


# Errors about one object of a resource type. Their details name the resource (``pods``) or,
# where the real server does so, the Kind.

_STALE = "the object has been modified; please apply your changes to the latest version and try again"


def _details(rt: ResourceType, name: str, kind: str) -> dict[str, Any]:
    # The core group is left out, as the real API server does.
    return {"name": name, "group": rt.group, "kind": kind} if rt.group else {"name": name, "kind": kind}


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rt.group_resource} "{name}" not found', "NotFound", _details(rt, name, rt.plural))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409, f'{rt.group_resource} "{name}" already exists', "AlreadyExists", _details(rt, name, rt.plural)
    )


def conflict(rt: ResourceType, name: str, why: str = _STALE) -> ApiError:
    """A stale write (resourceVersion not the current one)."""
    message = f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}'
    return ApiError(409, message, "Conflict", _details(rt, name, rt.plural))


def precondition_failed(rt: ResourceType, name: str, why: str) -> ApiError:
    """A failed delete precondition: a 409 whose details name the Kind (a stale write's name the resource)."""
    message = f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}'
    return ApiError(409, message, "Conflict", _details(rt, name, rt.kind))


def invalid(rt: ResourceType, name: str, causes: list[Cause]) -> ApiError:
    rendered = [c.render() for c in causes]
    text = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    details = {**_details(rt, name, rt.kind), "causes": [c.as_dict() for c in causes]}
    return ApiError(422, f'{rt.qualified_kind} "{name}" is invalid: {text}', "Invalid", details)
