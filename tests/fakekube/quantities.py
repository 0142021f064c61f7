"""Kubernetes resource quantities (``500m``, ``4Gi``, ``1e3``): parsing, canonical formatting
and a pod's per-resource requests, for the RayCluster status's desired resources."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

_BIN = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DEC = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_QTY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(value: Any) -> tuple[Fraction, bool]:
    """Returns (amount, binary_format)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid quantity {value!r}")
    if isinstance(value, int | float):
        return Fraction(Decimal(str(value))), False
    text = str(value).strip()
    m = _QTY.match(text)
    if not m:
        raise ValueError(f"invalid quantity {value!r}")
    try:
        number = Fraction(Decimal(m.group(1)))
    except InvalidOperation:
        raise ValueError(f"invalid quantity {value!r}") from None
    suffix = m.group(2) or ""
    if suffix in _BIN:
        return number * _BIN[suffix], True
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number * Fraction(10) ** int(suffix[1:]), False
    return number * _DEC[suffix], False


def format_quantity(amount: Fraction, binary: bool) -> str:
    """Canonical Quantity string (BinarySI for binary inputs, else DecimalSI)."""
    if amount == 0:
        return "0"
    if binary and amount.denominator == 1:
        for bsuffix, bmult in sorted(_BIN.items(), key=lambda kv: -kv[1]):
            if amount % bmult == 0:
                return f"{amount // bmult}{bsuffix}"
        return str(amount.numerator)
    for suffix, mult in sorted(_DEC.items(), key=lambda kv: -kv[1]):
        scaled = amount / mult
        if scaled.denominator == 1:
            return f"{scaled.numerator}{suffix}"
    return f"{math.ceil(amount * 10**9)}n"


def pod_requests(spec: Mapping[str, Any]) -> dict[str, tuple[Fraction, bool]]:
    """Per-resource totals of a pod spec: requests, falling back to limits per resource
    (KubeRay's CalculatePodResource)."""
    totals: dict[str, tuple[Fraction, bool]] = {}
    for c in spec.get("containers") or []:
        res = (c or {}).get("resources") or {}
        merged = dict(res.get("limits") or {})
        merged.update(res.get("requests") or {})
        for name, qty in merged.items():
            try:
                amount, binary = parse_quantity(qty)
            except ValueError:
                continue
            prev = totals.get(name)
            totals[name] = (amount + prev[0], prev[1]) if prev else (amount, binary)
    return totals
