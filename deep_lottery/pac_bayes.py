"""PAC-Bayes bounds and flatness measures for pruned networks (Sakamoto & Sato, NeurIPS 2022).

Equation numbers are the paper's; "spec" is ``deep_lottery.md`` sec. 1; [LP] is their released
code (keitaroskmt/lth-pacbayes), [DR] Dziugaite & Roy (UAI 2017).

* Scalar bounds (float64, numpy arrays or floats): ``kl_bernoulli``, ``kl_inverse`` (bisection),
  the variational bound ``min(quadratic, Pinsker)`` of Eq. 16 with ``B`` of Eq. 17.
* Distributions (``FAMILIES``). Posterior mean ``mu = theta_T * m`` (the trained ticket),
  ``sigma = softplus(rho)``. ``"spike_and_slab"`` (Eqs. 2-5): a kept prunable weight is
  ``N(mu_i, sigma_i^2)`` under Q and ``(1 - lam_p) delta_0 + lam_p N(theta_init,i, s_i^2)`` under P;
  a pruned one is ``delta_0`` under Q (no noise); biases and BatchNorm are never pruned, i.e.
  ``lam_p = lam_q = 1`` (plain Gaussians, no mask term). ``lam_p`` (``density_p``) is the prior's
  mixture weight on the Gaussian, the *density* (the spec's ``1 - alpha``); default the mask's
  density, as [LP] does (``target_sparsity=mask.sparsity``). ``"gaussian"``: Gaussian on every
  coordinate, pruned ones included (noise on them too), prior mean ``theta_init`` (Sec. 4.2: the
  init norm of the pruned weights stays in the KL). ``"gaussian_zero"``: the same with prior
  mean 0 (Fig. 4 right).
* KL (Eq. 3 with ``lam_q`` in {0, 1}, Eq. 5): ``kl_gaussian`` over the coordinates that carry a
  Gaussian plus ``kl_mask = n_kept (-ln lam_p) + n_pruned (-ln(1 - lam_p))``. Prior variance:
  ``prior_var=None`` is the "oracle" ``s_i^2 = sigma_i^2 + (mu_i - mu0_i)^2`` of [LP]/[RD]
  (minimises each term: ``1/2 ln(1 + (mu_i - mu0_i)^2 / sigma_i^2)``); a float is one shared
  prior variance (needed for a certified bound, see ``rigorous_bound``). The oracle prior
  depends on Q and ``lam_p`` on the mask, so that bound is a diagnostic, not a certificate.
* ``optimize_bound``: SGD on ``rho`` only ([LP] ``main_bound.py``), objective Eq. 16 with the
  bounded log-loss surrogate as risk; per epoch the stochastic 0-1 train error, KL terms, Eq. 16
  and the exact ``kl^-1`` bound. The model is evaluated with ``torch.func.functional_call`` and
  never modified.
* ``rigorous_bound``: the [DR] union bound over a prior-variance grid plus the sample-convergence
  term. ``expected_sharpness`` (Sec. 4.2) and ``ticket_distances`` ([LP] ``calc_distance.py``).

Random draws: every noise tensor comes from a seeded CPU ``torch.Generator`` (``device.generator``)
on sub-streams ``derive_seed(seed, name, i)``, then moves to the model's device.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F  # noqa: N812 (PyTorch's convention)
from tqdm.auto import tqdm

from lottery_common import Registry, check_array, check_float, check_int, derive_seed

from .data import TensorData
from .device import generator
from .masks import Mask

Tensors = dict[str, torch.Tensor]
ArrayLike = float | np.ndarray
PROB_THRESHOLD = 1e-4
"""Softmax floor of the bounded log-loss ([RD]/[LP] ``prob_threshold``)."""
SHARPNESS_LOSSES = ("error", "ce", "mse")


# ----------------------------------------------------------------------------------------------
# Scalar bounds (float64)
# ----------------------------------------------------------------------------------------------
def _checked(name: str, value: object, low: float, high: float | None) -> np.ndarray:
    """``value`` as a float64 array with every entry in ``[low, high]`` (one-line ValueError)."""
    arr = check_array(name, value).reshape(np.shape(value))  # (ascontiguousarray makes 0-d 1-d)
    if arr.size and (arr.min() < low or (high is not None and arr.max() > high)):
        bad = arr[(arr < low) | (arr > (np.inf if high is None else high))].flat[0]
        raise ValueError(f"{name} must lie in [{low}, {'inf' if high is None else high}], "
                         f"got {bad}")
    return arr


def _delta(name: str, delta: float) -> float:
    return check_float(name, delta, low=0.0, high=1.0, low_open=True, high_open=True)


def _out(result: np.ndarray, *inputs: object) -> ArrayLike:
    """A float when every input was a scalar, else the array."""
    return float(result) if all(np.ndim(x) == 0 for x in inputs) else result


def _kl_bernoulli(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """In ``log1p`` form, accurate for ``p`` near ``q`` (where ``kl ~ (p-q)^2``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(q > 0, -q * np.log1p((p - q) / q), 0.0)
        b = np.where(q < 1, (1 - q) * np.log1p((p - q) / (1 - p)), 0.0)
    return a + b


def kl_bernoulli(q: ArrayLike, p: ArrayLike) -> ArrayLike:
    """``kl(q || p) = q ln(q/p) + (1-q) ln((1-q)/(1-p))`` (Eq. 4), with ``0 ln 0 = 0``."""
    return _out(_kl_bernoulli(_checked("q", q, 0, 1), _checked("p", p, 0, 1)), q, p)


def kl_inverse(q: ArrayLike, c: ArrayLike, iterations: int = 64) -> ArrayLike:
    """``sup {p in [q, 1]: kl(q || p) <= c}`` by bisection (the upper end of the final bracket,
    so the value returned is never below the supremum; width ``2^-iterations``)."""
    q_arr, c_arr = np.broadcast_arrays(_checked("q", q, 0, 1), _checked("c", c, 0, None))
    lo, hi = q_arr.copy(), np.ones_like(q_arr)
    for _ in range(check_int("iterations", iterations, minimum=1)):
        mid = 0.5 * (lo + hi)
        ok = _kl_bernoulli(q_arr, mid) <= c_arr
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return _out(hi, q, c)


def _quadratic(q: Any, b: Any) -> Any:  # noqa: ANN401 (numpy arrays or torch tensors)
    return q + b + (b * (b + 2 * q)) ** 0.5


def _pinsker(q: Any, b: Any) -> Any:  # noqa: ANN401
    return q + (b / 2) ** 0.5


def quadratic_bound(q: ArrayLike, B: ArrayLike) -> ArrayLike:  # noqa: N803 (the paper's B)
    """``q + B + sqrt(B (B + 2q))`` (Eq. 16, first branch; from ``kl(q||p) >= (p-q)^2 / 2p``)."""
    return _out(_quadratic(_checked("q", q, 0, None), _checked("B", B, 0, None)), q, B)


def pinsker_bound(q: ArrayLike, B: ArrayLike) -> ArrayLike:  # noqa: N803
    """``q + sqrt(B / 2)`` (Eq. 16, second branch; Pinsker ``kl(q||p) >= 2 (p-q)^2``)."""
    return _out(_pinsker(_checked("q", q, 0, None), _checked("B", B, 0, None)), q, B)


def variational_bound(q: ArrayLike, B: ArrayLike) -> ArrayLike:  # noqa: N803
    """``min(quadratic, Pinsker)`` (Eq. 16); both are upper bounds on ``kl_inverse(q, B)``."""
    q_arr, b_arr = _checked("q", q, 0, None), _checked("B", B, 0, None)
    return _out(np.minimum(_quadratic(q_arr, b_arr), _pinsker(q_arr, b_arr)), q, B)


def _complexity(kl: Any, m: int, delta: float) -> Any:  # noqa: ANN401
    return (kl + math.log(2 * math.sqrt(m) / delta)) / m


def complexity_term(kl: ArrayLike, m: int, delta: float) -> ArrayLike:
    """``B = (KL + ln(2 sqrt(m) / delta)) / m`` (Eq. 17)."""
    m = check_int("m", m, minimum=1)
    return _out(_complexity(_checked("kl", kl, 0, None), m, _delta("delta", delta)), kl)


def _torch_variational(q: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.minimum(_quadratic(q, b), _pinsker(q, b))


# ----------------------------------------------------------------------------------------------
# Distribution families and the KL
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """How prior and posterior treat the coordinates of a pruned network.

    ``spike``: pruned weights are the atom ``delta_0`` in Q (no noise) and the KL adds the mask
    term (Eq. 5); otherwise every coordinate is Gaussian in both. ``prior_mean``: ``"init"``
    (``theta_init``, masked where ``spike``) or ``"zero"``.
    """

    spike: bool
    prior_mean: str

    def __post_init__(self) -> None:
        if self.prior_mean not in ("init", "zero"):
            raise ValueError(f"prior_mean must be 'init' or 'zero', got {self.prior_mean!r}")


FAMILIES: Registry[Family] = Registry("distribution family")
FAMILIES.add("spike_and_slab", Family(spike=True, prior_mean="init"))
FAMILIES.add("gaussian", Family(spike=False, prior_mean="init"))
FAMILIES.add("gaussian_zero", Family(spike=False, prior_mean="zero"))


@dataclass
class Setup:
    """Everything fixed during bound optimisation (only ``rho`` varies).

    ``mu`` posterior means, ``mu0`` prior means, ``noise`` the 0/1 support of Q's noise,
    ``kept`` the bool ``m_full`` (kept prunable weights and every non-prunable parameter),
    ``buffers`` a private copy of the trained buffers (BatchNorm statistics).
    """

    family: str
    mu: Tensors
    mu0: Tensors
    noise: Tensors
    kept: dict[str, torch.Tensor]
    prunable: tuple[str, ...]
    buffers: Tensors
    density_p: float
    n_kept: int
    n_pruned: int
    prior_var: float | None = None


class KLTerms(NamedTuple):
    """``total = gaussian + mask`` (Eqs. 3 and 5), in nats."""

    gaussian: torch.Tensor
    mask: float
    total: torch.Tensor


def _state_tensor(state: Mapping[str, torch.Tensor], name: str, like: torch.Tensor,
                  what: str) -> torch.Tensor:
    if name not in state:
        raise ValueError(f"{what} has no entry {name!r}")
    t = state[name]
    if tuple(t.shape) != tuple(like.shape):
        raise ValueError(f"{what}[{name!r}] has shape {tuple(t.shape)}, the model "
                         f"{tuple(like.shape)}")
    return t.detach().to(like.device, like.dtype, copy=True)


def _mask_tensors(model: nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    out = {}
    for name, t in mask.items():
        if name not in params or tuple(params[name].shape) != tuple(t.shape):
            raise ValueError(f"mask entry {name!r} matches no parameter of the model")
        out[name] = t.to(params[name].device)
    return out


def _buffers(model: nn.Module, trained_state: Mapping[str, torch.Tensor]) -> Tensors:
    """Trained buffers (falling back on the model's own), copied so nothing outside changes."""
    return {n: trained_state.get(n, b).detach().to(b.device, copy=True)
            for n, b in model.named_buffers()}


def mask_kl(n_kept: int, n_pruned: int, density_p: float) -> float:
    """``n_kept (-ln lam_p) + n_pruned (-ln(1 - lam_p))`` (Eq. 5); equals ``d H_b(lam_p)`` when
    ``lam_p`` is the mask's density. Infinite when a side with weights has zero prior mass."""
    kept = n_kept * -math.log(density_p) if n_kept else 0.0
    pruned = n_pruned * -math.log1p(-density_p) if n_pruned and density_p < 1 else (
        math.inf if n_pruned else 0.0)
    return kept + pruned


def make_setup(model: nn.Module, mask: Mask, init_state: Mapping[str, torch.Tensor],
               trained_state: Mapping[str, torch.Tensor], *, family: str = "spike_and_slab",
               density_p: float | None = None, prior_var: float | None = None) -> Setup:
    """Prior and posterior means of ``family`` for the ticket ``(mask, trained_state)``.

    ``init_state`` should be the *unmasked* initialisation (the prior mean of ``"gaussian"``
    then keeps ``theta_init`` on pruned coordinates, Sec. 4.2); a masked one reproduces [LP],
    whose ``init_model.pth`` is masked. Parameters not in ``mask`` are never pruned.
    """
    fam = FAMILIES[family]
    masks = _mask_tensors(model, mask)
    density_p = mask.density if density_p is None else check_float(
        "density_p", density_p, low=0.0, high=1.0, low_open=True)
    if prior_var is not None:
        prior_var = check_float("prior_var", prior_var, low=0.0, low_open=True)
    if fam.spike and mask.num_kept < mask.num_total and density_p >= 1.0:
        raise ValueError("density_p must be < 1 when the mask prunes weights (else KL = inf)")
    mu, mu0, noise, kept = {}, {}, {}, {}
    for name, p in model.named_parameters():
        m = masks.get(name, torch.ones_like(p, dtype=torch.bool))
        mu[name] = _state_tensor(trained_state, name, p, "trained_state") * m
        init = _state_tensor(init_state, name, p, "init_state")
        mu0[name] = torch.zeros_like(p) if fam.prior_mean == "zero" else (
            init * m if fam.spike else init)
        kept[name] = m.clone()
        noise[name] = (m if fam.spike else torch.ones_like(m)).to(p.dtype).detach()
    return Setup(family, mu, mu0, noise, kept, tuple(masks), _buffers(model, trained_state),
                 density_p, mask.num_kept, mask.num_total - mask.num_kept, prior_var)


def oracle_prior_variance(mu: torch.Tensor, mu0: torch.Tensor, sigma: torch.Tensor
                          ) -> torch.Tensor:
    """``s^2 = sigma^2 + (mu - mu0)^2``, the minimiser of each Gaussian KL term ([RD], [LP])."""
    return sigma ** 2 + (mu - mu0) ** 2


def gaussian_kl(mu: torch.Tensor, mu0: torch.Tensor, sigma: torch.Tensor,
                prior_var: float | None = None) -> torch.Tensor:
    """Per coordinate ``KL(N(mu, sigma^2) || N(mu0, s^2))`` (Eq. 3's bracket):
    ``1/2 [sigma^2/s^2 + (mu-mu0)^2/s^2 - 1 + ln(s^2/sigma^2)]``, and with the oracle ``s^2``
    (``prior_var=None``) ``1/2 ln(1 + (mu-mu0)^2 / sigma^2)``."""
    d2, var = (mu - mu0) ** 2, sigma ** 2
    if prior_var is None:
        return 0.5 * torch.log1p(d2 / var)
    return 0.5 * ((var + d2) / prior_var - 1.0 + torch.log(prior_var / var))


def sigmas(rho: Mapping[str, torch.Tensor]) -> Tensors:
    """``sigma = softplus(rho)`` for every tensor."""
    return {n: F.softplus(r) for n, r in rho.items()}


def kl_divergence(setup: Setup, rho: Mapping[str, torch.Tensor]) -> KLTerms:
    """``KL(Q || P)`` of ``setup``'s family (Eqs. 3-5), differentiable in ``rho``. In spike mode
    the Gaussian part runs over ``m_full`` only (pruned coordinates get exactly zero gradient)."""
    total = torch.zeros((), dtype=torch.float64, device=next(iter(setup.mu.values())).device)
    spike = FAMILIES[setup.family].spike
    for name, r in rho.items():
        mu, mu0, sigma = setup.mu[name], setup.mu0[name], F.softplus(r)
        if spike:
            k = setup.kept[name]
            mu, mu0, sigma = mu[k], mu0[k], sigma[k]
        total = total + gaussian_kl(mu, mu0, sigma, setup.prior_var).sum(dtype=torch.float64)
    kl_m = mask_kl(setup.n_kept, setup.n_pruned, setup.density_p) if spike else 0.0
    return KLTerms(total, kl_m, total + kl_m)


# ----------------------------------------------------------------------------------------------
# The stochastic network
# ----------------------------------------------------------------------------------------------
def init_rho(setup: Setup, rho_init: float = -4.0) -> Tensors:
    """``rho = rho_init`` everywhere (trainable leaves); ``softplus(-4) = 0.01815``."""
    rho_init = check_float("rho_init", rho_init)
    return {n: torch.full_like(mu, rho_init).requires_grad_(True) for n, mu in setup.mu.items()}


def sample_parameters(setup: Setup, rho: Mapping[str, torch.Tensor], gen: torch.Generator
                      ) -> Tensors:
    """One draw ``theta = mu + noise * softplus(rho) * eps``, ``eps ~ N(0, I)`` from ``gen``;
    ``noise = m_full`` in spike mode, so pruned weights stay exactly 0 (reparameterised)."""
    out = {}
    for name, r in rho.items():
        mu = setup.mu[name]
        eps = torch.randn(mu.shape, generator=gen, dtype=mu.dtype).to(mu.device)
        out[name] = mu + setup.noise[name] * F.softplus(r) * eps
    return out


@contextlib.contextmanager
def _mode(model: nn.Module, train: bool) -> Iterator[None]:
    """Temporarily set ``model.train(train)``, restoring every module's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def _forward(model: nn.Module, params: Mapping[str, torch.Tensor], buffers: Tensors,
             x: torch.Tensor) -> torch.Tensor:
    return functional_call(model, {**buffers, **params}, (x,))


def bounded_log_loss(logits: torch.Tensor, y: torch.Tensor,
                     prob_threshold: float = PROB_THRESHOLD) -> torch.Tensor:
    """Mean of ``-ln(clamp(softmax(logits)_y, prob_threshold, 1)) / ln K`` ([RD]/[LP] surrogate;
    at most ``ln(1/prob_threshold) / ln K``, 4 for K = 10)."""
    k = logits.shape[-1]
    if k < 2:
        raise ValueError(f"the bounded log-loss needs at least 2 classes, got {k}")
    p = F.softmax(logits.float(), dim=-1).gather(1, y.long().view(-1, 1)).squeeze(1)
    return (-p.clamp(prob_threshold, 1.0).log() / math.log(k)).mean()


def _batches(data: TensorData, batch_size: int, device: torch.device
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(data), batch_size):
        yield (data.x[start:start + batch_size].to(device),
               data.y[start:start + batch_size].to(device))


@torch.no_grad()
def _loss_sums(model: nn.Module, params: Mapping[str, torch.Tensor], buffers: Tensors,
               data: TensorData, batch_size: int) -> dict[str, float]:
    """Summed losses of one network on ``data`` (in the model's current mode): ``error`` (0-1
    count), ``surrogate`` (bounded log-loss) and ``ce`` for integer labels, ``mse`` (per example
    mean over outputs) for float targets. Sums, so that averages over draws stay exact."""
    device = next(iter(params.values())).device
    classify = not data.y.is_floating_point()
    sums = dict.fromkeys(("error", "surrogate", "ce") if classify else ("mse",), 0.0)
    for x, y in _batches(data, batch_size, device):
        out = _forward(model, params, buffers, x).float()
        if classify:
            sums["error"] += float((out.argmax(1) != y).sum())
            sums["surrogate"] += float(bounded_log_loss(out, y)) * x.shape[0]
            sums["ce"] += float(F.cross_entropy(out, y, reduction="sum"))
        else:
            sq = (out.reshape(y.shape) - y.float()) ** 2
            sums["mse"] += float(sq.sum()) / max(1, sq[0].numel())
    return sums


def stochastic_losses(model: nn.Module, setup: Setup, rho: Mapping[str, torch.Tensor],
                      data: TensorData, *, draws: int, seed: int, batch_size: int = 1000
                      ) -> dict[str, float]:
    """Means over ``draws`` posterior draws (one whole network per draw, the model in eval())
    of the 0-1 error, the bounded log-loss (``"surrogate"``) and CE (or MSE) on ``data``."""
    draws = check_int("draws", draws, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    gen = generator(seed)
    total: dict[str, float] = {}
    with _mode(model, False), torch.no_grad():
        for _ in range(draws):
            one = _loss_sums(model, sample_parameters(setup, rho, gen), setup.buffers, data,
                             batch_size)
            total = {k: total.get(k, 0.0) + v for k, v in one.items()}
    return {k: v / (draws * len(data)) for k, v in total.items()}


def stochastic_error(model: nn.Module, setup: Setup, rho: Mapping[str, torch.Tensor],
                     data: TensorData, *, draws: int, seed: int, batch_size: int = 1000
                     ) -> float:
    """The stochastic network's 0-1 error ``E_{theta ~ Q} L_S(theta)``, averaged over draws."""
    return stochastic_losses(model, setup, rho, data, draws=draws, seed=seed,
                             batch_size=batch_size)["error"]


def deterministic_error(model: nn.Module, setup: Setup, data: TensorData,
                        batch_size: int = 1000) -> float:
    """The 0-1 error of the posterior mean (the trained ticket) in eval()."""
    with _mode(model, False):
        return _loss_sums(model, setup.mu, setup.buffers, data, batch_size)["error"] / len(data)


# ----------------------------------------------------------------------------------------------
# Distances and bound optimisation
# ----------------------------------------------------------------------------------------------
def ticket_distances(trained: Mapping[str, torch.Tensor], init: Mapping[str, torch.Tensor],
                     mask: Mask) -> dict[str, float]:
    """``l2_dist = ||m (theta_T - theta_0)||``, ``l2_norm = ||m theta_T||`` over the prunable
    weights, and both divided by ``sqrt(#kept)`` (``*_normalized``) ([LP] ``calc_distance.py``)."""
    dist2, norm2 = 0.0, 0.0
    for name, m in mask.items():
        for what, state in (("trained", trained), ("init", init)):
            if name not in state or tuple(state[name].shape) != tuple(m.shape):
                raise ValueError(f"{what}[{name!r}] is missing or does not match the mask")
        mf = m.to(torch.float64).cpu()
        t, i = trained[name].detach().cpu().double(), init[name].detach().cpu().double()
        dist2 += float((mf * (t - i)).pow(2).sum())
        norm2 += float((mf * t).pow(2).sum())
    root = math.sqrt(max(mask.num_kept, 1))
    return {"l2_dist": math.sqrt(dist2), "l2_norm": math.sqrt(norm2),
            "l2_dist_normalized": math.sqrt(dist2) / root,
            "l2_norm_normalized": math.sqrt(norm2) / root}


@dataclass
class BoundResult:
    """``history``: one record per epoch (epoch 0 = before optimisation); ``rho`` the final
    posterior scale parameters (CPU), ``sigma()`` their softplus."""

    family: str
    history: list[dict[str, Any]]
    rho: Tensors = field(repr=False)

    def sigma(self) -> Tensors:
        return sigmas(self.rho)


def _kept_sigma_stats(setup: Setup, rho: Mapping[str, torch.Tensor]) -> dict[str, float | None]:
    kept = torch.cat([F.softplus(rho[n])[setup.kept[n]].detach().flatten().float().cpu()
                      for n in setup.prunable])
    if not kept.numel():
        return {"sigma_mean": None, "sigma_median": None}
    return {"sigma_mean": float(kept.mean()), "sigma_median": float(kept.median())}


def bound_terms(risk: float, kl: float, m: int, delta: float) -> dict[str, float]:
    """``B`` (Eq. 17), the variational bound (Eq. 16) and ``kl^-1(risk, B)`` for one (risk, KL);
    an infinite KL (a zero posterior std) gives ``B = bound = inf`` and ``kl^-1 = 1``."""
    if not math.isfinite(kl):
        return {"B": math.inf, "bound": math.inf, "bound_kl_inverse": 1.0}
    b = float(complexity_term(kl, m, delta))
    return {"B": b, "bound": float(variational_bound(risk, b)),
            "bound_kl_inverse": float(kl_inverse(risk, b))}


def _record(epoch: int, model: nn.Module, setup: Setup, rho: Tensors, train_data: TensorData,
            test_data: TensorData | None, *, m: int, delta: float, draws: int, seed: int,
            batch_size: int, extra: dict[str, Any]) -> dict[str, Any]:
    """One history row: stochastic train/test error, KL terms, B, Eqs. 16/17, sigma stats."""
    train = stochastic_losses(model, setup, rho, train_data, draws=draws,
                              seed=derive_seed(seed, "risk", epoch), batch_size=batch_size)
    with torch.no_grad():
        kl = kl_divergence(setup, rho)
    kl_total = float(kl.total)
    rec: dict[str, Any] = {"epoch": epoch, "risk": train["error"],
                           "surrogate": train["surrogate"], "kl": kl_total,
                           "kl_gaussian": float(kl.gaussian), "kl_mask": kl.mask,
                           "kl_over_m": kl_total / m}
    rec.update(bound_terms(train["error"], kl_total, m, delta))
    if test_data is not None:
        rec["test_error"] = stochastic_error(model, setup, rho, test_data, draws=draws,
                                             seed=derive_seed(seed, "test", epoch),
                                             batch_size=batch_size)
    rec.update(_kept_sigma_stats(setup, rho))
    rec.update(extra)
    return rec


def _check_bound_args(epochs: int, lr: float, momentum: float, batch_size: int, delta: float,
                      error_draws: int, seed: int) -> None:
    check_int("epochs", epochs, minimum=0)
    check_float("lr", lr, low=0.0, low_open=True)
    check_float("momentum", momentum, low=0.0, high=1.0, high_open=True)
    check_int("batch_size", batch_size, minimum=1)
    _delta("delta", delta)
    check_int("error_draws", error_draws, minimum=1)
    check_int("seed", seed, minimum=0)


def _bound_epoch(model: nn.Module, setup: Setup, rho: Tensors, opt: torch.optim.Optimizer,
                 data: TensorData, *, order: torch.Tensor, batch_size: int, m: int,
                 delta: float, gen: torch.Generator) -> float:
    """One pass of SGD on Eq. 16 with the surrogate as risk (one posterior draw per batch);
    returns the mean objective."""
    device = next(iter(setup.mu.values())).device
    objectives = []
    for idx in order.split(batch_size):
        x, y = data.x[idx].to(device), data.y[idx].to(device)
        surrogate = bounded_log_loss(_forward(model, sample_parameters(setup, rho, gen),
                                              setup.buffers, x), y).double()
        objective = _torch_variational(surrogate, _complexity(kl_divergence(setup, rho).total,
                                                              m, delta))
        opt.zero_grad(set_to_none=True)
        objective.backward()
        opt.step()
        objectives.append(float(objective.detach()))
    return sum(objectives) / len(objectives)


def optimize_bound(model: nn.Module, mask: Mask, init_state: Mapping[str, torch.Tensor],
                   trained_state: Mapping[str, torch.Tensor], train_data: TensorData, *,
                   family: str = "spike_and_slab", epochs: int, lr: float = 0.01,
                   momentum: float = 0.95, batch_size: int = 256, delta: float = 0.01,
                   rho_init: float = -4.0, seed: int, test_data: TensorData | None = None,
                   error_draws: int = 10, density_p: float | None = None,
                   prior_var: float | None = None, train_mode: bool = False,
                   eval_batch_size: int = 1000, progress: bool = False) -> BoundResult:
    """Minimise Eq. 16 over ``rho`` only (``sigma = softplus(rho)``), as [LP] ``main_bound.py``:
    SGD(lr, momentum), minibatch objective ``min(quad, Pinsker)(surrogate, B(KL))`` with one
    posterior draw per batch. ``m = len(train_data)`` (pass un-augmented data).

    ``train_mode=False`` (default) runs the optimisation forwards in eval(), the mode the bound is
    evaluated in, so the surrogate and the bounded risk belong to the same predictor. [LP] keeps
    train() (BatchNorm batch statistics, running statistics updated by the noisy forwards);
    ``train_mode=True`` does that on a private copy of the trained buffers, which the
    evaluations then use. Without BatchNorm or dropout both are the same.

    Each epoch (and at epoch 0, before any step) records, in eval(): ``risk`` (stochastic 0-1
    train error over ``error_draws`` whole-network draws), ``surrogate``, ``kl``,
    ``kl_gaussian``, ``kl_mask``, ``kl_over_m``, ``B``, ``bound`` (Eq. 16 with the 0-1 risk),
    ``bound_kl_inverse``, ``test_error`` (if ``test_data``), ``sigma_mean``/``sigma_median`` over
    kept prunable weights, ``l2_dist``, and ``objective`` (mean minibatch objective; None at 0).
    """
    _check_bound_args(epochs, lr, momentum, batch_size, delta, error_draws, seed)
    setup = make_setup(model, mask, init_state, trained_state, family=family,
                       density_p=density_p, prior_var=prior_var)
    rho = init_rho(setup, rho_init)
    opt = torch.optim.SGD(list(rho.values()), lr=lr, momentum=momentum)
    m, gen = len(train_data), generator(derive_seed(seed, "noise"))
    l2 = ticket_distances(trained_state, init_state, mask)["l2_dist"]
    common = {"m": m, "delta": delta, "draws": error_draws, "seed": seed,
              "batch_size": eval_batch_size}
    history = [_record(0, model, setup, rho, train_data, test_data, **common,
                       extra={"l2_dist": l2, "objective": None})]
    for epoch in tqdm(range(1, epochs + 1), desc=f"bound {family}", disable=not progress):
        order = torch.randperm(m, generator=generator(derive_seed(seed, "batch_order", epoch)))
        with _mode(model, train_mode):
            objective = _bound_epoch(model, setup, rho, opt, train_data, order=order,
                                     batch_size=batch_size, m=m, delta=delta, gen=gen)
        history.append(_record(epoch, model, setup, rho, train_data, test_data, **common,
                               extra={"l2_dist": l2, "objective": objective}))
    return BoundResult(family, history, {n: r.detach().cpu() for n, r in rho.items()})


# ----------------------------------------------------------------------------------------------
# Rigorous variant (Dziugaite & Roy 2017)
# ----------------------------------------------------------------------------------------------
def prior_variance_grid(j: int, *, c: float = 0.1, b: float = 100.0) -> float:
    """``lambda_j = c exp(-j / b)``, ``j = 1, 2, ...`` ([DR]'s prior-variance grid)."""
    return check_float("c", c, low=0.0, low_open=True) * math.exp(
        -check_int("j", j, minimum=1) / check_float("b", b, low=0.0, low_open=True))


def grid_index(prior_var: float, *, c: float = 0.1, b: float = 100.0) -> float:
    """``j = b ln(c / lambda)`` (real-valued; round it to use the grid)."""
    prior_var = check_float("prior_var", prior_var, low=0.0, low_open=True)
    return check_float("b", b, low=0.0, low_open=True) * math.log(
        check_float("c", c, low=0.0, low_open=True) / prior_var)


def sample_convergence_bound(error: float, n_draws: int, delta_prime: float = 0.01) -> float:
    """``e+ = kl^-1(e_n, ln(2/delta') / n)``: with prob. 1 - delta' the stochastic error is below
    it, given the mean error ``e_n`` of ``n`` i.i.d. whole-network posterior draws ([DR])."""
    n = check_int("n_draws", n_draws, minimum=1)
    return float(kl_inverse(check_float("error", error, low=0.0, high=1.0),
                            math.log(2 / _delta("delta_prime", delta_prime)) / n))


def rigorous_bound(kl: float, error: float, *, m: int, n_draws: int, j: int,
                   delta: float = 0.025, delta_prime: float = 0.01, levels: int | None = None
                   ) -> dict[str, float]:
    """[DR]'s certified bound for a posterior whose prior has variance ``lambda_j`` of the grid.

    ``B_q = KL + ln(pi^2 m / (6 delta)) + 2 ln j`` (a union bound over ``j`` with weights
    ``6 / (pi^2 j^2)``), plus ``ln(levels + 1)`` when ``levels`` is given (union over the IMP
    levels ``0..levels`` whose schedule density ``0.8^L`` sets the spike-and-slab mixture weight,
    spec [I]). ``bound = kl^-1(e+, B_q / (m - 1))`` with ``e+`` from
    ``sample_convergence_bound``; it holds with probability ``1 - delta - delta'``. ``kl`` must be
    the KL for the prior variance ``prior_variance_grid(j)`` and a data-free prior mean.
    """
    kl = check_float("kl", kl, low=0.0)
    m = check_int("m", m, minimum=2)
    j = check_int("j", j, minimum=1)
    numerator = kl + math.log(math.pi ** 2 * m / (6 * _delta("delta", delta))) + 2 * math.log(j)
    if levels is not None:
        numerator += math.log(check_int("levels", levels, minimum=0) + 1)
    e_plus = sample_convergence_bound(error, n_draws, delta_prime)
    return {"kl": kl, "error": float(error), "error_upper": e_plus,
            "sample_term": math.log(2 / delta_prime) / n_draws, "B_q": numerator,
            "complexity": numerator / (m - 1), "j": float(j),
            "bound": float(kl_inverse(e_plus, numerator / (m - 1))),
            "confidence": 1.0 - delta - delta_prime}


def rounded_rigorous_bound(kl_at: Callable[[float], float], prior_var: float, error: float, *,
                           m: int, n_draws: int, c: float = 0.1, b: float = 100.0,
                           **options: Any) -> dict[str, float]:
    """Round ``j = b ln(c / prior_var)`` down and up (``j >= 1``), evaluate ``rigorous_bound``
    with ``kl_at(lambda_j)`` for each and keep the smaller ([DR]); adds ``prior_var`` used."""
    j_real = grid_index(prior_var, c=c, b=b)
    candidates = sorted({max(1, math.floor(j_real)), max(1, math.ceil(j_real))})
    best: dict[str, float] | None = None
    for j in candidates:
        lam = prior_variance_grid(j, c=c, b=b)
        result = rigorous_bound(kl_at(lam), error, m=m, n_draws=n_draws, j=j, **options)
        result["prior_var"] = lam
        if best is None or result["bound"] < best["bound"]:
            best = result
    assert best is not None
    return best


def kl_at_prior_variance(setup: Setup, rho: Mapping[str, torch.Tensor]
                         ) -> Callable[[float], float]:
    """``lambda -> KL`` of ``setup``'s family with the shared prior variance ``lambda``."""

    def kl_at(prior_var: float) -> float:
        with torch.no_grad():
            return float(kl_divergence(replace(setup, prior_var=prior_var), rho).total)

    return kl_at


# ----------------------------------------------------------------------------------------------
# Expected sharpness
# ----------------------------------------------------------------------------------------------
def _noise_scale(sigma: float | Mapping[str, torch.Tensor], setup: Setup) -> Tensors:
    if isinstance(sigma, Mapping):
        out = {}
        for name, mu in setup.mu.items():
            if name not in sigma:
                raise ValueError(f"sigma has no entry {name!r}")
            s = torch.as_tensor(sigma[name]).detach().to(mu.device, mu.dtype)
            if bool((s < 0).any()):
                raise ValueError(f"sigma[{name!r}] must be >= 0")
            out[name] = s.expand_as(mu)
        return out
    s = check_float("sigma", sigma, low=0.0)
    return {n: torch.full_like(mu, s) for n, mu in setup.mu.items()}


def expected_sharpness(model: nn.Module, state: Mapping[str, torch.Tensor], mask: Mask,
                       data: TensorData, sigma: float | Mapping[str, torch.Tensor], *,
                       draws: int = 30, seed: int, loss: str = "error",
                       batch_size: int = 1000) -> float:
    """``S = E_eps[L(theta + m_full eps)] - L(theta)``, ``eps ~ N(0, sigma^2)`` (Sec. 4.2), at
    ``theta = state * m``; noise on kept weights, biases and BatchNorm, never on pruned
    weights. ``sigma``: a float or per-tensor stds (e.g. ``BoundResult.sigma()``). ``loss``:
    ``"error"`` (0-1, as [LP]), ``"ce"`` or ``"mse"`` (regression). Eval mode, ``draws``
    whole-network draws. Near a minimum ``S ~ 1/2 sigma^2 tr(M H M)``."""
    if loss not in SHARPNESS_LOSSES:
        raise ValueError(f"loss must be one of {SHARPNESS_LOSSES}, got {loss!r}")
    draws = check_int("draws", draws, minimum=1)
    setup = make_setup(model, mask, state, state, family="spike_and_slab")
    scale = _noise_scale(sigma, setup)
    gen = generator(check_int("seed", seed, minimum=0))
    with _mode(model, False), torch.no_grad():
        losses = _loss_sums(model, setup.mu, setup.buffers, data, batch_size)
        if loss not in losses:
            raise ValueError(f"loss {loss!r} does not fit these targets; use one of {list(losses)}")
        clean, excess = losses[loss], 0.0
        for _ in range(draws):
            params = {n: mu + setup.noise[n] * scale[n]
                      * torch.randn(mu.shape, generator=gen, dtype=mu.dtype).to(mu.device)
                      for n, mu in setup.mu.items()}
            excess += _loss_sums(model, params, setup.buffers, data, batch_size)[loss] - clean
    return excess / (draws * len(data))
