"""Pruning criteria and magnitude pruning, computed on the device (spec sec. 4).

A criterion gives every prunable weight a *keep score*; pruning removes the lowest-scoring
weights among those still kept (already-pruned weights are never re-chosen, so masks only shrink).
Ties are broken by a random permutation drawn from an explicit generator, and the number removed
is exact, so the density schedule is exact up to rounding:

* ``layerwise`` (Frankle & Carbin; [GR] ``prune_by_percent``): layer ``l`` loses
  ``round(f_l * kept_l)`` weights per level, with ``f_l`` = ``fraction`` for fully connected layers,
  ``conv_fraction`` for convolutions and ``output_fraction`` (default ``fraction / 2``) for the
  output layer. After L levels its density is ``(1 - f_l)^L`` up to rounding (0.8^L for 20%).
* ``global`` (open_lth ``sparse_global``): ``ceil(f * kept)`` weights are removed over all tensors
  not in ``ignore`` (open_lth removes one more; set ``open_lth_off_by_one`` for that parity).

Criteria (``CRITERIA``, Zhou et al. 2019 names): ``large_final`` |w_T| (standard IMP),
``small_final`` -|w_T|, ``random`` (uniform scores), ``large_init`` |w_0|, ``magnitude_increase``
|w_T| - |w_0|, ``movement`` |w_T - w_0|. A criterion is a function ``(final, init, generator) ->
scores`` of one tensor registered with ``@CRITERIA.register(name, needs_init=...)``.
``levels=L`` prunes straight to the density of L levels (one-shot).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lottery_common import Registry, check_float, check_int

from .masks import Mask
from .models import is_conv_weight

SCOPES = ("layerwise", "global")

Criterion = Callable[[torch.Tensor, "torch.Tensor | None", torch.Generator], torch.Tensor]
"""``(final weights, initial weights or None, generator) -> keep scores`` of one tensor."""


class CriterionRegistry(Registry[Criterion]):
    """Pruning criteria; ``needs_init`` names those that read the initial (rewind) weights."""

    def __init__(self) -> None:
        super().__init__("pruning criterion")
        self.needs_init: set[str] = set()

    def register(self, name: str, needs_init: bool = False) -> Callable[[Criterion], Criterion]:
        add = super().register(name)

        def wrapped(fn: Criterion) -> Criterion:
            if needs_init:
                self.needs_init.add(name)
            return add(fn)

        return wrapped

    def unregister(self, name: str) -> Criterion:
        self.needs_init.discard(name)
        return super().unregister(name)


CRITERIA = CriterionRegistry()


@CRITERIA.register("large_final")
def _large_final(w: torch.Tensor, w0: torch.Tensor | None, g: torch.Generator) -> torch.Tensor:
    return w.abs()


@CRITERIA.register("small_final")
def _small_final(w: torch.Tensor, w0: torch.Tensor | None, g: torch.Generator) -> torch.Tensor:
    return -w.abs()


@CRITERIA.register("random")
def _random(w: torch.Tensor, w0: torch.Tensor | None, g: torch.Generator) -> torch.Tensor:
    return torch.rand(w.shape, generator=g).to(w.device)


@CRITERIA.register("large_init", needs_init=True)
def _large_init(w: torch.Tensor, w0: torch.Tensor | None, g: torch.Generator) -> torch.Tensor:
    return w0.abs()


@CRITERIA.register("magnitude_increase", needs_init=True)
def _magnitude_increase(w: torch.Tensor, w0: torch.Tensor | None, g: torch.Generator
                        ) -> torch.Tensor:
    return w.abs() - w0.abs()


@CRITERIA.register("movement", needs_init=True)
def _movement(w: torch.Tensor, w0: torch.Tensor | None, g: torch.Generator) -> torch.Tensor:
    return (w - w0).abs()


@dataclass(frozen=True)
class PruneConfig:
    """How one IMP level prunes (fractions are of the weights still kept, per level)."""

    fraction: float = 0.2
    scope: str = "layerwise"
    conv_fraction: float | None = None
    output_fraction: float | None = None
    ignore: tuple[str, ...] = ()
    criterion: str = "large_final"
    open_lth_off_by_one: bool = False

    def __post_init__(self) -> None:
        check_float("fraction", self.fraction, low=0.0, high=1.0, high_open=True)
        for name in ("conv_fraction", "output_fraction"):
            value = getattr(self, name)
            if value is not None:
                check_float(name, value, low=0.0, high=1.0, high_open=True)
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        CRITERIA.check(self.criterion)


def keep_scores(criterion: str, final: Mapping[str, torch.Tensor],
                init: Mapping[str, torch.Tensor] | None, names: list[str],
                generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The keep score of every weight of the tensors ``names`` (higher = kept first)."""
    score_fn = CRITERIA[criterion]
    if criterion in CRITERIA.needs_init and init is None:
        raise ValueError(f"criterion {criterion!r} needs the initial (rewind) weights")
    out = {}
    for n in names:
        w = final[n].detach()
        w0 = None if init is None else init[n].detach().to(w.device)
        out[n] = score_fn(w, w0, generator).float()
    return out


