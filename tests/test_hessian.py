"""The risk Hessian estimate (Theorem 1's object) against finite differences of the risk gradient."""

import numpy as np
import pytest

from sparse_teacher import kernels
from sparse_teacher.agd import init_at_distance
from sparse_teacher.hessian import extreme_eigenvalues, risk_hessian
from sparse_teacher.problem import StudentProblem
from sparse_teacher.teacher import draw_student_supports, draw_teacher, make_dataset


def _problem(N, seed=0):
    t = draw_teacher(d=12, K=2, r_star=4, seed=seed)
    S = draw_student_supports(t, r=5, seed=seed + 1)
    ds = make_dataset(t, N=N, seed=seed + 2)
    return StudentProblem.from_data(ds.X, ds.y, S), t.in_student_coordinates(S)


def test_equals_gauss_newton_at_noiseless_teacher():
    prob, W_star = _problem(2000)
    np.testing.assert_allclose(risk_hessian(prob, W_star), kernels.hessian(prob, W_star),
                               atol=1e-15)


def test_matches_finite_differences_of_the_gradient_at_large_n():
    """With many samples the empirical gradient is close to the risk gradient; its central
    difference over a step far wider than the spacing of the kinks averages the jumps into the
    kink term, so H v must match it (and the Gauss-Newton part alone must not)."""
    prob, W_star = _problem(400_000, seed=3)
    W = init_at_distance(W_star, 0.8, seed=4)
    rng = np.random.default_rng(5)
    V = rng.standard_normal(W.shape)
    V /= np.linalg.norm(V)
    s = 0.02
    fd = (kernels.gradient(prob, W + s * V) - kernels.gradient(prob, W - s * V)) / (2 * s)
    hv = (risk_hessian(prob, W) @ V.ravel()).reshape(W.shape)
    gn = kernels.hessian_vector_product(prob, W, V)
    err = np.linalg.norm(hv - fd) / np.linalg.norm(fd)
    err_gn = np.linalg.norm(gn - fd) / np.linalg.norm(fd)
    assert err < 0.05
    assert err_gn > 3 * err


def test_extreme_eigenvalues():
    lo, hi = extreme_eigenvalues(np.diag([3.0, -1.0, 2.0]))
    assert (lo, hi) == pytest.approx((-1.0, 3.0))


def test_heavy_ball_rate_is_the_spectral_radius_of_the_iteration():
    """e(t+1) = (1 + beta - a) e(t) - beta e(t-1): its companion matrix's spectral radius."""
    from sparse_teacher.theory import heavy_ball_rate

    for a, beta in [(0.01, 0.2), (0.003, 0.2), (0.3, 0.5), (0.05, 0.0), (1.2, 0.1)]:
        companion = np.array([[1 + beta - a, -beta], [1.0, 0.0]])
        expected = np.abs(np.linalg.eigvals(companion)).max()
        assert heavy_ball_rate(1 - a, beta) == pytest.approx(expected, rel=1e-12)
    assert heavy_ball_rate(0.999, 0.2) < 0.999  # momentum speeds up the slow mode
