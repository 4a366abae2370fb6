"""Every subset-sum solver against brute-force enumeration (spec Sec. 3, checked in Sec. 10)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from subset_sum import (
    brute_force,
    brute_force_perturbed,
    distance_to_union,
    meet_in_the_middle,
    meet_in_the_middle_batch,
    milp_subset_sum,
    perturbed_subset_sum,
    perturbed_subset_sum_batch,
    reachable_sets,
    rounded_dp,
    sup_distance,
    sup_error,
    sup_error_path,
)
from subset_sum.brute_force import all_subset_sums
from subset_sum.meet_in_middle import sorted_subset_sums

EPS_VALUES = [0.0, 1e-3, 1e-2, 0.05, 0.3]
TOL = 1e-12


@st.composite
def instances(draw, max_n: int = 14):
    """(x, z) with x ~ Unif[-1, 1]^n from a drawn seed, z in [-1.5, 1.5]."""
    n = draw(st.integers(1, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    z = draw(st.floats(-1.5, 1.5, allow_nan=False))
    return np.random.default_rng(seed).uniform(-1.0, 1.0, n), z


def perturbed_optimum(x: np.ndarray, z: float, eps: float) -> float:
    """Closed form over all subsets: min_S max(0, |sum_S x - z| - |S| eps) (plain NumPy)."""
    n = x.size
    bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    sums = bits @ x
    return float(np.min(np.maximum(0.0, np.abs(sums - z) - bits.sum(axis=1) * eps)))


def test_all_subset_sums_matches_bit_enumeration():
    x = np.array([0.5, -0.25, 0.125])
    sums = all_subset_sums(x)
    expected = [sum(x[k] for k in range(3) if (i >> k) & 1) for i in range(8)]
    np.testing.assert_allclose(sums, expected, atol=0)


@settings(max_examples=50, deadline=None)
@given(instances(max_n=12))
def test_sorted_subset_sums_is_a_sorted_enumeration(instance):
    x, _ = instance
    sums, codes = sorted_subset_sums(x)
    reference = all_subset_sums(x)
    assert np.all(np.diff(sums) >= 0)
    np.testing.assert_array_equal(np.sort(codes), np.arange(2**x.size))
    np.testing.assert_allclose(sums, reference[codes], atol=1e-14)


@settings(max_examples=100, deadline=None)
@given(instances())
def test_plain_solvers_agree_with_brute_force(instance):
    x, z = instance
    reference = brute_force(x, z)
    assert reference.error == pytest.approx(perturbed_optimum(x, z, 0.0), abs=TOL)
    for solution in (meet_in_the_middle(x, z), perturbed_subset_sum(x, z, 0.0)):
        assert solution.error == pytest.approx(reference.error, abs=TOL)
        # the mask achieves the reported optimum
        assert abs(x[solution.mask].sum() - z) == pytest.approx(solution.error, abs=TOL)
        assert np.all(solution.perturbation == 0)


@settings(max_examples=100, deadline=None)
@given(instances(), st.sampled_from(EPS_VALUES))
def test_perturbed_dp_agrees_with_brute_force(instance, eps):
    x, z = instance
    optimum = perturbed_optimum(x, z, eps)
    assert brute_force_perturbed(x, z, eps).error == pytest.approx(optimum, abs=TOL)
    solution = perturbed_subset_sum(x, z, eps)
    assert solution.lower_bound == pytest.approx(optimum, abs=TOL)
    # the recovered mask and perturbation achieve it, and respect |y| <= eps off the mask = 0
    achieved = abs(np.sum((x + solution.perturbation)[solution.mask]) - z)
    assert achieved == pytest.approx(optimum, abs=TOL)
    assert np.all(np.abs(solution.perturbation) <= eps + 1e-15)
    assert np.all(solution.perturbation[~solution.mask] == 0)


@settings(max_examples=50, deadline=None)
@given(instances(max_n=12), st.sampled_from([1e-4, 1e-3, 1e-2]), st.sampled_from([0.0, 0.01]))
def test_tolerance_answers_fattened_distance(instance, tol, eps):
    """With tau > 0 the DP answers max(0, eta* - tau) and the mask errs by <= max(eta*, tau)."""
    x, z = instance
    optimum = perturbed_optimum(x, z, eps)
    solution = perturbed_subset_sum(x, z, eps, tol=tol)
    assert solution.lower_bound == pytest.approx(max(0.0, optimum - tol), abs=TOL)
    assert solution.error <= max(optimum, tol) + TOL


@settings(max_examples=30, deadline=None)
@given(instances(max_n=10), st.sampled_from(EPS_VALUES))
@example(instance=(np.array([0.22672168916232494, 0.13675517114922187, 0.9355474733398137,
                             -0.5313285060687034, -0.19262792488986524, 0.19259363082132963]),
                   0.21902751720355118), eps=1e-3)  # HiGHS "Solve error" at zero gap, 1e-10 tol
def test_milp_reference_agrees(instance, eps):
    x, z = instance
    optimum = perturbed_optimum(x, z, eps)
    solution = milp_subset_sum(x, z, eps)
    # HiGHS decides integrality to ~1e-6; the rounded mask's exact error is compared
    assert solution.error == pytest.approx(optimum, abs=1e-6)
    assert solution.lower_bound <= solution.error


@settings(max_examples=50, deadline=None)
@given(instances(max_n=14), st.floats(1e-5, 1e-2))
def test_rounded_dp_certificate_brackets_optimum(instance, grid):
    x, z = instance
    optimum = brute_force(x, z).error
    solution = rounded_dp(x, z, grid)
    assert solution.lower_bound - TOL <= optimum <= solution.error + TOL
    assert solution.error - solution.lower_bound <= x.size * grid + TOL
    assert abs(x[solution.mask].sum() - z) == pytest.approx(solution.error, abs=TOL)


def test_meet_in_the_middle_beyond_brute_force_range():
    """n = 30: MITM's answer equals the brute force over the two halves' sorted sums."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, 30)
    z = 0.123
    solution = meet_in_the_middle(x, z)
    a = all_subset_sums(x[:15])
    b = np.sort(all_subset_sums(x[15:]))
    idx = np.clip(np.searchsorted(b, z - a), 1, b.size - 1)
    best = np.minimum(np.abs(a + b[idx] - z), np.abs(a + b[idx - 1] - z)).min()
    assert solution.error == pytest.approx(best, abs=TOL)
    assert solution.error < 1e-6  # 2^30 sums in [-15, 15]: spacing ~ 3e-8


