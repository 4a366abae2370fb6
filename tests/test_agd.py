"""AGD (Algorithm 1 of Zhang et al. 2021): recovery, GD comparison, multi-start, flags."""

import numpy as np
import pytest

from sparse_teacher.agd import (
    fit_rate,
    init_at_distance,
    linear_rate,
    relative_error,
    run_agd,
    run_agd_multistart,
)
from sparse_teacher.problem import StudentProblem
from sparse_teacher.teacher import draw_student_supports, draw_teacher, make_dataset


@pytest.fixture(scope="module")
def issue_case():
    """The issue's case: K=5, d=100, r=20 (student support = teacher support here), N=2000."""
    t = draw_teacher(d=100, K=5, r_star=20, seed=11)
    S = draw_student_supports(t, r=20, seed=12)
    ds = make_dataset(t, N=2000, seed=13)
    return StudentProblem.from_data(ds.X, ds.y, S), t.in_student_coordinates(S)


def test_init_at_distance_is_exact():
    W_star = np.random.default_rng(0).uniform(-0.5, 0.5, (5, 20))
    for lam in (0.0, 0.3, 2.0):
        W0 = init_at_distance(W_star, lam, seed=1)
        assert relative_error(W0, W_star) == pytest.approx(lam, abs=1e-14)


@pytest.mark.slow  # ~12 s on one core
def test_agd_recovers_noiseless_teacher_and_beats_gd(issue_case):
    prob, W_star = issue_case
    W0 = init_at_distance(W_star, 0.3, seed=1)
    agd = run_agd(prob, W0, eta=0.5, beta=0.2, W_star=W_star)
    gd = run_agd(prob, W0, eta=0.5, beta=0.0, W_star=W_star)
    for res in (agd, gd):
        assert res.converged and not res.diverged
        assert res.rel_error < 1e-4 and res.success and res.outcome == "success"
        assert res.rel_error_history[0] == pytest.approx(0.3)
        assert res.rel_error_history.shape == (res.n_iter + 1,)
        assert res.loss_history[-1] < 1e-12
    assert gd.n_iter > agd.n_iter
    # momentum makes the linear rate faster (smaller nu), Theorem 2
    assert fit_rate(agd.rel_error_history) < fit_rate(gd.rel_error_history)


def test_multistart_equals_loop_of_single_starts(issue_case):
    prob, W_star = issue_case
    starts = np.stack([init_at_distance(W_star, lam, seed=s)
                       for s, lam in enumerate([0.1, 0.5, 0.3, 1.5])])
    batch = run_agd_multistart(prob, starts, W_star=W_star, max_iter=3000)
    for m, res_b in enumerate(batch):
        res_s = run_agd(prob, starts[m], W_star=W_star, max_iter=3000)
        assert res_b.status == res_s.status
        assert abs(res_b.n_iter - res_s.n_iter) <= 1
        n = min(res_b.n_iter, res_s.n_iter)
        np.testing.assert_allclose(res_b.rel_error_history[:n + 1],
                                   res_s.rel_error_history[:n + 1], rtol=1e-8, atol=1e-13)
        np.testing.assert_allclose(res_b.W, res_s.W, rtol=0, atol=1e-9)


def test_multistart_with_different_stopping_times(issue_case):
    prob, W_star = issue_case
    starts = np.stack([init_at_distance(W_star, 0.05, 0), W_star.copy() * 1e6,
                       init_at_distance(W_star, 0.4, 1)])
    res = run_agd_multistart(prob, starts, W_star=W_star, max_iter=200, eta=50.0, beta=0.0)
    single = [run_agd(prob, s, W_star=W_star, max_iter=200, eta=50.0, beta=0.0) for s in starts]
    for b, s in zip(res, single):
        assert b.status == s.status and b.n_iter == s.n_iter


def test_same_seed_same_numbers(issue_case):
    prob, W_star = issue_case
    a = run_agd(prob, init_at_distance(W_star, 0.3, seed=4), W_star=W_star, max_iter=300)
    b = run_agd(prob, init_at_distance(W_star, 0.3, seed=4), W_star=W_star, max_iter=300)
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.loss_history, b.loss_history)


def test_divergence_is_detected_and_flagged(issue_case):
    prob, W_star = issue_case
    res = run_agd(prob, init_at_distance(W_star, 0.3, seed=1), eta=500.0, beta=0.0,
                  W_star=W_star, max_iter=1000)
    assert res.diverged and res.status == "diverged" and res.outcome == "diverged"
    assert res.n_iter < 1000
    assert not res.success


def test_max_iter_on_a_slow_run_is_slow_not_failed(issue_case):
    prob, W_star = issue_case
    res = run_agd(prob, init_at_distance(W_star, 0.3, seed=1), W_star=W_star, max_iter=1500)
    assert res.status == "max_iter" and res.n_iter == 1500
    assert not res.success
    assert res.outcome == "slow"
    assert 0.9 < res.rate < 1.0
    assert 0 < res.iterations_to_success < 3 * 1500
    # far from the threshold at the cap: not on track, so not "slow"
    early = run_agd(prob, init_at_distance(W_star, 0.3, seed=1), W_star=W_star, max_iter=100)
    assert early.outcome == "stalled" and early.iterations_to_success > 300


def test_wrong_support_stalls_instead_of_succeeding():
    """A student that misses teacher coordinates cannot reach W*: AGD stops on a spurious point."""
    t = draw_teacher(d=30, K=2, r_star=6, seed=3)
    S = t.supports.copy()
    others = [np.setdiff1d(np.arange(30), S[j]) for j in range(2)]
    S[:, 0] = [others[0][0], others[1][0]]
    ds = make_dataset(t, N=1500, seed=4)
    prob = StudentProblem.from_data(ds.X, ds.y, np.sort(S, axis=1))
    W_ref = np.zeros((2, 6))
    for j in range(2):
        keep = np.isin(np.sort(S[j]), t.supports[j])
        W_ref[j, keep] = t.weights[j][np.isin(t.supports[j], S[j])]
    res = run_agd(prob, W_ref, W_star=W_ref, eta=0.5, beta=0.2)
    assert res.converged and res.outcome == "stalled"
    assert res.rel_error > 1e-2


def test_partition_uses_disjoint_fresh_batches(issue_case):
    prob, W_star = issue_case
    W0 = init_at_distance(W_star, 0.2, seed=6)
    res = run_agd(prob, W0, W_star=W_star, partition=4, max_iter=8000)
    assert res.success
    # partition=1 is the full-batch algorithm
    a = run_agd(prob, W0, W_star=W_star, partition=1, max_iter=50)
    b = run_agd(prob, W0, W_star=W_star, max_iter=50)
    np.testing.assert_array_equal(a.W, b.W)
    # the T blocks differ, so the iterates differ from the full batch
    c = run_agd(prob, W0, W_star=W_star, partition=4, max_iter=50)
    assert not np.allclose(c.W, b.W)


def test_rate_helpers_recover_a_geometric_sequence():
    h = 0.5 * 0.97 ** np.arange(3000)
    assert linear_rate(h) == pytest.approx(0.97, rel=1e-10)
    assert fit_rate(h) == pytest.approx(0.97, rel=1e-10)
    assert linear_rate(np.array([1.0, np.nan])) is None
