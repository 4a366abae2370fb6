"""Plain NumPy references of the kernels, written as a careful NumPy user would.

They work on the gathered inputs ``Xg`` (K, N, r) = ``x_n[Omega_j]`` (``StudentProblem.gathered``)
with batched ``matmul``. Tests compare the Numba kernels against them; the benchmark uses them as
the baseline.
"""

from __future__ import annotations

import numpy as np


def loss_and_gradient(W: np.ndarray, Xg: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """f(W) and grad f(W) for one start W (K, r)."""
    K, N, _ = Xg.shape
    Z = np.matmul(Xg, W[:, :, None])[:, :, 0]  # (K, N)
    e = np.maximum(Z, 0.0).mean(axis=0) - y
    C = (Z > 0) * e  # (K, N)
    grad = np.matmul(C[:, None, :], Xg)[:, 0, :] / (K * N)
    return float(e @ e / (2 * N)), grad


def loss_and_gradient_batch(W: np.ndarray, Xg: np.ndarray,
                            y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Losses (M,) and gradients (M, K, r) for M starts W (M, K, r)."""
    K, N, _ = Xg.shape
    Z = np.matmul(Xg[None], W[:, :, :, None])[..., 0]  # (M, K, N)
    e = np.maximum(Z, 0.0).mean(axis=1) - y  # (M, N)
    C = (Z > 0) * e[:, None, :]
    grad = np.matmul(C[:, :, None, :], Xg[None])[:, :, 0, :] / (K * N)
    return np.einsum("mn,mn->m", e, e) / (2 * N), grad


def hessian(W: np.ndarray, Xg: np.ndarray) -> np.ndarray:
    """Gauss-Newton Hessian (K r, K r) = (1/N) sum_n J_n J_n^T."""
    K, N, r = Xg.shape
    Z = np.einsum("knr,kr->kn", Xg, W)
    J = ((Z > 0)[:, :, None] * Xg / K).transpose(1, 0, 2).reshape(N, K * r)
    return J.T @ J / N


def hessian_vector_product(W: np.ndarray, V: np.ndarray, Xg: np.ndarray) -> np.ndarray:
    """H(W) V without forming H."""
    K, N, r = Xg.shape
    Z = np.einsum("knr,kr->kn", Xg, W)
    act = Z > 0
    a = (act * np.einsum("knr,kr->kn", Xg, V)).sum(axis=0) / K**2  # (N,)
    return np.einsum("kn,knr->kr", act * a, Xg) / N
