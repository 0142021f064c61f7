"""When an unused cluster is suspended or deleted: the spec's ``lifecycle``, the admin's bounds on
it, and the one decision function that the server's keeper and ``eksray admin reap`` share.

Everything here is pure (no I/O, no clock): :func:`decide` takes what was observed and the time,
so it is tested on recorded activity and both enforcers agree on every case.

Rules (docs/lifecycle.md):

- *idle*: nothing kept the cluster busy (a Ray task, actor or job running or waiting, a busy
  kernel or one that ran a cell, a job of ours, a keep-alive) for ``idleTimeoutMinutes``; then
  ``idleAction`` (suspend or delete);
- *max lifetime*: ``maxLifetimeHours`` after it was created the cluster is deleted, busy or not
  (suspended clusters are left to ``suspendedTtlHours``);
- *suspended TTL*: a cluster suspended for ``suspendedTtlHours`` is deleted;
- every action is warned of ``warning`` seconds first (a warning issued before the cluster's last
  activity does not count), so a user can keep it; an action is never taken unwarned, also not
  after a restart of the enforcer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import FieldError

#: The spec fields admins may bound, with their units (for messages).
BOUNDED_FIELDS = {
    "idleTimeoutMinutes": "minutes",
    "suspendedTtlHours": "hours",
    "maxLifetimeHours": "hours",
}
#: The key of ``c.EKSRay.lifecycle_bounds`` that applies to every profile without its own entry.
ANY_PROFILE = "*"


@dataclass(frozen=True)
class Policy:
    """A cluster's ``lifecycle``, in seconds; None where it is off."""

    idle_timeout: float | None = None
    idle_action: str = "suspend"
    suspended_ttl: float | None = None
    max_lifetime: float | None = None

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Policy:
        lifecycle = spec.get("lifecycle") or {}

        def seconds(key: str, unit: float) -> float | None:
            value = lifecycle.get(key) or 0
            return float(value) * unit if value > 0 else None

        return cls(
            idle_timeout=seconds("idleTimeoutMinutes", 60),
            idle_action=lifecycle.get("idleAction") or "suspend",
            suspended_ttl=seconds("suspendedTtlHours", 3600),
            max_lifetime=seconds("maxLifetimeHours", 3600),
        )

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.idle_timeout, self.suspended_ttl, self.max_lifetime))


@dataclass(frozen=True)
class Observation:
    """What an enforcer knows of one cluster at ``now`` (seconds since the epoch).

    ``busy`` lists why it is in use right now ("2 tasks running", "kernel 3f2a… is busy"); empty
    means nothing uses it. ``last_active`` is the latest moment something did (persisted by the
    backend: activity seen, a keep-alive, a resume), None if never.
    """

    now: float
    created_at: float
    suspended: bool
    busy: tuple[str, ...] = ()
    last_active: float | None = None
    suspended_at: float | None = None
    warned_at: float | None = None  # when the warning of the pending action was issued
    warned_action: str | None = None


@dataclass(frozen=True)
class Decision:
    """``action`` is ``none``, ``warn``, ``suspend`` or ``delete``; ``due`` is when the warned
    action will be taken (for ``warn`` and ``none`` while one is pending)."""

    action: str
    reason: str = ""
    pending: str | None = None  # the action that a warning announces
    due: float | None = None
    idle_since: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def span(seconds: float) -> str:
    """``45 s``, ``30 min``, ``2.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def decide(policy: Policy, seen: Observation, warning: float) -> Decision:
    """What to do with one cluster now. ``warning``: seconds between the warning and the action."""
    now = seen.now
    candidates: list[tuple[float, str, str, bool]] = []  # (when it is due, action, reason, idle?)
    idle_since: float | None = None
    if seen.suspended:
        if policy.suspended_ttl is not None:
            since = seen.suspended_at if seen.suspended_at is not None else seen.created_at
            candidates.append(
                (since + policy.suspended_ttl, "delete", f"suspended for {span(now - since)}", False)
            )
    else:
        if policy.max_lifetime is not None:
            candidates.append(
                (
                    seen.created_at + policy.max_lifetime,
                    "delete",
                    f"reached its maximum lifetime of {span(policy.max_lifetime)}",
                    False,
                )
            )
        if policy.idle_timeout is not None and not seen.busy:
            idle_since = max(seen.created_at, seen.last_active or 0.0)
            idle_for = max(0.0, now - idle_since)
            candidates.append(
                (
                    idle_since + policy.idle_timeout,
                    policy.idle_action,
                    f"idle for {span(idle_for)}: no Ray task, actor or job, no busy kernel, no keep-alive",
                    True,
                )
            )
    if not candidates:
        return Decision("none", idle_since=idle_since)
    due, action, reason, from_idle = min(candidates, key=lambda c: (c[0], c[1] != "delete"))
    # A warning counts only if it announced this action and, for idleness, came after the last
    # activity (a keep-alive or a busy moment cancels it).
    warned = (
        seen.warned_at is not None
        and seen.warned_action == action
        and (not from_idle or idle_since is None or seen.warned_at >= idle_since)
    )
    if now < due - warning:
        return Decision("none", idle_since=idle_since)
    if not warned:
        return Decision("warn", reason, pending=action, due=max(due, now + warning), idle_since=idle_since)
    assert seen.warned_at is not None
    act_at = max(due, seen.warned_at + warning)
    if now >= act_at:
        return Decision(action, reason, idle_since=idle_since)
    return Decision("none", reason, pending=action, due=act_at, idle_since=idle_since)


# --- admin bounds ---------------------------------------------------------------------------


def bounds_for(all_bounds: dict[str, Any], profile: str | None) -> dict[str, Any]:
    """The bounds that apply to a cluster made from ``profile`` (or from no profile)."""
    if profile is not None and isinstance(all_bounds.get(profile), dict):
        return all_bounds[profile]
    found = all_bounds.get(ANY_PROFILE)
    return found if isinstance(found, dict) else {}


def apply_bound_defaults(request: dict[str, Any], bounds: dict[str, Any]) -> dict[str, Any]:
    """The request with the bounds' defaults for lifecycle fields it (and its profile) left out."""
    defaults = {
        key: rule["default"]
        for key, rule in bounds.items()
        if key in BOUNDED_FIELDS and isinstance(rule, dict) and "default" in rule
    }
    action = bounds.get("idleAction")
    if isinstance(action, dict) and "default" in action:
        defaults["idleAction"] = action["default"]
    if not defaults:
        return request
    lifecycle = request.get("lifecycle")
    lifecycle = dict(lifecycle) if isinstance(lifecycle, dict) else {}
    for key, value in defaults.items():
        lifecycle.setdefault(key, value)
    return {**request, "lifecycle": lifecycle}


