"""Tests of the tensor initialisation (spec tensor_init_agd.md §2-4, [Z17] Algorithm 1)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sparse_teacher.teacher import (
    SparseTeacher,
    draw_student_supports,
    draw_teacher,
    make_dataset,
)
from sparse_teacher.tensor_init import (
    R2_CLAMP,
    SQRT_2PI,
    _clamp_pd,
    chaos1_residual,
    chaos2_residual,
    first_moment_estimate,
    hermite4_contraction,
    init_relative_error,
    match_permutation,
    p2_top_subspace,
    resolve_signs_by_loss,
    second_moment_reduced,
    tensor_initialization,
)


def _problem(d: int, r: int, K: int, r_star: int, N: int, seed: int):
    """Teacher, student supports, data set and W* in student coordinates, all from one seed."""
    rng = np.random.default_rng(seed)
    teacher = draw_teacher(d, K, r_star, seed=rng)
    supports = draw_student_supports(teacher, r, seed=rng)
    data = make_dataset(teacher, N, seed=rng)
    return teacher, supports, data, teacher.in_student_coordinates(supports)


def _disjoint_problem(d: int, r: int, K: int, r_star: int, N: int, seed: int):
    """Pairwise disjoint student supports, each containing its teacher support."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(d)
    blocks = [perm[j * r:(j + 1) * r] for j in range(K)]
    teacher = SparseTeacher(d=d, supports=np.sort(np.stack([b[:r_star] for b in blocks]), axis=1),
                            weights=rng.uniform(-0.5, 0.5, size=(K, r_star)))
    supports = np.sort(np.stack(blocks), axis=1)
    data = make_dataset(teacher, N, seed=rng)
    return teacher, supports, data, teacher.in_student_coordinates(supports)


def _init_error(d, r, K, r_star, N, seed, **kwargs) -> float:
    _, supports, data, W_star = _problem(d, r, K, r_star, N, seed)
    res = tensor_initialization(data.X, data.y, supports, seed=seed, **kwargs)
    return init_relative_error(res.W0, W_star, supports)


# ----------------------------------------------------------------------------- moment identities


