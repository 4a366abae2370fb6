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
  the block is stored feature-major (``StudentProblem.sample_blocks``: each neuron's own
  columns, or the union columns with the row map ``loc`` when K r >= 1.4 p, see
  ``StudentProblem.blocks_use_union``) and the loops stream along samples; with a shared
  support the block's products are BLAS calls. Each block is read from memory once and serves
  both the forward products and the gradient accumulation;
* batched multi-start: M initializations on one data set, on the same sample blocks (one
  feature-major block of ``XU`` for a shared support). Within a block the forward products and
  the gradient are small matrix products written as Numba loops tiled over four starts: each
  load of the data feeds four starts' accumulators. At these shapes (M = 16, r = 25..500,
  B = 256) that beats one BLAS product per block: 112-146% of the OpenBLAS matmul ceiling on
  an AMD EPYC core with OpenBLAS's Haswell kernels, against 50-85% with BLAS products; 66-85%
  of the ceiling on a Zen 4 core with OpenBLAS's AVX-512 kernels (benchmarks/bench_agd.py).

Plain NumPy references of each kernel live in :mod:`sparse_teacher.reference`.

Numba caches compiled code on disk (``cache=True``), keyed on each function's own source file:
after editing this module, delete the ``*.nbi`` / ``*.nbc`` files under ``__pycache__`` so that
the AGD loops in ``agd.py``, which inline these kernels, are recompiled too.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from lottery_common import check_int

from .problem import StudentProblem


def feature_row(G, rows, j, i):
    """Samples of feature i of neuron j in one block: ``G[j, i]`` for a block of per-neuron
    columns G (K, r, B) (``rows`` None), ``G[rows[j, i]]`` for a block of union columns G (p, B)
    (``rows`` = ``loc``)."""
    return G[j, i] if rows is None else G[rows[j, i]]


def tile_row(G, rows, i):
    """Samples of feature i of one neuron in a block: ``G[i]`` for the neuron's own columns
    G (r, B) (``rows`` None), ``G[rows[i]]`` for union columns G (p, B) (``rows`` = ``loc[j]``)."""
    return G[i] if rows is None else G[rows[i]]


def neuron_block(Gb, b, j):
    """Block b as neuron j reads it: ``Gb[b, j]`` (per-neuron layout), ``Gb[b]`` (union)."""
    return Gb[b, j] if Gb.ndim == 4 else Gb[b]


def neuron_rows(rows, j):
    """Neuron j's row map: None (per-neuron layout) or ``rows[j]`` (union)."""
    return None if rows is None else rows[j]


# Numba versions: the layout is chosen from the argument types at compile time, so the
# per-neuron layout pays no indirection (a row map costs 4-8% in the kernels).
@overload(feature_row, inline="always")
def _feature_row_numba(G, rows, j, i):
    if isinstance(rows, types.NoneType):
        return lambda G, rows, j, i: G[j, i]
    return lambda G, rows, j, i: G[rows[j, i]]


@overload(tile_row, inline="always")
def _tile_row_numba(G, rows, i):
    if isinstance(rows, types.NoneType):
        return lambda G, rows, i: G[i]
    return lambda G, rows, i: G[rows[i]]


@overload(neuron_block, inline="always")
def _neuron_block_numba(Gb, b, j):
    if Gb.ndim == 4:
        return lambda Gb, b, j: Gb[b, j]
    return lambda Gb, b, j: Gb[b]


@overload(neuron_rows, inline="always")
def _neuron_rows_numba(rows, j):
    if isinstance(rows, types.NoneType):
        return lambda rows, j: None
    return lambda rows, j: rows[j]


@njit(cache=True)
def _aligned_empty(n):
    """An uninitialized float64 array of n entries starting on a 64-byte boundary. Numba's own
    arrays start on 32 bytes, so every 64-byte vector load of a row would straddle two cache
    lines (about 10-15% slower kernels)."""
    buf = np.empty(n + 8)
    offset = ((-buf.ctypes.data) % 64) // 8
    return buf[offset:offset + n]


