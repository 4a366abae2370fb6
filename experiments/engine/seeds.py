"""The seed of one (cell, trial), from its coordinates only.

The seed never depends on scheduling, so the table is identical for every ``n_jobs`` and backend.
"""

from __future__ import annotations

import hashlib

import numpy as np

from sparse_teacher._validation import check_int


def derive_seed(master_seed: int, experiment: str, key: str, trial: int) -> int:
    """The seed of one (cell, trial): ``SeedSequence([master, trial, sha256(name, key)])``.

    Returns a non-negative int below 2**63 (it fits the int64 ``seed`` column).
    """
    master_seed = check_int("seed", master_seed, minimum=0)
    trial = check_int("trial", trial, minimum=0)
    digest = hashlib.sha256(f"{experiment}\x00{key}".encode()).digest()
    words = [int(w) for w in np.frombuffer(digest, dtype="<u4")]
    state = np.random.SeedSequence([master_seed, trial, *words]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


# ---------------------------------------------------------------------------------------------
# Grids, overrides, selections
# ---------------------------------------------------------------------------------------------