def _explicit_hermite4(Z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Reference ``M4 = (1/N) sum w_n H_4(z_n)`` formed as a full p^4 tensor (spec §2)."""
    N, p = Z.shape
    eye = np.eye(p)
    z4 = np.einsum("n,na,nb,nc,nd->abcd", w, Z, Z, Z, Z) / N
    zz = np.einsum("n,na,nb->ab", w, Z, Z) / N
    zzI = (np.einsum("ab,cd->abcd", zz, eye) + np.einsum("ac,bd->abcd", zz, eye)
           + np.einsum("ad,bc->abcd", zz, eye) + np.einsum("bc,ad->abcd", zz, eye)
           + np.einsum("bd,ac->abcd", zz, eye) + np.einsum("cd,ab->abcd", zz, eye))
    II = (np.einsum("ab,cd->abcd", eye, eye) + np.einsum("ac,bd->abcd", eye, eye)
          + np.einsum("ad,bc->abcd", eye, eye))
    return z4 - zzI + w.mean() * II


@pytest.mark.parametrize("K", [1, 2, 4])
def test_hermite4_contraction_matches_explicit_tensor(K):
    rng = np.random.default_rng(7)
    N, p = 300, 4
    Z = rng.standard_normal((N, p))
    w = rng.standard_normal(N) + 0.3
    V = np.linalg.qr(rng.standard_normal((p, K)))[0]
    g = rng.standard_normal(K)
    g /= np.linalg.norm(g)
    M4 = _explicit_hermite4(Z, w)
    Vg = V @ g
    expected = np.einsum("abcd,ai,bj,c,d->ij", M4, V, V, Vg, Vg)
    got = hermite4_contraction(Z @ V, w, g)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10 * np.abs(expected).max())
    M2 = np.einsum("n,na,nb->ab", w, Z, Z) / N - w.mean() * np.eye(p)
    np.testing.assert_allclose(second_moment_reduced(Z @ V, w), V.T @ M2 @ V, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_population_moments_of_relu_teacher(seed):
    """M2 = (1/K) sum s_i/sqrt(2 pi) a a^T and M4(.,.,g,g) with m4 = -s/sqrt(2 pi) (spec §2).

    Residualisation (spec §4 step 0) must leave both unchanged in population and shrink the
    sampling error.
    """
    p, K, N = 3, 2, 1_000_000
    teacher = draw_teacher(p, K, p, seed=seed)
    data = make_dataset(teacher, N, seed=10 + seed)
    X, y = data.X, data.y
    sig = np.linalg.norm(teacher.weights, axis=1)
    abar = teacher.weights / sig[:, None]
    g = abar[0]
    G_pop = -sum(sig[i] / SQRT_2PI * (g @ abar[i]) ** 2 * np.outer(abar[i], abar[i])
                 for i in range(K)) / K
    M2_pop = sum(sig[i] / SQRT_2PI * np.outer(abar[i], abar[i]) for i in range(K)) / K
    y1 = chaos1_residual(X, y)
    y2 = chaos2_residual(X, y1)
    err_raw = np.linalg.norm(hermite4_contraction(X, y, g) - G_pop) / np.linalg.norm(G_pop)
    err_res = np.linalg.norm(hermite4_contraction(X, y2, g) - G_pop) / np.linalg.norm(G_pop)
    assert err_res < 0.03
    assert err_res < err_raw
    m2_err = np.linalg.norm(second_moment_reduced(X, y1) - M2_pop) / np.linalg.norm(M2_pop)
    assert m2_err < 0.02
    # M1 = (1/2K) sum a_i is unchanged by centring; y1 has no chaos-1 part left.
    np.testing.assert_allclose(X.T @ y / N, teacher.weights.sum(axis=0) / (2 * K), atol=5e-3)
    assert np.abs(X.T @ y1 / N).max() < 5e-3


def test_p2_top_subspace_contains_teacher_directions():
    _, supports, data, W_star = _problem(6, 6, 2, 6, 100_000, seed=3)
    y1 = chaos1_residual(data.X, data.y)
    V, evals = p2_top_subspace(data.X, y1, 2, rng=np.random.default_rng(0))
    np.testing.assert_allclose(V.T @ V, np.eye(2), atol=1e-12)
    abar = W_star / np.linalg.norm(W_star, axis=1, keepdims=True)
    residual = abar - (abar @ V) @ V.T
    assert np.linalg.norm(residual, axis=1).max() < 0.05
    assert evals.shape == (3,) and evals[1] > 5 * abs(evals[2])


def test_matrix_free_subspace_matches_dense_eigh():
    rng = np.random.default_rng(5)
    N, q, K = 3000, 40, 3
    B = np.linalg.qr(rng.standard_normal((q, K)))[0]
    Z = rng.standard_normal((N, q))
    w = ((Z @ B) ** 2).sum(axis=1) * rng.uniform(0.5, 1.5, size=N)
    V_dense, e_dense = p2_top_subspace(Z, w, K, rng=np.random.default_rng(1))
    V_free, e_free = p2_top_subspace(Z, w, K, rng=np.random.default_rng(1), dense_max_p=10)
    np.testing.assert_allclose(e_free, e_dense, rtol=1e-9)
    np.testing.assert_allclose(V_free @ V_free.T, V_dense @ V_dense.T, atol=1e-8)


def test_clamp_flags_and_fixes_indefinite_r2():
    R2 = np.diag([2.0, 0.5, -0.1])
    clamped, flag, lam_min = _clamp_pd(R2)
    assert flag and lam_min == pytest.approx(-0.1)
    np.testing.assert_allclose(np.linalg.eigvalsh(clamped), [R2_CLAMP * 2.0, 0.5, 2.0])
    same, flag_pd, _ = _clamp_pd(np.diag([2.0, 0.5, 0.1]))
    assert not flag_pd and np.array_equal(same, np.diag([2.0, 0.5, 0.1]))


# ----------------------------------------------------------------------------- accuracy


def test_error_falls_with_n_dense():
    """Dense d = r = 10, K = 3 (spec §8 N-scan at d = 20: 0.108 at 1e4, 0.024 at 2e5)."""
    Ns = [2_000, 20_000, 200_000]
    errors = np.array([[_init_error(10, 10, 3, 10, N, seed) for seed in range(4)] for N in Ns])
    means = errors.mean(axis=1)
    assert means[0] > means[1] > means[2]
    assert means[1] / means[2] > 2.0  # N^{-1/2} predicts sqrt(10) = 3.2
    assert means[2] < 0.03 and errors[2].max() < 0.04


def test_residualisation_and_all_samples_beat_faithful_mode():
    """Spec §8 ablation: residualised, all-sample estimates are several times more accurate."""
    N = 200_000
    rec = np.mean([_init_error(10, 10, 3, 10, N, s) for s in range(4)])
    raw = np.mean([_init_error(10, 10, 3, 10, N, s, residualize=False) for s in range(4)])
    faithful = np.mean([_init_error(10, 10, 3, 10, N, s, split=True, residualize=False,
                                    magnitudes="zeta", sign_search=False) for s in range(4)])
    split = np.mean([_init_error(10, 10, 3, 10, N, s, split=True) for s in range(4)])
    zeta = np.mean([_init_error(10, 10, 3, 10, N, s, magnitudes="zeta") for s in range(4)])
    assert rec < 0.03 and split < 0.05 and zeta < 0.03
    assert 2 * rec < raw < faithful
    assert rec < split


def test_diagnostics_at_large_n():
    teacher, supports, data, W_star = _problem(10, 10, 3, 10, 200_000, seed=11)
    res = tensor_initialization(data.X, data.y, supports, seed=0)
    assert res.W0.shape == (3, 10) and res.components.shape == (3, 10)
    assert not res.r2_clamped and res.r2_min_eigenvalue > 0
    assert not res.negative_rho.any() and (res.rho > 0).all()
    assert res.eigengap > 5 and res.p2_eigenvalues.shape == (4,)
    assert 1 <= res.cond_U < 10
    assert (res.zeta_zscore > 20).all() and not res.sign_flipped.any()
    assert abs(res.consistency_ratio - 1) < 0.02
    # sigma_hat estimates the neuron norms (matched up to the dense permutation symmetry).
    norms = np.sort(np.linalg.norm(W_star, axis=1))
    np.testing.assert_allclose(np.sort(res.sigma_hat), norms, rtol=0.05)
    assert sorted(res.assignment.tolist()) == [0, 1, 2]


def test_sparse_overlapping_supports():
    """Random overlapping supports, r* = 8 < r = 12 < d = 40 (spec §8: 0.019 at d = 100)."""
    errors = []
    for seed in range(3):
        _, supports, data, W_star = _problem(40, 12, 3, 8, 100_000, seed)
        assert len(np.unique(supports)) < supports.size  # the supports do overlap
        res = tensor_initialization(data.X, data.y, supports, seed=seed)
        assert res.union.size == len(np.unique(supports))
        errors.append(init_relative_error(res.W0, W_star, supports))
        # W0[j] is read off the component assigned to support j.
        loc = np.searchsorted(res.union, supports)
        for j in range(3):
            np.testing.assert_array_equal(res.W0[j], res.components[res.assignment[j], loc[j]])
    assert np.mean(errors) < 0.03 and max(errors) < 0.04


def test_single_neuron():
    err = _init_error(5, 5, 1, 5, 50_000, seed=4)
    assert err < 0.06


def test_xtilde_mode_on_disjoint_supports():
    """Spec §8: disjoint d = 60, r = 20: union 0.017, x~ 0.071, first moment 0.031 (N = 2e5).

    x~ is intrinsically noisier (its M2 and M4 signals carry K^{-2}, K^{-3} instead of 1/K).
    """
    errs = {"union": [], "xtilde": [], "first": []}
    for seed in range(3):
        _, supports, data, W_star = _disjoint_problem(30, 10, 3, 7, 200_000, seed)
        for mode in ("union", "xtilde"):
            res = tensor_initialization(data.X, data.y, supports, mode=mode, seed=seed)
            errs[mode].append(init_relative_error(res.W0, W_star, supports))
        assert res.components.shape == (3, 10)  # x~ components live in R^r
        assert abs(res.consistency_ratio - 1) < 0.05
        errs["first"].append(init_relative_error(first_moment_estimate(data.X, data.y, supports),
                                                 W_star, supports))
        if seed == 0:  # matrix-free subspace and low-rank chaos-2 residual in union coordinates
            free = tensor_initialization(data.X, data.y, supports, mode="xtilde", seed=seed,
                                         dense_max_p=5)
            assert init_relative_error(free.W0, W_star, supports) < 0.12
    assert np.mean(errs["union"]) < 0.025
    assert np.mean(errs["xtilde"]) < 0.12 and max(errs["xtilde"]) < 0.15
    assert np.mean(errs["first"]) < 0.035
    assert np.mean(errs["union"]) < np.mean(errs["xtilde"])


def test_xtilde_and_first_moment_refuse_overlapping_supports():
    _, supports, data, _ = _problem(20, 8, 3, 5, 2_000, seed=0)
    assert len(np.unique(supports)) < supports.size
    with pytest.raises(ValueError, match="disjoint.*mode='union'"):
        tensor_initialization(data.X, data.y, supports, mode="xtilde", seed=0)
    with pytest.raises(ValueError, match="disjoint"):
        first_moment_estimate(data.X, data.y, supports)


def test_first_moment_estimate_is_exact_in_expectation():
    """E[y x[Omega_j]] = w_j / (2K) for disjoint supports: the estimator is unbiased."""
    _, supports, data, W_star = _disjoint_problem(12, 4, 3, 4, 400_000, seed=8)
    est = first_moment_estimate(data.X, data.y, supports)
    # standard error per entry is about 2K sqrt(E[y^2] / N) ~ 5e-3
    np.testing.assert_allclose(est, W_star, atol=0.03)


def test_matrix_free_path_agrees_with_dense_path():
    _, supports, data, W_star = _problem(12, 12, 3, 12, 100_000, seed=6)
    dense = tensor_initialization(data.X, data.y, supports, seed=1)
    free = tensor_initialization(data.X, data.y, supports, seed=1, dense_max_p=5)
    e_dense = init_relative_error(dense.W0, W_star, supports)
    e_free = init_relative_error(free.W0, W_star, supports)
    assert e_dense < 0.04 and e_free < 0.04
    assert init_relative_error(free.W0, dense.W0, supports) < 0.02


def test_same_seed_same_output():
    _, supports, data, _ = _problem(15, 8, 3, 6, 20_000, seed=2)
    for split in (False, True):
        a = tensor_initialization(data.X, data.y, supports, split=split, seed=9)
        b = tensor_initialization(data.X, data.y, supports, split=split, seed=9)
        np.testing.assert_array_equal(a.W0, b.W0)
        np.testing.assert_array_equal(a.assignment, b.assignment)
        assert a.contraction_score == b.contraction_score
    c = tensor_initialization(data.X, data.y, supports, split=True, seed=10)
    assert not np.array_equal(a.W0, c.W0)  # a different split of the samples


def test_resolve_signs_by_loss_finds_flipped_rows():
    teacher, supports, data, W_star = _problem(12, 6, 3, 4, 5_000, seed=3)
    W = W_star.copy()
    W[1] *= -1.0
    np.testing.assert_array_equal(resolve_signs_by_loss(W, [1], data.X, data.y, supports),
                                  [1.0, -1.0, 1.0])
    np.testing.assert_array_equal(resolve_signs_by_loss(W, [0, 1, 2], data.X, data.y, supports),
                                  [1.0, -1.0, 1.0])
    np.testing.assert_array_equal(resolve_signs_by_loss(W, [0, 2], data.X, data.y, supports),
                                  [1.0, 1.0, 1.0])  # row 1 is not searched
    with pytest.raises(ValueError, match="rows must index rows of W"):
        resolve_signs_by_loss(W, [3], data.X, data.y, supports)
    with pytest.raises(ValueError, match="at most 10"):
        resolve_signs_by_loss(np.ones((11, 6)), np.arange(11), data.X, data.y,
                              np.tile(np.arange(6), (11, 1)))


def test_sign_search_wiring(monkeypatch):
    """With every sign declared ambiguous, W0 is the loss-best sign pattern of the sign(zeta) W0."""
    import sparse_teacher.tensor_init as ti

    _, supports, data, W_star = _problem(20, 8, 3, 6, 20_000, seed=4)
    plain = tensor_initialization(data.X, data.y, supports, seed=2, sign_search=False)
    monkeypatch.setattr(ti, "SIGN_Z_THRESHOLD", np.inf)
    searched = tensor_initialization(data.X, data.y, supports, seed=2)
    losses = {}
    for signs in itertools.product([1.0, -1.0], repeat=3):
        W = np.array(signs)[:, None] * plain.W0
        losses[signs] = np.mean((ti.network_outputs(W, supports, data.X) - data.y) ** 2)
    best = np.array(min(losses, key=losses.get))
    np.testing.assert_array_equal(searched.W0, best[:, None] * plain.W0)
    np.testing.assert_array_equal(searched.sign_flipped[searched.assignment], best < 0)
    flip = np.where(searched.sign_flipped, -1.0, 1.0)[:, None]
    np.testing.assert_array_equal(searched.components, flip * plain.components)


# ----------------------------------------------------------------------------- error metric


def test_init_relative_error_permutation_rules():
    rng = np.random.default_rng(0)
    W_star = rng.standard_normal((3, 4))
    perm = [2, 0, 1]
    same = np.tile(np.arange(4), (3, 1))
    assert init_relative_error(W_star[perm], W_star, same) == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_array_equal(W_star[perm][match_permutation(W_star[perm], W_star, same)],
                                  W_star)
    distinct = np.array([[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]])
    expected = np.linalg.norm(W_star[perm] - W_star) / np.linalg.norm(W_star)
    assert init_relative_error(W_star[perm], W_star, distinct) == pytest.approx(expected)
    # brute force over all permutations for identical supports
    W = rng.standard_normal((3, 4))
    brute = min(np.linalg.norm(W[list(q)] - W_star) for q in itertools.permutations(range(3)))
    assert init_relative_error(W, W_star, same) == pytest.approx(brute / np.linalg.norm(W_star))


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small_data():
    _, supports, data, _ = _problem(10, 6, 2, 4, 500, seed=1)
    return data.X, data.y, supports


@pytest.mark.parametrize("change, match", [
    (dict(X=np.zeros(5)), "X must be a 2-d"),
    (dict(X="nan"), "X must be"),
    (dict(y=np.zeros(3)), "y has shape"),
    (dict(y=np.full(500, np.nan)), "y must be finite"),
    (dict(supports=np.array([[0, 1], [0, 12]])), r"supports entries must lie in \[0, d\)"),
    (dict(supports=np.array([[0, 0], [1, 2]])), "repeats a coordinate"),
    (dict(mode="dense"), "mode must be one of"),
    (dict(magnitudes="abs"), "magnitudes must be one of"),
    (dict(n_contractions=0), "n_contractions must be >= 1"),
    (dict(refine_passes=-1), "refine_passes must be >= 0"),
    (dict(refine_passes=1.5), "refine_passes must be an integer"),
    (dict(residualize="yes"), "residualize must be a bool"),
    (dict(split=1), "split must be a bool"),
    (dict(sign_search=None), "sign_search must be a bool"),
    (dict(seed=None), "seed must be an int"),
    (dict(supports=np.array([[0], [0], [0]])), "K = 3 neurons"),
])
def test_bad_inputs_raise(small_data, change, match):
    X, y, supports = small_data
    kwargs = dict(X=X, y=y, supports=supports, seed=0)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        tensor_initialization(kwargs.pop("X"), kwargs.pop("y"), kwargs.pop("supports"), **kwargs)


def test_too_few_samples_raise(small_data):
    X, y, supports = small_data
    with pytest.raises(ValueError, match=r"N = 40 samples, need N >= 50"):
        tensor_initialization(X[:40], y[:40], supports, seed=0)
    with pytest.raises(ValueError, match="times 3 for split=True"):
        tensor_initialization(X[:100], y[:100], supports, split=True, seed=0)


def test_init_relative_error_bad_input():
    with pytest.raises(ValueError, match="W has shape"):
        init_relative_error(np.zeros((2, 3)), np.ones((3, 3)), np.zeros((3, 3), dtype=int))
    with pytest.raises(ValueError, match="nonzero"):
        init_relative_error(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match="supports has shape"):
        init_relative_error(np.zeros((2, 3)), np.ones((2, 3)), np.zeros((2, 4), dtype=int))


# ----------------------------------------------------------------------------- AGD from the init


@pytest.mark.parametrize("d, r, r_star, seed", [(40, 12, 8, 0), (40, 12, 8, 1), (10, 10, 10, 0)])
def test_agd_from_tensor_init_succeeds(d, r, r_star, seed):
    """Lemma 1 + Theorem 2: at large N the init lies in the basin and AGD recovers W* (< 1e-4)."""
    from sparse_teacher.agd import run_agd
    from sparse_teacher.problem import StudentProblem

    _, supports, data, W_star = _problem(d, r, 3, r_star, 20_000, seed)
    res = tensor_initialization(data.X, data.y, supports, seed=seed)
    W0 = res.W0[match_permutation(res.W0, W_star, supports)]  # dense case: align the labels
    init_err = init_relative_error(res.W0, W_star, supports)
    assert 0.01 < init_err < 0.1  # a genuine, imperfect starting point (spec §8: 0.075 at 2e4)
    prob = StudentProblem.from_data(data.X, data.y, supports)
    agd = run_agd(prob, W0, eta=0.5, beta=0.2, W_star=W_star)
    assert agd.success and agd.rel_error < 1e-4
    assert agd.rel_error < init_err / 100
