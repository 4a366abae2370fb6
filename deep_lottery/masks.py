"""The pruning mask: one boolean tensor per prunable weight (True = kept).

Prunable tensors are the ``.weight`` of every Linear and Conv2d; biases and BatchNorm parameters
are never pruned (spec sec. 0). Vocabulary: *density* is the fraction of prunable weights kept,
*sparsity* = 1 - density; both are counted over all prunable tensors.

Enforcement (spec sec. 0, "Masks in PyTorch"): ``mask_gradients`` multiplies the gradients by the
mask before the optimizer reads them, and ``apply`` multiplies the weights by the mask after every
optimizer step. With both, pruned weights stay exactly zero through SGD with momentum, weight
decay (coupled or decoupled) and Adam: their gradient, decay term and moment buffers are all zero.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from .models import prunable_names

_set_grad_enabled = torch._C._set_grad_enabled


class Mask:
    """``name -> bool tensor`` for each prunable weight of a model."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        if not tensors:
            raise ValueError("a Mask needs at least one tensor")
        self._t: dict[str, torch.Tensor] = {}
        for name, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"mask entry {name!r} must be a tensor, got {type(t).__name__}")
            if t.dtype != torch.bool:
                if not bool(((t == 0) | (t == 1)).all()):
                    raise ValueError(f"mask entry {name!r} must hold only 0 and 1")
                t = t.bool()
            self._t[name] = t
        self._float: dict[tuple[str, torch.device, torch.dtype, tuple[int, ...]],
                          torch.Tensor] = {}

    # construction -------------------------------------------------------------------------
    @classmethod
    def ones_like(cls, model: nn.Module) -> Mask:
        """The all-kept mask of ``model`` (level 0 of IMP)."""
        params = dict(model.named_parameters())
        return cls({n: torch.ones_like(params[n], dtype=torch.bool) for n in prunable_names(model)})

    # container protocol -------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._t[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self._t.items())

    def names(self) -> list[str]:
        return list(self._t)

    def to(self, device: torch.device | str) -> Mask:
        return Mask({n: t.to(device) for n, t in self._t.items()})

    def cpu(self) -> Mask:
        return self.to("cpu")

    # counts -------------------------------------------------------------------------------
    @property
    def num_total(self) -> int:
        return sum(t.numel() for t in self._t.values())

    @property
    def num_kept(self) -> int:
        return int(sum(int(t.sum()) for t in self._t.values()))

    @property
    def density(self) -> float:
        """Fraction of prunable weights kept."""
        return self.num_kept / self.num_total

    @property
    def sparsity(self) -> float:
        """Fraction of prunable weights pruned, ``1 - density``."""
        return 1.0 - self.density

    def layer_density(self) -> dict[str, float]:
        return {n: float(t.float().mean()) for n, t in self._t.items()}

    def report(self) -> dict[str, object]:
        """open_lth's ``sparsity_report`` (``total``, ``unpruned``) plus densities per layer."""
        return {"total": self.num_total, "unpruned": self.num_kept, "density": self.density,
                "layers": {n: {"total": t.numel(), "unpruned": int(t.sum())}
                           for n, t in self._t.items()}}

    def is_subset_of(self, other: Mask) -> bool:
        """True when every weight kept here is also kept by ``other`` (masks only shrink)."""
        if set(self._t) != set(other._t):
            return False
        return all(bool((t & ~other._t[n].to(t.device)).sum() == 0) for n, t in self._t.items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask) or set(self._t) != set(other._t):
            return False
        return all(torch.equal(t.cpu(), other._t[n].cpu()) for n, t in self._t.items())

    __hash__ = None  # type: ignore[assignment]

    # enforcement --------------------------------------------------------------------------
    def _as(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The mask ``name`` as 0/1 values with the device, dtype and memory layout (strides) of
        ``like`` (cached). The layout matters on CUDA: ``torch._foreach_mul_`` takes its fused
        fast path only when the paired tensors share strides, which channels-last conv weights
        (and their gradients) do not with a contiguous mask."""
        key = (name, like.device, like.dtype, like.stride())
        cached = self._float.get(key)
        if cached is None:
            cached = torch.empty_like(like, requires_grad=False).copy_(self._t[name])
            self._float[key] = cached
        return cached

    def _pairs(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        params = dict(model.named_parameters())
        missing = [n for n in self._t if n not in params]
        if missing:
            raise ValueError(f"the model has no parameters named {missing}")
        for n, t in self._t.items():
            if params[n].shape != t.shape:
                raise ValueError(f"mask {n!r} has shape {tuple(t.shape)} but the parameter has "
                                 f"{tuple(params[n].shape)}")
        return [(n, params[n]) for n in self._t]

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """``w <- w * m`` for every prunable weight (in place)."""
        for n, p in self._pairs(model):
            p.mul_(self._as(n, p))

    @torch.no_grad()
    def mask_gradients(self, model: nn.Module) -> None:
        """``grad <- grad * m`` for every prunable weight that has a gradient."""
        for n, p in self._pairs(model):
            if p.grad is not None:
                p.grad.mul_(self._as(n, p.grad))

    def enforcer(self, model: nn.Module, weights_after_step: bool = True) -> MaskEnforcer:
        """A cheap per-step enforcer bound to ``model`` (parameters and float masks resolved
        once); ``weights_after_step=False`` masks only the gradients (``MaskEnforcer``)."""
        return MaskEnforcer(self, model, weights_after_step)

    # persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save as ``mask.pth``-style file plus ``sparsity_report.json`` beside it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({n: t.cpu() for n, t in self._t.items()}, path)
        (path.parent / "sparsity_report.json").write_text(json.dumps(self.report(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> Mask:
        return cls(torch.load(Path(path), map_location=device, weights_only=True))


class MaskEnforcer:
    """Masks gradients before, and weights after, each optimizer step of one model.

    Each call is one ``torch._foreach_mul_`` with autograd recording switched off directly
    (``torch._C._set_grad_enabled``, what ``torch.no_grad`` does inside): a ``no_grad`` context
    per call costs about 1.5 us more, a measurable share of a small model's step.

    ``weights_after_step=False`` skips the weights' multiplication: for an optimizer whose update
    of an entry is zero when the entry, its gradient and its state are zero (SGD with momentum,
    weight decay and Nesterov; Adam), masked gradients alone keep pruned weights exactly zero.
    ``check()`` then verifies it (the training loop calls it at every evaluation)."""

    def __init__(self, mask: Mask, model: nn.Module, weights_after_step: bool = True) -> None:
        pairs = mask._pairs(model)
        self.names = [n for n, _ in pairs]
        self.params = [p for _, p in pairs]
        self.masks = [mask._as(n, p) for n, p in pairs]
        self.weights_after_step = weights_after_step

    @torch.no_grad()
    def check(self) -> None:
        """Raise if a pruned weight is finite and not exactly zero (a diverged run's NaN or inf
        gradients reach pruned weights through any multiplicative mask, the weights' re-masking
        included: that is divergence, reported by the metrics, not a leak)."""
        for name, p, m in zip(self.names, self.params, self.masks):
            if bool(((p != 0) & (m == 0) & torch.isfinite(p)).any()):
                raise RuntimeError(f"a pruned entry of {name} is no longer zero: the optimizer "
                                   f"does not keep zeros; register it without keeps_zeros")

    def before_step(self) -> None:
        grads = [p.grad for p in self.params]
        previous = torch.is_grad_enabled()
        _set_grad_enabled(False)
        try:
            try:
                torch._foreach_mul_(grads, self.masks)
            except TypeError:  # some parameter has no gradient (None): mask the others
                for g, m in zip(grads, self.masks):
                    if g is not None:
                        g.mul_(m)
        finally:
            _set_grad_enabled(previous)

    def after_step(self) -> None:
        if not self.weights_after_step:
            return
        previous = torch.is_grad_enabled()
        _set_grad_enabled(False)
        try:
            torch._foreach_mul_(self.params, self.masks)
        finally:
            _set_grad_enabled(previous)
