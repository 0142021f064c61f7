"""Patch algorithms: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
approximations of strategic-merge patch and server-side apply."""

from __future__ import annotations

import copy
import json
from typing import Any, TypeVar, cast

from .errors import ApiError, bad_request

MAX_JSON_PATCH_OPS = 10000
T = TypeVar("T")


def jcopy(obj: T) -> T:
    """Deep copy of a JSON-like value (much faster than copy.deepcopy)."""
    try:
        return cast(T, json.loads(json.dumps(obj)))
    except (TypeError, ValueError):
        return copy.deepcopy(obj)


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers, 1 == 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------------------
# RFC 7386


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return jcopy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --------------------------------------------------------------------------------------
# RFC 6902


class JsonPatchError(ApiError):
    """A patch that does not apply (a failed ``test``, a missing path). The real API server wraps
    these in a generic 422 and drops the cause (``NewGenericServerResponse``), so clients cannot
    tell a failed ``test`` from a missing path by the answer; the cause is kept here for logs."""

    def __init__(self, cause: str) -> None:
        super().__init__(422, "the server rejected our request due to an error in our request", "Invalid")
        self.cause = cause


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise bad_request(f"invalid JSON pointer {path!r}")
    if path == "":
        return []
    if not path.startswith("/"):
        raise JsonPatchError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(token: str, length: int, allow_end: bool, path: str) -> int:
    if token == "-" and allow_end:
        return length
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise JsonPatchError(f"invalid array index {token!r} in {path}")
    idx = int(token)
    limit = length if allow_end else length - 1
    if idx > limit:
        raise JsonPatchError(f"array index out of bounds: {path}: {idx}")
    return idx


def _parent(doc: Any, tokens: list[str], op: str, path: str) -> Any:
    cur = doc
    for tok in tokens[:-1]:
        if isinstance(cur, dict):
            if tok not in cur:
                raise JsonPatchError(
                    f"{op} operation does not apply: doc is missing path: {path}: missing value"
                )
            cur = cur[tok]
        elif isinstance(cur, list):
            cur = cur[_index(tok, len(cur), False, path)]
        else:
            raise JsonPatchError(f"{op} operation does not apply: doc is missing path: {path}: missing value")
    return cur


def _existing(parent: Any, last: str, path: str, op: str) -> str | int:
    """The key or index of the existing member ``last`` of ``parent``."""
    if isinstance(parent, dict):
        if last not in parent:
            raise JsonPatchError(f"{op} operation does not apply: doc is missing key: {path}: missing value")
        return last
    if isinstance(parent, list):
        return _index(last, len(parent), False, path)
    raise JsonPatchError(f"{op} operation does not apply: doc is missing path: {path}")


def _get(doc: Any, path: str, op: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, op, path)
    return parent[_existing(parent, tokens[-1], path, op)]


def _add(doc: Any, path: str, value: Any, op: str = "add") -> Any:
    tokens = _pointer(path)
    if not tokens:
        return jcopy(value)
    parent = _parent(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = jcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), True, path), jcopy(value))
    else:
        raise JsonPatchError(f"{op} operation does not apply: doc is missing path: {path}")
    return doc


def _remove(doc: Any, path: str, op: str = "remove") -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise JsonPatchError("unable to remove the whole document")
    parent = _parent(doc, tokens, op, path)
    del parent[_existing(parent, tokens[-1], path, op)]
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    if len(ops) > MAX_JSON_PATCH_OPS:
        raise ApiError(
            413,
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPS}, got {len(ops)}",
            "RequestEntityTooLarge",
        )
    doc = jcopy(doc)
    for raw in ops:
        if not isinstance(raw, dict):
            raise bad_request("json: cannot unmarshal into Go value of type jsonpatch.Operation")
        op = raw.get("op")
        path = raw.get("path")
        if op not in ("add", "remove", "replace", "move", "copy", "test"):
            raise JsonPatchError(f"Unexpected kind: {op}")
        if not isinstance(path, str):
            raise JsonPatchError(f"{op} operation missing path")
        if op in ("add", "replace", "test") and "value" not in raw:
            raise JsonPatchError(f"{op} operation missing value")
        if op == "add":
            doc = _add(doc, path, raw["value"])
        elif op == "remove":
            doc = _remove(doc, path)
        elif op == "replace":
            tokens = _pointer(path)
            if not tokens:
                doc = jcopy(raw["value"])
                continue
            parent = _parent(doc, tokens, "replace", path)
            if isinstance(parent, dict):
                # Like the apiserver's json-patch (evanphx v4): replacing a missing key of an
                # existing object sets it.
                parent[tokens[-1]] = jcopy(raw["value"])
            else:
                _get(doc, path, "replace")
                doc = _remove(doc, path, "replace")
                doc = _add(doc, path, raw["value"], "replace")
        elif op in ("move", "copy"):
            src = raw.get("from")
            if not isinstance(src, str):
                raise JsonPatchError(f"{op} operation missing from")
            value = jcopy(_get(doc, src, op))
            if op == "move":
                if path.startswith(src + "/"):
                    raise JsonPatchError("move operation cannot move a value into its own child")
                doc = _remove(doc, src, op)
            doc = _add(doc, path, value, op)
        else:  # test
            try:
                current = _get(doc, path, "test")
            except JsonPatchError:
                current = None
                if raw["value"] is not None:
                    raise JsonPatchError(f"testing value {path} failed: test failed") from None
            if not json_equal(current, raw["value"]):
                raise JsonPatchError(f"testing value {path} failed: test failed")
    return doc


# --------------------------------------------------------------------------------------
# Strategic merge patch (approximation) and server-side apply (approximation)

# list field name -> merge key, for the lists of built-in kinds that merge by key.
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "ports": "containerPort",  # service ports use "port", resolved below
}
_PRIMITIVE_MERGE_LISTS = {"finalizers"}


def _merge_key(field: str, items: list[Any]) -> str | None:
    key = _MERGE_KEYS.get(field)
    if field == "ports" and items and isinstance(items[0], dict) and "port" in items[0]:
        key = "port"
    return key


def strategic_merge(target: Any, patch: Any, *, apply: bool = False) -> Any:
    """Strategic merge (``apply=False``) or apply-style merge (``apply=True``).

    Dicts merge recursively; ``null`` deletes (not for apply); the lists of built-in kinds
    listed in ``_MERGE_KEYS`` merge by key (``$patch: delete`` items remove an entry);
    ``finalizers`` merge as a set; every other list is replaced. This is an approximation:
    ``$retainKeys``, ``$setElementOrder`` and field ownership are not modelled.
    """
    if not isinstance(patch, dict):
        return jcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: jcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            if not apply:
                result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, list) and isinstance(current, list):
            result[key] = _merge_list(key, current, value, apply)
        elif isinstance(value, dict):
            merged = strategic_merge(current, value, apply=apply)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = jcopy(value)
    return result


def _merge_list(field: str, current: list[Any], patch: list[Any], apply: bool) -> list[Any]:
    if field in _PRIMITIVE_MERGE_LISTS:
        out = list(current)
        for v in patch:
            if v not in out:
                out.append(v)
        return out
    mkey = _merge_key(field, patch or current)
    if not mkey or not all(isinstance(x, dict) for x in [*current, *patch]):
        return jcopy(patch)
    out = [jcopy(x) for x in current]
    for item in patch:
        kv = item.get(mkey)
        idx = next((i for i, x in enumerate(out) if x.get(mkey) == kv), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append({k: jcopy(v) for k, v in item.items() if not k.startswith("$")})
        else:
            out[idx] = strategic_merge(out[idx], item, apply=apply)
    return out
