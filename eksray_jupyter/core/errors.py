"""The domain errors of eksray-jupyter.

Every face maps these in one place: the server to HTTP status codes
(``eksray_jupyter.server.errors``), the CLI to exit codes, the magics to one line.
Messages are written for the user: they say what failed and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass


class EKSRayError(Exception):
    """Base class of every error eksray-jupyter raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of a request, located by a JSON path such as ``workerGroups[0].maxReplicas``."""

    path: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class InvalidRequestError(EKSRayError):
    """The request is malformed or breaks a rule; nothing was changed."""

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        self.errors = list(errors or [])
        if self.errors:
            details = "; ".join(f"{e.path or '(body)'}: {e.message}" for e in self.errors)
            message = f"{message}: {details}"
        super().__init__(message)


class NotFoundError(EKSRayError):
    """The named cluster (or job) does not exist for this user."""


class ConflictError(EKSRayError):
    """The request clashes with the current state (a name in use, a limit reached, a busy port)."""


class LimitExceededError(ConflictError):
    """A configured limit (nodes on this machine, clusters per user) would be exceeded."""


class NotReadyError(EKSRayError):
    """The thing asked for exists but is not up yet (e.g. a dashboard still starting)."""


class BackendError(EKSRayError):
    """The backend (Ray, Kubernetes, AWS) failed or could not be reached."""


class UpstreamTimeoutError(BackendError):
    """The backend (e.g. the Kubernetes API server) did not answer within the configured time."""


class BusyError(EKSRayError):
    """Too many changes are under way at once; nothing was done, try again shortly."""
