"""Injected API faults: the switches every request meets before it is served (the API down
with 503s, injected error Statuses, requests held unanswered, latency) and the forced 410 a
watch meets. The outages
that act on connections (refused connections, dropped watches) are the server's, which owns
the listener and the watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError


@dataclass
class ErrorRule:
    code: int
    count: int = 1
    method: str | None = None
    path: str | None = None  # regex searched in the request path
    message: str | None = None
    # Sends a Retry-After header; note urllib3 then retries 413/429/503 transparently.
    retry_after: int | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self.path and not re.search(self.path, path))


@dataclass
class Hold:
    """Requests matching ``method``/``path`` (regex) go unanswered until :meth:`FakeKubeServer.release`:
    an API server that hangs, for exactly the requests a test names. ``waiting`` says how many
    are held now, so a test can wait until its request is (an event, not a guess at timing)."""

    method: str | None = None
    path: str | None = None
    waiting: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self.path and not re.search(self.path, path))


@dataclass
class Faults:
    """Fault switches. Plain attributes: safe to set from any thread."""

    latency: float = 0.0
    force_410: int = 0
    api_down_until: float = 0.0
    api_down_mode: str = "503"  # "503" | "refuse"
    errors: list[ErrorRule] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)

    def api_down(self) -> bool:
        return time.monotonic() < self.api_down_until

    def take_error(self, method: str, path: str) -> ErrorRule | None:
        for rule in list(self.errors):
            if rule.matches(method, path):
                rule.count -= 1
                if rule.count <= 0:
                    with contextlib.suppress(ValueError):
                        self.errors.remove(rule)
                return rule
        return None

    def take_410(self) -> bool:
        if self.force_410 > 0:
            self.force_410 -= 1
            return True
        return False

    def as_dict(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "force_410": self.force_410,
            "api_down": self.api_down(),
            "api_down_remaining": max(0.0, self.api_down_until - time.monotonic()),
            "api_down_mode": self.api_down_mode,
            "errors": [rule.__dict__ for rule in self.errors],
            "holds": [{"method": h.method, "path": h.path, "waiting": h.waiting} for h in self.holds],
        }

    async def before_request(self, method: str, path: str) -> None:
        """Raises the fault this request meets (the API down, an injected error), else waits
        while a hold keeps it, and the injected latency."""
        if self.api_down() and self.api_down_mode == "503":
            # No Retry-After: urllib3 would silently retry 503s that carry one.
            raise ApiError(503, "the server is currently unable to handle the request", "ServiceUnavailable")
        rule = self.take_error(method, path)
        if rule is not None:
            headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after else None
            raise ApiError(rule.code, rule.message or f"injected fault {rule.code}", headers=headers)
        hold = next((h for h in list(self.holds) if h.matches(method, path)), None)
        if hold is not None:
            hold.waiting += 1
            try:
                await hold.released.wait()
            finally:
                hold.waiting -= 1
        if self.latency > 0:
            await asyncio.sleep(self.latency)