def test_batch_solvers_match_single():
    rng = np.random.default_rng(6)
    xs = rng.uniform(-1, 1, (40, 9))
    zs = rng.uniform(-1, 1, 40)
    errors, masks = meet_in_the_middle_batch(xs, zs)
    for p in range(40):
        assert errors[p] == pytest.approx(brute_force(xs[p], zs[p]).error, abs=TOL)
        assert abs(xs[p][masks[p]].sum() - zs[p]) == pytest.approx(errors[p], abs=TOL)
    for eps in (0.0, 0.02):
        errors, masks, ys = perturbed_subset_sum_batch(xs, zs, eps)
        for p in range(40):
            assert errors[p] == pytest.approx(perturbed_optimum(xs[p], zs[p], eps), abs=TOL)
            assert np.all(np.abs(ys[p]) <= eps + 1e-15)


@settings(max_examples=30, deadline=None)
@given(instances(max_n=10), st.sampled_from(EPS_VALUES))
def test_sup_error_exact_against_dense_grid(instance, eps):
    """The gap-midpoint sup is >= every grid value and within half a grid step of their max."""
    x, _ = instance
    grid = np.linspace(-1.0, 1.0, 4001)
    n = x.size
    bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    sums, sizes = bits @ x, bits.sum(axis=1)
    dist = np.maximum(0.0, np.abs(sums[None, :] - grid[:, None]) - sizes * eps).min(axis=1)
    exact = sup_error(x, eps=eps)
    assert exact >= dist.max() - TOL
    assert exact <= dist.max() + 0.5 * (grid[1] - grid[0]) + TOL