@njit(cache=True, fastmath=True)
def _residuals(Z, E, y, base, t0, t1, inv_k, loss):
    """Residuals of one block for S starts, Z (K, S, B) holding z_jt of each start: for samples t
    in [t0, t1), e_st = (1/K) sum_j relu(Z[j, s, t]) - y[base + t], and Z[j, s, t] becomes the
    gradient weight c_jst = e_st 1{Z[j, s, t] > 0}; other samples get c = 0. Adds
    sum_t e_st^2 to ``loss[s]``; ``E`` (S, B) is scratch."""
    K, S, B = Z.shape
    for s in range(S):
        e = E[s]
        for t in range(B):
            e[t] = 0.0
        for j in range(K):
            zj = Z[j, s]
            for t in range(B):
                v = zj[t]
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
        loss[s] += acc
        for j in range(K):
            zj = Z[j, s]
            for t in range(B):
                zj[t] = e[t] if zj[t] > 0.0 else 0.0


@njit(cache=True)
def _scaled(gsum, loss_sum, count, grad):
    """Writes grad = gsum / (K |D|) and returns f_D = loss_sum / (2 |D|) (|D| = count)."""
    K, r = gsum.shape
    scale = 1.0 / (K * count)
    for j in range(K):
        for i in range(r):
            grad[j, i] = gsum[j, i] * scale
    return loss_sum / (2.0 * count)


@njit(cache=True)
def _loss_grad_shared(W, XU, y, start, stop, block, grad):
    """Fused loss and gradient of one start when all neurons read the same coordinates ``XU``
    (N, r); writes ``grad`` (K, r), returns the loss.

    Samples are processed in blocks small enough to stay in cache, so each block is read from
    memory once: Z = X_b W^T and grad += C^T X_b are BLAS products on the same cached block.
    """
    K, r = W.shape
    B = min(block, stop - start)
    inv_k = 1.0 / K
    gacc = np.zeros((K, r))
    Wt = np.ascontiguousarray(W.T)
    Zs = np.empty((B, K))
    Cs = np.empty((B, K))
    Z3 = np.empty((K, 1, B))
    E = np.empty((1, B))
    total = np.zeros(1)
    for b0 in range(start, stop, B):
        nb = min(B, stop - b0)
        np.dot(XU[b0:b0 + nb], Wt, Zs[:nb])
        for t in range(nb):
            for j in range(K):
                Z3[j, 0, t] = Zs[t, j]
        _residuals(Z3, E, y, b0, 0, nb, inv_k, total)
        for t in range(nb):
            for j in range(K):
                Cs[t, j] = Z3[j, 0, t]
        gacc += np.dot(Cs[:nb].T, XU[b0:b0 + nb])
    return _scaled(gacc, total[0], stop - start, grad)


# The forward products keep their order of summation (no reassociation): the tree below is
# what LLVM vectorizes best along samples, eight features per update of z.
_FORWARD_MATH = {"contract", "nsz", "arcp"}


@njit(cache=True, fastmath=_FORWARD_MATH)
def _forward_block(W, G, rows, z):
    """z[j, t] = sum_i W[j, i] x_t[Omega_j][i] for one feature-major block G (see ``feature_row``)."""
    K, r = W.shape
    B = z.shape[1]
    r8 = r - r % 8
    for j in range(K):
        zj = z[j]
        for t in range(B):
            zj[t] = 0.0
        for i in range(0, r8, 8):
            w0, w1, w2, w3 = W[j, i], W[j, i + 1], W[j, i + 2], W[j, i + 3]
            w4, w5, w6, w7 = W[j, i + 4], W[j, i + 5], W[j, i + 6], W[j, i + 7]
            x0, x1 = feature_row(G, rows, j, i), feature_row(G, rows, j, i + 1)
            x2, x3 = feature_row(G, rows, j, i + 2), feature_row(G, rows, j, i + 3)
            x4, x5 = feature_row(G, rows, j, i + 4), feature_row(G, rows, j, i + 5)
            x6, x7 = feature_row(G, rows, j, i + 6), feature_row(G, rows, j, i + 7)
            for t in range(B):
                s01 = w0 * x0[t] + w1 * x1[t]
                s23 = w2 * x2[t] + w3 * x3[t]
                s45 = w4 * x4[t] + w5 * x5[t]
                s67 = w6 * x6[t] + w7 * x7[t]
                zj[t] = zj[t] + ((s01 + s23) + (s45 + s67))
        for i in range(r8, r):
            w0 = W[j, i]
            x0 = feature_row(G, rows, j, i)
            for t in range(B):
                zj[t] += w0 * x0[t]


