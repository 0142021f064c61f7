"""The cluster spec: one definition (``schema/cluster.schema.json``), validated here.

A create request is a cluster spec, optionally naming an admin-defined profile whose
fields it overrides. :func:`resolve_cluster_spec` merges, fills defaults and validates,
reporting *every* offending field at once so a user fixes a form in one go.
"""

from __future__ import annotations

import copy
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

from .errors import FieldError, InvalidRequestError
from .lifecycle import apply_bound_defaults, bound_errors, bounds_for

SCHEMA_VERSION = "1"

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def schema_dir() -> Path:
    """Where the JSON schemas live: inside the installed wheel, or at the repository root."""
    for candidate in (_PACKAGE_DIR / "schema", _PACKAGE_DIR.parent / "schema"):
        if (candidate / "cluster.schema.json").is_file():
            return candidate
    raise FileNotFoundError("schema/cluster.schema.json not found next to the eksray_jupyter package")


@cache
def load_schema(name: str = "cluster") -> dict[str, Any]:
    with open(schema_dir() / f"{name}.schema.json", encoding="utf-8") as f:
        return json.load(f)


@cache
def _validator(name: str) -> Any:
    import jsonschema

    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def json_path(parts: Any) -> str:
    """``["workerGroups", 0, "cpu"]`` -> ``workerGroups[0].cpu``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def non_finite_errors(value: Any, parts: tuple[Any, ...] = ()) -> list[FieldError]:
    """NaN and infinities anywhere in a request: JSON cannot carry them back to a browser.

    Python's ``json`` reads ``NaN``/``Infinity`` and YAML reads ``.nan``/``.inf``; both pass a
    schema's ``type: number`` and every ``minimum``, so they are refused before validation.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return [FieldError(json_path(parts), f"{value} is not a number JSON can carry; give a finite number")]
    if isinstance(value, dict):
        return [e for key, item in value.items() for e in non_finite_errors(item, (*parts, key))]
    if isinstance(value, list):
        return [e for i, item in enumerate(value) for e in non_finite_errors(item, (*parts, i))]
    return []


def _describe(error: Any) -> FieldError:
    """Turn a jsonschema error into a message that says what is allowed."""
    path = list(error.absolute_path)
    validator = error.validator
    value = error.validator_value
    if validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        if allowed:
            where = json_path([*path, extra[0]]) if len(extra) == 1 else json_path(path)
            names = ", ".join(repr(e) for e in extra)
            return FieldError(where, f"unknown field {names}; allowed fields: {', '.join(allowed)}")
        # A map whose values failed (e.g. labels with a non-string value).
        return FieldError(json_path(path), error.message)
    if validator == "type":
        return FieldError(json_path(path), f"must be of type {value}, got {json.dumps(error.instance)}")
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return FieldError(json_path([*path, missing]), "is required")
    if validator == "pattern":
        field = path[-1] if path else ""
        if field in ("name", "groupName", "namespace"):
            return FieldError(
                json_path(path),
                f"{json.dumps(error.instance)} is not a valid name: use lower-case letters, digits "
                "and '-', start with a letter and end with a letter or digit",
            )
        return FieldError(json_path(path), f"{json.dumps(error.instance)} does not match {value}")
    if validator == "propertyNames" or (
        error.relative_schema_path and "propertyNames" in error.relative_schema_path
    ):
        if path and path[-1] == "resources":
            return FieldError(
                json_path(path),
                f"invalid resource name {json.dumps(error.instance)}: set CPU, GPU and memory with the "
                "cpu, gpu and memory fields; custom names start with a letter or '_'",
            )
        return FieldError(json_path(path), f"invalid key {json.dumps(error.instance)}")
    if validator in ("maxLength", "minLength"):
        what = "at most" if validator == "maxLength" else "at least"
        return FieldError(json_path(path), f"must be {what} {value} characters long")
    if validator in ("minimum", "maximum"):
        what = "at least" if validator == "minimum" else "at most"
        return FieldError(json_path(path), f"must be {what} {value}, got {error.instance}")
    if validator == "enum":
        return FieldError(json_path(path), f"must be one of {', '.join(map(str, value))}")
    if validator in ("maxItems", "maxProperties"):
        return FieldError(json_path(path), f"may have at most {value} entries")
    return FieldError(json_path(path), error.message)


