"""The project's one seed derivation and one content hash.

``stable_hash(*parts)`` is the SHA-256 hex digest of the canonical JSON of ``list(parts)``
(sorted keys, no spaces, UTF-8, NaN refused; tuples are lists, NumPy scalars plain numbers,
``bytes`` written as ``{"bytes": HEX}``), so it is the same on every machine, Python and run.

``derive_seed(master_seed, *coordinates)`` feeds ``[master_seed, *words]`` to
``numpy.random.SeedSequence`` and returns its first 64-bit word shifted right by one (a
non-negative int below 2**63, which fits an int64 column). A non-negative int coordinate is one
entropy entry; a ``str`` coordinate is the eight little-endian 32-bit words of the SHA-256 of its
UTF-8 bytes. Coordinates are positional: ``(1, 2)`` and ``(2, 1)`` give different seeds.

SeedSequence pads entropy shorter than four words with zeros, so ``derive_seed(s, 1)`` equals
``derive_seed(s, 1, 0)``: name independent streams with a string coordinate
(``derive_seed(seed, "prune", level)``), which always makes the entropy long enough.

The experiment engine's seed of one (cell, trial) is
``derive_seed(master, trial, f"{experiment}\\x00{cell_key}")``.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["derive_seed", "plain_data", "stable_hash"]


def plain_data(value: Any, name: str = "value", *, nested: bool = True) -> Any:
    """``value`` as plain JSON data: None, bool, int, finite float, str and lists of those; with
    ``nested`` also ``bytes`` (as ``{"bytes": HEX}``) and string-keyed mappings. NumPy scalars
    and arrays become Python ones, tuples lists. Anything else raises a one-line ValueError that
    names ``name``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite (non-finite number {value})")
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        items = value.tolist() if isinstance(value, np.ndarray) else value
        return [plain_data(v, name, nested=nested) for v in items]
    if nested and isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if nested and isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{name}: mapping keys must be strings, got {key!r}")
            out[key] = plain_data(item, name, nested=nested)
        return out
    allowed = ("None, bool, int, float, str, bytes, lists and string-keyed mappings of those"
               if nested else "None, bool, int, float, str or a list of those")
    raise ValueError(f"{name} must be {allowed}; cannot encode {value!r} ({type(value).__name__})")


def stable_hash(*parts: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of ``list(parts)`` (see the module docstring)."""
    text = json.dumps(plain_data(list(parts), "stable_hash"), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_non_negative(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _words(position: int, coordinate: Any) -> list[int]:
    if isinstance(coordinate, str):
        digest = hashlib.sha256(coordinate.encode("utf-8")).digest()
        return [int(w) for w in np.frombuffer(digest, dtype="<u4")]
    return [_check_non_negative(f"seed coordinate {position}", coordinate)]


def derive_seed(master_seed: int, *coordinates: int | str) -> int:
    """The seed at ``coordinates`` under ``master_seed``: a non-negative int below 2**63.

    Ints (>= 0) enter SeedSequence as they are, strings as the words of their SHA-256.
    """
    entropy = [_check_non_negative("seed", master_seed)]
    for position, coordinate in enumerate(coordinates):
        entropy.extend(_words(position, coordinate))
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))