def _unflatten(flat: torch.Tensor, mask: Mask, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Cut a flat keep vector (the ``names`` of ``mask`` concatenated) back into per-layer shapes."""
    out, start = {}, 0
    for n in names:
        size = mask[n].numel()
        out[n] = flat[start:start + size].view_as(mask[n])
        start += size
    return out


def drop_lowest(keep: torch.Tensor, score: torch.Tensor, n_drop: int,
                generator: torch.Generator) -> torch.Tensor:
    """``keep`` with its ``n_drop`` lowest-scoring kept entries set to False (random tie break)."""
    n_kept = int(keep.sum())
    n_drop = check_int("n_drop", n_drop, minimum=0, maximum=n_kept)
    flat_keep = keep.flatten()
    if n_drop == 0:
        return keep.clone()
    s = torch.where(flat_keep, score.flatten().to(keep.device),
                    torch.tensor(-math.inf, device=keep.device))
    perm = torch.randperm(s.numel(), generator=generator).to(keep.device)
    order = perm[torch.sort(s[perm], stable=True).indices]
    n_pruned = s.numel() - n_kept
    new = flat_keep.clone()
    new[order[:n_pruned + n_drop]] = False
    return new.view_as(keep)


def layer_fractions(model: nn.Module, mask: Mask, config: PruneConfig) -> dict[str, float]:
    """Per-level pruning fraction of each tensor in layer-wise pruning."""
    output = getattr(model, "output_layer", None)
    out = {}
    for n in mask.names():
        if n == output:
            out[n] = config.output_fraction if config.output_fraction is not None \
                else config.fraction / 2
        elif config.conv_fraction is not None and is_conv_weight(model, n):
            out[n] = config.conv_fraction
        else:
            out[n] = config.fraction
    return out


def prune(model: nn.Module, mask: Mask, scores: Mapping[str, torch.Tensor], config: PruneConfig,
          generator: torch.Generator, levels: int = 1) -> Mask:
    """The mask after ``levels`` levels' worth of pruning of ``mask`` by ``scores`` (one call)."""
    levels = check_int("levels", levels, minimum=0)
    new: dict[str, torch.Tensor] = {n: t.clone() for n, t in mask.items()}
    unknown = [n for n in config.ignore if n not in new]
    if unknown:
        raise ValueError(f"ignore names {unknown} are not prunable tensors; allowed: {mask.names()}")
    if config.scope == "layerwise":
        for n, f in layer_fractions(model, mask, config).items():
            if n in config.ignore:  # left as they are, as in global pruning
                continue
            kept = int(mask[n].sum())
            f_total = 1.0 - (1.0 - f) ** levels
            n_drop = min(kept, math.floor(f_total * kept + 0.5))
            new[n] = drop_lowest(mask[n], scores[n], n_drop, generator)
        return Mask(new)
    names = [n for n in mask.names() if n not in config.ignore]
    keep = torch.cat([mask[n].flatten() for n in names])
    score = torch.cat([scores[n].flatten().to(keep.device) for n in names])
    f_total = 1.0 - (1.0 - config.fraction) ** levels
    kept = int(keep.sum())
    n_drop = math.ceil(f_total * kept) + (1 if config.open_lth_off_by_one and levels else 0)
    flat = drop_lowest(keep, score, min(n_drop, kept), generator)
    return Mask({**new, **_unflatten(flat, mask, names)})


def prune_like(mask: Mask, scores: Mapping[str, torch.Tensor], like: Mask, scope: str,
               generator: torch.Generator, ignore: tuple[str, ...] = ()) -> Mask:
    """Prune ``mask`` by ``scores`` down to the kept counts of ``like``: per tensor
    (``layerwise``) or in total over the tensors not in ``ignore`` (``global``).

    Used by the one-shot control so that it is compared with IMP at exactly equal counts.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if set(mask.names()) != set(like.names()):
        raise ValueError("mask and like must cover the same tensors")
    new = {n: t.clone() for n, t in mask.items()}
    if scope == "layerwise":
        for n in mask.names():
            n_drop = int(mask[n].sum()) - int(like[n].sum())
            if n_drop < 0:
                raise ValueError(f"like keeps more weights of {n!r} than mask does")
            new[n] = drop_lowest(mask[n], scores[n], n_drop, generator)
        return Mask(new)
    names = [n for n in mask.names() if n not in ignore]
    keep = torch.cat([mask[n].flatten() for n in names])
    score = torch.cat([scores[n].flatten().to(keep.device) for n in names])
    n_drop = int(keep.sum()) - sum(int(like[n].sum()) for n in names)
    if n_drop < 0:
        raise ValueError("like keeps more weights than mask does")
    flat = drop_lowest(keep, score, n_drop, generator)
    return Mask({**new, **_unflatten(flat, mask, names)})


def shuffle_mask(mask: Mask, scope: str, generator: torch.Generator,
                 ignore: tuple[str, ...] = ()) -> Mask:
    """Random pruning control: the same number of kept weights, placed uniformly at random.

    ``layerwise`` permutes each tensor's entries (keeps per-layer densities); ``global`` permutes
    the concatenation of all tensors not in ``ignore``. Tensors in ``ignore`` are kept as they are.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    new = {n: t.clone() for n, t in mask.items()}
    names = [n for n in mask.names() if n not in ignore]
    if scope == "layerwise":
        for n in names:
            flat = mask[n].flatten()
            perm = torch.randperm(flat.numel(), generator=generator).to(flat.device)
            new[n] = flat[perm].view_as(mask[n])
        return Mask(new)
    flat = torch.cat([mask[n].flatten() for n in names])
    flat = flat[torch.randperm(flat.numel(), generator=generator).to(flat.device)]
    return Mask({**new, **_unflatten(flat, mask, names)})
