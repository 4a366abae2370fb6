"""The seed of one (cell, trial), from its coordinates only.

The seed never depends on scheduling, so the table is identical for every ``n_jobs`` and backend.
It is the project's one seed derivation, ``lottery_common.derive_seed`` (also used by the IMP
code), at the coordinates ``(trial, "EXPERIMENT\\x00CELL_KEY")``.
"""

from __future__ import annotations

from lottery_common import check_int
from lottery_common import derive_seed as _common_derive_seed


def derive_seed(master_seed: int, experiment: str, key: str, trial: int) -> int:
    """The seed of one (cell, trial): ``SeedSequence([master, trial, sha256(name, key)])``.

    That is ``lottery_common.derive_seed(master, trial, f"{experiment}\\x00{key}")``. Returns a
    non-negative int below 2**63 (it fits the int64 ``seed`` column).
    """
    master_seed = check_int("seed", master_seed, minimum=0)
    trial = check_int("trial", trial, minimum=0)
    return _common_derive_seed(master_seed, trial, f"{experiment}\x00{key}")
