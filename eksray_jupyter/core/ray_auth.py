"""Ray's token authentication, as eksray uses it for every cluster it starts.

Each cluster has its own random token. Ray's daemons refuse gRPC calls and dashboard
requests without it, so only our own clients — the dashboard proxy, kernels, the CLI, the
magics and the job runners — reach a cluster, and only for their owner.

The token lives in a file of mode 0600 (Ray reads it from ``RAY_AUTH_TOKEN_PATH``), never in
an environment variable, a command line, a record or an answer: a process's environment
and argv are readable by every process of the same user, and argv by everyone.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .state_files import write_text_atomic

#: Ray's switch: ``token`` makes every daemon demand the token.
AUTH_MODE_ENV = "RAY_AUTH_MODE"
#: Where Ray (daemons and drivers) reads the token from.
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
#: The header Ray's dashboard accepts besides ``Authorization``; meant for proxies, so it
#: does not collide with a Kubernetes API server's own bearer token.
DASHBOARD_HEADER = "X-Ray-Authorization"


class TokenError(OSError):
    """A token file is missing, unreadable, empty or readable by others."""


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe, as Ray accepts any printable string)."""
    return secrets.token_urlsafe(32)


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` with mode 0600 from the first byte (atomic replace)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_text_atomic(path, token)


def read_token_file(path: Path) -> str:
    """The token in ``path``; TokenError if it is missing, empty or open to other users."""
    try:
        with open(path, encoding="utf-8") as f:
            mode = os.fstat(f.fileno()).st_mode
            token = f.read().strip()
    except OSError as e:
        raise TokenError(f"cannot read the Ray auth token file {path}: {e.strerror}") from e
    if mode & 0o077:
        raise TokenError(f"the Ray auth token file {path} is readable by other users; refusing it")
    if not token:
        raise TokenError(f"the Ray auth token file {path} is empty")
    return token


def driver_env(token_file: Path | None) -> dict[str, str]:
    """What a Ray process (daemon or driver) needs in its environment to present the token.

    Empty for a cluster without authentication (one started before eksray turned it on).
    """
    if token_file is None:
        return {}
    return {AUTH_MODE_ENV: "token", TOKEN_PATH_ENV: str(token_file)}


def dashboard_headers(token: str | None) -> dict[str, str]:
    """Headers that authenticate a request to the cluster's Ray dashboard (secret values)."""
    return {DASHBOARD_HEADER: f"Bearer {token}"} if token else {}
