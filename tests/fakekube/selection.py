"""Label and field selectors with the Kubernetes syntax and semantics."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
LABEL_KEY_RE = re.compile(rf"^(?:{_PREFIX}/)?{_NAME}$")
LABEL_VALUE_RE = re.compile(r"^(?:(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def label_key_errors(key: str) -> str | None:
    if not LABEL_KEY_RE.match(key):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
            "'123-abc', regex used for validation is "
            "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    prefix, _, _name = key.rpartition("/")
    if len(prefix) > 253:
        return "prefix part must be no more than 253 characters"
    return None


def label_value_errors(value: str) -> str | None:
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not LABEL_VALUE_RE.match(value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
            "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
            "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )
    return None


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        if self.op == "exists":
            return has
        if self.op == "!exists":
            return not has
        if self.op in ("=", "in"):
            return has and labels[self.key] in self.values
        # "!=" and "notin" also match objects without the label.
        return not has or labels[self.key] not in self.values


class LabelSelector:
    """A parsed ``labelSelector`` query (comma means AND)."""

    def __init__(self, requirements: list[Requirement]) -> None:
        self.requirements = requirements

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if not text or not text.strip():
            return cls([])
        reqs: list[Requirement] = []
        for term in _split_terms(text):
            reqs.append(_parse_requirement(term.strip()))
        return cls(reqs)

    @classmethod
    def from_match_labels(cls, labels: Mapping[str, str]) -> LabelSelector:
        return cls([Requirement(k, "=", (v,)) for k, v in labels.items()])

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        lab = labels or {}
        return all(r.matches(lab) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


def _split_terms(text: str) -> list[str]:
    terms: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise bad_request(f"unable to parse requirement: unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise bad_request(f"unable to parse requirement: unbalanced '(' in {text!r}")
    terms.append("".join(cur))
    return terms


_SET_RE = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")
_EQ_RE = re.compile(r"^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$")


def _check_key(key: str, term: str) -> None:
    err = label_key_errors(key)
    if err:
        raise bad_request(f"unable to parse requirement: invalid label key {key!r}: {err}")


def _check_value(value: str) -> None:
    err = label_value_errors(value)
    if err:
        raise bad_request(f"unable to parse requirement: invalid label value: {value!r}: {err}")


def _parse_requirement(term: str) -> Requirement:
    if not term:
        raise bad_request("unable to parse requirement: found '', expected: identifier")
    if term.startswith("!"):
        key = term[1:].strip()
        _check_key(key, term)
        return Requirement(key, "!exists")
    m = _SET_RE.match(term)
    if m:
        key, op, inner = m.group(1), m.group(2), m.group(3)
        _check_key(key, term)
        values = tuple(v.strip() for v in inner.split(",")) if inner.strip() else ()
        if not values:
            raise bad_request(f"unable to parse requirement: for '{op}' operator, values set can't be empty")
        for v in values:
            _check_value(v)
        return Requirement(key, op, values)
    m = _EQ_RE.match(term)
    if m:
        key, op, value = m.group(1), m.group(2), m.group(3)
        _check_key(key, term)
        _check_value(value)
        return Requirement(key, "!=" if op == "!=" else "=", (value,))
    if re.match(r"^\S+$", term):
        _check_key(term, term)
        return Requirement(term, "exists")
    raise bad_request(f"unable to parse requirement: {term!r}")


# --------------------------------------------------------------------------------------
# Field selectors


def _dig(obj: Mapping[str, Any], dotted: str) -> str:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


FieldGetter = Callable[[Mapping[str, Any]], str]


def _getter(path: str) -> FieldGetter:
    return lambda obj: _dig(obj, path)


_COMMON_FIELDS: dict[str, FieldGetter] = {
    "metadata.name": _getter("metadata.name"),
    "metadata.namespace": _getter("metadata.namespace"),
}

EXTRA_FIELDS: dict[str, dict[str, FieldGetter]] = {
    "pods": {
        f: _getter(f)
        for f in (
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        )
    },
    "events": {
        **{
            f: _getter(f)
            for f in (
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "type",
            )
        },
        "source": _getter("source.component"),
    },
    "namespaces": {"status.phase": _getter("status.phase")},
    "secrets": {"type": _getter("type")},
}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    negate: bool
    value: str
    getter: FieldGetter

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return (self.getter(obj) == self.value) != self.negate


class FieldSelector:
    def __init__(self, reqs: list[FieldRequirement]) -> None:
        self.reqs = reqs

    @classmethod
    def parse(cls, text: str | None, plural: str, custom: bool) -> FieldSelector:
        if not text or not text.strip():
            return cls([])
        fields = dict(_COMMON_FIELDS)
        if not custom:
            fields.update(EXTRA_FIELDS.get(plural, {}))
        reqs: list[FieldRequirement] = []
        for term in text.split(","):
            term = term.strip()
            m = re.match(r"^([^=!]+?)\s*(==|=|!=)\s*(.*)$", term)
            if not m:
                raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
            field, op, value = m.group(1), m.group(2), m.group(3)
            if field not in fields:
                if custom:
                    raise bad_request(
                        f'"{field}" is not a known field selector: only "metadata.name", "metadata.namespace"'
                    )
                raise bad_request(f"field label not supported: {field}")
            reqs.append(FieldRequirement(field, op == "!=", value, fields[field]))
        return cls(reqs)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(r.matches(obj) for r in self.reqs)

    def __bool__(self) -> bool:
        return bool(self.reqs)
