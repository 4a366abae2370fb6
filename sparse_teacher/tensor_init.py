"""Tensor (moment) initialisation of the sparse one-hidden-layer ReLU student.

Zhang et al., "Why Lottery Ticket Wins?" (NeurIPS 2021) initialise accelerated gradient descent
with the tensor method of Zhong et al., "Recovery Guarantees for One-hidden-layer Neural
Networks" (ICML 2017, Algorithm 1, Def. 5.1, Claim 5.2). This module follows
``/work/shared/specs/tensor_init_agd.md`` sections 2-4 (cited as "spec §k" below).

For ``y = sum_i v_i relu(a_i . z) + xi`` with ``z ~ N(0, I_p)`` the Hermite moments are
(spec §2, with ``m_k(s) = E[relu(s g) He_k(g)]``: ``m1 = s/2``, ``m2 = s/sqrt(2 pi)``,
``m3 = 0``, ``m4 = -s/sqrt(2 pi)``)

    M_k = E[y H_k(z)] = sum_i v_i m_k(|a_i|) abar_i^{(x)k},

so ``P2 = M2`` gives the span of the weights and ``M4`` (not ``M3``, which vanishes for ReLU)
separates them. Two feature maps ``z`` are supported (spec §3):

* ``mode="union"`` (default, any overlap pattern): ``z = x[U]`` with ``U`` the union of the
  supports; the components are the embedded weights ``a_j`` (``v_j = 1/K``), which are then
  assigned to the supports with the Hungarian algorithm and read off (spec §4 step 5).
* ``mode="xtilde"`` (the paper's ``x~ = K^{-1/2} sum_j x[Omega_j]``, spec §3a): only valid for
  pairwise disjoint supports, because only then is ``Cov(x~) = I_r``.

No third- or fourth-order array is ever formed: the 4th moment is only used through the K x K
contractions ``G(g) = M4(V, V, V g, V g)`` computed from the projected samples ``S = Z V``
(spec §4 step 2), at cost O(N K^2) each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse.linalg

from lottery_common import as_generator, check_array, check_int
from lottery_common import memory as _memory
from lottery_common.memory import check_memory

from .teacher import network_outputs, validate_supports

SQRT_2PI = float(np.sqrt(2.0 * np.pi))
MODES = ("union", "xtilde")
MAGNITUDES = ("rho", "zeta")
DENSE_EIGH_MAX_P = 2000  # above this feature dimension, P2 is never formed (spec §4 step 1)
R2_CLAMP = 1e-3  # eigenvalues of R2 are clamped to >= R2_CLAMP * lambda_max (spec §4 step 2)
SIGN_Z_THRESHOLD = 3.0  # |zeta_i| / stderr below this: sign of component i is ambiguous
MAX_SIGN_SEARCH = 10  # at most 2^10 sign patterns are scored by the training loss
MIN_SAMPLES = 50  # a sample set must hold at least max(MIN_SAMPLES, 2 * feature dim) rows


@dataclass(frozen=True)
class TensorInitResult:
    """Output of :func:`tensor_initialization`.

    ``W0`` (K, r) is the initial student in compact coordinates (row ``j`` indexed like
    ``supports[j]``). ``components`` (K, q) are the recovered vectors in feature coordinates
    (``q = p = |U|`` in union mode, ``q = r`` in x~ mode) in the order found by the
    decomposition; ``W0[j]`` is read off ``components[assignment[j]]``. ``sigma_hat``, ``rho``,
    ``zeta``, ``zeta_zscore`` (``|zeta_i|`` over its standard error), ``sign_flipped`` (signs
    changed from ``sign(zeta_i)`` by the training-loss search) and ``negative_rho`` are in
    component order.
    """

    W0: np.ndarray
    components: np.ndarray
    union: np.ndarray
    assignment: np.ndarray
    p2_eigenvalues: np.ndarray
    eigengap: float
    cond_U: float  # condition number of U-hat (spec §7 pitfall 2)
    r2_clamped: bool
    r2_min_eigenvalue: float
    contraction_score: float
    sigma_hat: np.ndarray
    sigma_sum_expected: float
    rho: np.ndarray
    zeta: np.ndarray
    zeta_zscore: np.ndarray
    sign_flipped: np.ndarray
    negative_rho: np.ndarray
    mode: str
    magnitudes: str
    residualize: bool
    split: bool
    sign_search: bool

    @property
    def sigma_sum(self) -> float:
        """``sum_i sigma_hat_i``; population value ``K sqrt(2 pi) E[y]`` (spec §4 step 4)."""
        return float(np.sum(self.sigma_hat))

    @property
    def consistency_ratio(self) -> float:
        """``sum_i sigma_hat_i / (K sqrt(2 pi) mean(y))``; 1 in population (NaN if mean(y) = 0)."""
        if self.sigma_sum_expected == 0.0:
            return float("nan")
        return self.sigma_sum / self.sigma_sum_expected


# ----------------------------------------------------------------------------- supports


def union_coordinates(supports: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted union ``U`` of the supports, and ``loc`` (K, r): where ``Omega_j`` sits in ``U``."""
    union = np.unique(supports)
    return union, np.searchsorted(union, supports)


