"""Layer types: every model is written once against a ``LayerType`` and exists in every flavour.

A model builder asks its ``LayerType`` for ``linear(...)`` and ``conv(...)`` layers (as
hidden-networks' ``Builder`` does), so the same architecture comes out

* ``dense``  -- plain ``nn.Linear`` / ``nn.Conv2d``; pruning is an external ``Mask`` enforced by
  the training loop (``masks``), as in IMP;
* ``masked`` -- ``MaskedLinear`` / ``MaskedConv2d``: a fixed 0/1 buffer ``weight_mask`` multiplies
  the weight in the forward pass, so the output and every gradient ignore pruned weights even
  for code that never sees a ``Mask`` (functional calls, curvature probes);
* ``score``  -- ``ScoreLinear`` / ``ScoreConv2d`` of Edge-Popup (Ramanujan et al., CVPR 2020):
  frozen weights ``W``, a trainable score ``S`` per weight, and the forward weight
  ``W * m(S)`` with ``m`` = 1 on the ``k = max(1, floor(density * numel + 1/2))`` entries of
  largest ``|S|`` in the layer. The mask passes the gradient straight through to ``|S|``, so
  ``dL/dS = (dL/dW_eff * W) * sign(S)`` (spec sec. 4; the paper's update
  ``s_uv <- s_uv - alpha (dL/dI_v) w_uv Z_u``).

Every type subclasses ``nn.Linear`` / ``nn.Conv2d``, so code that finds prunable layers by class
(``prunable_names``) sees all of them. Ties among equal ``|S|`` at the k-th value are broken in
favour of the lower flat index (row-major order), a rule that does not depend on the device or
on the sort algorithm; ``top_k_mask`` finds the k-th value by selection (``numpy.partition`` on
the CPU, ``torch.kthvalue`` elsewhere), not by sorting the whole layer.

New flavours are one class pair plus ``@LAYER_TYPES.register(name)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (PyTorch's convention)

from lottery_common import Registry, check_float, check_int

LAYER_TYPES: Registry[type[LayerType]] = Registry("layer type")


def kept_count(density: float, numel: int) -> int:
    """Weights kept in a layer of ``numel`` weights at ``density``: ``max(1, floor(d n + 1/2))``."""
    return max(1, min(numel, math.floor(density * numel + 0.5)))


def top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """0/1 tensor (dtype of ``values``) with ones on the ``k`` largest entries of ``values``.

    Ties at the k-th largest value go to the lower flat indices. O(numel): the threshold comes
    from ``torch.kthvalue``, and no value leaves the device (no host synchronisation).
    """
    flat = values.detach().flatten()
    n = flat.numel()
    k = check_int("k", k, minimum=0, maximum=n)
    if k == n:
        return torch.ones_like(values)
    if k == 0:
        return torch.zeros_like(values)
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        # numpy's introselect is ~10x faster than torch.kthvalue on CPU; the same value
        threshold = torch.as_tensor(np.partition(flat.numpy(), n - k)[n - k])
    else:
        threshold = torch.kthvalue(flat, n - k + 1).values
    above = flat > threshold
    at = flat == threshold
    keep = above | (at & (torch.cumsum(at, 0) <= k - above.sum()))
    return keep.view_as(values).to(values.dtype)


class _StraightThrough(torch.autograd.Function):
    """Forward: the top-k 0/1 mask of the input; backward: the gradient unchanged."""

    @staticmethod
    def forward(ctx: Any, magnitudes: torch.Tensor, k: int) -> torch.Tensor:  # noqa: ANN401
        return top_k_mask(magnitudes, k)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN401
        return grad, None


def straight_through_top_k(scores: torch.Tensor, density: float) -> torch.Tensor:
    """Edge-Popup's mask ``m(S)`` of the top ``density`` fraction of ``|S|``, with the
    straight-through gradient to ``|S|``."""
    return _StraightThrough.apply(scores.abs(), kept_count(density, scores.numel()))


class LayerType:
    """Makes the prunable layers of a model; subclasses set ``linear_class`` and ``conv_class``."""

    name = "dense"
    linear_class: type[nn.Linear] = nn.Linear
    conv_class: type[nn.Conv2d] = nn.Conv2d

    def options(self) -> dict[str, Any]:
        """Keyword arguments every layer of this type receives."""
        return {}

    def linear(self, in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
        return self.linear_class(in_features, out_features, bias=bias, **self.options())

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             padding: int = 0, bias: bool = True) -> nn.Conv2d:
        return self.conv_class(in_channels, out_channels, kernel_size, stride=stride,
                               padding=padding, bias=bias, **self.options())

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


@LAYER_TYPES.register("dense")
class Dense(LayerType):
    """Plain ``nn.Linear`` and ``nn.Conv2d``."""


# --- masked ----------------------------------------------------------------------------------

class _MaskedMixin:
    """A 0/1 ``weight_mask`` buffer multiplies the weight in the forward pass."""

    weight: nn.Parameter

    def _init_mask(self) -> None:
        self.register_buffer("weight_mask", torch.ones_like(self.weight, dtype=torch.float32))

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.weight_mask.to(self.weight.dtype)

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor) -> None:
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, the weight "
                             f"{tuple(self.weight.shape)}")
        self.weight_mask.copy_(mask.to(self.weight_mask))


class MaskedLinear(_MaskedMixin, nn.Linear):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


class MaskedConv2d(_MaskedMixin, nn.Conv2d):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


@LAYER_TYPES.register("masked")
class Masked(LayerType):
    """Layers whose ``weight_mask`` buffer zeroes pruned weights in the forward pass."""

    name = "masked"
    linear_class = MaskedLinear
    conv_class = MaskedConv2d


# --- score (Edge-Popup) ----------------------------------------------------------------------

class _ScoreMixin:
    """Frozen weight and bias, trainable ``scores``; forward weight ``W * m(S)``."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_scores(self, density: float) -> None:
        self.density = check_float("density", density, low=0.0, high=1.0, low_open=True)
        self.scores = nn.Parameter(torch.empty_like(self.weight))
        fan_in = self.weight[0].numel()
        with torch.no_grad():  # hidden-networks: kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in))
            self.scores.uniform_(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)

    def subnet_mask(self) -> torch.Tensor:
        """``m(S)`` (0/1, the weight's dtype); straight-through when the scores need gradients."""
        if torch.is_grad_enabled() and self.scores.requires_grad:
            return straight_through_top_k(self.scores, self.density).to(self.weight.dtype)
        # not cached: fused optimizers update the scores without bumping their version counter
        return top_k_mask(self.scores.detach().abs(),
                          kept_count(self.density, self.scores.numel())).to(self.weight.dtype)

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.subnet_mask()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, density={self.density}"  # type: ignore[misc]


