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
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from .solution import (
    SubsetSumSolution,
    check_eps,
    check_instance,
    solution_from_mask,
    spread_perturbation,
)

# HiGHS stops at an absolute gap of 1e-6 by default, which is coarser than the optimum of plain
# subset sum beyond n ~ 20; ask for a zero gap and the tightest feasibility tolerances it allows.
# On rare instances these settings end in "Solve error"; then the next, looser set is tried.
_HIGHS_SETTINGS = (
    {"mip_abs_gap": 0.0, "mip_feasibility_tolerance": 1e-10, "primal_feasibility_tolerance": 1e-10},
    {"mip_abs_gap": 0.0, "mip_feasibility_tolerance": 1e-9, "primal_feasibility_tolerance": 1e-9},
    {},  # HiGHS defaults
)


def milp_subset_sum(x: np.ndarray, z: float, eps: float = 0.0,
                    time_limit: float | None = None) -> SubsetSumSolution:
    """Solve (perturbed when eps > 0) subset sum exactly with HiGHS; raises if no solution found.

    ``lower_bound`` holds HiGHS's dual bound (equal to the optimum when it proves optimality).
    """
    x, z = check_instance(x, z)
    eps = check_eps(eps)
    n = x.size
    # variables: delta (n, binary), p (n, continuous), t
    c = np.zeros(2 * n + 1)
    c[-1] = 1.0
    rows = []
    lower = []
    upper = []
    total = np.concatenate([x, np.ones(n), [0.0]])
    rows.append(total - np.eye(1, 2 * n + 1, 2 * n)[0])  # sum - t <= z
    lower.append(-np.inf)
    upper.append(z)
    rows.append(total + np.eye(1, 2 * n + 1, 2 * n)[0])  # sum + t >= z
    lower.append(z)
    upper.append(np.inf)
    link = np.zeros((2 * n, 2 * n + 1))
    idx = np.arange(n)
    link[idx, n + idx] = 1.0  # p_i - eps delta_i <= 0
    link[idx, idx] = -eps
    link[n + idx, n + idx] = -1.0  # -p_i - eps delta_i <= 0
    link[n + idx, idx] = -eps
    a_matrix = np.vstack([np.array(rows), link])
    lower = np.concatenate([lower, np.full(2 * n, -np.inf)])
    upper = np.concatenate([upper, np.zeros(2 * n)])
    integrality = np.concatenate([np.ones(n), np.zeros(n + 1)])
    bounds = Bounds(np.concatenate([np.zeros(n), np.full(n, -eps), [0.0]]),
                    np.concatenate([np.ones(n), np.full(n, eps), [np.inf]]))
    for settings in _HIGHS_SETTINGS:
        options = {"mip_rel_gap": 0.0, "disp": False, **settings}
        if time_limit is not None:
            options["time_limit"] = float(time_limit)
        with warnings.catch_warnings():  # scipy warns that it passes HiGHS options verbatim
            warnings.filterwarnings("ignore", message="Unrecognized options",
                                    category=RuntimeWarning)
            result = milp(c, constraints=LinearConstraint(a_matrix, lower, upper),
                          integrality=integrality, bounds=bounds, options=options)
        if result.x is not None:
            break
    else:
        raise RuntimeError(f"HiGHS found no solution: {result.message}")
    mask = np.rint(result.x[:n]).astype(bool)
    y = spread_perturbation(x, z, mask, eps)
    solution = solution_from_mask(x, z, mask, y)
    dual = getattr(result, "mip_dual_bound", None)
    lower_bound = float(dual) if dual is not None and np.isfinite(dual) else 0.0
    return SubsetSumSolution(error=solution.error, mask=solution.mask,
                             perturbation=solution.perturbation, value=solution.value,
                             lower_bound=min(lower_bound, solution.error))
