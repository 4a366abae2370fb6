"""How one training step computes its gradient and moves the weights: plain SGD-style steps, SAM
and adaptive SAM, NVRM, all restricted to the ticket (spec sec. 2; Sakamoto & Sato 2022, Sec. 3.2).

``training.train`` asks the configured rule (``STEP_RULES[cfg.step_rule]``) for each step's
gradient; the rule calls ``forward_backward`` (forward, backward, gradients multiplied by the
mask) as often as it needs. Rules:

* ``"plain"``: one forward/backward pass.
* ``"sam"`` (Foret et al. 2021): with the masked gradient g at w, ``eps = rho g / (||g|| +
  1e-12)`` (norm over every parameter with a gradient); the gradient used by the optimizer is the
  masked gradient at ``w + eps``; the weights are then restored bit for bit from a copy and the
  optimizer steps from w (so weight decay acts at w). BatchNorm running statistics are updated by
  the first pass only (saved and restored around the second). Because g is masked, eps is exactly
  zero on pruned weights.
* ``"asam"`` (Kwon et al. 2021, the ``adaptive`` option of davda54/sam): ``eps = rho T^2 g /
  ||T g||`` with ``T = |w|``.
* ``"nvrm"`` (Xie et al. 2021, VSGD): the stored weights are ``p = theta + eps`` with eps drawn
  afresh after every step, ``N(0, b^2)``, ``U[-b, b]`` or ``Laplace(0, b)`` (``cfg.noise``,
  ``b = cfg.variability``, absolute units), multiplied by the mask (biases and BatchNorm
  parameters are perturbed too when ``cfg.noise_nonprunable``). The gradient (and weight decay)
  is taken at the noisy point: ``theta_{t+1} = theta_t - lr d(theta_t + eps_t)``. The clean
  weights ``theta`` are kept apart and updated by the optimizer's step ``p_after - p_before``, so
  that at every epoch boundary (every ``steps_per_epoch`` steps) the weights are ``theta``
  exactly and the next step runs without noise. Evaluations, rewind captures, checkpoints' clean
  state and the final weights all use ``theta`` (``clean_weights``). The noise of step t is drawn
  from a generator seeded with ``derive_seed(seed, "nvrm", t)``: a resumed run draws the same.

Each rule reports (``stats``) measurements taken on the steps where ``measure=True`` (the
training loop's evaluation steps): SAM the gradient norm, ``||eps||`` (which equals rho), the
loss increase ``L(w + eps) - L(w)`` and the share of ``|eps|`` on pruned weights (exactly 0);
NVRM ``||eps|| / ||theta||`` of the noise drawn after the step (none after the last step of an
epoch).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import nn

from lottery_common import Registry, derive_seed

from .masks import Mask

ForwardBackward = Callable[[], torch.Tensor]
"""Runs forward and backward on the step's batch, masks the gradients, returns the loss."""

NOISES = ("gaussian", "uniform", "laplace")
_set_grad_enabled = torch._C._set_grad_enabled


