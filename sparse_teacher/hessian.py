"""Hessian of the risk around W*: the quantity of Theorem 1 (local convexity).

For the squared loss with ReLU units the Hessian of the *risk* f(W) = E[(1/2) e(x)^2] has two parts
(Zhang et al. 2021, Sec. 4; Zhong et al. 2017, Sec. 4), with z_j = w_j . x[Omega_j]:

    d^2 f / dw_j dw_l = E[ J_j J_l^T ]  +  delta_jl (1/K) E[ e(x) delta(z_j) x[Omega_j] x[Omega_j]^T ],
    J_j = (1/K) 1{z_j > 0} x[Omega_j].

The first (Gauss-Newton) part is positive semi-definite. The second appears because the ReLU's
derivative jumps where z_j = 0; it vanishes at W* for noiseless data (e = 0) and can be negative
away from it, which is what bounds the locally convex region. The *empirical* loss is piecewise
quadratic, so its Hessian away from the kinks is the Gauss-Newton part alone
(``kernels.hessian``) and never detects the region's edge. Here the kink term is estimated from
the samples with a Gaussian kernel in place of delta(z_j), bandwidth h_j = 1.06 std(z_j) N^(-1/5)
(Silverman's rule), a consistent estimator of the risk's Hessian as N grows.
"""

from __future__ import annotations

import numpy as np

from lottery_common import check_float

from .kernels import hessian as gauss_newton_hessian
from .problem import StudentProblem


def risk_hessian(problem: StudentProblem, W: np.ndarray,
                 bandwidth_scale: float = 1.0) -> np.ndarray:
    """Estimated Hessian (K r, K r) of the risk at W: Gauss-Newton part plus smoothed kink term.

    ``bandwidth_scale`` multiplies Silverman's bandwidth. Index (j, i) -> j * r + i.
    """
    W = problem.check_weights(W)
    bandwidth_scale = check_float("bandwidth_scale", bandwidth_scale, low=0.0, low_open=True)
    H = gauss_newton_hessian(problem, W)
    K, r, N = problem.K, problem.r, problem.N
    Xg = problem.gathered()
    Z = np.einsum("knr,kr->kn", Xg, W)
    e = np.maximum(Z, 0.0).mean(axis=0) - problem.y
    for j in range(K):
        spread = float(np.std(Z[j]))
        if spread == 0.0:
            continue
        h = bandwidth_scale * 1.06 * spread * N ** (-0.2)
        density = np.exp(-0.5 * (Z[j] / h) ** 2) / (np.sqrt(2.0 * np.pi) * h)
        weights = e * density / (K * N)
        H[j * r:(j + 1) * r, j * r:(j + 1) * r] += (Xg[j].T * weights) @ Xg[j]
    return H


def extreme_eigenvalues(H: np.ndarray) -> tuple[float, float]:
    """Smallest and largest eigenvalue of a symmetric matrix (symmetrized first)."""
    values = np.linalg.eigvalsh(0.5 * (H + H.T))
    return float(values[0]), float(values[-1])
