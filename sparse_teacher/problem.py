"""A student's training problem laid out for the kernels.

The kernels never touch the full (N, d) input matrix. They read ``XU = X[:, U]`` with
``U = union_j Omega_j`` (p = |U| <= min(d, K r) columns) and ``loc`` (K, r), the positions of each
``Omega_j`` inside the sorted U, so that ``x_n[Omega_j] = XU[n, loc[j]]``. Each sample's gathered
inputs are then one contiguous row of p doubles, read once per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from lottery_common import check_array

from .teacher import validate_supports


def aligned_empty(shape: tuple[int, ...], alignment: int = 64) -> np.ndarray:
    """An uninitialized C-ordered float64 array whose data start on an ``alignment``-byte
    boundary (NumPy guarantees 16), so that the kernels' 64-byte vector loads of each block row
    (B doubles, B a multiple of 8) never straddle two cache lines."""
    count = int(np.prod(shape))
    raw = np.empty(count * 8 + alignment, dtype=np.uint8)
    start = (-raw.ctypes.data) % alignment
    return raw[start:start + count * 8].view(np.float64).reshape(shape)


BLOCK_BUDGET = 131072  # doubles per sample block (1 MB), see StudentProblem.sample_blocks

@dataclass(frozen=True)
class StudentProblem:
    """Training data of one student: ``XU`` (N, p), ``loc`` (K, r), labels ``y`` (N,)."""

    XU: np.ndarray
    loc: np.ndarray
    y: np.ndarray
    supports: np.ndarray
    union: np.ndarray
    d: int

    @classmethod
    def from_data(cls, X: np.ndarray, y: np.ndarray, supports: np.ndarray) -> StudentProblem:
        """Validate ``X`` (N, d), ``y`` (N,) and ``supports`` (K, r) and gather the union columns."""
        X = check_array("X", X, ndim=2)
        N, d = X.shape
        if N < 1:
            raise ValueError(f"X must hold at least one sample (N >= 1), got N = {N}")
        y = check_array("y", y, ndim=1)
        if y.shape[0] != N:
            raise ValueError(f"y has {y.shape[0]} entries but X has N = {N} rows; they must match")
        supports = validate_supports(supports, d)
        union = np.unique(supports)
        loc = np.searchsorted(union, supports).astype(np.int64)
        XU = np.ascontiguousarray(X[:, union])
        return cls(XU=XU, loc=loc, y=y, supports=supports, union=union, d=d)

    @property
    def N(self) -> int:  # noqa: N802
        return int(self.XU.shape[0])

    @property
    def K(self) -> int:  # noqa: N802
        return int(self.loc.shape[0])

    @property
    def r(self) -> int:
        return int(self.loc.shape[1])

    @property
    def p(self) -> int:
        return int(self.XU.shape[1])

    @property
    def shared_support(self) -> bool:
        """True when every neuron reads the same coordinates (the dense case r = d among them)."""
        return self.p == self.r

    @property
    def blocks_use_union(self) -> bool:
        """Whether the sample blocks store the p union columns (read by each neuron through
        ``loc``) rather than each neuron's own r columns: when the supports differ and the union
        holds at most 1/1.4 of the per-neuron data, K r >= 1.4 p.

        Measured at d = 500, K = 5, N = 3000, B = 256 on a Zen 4 core (speed of the union layout
        over the per-neuron one, three interleaved rounds): K r / p = 1.18-1.33 (r = 50-75) union is
        0-4% slower; 1.40 (r = 90) 1.03-1.10x faster single start, batched even; 1.46 (r = 100)
        1.11-1.13x single, 1.03-1.06x batched; 1.60 (r = 110) 1.13-1.19x and 1.10-1.19x; 1.86
        (r = 150) 1.37-1.47x and 1.08-1.18x. Below the threshold the direct rows avoid the row
        map; above it the smaller block stays in the L2 cache between the forward products and
        the gradient sums."""
        return not self.shared_support and self.K * self.r >= 1.4 * self.p

    @property
    def block_rows(self) -> np.ndarray | None:
        """``loc`` when the sample blocks hold the union columns (row ``loc[j, i]`` is feature i of
        neuron j), ``None`` when they hold each neuron's own columns."""
        return self.loc if self.blocks_use_union else None

    @cached_property
    def sample_blocks(self) -> np.ndarray:
        """Inputs in sample blocks stored feature-major, B samples per block:

        * (n_blocks, p, B), the union columns, when ``blocks_use_union`` and the neurons' supports
          differ: ``[b, loc[j, i], t] = x_n[Omega_j][i]``;
        * (n_blocks, K, r, B) otherwise, each neuron's own columns: ``[b, j, i, t]``, or
          (n_blocks, 1, r, B) for a shared support, read by every neuron;

        with ``n = b B + t`` (zeros past N). Within a block every feature is a contiguous run of
        B samples, so the kernels stream along samples (vectorized) while the block stays in
        cache between the forward products and the gradient sums. The array starts on a
        64-byte boundary (10-15% faster kernels).

        B = the largest power of two in [8, 256] with (rows of a block) x B <= 131072 (blocks
        of at most 1 MB, the L2 cache of one core) and B < 2 N. Scans over B = 16..1024 with
        aligned blocks (K = 5, N = 3000, r = 25..500) found 256 best or within noise of the best
        for the single-start and the batched kernels; 64 or less is 10-30% slower.
        """
        if self.shared_support:
            columns, groups = self.XU[None], 1
        elif self.blocks_use_union:
            columns, groups = self.XU[None], 0
        else:
            columns, groups = self.gathered(), self.K
        rows = columns.shape[2] * max(groups, 1)
        B = int(max(8, min(256, 2 ** int(np.log2(max(1, BLOCK_BUDGET // rows))),
                           2 ** int(np.ceil(np.log2(self.N))))))
        n_blocks = -(-self.N // B)
        padded = np.zeros((columns.shape[0], n_blocks * B, columns.shape[2]))
        padded[:, :self.N] = columns
        layout = padded.reshape(columns.shape[0], n_blocks, B, columns.shape[2]).transpose(1, 0, 3, 2)
        if groups == 0:
            layout = layout[:, 0]
        blocks = aligned_empty(layout.shape)
        blocks[...] = layout
        return blocks

    def gathered(self) -> np.ndarray:
        """The (K, N, r) gathered inputs ``x_n[Omega_j]`` (for NumPy references; K N r doubles)."""
        return np.ascontiguousarray(self.XU[:, self.loc].transpose(1, 0, 2))

    def check_weights(self, W: np.ndarray, name: str = "W") -> np.ndarray:
        """Validate a single start (K, r)."""
        return check_array(name, W, shape=(self.K, self.r))

    def check_batch(self, W: np.ndarray, name: str = "W") -> np.ndarray:
        """Validate a batch of starts (M, K, r)."""
        return check_array(name, W, shape=(None, self.K, self.r))
