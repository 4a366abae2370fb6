"""Curvature of the loss of a sub-network: the Hessian restricted to a pruning mask, ``M H M``.

Spec sec. 0 ("Hessian-vector product helper", "Restricting to the sub-network") and sec. 3
(PyHessian, Yao et al. 2020). Every measurement sees the Hessian only through products with the
masked operator

    v -> m_full * H (m_full * v),        H = d^2 L / d theta^2 at theta = m_full * theta,

where ``m_full`` is the pruning mask extended with ones for the parameters that are never pruned
(biases, BatchNorm). It acts on the kept coordinates as the Hessian of the sub-network and is zero
on the pruned ones. Vectors are flat tensors over all parameters that require grad, in
``model.named_parameters()`` order (``HessianOperator.unflatten`` gives per-tensor views).

Measurements (each random draw from an explicit seed; sub-streams by ``derive_seed``):

* ``hutchinson_trace`` -- ``tr(M H M) = E[v^T M H M v]`` over Rademacher probes ``v``, PyHessian's
  stopping rule; ``per_layer_trace`` restricts the probe to one tensor (``tr`` of a diagonal block).
* ``top_eigenvalues`` -- power iteration with Gram-Schmidt deflation (largest ``|lambda|``).
* ``lanczos``, ``slq_density``, ``smoothed_density`` -- stochastic Lanczos quadrature of the
  spectral density of ``M H M`` on the kept subspace, smoothed as PyHessian's ``density_plot``.
* ``loss_along`` with ``random_direction``, ``gradient_direction`` and the top eigenvector -- the
  1-D loss landscape ``t -> L(theta + t d)``.

How products are computed (``hvp=``): ``"jvp"`` is torch.func forward-over-reverse,
``jvp(grad(f), (theta,), (v,))[1]``, which redoes the forward and backward pass of every batch
in every product (memory of one batch); ``"graph"`` is PyHessian's reverse-over-reverse: the
gradient of every batch is built once with ``create_graph=True`` and kept, and each product is one
backward pass through it (about 1.6x faster per product than ``"jvp"`` on a masked Lenet-5 with
512 images, as fast as PyHessian; but the graphs of all batches stay in memory); ``"linearize"``
keeps a traced JVP of the gradient of every batch (``torch.func.linearize``: 0.85-1.15x the speed
of ``"graph"`` per product, after a one-off tracing cost of 1-1.5 s per batch;
``benchmarks/bench_hessian.py``). The first ``"jvp"`` or ``"linearize"`` product of a process also
pays a one-off few seconds while torch loads its forward-mode decompositions.
``"auto"`` (default) is ``"graph"`` when the evaluation set is one batch (then keeping the graph
costs no more peak memory than one product needs) and ``"jvp"`` otherwise.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, linearize

from lottery_common import check_float, check_int, derive_seed

from .data import TensorData
from .device import generator
from .masks import Mask
from .training import TASKS

HVP_MODES = ("auto", "jvp", "graph", "linearize")

Term = tuple[Callable[[torch.Tensor], torch.Tensor], float]
"""``(flat parameters -> loss of one batch, weight)``; the loss is the weighted sum of terms."""


# --- the operator -----------------------------------------------------------------------------

class HessianOperator:
    """The masked Hessian ``M H M`` of a loss at a fixed point, as a linear map on flat vectors.

    Built from ``loss_of_params`` (a function of a dict ``name -> tensor``) and the point
    ``params``, or from a model and a fixed evaluation set with ``from_model``. The point is a
    snapshot taken at construction, ``m_full * theta`` (``at_masked_point=True``, the sub-network;
    it equals ``theta`` when the mask has been applied, as training does) or ``theta`` itself.

    Attributes: ``names`` (parameter order), ``point`` (flat ``theta``), ``mask_vector`` (flat
    ``m_full``, None without a mask), ``size`` (vector length), ``dim`` (kept coordinates, the
    dimension of the subspace the operator lives on), ``hvp`` (product mode), ``products``
    (Hessian-vector products so far).
    """

    def __init__(self, loss_of_params: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                 params: Mapping[str, torch.Tensor],
                 mask: Mask | Mapping[str, torch.Tensor] | None = None, *, hvp: str = "auto",
                 at_masked_point: bool = True) -> None:
        self._setup(params, mask, at_masked_point)
        self._init_terms([(lambda flat: loss_of_params(self.unflatten(flat)), 1.0)], hvp)

    @classmethod
    def from_model(cls, model: nn.Module, data: TensorData, task: str,
                   mask: Mask | Mapping[str, torch.Tensor] | None = None, *,
                   batch_size: int = 1000, hvp: str = "auto",
                   at_masked_point: bool = True) -> HessianOperator:
        """The Hessian of the mean loss of ``model`` over ``data`` (all of it, in batches).

        ``L = sum_b (n_b / N) L_b``, so ``H v = sum_b (n_b / N) H_b v`` (PyHessian's
        ``dataloader_hv_product``). The model runs in ``eval()`` mode (BatchNorm running
        statistics, no dropout) through ``torch.func.functional_call`` with its buffers; its
        weights, buffers and training flags are left as they were. Parameters without
        ``requires_grad`` are constants; mask entries for them are ignored.
        """
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        batch_size = check_int("batch_size", batch_size, minimum=1)
        if len(data) == 0:
            raise ValueError("data is empty")
        named = dict(model.named_parameters())
        trainable = {n: p for n, p in named.items() if p.requires_grad}
        if not trainable:
            raise ValueError("the model has no parameters with requires_grad")
        if mask is not None:
            _check_mask_names(mask, named)
            mask = {n: t for n, t in mask.items() if n in trainable}
        op = cls.__new__(cls)
        op._setup(trainable, mask or None, at_masked_point)
        constants = {n: p.detach().clone() for n, p in named.items() if not p.requires_grad}
        constants.update({n: b.detach().clone() for n, b in model.named_buffers()})  # snapshot
        n = len(data)
        terms: list[Term] = []
        for start in range(0, n, batch_size):
            x = data.x[start:start + batch_size].to(op.device)
            y = data.y[start:start + batch_size].to(op.device)
            terms.append((_batch_loss(op, model, constants, x, y, task), len(x) / n))
        op._init_terms(terms, hvp)
        return op

    # construction helpers ---------------------------------------------------------------------
    def _setup(self, params: Mapping[str, torch.Tensor],
               mask: Mask | Mapping[str, torch.Tensor] | None, at_masked_point: bool) -> None:
        if not params:
            raise ValueError("params is empty")
        tensors = [t.detach() for t in params.values()]
        if len({t.dtype for t in tensors}) != 1 or len({t.device for t in tensors}) != 1:
            raise ValueError("all parameters must share one dtype and one device")
        if not tensors[0].is_floating_point():
            raise ValueError(f"parameters must be floating point, got {tensors[0].dtype}")
        self.names = list(params)
        self.shapes = [t.shape for t in tensors]
        self.sizes = [t.numel() for t in tensors]
        self.offsets = [0, *torch.tensor(self.sizes).cumsum(0).tolist()]
        self.dtype, self.device = tensors[0].dtype, tensors[0].device
        self.mask_vector = None if mask is None else self._mask_vector(mask)
        point = torch.cat([t.reshape(-1) for t in tensors])
        self.point = self.project(point) if at_masked_point else point.clone()
        self.dim = self.size if self.mask_vector is None else int(self.mask_vector.sum())
        self.products = 0

    def _mask_vector(self, mask: Mask | Mapping[str, torch.Tensor]) -> torch.Tensor:
        _check_mask_names(mask, dict(zip(self.names, self.shapes)))
        full = torch.ones(self.size, dtype=self.dtype, device=self.device)
        for name, m in mask.items():
            full[self.slice(name)] = m.reshape(-1).to(device=self.device, dtype=self.dtype)
        return full

    def _init_terms(self, terms: list[Term], hvp: str) -> None:
        if hvp not in HVP_MODES:
            raise ValueError(f"hvp must be one of {HVP_MODES}, got {hvp!r}")
        self.terms = terms
        self.hvp = ("graph" if len(terms) == 1 else "jvp") if hvp == "auto" else hvp
        self._product: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._grad: torch.Tensor | None = None

    # layout -----------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Length of a flat vector (every coordinate, pruned ones included)."""
        return self.offsets[-1]

    def slice(self, name: str) -> slice:
        """The coordinates of tensor ``name`` in a flat vector."""
        if name not in self.names:
            raise ValueError(f"no parameter named {name!r}; parameters: {self.names}")
        i = self.names.index(name)
        return slice(self.offsets[i], self.offsets[i + 1])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``name -> view`` of a flat vector, shaped as the parameters."""
        return {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.sizes), self.shapes)}

    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One flat vector from ``name -> tensor`` (every parameter name, in order)."""
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise ValueError(f"missing tensors {missing}")
        return torch.cat([tensors[n].reshape(-1).to(self.device, self.dtype)
                          for n in self.names])

    def as_vector(self, v: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """A flat vector from a flat tensor or a dict, checked for length."""
        if isinstance(v, Mapping):
            return self.flatten(v)
        if not isinstance(v, torch.Tensor) or v.shape != (self.size,):
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"expected a flat vector of length {self.size}, got {shape}")
        return v.to(self.device, self.dtype)

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """``m_full * v`` (zero on pruned coordinates)."""
        return v.clone() if self.mask_vector is None else v * self.mask_vector

    # loss, gradient, products -----------------------------------------------------------------
    def loss(self, point: torch.Tensor | None = None) -> float:
        """``L(point)`` (default: the operator's point)."""
        point = self.point if point is None else self.as_vector(point)
        with torch.no_grad():
            return float(sum(w * f(point) for f, w in self.terms))

    def gradient(self) -> torch.Tensor:
        """The masked gradient ``m_full * grad L(theta)`` (computed once)."""
        if self._grad is None:
            with torch.enable_grad():
                g = sum(w * grad(f)(self.point) for f, w in self.terms)
            self._grad = self.project(g.detach())
        return self._grad.clone()

    def prepare(self) -> HessianOperator:
        """Build what every product reuses (the gradient graph of ``"graph"``, the traced JVPs of
        ``"linearize"``); the first ``matvec`` calls it. Returns the operator."""
        if self._product is None:
            self._product = _PRODUCTS[self.hvp](self.terms, self.point)
        return self

    def matvec(self, v: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``M H M v`` as a flat vector."""
        v = self.as_vector(v)
        self.prepare()
        self.products += 1
        with torch.enable_grad():
            hv = self._product(v if self.mask_vector is None else v * self.mask_vector)
        return self.project(hv.detach())

    def rayleigh(self, v: torch.Tensor) -> float:
        """``v^T M H M v``."""
        return float(torch.dot(v, self.matvec(v)))


def _check_mask_names(mask: Mask | Mapping[str, torch.Tensor],
                      shapes: Mapping[str, torch.Tensor | torch.Size]) -> None:
    """One-line ValueError when the mask names a tensor the model lacks or has a wrong shape."""
    for name, m in mask.items():
        if name not in shapes:
            raise ValueError(f"the mask names {name!r}, which is not a parameter here "
                             f"(a mask for another model?)")
        want = shapes[name]
        want = want.shape if isinstance(want, torch.Tensor) else want
        if tuple(m.shape) != tuple(want):
            raise ValueError(f"mask {name!r} has shape {tuple(m.shape)} but the parameter has "
                             f"{tuple(want)} (a mask for another model?)")
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(f"mask {name!r} must hold only 0 and 1")


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` inside, every module's own training flag restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _task_loss(task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``training.loss_fn`` (mean cross-entropy or mean squared error), but float64 outputs stay
    float64 (only half precision is promoted)."""
    if out.dtype in (torch.float16, torch.bfloat16):
        out = out.float()
    if task == "classification":
        return nn.functional.cross_entropy(out, y)
    return torch.mean((out - y) ** 2)


def _batch_loss(op: HessianOperator, model: nn.Module, constants: dict[str, torch.Tensor],
                x: torch.Tensor, y: torch.Tensor, task: str
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``flat -> L_b(flat)``: the model in eval mode, called functionally with ``flat``."""
    def f(flat: torch.Tensor) -> torch.Tensor:
        with _evaluating(model):
            out = functional_call(model, {**constants, **op.unflatten(flat)}, (x,))
        return _task_loss(task, out, y)
    return f


# --- Hessian-vector products (spec sec. 0) -----------------------------------------------------

@contextlib.contextmanager
def _quiet_forward_ad() -> Iterator[None]:
    """Silence the DeprecationWarning of ``torch.jit.script`` that torch's forward-mode AD emits
    when it loads its JVP decompositions (once per process, on the first ``jvp``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated",
                                category=DeprecationWarning)
        yield


def _jvp_product(terms: list[Term], point: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Forward-over-reverse, everything recomputed: ``H v = sum_b w_b jvp(grad L_b, v)``."""
    grads = [(grad(f), w) for f, w in terms]

    def product(v: torch.Tensor) -> torch.Tensor:
        with _quiet_forward_ad():
            return sum(w * jvp(g, (point,), (v,))[1] for g, w in grads)
    return product


def _graph_product(terms: list[Term], point: torch.Tensor
                   ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Reverse-over-reverse through a kept graph (PyHessian): ``G = sum_b w_b grad L_b`` is built
    once with ``create_graph=True``; then ``H v = d(G . v)/d theta``, one backward pass."""
    leaf = point.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        total = sum(w * torch.autograd.grad(f(leaf), leaf, create_graph=True)[0]
                    for f, w in terms)
    return lambda v: torch.autograd.grad(total, leaf, v, retain_graph=True)[0]


def _linearize_product(terms: list[Term], point: torch.Tensor
                       ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Forward-over-reverse through a traced JVP of each batch's gradient (``linearize``)."""
    with _quiet_forward_ad(), warnings.catch_warnings():
        # torch.fx constant folding warns about the get_attr nodes it inserts itself
        warnings.filterwarnings("ignore", message="Attempted to insert a get_attr Node")
        fns = [(linearize(grad(f), point)[1], w) for f, w in terms]
    return lambda v: sum(w * fn(v) for fn, w in fns)


_PRODUCTS: dict[str, Callable[[list[Term], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]]
_PRODUCTS = {"jvp": _jvp_product, "graph": _graph_product, "linearize": _linearize_product}


# --- random vectors --------------------------------------------------------------------------

def rademacher(op: HessianOperator, seed: int) -> torch.Tensor:
    """A masked Rademacher vector: ``m_full * v`` with ``v_i = +-1`` equally likely (drawn on the
    CPU from ``seed``, so every device sees the same probe)."""
    bits = torch.randint(0, 2, (op.size,), generator=generator(seed), dtype=torch.int8)
    return op.project(bits.to(op.device, op.dtype) * 2 - 1)


def gaussian(op: HessianOperator, seed: int) -> torch.Tensor:
    """A masked standard normal vector (drawn on the CPU from ``seed``)."""
    z = torch.randn(op.size, generator=generator(seed), dtype=torch.float64)
    return op.project(z.to(op.device, op.dtype))


def _unit(v: torch.Tensor, what: str) -> torch.Tensor:
    n = torch.linalg.vector_norm(v)
    if not bool(n > 0):
        raise ValueError(f"the {what} is zero on the kept coordinates; it has no direction")
    return v / n


# --- trace (Hutchinson) ----------------------------------------------------------------------

@dataclass(frozen=True)
class TraceResult:
    """Hutchinson estimate: ``trace`` = mean of ``samples`` (the ``v^T M H M v``), ``stderr`` =
    their standard deviation / sqrt(probes) (nan for one probe)."""

    trace: float
    stderr: float
    samples: list[float]
    probes: int
    converged: bool


def hutchinson_trace(op: HessianOperator, *, max_probes: int = 100, tol: float | None = 1e-3,
                     min_probes: int = 10, seed: int, restrict_to: str | None = None
                     ) -> TraceResult:
    """``tr(M H M) = E[v^T M H M v]`` = sum of the kept diagonal entries ``H_ii`` (Hutchinson;
    spec sec. 3; PyHessian, Yao et al. 2020), over Rademacher probes masked by ``m_full``.

    Stops (PyHessian's rule) once ``|mean_n - mean_{n-1}| / (|mean_{n-1}| + 1e-6) < tol`` after at
    least ``min_probes`` probes (PyHessian checks from the first), else after ``max_probes``;
    ``tol=None`` runs exactly ``max_probes``. Probe ``i`` is ``rademacher(op, derive_seed(seed,
    "hutchinson", i))``. ``restrict_to`` keeps only the coordinates of one tensor: the estimate is
    then the trace of that tensor's diagonal block.
    """
    max_probes = check_int("max_probes", max_probes, minimum=1)
    min_probes = check_int("min_probes", min_probes, minimum=1)
    if tol is not None:
        tol = check_float("tol", tol, low=0.0)
    part = None if restrict_to is None else op.slice(restrict_to)
    samples: list[float] = []
    mean_old, converged = 0.0, False
    for i in range(max_probes):
        v = rademacher(op, derive_seed(seed, "hutchinson", i))
        if part is not None:
            v_part = torch.zeros_like(v)
            v_part[part] = v[part]
            v = v_part
        samples.append(op.rayleigh(v))
        mean = math.fsum(samples) / len(samples)
        if (tol is not None and len(samples) >= max(2, min_probes)
                and abs(mean - mean_old) / (abs(mean_old) + 1e-6) < tol):
            converged = True
            break
        mean_old = mean
    return _trace_result(samples, converged)


def _trace_result(samples: list[float], converged: bool) -> TraceResult:
    n = len(samples)
    mean = math.fsum(samples) / n
    if n < 2:
        return TraceResult(mean, math.nan, samples, n, converged)
    var = math.fsum((s - mean) ** 2 for s in samples) / (n - 1)
    return TraceResult(mean, math.sqrt(var / n), samples, n, converged)


def per_layer_trace(op: HessianOperator, *, names: Sequence[str] | None = None,
                    max_probes: int = 100, tol: float | None = 1e-3, min_probes: int = 10,
                    seed: int) -> dict[str, TraceResult]:
    """``name -> `` Hutchinson trace of the diagonal block of tensor ``name`` (default: every
    parameter); the probes are the whole-network probes restricted to that tensor."""
    names = op.names if names is None else list(names)
    return {n: hutchinson_trace(op, max_probes=max_probes, tol=tol, min_probes=min_probes,
                                seed=seed, restrict_to=n) for n in names}


# --- top eigenpairs (power iteration) --------------------------------------------------------

def _orthogonalize(v: torch.Tensor, basis: Sequence[torch.Tensor]) -> torch.Tensor:
    """``v`` minus its projection on orthonormal ``basis`` (Gram-Schmidt, twice for stability)."""
    for _ in range(2):
        for e in basis:
            v = v - torch.dot(e, v) * e
    return v


def top_eigenvalues(op: HessianOperator, k: int = 1, *, max_iter: int = 100, tol: float = 1e-3,
                    seed: int) -> tuple[list[float], list[torch.Tensor]]:
    """The ``k`` eigenpairs of ``M H M`` of largest ``|lambda|`` on the kept subspace, by power
    iteration with deflation (spec sec. 3; PyHessian, Yao et al. 2020).

    For each pair: ``v ~ N(0, I)`` masked and normalised, then up to ``max_iter`` times
    ``v <- v - sum_j (e_j . v) e_j`` (found eigenvectors ``e_j``), ``w = H v``,
    ``lambda = v . w``, ``v = w / |w|``, until ``|lambda - lambda_old| / (|lambda_old| + 1e-6)
    < tol``. Eigenvectors are unit, mutually orthogonal and zero on pruned coordinates.
    """
    k = check_int("k", k, minimum=1, maximum=op.dim)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    tol = check_float("tol", tol, low=0.0)
    values: list[float] = []
    vectors: list[torch.Tensor] = []
    for j in range(k):
        v = _unit(_orthogonalize(gaussian(op, derive_seed(seed, "power", j)), vectors),
                  "random start")
        value: float | None = None
        for _ in range(max_iter):
            v = _unit(_orthogonalize(v, vectors), "iterate")
            w = op.matvec(v)
            new = float(torch.dot(v, w))
            norm = torch.linalg.vector_norm(w)
            if not bool(norm > 0):  # v is in the null space: its eigenvalue is 0
                value = 0.0
                break
            v = w / norm
            done = value is not None and abs(new - value) / (abs(value) + 1e-6) < tol
            value = new
            if done:
                break
        values.append(float(value))
        vectors.append(_unit(_orthogonalize(v, vectors), "eigenvector"))
    return values, vectors


# --- Lanczos and spectral density (SLQ) ------------------------------------------------------

@dataclass(frozen=True)
class LanczosResult:
    """Tridiagonal ``T`` (diagonal ``alphas``, off-diagonal ``betas``) and, with
    re-orthogonalisation, the orthonormal ``basis`` (one row per step)."""

    alphas: torch.Tensor
    betas: torch.Tensor
    basis: torch.Tensor | None

    def tridiagonal(self) -> torch.Tensor:
        """``T`` as a dense float64 matrix."""
        a, b = self.alphas.double(), self.betas.double()
        return torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1)


def lanczos(op: HessianOperator, steps: int, *, seed: int, reorthogonalize: bool = True
            ) -> LanczosResult:
    """``steps`` Lanczos steps on ``M H M`` from a normalised masked Rademacher vector (spec
    sec. 3): ``w = H q_j - alpha_j q_j - beta_{j-1} q_{j-1}``, ``alpha_j = q_j . H q_j``,
    ``beta_j = |w|``, ``q_{j+1} = w / beta_j``; with ``reorthogonalize`` ``w`` is also made
    orthogonal to every earlier ``q`` (full re-orthogonalisation, twice). Stops early when
    ``beta_j`` vanishes (``<= sqrt(eps) |H q_j|``): the Krylov space is then invariant and the
    quadrature already exact (always by step ``op.dim``).
    """
    steps = check_int("steps", steps, minimum=1)
    eps = torch.finfo(op.dtype).eps
    q = _unit(rademacher(op, derive_seed(seed, "lanczos")), "start vector")
    basis = torch.empty(min(steps, op.dim), op.size, dtype=op.dtype, device=op.device) \
        if reorthogonalize else None
    alphas: list[float] = []
    betas: list[float] = []
    q_old, beta = torch.zeros_like(q), 0.0
    for j in range(min(steps, op.dim)):
        if basis is not None:
            basis[j] = q
        hq = op.matvec(q)
        alpha = float(torch.dot(q, hq))
        alphas.append(alpha)
        w = hq - alpha * q - beta * q_old
        if basis is not None:
            for _ in range(2):
                w = w - basis[:j + 1].T @ (basis[:j + 1] @ w)
        if j == min(steps, op.dim) - 1:
            break
        beta = float(torch.linalg.vector_norm(w))
        if beta <= math.sqrt(eps) * float(torch.linalg.vector_norm(hq)):
            break
        betas.append(beta)
        q_old, q = q, w / beta
    m = len(alphas)
    return LanczosResult(torch.tensor(alphas, dtype=torch.float64),
                         torch.tensor(betas, dtype=torch.float64),
                         None if basis is None else basis[:m])


def slq_density(op: HessianOperator, *, steps: int = 100, runs: int = 1, seed: int,
                reorthogonalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Stochastic Lanczos quadrature of the spectral density of ``M H M`` on the kept subspace
    (spec sec. 3; PyHessian, Yao et al. 2020; Ghorbani et al. 2019).

    Each run: ``T = Q diag(theta) Q^T`` (``torch.linalg.eigh``) of a Lanczos tridiagonal; nodes
    ``theta_k``, weights ``Q_{0k}^2`` (they sum to 1). Runs (seeds ``derive_seed(seed, "slq",
    r)``) are concatenated with weights divided by ``runs``, so ``sum w = 1`` and
    ``sum w theta ~= tr(M H M) / op.dim``. Returns CPU float64 ``(nodes, weights)``.
    """
    runs = check_int("runs", runs, minimum=1)
    steps = check_int("steps", steps, minimum=1)
    nodes, weights = [], []
    for r in range(runs):
        result = lanczos(op, steps, seed=derive_seed(seed, "slq", r),
                         reorthogonalize=reorthogonalize)
        theta, q = torch.linalg.eigh(result.tridiagonal())
        nodes.append(theta)
        weights.append(q[0] ** 2 / runs)
    return torch.cat(nodes), torch.cat(weights)


def smoothed_density(nodes: torch.Tensor, weights: torch.Tensor, *, num_bins: int = 10000,
                     sigma2: float = 1e-5, pad: float = 0.01
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """PyHessian's ``density_generate``: ``rho(x) = sum_k w_k N(x; theta_k, s)`` on ``num_bins``
    points of ``[min theta - pad, max theta + pad]`` with kernel variance
    ``s = sigma2 * max(1, range)``, normalised so that ``sum rho dx = 1``. (PyHessian takes the
    extremes per run and averages them; here they are over all nodes -- the same for one run.)
    Returns CPU float64 ``(grid, density)``.
    """
    num_bins = check_int("num_bins", num_bins, minimum=2)
    sigma2 = check_float("sigma2", sigma2, low=0.0, low_open=True)
    pad = check_float("pad", pad, low=0.0)
    nodes = torch.as_tensor(nodes, dtype=torch.float64).cpu().reshape(-1)
    weights = torch.as_tensor(weights, dtype=torch.float64).cpu().reshape(-1)
    if nodes.numel() == 0 or nodes.shape != weights.shape:
        raise ValueError(f"nodes and weights must be non-empty and of one length, got "
                         f"{nodes.numel()} and {weights.numel()}")
    lo, hi = float(nodes.min()) - pad, float(nodes.max()) + pad
    if not hi > lo:
        raise ValueError("the nodes span no interval; use pad > 0")
    grid = torch.linspace(lo, hi, num_bins, dtype=torch.float64)
    s = sigma2 * max(1.0, hi - lo)
    density = torch.zeros(num_bins, dtype=torch.float64)
    for start in range(0, nodes.numel(), 256):  # bins x nodes in chunks
        d = grid[:, None] - nodes[None, start:start + 256]
        kernel = torch.exp(-d ** 2 / (2 * s)) / math.sqrt(2 * math.pi * s)
        density += kernel @ weights[start:start + 256]
    return grid, density / (density.sum() * (grid[1] - grid[0]))


# --- 1-D landscape -----------------------------------------------------------------------------

def loss_along(op: HessianOperator, direction: torch.Tensor | Mapping[str, torch.Tensor],
               ts: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """``L(theta + t * m_full * d)`` for each ``t`` (spec sec. 3, PyHessian tutorial): the
    direction is masked, not rescaled (the ``*_direction`` helpers give unit vectors). CPU
    float64."""
    d = op.project(op.as_vector(direction))
    ts = torch.as_tensor(ts, dtype=torch.float64).reshape(-1)
    if not bool(torch.isfinite(ts).all()):
        raise ValueError("ts must be finite")
    return torch.tensor([op.loss(op.point + float(t) * d) for t in ts], dtype=torch.float64)


def random_direction(op: HessianOperator, *, seed: int) -> torch.Tensor:
    """A unit Gaussian direction on the kept coordinates (zero on pruned ones)."""
    return _unit(gaussian(op, derive_seed(seed, "direction")), "random direction")


def gradient_direction(op: HessianOperator) -> torch.Tensor:
    """``g / |g|`` with ``g = m_full * grad L`` (ascent direction)."""
    return _unit(op.gradient(), "gradient")