@njit(cache=True, fastmath=True)
def _backward_block(C, G, rows, g):
    """g[j, i] += sum_t C[j, t] x_t[Omega_j][i] for one feature-major block G (see
    ``feature_row``): eight features at a time share each load of C. Neurons run last to first,
    so the rows that the forward pass touched last are the first ones read again."""
    K, r = g.shape
    B = C.shape[1]
    r8 = r - r % 8
    for j in range(K - 1, -1, -1):
        c = C[j]
        for i in range(0, r8, 8):
            x0, x1 = feature_row(G, rows, j, i), feature_row(G, rows, j, i + 1)
            x2, x3 = feature_row(G, rows, j, i + 2), feature_row(G, rows, j, i + 3)
            x4, x5 = feature_row(G, rows, j, i + 4), feature_row(G, rows, j, i + 5)
            x6, x7 = feature_row(G, rows, j, i + 6), feature_row(G, rows, j, i + 7)
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
            for t in range(B):
                ct = c[t]
                a0 += ct * x0[t]
                a1 += ct * x1[t]
                a2 += ct * x2[t]
                a3 += ct * x3[t]
                a4 += ct * x4[t]
                a5 += ct * x5[t]
                a6 += ct * x6[t]
                a7 += ct * x7[t]
            g[j, i] += a0
            g[j, i + 1] += a1
            g[j, i + 2] += a2
            g[j, i + 3] += a3
            g[j, i + 4] += a4
            g[j, i + 5] += a5
            g[j, i + 6] += a6
            g[j, i + 7] += a7
        for i in range(r8, r):
            x0 = feature_row(G, rows, j, i)
            a0 = 0.0
            for t in range(B):
                a0 += c[t] * x0[t]
            g[j, i] += a0