def test_sup_error_path_matches_prefixes():
    x = np.random.default_rng(7).uniform(-1, 1, 10)
    path = sup_error_path(x, eps=0.01)
    expected = [sup_error(x[:k], eps=0.01) for k in range(1, 11)]
    np.testing.assert_allclose(path, expected, atol=TOL)
    assert np.all(np.diff(path) <= TOL)  # U_{k-1} ⊆ U_k: the sup error never grows


def test_reachable_sets_are_sorted_disjoint_and_nested():
    x = np.random.default_rng(8).uniform(-1, 1, 10)
    sets = reachable_sets(x, eps=0.02, a=-1.0, b=1.0)
    assert sets.n == 10 and sets.counts()[0] == 1
    for k in range(sets.n + 1):
        lo, hi = sets.U(k)
        assert np.all(lo <= hi) and np.all(hi[:-1] < lo[1:])
    for k in range(1, sets.n + 1):  # every point of U_{k-1} (inside the window) is in U_k
        lo_prev, hi_prev = sets.U(k - 1)
        lo, hi = sets.U(k)
        for point in np.concatenate([lo_prev, hi_prev]):
            if -2.0 <= point <= 2.0:
                assert distance_to_union(lo, hi, point) == 0.0


def test_merge_keeps_negative_blocks():
    """Spec pitfall: block maxima start at -inf; all-negative intervals must survive merging."""
    x = np.array([-0.7, -0.4])
    lo, hi = reachable_sets(x, eps=0.0, a=-2.0, b=1.0).U(2)
    np.testing.assert_allclose(lo, [-1.1, -0.7, -0.4, 0.0])
    np.testing.assert_allclose(hi, lo)


def test_sup_distance_simple_union():
    lo, hi = np.array([-1.0, 0.2]), np.array([-0.4, 1.0])
    assert sup_distance(lo, hi, -1.0, 1.0) == pytest.approx(0.3)  # gap (-0.4, 0.2)
    assert sup_distance(lo, hi, -1.0, -0.2) == pytest.approx(0.2)  # clipped midpoint


@pytest.mark.parametrize("call", [
    lambda: brute_force([], 0.0),
    lambda: meet_in_the_middle(np.zeros(0), 0.0),
    lambda: perturbed_subset_sum([0.5], 0.0, -0.1),
    lambda: perturbed_subset_sum([0.5, np.nan], 0.0, 0.1),
    lambda: perturbed_subset_sum([0.5], np.inf, 0.1),
    lambda: perturbed_subset_sum([0.5], 0.0, 0.1, tol=-1.0),
    lambda: milp_subset_sum([0.5], 0.0, eps=-1e-3),
    lambda: rounded_dp([0.5], 0.0, grid=0.0),
    lambda: rounded_dp([0.5], 0.0, grid=1e-9, max_bins=10),
    lambda: sup_error([0.5], a=1.0, b=-1.0),
    lambda: sup_distance(np.array([0.0]), np.array([0.0]), 0.5, 0.0),
    lambda: brute_force(np.zeros(23), 0.0),
    lambda: meet_in_the_middle_batch(np.zeros((2, 3)), np.zeros(3)),
    lambda: perturbed_subset_sum(np.random.default_rng(0).uniform(-1, 1, 14), 0.33, 0.0,
                                 max_intervals=100),
    lambda: perturbed_subset_sum_batch(np.random.default_rng(0).uniform(-1, 1, (1, 14)), [0.33],
                                       0.0, max_intervals=100),
    lambda: reachable_sets(np.linspace(0.1, 0.9, 12), max_intervals=0),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()
