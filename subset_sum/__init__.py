"""Subset sum and the strong lottery ticket (Lueker 1998; Pensia et al. 2020; Xiong et al. 2023).

Solvers return a :class:`SubsetSumSolution` (error, mask, perturbation, value, lower bound):

* :func:`brute_force`, :func:`brute_force_perturbed`: enumeration, n <= 22;
* :func:`meet_in_the_middle`: exact plain subset sum, n <= 44;
* :func:`rounded_dp`: large-n plain subset sum with an error certificate;
* :func:`perturbed_subset_sum`: exact epsilon-perturbed subset sum (interval-union DP);
* :func:`milp_subset_sum`: HiGHS mixed-integer reference for both problems (60 s time limit by
  default; ``proven_optimal`` / ``status`` say when the limit stopped it);
* :func:`sup_error`: exact sup over z in [a, b] of the approximation error.

Every entry point of the interval DP (``perturbed_subset_sum[_batch]``, ``reachable_sets``,
``reachable_union``, ``sup_error[_path]``, ``coverage_steps``) takes ``max_intervals`` and
refuses, with a one-line ValueError, a run that would hold more intervals than that (with
eps = tol = 0 they grow like 2^n) before allocating them.
"""

from .brute_force import brute_force, brute_force_perturbed
from .meet_in_middle import meet_in_the_middle, meet_in_the_middle_batch
from .milp import milp_subset_sum
from .perturbed import (
    coverage_steps,
    distance_to_union,
    perturbed_subset_sum,
    perturbed_subset_sum_batch,
    reachable_sets,
    reachable_union,
)
from .rounded_dp import rounded_dp
from .solution import SubsetSumSolution
from .sup_error import sup_distance, sup_error, sup_error_path

__all__ = [
    "SubsetSumSolution",
    "brute_force",
    "brute_force_perturbed",
    "coverage_steps",
    "distance_to_union",
    "meet_in_the_middle",
    "meet_in_the_middle_batch",
    "milp_subset_sum",
    "perturbed_subset_sum",
    "perturbed_subset_sum_batch",
    "reachable_sets",
    "reachable_union",
    "rounded_dp",
    "sup_distance",
    "sup_error",
    "sup_error_path",
]
