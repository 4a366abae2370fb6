"""The sparse one-hidden-layer ReLU teacher and its student supports.

Model of Zhang, Wang, Liu, Chen, Xiong, "Why Lottery Ticket Wins?" (NeurIPS 2021), Sec. 2:
inputs ``x ~ N(0, I_d)``; teacher neuron ``j`` reads only the coordinates ``Omega*_j``
(``|Omega*_j| = r*``) and

    y = (1/K) sum_j relu(w*_j . x[Omega*_j]) + xi,        W*_ij ~ Uniform[-0.5, 0.5].

The student neuron ``j`` reads ``r >= r*`` coordinates ``Omega_j`` with ``Omega_j ⊇ Omega*_j``
(``r = d`` is the dense network). Supports are stored as sorted int64 arrays of shape (K, r).
Weights come in two forms:

* compact: ``W`` of shape (K, r), row ``j`` indexed like ``supports[j]``;
* augmented: ``A`` of shape (d, K) with a boolean mask, zeros off the support (the paper's W*).

The noise level is reported as ``sigma / E_y`` where ``E_y`` is the RMS of the noiseless outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lottery_common import as_generator, check_array, check_float, check_int

WEIGHT_RANGE = 0.5  # W* entries are Uniform[-WEIGHT_RANGE, WEIGHT_RANGE]


def relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0)


@dataclass(frozen=True)
class SparseTeacher:
    """A teacher network: supports (K, r*) sorted per row and weights (K, r*) on them."""

    d: int
    supports: np.ndarray
    weights: np.ndarray

    @property
    def K(self) -> int:  # noqa: N802  (the paper's symbol)
        return int(self.supports.shape[0])

    @property
    def r_star(self) -> int:
        return int(self.supports.shape[1])

    def outputs(self, X: np.ndarray) -> np.ndarray:
        """Noiseless outputs ``(1/K) sum_j relu(w*_j . x[Omega*_j])`` for rows of ``X`` (N, d)."""
        X = check_array("X", X, ndim=2)
        if X.shape[1] != self.d:
            raise ValueError(f"X has {X.shape[1]} columns, expected d = {self.d}")
        return network_outputs(self.weights, self.supports, X)

    def in_student_coordinates(self, student_supports: np.ndarray) -> np.ndarray:
        """W* written in the student's coordinates: (K, r) with zeros on Omega_j minus Omega*_j."""
        student_supports = validate_supports(student_supports, self.d, name="student_supports",
                                             teacher=self)
        W = np.zeros(student_supports.shape, dtype=np.float64)
        for j in range(self.K):
            pos = np.searchsorted(student_supports[j], self.supports[j])
            W[j, pos] = self.weights[j]
        return W

    def augmented(self) -> tuple[np.ndarray, np.ndarray]:
        """The augmented (d, K) weight matrix and its support mask."""
        return to_augmented(self.weights, self.supports, self.d)


@dataclass(frozen=True)
class Dataset:
    """Samples ``X`` (N, d), labels ``y`` (N,), noiseless labels and the noise standard deviation."""

    X: np.ndarray
    y: np.ndarray
    y_clean: np.ndarray
    noise_sigma: float
    noise_level: float

    @property
    def N(self) -> int:  # noqa: N802
        return int(self.X.shape[0])