class ScoreLinear(_ScoreMixin, nn.Linear):
    def __init__(self, *args: Any, density: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_scores(density)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


class ScoreConv2d(_ScoreMixin, nn.Conv2d):
    def __init__(self, *args: Any, density: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_scores(density)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


@LAYER_TYPES.register("score")
class Score(LayerType):
    """Edge-Popup layers keeping the top ``density`` fraction of ``|S|`` per layer."""

    name = "score"
    linear_class = ScoreLinear
    conv_class = ScoreConv2d

    def __init__(self, density: float = 0.5) -> None:
        self.density = check_float("density", density, low=0.0, high=1.0, low_open=True)

    def options(self) -> dict[str, Any]:
        return {"density": self.density}


SCORE_LAYERS = (ScoreLinear, ScoreConv2d)
MASKED_LAYERS = (MaskedLinear, MaskedConv2d)


def layer_type(name: str | LayerType = "dense", **options: Any) -> LayerType:
    """The ``LayerType`` registered as ``name`` with its ``options`` (``density`` for "score")."""
    if isinstance(name, LayerType):
        if options:
            raise ValueError("options apply to a layer type given by name, not to an instance")
        return name
    cls = LAYER_TYPES[name]
    try:
        return cls(**options)
    except TypeError:
        raise ValueError(f"layer type {name!r} takes no options {sorted(options)}") from None
