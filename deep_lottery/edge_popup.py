"""Edge-Popup (Ramanujan et al., CVPR 2020) and PGD + Edge-Popup (Xiong, Liao, Kyrillidis 2023).

* Edge-Popup trains only the scores of a score-layer model (``layers.Score``): the weights stay
  at their random initialization and each layer keeps the top ``density`` fraction of ``|S|``.
  ``train_scores`` runs the project's one training loop (``training.train``) on such a model;
  weight decay of the optimizer then acts on the scores, the only trainable parameters.
* ``export_subnetwork`` turns a score model into an ordinary dense model holding ``W * m`` and
  the ``Mask`` ``m``: the IMP controls, curvature probes and every other tool take it as it is,
  and its outputs equal the score model's exactly.
* Xiong et al.'s Algorithm 1 (spec sec. 5): projected SGD that keeps ``||W - W_0||_max <= eps``
  (``LInfProjection``, a step hook: after each optimizer step ``W <- W_0 + clip(W - W_0, -eps,
  eps)`` elementwise), then Edge-Popup on the frozen ``W_T`` at pruned fractions ``s``
  (density ``1 - s``). ``s = 0`` is the projected SGD network itself. ``eps`` is in absolute
  weight units; ``clip_report`` also gives it relative to each layer's initial weight standard
  deviation, with the share of weights at the bound.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lottery_common import check_float

from .data import Splits
from .layers import SCORE_LAYERS, kept_count, top_k_mask
from .masks import Mask
from .models import prunable_names
from .training import StepHook, TrainConfig, TrainResult, train


def score_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{weight name: layer}`` of every score layer of ``model`` (error if there is none)."""
    found = {f"{name}.weight" if name else "weight": module
             for name, module in model.named_modules() if isinstance(module, SCORE_LAYERS)}
    if not found:
        raise ValueError("the model has no score layers; build it with layers='score'")
    return found


def set_density(model: nn.Module, density: float) -> nn.Module:
    """Set the kept fraction of every score layer to ``density`` (in (0, 1]); returns the model."""
    density = check_float("density", density, low=0.0, high=1.0, low_open=True)
    for layer in score_layers(model).values():
        layer.density = density
    return model


@torch.no_grad()
def subnetwork_mask(model: nn.Module) -> Mask:
    """The ``Mask`` of the subnetwork a score model selects (top-k of ``|S|`` per layer)."""
    tensors = {}
    for name, layer in score_layers(model).items():
        k = kept_count(layer.density, layer.scores.numel())
        tensors[name] = top_k_mask(layer.scores.abs(), k).bool()
    return Mask(tensors)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


@torch.no_grad()
def export_subnetwork(model: nn.Module) -> tuple[nn.Module, Mask]:
    """(dense model holding ``W * m``, ``Mask`` ``m``) of a score model; the model is not changed.

    Every score layer becomes a plain ``nn.Linear`` / ``nn.Conv2d`` of the same configuration with
    weight ``W * m`` and the same bias, every other module is copied, and the result computes
    exactly the score model's outputs. Its parameters all require gradients (an ordinary model).
    """
    mask = subnetwork_mask(model)
    dense = copy.deepcopy(model)
    for weight_name, layer in score_layers(dense).items():
        module_name = weight_name[: -len(".weight")] if weight_name != "weight" else ""
        if isinstance(layer, nn.Conv2d):
            plain: nn.Module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                         stride=layer.stride, padding=layer.padding,
                                         dilation=layer.dilation, groups=layer.groups,
                                         bias=layer.bias is not None,
                                         padding_mode=layer.padding_mode)
        else:
            plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        plain = plain.to(device=layer.weight.device, dtype=layer.weight.dtype)
        plain.weight.copy_(layer.weight * mask[weight_name].to(layer.weight))
        if layer.bias is not None:
            plain.bias.copy_(layer.bias)
        if module_name:
            _replace(dense, module_name, plain)
        else:
            dense = plain
    dense.requires_grad_(True)
    if set(prunable_names(dense)) != set(mask.names()):
        raise ValueError("export covers only models whose prunable layers are all score layers")
    return dense, mask