def network_outputs(W: np.ndarray, supports: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``(1/K) sum_j relu(W[j] . X[:, supports[j]])`` for compact weights (plain NumPy)."""
    K = W.shape[0]
    out = np.zeros(X.shape[0])
    for j in range(K):
        out += relu(X[:, supports[j]] @ W[j])
    return out / K


def draw_teacher(d: int, K: int, r_star: int, seed: int | np.random.Generator) -> SparseTeacher:
    """Random teacher: each neuron reads a uniformly random r*-subset of [d]; weights Uniform[-0.5, 0.5]."""
    d = check_int("d", d, minimum=1)
    K = check_int("K", K, minimum=1)
    r_star = check_int("r_star", r_star, minimum=1)
    if r_star > d:
        raise ValueError(f"r_star must be <= d = {d} (a neuron cannot read more coordinates than "
                         f"exist), got r_star = {r_star}")
    rng = as_generator(seed)
    supports = np.stack([np.sort(rng.choice(d, size=r_star, replace=False)) for _ in range(K)])
    weights = rng.uniform(-WEIGHT_RANGE, WEIGHT_RANGE, size=(K, r_star))
    return SparseTeacher(d=d, supports=supports.astype(np.int64), weights=weights)


def draw_student_supports(teacher: SparseTeacher, r: int,
                          seed: int | np.random.Generator) -> np.ndarray:
    """Student supports (K, r): each teacher support plus r - r* uniformly random extra coordinates."""
    r = check_int("r", r, minimum=1)
    if r < teacher.r_star:
        raise ValueError(f"r must be >= r_star = {teacher.r_star} (the student must contain the "
                         f"teacher's support), got r = {r}")
    if r > teacher.d:
        raise ValueError(f"r must be <= d = {teacher.d}, got r = {r}")
    rng = as_generator(seed)
    rows = []
    for j in range(teacher.K):
        others = np.setdiff1d(np.arange(teacher.d), teacher.supports[j], assume_unique=True)
        extra = rng.choice(others, size=r - teacher.r_star, replace=False)
        rows.append(np.sort(np.concatenate([teacher.supports[j], extra])))
    return np.stack(rows).astype(np.int64)


def validate_supports(supports: object, d: int, *, name: str = "supports",
                      teacher: SparseTeacher | None = None) -> np.ndarray:
    """Check a (K, r) support array and return it sorted per row as int64.

    Entries must be integers in [0, d), distinct within a row, and (when ``teacher`` is given)
    row ``j`` must contain the teacher's support of neuron ``j`` and K must match.
    """
    arr = np.asarray(supports)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-d (K, r) integer array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer coordinates, got dtype {arr.dtype}")
    arr = np.sort(arr.astype(np.int64), axis=1)
    if arr.min() < 0 or arr.max() >= d:
        raise ValueError(f"{name} entries must lie in [0, d) = [0, {d}), got range "
                         f"[{arr.min()}, {arr.max()}]")
    dup_rows = np.nonzero(np.any(np.diff(arr, axis=1) == 0, axis=1))[0]
    if dup_rows.size:
        raise ValueError(f"{name} row {int(dup_rows[0])} repeats a coordinate; each neuron's "
                         f"support must hold r distinct coordinates")
    if teacher is not None:
        if arr.shape[0] != teacher.K:
            raise ValueError(f"{name} has {arr.shape[0]} rows, expected K = {teacher.K}")
        if arr.shape[1] < teacher.r_star:
            raise ValueError(f"{name} has r = {arr.shape[1]} columns, must be >= r_star = "
                             f"{teacher.r_star}")
        for j in range(teacher.K):
            missing = np.setdiff1d(teacher.supports[j], arr[j])
            if missing.size:
                raise ValueError(f"{name} row {j} does not contain the teacher's support: "
                                 f"coordinates {missing[:5].tolist()} are missing")
    return arr


def supports_from_mask(mask: object) -> np.ndarray:
    """Supports (K, r) from a boolean (d, K) mask with the same number r of ones per column."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be a 2-d (d, K) boolean array, got shape {m.shape}")
    m = m.astype(bool)
    counts = m.sum(axis=0)
    if counts.min() != counts.max() or counts.min() == 0:
        raise ValueError(f"mask columns must each keep the same positive number r of coordinates, "
                         f"got counts {counts.tolist()}")
    return np.stack([np.nonzero(m[:, j])[0] for j in range(m.shape[1])]).astype(np.int64)


def to_augmented(W: np.ndarray, supports: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Compact (K, r) weights to the augmented (d, K) matrix and mask (zeros off the support)."""
    supports = validate_supports(supports, d)
    W = check_array("W", W, shape=supports.shape)
    A = np.zeros((d, supports.shape[0]))
    mask = np.zeros((d, supports.shape[0]), dtype=bool)
    for j in range(supports.shape[0]):
        A[supports[j], j] = W[j]
        mask[supports[j], j] = True
    return A, mask


def to_compact(A: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Augmented (d, K) weights and mask to compact weights (K, r) and supports (K, r)."""
    mask = np.asarray(mask)
    A = check_array("A", A, shape=mask.shape)
    supports = supports_from_mask(mask)
    W = np.stack([A[supports[j], j] for j in range(supports.shape[0])])
    return W, supports


def sample_inputs(N: int, d: int, seed: int | np.random.Generator) -> np.ndarray:
    """``N`` samples ``x ~ N(0, I_d)`` as an (N, d) float64 array."""
    N = check_int("N", N, minimum=1)
    d = check_int("d", d, minimum=1)
    return as_generator(seed).standard_normal((N, d))


def make_dataset(teacher: SparseTeacher, N: int, seed: int | np.random.Generator,
                 noise_level: float = 0.0) -> Dataset:
    """Draw ``N`` samples and labels ``y = teacher(x) + xi`` with ``xi ~ N(0, sigma^2)``.

    ``noise_level`` is ``sigma / E_y`` with ``E_y`` the RMS of the noiseless outputs of this
    sample (the paper's noise level, Sec. 5).
    """
    noise_level = check_float("noise_level", noise_level, low=0.0)
    rng = as_generator(seed)
    X = sample_inputs(N, teacher.d, rng)
    y_clean = teacher.outputs(X)
    e_y = float(np.sqrt(np.mean(y_clean ** 2)))
    sigma = noise_level * e_y
    noise = rng.standard_normal(X.shape[0]) * sigma if sigma > 0 else np.zeros(X.shape[0])
    return Dataset(X=X, y=y_clean + noise, y_clean=y_clean, noise_sigma=sigma,
                   noise_level=noise_level)
