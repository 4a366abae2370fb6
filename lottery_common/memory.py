"""The memory budget: arrays sized by a parameter are refused above it, before allocation.

Arrays whose size comes from a parameter rather than from data the caller already holds (AGD
histories of ``max_iter`` entries, the K^3 design of the tensor initialisation, the random
weights of the strong-lottery-ticket construction) are checked with ``check_memory``, which
raises a one-line ``ValueError`` naming the call, the size and what to use instead.
``MEMORY_BUDGET`` is read at call time, so it can be changed for a session.
"""

from __future__ import annotations

MEMORY_BUDGET = 2 * 1024**3  # bytes


def format_bytes(count: float) -> str:
    """``count`` bytes as MB or GB (decimal, 3 significant digits)."""
    return f"{count / 1e9:.3g} GB" if count >= 1e9 else f"{count / 1e6:.3g} MB"


def check_memory(what: str, n_bytes: float, instead: str, budget: float | None = None) -> None:
    """Refuse (one-line ValueError) an allocation of ``n_bytes`` above ``budget`` (default
    ``MEMORY_BUDGET``): ``what`` names the call and the array, ``instead`` what to use instead."""
    budget = MEMORY_BUDGET if budget is None else budget
    if n_bytes > budget:
        raise ValueError(f"{what} needs {format_bytes(n_bytes)}, above the "
                         f"{format_bytes(budget)} allowed (lottery_common.memory.MEMORY_BUDGET); "
                         f"{instead}")