class StepRule(Protocol):
    """The gradient of one step and what happens to the weights around the optimizer's step."""

    def gradients(self, forward_backward: ForwardBackward, measure: bool) -> torch.Tensor: ...

    def before_optimizer(self) -> None: ...

    def after_optimizer(self, iteration: int) -> None: ...

    def clean_weights(self) -> contextlib.AbstractContextManager[None]: ...

    def finish(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def stats(self) -> dict[str, float]: ...


STEP_RULES: Registry[Callable[..., StepRule]] = Registry("step rule")
"""name -> ``(model, mask, cfg, params, steps_per_epoch, seed) -> StepRule``."""


class _Averages:
    """Running means of named measurements."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.maxima: dict[str, float] = {}

    def add(self, name: str, value: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + value
        self.counts[name] = self.counts.get(name, 0) + 1
        self.maxima[name] = max(self.maxima.get(name, -math.inf), value)

    def means(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_{k}": s / self.counts[k] for k, s in self.sums.items()}


class PlainStep:
    """One forward/backward pass per step (the other rules inherit its no-op methods)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def gradients(self, forward_backward: ForwardBackward, measure: bool) -> torch.Tensor:
        return forward_backward()

    def before_optimizer(self) -> None:
        return None

    def after_optimizer(self, iteration: int) -> None:
        return None

    def clean_weights(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def finish(self) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def stats(self) -> dict[str, float]:
        return {}


STEP_RULES.add("plain", PlainStep)


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats]


@contextlib.contextmanager
def frozen_batch_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Run forward passes without changing any BatchNorm running statistic (restored bit for bit
    afterwards, ``num_batches_tracked`` included)."""
    modules = _batch_norms(model)
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False) if v is not None}
             for m in modules]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, buffers in zip(modules, saved):
                for k, v in buffers.items():
                    getattr(module, k).copy_(v)


def _pruned_indicators(model: nn.Module, mask: Mask | None,
                       params: list[nn.Parameter]) -> list[torch.Tensor | None]:
    """For each parameter, a 0/1 tensor of its pruned entries (None if none can be pruned)."""
    if mask is None:
        return [None] * len(params)
    by_id = {id(p): n for n, p in model.named_parameters()}
    out: list[torch.Tensor | None] = []
    for p in params:
        name = by_id[id(p)]
        out.append(~mask[name].to(p.device) if name in mask else None)
    return out


class SharpnessAwareStep(PlainStep):
    """SAM (``adaptive=False``) or adaptive SAM: the gradient at ``w + eps`` (module docstring)."""

    def __init__(self, model: nn.Module, mask: Mask | None, cfg: Any, params: list[nn.Parameter],
                 steps_per_epoch: int, seed: int, adaptive: bool = False) -> None:
        self.model, self.params, self.rho, self.adaptive = model, params, cfg.rho, adaptive
        self.pruned = _pruned_indicators(model, mask, params)
        self.averages = _Averages()

    def _perturbation(self) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        with_grad = [p for p in self.params if p.grad is not None]
        grads = [p.grad for p in with_grad]
        if self.adaptive:
            scaled = torch._foreach_mul(grads, torch._foreach_abs(with_grad))
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(scaled)))
            eps = torch._foreach_mul(scaled, torch._foreach_abs(with_grad))
        else:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            eps = [g.clone() for g in grads]
        torch._foreach_mul_(eps, self.rho / (norm + 1e-12))
        return with_grad, eps, norm

    def gradients(self, forward_backward: ForwardBackward, measure: bool) -> torch.Tensor:
        loss = forward_backward()
        previous = torch.is_grad_enabled()
        _set_grad_enabled(False)
        try:
            moved, eps, grad_norm = self._perturbation()
            saved = [p.detach().clone() for p in moved]
            torch._foreach_add_(moved, eps)
        finally:
            _set_grad_enabled(previous)
        with frozen_batch_norm_statistics(self.model):
            perturbed_loss = forward_backward()
        with torch.no_grad():
            for p, old in zip(moved, saved):
                p.copy_(old)
        if measure:
            self._measure(moved, eps, grad_norm, float(perturbed_loss.detach()) - float(loss.detach()))
        return loss

    @torch.no_grad()
    def _measure(self, moved: list[torch.Tensor], eps: list[torch.Tensor],
                 grad_norm: torch.Tensor, loss_increase: float) -> None:
        pruned_of = {id(p): q for p, q in zip(self.params, self.pruned)}
        total = sum(float(e.abs().sum()) for e in eps)
        on_pruned = sum(float((e.abs() * pruned_of[id(p)]).sum()) for p, e in zip(moved, eps)
                        if pruned_of[id(p)] is not None)
        self.averages.add("grad_norm", float(grad_norm))
        self.averages.add("eps_norm", float(torch.linalg.vector_norm(
            torch.stack(torch._foreach_norm(eps)))))
        self.averages.add("loss_increase", loss_increase)
        self.averages.add("eps_share_on_pruned", on_pruned / total if total > 0 else 0.0)

    def stats(self) -> dict[str, float]:
        out = self.averages.means("sam")
        if "eps_share_on_pruned" in self.averages.maxima:
            out["sam_eps_share_on_pruned_max"] = self.averages.maxima["eps_share_on_pruned"]
        return out


STEP_RULES.add("sam", SharpnessAwareStep)


@STEP_RULES.register("asam")
def _adaptive_sam(model: nn.Module, mask: Mask | None, cfg: Any, params: list[nn.Parameter],
                  steps_per_epoch: int, seed: int) -> StepRule:
    return SharpnessAwareStep(model, mask, cfg, params, steps_per_epoch, seed, adaptive=True)


def _draw(kind: str, like: torch.Tensor, scale: float, g: torch.Generator) -> torch.Tensor:
    """One noise tensor shaped like ``like``: N(0, b^2), U[-b, b] or Laplace(0, b)."""
    if kind == "gaussian":
        return torch.randn(like.shape, generator=g, device=like.device, dtype=like.dtype) * scale
    u = torch.rand(like.shape, generator=g, device=like.device, dtype=like.dtype)
    if kind == "uniform":
        return (2.0 * u - 1.0) * scale
    # Laplace by inversion: -b sign(u') log(1 - 2|u'|), u' = u - 1/2 in (-1/2, 1/2)
    centred = (u - 0.5).clamp(-0.5 + 1e-7, 0.5 - 1e-7)
    return -scale * torch.sign(centred) * torch.log1p(-2.0 * centred.abs())


class VariableNoiseStep:
    """NVRM / VSGD: gradients at noisy weights, clean weights at epoch boundaries (docstring)."""

    def __init__(self, model: nn.Module, mask: Mask | None, cfg: Any, params: list[nn.Parameter],
                 steps_per_epoch: int, seed: int) -> None:
        if cfg.noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {cfg.noise!r}")
        self.model, self.scale, self.kind = model, cfg.variability, cfg.noise
        self.steps_per_epoch, self.seed = max(1, steps_per_epoch), seed
        pruned = _pruned_indicators(model, mask, params)
        by_id = {id(p): n for n, p in model.named_parameters()}
        prunable = set() if mask is None else set(mask.names())
        self.params, self.keep = [], []
        for p, q in zip(params, pruned):
            if by_id[id(p)] not in prunable and not cfg.noise_nonprunable:
                continue
            self.params.append(p)
            self.keep.append(None if q is None else (~q).to(p.dtype))
        self.clean = [p.detach().clone() for p in self.params]
        self.noise: list[torch.Tensor] | None = None
        self.before: list[torch.Tensor] = []
        self.averages = _Averages()
        self.measure = False

    def _new_noise(self, iteration: int) -> list[torch.Tensor]:
        device = self.params[0].device if self.params else torch.device("cpu")
        g = torch.Generator(device=device)
        g.manual_seed(derive_seed(self.seed, "nvrm", iteration))
        out = []
        for p, keep in zip(self.params, self.keep):
            e = _draw(self.kind, p, self.scale, g)
            out.append(e if keep is None else e.mul_(keep))
        return out

    def gradients(self, forward_backward: ForwardBackward, measure: bool) -> torch.Tensor:
        self.measure = measure
        return forward_backward()

    @torch.no_grad()
    def _measure_noise(self) -> None:
        """``||eps|| / ||theta||`` of the noise just drawn."""
        ratio = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(
            self.noise)))) / max(float(torch.linalg.vector_norm(torch.stack(
                torch._foreach_norm(self.clean)))), 1e-30)
        self.averages.add("noise_to_weight_norm", ratio)

    @torch.no_grad()
    def before_optimizer(self) -> None:
        self.before = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def after_optimizer(self, iteration: int) -> None:
        # theta <- theta + (p_after - p_before): the optimizer's step, taken at the noisy point
        torch._foreach_add_(self.clean, torch._foreach_sub([p.detach() for p in self.params],
                                                           self.before))
        self.before = []
        if (iteration + 1) % self.steps_per_epoch == 0:  # epoch boundary: clean weights
            self.noise = None
            torch._foreach_copy_([p.detach() for p in self.params], self.clean)
            return
        self.noise = self._new_noise(iteration)
        torch._foreach_copy_([p.detach() for p in self.params],
                             torch._foreach_add(self.clean, self.noise))
        if self.measure:  # the step was a measured one: record the noise it leaves behind
            self._measure_noise()

    @contextlib.contextmanager
    def clean_weights(self) -> Iterator[None]:
        if self.noise is None:
            yield
            return
        noisy = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_([p.detach() for p in self.params], self.clean)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.detach() for p in self.params], noisy)

    @torch.no_grad()
    def finish(self) -> None:
        torch._foreach_copy_([p.detach() for p in self.params], self.clean)
        self.noise = None

    def state_dict(self) -> dict[str, Any]:
        return {"clean": [t.detach().cpu().clone() for t in self.clean],
                "noise": None if self.noise is None else [t.cpu().clone() for t in self.noise]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.params[0].device if self.params else torch.device("cpu")
        self.clean = [t.to(device) for t in state["clean"]]
        self.noise = None if state["noise"] is None else [t.to(device) for t in state["noise"]]

    def stats(self) -> dict[str, float]:
        return self.averages.means("nvrm")


STEP_RULES.add("nvrm", VariableNoiseStep)
