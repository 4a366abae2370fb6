"""Edge-Popup training throughput: our score layers against allenai/hidden-networks' ``GetSubnet``,
in one run.

Model: the bias-free 784-300-100-10 MLP of Edge-Popup (Ramanujan et al. 2020), signed-constant
weights, keeping a fraction ``--density`` (default 0.5) of each layer; SGD lr 0.1, momentum 0.9,
weight decay 5e-4 on the scores (the MNIST example's settings), batch 128, on MNIST-shaped inputs
(the real MNIST test split when the data directory holds it, else Gaussian images). Measured, with
the same thread count on every side (1 by default, ``--threads``), in iterations per second:

* reference: what hidden-networks does, written here in plain PyTorch: a ``GetSubnet`` autograd
  function that sorts all the scores of the layer on every forward pass
  (``scores.flatten().sort()``; the lowest ``int((1 - k) numel)`` become 0, the rest 1;
  straight-through backward), ``weight * subnet`` into ``F.linear``, ``torch.optim.SGD`` over
  the scores, batches by indexing a shuffled permutation;
* ours, same loop: our ``ScoreLinear`` model (``build_model("mlp", layers="score")``; top-k by
  selection: ``numpy.partition`` on the CPU, ``torch.kthvalue`` elsewhere) in exactly the
  reference's loop and optimizer. It starts from the reference's weights and scores and sees the
  same batches, so both train the same thing (with k = 1/2 and an even ``numel`` both keep
  ``numel / 2`` weights per layer): the scores of a short run are compared before timing. They
  agree bit for bit until two ``|S|`` tie at the threshold, which the reference's sort breaks
  arbitrarily and ours by the lower flat index (with 235,200 float32 scores in one layer that
  happens within tens of iterations); the runs then diverge as any two chaotic trajectories do;
* ours, ``train_scores``: the project's training loop (fused SGD where available, epoch-seeded
  batches; evaluation only at the start and end, over a 2,560-example training split and tiny
  validation / test splits).

Rounds are interleaved (every method once per round, in a rotating order) and the ratio
ours / reference is taken within each round; the median over rounds is reported. The cost of the
mask alone (``top_k_mask`` vs. the reference's sort-and-scatter) is timed the same way for a
784x300 linear layer and a 64x64x3x3 convolution.

Run ``python benchmarks/bench_edge_popup.py`` (writes ``results/benchmarks/edge_popup.csv``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from mnist_shaped_data import mnist_or_gaussian
from torch import nn
from torch.nn import functional as F  # noqa: N812

from deep_lottery.data import Splits
from deep_lottery.device import generator
from deep_lottery.edge_popup import train_scores
from deep_lottery.layers import kept_count, top_k_mask
from deep_lottery.models import build_model
from deep_lottery.training import TrainConfig

BATCH, LR, MOMENTUM, WEIGHT_DECAY = 128, 0.1, 0.9, 5e-4
N_TRAIN = 20 * BATCH


# --- the reference: allenai/hidden-networks ----------------------------------------------------

class GetSubnet(torch.autograd.Function):
    """hidden-networks ``utils/conv_type.py``: sort every score, zero the lowest
    ``int((1 - k) numel)``, one the rest; the backward pass is straight-through."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, k: float) -> torch.Tensor:  # noqa: ANN401
        out = scores.clone()
        _, idx = scores.flatten().sort()
        j = int((1 - k) * scores.numel())
        flat_out = out.flatten()  # shares memory with out
        flat_out[idx[:j]] = 0
        flat_out[idx[j:]] = 1
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN401
        return g, None


class SubnetLinear(nn.Linear):
    """hidden-networks' ``SubnetConv`` as a linear layer: frozen weight, trainable scores."""

    def __init__(self, in_features: int, out_features: int, k: float) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.k = k
        self.scores = nn.Parameter(torch.empty_like(self.weight))
        nn.init.kaiming_uniform_(self.scores, a=math.sqrt(5))
        self.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        subnet = GetSubnet.apply(self.scores.abs(), self.k)
        return F.linear(x, self.weight * subnet)