@torch.no_grad()
def load_weights(score_model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Copy the weights (and every other entry) of a dense model's ``state`` into a score model
    of the same architecture, keeping its scores; Xiong's Edge-Popup on ``W_T``."""
    own = score_model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("scores")]
    extra = [k for k in state if k not in own]
    if missing or extra:
        raise ValueError(f"state does not fit the score model: missing {missing}, unexpected "
                         f"{extra}")
    for key, value in state.items():
        own[key].copy_(value)
    return score_model


def train_scores(model: nn.Module, splits: Splits, cfg: TrainConfig, *, task: str,
                 device: torch.device, progress: bool = False, desc: str = "edge-popup"
                 ) -> TrainResult:
    """Edge-Popup: train the scores of ``model`` (weights frozen) with the one training loop."""
    layers = score_layers(model)
    for layer in layers.values():
        layer.weight.requires_grad_(False)
        if layer.bias is not None:
            layer.bias.requires_grad_(False)
        layer.scores.requires_grad_(True)
    return train(model, None, splits, cfg, task=task, device=device, progress=progress, desc=desc)


class LInfProjection:
    """Step hook keeping ``||W - W_0||_max <= eps`` for the named weights (Xiong's Algorithm 1).

    ``after_step``: ``W <- W_0 + clamp(W - W_0, -eps, eps)``, in place. ``eps = 0`` pins every
    named weight to ``W_0``.
    """

    def __init__(self, model: nn.Module, names: Iterable[str], eps: float) -> None:
        self.eps = check_float("eps", eps, low=0.0)
        params = dict(model.named_parameters())
        names = list(names)
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(f"the model has no parameters {unknown}; it has {sorted(params)}")
        self.params = [params[n] for n in names]
        self.centers = [p.detach().clone() for p in self.params]

    def before_step(self) -> None:
        return None

    @torch.no_grad()
    def after_step(self) -> None:
        for p, c in zip(self.params, self.centers):
            p.sub_(c).clamp_(-self.eps, self.eps).add_(c)


def pgd_train(model: nn.Module, splits: Splits, cfg: TrainConfig, eps: float, *, task: str,
              device: torch.device, names: Iterable[str] | None = None, progress: bool = False,
              hooks: Sequence[StepHook] = ()) -> TrainResult:
    """Projected SGD in the l_inf ball of radius ``eps`` around the current weights of ``names``
    (default: every prunable weight); Algorithm 1's first phase. ``hooks`` act on every step
    before the projection (their ``after_step`` sees the unprojected iterate)."""
    model.to(device)
    projection = LInfProjection(model, prunable_names(model) if names is None else names, eps)
    return train(model, None, splits, cfg, task=task, device=device,
                 hooks=[*hooks, projection], progress=progress, desc=f"pgd eps={eps:g}")


@torch.no_grad()
def clip_report(initial: Mapping[str, torch.Tensor], final: Mapping[str, torch.Tensor],
                eps: float, names: Iterable[str], rtol: float = 1e-6) -> dict[str, Any]:
    """How the PGD iterate sits in the ball, per layer and overall.

    Per layer: ``max |W - W_0|`` (``max_shift``), the share of weights with
    ``|W - W_0| >= eps (1 - rtol) - u (|W_0| + eps)`` (``share_at_bound``; ``u`` the machine
    epsilon of the weights' dtype: ``W_0 + clip(W - W_0)`` is rounded to it, so a clipped weight
    can sit about an ulp of ``|W_0| + eps`` inside the ball), the initial weight standard deviation
    and ``eps`` relative to it. Overall: the largest shift and the share at the bound of all the
    weights together.
    """
    eps = check_float("eps", eps, low=0.0)
    layers, at_bound, total, max_shift = {}, 0, 0, 0.0
    for n in names:
        w0 = initial[n].detach().double().cpu()
        shift = (final[n].detach().double().cpu() - w0).abs()
        dtype = final[n].dtype
        slack = torch.finfo(dtype).eps * (w0.abs() + eps) if dtype.is_floating_point else 0.0
        n_at = int((shift >= eps * (1 - rtol) - slack).sum()) if eps > 0 else shift.numel()
        std = float(w0.std())
        layers[n] = {"max_shift": float(shift.max()), "share_at_bound": n_at / shift.numel(),
                     "init_std": std, "eps_over_std": eps / std if std > 0 else float("inf")}
        at_bound += n_at
        total += shift.numel()
        max_shift = max(max_shift, float(shift.max()))
    return {"layers": layers, "max_shift": max_shift, "share_at_bound": at_bound / total}
