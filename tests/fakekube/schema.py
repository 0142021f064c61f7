"""Structural-schema handling for custom resources, driven by the real CRD files.

What the apiextensions-apiserver does on every write of a custom resource, in this order:
drop ``null`` values of non-nullable fields, prune unknown fields, apply ``default:`` values,
then validate against ``openAPIV3Schema`` (here with ``jsonschema``) plus the
``x-kubernetes-validations`` CEL rules (a small CEL subset that covers the KubeRay CRDs),
``x-kubernetes-list-type`` uniqueness and ``x-kubernetes-int-or-string``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml


def _shared_dir() -> Path:
    """The project's shared material (KubeRay CRDs and samples): ``EKSRAY_SHARED_DIR``, else
    ``../shared`` beside the checkout, else the workplace's ``/work/shared`` (a clone elsewhere)."""
    if os.environ.get("EKSRAY_SHARED_DIR"):
        return Path(os.environ["EKSRAY_SHARED_DIR"])
    beside = Path(__file__).resolve().parents[3] / "shared"
    return beside if (beside / "kuberay").is_dir() else Path("/work/shared")


SHARED_DIR = _shared_dir()
DEFAULT_CRD_DIR = SHARED_DIR / "kuberay" / "crds"
SAMPLES_DIR = SHARED_DIR / "kuberay" / "samples"
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


