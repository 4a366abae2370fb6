"""Penalties on the kept weights of a ticket (Sakamoto & Sato 2022, Eq. 1), as step hooks.

* ``"l2_norm"``: ``lambda ||m * theta||^2``;
* ``"l2_init"``: ``lambda ||m * (theta - theta_ref)||^2``, ``theta_ref`` the weights the run
  starts from (the level's rewind point; the initialization with rewinding to iteration 0, the
  paper's ``theta_init``).

The sum runs over the prunable weights (``Mask`` names; biases and BatchNorm parameters are not
penalized). Eq. 1 has no factor 1/2 (our spec wrote ``lambda/2``; the paper wins), so the hook
adds ``2 lambda m * (theta - theta_ref)`` to the gradient after the mask has been applied to it
and before the optimizer step: with SAM the perturbation uses the loss gradient alone and the
penalty's gradient is added once, at w. Use ``weight_decay = 0`` with these penalties unless
both are meant.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lottery_common import Registry, check_float

from .masks import Mask

REGULARIZERS: Registry[Callable[[nn.Module, Mask | None, float], KeptWeightPenalty]] = Registry(
    "regularizer")
"""name -> ``(model, mask, coefficient) -> step hook``; ``"none"`` adds nothing."""


class KeptWeightPenalty:
    """Step hook adding ``2 lambda m * (theta - theta_ref)`` to the prunable weights' gradients.

    ``reference=None`` penalizes the norm (``theta_ref = 0``); otherwise the reference is a copy
    of the weights when the hook is made."""

    def __init__(self, model: nn.Module, mask: Mask | None, coefficient: float,
                 from_start: bool) -> None:
        self.coefficient = check_float("regularization", coefficient, low=0.0)
        mask = mask if mask is not None else Mask.ones_like(model)
        pairs = mask._pairs(model)
        self.params = [p for _, p in pairs]
        self.masks = [mask._as(n, p) for n, p in pairs]
        self.references = [p.detach().clone() for p in self.params] if from_start else None

    @torch.no_grad()
    def penalty(self) -> float:
        """``lambda sum ||m * (theta - theta_ref)||^2`` at the current weights."""
        diffs = self._differences()
        return self.coefficient * float(sum(float(d.pow(2).sum()) for d in diffs))

    def _differences(self) -> list[torch.Tensor]:
        weights = [p.detach() for p in self.params]
        if self.references is not None:
            weights = torch._foreach_sub(weights, self.references)
        return torch._foreach_mul(weights, self.masks)

    @torch.no_grad()
    def before_step(self) -> None:
        if self.coefficient == 0.0:
            return
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            raise ValueError("a penalized weight has no gradient (is it frozen?)")
        torch._foreach_add_(grads, self._differences(), alpha=2.0 * self.coefficient)

    def after_step(self) -> None:
        return None


@REGULARIZERS.register("l2_norm")
def _l2_norm(model: nn.Module, mask: Mask | None, coefficient: float) -> KeptWeightPenalty:
    return KeptWeightPenalty(model, mask, coefficient, from_start=False)


@REGULARIZERS.register("l2_init")
def _l2_init(model: nn.Module, mask: Mask | None, coefficient: float) -> KeptWeightPenalty:
    return KeptWeightPenalty(model, mask, coefficient, from_start=True)
