"""Exact mixed-integer references with ``scipy.optimize.milp`` (HiGHS); no licence-gated solver.

Plain (spec Sec. 3.1, item 4): binary delta, continuous t >= 0,
    minimise t  s.t.  -t <= sum_i delta_i x_i - z <= t.
Perturbed (spec Sec. 3.2): p_i = delta_i y_i linearised by -eps delta_i <= p_i <= eps delta_i,
    minimise t  s.t.  -t <= sum_i (delta_i x_i + p_i) - z <= t.
``mip_rel_gap = mip_abs_gap = 0`` and feasibility tolerances 1e-10 (HiGHS's defaults, an
absolute gap of 1e-6, stop far from the optimum once n > ~20; on the rare "Solve error" under
these settings it retries with 1e-9 tolerances, then with its defaults). HiGHS decides
integrality only up to its tolerance, so the returned mask is rounded and the error recomputed
from it (closed form for the perturbed case); ``lower_bound`` is HiGHS's dual bound.

Zero-gap MILP subset sum is exponential in the worst case (n = 60 runs for minutes), so every call
has a wall-clock limit (``time_limit``, default ``TIME_LIMIT`` = 60 s, shared by the retries);
when it is reached the best mask found so far is returned with ``proven_optimal = False`` and a
``status`` that says so (the empty subset if HiGHS found none). The constraint matrix is sparse
(5n + 2 nonzeros), so memory stays O(n).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from lottery_common import check_float

from .solution import (
    SubsetSumSolution,
    check_eps,
    check_instance,
    solution_from_mask,
    spread_perturbation,
)

TIME_LIMIT = 60.0  # seconds, the default wall-clock limit of milp_subset_sum
_OPTIMAL, _LIMIT_REACHED = 0, 1  # scipy.optimize.milp status codes

# HiGHS stops at an absolute gap of 1e-6 by default, which is coarser than the optimum of plain
# subset sum beyond n ~ 20; ask for a zero gap and the tightest feasibility tolerances it allows.
# On rare instances these settings end in "Solve error"; then the next, looser set is tried.
_HIGHS_SETTINGS = (
    {"mip_abs_gap": 0.0, "mip_feasibility_tolerance": 1e-10, "primal_feasibility_tolerance": 1e-10},
    {"mip_abs_gap": 0.0, "mip_feasibility_tolerance": 1e-9, "primal_feasibility_tolerance": 1e-9},
    {},  # HiGHS defaults
)


def _constraints(x: np.ndarray, z: float, eps: float) -> tuple[sp.csr_matrix, np.ndarray,
                                                                np.ndarray]:
    """Rows: sum - t <= z, sum + t >= z, p_i - eps delta_i <= 0, -p_i - eps delta_i <= 0."""
    n = x.size
    idx = np.arange(n)
    rows = np.concatenate([np.zeros(2 * n + 1), np.ones(2 * n + 1),
                           2 + idx, 2 + idx, 2 + n + idx, 2 + n + idx])
    cols = np.concatenate([np.arange(2 * n + 1), np.arange(2 * n + 1),
                           n + idx, idx, n + idx, idx])
    total = np.concatenate([x, np.ones(n)])
    values = np.concatenate([total, [-1.0], total, [1.0],
                             np.ones(n), np.full(n, -eps), -np.ones(n), np.full(n, -eps)])
    matrix = sp.csr_matrix((values, (rows.astype(np.int64), cols.astype(np.int64))),
                           shape=(2 * n + 2, 2 * n + 1))
    matrix.eliminate_zeros()  # eps = 0 (as scipy does for a dense matrix)
    lower = np.concatenate([[-np.inf, z], np.full(2 * n, -np.inf)])
    upper = np.concatenate([[z, np.inf], np.zeros(2 * n)])
    return matrix, lower, upper


def milp_subset_sum(x: np.ndarray, z: float, eps: float = 0.0,
                    time_limit: float | None = TIME_LIMIT) -> SubsetSumSolution:
    """Solve (perturbed when eps > 0) subset sum exactly with HiGHS, within ``time_limit`` seconds.

    ``lower_bound`` holds HiGHS's dual bound (equal to the optimum when it proves optimality).
    ``time_limit`` (default ``TIME_LIMIT`` = 60 s; ``None`` = no limit) bounds the whole call;
    when it is reached the best mask found is returned with ``proven_optimal = False`` and
    ``status = "not proven optimal (time limit 60 s reached)"`` instead of waiting for a proof.
    """
    x, z = check_instance(x, z)
    eps = check_eps(eps)
    if time_limit is not None:
        time_limit = check_float("time_limit", time_limit, low=0.0, low_open=True)
    n = x.size
    # variables: delta (n, binary), p (n, continuous), t
    c = np.zeros(2 * n + 1)
    c[-1] = 1.0
    a_matrix, lower, upper = _constraints(x, z, eps)
    integrality = np.concatenate([np.ones(n), np.zeros(n + 1)])
    bounds = Bounds(np.concatenate([np.zeros(n), np.full(n, -eps), [0.0]]),
                    np.concatenate([np.ones(n), np.full(n, eps), [np.inf]]))
    deadline = None if time_limit is None else time.monotonic() + time_limit
    for settings in _HIGHS_SETTINGS:
        options = {"mip_rel_gap": 0.0, "disp": False, **settings}
        if deadline is not None:
            options["time_limit"] = max(deadline - time.monotonic(), 1e-3)
        with warnings.catch_warnings():  # scipy warns that it passes HiGHS options verbatim
            warnings.filterwarnings("ignore", message="Unrecognized options",
                                    category=RuntimeWarning)
            result = milp(c, constraints=LinearConstraint(a_matrix, lower, upper),
                          integrality=integrality, bounds=bounds, options=options)
        if result.x is not None or result.status == _LIMIT_REACHED:
            break  # a solution, or no time left for a retry
        if deadline is not None and time.monotonic() >= deadline:
            break
    limited = deadline is not None and (result.status == _LIMIT_REACHED or (
        result.x is None and time.monotonic() >= deadline))
    if result.x is None and not limited:
        raise RuntimeError(f"HiGHS found no solution: {result.message}")
    mask = np.zeros(n, dtype=bool) if result.x is None else np.rint(result.x[:n]).astype(bool)
    y = spread_perturbation(x, z, mask, eps)
    solution = solution_from_mask(x, z, mask, y)
    dual = getattr(result, "mip_dual_bound", None)
    lower_bound = float(dual) if dual is not None and np.isfinite(dual) else 0.0
    proven = result.status == _OPTIMAL
    if proven:
        status = "optimal"
    elif limited:
        found = ("the empty subset is returned (HiGHS found no solution in time)"
                 if result.x is None else "best mask found so far")
        status = (f"not proven optimal (time limit {time_limit:g} s reached; {found}; optimum "
                  f">= lower_bound)")
    else:
        status = f"not proven optimal (HiGHS: {result.message})"
    return SubsetSumSolution(error=solution.error, mask=solution.mask,
                             perturbation=solution.perturbation, value=solution.value,
                             lower_bound=min(lower_bound, solution.error),
                             proven_optimal=proven, status=status)
