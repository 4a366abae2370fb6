"""Masked training throughput: our IMP training loop against plain PyTorch with
``torch.nn.utils.prune``, in one run (issue 5's benchmark).

Model: Lenet-300-100 at the mask of 5 layer-wise IMP levels (fc 20%, output 10%; density about
0.33), Adam lr 1.2e-3, batch 60 (Frankle & Carbin's Lenet settings), on MNIST-shaped inputs (the
real MNIST test split when the data directory holds it, else Gaussian images). Measured, with the
same thread count on every side (1 by default, ``--threads``), as training samples per second:

* ours: ``training.train`` (data as tensors, epoch-seeded index batches, gradients and weights
  multiplied by the mask around every step), with evaluation disabled (``eval_every`` > iterations);
* plain + DataLoader: what a practitioner writes: ``prune.custom_from_mask`` on each layer (the
  forward pre-hook recomputes ``weight = weight_orig * mask``), ``DataLoader(TensorDataset,
  shuffle=True, batch_size=60)``, ``Adam``;
* plain + index batches: the same ``torch.nn.utils.prune`` model fed by the same tensor indexing as
  ours (removes the DataLoader's per-sample collation cost);
* plain + index batches + fused Adam: also the fused Adam kernel ours uses, which isolates the cost
  of the masking itself (pre-hook product and its backward vs. our two in-place products).

Target: ours / (plain + DataLoader) >= 1. Run ``python benchmarks/bench_imp.py`` (writes
``results/benchmarks/imp.csv``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from mnist_shaped_data import mnist_or_gaussian
from torch import nn
from torch.nn.utils import prune as torch_prune

from deep_lottery.data import Splits, TensorData
from deep_lottery.device import generator
from deep_lottery.masks import Mask
from deep_lottery.models import build_model
from deep_lottery.pruning import PruneConfig, keep_scores, prune
from deep_lottery.training import TrainConfig, train

BATCH, LR = 60, 1.2e-3


def make_mask(model: nn.Module, levels: int = 5) -> Mask:
    names = Mask.ones_like(model).names()
    state = dict(model.named_parameters())
    scores = keep_scores("large_final", {n: state[n] for n in names}, None, names, generator(1))
    return prune(model, Mask.ones_like(model), scores, PruneConfig(fraction=0.2), generator(2),
                 levels=levels)


def ours(splits: Splits, mask: Mask, iterations: int) -> float:
    model = build_model("lenet_300_100", seed=0)
    cfg = TrainConfig(iterations=iterations, batch_size=BATCH, lr=LR, eval_every=iterations + 1)
    small = Splits(splits.train, TensorData(splits.val.x[:1], splits.val.y[:1]),
                   TensorData(splits.test.x[:1], splits.test.y[:1]), 10)
    t0 = time.perf_counter()
    train(model, mask, small, cfg, task="classification", device=torch.device("cpu"))
    elapsed = time.perf_counter() - t0
    return iterations * BATCH / elapsed


def plain_model(mask: Mask) -> nn.Module:
    model = build_model("lenet_300_100", seed=0)
    for name in mask.names():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        torch_prune.custom_from_mask(module, "weight", mask[name].float())
    return model


def plain(splits: Splits, mask: Mask, iterations: int, loader: bool, fused: bool = False
          ) -> float:
    model = plain_model(mask)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=fused or None)
    torch.manual_seed(0)
    if loader:
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
            splits.train.x, splits.train.y), batch_size=BATCH, shuffle=True)
    x_all, y_all = splits.train.x, splits.train.y
    done = 0
    t0 = time.perf_counter()
    while done < iterations:
        if loader:
            batches = iter(data)
        else:
            perm = torch.randperm(len(x_all))
            batches = ((x_all[perm[i:i + BATCH]], y_all[perm[i:i + BATCH]])
                       for i in range(0, len(x_all), BATCH))
        for x, y in batches:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == iterations:
                break
    elapsed = time.perf_counter() - t0
    # the practitioner's model is masked by construction: check it, so the comparison is fair
    for name in mask.names():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        assert bool((module.weight[~mask[name]] == 0).all())
    return iterations * BATCH / elapsed


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/benchmarks/imp.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits, source = mnist_or_gaussian(7000, 500)
    mask = make_mask(build_model("lenet_300_100", seed=0))
    print(f"Lenet-300-100, density {mask.density:.3f}, batch {BATCH}, Adam, {args.iterations} "
          f"iterations, {args.threads} thread(s), data: {source}, torch {torch.__version__}")
    runs = {"ours": lambda: ours(splits, mask, args.iterations),
            "plain + DataLoader": lambda: plain(splits, mask, args.iterations, loader=True),
            "plain + index batches": lambda: plain(splits, mask, args.iterations, loader=False),
            "plain + index batches + fused Adam": lambda: plain(splits, mask, args.iterations,
                                                               loader=False, fused=True)}
    for fn in runs.values():  # warm-up
        fn()
    best = {name: max(fn() for _ in range(args.repeats)) for name, fn in runs.items()}
    rows = [{"method": name, "samples_per_s": rate, "ratio_ours_over": best["ours"] / rate,
             "threads": args.threads, "iterations": args.iterations, "density": mask.density,
             "data": source, "torch": torch.__version__}
            for name, rate in best.items()]
    table = pd.DataFrame(rows)
    print(table[["method", "samples_per_s", "ratio_ours_over"]].to_string(
        index=False, float_format=lambda v: f"{v:,.2f}"))
    ratio = best["ours"] / best["plain + DataLoader"]
    print(f"ours / (plain + DataLoader) = {ratio:.2f} (target >= 1: "
          f"{'met' if ratio >= 1 else 'NOT met'})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return table


if __name__ == "__main__":
    main()