class ReferenceMLP(nn.Module):
    def __init__(self, k: float) -> None:
        super().__init__()
        self.hidden = nn.ModuleList([SubnetLinear(784, 300, k), SubnetLinear(300, 100, k)])
        self.fc = SubnetLinear(100, 10, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.fc(x)


# --- models, data, loops -----------------------------------------------------------------------

def ours_model(density: float) -> nn.Module:
    return build_model("mlp", seed=0, init="signed_constant", layers="score", density=density,
                       hidden=(300, 100), bias=False)


def reference_model(density: float) -> nn.Module:
    """The reference with our model's weights and scores (same names), so both train alike."""
    model = ReferenceMLP(density)
    model.load_state_dict(ours_model(density).state_dict())
    return model


def plain_loop(model: nn.Module, splits: Splits, iterations: int) -> float:
    """hidden-networks' training step (SGD over the scores, index batches); iterations / s."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    x_all, y_all = splits.train.x, splits.train.y
    g = generator(1)
    done = 0
    model.train()
    t0 = time.perf_counter()
    while done < iterations:
        perm = torch.randperm(len(x_all), generator=g)
        for i in range(0, len(x_all) - BATCH + 1, BATCH):
            idx = perm[i:i + BATCH]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == iterations:
                break
    return iterations / (time.perf_counter() - t0)


def run_reference(splits: Splits, density: float, iterations: int) -> tuple[float, nn.Module]:
    model = reference_model(density)
    return plain_loop(model, splits, iterations), model


def run_ours_loop(splits: Splits, density: float, iterations: int) -> tuple[float, nn.Module]:
    model = ours_model(density)
    return plain_loop(model, splits, iterations), model


def run_ours_train_scores(splits: Splits, density: float, iterations: int
                          ) -> tuple[float, nn.Module]:
    model = ours_model(density)
    cfg = TrainConfig(iterations=iterations, batch_size=BATCH, optimizer="sgd", lr=LR,
                      momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, eval_every=iterations + 1,
                      amp=False)
    t0 = time.perf_counter()
    train_scores(model, splits, cfg, task="classification", device=torch.device("cpu"))
    return iterations / (time.perf_counter() - t0), model


def scores_gap(a: nn.Module, b: nn.Module) -> float:
    """Largest |difference| of the scores of two models of the same layout."""
    sa = {k: v for k, v in a.state_dict().items() if k.endswith("scores")}
    sb = {k: v for k, v in b.state_dict().items() if k.endswith("scores")}
    assert set(sa) == set(sb) and sa
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa)


# --- the mask alone ----------------------------------------------------------------------------

def per_call_seconds(fn: Callable[[], object], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def mask_cost(shape: tuple[int, ...], density: float, rounds: int, calls: int
              ) -> list[dict[str, Any]]:
    scores = torch.empty(shape)
    nn.init.kaiming_uniform_(scores, a=math.sqrt(5), generator=generator(0))
    magnitudes = scores.abs()
    k = kept_count(density, scores.numel())
    ours_mask = top_k_mask(magnitudes, k)
    reference_mask = GetSubnet.forward(None, magnitudes, density)
    assert torch.equal(ours_mask, reference_mask), "the two masks differ"
    methods = {"ours: top_k_mask (selection)": lambda: top_k_mask(magnitudes, k),
               "reference: GetSubnet (full sort)": lambda: GetSubnet.forward(None, magnitudes,
                                                                             density)}
    for fn in methods.values():  # warm-up
        per_call_seconds(fn, 3)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            times[name].append(per_call_seconds(fn, calls))
    ref = times["reference: GetSubnet (full sort)"]
    rows = []
    for name, t in times.items():
        ratios = [r / s for r, s in zip(ref, t)]  # speed-up of this method over the reference
        rows.append({"kind": "mask", "shape": "x".join(map(str, shape)), "method": name,
                     "us_per_call": statistics.median(t) * 1e6,
                     "median_speedup_vs_reference": statistics.median(ratios)})
    return rows


# --- main --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--mask-calls", type=int, default=50)
    parser.add_argument("--out", default="results/benchmarks/edge_popup.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits, source = mnist_or_gaussian(N_TRAIN, 100)
    print(f"Edge-Popup 784-300-100-10 (no bias), density {args.density}, batch {BATCH}, SGD "
          f"lr {LR} momentum {MOMENTUM} wd {WEIGHT_DECAY}, {args.iterations} iterations x "
          f"{args.rounds} rounds, {args.threads} thread(s), data: {source}, "
          f"torch {torch.__version__}")

    runs = {"reference: GetSubnet (sort), plain loop": run_reference,
            "ours: ScoreLinear, same plain loop": run_ours_loop,
            "ours: train_scores": run_ours_train_scores}
    names = list(runs)
    warm = {name: fn(splits, args.density, 10)[1] for name, fn in runs.items()}  # warm-up
    gap = scores_gap(warm[names[0]], warm[names[1]])
    print(f"same computation: after 10 iterations, largest |score difference| ours (same loop) "
          f"vs reference = {gap:.2e}" + (" (bit for bit)" if gap == 0 else
                                          " (a tie at the threshold, broken differently)"))
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate the order
        for name in order:
            rates[name].append(runs[name](splits, args.density, args.iterations)[0])
    reference = rates[names[0]]
    rows = []
    for name, r in rates.items():
        ratios = [a / b for a, b in zip(r, reference)]
        rows.append({"kind": "training", "shape": "784-300-100-10", "method": name,
                     "iterations_per_s": statistics.median(r),
                     "median_ratio_vs_reference": statistics.median(ratios),
                     "min_ratio": min(ratios), "max_ratio": max(ratios)})
    training = pd.DataFrame(rows)
    print(training[["method", "iterations_per_s", "median_ratio_vs_reference", "min_ratio",
                    "max_ratio"]].to_string(index=False, float_format=lambda v: f"{v:,.2f}"))

    mask_rows = []
    for shape in ((300, 784), (64, 64, 3, 3)):
        mask_rows += mask_cost(shape, args.density, args.rounds, args.mask_calls)
    masks = pd.DataFrame(mask_rows)
    print(masks[["shape", "method", "us_per_call", "median_speedup_vs_reference"]].to_string(
        index=False, float_format=lambda v: f"{v:,.2f}"))

    table = pd.concat([training, masks], ignore_index=True)
    for key, value in (("threads", args.threads), ("iterations", args.iterations),
                       ("rounds", args.rounds), ("density", args.density), ("data", source),
                       ("torch", torch.__version__)):
        table[key] = value
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return table


if __name__ == "__main__":
    main()
