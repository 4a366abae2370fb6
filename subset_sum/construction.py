"""Strong lottery ticket by subset sum: prune (and perturb) a random 2L-layer network to a target.

Construction (spec Sec. 2.1-2.2; Pensia et al. NeurIPS 2020; Xiong et al. AISTATS 2023, slides
p.10-11, "Prune + Perturb" figure). Target F: weights W_l of shape (d_l, d_{l-1}). Random network G:
for target layer l it has two layers,

* layer 2l-1 (width 2n d_{l-1}): input neuron j feeds its own block of 2n units with the fixed
  weights u_k = +1 (k < n) and u_k = -1 (k >= n) (Xiong's +-1 version; all entries outside the
  blocks are pruned, so they are never materialised);
* layer 2l: V_l[i, j, k] ~ Unif[-1, 1] i.i.d. from unit (j, k) to output neuron i.

Pruning S_l[i, j, k] in {0, 1} (and perturbing V + Y, |Y| <= eps) gives
g_ij(t) = sum_k S_ijk (V_ijk + Y_ijk) relu(u_k t), which equals t * sum_{k<n} (...) for t >= 0 and
(-t) * sum_{k>=n} (...) for t < 0: two independent (perturbed) subset sums per target weight,
sum_{k<n} ~ W_ij and sum_{k>=n} ~ -W_ij, so |g_ij(t) - W_ij t| <= E_ij |t| with
E_ij = the larger of the two errors. When the layer's inputs are known to be >= 0 (every layer
after the first, or non-negative data) only the first half is needed and the second is pruned.

Error propagation (ReLU is 1-Lipschitz; r_l the layer's residual, |r_i| <= sum_j E_ij |h_j|):
    ||h_l - h^_l||_2 <= ||W_l||_op ||h_{l-1} - h^_{l-1}||_2 + ||E_l |h^_{l-1}| ||_2,
which :meth:`PrunedNetwork.error_bound` evaluates per input; the input-free version with
||E_l |h|||_2 <= ||E_l||_F ||h||_2 is :func:`a_priori_bound`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from lottery_common import as_generator, check_array, check_float, check_int
from lottery_common.memory import check_memory

from .meet_in_middle import MAX_N as MITM_MAX_N
from .meet_in_middle import meet_in_the_middle_batch
from .perturbed import perturbed_subset_sum_batch
from .target_mlp import TargetMLP


@dataclass(frozen=True)
class RandomNetwork:
    """G's random weights: ``V[l]`` of shape (d_l, d_{l-1}, 2n), i.i.d. Unif[-1, 1]."""

    n: int
    V: tuple[np.ndarray, ...]

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.V[0].shape[1], *(v.shape[0] for v in self.V))


def random_network(widths: tuple[int, ...], n: int,
                   seed: int | np.random.Generator) -> RandomNetwork:
    """Draw G for a target of widths (d_0, ..., d_L) with 2n hidden units per input neuron.

    G holds sum_l 2n d_{l-1} d_l doubles (and :func:`construct` about three times that); above
    ``lottery_common.memory.MEMORY_BUDGET`` it is refused with a ValueError before drawing.
    """
    n = check_int("n", n, minimum=1)
    if len(widths) < 2:
        raise ValueError(f"widths must list d_0..d_L with L >= 1, got {widths}")
    widths = tuple(check_int("width", w, minimum=1) for w in widths)
    count = sum(2 * n * d_in * d_out for d_in, d_out in zip(widths[:-1], widths[1:], strict=True))
    check_memory(f"random_network: widths {widths} with n = {n} ({count:.3g} random weights, "
                 f"the sum of 2n d_(l-1) d_l)", 8.0 * count,
                 f"use a smaller n (meet in the middle, for eps = 0, allows n <= {MITM_MAX_N}) "
                 f"or a narrower target")
    rng = as_generator(seed)
    V = tuple(rng.uniform(-1.0, 1.0, size=(d_out, d_in, 2 * n))
              for d_in, d_out in zip(widths[:-1], widths[1:], strict=True))
    return RandomNetwork(n, V)


def unit_signs(n: int) -> np.ndarray:
    """u_k = +1 for k < n and -1 for k >= n (one block of layer 2l-1)."""
    return np.concatenate([np.ones(n), -np.ones(n)])


