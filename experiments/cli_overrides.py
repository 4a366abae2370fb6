"""``--set key=v1,v2`` of the command line: split the items and coerce each value to the type
the experiment's grid declares for that parameter (the engine receives typed overrides only).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .engine import grid_keys
from .registry import Experiment


def _declared_kind(values: Sequence[Any]) -> str:
    """'bool', 'int', 'float', 'str' or 'mixed' for the values a grid declares."""
    kinds = set()
    for v in values:
        if isinstance(v, (bool, np.bool_)):
            kinds.add("bool")
        elif isinstance(v, numbers.Integral):
            kinds.add("int")
        elif isinstance(v, numbers.Real):
            kinds.add("float")
        elif isinstance(v, str):
            kinds.add("str")
        else:
            kinds.add("mixed")
    if kinds == {"int", "float"}:
        return "float"
    return kinds.pop() if len(kinds) == 1 else "mixed"


def parse_value(text: str) -> bool | int | float | str:
    """Parse one ``--set`` value: bool (true/false), int, finite float, else the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    if not math.isfinite(value):
        raise ValueError(f"--set values must be finite, got {text!r}")
    return value


def _coerce(name: str, text: str, kind: str) -> Any:
    if kind == "str":
        return text
    value = parse_value(text)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"--set {name} takes booleans (true or false), got {text!r}")
        return value
    if kind in ("int", "float") and (isinstance(value, (bool, str))):
        raise ValueError(f"--set {name} takes {'integers' if kind == 'int' else 'numbers'}, "
                         f"got {text!r}")
    if kind == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"--set {name} takes integers, got {text!r}")
            value = int(value)
        return value
    if kind == "float":
        return float(value)
    return value


def split_set_items(items: Sequence[str]) -> dict[str, list[str]]:
    """``["r=20,50", "beta=0.5"] -> {"r": ["20", "50"], "beta": ["0.5"]}`` (later items win)."""
    raw: dict[str, list[str]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        parts = [v.strip() for v in values.split(",")]
        if not sep or not name or not values.strip() or any(p == "" for p in parts):
            raise ValueError(f"bad --set item {item!r}; expected key=value or key=v1,v2,...")
        raw[name] = parts
    return raw


def coerce_overrides(experiment: Experiment, size: str, raw: Mapping[str, Sequence[str]],
                     *, strict: bool = True) -> dict[str, tuple[Any, ...]]:
    """Turn raw ``--set`` strings into values of the declared type of each parameter.

    A parameter whose grid values are all ints takes integers (``50`` or ``50.0``), one whose
    values are floats takes numbers (stored as floats), booleans take true/false, strings take
    the text as is; mixed declarations take whatever ``parse_value`` reads. Unknown keys raise
    a ValueError listing the allowed keys (or are ignored when ``strict`` is false).
    """
    grids = experiment.size(size).grids
    allowed = grid_keys(experiment.size(size))
    overrides: dict[str, tuple[Any, ...]] = {}
    for name, texts in raw.items():
        if name not in allowed:
            if strict:
                raise ValueError(f"unknown --set key {name!r} for experiment "
                                 f"{experiment.name!r}; allowed keys: {', '.join(allowed)}")
            continue
        declared = [v for grid in grids if name in grid for v in grid[name]]
        kind = _declared_kind(declared)
        overrides[name] = tuple(_coerce(name, t, kind) for t in texts)
    return overrides