def supports_are_disjoint(supports: np.ndarray) -> bool:
    """True when no coordinate is read by two neurons."""
    return int(np.unique(supports).size) == int(np.asarray(supports).size)


def _check_disjoint(supports: np.ndarray, what: str) -> None:
    if supports_are_disjoint(supports):
        return
    union, _ = union_coordinates(supports)
    K, r = supports.shape
    shared = int(K * r - union.size)
    raise ValueError(
        f"{what} needs pairwise disjoint supports (only then is Cov(x~) = I_r and "
        f"E[y x[Omega_j]] = w_j / (2K)), but the {K} supports of size {r} overlap "
        f"({shared} repeated coordinate(s), |union| = {union.size} < K r = {K * r}); "
        f"use mode='union', which is valid for any overlap pattern")


# ----------------------------------------------------------------------------- moments


def chaos1_residual(XU: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y1 = y - mean(y) - x_U . m1_hat`` with ``m1_hat = (1/N) sum_n y_n x_n`` (spec §4 step 0).

    Removes the empirical Wiener-chaos 0 and 1 parts of ``y``; ``M2`` and ``M4`` only see the
    chaos-2 and chaos-4 parts, so they are unchanged in population.
    """
    m1 = XU.T @ y / y.shape[0]
    return y - y.mean() - XU @ m1


def chaos2_residual(XU: np.ndarray, y1: np.ndarray,
                    basis: np.ndarray | None = None) -> np.ndarray:
    """``y2 = y1 - (x^T M2 x - tr M2) / 2`` with ``M2 = (1/N) sum y1 (x x^T - I)`` (spec §4 step 0).

    With ``basis`` (p, k) orthonormal, the chaos-2 part is estimated inside its span only
    (``M2`` replaced by ``B (B^T M2 B) B^T``), which costs O(N p k) instead of O(N p^2). This is
    used for large p, where the population ``M2`` has rank K inside the P2 top-K subspace.
    """
    T = XU if basis is None else XU @ basis
    M2 = second_moment_reduced(T, y1)
    q = np.einsum("nk,nk->n", T @ M2, T)
    return y1 - 0.5 * (q - np.trace(M2))


def second_moment_reduced(S: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(1/N) sum_n w_n (s_n s_n^T - I)`` over the rows ``s_n`` of ``S`` (Hermite M2, spec §2)."""
    N, k = S.shape
    M = S.T @ (w[:, None] * S) / N
    M -= w.mean() * np.eye(k)
    return 0.5 * (M + M.T)


def hermite4_contraction(S: np.ndarray, w: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``G(g) = M4(V, V, V g, V g)`` from projected samples ``S = Z V`` (spec §4 step 2).

    ``G(g) = (1/N) sum_n w_n [t^2 s s^T - s s^T - 2 t (s g^T + g s^T) - t^2 I + I + 2 g g^T]``
    with ``t_n = s_n . g``, ``g`` a unit vector. This is the 4th Hermite tensor ``H_4(z)`` (spec
    §2) contracted twice with ``V`` and twice with ``V g``; cost O(N K^2).
    """
    N, K = S.shape
    t = S @ g
    wn = w / N
    G = S.T @ ((wn * (t * t - 1.0))[:, None] * S)
    b = S.T @ (wn * t)
    G -= 2.0 * (np.outer(b, g) + np.outer(g, b))
    G += float(np.sum(wn * (1.0 - t * t))) * np.eye(K)
    G += 2.0 * float(np.sum(wn)) * np.outer(g, g)
    return 0.5 * (G + G.T)


def p2_top_subspace(Z: np.ndarray, w: np.ndarray, K: int, *, rng: np.random.Generator,
                    dense_max_p: int = DENSE_EIGH_MAX_P) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal ``V`` (q, K): top-K eigenvectors of ``P2 = (1/N) Z^T diag(w) Z - mean(w) I``.

    Spec §4 step 1 ([Z17] PowerMethod on P2). All signal eigenvalues are positive here
    (``v_i = 1/K > 0``, ``m2 > 0``), so the K largest algebraic eigenvalues are taken. For
    ``q <= dense_max_p`` P2 is formed and diagonalised by ``eigh``; above, it is never formed
    and the matrix-free Lanczos solver ``eigsh`` is applied to
    ``V -> (1/N) Z^T (w * (Z V)) - mean(w) V`` (O(N q) per product). Returns ``V`` and the top
    ``min(K + 1, q)`` eigenvalues, descending.
    """
    N, q = Z.shape
    n_eig = min(K + 1, q)
    if q <= dense_max_p or n_eig >= q:
        P2 = second_moment_reduced(Z, w)
        evals, evecs = np.linalg.eigh(P2)
        order = np.argsort(evals)[::-1]
        return evecs[:, order[:K]], evals[order[:n_eig]]
    wbar = float(w.mean())

    def matvec(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return Z.T @ (w[:, None] * (Z @ v.reshape(q, -1))) / N - wbar * v.reshape(q, -1)

    op = scipy.sparse.linalg.LinearOperator((q, q), matvec=matvec, matmat=matvec,
                                            dtype=np.float64)
    evals, evecs = scipy.sparse.linalg.eigsh(op, k=n_eig, which="LA",
                                             v0=rng.standard_normal(q))
    order = np.argsort(evals)[::-1]
    V, _ = np.linalg.qr(evecs[:, order[:K]])
    return V, evals[order]


def _clamp_pd(R2: np.ndarray) -> tuple[np.ndarray, bool, float]:
    """Clamp the eigenvalues of ``R2`` to ``>= R2_CLAMP * lambda_max`` if it is not PD."""
    evals, evecs = np.linalg.eigh(R2)
    lam_min, lam_max = float(evals[0]), float(evals[-1])
    if lam_max <= 0.0:
        raise ValueError(
            f"the reduced second moment R2 has no positive eigenvalue (largest {lam_max:.3g}): "
            f"the labels carry no detectable ReLU signal at this sample size; increase N")
    floor = R2_CLAMP * lam_max
    if lam_min >= floor:
        return R2, False, lam_min
    clamped = (evecs * np.maximum(evals, floor)) @ evecs.T
    return 0.5 * (clamped + clamped.T), True, lam_min


def _decompose(S: np.ndarray, w4: np.ndarray, R2: np.ndarray, n_contractions: int,
               refine_passes: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Columns ``u_i`` with ``R2 = U D2 U^T`` and ``G(g) = U D4(g) U^T`` (spec §4 step 3).

    Best of ``n_contractions`` generalized eigenproblems ``G(g_l) x = mu R2 x`` (score: smallest
    eigenvalue separation over the largest |mu|), ``u_i = R2 x_i / |R2 x_i|``, then
    ``refine_passes`` dual refinements: ``G(g)`` with ``g`` along column i of ``U^{-T}`` is rank
    one ``prop. u_i u_i^T`` in population.
    """
    K = S.shape[1]
    best_score, best_U = -np.inf, None
    for _ in range(n_contractions):
        g = rng.standard_normal(K)
        g /= np.linalg.norm(g)
        mu, Xg = scipy.linalg.eigh(hermite4_contraction(S, w4, g), R2)
        scale = float(np.max(np.abs(mu)))
        score = 1.0 if K == 1 else float(np.min(np.diff(mu))) / max(scale, np.finfo(float).tiny)
        if score > best_score:
            best_score, best_U = score, R2 @ Xg
    U = best_U / np.linalg.norm(best_U, axis=0)
    for _ in range(refine_passes):
        D = np.linalg.inv(U).T
        U_new = np.empty_like(U)
        for i in range(K):
            g = D[:, i] / np.linalg.norm(D[:, i])
            evals, evecs = np.linalg.eigh(hermite4_contraction(S, w4, g))
            u = evecs[:, int(np.argmax(np.abs(evals)))]
            U_new[:, i] = u if u @ U[:, i] >= 0 else -u
        U = U_new
    return U, best_score


def _zeta_zscore(S: np.ndarray, yc: np.ndarray, U: np.ndarray, zeta: np.ndarray) -> np.ndarray:
    """``|zeta_i| / se(zeta_i)`` for ``zeta = U^{-1} (1/N) sum_n yc_n s_n`` (plug-in covariance)."""
    N = S.shape[0]
    C = S.T @ ((yc * yc)[:, None] * S) / N ** 2  # Cov of (1/N) sum yc s
    Uinv = np.linalg.inv(U)
    se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", Uinv, C, Uinv), np.finfo(float).tiny))
    return np.abs(zeta) / se


def resolve_signs_by_loss(W: np.ndarray, rows: np.ndarray, X: np.ndarray, y: np.ndarray,
                          supports: np.ndarray) -> np.ndarray:
    """Signs ``s`` (+-1 per row of ``W``) minimising the training loss over the rows in ``rows``.

    Spec §7 pitfall 3: when ``M1`` cannot resolve the sign of a component, try both signs and
    keep the pattern with the lowest ``(1/2N) sum_n (f_W(x_n) - y_n)^2``; rows not listed keep
    ``+1``. Exhaustive over the ``2^len(rows)`` patterns (``len(rows) <= MAX_SIGN_SEARCH``).
    """
    X, y, supports = _validate_data(X, y, supports)
    W = check_array("W", W, shape=supports.shape)
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if rows.size and (rows[0] < 0 or rows[-1] >= W.shape[0]):
        raise ValueError(f"rows must index rows of W in [0, {W.shape[0]}), got {rows.tolist()}")
    if rows.size > MAX_SIGN_SEARCH:
        raise ValueError(f"rows may list at most {MAX_SIGN_SEARCH} neurons for the exhaustive "
                         f"sign search, got {rows.size}")
    best_loss, best = np.inf, np.ones(W.shape[0])
    for pattern in range(2 ** rows.size):
        signs = np.ones(W.shape[0])
        for b, j in enumerate(rows):
            if pattern >> b & 1:
                signs[j] = -1.0
        loss = 0.5 * float(np.mean((network_outputs(signs[:, None] * W, supports, X) - y) ** 2))
        if loss < best_loss:
            best_loss, best = loss, signs
    return best


# ----------------------------------------------------------------------------- validation


def _budget_doubles() -> int:
    """Doubles that fit in ``lottery_common.memory.MEMORY_BUDGET`` (read at call time)."""
    return int(_memory.MEMORY_BUDGET // 8)


def _largest_cube(limit: int) -> int:
    """The largest K with K^3 <= limit."""
    k = int(round(limit ** (1.0 / 3.0)))
    while k**3 > limit:
        k -= 1
    while (k + 1) ** 3 <= limit:
        k += 1
    return k


def _validate_data(X: object, y: object, supports: object) -> tuple[np.ndarray, np.ndarray,
                                                                    np.ndarray]:
    X = check_array("X", X, ndim=2)
    N, d = X.shape
    if N == 0 or d == 0:
        raise ValueError(f"X must have at least one row and one column, got shape {X.shape}")
    y = check_array("y", y, shape=(N,))
    supports = validate_supports(supports, d)
    return X, y, supports


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool, got {value!r} ({type(value).__name__})")
    return bool(value)


# ----------------------------------------------------------------------------- public API


def first_moment_estimate(X: np.ndarray, y: np.ndarray, supports: np.ndarray) -> np.ndarray:
    """Disjoint-support estimator ``w_j = 2K (1/N) sum_n (y_n - mean(y)) x_n[Omega_j]`` (spec §3c).

    For pairwise disjoint supports ``E[y x[Omega_j]] = w*_j / (2K)`` exactly (the other neurons
    are independent of ``x[Omega_j]`` and ``m1 = sigma/2``), with known neuron identity. The
    constant part of ``y`` is uncorrelated with ``x`` and is removed to reduce variance.
    Returns (K, r) compact weights. Raises ``ValueError`` for overlapping supports.
    """
    X, y, supports = _validate_data(X, y, supports)
    _check_disjoint(supports, "first_moment_estimate")
    K = supports.shape[0]
    yc = (y - y.mean()) / X.shape[0]
    return np.stack([2.0 * K * (X[:, supports[j]].T @ yc) for j in range(K)])


def tensor_initialization(X: np.ndarray, y: np.ndarray, supports: np.ndarray, *,
                          mode: str = "union", residualize: bool = True, split: bool = False,
                          magnitudes: str = "rho", n_contractions: int = 20,
                          refine_passes: int = 1, seed: int | np.random.Generator,
                          sign_search: bool = True,
                          dense_max_p: int = DENSE_EIGH_MAX_P) -> TensorInitResult:
    """Tensor initialisation ``W0`` (K, r) of the student with supports ``supports`` (spec §4).

    Steps: (0) residualise ``y`` against its empirical chaos-0/1/2 parts in union coordinates
    (``residualize``); (1) ``V`` = top-K eigenvectors of ``P2``; (2) ``R2 = M2(V, V)`` and
    contractions ``G(g) = M4(V, V, Vg, Vg)`` from ``S = Z V``; (3) simultaneous
    diagonalisation by generalized ``eigh`` over ``n_contractions`` random ``g`` plus
    ``refine_passes`` dual refinements; (4) signs from ``M1`` ([Z17] RecMagSign, ``zeta``) and
    magnitudes from ``rho`` (least squares of ``R2`` on ``u_i u_i^T``; ``magnitudes="rho"``) or
    from ``|zeta|`` (``magnitudes="zeta"``, the [Z17]-faithful choice); (5) Hungarian
    assignment of the components to the supports and read-off.

    ``split=True`` uses three disjoint thirds of the samples for steps 1, 2-3 and 4 ([Z17]
    Algorithm 1); ``split=True, residualize=False, magnitudes="zeta"`` is the faithful mode.
    Components with ``rho_i <= 0`` (a failure sign, flagged in ``negative_rho``) take their
    magnitude from ``zeta`` even when ``magnitudes="rho"``. With ``sign_search`` (spec §7
    pitfall 3), components whose ``|zeta_i|`` is below ``SIGN_Z_THRESHOLD`` standard errors get
    the sign pattern with the lowest training loss (on the step-4 samples); [Z17] uses
    ``sign(zeta_i)`` only (``sign_search=False``).
    """
    X, y, supports = _validate_data(X, y, supports)
    mode = _check_choice("mode", mode, MODES)
    magnitudes = _check_choice("magnitudes", magnitudes, MAGNITUDES)
    residualize = _check_bool("residualize", residualize)
    split = _check_bool("split", split)
    sign_search = _check_bool("sign_search", sign_search)
    n_contractions = check_int("n_contractions", n_contractions, minimum=1)
    refine_passes = check_int("refine_passes", refine_passes, minimum=0)
    dense_max_p = check_int("dense_max_p", dense_max_p, minimum=0)
    rng = as_generator(seed)

    N, d = X.shape
    K, r = supports.shape
    union, loc = union_coordinates(supports)
    p = int(union.size)
    if mode == "xtilde":
        _check_disjoint(supports, "mode='xtilde'")
        q = r
    else:
        q = p
    if K > q:
        raise ValueError(f"K = {K} neurons cannot be recovered from a feature space of dimension "
                         f"{q} ({'r' if mode == 'xtilde' else '|union of supports|'}); "
                         f"K must be <= {q}")
    n_parts = 3 if split else 1
    n_min = n_parts * max(MIN_SAMPLES, 2 * p)
    if N < n_min:
        raise ValueError(f"X has N = {N} samples, need N >= {n_min} (max({MIN_SAMPLES}, 2 |U|) "
                         f"with |U| = {p}{', times 3 for split=True' if split else ''})")
    # Step 4 fits rho by least squares on a (K^2, K) design: refuse it before any work.
    check_memory(f"tensor_initialization: K = {K} neurons (the ({K}^2, {K}) least-squares design "
                 f"of the magnitudes rho)", 8.0 * K**3,
                 f"use fewer neurons (K <= {_largest_cube(_budget_doubles())}), or "
                 f"first_moment_estimate for disjoint supports")

    if mode == "union":
        c1 = c2 = 1.0 / K
    else:
        c1, c2 = K ** -1.5, K ** -2.0

    if split:
        perm = rng.permutation(N)
        parts = np.array_split(perm, 3)
    else:
        parts = [np.arange(N)] * 3

    def features(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        XU = X[np.ix_(idx, union)] if split else X[:, union]
        if mode == "union":
            return XU, XU
        Zx = X[np.ix_(idx, supports[0])] if split else X[:, supports[0]].copy()
        for j in range(1, K):
            Zx += X[np.ix_(idx, supports[j])] if split else X[:, supports[j]]
        return XU, Zx / np.sqrt(K)

    def labels(XU: np.ndarray, yy: np.ndarray, V: np.ndarray | None,
               need_y2: bool) -> tuple[np.ndarray, np.ndarray]:
        if not residualize:
            return yy, yy
        y1 = chaos1_residual(XU, yy)
        if not need_y2:
            return y1, y1
        basis = None
        if XU.shape[1] > dense_max_p:
            basis = V if mode == "union" else p2_top_subspace(XU, y1, K, rng=rng,
                                                              dense_max_p=dense_max_p)[0]
        return y1, chaos2_residual(XU, y1, basis)

    # Step 0-1: subspace (part 1).
    XU1, Z1 = features(parts[0])
    y1_a, _ = labels(XU1, y[parts[0]], None, need_y2=False)
    V, p2_evals = p2_top_subspace(Z1, y1_a, K, rng=rng, dense_max_p=dense_max_p)
    if p2_evals.size > K:
        eigengap = float(p2_evals[K - 1] / max(abs(p2_evals[K]), np.finfo(float).tiny))
    else:
        eigengap = float("inf")

    # Step 2-3: reduced statistics and decomposition (part 2).
    if split:
        XU2, Z2 = features(parts[1])
        y_2 = y[parts[1]]
    else:
        XU2, Z2, y_2 = XU1, Z1, y
    y1_b, y2_b = labels(XU2, y_2, V, need_y2=True)
    S2 = Z2 @ V
    R2_hat = second_moment_reduced(S2, y1_b)
    R2_pd, clamped, r2_min = _clamp_pd(R2_hat)
    U_hat, score = _decompose(S2, y2_b, R2_pd, n_contractions, refine_passes, rng)
    cond_U = float(np.linalg.cond(U_hat))

    # Step 4: signs and magnitudes (part 3).
    if split:
        XU3, Z3 = features(parts[2])
        y_3 = y[parts[2]]
        y1_c, _ = labels(XU3, y_3, V, need_y2=False)
        R2_mag = second_moment_reduced(Z3 @ V, y1_c)
    else:
        Z3, y_3, R2_mag = Z1, y, R2_hat
    X3 = X[parts[2]] if split else X
    yc = y_3 - y_3.mean()
    S3 = Z3 @ V
    zeta = np.linalg.solve(U_hat, S3.T @ yc / y_3.shape[0])  # U^{-1} V^T M1
    zeta_z = _zeta_zscore(S3, yc, U_hat, zeta)
    design = np.stack([np.outer(U_hat[:, i], U_hat[:, i]).ravel() for i in range(K)], axis=1)
    rho = np.linalg.lstsq(design, R2_mag.ravel(), rcond=None)[0]
    negative_rho = rho <= 0.0
    sigma_zeta = 2.0 * np.abs(zeta) / c1
    if magnitudes == "rho":
        sigma_hat = np.where(negative_rho, sigma_zeta, SQRT_2PI * rho / c2)
    else:
        sigma_hat = sigma_zeta
    signs = np.where(zeta >= 0.0, 1.0, -1.0)
    components = (signs * sigma_hat)[:, None] * (V @ U_hat).T  # (K, q)

    # Step 5: assignment to supports and read-off.
    if mode == "union":
        sq = components ** 2
        energy = np.stack([sq[:, loc[j]].sum(axis=1) for j in range(K)], axis=1)
        affinity = energy / np.maximum(sq.sum(axis=1, keepdims=True), np.finfo(float).tiny)
    else:
        Xs = X3
        ys = (y_3 - y_3.mean()) / y_3.shape[0]
        m_hat = np.stack([Xs[:, supports[j]].T @ ys for j in range(K)])  # (K, r)
        cn = components / np.maximum(np.linalg.norm(components, axis=1, keepdims=True),
                                     np.finfo(float).tiny)
        mn = m_hat / np.maximum(np.linalg.norm(m_hat, axis=1, keepdims=True),
                                np.finfo(float).tiny)
        affinity = cn @ mn.T
    rows, cols = scipy.optimize.linear_sum_assignment(-affinity)
    assignment = np.empty(K, dtype=np.int64)
    assignment[cols] = rows
    if mode == "union":
        W0 = np.stack([components[assignment[j], loc[j]] for j in range(K)])
    else:
        W0 = components[assignment].copy()

    sign_flipped = np.zeros(K, dtype=bool)
    ambiguous = np.nonzero(zeta_z[assignment] < SIGN_Z_THRESHOLD)[0]  # rows of W0
    if sign_search and ambiguous.size:
        ambiguous = ambiguous[np.argsort(zeta_z[assignment][ambiguous])[:MAX_SIGN_SEARCH]]
        flips = resolve_signs_by_loss(W0, ambiguous, X3, y_3, supports)
        W0 *= flips[:, None]
        sign_flipped[assignment] = flips < 0
        components[sign_flipped] *= -1.0

    return TensorInitResult(
        W0=W0, components=components, union=union, assignment=assignment,
        p2_eigenvalues=p2_evals, eigengap=eigengap, cond_U=cond_U, r2_clamped=clamped,
        r2_min_eigenvalue=r2_min, contraction_score=score, sigma_hat=sigma_hat,
        sigma_sum_expected=float(K * SQRT_2PI * y.mean()), rho=rho, zeta=zeta,
        zeta_zscore=zeta_z, sign_flipped=sign_flipped, negative_rho=negative_rho, mode=mode,
        magnitudes=magnitudes, residualize=residualize, split=split, sign_search=sign_search)


def match_permutation(W: np.ndarray, W_star: np.ndarray, supports: np.ndarray) -> np.ndarray:
    """Row order ``perm`` such that ``W[perm]`` is closest to ``W*`` (spec §7 pitfall 8).

    With identical supports (e.g. the dense network) the neurons are exchangeable, so rows are
    matched by the Hungarian algorithm on squared row distances; with distinct supports the row
    order is fixed by the supports and ``perm`` is the identity.
    """
    W_star = check_array("W_star", W_star, ndim=2)
    W = check_array("W", W, shape=W_star.shape)
    supports = np.asarray(supports)
    if supports.shape != W_star.shape:
        raise ValueError(f"supports has shape {supports.shape}, expected W_star's shape "
                         f"{W_star.shape}")
    K = W_star.shape[0]
    if not np.all(supports == supports[0]):
        return np.arange(K)
    check_memory(f"match_permutation: K = {K} identical supports of size {W_star.shape[1]} (the "
                 f"(K, K, r) array of squared differences)", 8.0 * K * K * W_star.shape[1],
                 "compare W with W_star without matching (sparse_teacher.agd.relative_error), or "
                 "fewer neurons")
    cost = ((W[:, None, :] - W_star[None, :, :]) ** 2).sum(axis=2)
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    perm = np.empty(K, dtype=np.int64)
    perm[cols] = rows
    return perm


def init_relative_error(W: np.ndarray, W_star: np.ndarray, supports: np.ndarray) -> float:
    """``|W[perm] - W*|_F / |W*|_F`` with ``perm`` from :func:`match_permutation`.

    The permutation is free only when all supports are identical; otherwise it is the identity.
    """
    perm = match_permutation(W, W_star, supports)
    W_star = np.asarray(W_star, dtype=np.float64)
    norm = float(np.linalg.norm(W_star))
    if norm == 0.0:
        raise ValueError("W_star must be nonzero for a relative error, got the zero matrix")
    return float(np.linalg.norm(np.asarray(W, dtype=np.float64)[perm] - W_star) / norm)