def schema_errors(document: Any, name: str = "cluster") -> list[FieldError]:
    """All schema violations of ``document``, sorted by path."""
    errors = [_describe(e) for e in _validator(name).iter_errors(document)]
    # propertyNames errors come with the offending key as instance and the map as path.
    unique = {(e.path, e.message): e for e in errors}
    return sorted(unique.values(), key=lambda e: (e.path, e.message))


def _defaults_from(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _defaults_from(merged, root)
    return schema.get("default")


def fill_defaults(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """Fill schema defaults into objects (and array items) the request left out."""
    schema = _resolve_ref(schema, root)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key not in value:
                default = _defaults_from(sub, root)
                if default is not None:
                    value[key] = copy.deepcopy(default)
            if key in value:
                value[key] = fill_defaults(value[key], sub, root)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [fill_defaults(item, schema["items"], root) for item in value]
    return value


def _resolve_ref(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def whole_numbers(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """``2.0`` where the schema says integer becomes ``2``: JSON does not tell the two apart (JSON
    Schema takes both as integers), and what is built from a spec (``range``, Kubernetes' int32
    fields, Ray's flags) wants an int. Call on a valid document."""
    schema = _resolve_ref(schema, root)
    if isinstance(value, float) and schema.get("type") == "integer" and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = whole_numbers(item, sub, root)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [whole_numbers(item, schema["items"], root) for item in value]
    return value


def merge_profile(profile: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Overlay a request on a profile: objects merge key by key, worker groups by ``groupName``."""
    merged = copy.deepcopy(profile)
    for key, value in overrides.items():
        if key == "workerGroups" and isinstance(value, list) and isinstance(merged.get(key), list):
            by_name = {g.get("groupName"): g for g in merged[key] if isinstance(g, dict)}
            groups = []
            for group in value:
                base = by_name.get(group.get("groupName")) if isinstance(group, dict) else None
                groups.append(merge_profile(base, group) if base is not None else group)
            merged[key] = groups
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_profile(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def semantic_errors(spec: dict[str, Any]) -> list[FieldError]:
    """Rules JSON Schema cannot express: min <= replicas <= max, unique group names."""
    errors: list[FieldError] = []
    seen: dict[str, int] = {}
    for i, group in enumerate(spec.get("workerGroups") or []):
        if not isinstance(group, dict):
            continue
        name = group.get("groupName")
        if isinstance(name, str):
            if name in seen:
                errors.append(
                    FieldError(
                        f"workerGroups[{i}].groupName",
                        f"duplicate group name {name!r} (also workerGroups[{seen[name]}])",
                    )
                )
            seen.setdefault(name, i)
        lo, hi, n = group.get("minReplicas"), group.get("maxReplicas"), group.get("replicas")
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            errors.append(
                FieldError(
                    f"workerGroups[{i}].minReplicas",
                    f"minReplicas ({lo}) must not exceed maxReplicas ({hi})",
                )
            )
        elif isinstance(n, int) and isinstance(lo, int) and isinstance(hi, int) and not lo <= n <= hi:
            errors.append(
                FieldError(
                    f"workerGroups[{i}].replicas",
                    f"replicas ({n}) must be between minReplicas ({lo}) and maxReplicas ({hi})",
                )
            )
    return errors


def resolve_cluster_spec(
    request: Any,
    profiles: dict[str, dict[str, Any]],
    lifecycle_bounds: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Turn a create request into a complete, valid cluster spec or raise :class:`InvalidRequestError`.

    ``request`` is a cluster spec that may carry ``"profile": NAME``; the profile's fields
    are the base and the request's fields override them. ``lifecycle_bounds`` are the admin's
    bounds on ``lifecycle`` per profile (:mod:`.lifecycle`): their defaults fill what the
    request and profile leave out, and values outside them are refused.
    """
    if not isinstance(request, dict):
        raise InvalidRequestError("The request body must be a JSON object describing the cluster")
    if errors := non_finite_errors(request):
        raise InvalidRequestError("Invalid cluster spec: numbers must be finite (no NaN or Infinity)", errors)
    request = dict(request)
    profile_name = None
    if "profile" in request:
        profile_name = request.pop("profile")
        if not isinstance(profile_name, str) or profile_name not in profiles:
            known = ", ".join(sorted(profiles)) or "none are configured"
            what = (
                f"no profile {profile_name!r}" if isinstance(profile_name, str) else "give a profile's name"
            )
            raise InvalidRequestError(
                "Unknown profile", [FieldError("profile", f"{what}; available: {known}")]
            )
        # A profile never names the cluster: the request does.
        base = {k: v for k, v in profiles[profile_name].items() if k != "name"}
        request = merge_profile(base, request)
    bounds = bounds_for(lifecycle_bounds or {}, profile_name)
    request = apply_bound_defaults(request, bounds)
    schema = load_schema()
    spec = fill_defaults(copy.deepcopy(request), schema, schema)
    errors = schema_errors(spec)
    if errors:
        raise InvalidRequestError("Invalid cluster spec", errors + semantic_errors(spec))
    spec = whole_numbers(spec, schema, schema)
    where = f"profile {profile_name}" if profile_name else "your administrator's limits"
    if errors := semantic_errors(spec) + bound_errors(spec, bounds, where):
        raise InvalidRequestError("Invalid cluster spec", errors)
    return spec


def _group_field_bounds(key: str) -> tuple[int, int]:
    """``minimum`` and ``maximum`` of a worker group's field in the cluster schema."""
    field = load_schema()["$defs"]["workerGroup"]["properties"][key]
    return int(field["minimum"]), int(field["maximum"])


def validate_scale_request(spec: dict[str, Any], request: Any) -> list[dict[str, Any]]:
    """Check a scale request ``{"workerGroups": [{"groupName", "replicas"?, "minReplicas"?, "maxReplicas"?}]}``.

    Returns the new worker group list (the spec is not modified) or raises
    :class:`InvalidRequestError` naming every bad field.
    """
    allowed = {"groupName", "replicas", "minReplicas", "maxReplicas"}
    if (
        not isinstance(request, dict)
        or not isinstance(request.get("workerGroups"), list)
        or not request["workerGroups"]
    ):
        raise InvalidRequestError(
            "Invalid scale request",
            [
                FieldError(
                    "workerGroups",
                    "give a non-empty list of {groupName, replicas?, minReplicas?, maxReplicas?}",
                )
            ],
        )
    extra = set(request) - {"workerGroups"}
    errors: list[FieldError] = [
        FieldError(k, "unknown field; only workerGroups can be changed") for k in sorted(extra)
    ]
    groups = {g["groupName"]: copy.deepcopy(g) for g in spec.get("workerGroups", [])}
    for i, change in enumerate(request["workerGroups"]):
        where = f"workerGroups[{i}]"
        if not isinstance(change, dict):
            errors.append(FieldError(where, "must be an object"))
            continue
        for key in sorted(set(change) - allowed):
            errors.append(
                FieldError(f"{where}.{key}", f"unknown field; allowed: {', '.join(sorted(allowed))}")
            )
        name = change.get("groupName")
        if not isinstance(name, str):
            known = ", ".join(sorted(groups)) or "this cluster has no worker groups"
            errors.append(FieldError(f"{where}.groupName", f"give a worker group's name; groups: {known}"))
            continue
        if name not in groups:
            known = ", ".join(sorted(groups)) or "this cluster has no worker groups"
            errors.append(FieldError(f"{where}.groupName", f"no worker group {name!r}; groups: {known}"))
            continue
        if len(change) == 1:
            errors.append(FieldError(where, "give at least one of replicas, minReplicas, maxReplicas"))
        for key in ("replicas", "minReplicas", "maxReplicas"):
            if key not in change:
                continue
            value = change[key]
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # 2.0 is 2 in JSON
            lo, hi = _group_field_bounds(key)
            if not isinstance(value, int) or isinstance(value, bool):
                errors.append(FieldError(f"{where}.{key}", f"must be an integer, got {json.dumps(value)}"))
            elif not lo <= value <= hi:
                errors.append(FieldError(f"{where}.{key}", f"must be between {lo} and {hi}, got {value}"))
            else:
                groups[name][key] = value
        group = groups[name]
        if "replicas" not in change and group["minReplicas"] <= group["maxReplicas"]:
            # Moving only the bounds carries replicas along, as the autoscaler would.
            group["replicas"] = min(max(group["replicas"], group["minReplicas"]), group["maxReplicas"])
    if not errors:
        candidate = {**spec, "workerGroups": list(groups.values())}
        for e in semantic_errors(candidate):
            errors.append(e)
    if errors:
        raise InvalidRequestError("Invalid scale request", errors)
    return [groups[g["groupName"]] for g in spec.get("workerGroups", [])]
