"""Numba kernels for the empirical loss of the sparse student, its gradient and Hessian.

Zhang et al. (NeurIPS 2021), Eq. (2)-(3): with ``z_nj = w_j . x_n[Omega_j]`` and residual
``e_n = (1/K) sum_j relu(z_nj) - y_n`` over the samples D = [start, stop),

    f_D(W)       = 1/(2|D|) sum_n e_n^2,
    grad_j f_D   = 1/(K|D|) sum_n e_n 1{z_nj > 0} x_n[Omega_j],                 (relu'(0) := 0)
    H(W) V       = 1/|D| sum_n J_n (J_n . V),   J_n[j] = (1/K) 1{z_nj > 0} x_n[Omega_j].

The Hessian formula is exact wherever the loss is twice differentiable: relu'' = 0 away from the
kinks, so the Hessian is the Gauss-Newton matrix (the paper evaluates it at W*).

Inputs come from :class:`sparse_teacher.problem.StudentProblem`: ``XU`` (N, p) holds the union of
the supports and ``loc`` (K, r) the positions of each support inside it. All arithmetic is float64.

* single start: one fused pass over the samples in cache-sized blocks. With distinct supports
  the block is stored feature-major (``StudentProblem.sample_blocks``) and the loops stream
  along samples; with a shared support the block's products are BLAS calls. Each block is read
  from memory once and serves both the forward products and the gradient accumulation;
* batched multi-start: M initializations on one data set. Samples are processed in blocks whose
  gathered inputs stay in cache; within a block the forward products and the gradient are matrix
  products (BLAS through ``np.dot``), so the M starts share every read of the data.

Plain NumPy references of each kernel live in :mod:`sparse_teacher.reference`.

Numba caches compiled code on disk (``cache=True``), keyed on each function's own source file:
after editing this module, delete the ``*.nbi`` / ``*.nbc`` files under ``__pycache__`` so that
the AGD loops in ``agd.py``, which inline these kernels, are recompiled too.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._validation import check_int
from .problem import StudentProblem

BLOCK_SAMPLES = 512  # samples per block in the batched kernel (128..3000 tried: 512-1024 best)


@njit(cache=True, inline="always")
def _residuals(Z, y, base, t0, t1, inv_k):
    """Residuals of one block: for samples t in [t0, t1), e = (1/K) sum_j relu(Z[j, t]) - y[base + t]
    and Z[j, t] becomes the gradient weight c_jt = e 1{Z[j, t] > 0}; other columns become 0.
    Returns sum e^2 over the block."""
    K, B = Z.shape
    loss = 0.0
    for t in range(B):
        if t < t0 or t >= t1:
            for j in range(K):
                Z[j, t] = 0.0
            continue
        s = 0.0
        for j in range(K):
            v = Z[j, t]
            if v > 0.0:
                s += v
        e = s * inv_k - y[base + t]
        loss += e * e
        for j in range(K):
            Z[j, t] = e if Z[j, t] > 0.0 else 0.0
    return loss


@njit(cache=True)
def _loss_grad_single(W, Xg, shared, y, start, stop, block, grad):
    """Fused loss and gradient of one start; writes ``grad`` (K, r), returns the loss.

    ``Xg`` holds the gathered inputs (K, N, r), or (1, N, r) when all neurons share a support.
    Samples are processed in blocks small enough to stay in cache, so each block is read from
    memory once: the forward products z = G_j w_j and the gradient sums G_j^T c_j are BLAS calls
    on the same cached block (one matrix product over all K neurons for a shared support).
    """
    K, r = W.shape
    B = min(block, stop - start)
    inv_k = 1.0 / K
    gacc = np.zeros((K, r))
    loss = 0.0
    if shared:
        Wt = np.ascontiguousarray(W.T)
        Zs = np.empty((B, K))
        Cs = np.empty((B, K))
    Z = np.empty((K, B))
    for b0 in range(start, stop, B):
        nb = min(B, stop - b0)
        if shared:
            np.dot(Xg[0, b0:b0 + nb], Wt, Zs[:nb])
            for t in range(nb):
                for j in range(K):
                    Z[j, t] = Zs[t, j]
        else:
            for j in range(K):
                np.dot(Xg[j, b0:b0 + nb], W[j], Z[j, :nb])
        loss += _residuals(Z, y, b0, 0, nb, inv_k)
        if shared:
            for t in range(nb):
                for j in range(K):
                    Cs[t, j] = Z[j, t]
            gacc += np.dot(Cs[:nb].T, Xg[0, b0:b0 + nb])
        else:
            for j in range(K):
                gacc[j] += np.dot(Z[j, :nb], Xg[j, b0:b0 + nb])
    count = stop - start
    scale = 1.0 / (K * count)
    for j in range(K):
        for i in range(r):
            grad[j, i] = gacc[j, i] * scale
    return loss / (2.0 * count)


@njit(cache=True, fastmath=True)
def _loss_grad_blocks(W, Gb, y, start, stop, grad):
    """Fused loss and gradient of one start on sample blocks ``Gb`` (n_blocks, K, r, B).

    Per block: z_j = sum_i w_ji G[j, i, :] streams along the block's samples four features at a
    time, then the residuals, then grad_ji += sum_t c_jt G[j, i, t]; the block is read from memory
    once and re-read from cache. The sample loops always run over the whole block (fixed trip
    counts vectorize); samples outside [start, stop) get c = 0 and no loss.
    """
    K, r = W.shape
    B = Gb.shape[3]
    inv_k = 1.0 / K
    z = np.empty((K, B))
    g = np.zeros((K, r))
    r4 = r - r % 4
    loss = 0.0
    for b in range(start // B, (stop - 1) // B + 1):
        base = b * B
        t0 = max(start, base) - base
        t1 = min(stop, base + B) - base
        for j in range(K):
            zj = z[j]
            for t in range(B):
                zj[t] = 0.0
            for i in range(0, r4, 4):
                w0 = W[j, i]
                w1 = W[j, i + 1]
                w2 = W[j, i + 2]
                w3 = W[j, i + 3]
                x0 = Gb[b, j, i]
                x1 = Gb[b, j, i + 1]
                x2 = Gb[b, j, i + 2]
                x3 = Gb[b, j, i + 3]
                for t in range(B):
                    zj[t] += w0 * x0[t] + w1 * x1[t] + w2 * x2[t] + w3 * x3[t]
            for i in range(r4, r):
                w0 = W[j, i]
                x0 = Gb[b, j, i]
                for t in range(B):
                    zj[t] += w0 * x0[t]
        loss += _residuals(z, y, base, t0, t1, inv_k)
        for j in range(K):
            c = z[j]
            for i in range(0, r4, 4):
                x0 = Gb[b, j, i]
                x1 = Gb[b, j, i + 1]
                x2 = Gb[b, j, i + 2]
                x3 = Gb[b, j, i + 3]
                a0 = 0.0
                a1 = 0.0
                a2 = 0.0
                a3 = 0.0
                for t in range(B):
                    ct = c[t]
                    a0 += ct * x0[t]
                    a1 += ct * x1[t]
                    a2 += ct * x2[t]
                    a3 += ct * x3[t]
                g[j, i] += a0
                g[j, i + 1] += a1
                g[j, i + 2] += a2
                g[j, i + 3] += a3
            for i in range(r4, r):
                x0 = Gb[b, j, i]
                a0 = 0.0
                for t in range(B):
                    a0 += c[t] * x0[t]
                g[j, i] += a0
    count = stop - start
    scale = 1.0 / (K * count)
    for j in range(K):
        for i in range(r):
            grad[j, i] = g[j, i] * scale
    return loss / (2.0 * count)


@njit(cache=True)
def _loss_grad_one(W, Xg, Gb, shared, y, start, stop, block, grad):
    """Single-start dispatch: BLAS blocks for a shared support, sample blocks otherwise."""
    if shared:
        return _loss_grad_single(W, Xg, True, y, start, stop, block, grad)
    return _loss_grad_blocks(W, Gb, y, start, stop, grad)


_NO_XG = np.zeros((1, 1, 1))
_NO_GB = np.zeros((1, 1, 1, 1))


def kernel_inputs(problem: StudentProblem) -> tuple[np.ndarray, np.ndarray]:
    """``(Xg, Gb)`` for the kernels: ``XU[None]`` (1, N, r) for a shared support (no copy), or
    the sample blocks (n_blocks, K, r, B) otherwise; the unused one is a tiny placeholder."""
    if problem.shared_support:
        return problem.XU[None], _NO_GB
    return _NO_XG, problem.sample_blocks


def single_block_size(problem: StudentProblem) -> int:
    """Samples per block of the single-start kernel: the block's inputs fit in ~512 KB of cache."""
    rows = problem.r if problem.shared_support else problem.K * problem.r
    return int(max(128, min(4096, (65536 // rows) // 16 * 16)))


@njit(cache=True)
def _loss_single(W, XU, loc, y, start, stop, shared):
    K, r = W.shape
    loss = 0.0
    for n in range(start, stop):
        row = XU[n]
        s = 0.0
        for j in range(K):
            acc = 0.0
            if shared:
                for i in range(r):
                    acc += W[j, i] * row[i]
            else:
                for i in range(r):
                    acc += W[j, i] * row[loc[j, i]]
            if acc > 0.0:
                s += acc
        e = s / K - y[n]
        loss += e * e
    return loss / (2.0 * (stop - start))


@njit(cache=True, fastmath=True)
def _batch_blocks(W, Gb, y, start, stop, grad, loss):
    """Batched loss and gradient on sample blocks ``Gb`` (n_blocks, K, r, B), distinct supports.

    Per block and neuron: Z_j = W_j G_j (M x B) and grad_j += C_j G_j^T, matrix products in which
    the M starts share each read of the block; the residual loops stream along samples.
    Writes unscaled sums into ``grad`` (M, K, r) and ``loss`` (M,).
    """
    M, K, r = W.shape
    B = Gb.shape[3]
    inv_k = 1.0 / K
    Wk = np.empty((K, M, r))
    for j in range(K):
        for m in range(M):
            for i in range(r):
                Wk[j, m, i] = W[m, j, i]
    Z = np.empty((K, M, B))
    gk = np.zeros((K, M, r))
    e = np.empty(B)
    for b in range(start // B, (stop - 1) // B + 1):
        base = b * B
        t0 = max(start, base) - base
        t1 = min(stop, base + B) - base
        for j in range(K):
            np.dot(Wk[j], Gb[b, j], Z[j])
        for m in range(M):
            for t in range(B):
                e[t] = 0.0
            for j in range(K):
                zr = Z[j, m]
                for t in range(B):
                    v = zr[t]
                    e[t] += v if v > 0.0 else 0.0
            acc = 0.0
            for t in range(t0, t1):
                ev = e[t] * inv_k - y[base + t]
                e[t] = ev
                acc += ev * ev
            for t in range(t0):
                e[t] = 0.0
            for t in range(t1, B):
                e[t] = 0.0
            loss[m] += acc
            for j in range(K):
                zr = Z[j, m]
                for t in range(B):
                    zr[t] = e[t] if zr[t] > 0.0 else 0.0
        for j in range(K):
            gk[j] += np.dot(Z[j], Gb[b, j].T)
    for m in range(M):
        for j in range(K):
            for i in range(r):
                grad[m, j, i] = gk[j, m, i]


@njit(cache=True)
def _loss_grad_batch(W, Xg, Gb, y, start, stop, shared, block, grad, loss):
    """Loss and gradient of M starts W (M, K, r) on one data set; writes grad (M, K, r), loss (M,).

    Shared support: per block of samples Z = X_b Wt (B x K M) and grad += C^T X_b, matrix
    products in which every start and neuron shares each read of the block. Distinct supports:
    ``_batch_blocks`` on the feature-major sample blocks.
    """
    M, K, r = W.shape
    inv_k = 1.0 / K
    B = min(block, stop - start)
    KM = K * M
    loss[:] = 0.0
    if shared:
        # column j*M + m of Wt is W[m, j, :]
        Wt = np.empty((r, KM))
        for j in range(K):
            for m in range(M):
                for i in range(r):
                    Wt[i, j * M + m] = W[m, j, i]
        gsum = np.zeros((KM, r))
        Z = np.empty((B, KM))
        for b0 in range(start, stop, B):
            nb = min(B, stop - b0)
            Xb = Xg[0, b0:b0 + nb]
            Zb = Z[:nb]
            np.dot(Xb, Wt, Zb)
            for t in range(nb):
                yt = y[b0 + t]
                for m in range(M):
                    s = 0.0
                    for j in range(K):
                        v = Zb[t, j * M + m]
                        if v > 0.0:
                            s += v
                    e = s * inv_k - yt
                    loss[m] += e * e
                    for j in range(K):
                        Zb[t, j * M + m] = e if Zb[t, j * M + m] > 0.0 else 0.0
            gsum += np.dot(Zb.T, Xb)
        for j in range(K):
            for m in range(M):
                for i in range(r):
                    grad[m, j, i] = gsum[j * M + m, i]
    else:
        _batch_blocks(W, Gb, y, start, stop, grad, loss)
    count = stop - start
    scale = 1.0 / (K * count)
    for m in range(M):
        for j in range(K):
            for i in range(r):
                grad[m, j, i] *= scale
        loss[m] /= 2.0 * count


@njit(cache=True)
def _hvp(W, V, XU, loc, start, stop, shared):
    """Gauss-Newton Hessian-vector product H(W) V for one start (V and the result are (K, r))."""
    K, r = W.shape
    out = np.zeros((K, r))
    active = np.empty(K, dtype=np.bool_)
    inv_k = 1.0 / K
    for n in range(start, stop):
        row = XU[n]
        a = 0.0
        for j in range(K):
            zw = 0.0
            zv = 0.0
            for i in range(r):
                x = row[i] if shared else row[loc[j, i]]
                zw += W[j, i] * x
                zv += V[j, i] * x
            active[j] = zw > 0.0
            if active[j]:
                a += zv
        a *= inv_k * inv_k
        for j in range(K):
            if active[j]:
                for i in range(r):
                    out[j, i] += a * (row[i] if shared else row[loc[j, i]])
    return out / (stop - start)


@njit(cache=True)
def _jacobian(W, XU, loc, start, stop, shared):
    """Rows J_n (flattened over (j, i)) of the residual Jacobian, shape (|D|, K r)."""
    K, r = W.shape
    J = np.zeros((stop - start, K * r))
    for n in range(start, stop):
        row = XU[n]
        for j in range(K):
            zw = 0.0
            for i in range(r):
                zw += W[j, i] * (row[i] if shared else row[loc[j, i]])
            if zw > 0.0:
                for i in range(r):
                    J[n - start, j * r + i] = (row[i] if shared else row[loc[j, i]]) / K
    return J


def _sample_range(problem: StudentProblem, start: int, stop: int | None) -> tuple[int, int]:
    stop = problem.N if stop is None else stop
    start = check_int("start", start, minimum=0)
    stop = check_int("stop", stop, minimum=start + 1, maximum=problem.N)
    return start, stop


def loss(problem: StudentProblem, W: np.ndarray, start: int = 0, stop: int | None = None) -> float:
    """Empirical loss f_D(W) on samples [start, stop) (all samples by default)."""
    W = problem.check_weights(W)
    start, stop = _sample_range(problem, start, stop)
    return float(_loss_single(W, problem.XU, problem.loc, problem.y, start, stop,
                              problem.shared_support))


def loss_and_gradient(problem: StudentProblem, W: np.ndarray, start: int = 0,
                      stop: int | None = None) -> tuple[float, np.ndarray]:
    """Loss and gradient (K, r) of one start, in one fused pass over the samples."""
    W = problem.check_weights(W)
    start, stop = _sample_range(problem, start, stop)
    grad = np.empty_like(W)
    Xg, Gb = kernel_inputs(problem)
    value = _loss_grad_one(W, Xg, Gb, problem.shared_support, problem.y, start, stop,
                           single_block_size(problem), grad)
    return float(value), grad


def gradient(problem: StudentProblem, W: np.ndarray, start: int = 0,
             stop: int | None = None) -> np.ndarray:
    """Gradient (K, r) of the empirical loss."""
    return loss_and_gradient(problem, W, start, stop)[1]


def loss_and_gradient_batch(problem: StudentProblem, W: np.ndarray, start: int = 0,
                            stop: int | None = None,
                            block: int = BLOCK_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """Losses (M,) and gradients (M, K, r) of M starts W (M, K, r) sharing one data set."""
    W = problem.check_batch(W)
    start, stop = _sample_range(problem, start, stop)
    block = check_int("block", block, minimum=1)
    grad = np.empty_like(W)
    losses = np.empty(W.shape[0])
    Xg, Gb = kernel_inputs(problem)
    _loss_grad_batch(W, Xg, Gb, problem.y, start, stop, problem.shared_support, block, grad,
                     losses)
    return losses, grad


def hessian_vector_product(problem: StudentProblem, W: np.ndarray, V: np.ndarray,
                           start: int = 0, stop: int | None = None) -> np.ndarray:
    """H(W) V for the (Gauss-Newton, exact a.e.) Hessian of f_D; V has the shape of W."""
    W = problem.check_weights(W)
    V = problem.check_weights(V, name="V")
    start, stop = _sample_range(problem, start, stop)
    return _hvp(W, V, problem.XU, problem.loc, start, stop, problem.shared_support)


def hessian(problem: StudentProblem, W: np.ndarray, start: int = 0,
            stop: int | None = None) -> np.ndarray:
    """The full (K r, K r) Hessian, index (j, i) -> j * r + i. Small problems only."""
    W = problem.check_weights(W)
    start, stop = _sample_range(problem, start, stop)
    size = W.size
    if size > 4000:
        raise ValueError(f"hessian forms a (K r)^2 matrix; K r = {size} is too large (allowed: "
                         f"<= 4000). Use hessian_vector_product with an iterative eigensolver.")
    J = _jacobian(W, problem.XU, problem.loc, start, stop, problem.shared_support)
    return (J.T @ J) / (stop - start)
