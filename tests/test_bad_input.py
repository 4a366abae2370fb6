"""Every bad input named in issue 2 raises a ValueError that names the argument and what is allowed."""

import numpy as np
import pytest

from sparse_teacher.agd import init_at_distance, run_agd, run_agd_multistart
from sparse_teacher.kernels import hessian_vector_product, loss_and_gradient
from sparse_teacher.problem import StudentProblem
from sparse_teacher.teacher import (
    draw_student_supports,
    draw_teacher,
    make_dataset,
    sample_inputs,
    validate_supports,
)


@pytest.fixture(scope="module")
def small():
    t = draw_teacher(d=20, K=2, r_star=4, seed=0)
    S = draw_student_supports(t, r=6, seed=1)
    ds = make_dataset(t, N=50, seed=2)
    return t, S, ds, StudentProblem.from_data(ds.X, ds.y, S)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"d": 10, "K": 2, "r_star": 11}, r"r_star must be <= d = 10"),
        ({"d": 10, "K": 0, "r_star": 3}, r"K must be >= 1, got 0"),
        ({"d": 0, "K": 1, "r_star": 1}, r"d must be >= 1"),
        ({"d": 10, "K": 2.5, "r_star": 3}, r"K must be an integer"),
    ],
)
def test_bad_teacher(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        draw_teacher(seed=0, **kwargs)


def test_r_star_greater_than_r(small):
    t = small[0]
    with pytest.raises(ValueError, match=r"r must be >= r_star = 4.*got r = 3"):
        draw_student_supports(t, r=3, seed=0)


def test_r_greater_than_d(small):
    with pytest.raises(ValueError, match=r"r must be <= d = 20, got r = 21"):
        draw_student_supports(small[0], r=21, seed=0)


def test_n_less_than_one(small):
    with pytest.raises(ValueError, match=r"N must be >= 1, got 0"):
        make_dataset(small[0], N=0, seed=0)
    with pytest.raises(ValueError, match=r"N must be >= 1"):
        sample_inputs(0, 5, seed=0)


def test_non_finite_data(small):
    _, S, ds, _ = small
    X = ds.X.copy()
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"X must be finite, but 1 of its"):
        StudentProblem.from_data(X, ds.y, S)
    y = ds.y.copy()
    y[0] = np.inf
    with pytest.raises(ValueError, match=r"y must be finite"):
        StudentProblem.from_data(ds.X, y, S)


def test_supports_out_of_range_duplicated_or_missing_teacher(small):
    t, S, ds, _ = small
    bad = S.copy()
    bad[0, -1] = 20
    with pytest.raises(ValueError, match=r"entries must lie in \[0, d\) = \[0, 20\)"):
        StudentProblem.from_data(ds.X, ds.y, bad)
    dup = S.copy()
    dup[1, 1] = dup[1, 0]
    with pytest.raises(ValueError, match=r"row 1 repeats a coordinate"):
        validate_supports(dup, d=20)
    missing = S.copy()
    others = np.setdiff1d(np.arange(20), S[0])
    missing[0, np.searchsorted(S[0], t.supports[0][0])] = others[0]
    with pytest.raises(ValueError, match=r"row 0 does not contain the teacher's support"):
        t.in_student_coordinates(missing)
    with pytest.raises(ValueError, match=r"integer coordinates"):
        validate_supports(np.full((2, 3), 0.5), d=20)


def test_eta_and_beta_ranges(small):
    _, S, _, prob = small
    W0 = np.zeros((2, 6))
    with pytest.raises(ValueError, match=r"eta must lie in \(0.0, inf\], got 0.0"):
        run_agd(prob, W0, eta=0.0)
    with pytest.raises(ValueError, match=r"eta must lie in"):
        run_agd(prob, W0, eta=-1.0)
    with pytest.raises(ValueError, match=r"beta must lie in \[0.0, 1.0\), got 1.0"):
        run_agd(prob, W0, beta=1.0)
    with pytest.raises(ValueError, match=r"beta must lie in"):
        run_agd(prob, W0, beta=-0.1)


def test_shape_mismatches(small):
    _, S, ds, prob = small
    with pytest.raises(ValueError, match=r"y has 49 entries but X has N = 50 rows"):
        StudentProblem.from_data(ds.X, ds.y[:-1], S)
    with pytest.raises(ValueError, match=r"W0 has shape \(2, 5\), expected \(2, 6\)"):
        run_agd(prob, np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"W_star has shape"):
        run_agd(prob, np.zeros((2, 6)), W_star=np.ones((3, 6)))
    with pytest.raises(ValueError, match=r"W0 must be a 3-d array"):
        run_agd_multistart(prob, np.zeros((2, 6)))
    with pytest.raises(ValueError, match=r"V has shape"):
        hessian_vector_product(prob, np.zeros((2, 6)), np.zeros((6, 2)))
    with pytest.raises(ValueError, match=r"stop must be <= 50"):
        loss_and_gradient(prob, np.zeros((2, 6)), stop=51)


def test_other_agd_options(small):
    prob = small[3]
    with pytest.raises(ValueError, match=r"partition must be <= 50"):
        run_agd(prob, np.zeros((2, 6)), partition=51)
    with pytest.raises(ValueError, match=r"max_iter must be >= 0"):
        run_agd(prob, np.zeros((2, 6)), max_iter=-1)
    with pytest.raises(ValueError, match=r"lam must lie in \[0.0, inf\]"):
        init_at_distance(np.ones((2, 3)), -0.5, seed=0)
    with pytest.raises(ValueError, match=r"seed must be an int"):
        init_at_distance(np.ones((2, 3)), 0.5, seed=None)
