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

__all__ = ["derive_seed", "stable_hash"]


def _canonical(value: Any) -> Any:
    """``value`` as plain JSON data (refusing what has no canonical form)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"stable_hash: non-finite number {value}")
        return value
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"stable_hash: mapping keys must be strings, got {key!r}")
            out[key] = _canonical(item)
        return out
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_canonical(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    raise ValueError(f"stable_hash: cannot encode {value!r} ({type(value).__name__}); use None, "
                     f"bool, int, float, str, bytes, lists and string-keyed mappings of those")


def stable_hash(*parts: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of ``list(parts)`` (see the module docstring)."""
    text = json.dumps(_canonical(list(parts)), sort_keys=True, separators=(",", ":"),
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