def bound_errors(spec: dict[str, Any], bounds: dict[str, Any], where: str) -> list[FieldError]:
    """Lifecycle values outside the admin's bounds; ``where`` names the bounds in messages."""
    lifecycle = spec.get("lifecycle") or {}
    errors: list[FieldError] = []
    for key, unit in BOUNDED_FIELDS.items():
        rule = bounds.get(key)
        if not isinstance(rule, dict):
            continue
        value = lifecycle.get(key, 0) or 0
        lo, hi = rule.get("minimum"), rule.get("maximum")
        allow_off = rule.get("allowOff", True)
        span = _range_text(lo, hi, unit)
        if value == 0:
            if not allow_off:
                errors.append(
                    FieldError(f"lifecycle.{key}", f"may not be 0 (off) here ({where}); give {span}")
                )
        elif (lo is not None and value < lo) or (hi is not None and value > hi):
            errors.append(FieldError(f"lifecycle.{key}", f"must be {span} ({where}), got {value}"))
    actions = (
        (bounds.get("idleAction") or {}).get("allowed")
        if isinstance(bounds.get("idleAction"), dict)
        else None
    )
    action = lifecycle.get("idleAction", "suspend")
    if actions and action not in actions:
        errors.append(
            FieldError("lifecycle.idleAction", f"must be one of {', '.join(actions)} ({where}), got {action}")
        )
    return errors


def _range_text(lo: float | None, hi: float | None, unit: str) -> str:
    def n(x: float) -> str:
        return f"{x:g}"

    if lo is not None and hi is not None:
        return f"between {n(lo)} and {n(hi)} {unit}"
    if hi is not None:
        return f"at most {n(hi)} {unit}"
    if lo is not None:
        return f"at least {n(lo)} {unit}"
    return f"a number of {unit}"


def check_bounds_config(all_bounds: Any) -> dict[str, Any]:
    """Validate ``c.EKSRay.lifecycle_bounds``; ValueError says what is wrong."""
    if not isinstance(all_bounds, dict):
        raise ValueError("lifecycle_bounds must be a dict of profile name (or '*') -> bounds")
    for profile, bounds in all_bounds.items():
        if not isinstance(bounds, dict):
            raise ValueError(f"lifecycle_bounds[{profile!r}] must be a dict")
        for key, rule in bounds.items():
            if key == "idleAction":
                if not isinstance(rule, dict) or not set(rule) <= {"allowed", "default"}:
                    raise ValueError(
                        f"lifecycle_bounds[{profile!r}]['idleAction'] must be a dict with 'allowed' and/or 'default'"
                    )
                continue
            if key not in BOUNDED_FIELDS:
                raise ValueError(
                    f"lifecycle_bounds[{profile!r}] has unknown key {key!r}; "
                    f"known: {', '.join([*BOUNDED_FIELDS, 'idleAction'])}"
                )
            if not isinstance(rule, dict) or not set(rule) <= {"minimum", "maximum", "allowOff", "default"}:
                raise ValueError(
                    f"lifecycle_bounds[{profile!r}][{key!r}] must be a dict of minimum, maximum, allowOff, default"
                )
            for limit in ("minimum", "maximum", "default"):
                value = rule.get(limit)
                if value is not None and (
                    not isinstance(value, (int, float))
                    or isinstance(value, bool)
                    or not math.isfinite(value)
                    or value < 0
                ):
                    raise ValueError(
                        f"lifecycle_bounds[{profile!r}][{key!r}][{limit!r}] must be a number >= 0"
                    )
    return all_bounds
