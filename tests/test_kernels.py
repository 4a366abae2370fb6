"""Numba kernels against the NumPy reference and against finite differences."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_teacher import kernels
from sparse_teacher import reference as ref
from sparse_teacher.problem import StudentProblem
from sparse_teacher.teacher import draw_student_supports, draw_teacher, make_dataset


def make_problem(d, K, r_star, r, N, seed, dense=False, noise=0.0):
    t = draw_teacher(d, K, r_star, seed=seed)
    S = np.tile(np.arange(d), (K, 1)) if dense else draw_student_supports(t, r, seed=seed + 1)
    ds = make_dataset(t, N, seed=seed + 2, noise_level=noise)
    return StudentProblem.from_data(ds.X, ds.y, S), t.in_student_coordinates(S)


CASES = [
    dict(d=30, K=3, r_star=4, r=8, N=200, seed=0),
    dict(d=12, K=4, r_star=3, r=12, N=150, seed=5, dense=True),
    dict(d=60, K=5, r_star=10, r=10, N=300, seed=9, noise=0.1),
]


@pytest.mark.parametrize("case", CASES)
def test_single_start_matches_numpy(case):
    prob, W_star = make_problem(**case)
    rng = np.random.default_rng(0)
    for W in (W_star, W_star + 0.3 * rng.standard_normal(W_star.shape)):
        value, grad = kernels.loss_and_gradient(prob, W)
        value_ref, grad_ref = ref.loss_and_gradient(W, prob.gathered(), prob.y)
        assert value == pytest.approx(value_ref, rel=1e-12, abs=1e-15)
        np.testing.assert_allclose(grad, grad_ref, rtol=1e-10, atol=1e-14)
        assert kernels.loss(prob, W) == pytest.approx(value_ref, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("case", CASES)
def test_batched_matches_numpy_and_single(case):
    prob, W_star = make_problem(**case)
    rng = np.random.default_rng(1)
    Ws = W_star + 0.4 * rng.standard_normal((5, *W_star.shape))
    for start, stop in [(0, None), (7, prob.N - 3), (prob.N - 5, None)]:
        losses, grads = kernels.loss_and_gradient_batch(prob, Ws, start, stop)
        end = prob.N if stop is None else stop
        l_ref, g_ref = ref.loss_and_gradient_batch(Ws, prob.gathered()[:, start:end],
                                                   prob.y[start:end])
        np.testing.assert_allclose(losses, l_ref, rtol=1e-12)
        np.testing.assert_allclose(grads, g_ref, rtol=1e-10, atol=1e-14)
        for m in range(5):
            value, grad = kernels.loss_and_gradient(prob, Ws[m], start, stop)
            assert losses[m] == pytest.approx(value, rel=1e-12)
            np.testing.assert_allclose(grads[m], grad, rtol=1e-10, atol=1e-14)


def test_noiseless_teacher_is_a_stationary_zero_loss_point():
    prob, W_star = make_problem(**CASES[0])
    value, grad = kernels.loss_and_gradient(prob, W_star)
    assert value < 1e-30
    assert np.abs(grad).max() < 1e-16


@pytest.mark.parametrize("case", CASES)
def test_gradient_matches_central_differences(case):
    prob, W_star = make_problem(**case)
    rng = np.random.default_rng(2)
    W = W_star + 0.2 * rng.standard_normal(W_star.shape)
    grad = kernels.gradient(prob, W)
    h = 1e-6
    fd = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        E = np.zeros_like(W)
        E[idx] = h
        fd[idx] = (kernels.loss(prob, W + E) - kernels.loss(prob, W - E)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)


def _activation_pattern(prob, W):
    return np.einsum("knr,kr->kn", prob.gathered(), W) > 0


@pytest.mark.parametrize("case", CASES)
def test_hvp_matches_finite_differences_of_the_gradient(case):
    """Inside one linear region of the ReLUs the loss is quadratic, so central differences of the
    gradient are exact up to rounding; the test checks no activation flips within +-h."""
    prob, W_star = make_problem(**case)
    rng = np.random.default_rng(3)
    W = W_star + 0.2 * rng.standard_normal(W_star.shape)
    V = rng.standard_normal(W.shape)
    h = 1e-7
    pattern = _activation_pattern(prob, W)
    assert np.array_equal(pattern, _activation_pattern(prob, W + h * V))
    assert np.array_equal(pattern, _activation_pattern(prob, W - h * V))
    fd = (kernels.gradient(prob, W + h * V) - kernels.gradient(prob, W - h * V)) / (2 * h)
    hv = kernels.hessian_vector_product(prob, W, V)
    np.testing.assert_allclose(hv, fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(hv, ref.hessian_vector_product(W, V, prob.gathered()),
                               rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("case", CASES)
def test_full_hessian_matches_reference_and_hvp(case):
    prob, W_star = make_problem(**case)
    rng = np.random.default_rng(4)
    W = W_star + 0.1 * rng.standard_normal(W_star.shape)
    H = kernels.hessian(prob, W)
    np.testing.assert_allclose(H, ref.hessian(W, prob.gathered()), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(H, H.T, atol=1e-15)
    V = rng.standard_normal(W.shape)
    np.testing.assert_allclose(H @ V.ravel(), kernels.hessian_vector_product(prob, W, V).ravel(),
                               rtol=1e-10, atol=1e-14)
    assert np.linalg.eigvalsh(H).min() > -1e-12  # Gauss-Newton: positive semi-definite


@settings(max_examples=25, deadline=None)
@given(
    K=st.integers(1, 4),
    r=st.integers(1, 9),
    extra=st.integers(0, 6),
    N=st.integers(1, 40),
    M=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_kernels_match_reference_on_random_shapes(K, r, extra, N, M, seed):
    rng = np.random.default_rng(seed)
    d = r + extra
    S = np.stack([np.sort(rng.choice(d, r, replace=False)) for _ in range(K)])
    X = rng.standard_normal((N, d))
    y = rng.standard_normal(N)
    prob = StudentProblem.from_data(X, y, S)
    Ws = rng.standard_normal((M, K, r))
    losses, grads = kernels.loss_and_gradient_batch(prob, Ws)
    l_ref, g_ref = ref.loss_and_gradient_batch(Ws, prob.gathered(), y)
    np.testing.assert_allclose(losses, l_ref, rtol=1e-11)
    np.testing.assert_allclose(grads, g_ref, rtol=1e-9, atol=1e-12)
    value, grad = kernels.loss_and_gradient(prob, Ws[0])
    assert value == pytest.approx(l_ref[0], rel=1e-11)
    np.testing.assert_allclose(grad, g_ref[0], rtol=1e-9, atol=1e-12)


def test_hessian_refuses_large_problems():
    prob, W = make_problem(d=100, K=5, r_star=10, r=100, N=10, seed=0, dense=True)
    big = StudentProblem.from_data(np.zeros((2, 1000)), np.zeros(2), np.tile(np.arange(1000), (5, 1)))
    with pytest.raises(ValueError, match=r"K r = 5000 is too large"):
        kernels.hessian(big, np.zeros((5, 1000)))
    assert kernels.hessian(prob, W).shape == (500, 500)


@pytest.mark.parametrize("d, dense, layout", [(121, False, "union"), (121, True, "shared"),
                                               (2000, False, "per-neuron")])
def test_sample_block_kernels_across_block_edges(d, dense, layout):
    """Several blocks, ranges that start and stop inside blocks, a number of starts that is not
    a multiple of the batched kernel's tile of four, each block layout (union columns read
    through ``loc``, one shared block, each neuron's own columns): equal to the reference."""
    prob, W_star = make_problem(d=d, K=4, r_star=30, r=41, N=1300, seed=21, dense=dense)
    assert prob.blocks_use_union == (layout == "union")
    assert prob.shared_support == (layout == "shared")
    blocks = prob.sample_blocks
    B = blocks.shape[-1]
    n_blocks = -(-prob.N // B)
    expected = {"union": (n_blocks, prob.p, B), "shared": (n_blocks, 1, prob.r, B),
                "per-neuron": (n_blocks, prob.K, prob.r, B)}[layout]
    assert blocks.shape == expected and n_blocks >= 3  # the last block is padded
    assert blocks.ctypes.data % 64 == 0 and B % 8 == 0  # rows start on cache-line boundaries
    gathered = prob.gathered()
    for j in range(prob.K):
        if layout == "union":
            stored = blocks[1, prob.loc[j], 5]
        else:
            stored = blocks[1, 0 if layout == "shared" else j, :, 5]
        np.testing.assert_array_equal(stored, gathered[j, B + 5])
    rng = np.random.default_rng(8)
    Ws = W_star + 0.3 * rng.standard_normal((6, *W_star.shape))
    for start, stop in [(0, None), (B - 7, 2 * B + 5), (B, 2 * B), (3, 4), (prob.N - 9, None)]:
        end = prob.N if stop is None else stop
        value, grad = kernels.loss_and_gradient(prob, Ws[0], start, stop)
        value_ref, grad_ref = ref.loss_and_gradient(Ws[0], prob.gathered()[:, start:end],
                                                    prob.y[start:end])
        assert value == pytest.approx(value_ref, rel=1e-12)
        np.testing.assert_allclose(grad, grad_ref, rtol=1e-10, atol=1e-14)
        losses, grads = kernels.loss_and_gradient_batch(prob, Ws, start, stop)
        l_ref, g_ref = ref.loss_and_gradient_batch(Ws, prob.gathered()[:, start:end],
                                                   prob.y[start:end])
        np.testing.assert_allclose(losses, l_ref, rtol=1e-12)
        np.testing.assert_allclose(grads, g_ref, rtol=1e-10, atol=1e-14)


def test_block_row_helpers_agree_in_python_and_numba():
    """The layout helpers mean the same in plain Python and in compiled kernels."""
    from numba import njit

    rng = np.random.default_rng(3)
    per_neuron = rng.standard_normal((2, 3, 4, 8))  # (n_blocks, K, r, B)
    union = rng.standard_normal((2, 5, 8))  # (n_blocks, p, B)
    loc = np.array([[0, 1, 3, 4], [1, 2, 3, 4], [0, 2, 3, 4]])
    feature_row = njit(lambda G, rows, j, i: kernels.feature_row(G, rows, j, i))
    tile_row = njit(lambda G, rows, i: kernels.tile_row(G, rows, i))
    block = njit(lambda Gb, b, j: kernels.neuron_block(Gb, b, j))
    neuron_rows = njit(lambda rows, j: kernels.neuron_rows(rows, j))
    for Gb, rows in ((per_neuron, None), (union, loc)):
        for j in range(3):
            G_j = kernels.neuron_block(Gb, 1, j)
            np.testing.assert_array_equal(block(Gb, 1, j), G_j)
            rows_j = kernels.neuron_rows(rows, j)
            assert (neuron_rows(rows, j) is None) == (rows_j is None)
            for i in range(4):
                expected = Gb[1, j, i] if rows is None else Gb[1, loc[j, i]]
                np.testing.assert_array_equal(kernels.feature_row(Gb[1], rows, j, i), expected)
                np.testing.assert_array_equal(feature_row(Gb[1], rows, j, i), expected)
                np.testing.assert_array_equal(kernels.tile_row(G_j, rows_j, i), expected)
                np.testing.assert_array_equal(tile_row(G_j, rows_j, i), expected)