@dataclass(frozen=True)
class PrunedNetwork:
    """The subnetwork M ⊙ (G + Y): masks S[l], perturbations Y[l] (both (d_l, d_{l-1}, 2n)), and
    the per-weight errors E[l] (d_l, d_{l-1}) of the subset sums."""

    network: RandomNetwork
    target: TargetMLP
    masks: tuple[np.ndarray, ...]
    perturbations: tuple[np.ndarray, ...]
    entry_errors: tuple[np.ndarray, ...]
    eps: float

    def layer_matrices(self, layer: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Masked sparse weights of G's layers 2l-1 (2n d_{l-1} x d_{l-1}), 2l (d_l x 2n d_{l-1}).

        Unit (j, k) (block j, position k) is row / column j * 2n + k.
        """
        n = self.network.n
        d_out, d_in, _ = self.masks[layer].shape
        rows = np.arange(2 * n * d_in)
        first = sp.csr_matrix((np.tile(unit_signs(n), d_in), (rows, rows // (2 * n))),
                              shape=(2 * n * d_in, d_in))
        values = (self.network.V[layer] + self.perturbations[layer]) * self.masks[layer]
        second = sp.csr_matrix(values.reshape(d_out, d_in * 2 * n))
        return first, second

    def hidden_states(self, X: np.ndarray, batch_size: int = 256) -> list[np.ndarray]:
        """[x, h^_1, ..., h^_L]: outputs of G's even layers (ReLU except at the last).

        The forward pass runs through all 2L masked layers, ``batch_size`` rows at a time (the odd
        layers are 2n times wider than the target's).
        """
        X = check_array("X", X, ndim=2)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        if X.shape[1] != self.network.widths[0]:
            raise ValueError(f"X has {X.shape[1]} columns, expected {self.network.widths[0]}")
        states = [X]
        depth = len(self.masks)
        for layer in range(depth):
            first, second = self.layer_matrices(layer)
            outputs = []
            for start in range(0, X.shape[0], batch_size):
                rows = states[-1][start:start + batch_size]
                hidden = np.maximum(np.asarray((first @ rows.T).T), 0.0)
                outputs.append(np.asarray((second @ hidden.T).T))
            out = np.concatenate(outputs, axis=0) if outputs else np.zeros((0, second.shape[0]))
            states.append(out if layer == depth - 1 else np.maximum(out, 0.0))
        return states

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return self.hidden_states(X)[-1]

    def error_bound(self, X: np.ndarray) -> np.ndarray:
        """Per-input bound on ||F(x) - (M ⊙ G)(x)||_2 from the per-weight errors (module doc)."""
        states = self.hidden_states(X)
        bound = np.zeros(states[0].shape[0])
        for layer, w in enumerate(self.target.weights):
            residual = np.linalg.norm(np.abs(states[layer]) @ self.entry_errors[layer].T, axis=1)
            bound = np.linalg.norm(w, 2) * bound + residual
        return bound

    def remaining_weights(self) -> int:
        """Weights kept in G's even layers plus the block weights that feed a kept unit."""
        kept = 0
        for mask in self.masks:
            kept += int(mask.sum()) + int(np.count_nonzero(mask.any(axis=0)))
        return kept


def a_priori_bound(target: TargetMLP, entry_errors: tuple[np.ndarray, ...],
                   input_norm: float) -> float:
    """sup over ||x||_2 <= input_norm of the error bound: e_l <= ||W_l|| e_{l-1} +
    ||E_l||_F (||h_{l-1}|| + e_{l-1}), ||h_l|| <= ||W_l|| ||h_{l-1}|| (spec Sec. 2.2)."""
    input_norm = check_float("input_norm", input_norm, low=0.0)
    error, norm = 0.0, input_norm
    for w, e in zip(target.weights, entry_errors, strict=True):
        op = float(np.linalg.norm(w, 2))
        error = op * error + float(np.linalg.norm(e)) * (norm + error)
        norm = op * norm
    return error


def _solve(xs: np.ndarray, zs: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if eps == 0.0:
        errors, masks = meet_in_the_middle_batch(xs, zs)
        return errors, masks, np.zeros_like(xs)
    return perturbed_subset_sum_batch(xs, zs, eps)


def construct(target: TargetMLP, network: RandomNetwork, eps: float = 0.0,
              nonnegative_input: bool = False) -> PrunedNetwork:
    """Prune (and perturb by at most eps) G to approximate F: one subset sum per weight and half.

    Exact per-weight solvers: meet in the middle (eps = 0) or the interval DP (eps > 0).
    ``nonnegative_input``: the data are >= 0 (e.g. pixels), so layer 1 needs only the first half.
    """
    eps = check_float("eps", eps, low=0.0)
    if target.widths != network.widths:
        raise ValueError(f"target widths {target.widths} differ from network widths "
                         f"{network.widths}")
    n = network.n
    if eps == 0.0 and n > MITM_MAX_N:
        raise ValueError(f"construct: eps = 0 solves each weight's subset sum by meet in the "
                         f"middle, which allows n <= {MITM_MAX_N} (2^(n/2) memory), got n = {n}; "
                         f"use n <= {MITM_MAX_N} or eps > 0 (interval DP)")
    masks, perturbations, errors = [], [], []
    for layer, (w, v) in enumerate(zip(target.weights, network.V, strict=True)):
        d_out, d_in = w.shape
        mask = np.zeros((d_out, d_in, 2 * n), dtype=bool)
        y = np.zeros((d_out, d_in, 2 * n))
        pos_err, pos_mask, pos_y = _solve(v[:, :, :n].reshape(-1, n), w.reshape(-1), eps)
        mask[:, :, :n] = pos_mask.reshape(d_out, d_in, n)
        y[:, :, :n] = pos_y.reshape(d_out, d_in, n)
        error = pos_err.reshape(d_out, d_in)
        if layer == 0 and not nonnegative_input:
            neg_err, neg_mask, neg_y = _solve(v[:, :, n:].reshape(-1, n), -w.reshape(-1), eps)
            mask[:, :, n:] = neg_mask.reshape(d_out, d_in, n)
            y[:, :, n:] = neg_y.reshape(d_out, d_in, n)
            error = np.maximum(error, neg_err.reshape(d_out, d_in))
        masks.append(mask)
        perturbations.append(y)
        errors.append(error)
    return PrunedNetwork(network, target, tuple(masks), tuple(perturbations), tuple(errors), eps)