@njit(cache=True)
def _loss_grad_blocks(W, Gb, rows, y, start, stop, grad):
    """Fused loss and gradient of one start on the sample blocks ``Gb`` and their row map ``rows``
    (``StudentProblem.sample_blocks``, ``block_rows``).

    Per block: the forward products z_j (streaming along the block's samples), the residuals,
    then grad_ji += sum_t c_jt G[j, i, t]; the block is read from memory once and re-read from
    cache. The sample loops always run over the whole block (fixed trip counts vectorize);
    samples outside [start, stop) get c = 0 and no loss.
    """
    K, r = W.shape
    B = Gb.shape[-1]
    inv_k = 1.0 / K
    Z3 = _aligned_empty(K * B).reshape(K, 1, B)
    z = Z3.reshape(K, B)
    E = _aligned_empty(B).reshape(1, B)
    total = np.zeros(1)
    g = np.zeros((K, r))
    for b in range(start // B, (stop - 1) // B + 1):
        base = b * B
        _forward_block(W, Gb[b], rows, z)
        _residuals(Z3, E, y, base, max(start, base) - base, min(stop, base + B) - base, inv_k,
                   total)
        _backward_block(z, Gb[b], rows, g)
    return _scaled(g, total[0], stop - start, grad)


@njit(cache=True)
def _loss_grad_one(W, Xg, Gb, rows, shared, y, start, stop, block, grad):
    """Single-start dispatch: BLAS blocks for a shared support, sample blocks otherwise."""
    if shared:
        return _loss_grad_shared(W, Xg[0], y, start, stop, block, grad)
    return _loss_grad_blocks(W, Gb, rows, y, start, stop, grad)


_NO_XG = np.zeros((1, 1, 1))
_NO_GB = np.zeros((1, 1, 1, 1))


def kernel_inputs(problem: StudentProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(Xg, Gb, rows)`` for the single-start kernel: ``XU[None]`` (1, N, r) for a shared support
    (no copy), or the sample blocks and their row map otherwise; the unused ones are tiny
    placeholders. The batched kernel always reads ``problem.sample_blocks``."""
    if problem.shared_support:
        return problem.XU[None], _NO_GB, None
    return _NO_XG, problem.sample_blocks, problem.block_rows


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


@njit(cache=True, fastmath=_FORWARD_MATH)
def _forward_starts(V, G, rows, Z):
    """Z[m, t] = sum_i V[m, i] x_t[i]: V (S, r) weights of S starts (S a multiple of 4) of one
    neuron, whose features are rows of the block G (see ``tile_row``). Four starts share each
    load of G; z is updated once per four features."""
    S, r = V.shape
    B = Z.shape[1]
    r4 = r - r % 4
    for m0 in range(0, S, 4):
        z0, z1, z2, z3 = Z[m0], Z[m0 + 1], Z[m0 + 2], Z[m0 + 3]
        for t in range(B):
            z0[t] = 0.0
            z1[t] = 0.0
            z2[t] = 0.0
            z3[t] = 0.0
        for i in range(0, r4, 4):
            x0, x1 = tile_row(G, rows, i), tile_row(G, rows, i + 1)
            x2, x3 = tile_row(G, rows, i + 2), tile_row(G, rows, i + 3)
            a0, a1, a2, a3 = V[m0, i], V[m0, i + 1], V[m0, i + 2], V[m0, i + 3]
            b0, b1, b2, b3 = V[m0 + 1, i], V[m0 + 1, i + 1], V[m0 + 1, i + 2], V[m0 + 1, i + 3]
            c0, c1, c2, c3 = V[m0 + 2, i], V[m0 + 2, i + 1], V[m0 + 2, i + 2], V[m0 + 2, i + 3]
            d0, d1, d2, d3 = V[m0 + 3, i], V[m0 + 3, i + 1], V[m0 + 3, i + 2], V[m0 + 3, i + 3]
            for t in range(B):
                g0, g1, g2, g3 = x0[t], x1[t], x2[t], x3[t]
                z0[t] = z0[t] + ((a0 * g0 + a1 * g1) + (a2 * g2 + a3 * g3))
                z1[t] = z1[t] + ((b0 * g0 + b1 * g1) + (b2 * g2 + b3 * g3))
                z2[t] = z2[t] + ((c0 * g0 + c1 * g1) + (c2 * g2 + c3 * g3))
                z3[t] = z3[t] + ((d0 * g0 + d1 * g1) + (d2 * g2 + d3 * g3))
        for i in range(r4, r):
            x0 = tile_row(G, rows, i)
            a0, b0, c0, d0 = V[m0, i], V[m0 + 1, i], V[m0 + 2, i], V[m0 + 3, i]
            for t in range(B):
                g0 = x0[t]
                z0[t] += a0 * g0
                z1[t] += b0 * g0
                z2[t] += c0 * g0
                z3[t] += d0 * g0


@njit(cache=True, fastmath=True)
def _backward_starts(C, G, rows, g):
    """g[m, i] += sum_t C[m, t] x_t[i] for S starts (S a multiple of 4) of one neuron: C (S, B),
    g (S, r), features as rows of the block G (see ``tile_row``). Sixteen sums (four starts x
    four features) stay in registers."""
    S, B = C.shape
    r = g.shape[1]
    r4 = r - r % 4
    for m0 in range(0, S, 4):
        c0, c1, c2, c3 = C[m0], C[m0 + 1], C[m0 + 2], C[m0 + 3]
        for i in range(0, r4, 4):
            x0, x1 = tile_row(G, rows, i), tile_row(G, rows, i + 1)
            x2, x3 = tile_row(G, rows, i + 2), tile_row(G, rows, i + 3)
            s00 = s01 = s02 = s03 = 0.0
            s10 = s11 = s12 = s13 = 0.0
            s20 = s21 = s22 = s23 = 0.0
            s30 = s31 = s32 = s33 = 0.0
            for t in range(B):
                g0, g1, g2, g3 = x0[t], x1[t], x2[t], x3[t]
                e0, e1, e2, e3 = c0[t], c1[t], c2[t], c3[t]
                s00 += e0 * g0
                s01 += e0 * g1
                s02 += e0 * g2
                s03 += e0 * g3
                s10 += e1 * g0
                s11 += e1 * g1
                s12 += e1 * g2
                s13 += e1 * g3
                s20 += e2 * g0
                s21 += e2 * g1
                s22 += e2 * g2
                s23 += e2 * g3
                s30 += e3 * g0
                s31 += e3 * g1
                s32 += e3 * g2
                s33 += e3 * g3
            g[m0, i] += s00
            g[m0, i + 1] += s01
            g[m0, i + 2] += s02
            g[m0, i + 3] += s03
            g[m0 + 1, i] += s10
            g[m0 + 1, i + 1] += s11
            g[m0 + 1, i + 2] += s12
            g[m0 + 1, i + 3] += s13
            g[m0 + 2, i] += s20
            g[m0 + 2, i + 1] += s21
            g[m0 + 2, i + 2] += s22
            g[m0 + 2, i + 3] += s23
            g[m0 + 3, i] += s30
            g[m0 + 3, i + 1] += s31
            g[m0 + 3, i + 2] += s32
            g[m0 + 3, i + 3] += s33
        for i in range(r4, r):
            x0 = tile_row(G, rows, i)
            s0 = s1 = s2 = s3 = 0.0
            for t in range(B):
                g0 = x0[t]
                s0 += c0[t] * g0
                s1 += c1[t] * g0
                s2 += c2[t] * g0
                s3 += c3[t] * g0
            g[m0, i] += s0
            g[m0 + 1, i] += s1
            g[m0 + 2, i] += s2
            g[m0 + 3, i] += s3


@njit(cache=True, fastmath=True)
def _loss_grad_batch(W, Gb, rows, shared, y, start, stop, grad, loss):
    """Loss and gradient of M starts W (M, K, r) on one data set; writes grad (M, K, r), loss (M,).

    ``Gb`` and ``rows`` are ``StudentProblem.sample_blocks`` and ``block_rows``.
    Per block: Z_j = W_j G_j (M x B) for each neuron (one product over all K M rows when every
    neuron reads the same coordinates), the residuals of each start, then grad_j += C_j G_j^T.
    The products are register-tiled over four starts, so every load of the block serves several
    starts (``_forward_starts``, ``_backward_starts``).
    """
    M, K, r = W.shape
    B = Gb.shape[-1]
    inv_k = 1.0 / K
    Mt = M + (-M) % 4  # whole tiles of four starts; the padding starts are zero and discarded
    Wk = np.zeros((K, Mt, r))
    for j in range(K):
        for m in range(M):
            for i in range(r):
                Wk[j, m, i] = W[m, j, i]
    Z = _aligned_empty(K * Mt * B).reshape(K, Mt, B)
    gk = np.zeros((K, Mt, r))
    E = _aligned_empty(Mt * B).reshape(Mt, B)
    sums = np.zeros(Mt)
    for b in range(start // B, (stop - 1) // B + 1):
        base = b * B
        t0 = max(start, base) - base
        t1 = min(stop, base + B) - base
        if shared:
            _forward_starts(Wk.reshape(K * Mt, r), neuron_block(Gb, b, 0), neuron_rows(rows, 0),
                            Z.reshape(K * Mt, B))
        else:
            for j in range(K):
                _forward_starts(Wk[j], neuron_block(Gb, b, j), neuron_rows(rows, j), Z[j])
        _residuals(Z, E, y, base, t0, t1, inv_k, sums)
        if shared:
            _backward_starts(Z.reshape(K * Mt, B), neuron_block(Gb, b, 0), neuron_rows(rows, 0),
                             gk.reshape(K * Mt, r))
        else:
            for j in range(K):
                _backward_starts(Z[j], neuron_block(Gb, b, j), neuron_rows(rows, j), gk[j])
    count = stop - start
    scale = 1.0 / (K * count)
    for m in range(M):
        for j in range(K):
            for i in range(r):
                grad[m, j, i] = gk[j, m, i] * scale
        loss[m] = sums[m] / (2.0 * count)


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
    Xg, Gb, rows = kernel_inputs(problem)
    value = _loss_grad_one(W, Xg, Gb, rows, problem.shared_support, problem.y, start, stop,
                           single_block_size(problem), grad)
    return float(value), grad


def gradient(problem: StudentProblem, W: np.ndarray, start: int = 0,
             stop: int | None = None) -> np.ndarray:
    """Gradient (K, r) of the empirical loss."""
    return loss_and_gradient(problem, W, start, stop)[1]


def loss_and_gradient_batch(problem: StudentProblem, W: np.ndarray, start: int = 0,
                            stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Losses (M,) and gradients (M, K, r) of M starts W (M, K, r) sharing one data set."""
    W = problem.check_batch(W)
    start, stop = _sample_range(problem, start, stop)
    grad = np.empty_like(W)
    losses = np.empty(W.shape[0])
    _loss_grad_batch(W, problem.sample_blocks, problem.block_rows, problem.shared_support,
                     problem.y, start, stop, grad, losses)
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