SKIPPED_RULES = (
    "Invalid value: null: some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)


@dataclass
class Cause:
    """One field error, as in ``Status.details.causes``."""

    reason: str  # FieldValueInvalid | FieldValueRequired | FieldValueNotSupported | ...
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def render(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def _yaml_loader() -> Any:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def load_crd(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        doc: dict[str, Any] = yaml.load(fh, Loader=_yaml_loader())
        return doc


# --------------------------------------------------------------------------------------
# Conversion of an OpenAPI v3 structural schema to a jsonschema (draft 4) schema


def _to_jsonschema(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_jsonschema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("description", "x-kubernetes-validations", "default", "example"):
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: _to_jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "anyOf", "allOf", "oneOf"):
            out[key] = _to_jsonschema(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") and "type" not in node and "anyOf" not in node:
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        t = out["type"]
        out["type"] = [*t, "null"] if isinstance(t, list) else [t, "null"]
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_FORMAT_CHECKER = jsonschema.FormatChecker(formats=())


def _check_int32(value: Any) -> bool:
    return not _is_int(value) or INT32_MIN <= value <= INT32_MAX


def _check_int64(value: Any) -> bool:
    return not _is_int(value) or INT64_MIN <= value <= INT64_MAX


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _check_date_time(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    try:
        _dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return True


_FORMAT_CHECKER.checks("int32")(_check_int32)
_FORMAT_CHECKER.checks("int64")(_check_int64)
_FORMAT_CHECKER.checks("date-time")(_check_date_time)


# --------------------------------------------------------------------------------------
# Tiny CEL subset used by the KubeRay CRDs


class _Cel:
    """Evaluates ``self == oldSelf``, ``self in [...]``, ``has(self.x)`` with ``!``,
    ``&&``, ``||`` and parentheses. Anything else raises ``ValueError``."""

    _TOKEN = re.compile(
        r"\s*(?:(has\(self\.[A-Za-z_][A-Za-z0-9_]*\))|(self\s*==\s*oldSelf)|"
        r"(self\s+in\s+\[[^\]]*\])|(&&)|(\|\|)|(!)|(\()|(\)))"
    )

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.uses_old = "oldSelf" in rule
        self.tokens = self._tokenize(rule)

    def _tokenize(self, rule: str) -> list[str]:
        pos, out = 0, []
        rule = rule.strip()
        while pos < len(rule):
            m = self._TOKEN.match(rule, pos)
            if not m or m.end() == pos:
                raise ValueError(f"unsupported CEL rule: {rule}")
            out.append(m.group(0).strip())
            pos = m.end()
        return out

    def evaluate(self, value: Any, old: Any) -> bool:
        self._pos = 0
        self._value, self._old = value, old
        result = self._or()
        if self._pos != len(self.tokens):
            raise ValueError(f"unsupported CEL rule: {self.rule}")
        return result

    def _peek(self) -> str | None:
        return self.tokens[self._pos] if self._pos < len(self.tokens) else None

    def _or(self) -> bool:
        left = self._and()
        while self._peek() == "||":
            self._pos += 1
            right = self._and()
            left = left or right
        return left

    def _and(self) -> bool:
        left = self._unary()
        while self._peek() == "&&":
            self._pos += 1
            right = self._unary()
            left = left and right
        return left

    def _unary(self) -> bool:
        tok = self._peek()
        if tok == "!":
            self._pos += 1
            return not self._unary()
        if tok == "(":
            self._pos += 1
            val = self._or()
            if self._peek() != ")":
                raise ValueError(f"unsupported CEL rule: {self.rule}")
            self._pos += 1
            return val
        if tok is None:
            raise ValueError(f"unsupported CEL rule: {self.rule}")
        self._pos += 1
        if tok.startswith("has("):
            field = tok[len("has(self.") : -1]
            return isinstance(self._value, Mapping) and field in self._value
        if tok.startswith("self") and "oldSelf" in tok:
            return bool(self._value == self._old)
        if tok.startswith("self"):
            inner = tok[tok.index("[") + 1 : -1]
            options = [s.strip().strip("'\"") for s in inner.split(",") if s.strip()]
            return self._value in options
        raise ValueError(f"unsupported CEL rule: {self.rule}")


@functools.cache
def _compile_cel(rule: str) -> _Cel | None:
    try:
        return _Cel(rule)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------


def _fmt_path(path: list[str | int]) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + p
    return out


_JSON_TYPES = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "dict": "object",
    "list": "array",
    "NoneType": "null",
}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value).__name__, type(value).__name__)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    if len(text) > 60:
        return f'"{_json_type(value)}"'
    return text


class CrdSchema:
    """Prune / default / validate objects of one CRD version."""

    def __init__(self, crd: Mapping[str, Any], version: str = "v1") -> None:
        spec = crd["spec"]
        self.group: str = spec["group"]
        self.kind: str = spec["names"]["kind"]
        self.plural: str = spec["names"]["plural"]
        self.version = version
        ver = next(v for v in spec["versions"] if v["name"] == version)
        self.schema: dict[str, Any] = ver["schema"]["openAPIV3Schema"]
        self.subresources: dict[str, Any] = ver.get("subresources") or {}
        self._validator = jsonschema.Draft4Validator(
            _to_jsonschema(self.schema), format_checker=_FORMAT_CHECKER
        )
        self._has_rules = "x-kubernetes-validations" in json.dumps(self.schema)

    # -- pruning / defaulting ---------------------------------------------------------

    def prune(self, obj: dict[str, Any]) -> None:
        """Drops unknown fields and nulls of non-nullable fields, in place."""
        props = self.schema.get("properties", {})
        for key in list(obj):
            if key == "metadata":
                continue
            if key not in props or (obj[key] is None and not props[key].get("nullable")):
                del obj[key]
            else:
                obj[key] = self._prune(props[key], obj[key])

    def _prune(self, schema: Mapping[str, Any], value: Any) -> Any:
        if isinstance(value, dict):
            props = schema.get("properties")
            addl = schema.get("additionalProperties")
            preserve = schema.get("x-kubernetes-preserve-unknown-fields")
            embedded = schema.get("x-kubernetes-embedded-resource")
            for key in list(value):
                sub: Mapping[str, Any] | None = None
                if props is not None and key in props:
                    sub = props[key]
                elif isinstance(addl, dict):
                    sub = addl
                elif addl is True or preserve or (embedded and key in ("apiVersion", "kind", "metadata")):
                    continue
                if sub is None:
                    del value[key]
                    continue
                if value[key] is None and not sub.get("nullable"):
                    del value[key]
                    continue
                value[key] = self._prune(sub, value[key])
        elif isinstance(value, list):
            items = schema.get("items")
            if isinstance(items, dict):
                return [self._prune(items, v) for v in value if not (v is None and not items.get("nullable"))]
        return value

    def default(self, obj: dict[str, Any]) -> None:
        self._default(self.schema, obj)

    def _default(self, schema: Mapping[str, Any], value: Any) -> None:
        if isinstance(value, dict):
            props = schema.get("properties")
            if props:
                for key, sub in props.items():
                    if key not in value and "default" in sub:
                        value[key] = json.loads(json.dumps(sub["default"]))
                    if key in value:
                        self._default(sub, value[key])
            addl = schema.get("additionalProperties")
            if isinstance(addl, dict):
                for v in value.values():
                    self._default(addl, v)
        elif isinstance(value, list):
            items = schema.get("items")
            if isinstance(items, dict):
                for v in value:
                    self._default(items, v)

    # -- validation --------------------------------------------------------------------

    def validate(self, obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[Cause]:
        causes: list[Cause] = []
        body = {k: v for k, v in obj.items() if k != "metadata"}
        body["metadata"] = {}
        for err in sorted(self._validator.iter_errors(body), key=lambda e: list(e.path)):
            causes.extend(self._cause(err))
        # As the real API server: CEL rules run only on an object that passed the schema.
        skipped_rules = bool(causes) and self._has_rules
        old_body = None
        if old is not None:
            old_body = {k: v for k, v in old.items() if k != "metadata"}
        for path, sub, val, oldval, has_old in self._walk(self.schema, body, old_body, []):
            causes.extend(self._extensions(path, sub, val, oldval, has_old, rules=not skipped_rules))
        if skipped_rules:
            causes.append(Cause("FieldValueInvalid", "<nil>", SKIPPED_RULES))
        # de-duplicate while preserving order
        seen: set[tuple[str, str]] = set()
        unique: list[Cause] = []
        for c in causes:
            if (c.field, c.message) not in seen:
                seen.add((c.field, c.message))
                unique.append(c)
        return unique

    def _cause(self, err: jsonschema.ValidationError) -> Iterator[Cause]:
        path = _fmt_path(list(err.absolute_path))
        v = err.validator
        inst = err.instance
        if v == "required":
            missing = re.findall(r"'([^']+)' is a required property", err.message)
            for name in missing or [""]:
                full = f"{path}.{name}" if path and name else (name or path)
                yield Cause("FieldValueRequired", full, "Required value")
            return
        if v == "enum":
            opts = ", ".join(json.dumps(o) for o in err.validator_value)
            yield Cause(
                "FieldValueNotSupported",
                path,
                f"Unsupported value: {_short(inst)}: supported values: {opts}",
            )
            return
        if v == "type":
            want = err.validator_value
            want_s = " or ".join(want) if isinstance(want, list) else want
            yield Cause(
                "FieldValueTypeInvalid",
                path,
                f"Invalid value: {_short(inst)}: {path} in body must be of type {want_s}: "
                f'"{_json_type(inst)}"',
            )
            return
        if v == "anyOf" and err.schema.get("x-kubernetes-int-or-string"):
            yield Cause(
                "FieldValueTypeInvalid",
                path,
                f"Invalid value: {_short(inst)}: {path} in body must be of type integer or string",
            )
            return
        if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            op = "greater than or equal to" if v == "minimum" else "less than or equal to"
            yield Cause(
                "FieldValueInvalid",
                path,
                f"Invalid value: {_short(inst)}: {path} in body should be {op} {err.validator_value}",
            )
            return
        if v == "pattern":
            yield Cause(
                "FieldValueInvalid",
                path,
                f"Invalid value: {_short(inst)}: {path} in body should match '{err.validator_value}'",
            )
            return
        if v == "format":
            yield Cause(
                "FieldValueInvalid",
                path,
                f"Invalid value: {_short(inst)}: {path} in body must be of type "
                f"{err.validator_value}: {_short(inst)}",
            )
            return
        yield Cause("FieldValueInvalid", path, f"Invalid value: {_short(inst)}: {err.message}")

    def _walk(
        self,
        schema: Mapping[str, Any],
        value: Any,
        old: Any,
        path: list[str | int],
        has_old: bool = True,
    ) -> Iterator[tuple[list[str | int], Mapping[str, Any], Any, Any, bool]]:
        has_old = has_old and old is not None
        yield path, schema, value, old, has_old
        if isinstance(value, dict):
            props = schema.get("properties") or {}
            addl = schema.get("additionalProperties")
            for key, sub in value.items():
                sch = props.get(key) or (addl if isinstance(addl, dict) else None)
                if sch is None:
                    continue
                old_sub = old.get(key) if isinstance(old, dict) else None
                yield from self._walk(sch, sub, old_sub, [*path, key], has_old and old_sub is not None)
        elif isinstance(value, list):
            items = schema.get("items")
            if not isinstance(items, dict):
                return
            keys = schema.get("x-kubernetes-list-map-keys")
            for i, item in enumerate(value):
                old_item = None
                if (
                    keys
                    and schema.get("x-kubernetes-list-type") == "map"
                    and isinstance(old, list)
                    and isinstance(item, dict)
                ):
                    ident = tuple(item.get(k) for k in keys)
                    old_item = next(
                        (o for o in old if isinstance(o, dict) and tuple(o.get(k) for k in keys) == ident),
                        None,
                    )
                yield from self._walk(items, item, old_item, [*path, i], has_old and old_item is not None)

    def _extensions(
        self,
        path: list[str | int],
        schema: Mapping[str, Any],
        value: Any,
        old: Any,
        has_old: bool,
        rules: bool = True,
    ) -> Iterator[Cause]:
        field = _fmt_path(path)
        list_type = schema.get("x-kubernetes-list-type")
        if isinstance(value, list) and list_type in ("set", "map"):
            seen: list[Any] = []
            keys = schema.get("x-kubernetes-list-map-keys") or []
            for i, item in enumerate(value):
                ident = (
                    tuple(item.get(k) for k in keys)
                    if list_type == "map" and isinstance(item, dict)
                    else item
                )
                if ident in seen:
                    shown = {k: item.get(k) for k in keys} if list_type == "map" else item
                    yield Cause(
                        "FieldValueDuplicate",
                        f"{field}[{i}]",
                        f"Duplicate value: {json.dumps(shown, sort_keys=True)}",
                    )
                else:
                    seen.append(ident)
        for rule in (schema.get("x-kubernetes-validations") or []) if rules else []:
            cel = _compile_cel(rule.get("rule", ""))
            if cel is None:
                continue
            if cel.uses_old and not has_old:
                continue
            try:
                ok = cel.evaluate(value, old)
            except ValueError:
                continue
            if not ok:
                msg = rule.get("message") or f"failed rule: {rule.get('rule')}"
                yield Cause("FieldValueInvalid", field, f"Invalid value: {_short(value)}: {msg}")


_SCHEMAS: dict[tuple[str, str], CrdSchema] = {}


def crd_schema(crd_path: Path, version: str = "v1") -> CrdSchema:
    key = (str(crd_path), version)
    if key not in _SCHEMAS:
        _SCHEMAS[key] = CrdSchema(load_crd(str(crd_path)), version)
    return _SCHEMAS[key]


ValidateFn = Callable[[Mapping[str, Any], Mapping[str, Any] | None], list[Cause]]
