"""Accelerated gradient descent (heavy-ball momentum), Algorithm 1 of Zhang et al. (NeurIPS 2021).

    W(t+1) = W(t) - eta * grad f_{D_t}(W(t)) + beta * (W(t) - W(t-1)),      W(-1) := W(0).

``beta = 0`` is plain gradient descent. ``D_t`` is the whole sample by default; with
``partition = T`` the samples are cut into T disjoint consecutive blocks and iteration t uses block
``t mod T`` (the paper's fresh-samples variant; samples are i.i.d., so consecutive blocks are
disjoint random subsets).

Stopping (the paper's experiments, Sec. 5): ``||W(t+1) - W(t)||_F / ||W(t)||_F < tol`` or ``max_iter``
iterations. Divergence (non-finite values, or the loss growing past ``divergence_factor`` times its
initial value) stops the run with a flag. Success: ``||W - W*||_F / ||W*||_F < 1e-4``.

Outcome labels tell a slow run from a failed one (the iteration cap never decides by itself):

* ``success``  relative error below the success threshold;
* ``slow``     stopped by ``max_iter`` while the error still falls at a linear rate nu < 1 fast
               enough to reach the threshold within ``SLOW_HORIZON`` times the iterations run
               so far (``iterations_to_success`` projects how many more it needs);
* ``stalled``  stopped with the error no longer falling (a spurious point, or a noise floor);
* ``diverged`` non-finite values or loss blow-up.

The loops run inside Numba; the single-start and the batched (M starts on one data set) versions
advance every start by the same rule, so a batch equals a loop of single starts up to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from lottery_common import as_generator, check_array, check_float, check_int
from lottery_common import memory as _memory
from lottery_common.memory import check_memory

from .kernels import (
    _loss_grad_batch,
    _loss_grad_one,
    kernel_inputs,
    single_block_size,
)
from .problem import StudentProblem

SUCCESS_THRESHOLD = 1e-4
RATE_WINDOW = 200  # iterations used to fit the final linear rate
SLOW_HORIZON = 3.0  # a capped run is "slow" (not "stalled") if it would succeed within 3x more

_RUNNING, _CONVERGED, _DIVERGED, _MAX_ITER = 0, 1, 2, 3
_STATUS = {_CONVERGED: "converged", _DIVERGED: "diverged", _MAX_ITER: "max_iter"}


@dataclass(frozen=True)
class AGDResult:
    """What one AGD run returns. Histories have one entry per iterate W(0), ..., W(n_iter)."""

    W: np.ndarray
    n_iter: int
    status: str  # "converged" (stopping rule), "max_iter" or "diverged"
    loss_history: np.ndarray
    rel_error_history: np.ndarray | None
    eta: float
    beta: float

    @property
    def converged(self) -> bool:
        return self.status == "converged"

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    @property
    def rel_error(self) -> float | None:
        """Final ``||W - W*||_F / ||W*||_F`` (None without W*)."""
        if self.rel_error_history is None:
            return None
        return float(self.rel_error_history[-1])

    @property
    def success(self) -> bool | None:
        err = self.rel_error
        return None if err is None else bool(np.isfinite(err) and err < SUCCESS_THRESHOLD)

    @property
    def rate(self) -> float | None:
        """Linear rate nu fitted to the last ``RATE_WINDOW`` iterations of the error history."""
        if self.rel_error_history is None:
            return None
        return linear_rate(self.rel_error_history)

    @property
    def outcome(self) -> str | None:
        """``success``, ``slow``, ``stalled`` or ``diverged`` (see the module docstring)."""
        if self.rel_error_history is None:
            return None
        if self.diverged:
            return "diverged"
        if self.success:
            return "success"
        to_go = self.iterations_to_success
        if self.status == "max_iter" and to_go is not None and to_go <= SLOW_HORIZON * self.n_iter:
            return "slow"
        return "stalled"

    @property
    def iterations_to_success(self) -> float | None:
        """Projected extra iterations to reach the success threshold at the fitted rate."""
        err, nu = self.rel_error, self.rate
        if err is None or nu is None:
            return None
        if err < SUCCESS_THRESHOLD:
            return 0.0
        if not nu < 1.0 or nu <= 0.0:
            return float("inf")
        return float(np.log(SUCCESS_THRESHOLD / err) / np.log(nu))


def linear_rate(history: np.ndarray, window: int = RATE_WINDOW) -> float | None:
    """Fit ``e(t) ~ C nu^t`` on the last ``window`` finite positive entries (least squares on log e).

    The floor reached by the stopping rule (errors ~1e-8/(1 - nu)) is excluded by only using
    entries above 1e-12. Returns None when fewer than 3 usable points remain.
    """
    h = np.asarray(history, dtype=np.float64)
    h = h[np.isfinite(h) & (h > 1e-12)]
    h = h[-window:]
    if h.size < 3:
        return None
    t = np.arange(h.size, dtype=np.float64)
    slope = np.polyfit(t, np.log(h), 1)[0]
    return float(np.exp(slope))


def fit_rate(history: np.ndarray, start: float = 1e-1, stop: float = 1e-6) -> float | None:
    """Linear rate fitted on the part of a decreasing error history between ``start`` and ``stop``.

    This is the convergence rate of Fig. 3 of the paper: log-error is linear in the iteration in
    the local-convergence phase; the first transient and the floor set by the stopping rule are cut.
    """
    h = np.asarray(history, dtype=np.float64)
    idx = np.nonzero(np.isfinite(h) & (h <= start) & (h >= stop))[0]
    if idx.size < 3:
        return None
    t = idx.astype(np.float64)
    slope = np.polyfit(t, np.log(h[idx]), 1)[0]
    return float(np.exp(slope))


@njit(cache=True)
def _agd_single(W0, Xg, Gb, rows, y, shared, block, eta, beta, tol, max_iter, T, W_star, track,
                divergence_factor, loss_hist, err_hist):
    K, r = W0.shape
    N = y.shape[0]
    size = N // T
    W = W0.copy()
    W_prev = W0.copy()
    grad = np.empty_like(W0)
    W_new = np.empty_like(W0)
    star_norm = np.sqrt(np.sum(W_star * W_star)) if track else 1.0
    status = _MAX_ITER
    n_iter = max_iter
    loss0 = 0.0
    for t in range(max_iter + 1):
        b = t % T
        start = b * size
        stop = N if b == T - 1 else start + size
        value = _loss_grad_one(W, Xg, Gb, rows, shared, y, start, stop, block, grad)
        loss_hist[t] = value
        if track:
            err_hist[t] = np.sqrt(np.sum((W - W_star) ** 2)) / star_norm
        if t == 0:
            loss0 = value
        if not np.isfinite(value) or value > divergence_factor * max(loss0, 1e-300):
            status = _DIVERGED
            n_iter = t
            break
        if t == max_iter:
            break
        step = 0.0
        norm = 0.0
        finite = True
        for j in range(K):
            for i in range(r):
                w = W[j, i]
                new = w - eta * grad[j, i] + beta * (w - W_prev[j, i])
                if not np.isfinite(new):
                    finite = False
                W_new[j, i] = new
                step += (new - w) ** 2
                norm += w * w
        W_prev[:] = W
        W[:] = W_new
        if not finite:
            status = _DIVERGED
            n_iter = t + 1
            loss_hist[t + 1] = np.inf
            if track:
                err_hist[t + 1] = np.inf
            break
        if np.sqrt(step) < tol * max(np.sqrt(norm), 1e-300):
            status = _CONVERGED
            n_iter = t + 1
            loss_hist[t + 1] = _loss_grad_one(W, Xg, Gb, rows, shared, y, start, stop, block, grad)
            if track:
                err_hist[t + 1] = np.sqrt(np.sum((W - W_star) ** 2)) / star_norm
            break
    return W, n_iter, status


@njit(cache=True)
def _agd_batch(W0, Gb, rows, shared, y, eta, beta, tol, max_iter, T, W_star, track,
               divergence_factor, loss_hist, err_hist, n_iters, statuses, W_out):
    M, K, r = W0.shape
    N = y.shape[0]
    nb = N // T
    W = W0.copy()
    W_prev = W0.copy()
    grad = np.empty_like(W0)
    losses = np.empty(M)
    loss0 = np.zeros(M)
    active = np.arange(M)
    n_active = M
    star_norm = np.sqrt(np.sum(W_star * W_star)) if track else 1.0
    for m in range(M):
        statuses[m] = _RUNNING
    for t in range(max_iter + 1):
        b = t % T
        start = b * nb
        stop = N if b == T - 1 else start + nb
        Wa = W[:n_active]
        _loss_grad_batch(Wa, Gb, rows, shared, y, start, stop, grad[:n_active], losses[:n_active])
        keep = 0
        for a in range(n_active):
            m = active[a]
            value = losses[a]
            loss_hist[m, t] = value
            if track:
                err_hist[m, t] = np.sqrt(np.sum((W[a] - W_star) ** 2)) / star_norm
            if t == 0:
                loss0[m] = value
            done = False
            if not np.isfinite(value) or value > divergence_factor * max(loss0[m], 1e-300):
                statuses[m] = _DIVERGED
                n_iters[m] = t
                done = True
            elif t == max_iter:
                statuses[m] = _MAX_ITER
                n_iters[m] = t
                done = True
            else:
                step = 0.0
                norm = 0.0
                finite = True
                for j in range(K):
                    for i in range(r):
                        w = W[a, j, i]
                        new = w - eta * grad[a, j, i] + beta * (w - W_prev[a, j, i])
                        if not np.isfinite(new):
                            finite = False
                        W_prev[a, j, i] = w
                        W[a, j, i] = new
                        step += (new - w) ** 2
                        norm += w * w
                if not finite:
                    statuses[m] = _DIVERGED
                    n_iters[m] = t + 1
                    loss_hist[m, t + 1] = np.inf
                    if track:
                        err_hist[m, t + 1] = np.inf
                    done = True
                elif np.sqrt(step) < tol * max(np.sqrt(norm), 1e-300):
                    statuses[m] = _CONVERGED
                    n_iters[m] = t + 1
                    one = np.empty((1, K, r))
                    one[0] = W[a]
                    g1 = np.empty((1, K, r))
                    l1 = np.empty(1)
                    _loss_grad_batch(one, Gb, rows, shared, y, start, stop, g1, l1)
                    loss_hist[m, t + 1] = l1[0]
                    if track:
                        err_hist[m, t + 1] = np.sqrt(np.sum((W[a] - W_star) ** 2)) / star_norm
                    done = True
            if done:
                W_out[m] = W[a]
            else:
                if keep != a:
                    W[keep] = W[a]
                    W_prev[keep] = W_prev[a]
                active[keep] = m
                keep += 1
        n_active = keep
        if n_active == 0:
            break


def _check_options(problem, eta, beta, tol, max_iter, partition, divergence_factor, W_star,
                   starts=None):
    eta = check_float("eta", eta, low=0.0, low_open=True)
    beta = check_float("beta", beta, low=0.0, high=1.0, high_open=True)
    tol = check_float("tol", tol, low=0.0)
    max_iter = check_int("max_iter", max_iter, minimum=0)
    _check_history_memory(max_iter, starts, W_star is not None)
    divergence_factor = check_float("divergence_factor", divergence_factor, low=1.0,
                                    low_open=True)
    T = 1 if partition is None else check_int("partition", partition, minimum=1,
                                               maximum=problem.N)
    if W_star is None:
        W_star_arr, track = np.zeros((problem.K, problem.r)), False
    else:
        W_star_arr, track = check_array("W_star", W_star, shape=(problem.K, problem.r)), True
        if not np.any(W_star_arr):
            raise ValueError("W_star must not be all zeros (the relative error divides by its norm)")
    return eta, beta, tol, max_iter, T, divergence_factor, W_star_arr, track


def _check_history_memory(max_iter: int, starts: int | None, track: bool) -> None:
    """The histories hold (starts or 1) x (max_iter + 1) doubles each (loss, and the error when
    W* is given); refuse them before allocating when they exceed ``MEMORY_BUDGET``."""
    rows = 1 if starts is None else starts
    arrays = 2 if track else 1
    names = "loss and error histories" if track else "loss history"
    each = " each" if track else ""
    if starts is None:
        what = f"run_agd: max_iter = {max_iter} ({names} of {max_iter + 1} doubles{each})"
    else:
        what = (f"run_agd_multistart: M = {starts} starts and max_iter = {max_iter} ({names} of "
                f"{starts} x {max_iter + 1} doubles{each})")
    cap = int(_memory.MEMORY_BUDGET // (8 * arrays * rows)) - 1  # read at call time
    instead = f"use max_iter <= {cap}" + ("" if starts is None else " or fewer starts per call")
    check_memory(what, 8.0 * arrays * rows * (max_iter + 1), instead)


def _histories(rows: int | None, max_iter: int, track: bool) -> tuple[np.ndarray, np.ndarray]:
    """NaN-filled loss and error histories; the error history is a stub without W*."""
    shape = (max_iter + 1,) if rows is None else (rows, max_iter + 1)
    err_shape = shape if track else shape[:-1] + (1,)
    return np.full(shape, np.nan), np.full(err_shape, np.nan)


def run_agd(problem: StudentProblem, W0: np.ndarray, *, eta: float = 0.5, beta: float = 0.2,
            tol: float = 1e-8, max_iter: int = 10_000, W_star: np.ndarray | None = None,
            partition: int | None = None, divergence_factor: float = 1e6) -> AGDResult:
    """Run AGD from ``W0`` (K, r). Returns the estimate, iteration count, histories and flags."""
    W0 = problem.check_weights(W0, name="W0")
    eta, beta, tol, max_iter, T, div, W_star_arr, track = _check_options(
        problem, eta, beta, tol, max_iter, partition, divergence_factor, W_star)
    loss_hist, err_hist = _histories(None, max_iter, track)
    Xg, Gb, rows = kernel_inputs(problem)
    W, n_iter, status = _agd_single(W0, Xg, Gb, rows, problem.y, problem.shared_support,
                                    single_block_size(problem), eta, beta, tol, max_iter, T,
                                    W_star_arr, track, div, loss_hist, err_hist)
    return AGDResult(W=W, n_iter=int(n_iter), status=_STATUS[int(status)],
                     loss_history=loss_hist[:n_iter + 1].copy(),
                     rel_error_history=err_hist[:n_iter + 1].copy() if track else None,
                     eta=eta, beta=beta)


def run_agd_multistart(problem: StudentProblem, W0: np.ndarray, *, eta: float = 0.5,
                       beta: float = 0.2, tol: float = 1e-8, max_iter: int = 10_000,
                       W_star: np.ndarray | None = None, partition: int | None = None,
                       divergence_factor: float = 1e6) -> list[AGDResult]:
    """Run AGD from M starts ``W0`` (M, K, r) on one data set with the batched kernel.

    Each start follows exactly the single-start rule and stops on its own; finished starts leave
    the batch, so the rest keep sharing every pass over the data.
    """
    W0 = problem.check_batch(W0, name="W0")
    M = W0.shape[0]
    eta, beta, tol, max_iter, T, div, W_star_arr, track = _check_options(
        problem, eta, beta, tol, max_iter, partition, divergence_factor, W_star, starts=M)
    loss_hist, err_hist = _histories(M, max_iter, track)
    n_iters = np.zeros(M, dtype=np.int64)
    statuses = np.zeros(M, dtype=np.int64)
    W_out = np.empty_like(W0)
    _agd_batch(W0, problem.sample_blocks, problem.block_rows, problem.shared_support, problem.y,
               eta, beta, tol, max_iter, T, W_star_arr, track, div, loss_hist, err_hist, n_iters,
               statuses, W_out)
    results = []
    for m in range(M):
        n = int(n_iters[m])
        results.append(AGDResult(
            W=W_out[m].copy(), n_iter=n, status=_STATUS[int(statuses[m])],
            loss_history=loss_hist[m, :n + 1].copy(),
            rel_error_history=err_hist[m, :n + 1].copy() if track else None,
            eta=eta, beta=beta))
    return results


def relative_error(W: np.ndarray, W_star: np.ndarray) -> float:
    """``||W - W*||_F / ||W*||_F`` (no permutation: neuron j reads support j)."""
    W = check_array("W", W)
    W_star = check_array("W_star", W_star, shape=W.shape)
    return float(np.linalg.norm(W - W_star) / np.linalg.norm(W_star))


def init_at_distance(W_star: np.ndarray, lam: float, seed: int | np.random.Generator) -> np.ndarray:
    """``W0 = W* + lam ||W*||_F Delta / ||Delta||_F`` with Gaussian Delta on the student supports.

    The initial point lies at relative distance exactly ``lam`` from W* (the paper's Fig. 2 start).
    Accepts one W* (K, r) or returns M starts when given ``seed`` and called repeatedly.
    """
    W_star = check_array("W_star", W_star, ndim=2)
    lam = check_float("lam", lam, low=0.0)
    rng = as_generator(seed)
    delta = rng.standard_normal(W_star.shape)
    return W_star + lam * np.linalg.norm(W_star) * delta / np.linalg.norm(delta)
