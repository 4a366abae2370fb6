"""Argument checks at the public boundary of every package.

Every public function checks its arguments with these helpers, so a bad value raises a
``ValueError`` that names the argument, the value received and what is allowed, instead of a
traceback from deep inside a kernel.
"""

from __future__ import annotations

import numbers

import numpy as np


def check_int(name: str, value: object, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """Return ``value`` as an int after checking it is an integer in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_float(name: str, value: object, *, low: float | None = None,
                high: float | None = None, low_open: bool = False,
                high_open: bool = False) -> float:
    """Return ``value`` as a finite float inside the stated interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    lo_bracket = "(" if low_open else "["
    hi_bracket = ")" if high_open else "]"
    allowed = f"{lo_bracket}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi_bracket}"
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must lie in {allowed}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must lie in {allowed}, got {value}")
    return value


def check_array(name: str, value: object, *, ndim: int | None = None,
                shape: tuple[int | None, ...] | None = None,
                dtype: type = np.float64, finite: bool = True) -> np.ndarray:
    """Return ``value`` as a C-contiguous array of ``dtype`` with the required shape.

    ``shape`` entries of ``None`` match any length. Non-finite entries are rejected when
    ``finite`` is true.
    """
    try:
        arr = np.ascontiguousarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be convertible to a {np.dtype(dtype).name} array: {exc}") from None
    if shape is not None:
        ndim = len(shape)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array, got shape {arr.shape}")
    if shape is not None:
        for axis, (got, want) in enumerate(zip(arr.shape, shape)):
            if want is not None and got != want:
                expected = tuple("any" if s is None else s for s in shape)
                raise ValueError(
                    f"{name} has shape {arr.shape}, expected {expected} (mismatch on axis {axis})"
                )
    if finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} must be finite, but {bad} of its {arr.size} entries are NaN or inf")
    return arr


def as_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    """Turn an int seed (or an existing Generator) into a ``numpy.random.Generator``.

    ``None`` is refused on purpose: every random draw in this package comes from an explicit seed.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        raise ValueError("seed must be an int or a numpy Generator; None is not allowed (results "
                         "must be reproducible)")
    return np.random.default_rng(check_int("seed", seed, minimum=0))
