"""Masked training throughput: our IMP training loop against plain PyTorch loops, in one run
(issue 5's benchmark, extended to Conv-4 and ResNet-20 by issue 12).

Models, each under the mask of 5 layer-wise IMP levels (20% of every layer per level, 10% of the
output layer; density about 0.33), on MNIST-shaped inputs (the real MNIST test split when the data
directory holds it, else Gaussian images), with the paper's optimizer for the net:

* Lenet-300-100: Adam lr 1.2e-3, batch 60 (Frankle & Carbin);
* Conv-4 (``build_model("conv4", input_shape=(1, 28, 28), width=...)``): SGD lr 0.01, momentum
  0.9, weight decay 1e-4 (the dense Conv-4 baseline of Ramanujan et al.), batch 60; on the CPU at
  ``width`` 0.25 (16/16/32/32 channels) by default to keep the run short, full width on CUDA;
* ResNet-20 (``build_model("resnet20", input_shape=(1, 28, 28), width=...)``, 1 input channel):
  SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128 (open_lth); ``width`` 8 on the CPU by
  default, the standard 16 on CUDA.

Sides, with the same thread count (``--threads``, 1 by default), mask, initial weights, data,
optimizer hyperparameters and, on CUDA, bfloat16 autocast and (conv nets) channels-last layout,
as ``train`` uses there:

* ours: ``training.train`` (index batches of the tensors, per-step learning rate, the mask's
  ``MaskEnforcer`` on the gradients of every step (SGD and Adam keep pruned weights at zero
  without a second multiplication; checked at each evaluation), fused optimizer);
* plain + DataLoader: what a practitioner writes first: ``prune.custom_from_mask`` on each layer
  (a forward pre-hook recomputes ``weight = weight_orig * mask``), ``DataLoader(TensorDataset,
  shuffle=True)`` (pinned, non-blocking copies on CUDA), the default (non-fused) optimizer;
* plain + prune + index batches + fused: the same ``torch.nn.utils.prune`` model fed by index
  batches of tensors already on the device, with the fused optimizer (isolates the cost of the
  prune reparametrization);
* fastest plain: the fastest loop a practitioner writes: index batches of tensors already on the
  device, fused optimizer, gradients multiplied by the mask before the step and weights after it
  (``torch._foreach_mul_``, masks laid out like the weights), no per-step learning rate, no
  evaluation;

Issue 12's changes to ``training.py`` that this benchmark measured (formerly as a monkeypatched
``--proposed`` side, now in the loop): the batch order kept on the device, no per-step autocast
or tqdm wrappers when they are off, and for optimizers that keep zeros (SGD, Adam) the weights
no longer multiplied by the mask after each step (masked gradients suffice; checked at every
evaluation). Measured on 2 idle CPU cores, 9 rounds: Lenet-300-100 1.021x, Conv-4 1.005x,
ResNet-20 1.001x the fastest plain loop (before: 0.951x, 0.983x, 1.005x).

Fairness: only training steps are timed, on every side. ``train`` evaluates the validation set at
its first iteration and the validation, test and *training* sets at the end (forward passes over
all training images, which the former version of this benchmark timed as part of ours); a step
hook (and the same call in the plain loops) reads the clocks after the first ``--skip`` steps and
after the last one, so evaluation, setup and the first steps' allocations are left out everywhere
(``eval_every`` is beyond the run, so ``train`` evaluates nothing in between). The rate of the
whole ``train`` call is reported too, for information. On CUDA the clock is read after
``torch.cuda.synchronize()``.

Rounds are interleaved (every side of every model once per round, in shuffled order); the table
gives the median images/s and the median over rounds of the per-round ratio ours / side, by
wall time (with its min and max over rounds), by CPU time and by median step time (``StepClock``;
the last two resist the load of a shared machine). Runs are short and rounds many (15) because
on the CPU the speed of a run varies by a few percent with where its tensors land in memory.
Target (issue 12): ours >= 1.0x the fastest plain loop, per model (PASS/FAIL line, on the
wall-time ratio); also ours / (plain + DataLoader). Run ``python benchmarks/bench_imp.py
[--device cuda]`` (writes ``results/benchmarks/imp.csv``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

INPUT_SHAPE = (1, 28, 28)
# train()'s own evaluations (outside the timed steps) in batches of 250, not 2000: on the CPU a
# batch of 2000 conv activations is mmapped afresh (about 1e6 page faults a pass), 3-4x slower
EVAL_BATCH = 250
Rates = tuple[float, float, float]  # images/s by wall time, CPU time, median step (StepClock)
OURS = "ours"
LOADER = "plain + DataLoader"
PRUNE_FUSED = "plain + prune + index batches + fused"
FASTEST = "fastest plain"
SIDES = (OURS, LOADER, PRUNE_FUSED, FASTEST)


@dataclass(frozen=True)
class Bench:
    """One model's benchmark settings (``iterations`` per device type)."""

    label: str
    name: str
    batch: int
    optimizer: str
    lr: float
    iterations: dict[str, int]
    momentum: float = 0.0
    weight_decay: float = 0.0
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def build(self, device: torch.device) -> nn.Module:
        """The model on ``device``; channels-last for conv nets on CUDA, as ``train`` does."""
        model = build_model(self.name, seed=0, input_shape=INPUT_SHAPE,
                            **self.options.get(device.type, {})).to(device)
        if channels_last(model, device):
            model.to(memory_format=torch.channels_last)
        return model

    def make_optimizer(self, params: list[nn.Parameter], fused: bool) -> torch.optim.Optimizer:
        def make(flag: bool | None) -> torch.optim.Optimizer:
            if self.optimizer == "adam":
                return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay,
                                        fused=flag)
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                                   weight_decay=self.weight_decay, fused=flag)
        if not fused:
            return make(None)
        try:
            return make(True)
        except (RuntimeError, TypeError, ValueError):  # no fused kernel here
            return make(None)

    def train_config(self, iterations: int, amp: bool) -> TrainConfig:
        return TrainConfig(iterations=iterations, batch_size=self.batch, optimizer=self.optimizer,
                           lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                           eval_every=iterations + 1, amp=amp, eval_batch_size=EVAL_BATCH)


BENCHES = {
    "lenet_300_100": Bench("Lenet-300-100", "lenet_300_100", 60, "adam", 1.2e-3,
                           {"cpu": 500, "cuda": 3000}),
    "conv4": Bench("Conv-4", "conv4", 60, "sgd", 0.01, {"cpu": 40, "cuda": 1000}, momentum=0.9,
                   weight_decay=1e-4, options={"cpu": {"width": 0.25}, "cuda": {"width": 1.0}}),
    "resnet20": Bench("ResNet-20", "resnet20", 128, "sgd", 0.1, {"cpu": 15, "cuda": 600},
                      momentum=0.9, weight_decay=1e-4,
                      options={"cpu": {"width": 8}, "cuda": {"width": 16}}),
}


def channels_last(model: nn.Module, device: torch.device) -> bool:
    return device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def make_mask(model: nn.Module, levels: int = 5) -> Mask:
    """Layer-wise IMP mask of ``levels`` levels, by magnitude of the initial weights (CPU)."""
    names = Mask.ones_like(model).names()
    state = {n: p.detach().cpu() for n, p in model.named_parameters()}
    scores = keep_scores("large_final", {n: state[n] for n in names}, None, names, generator(1))
    return prune(model, Mask.ones_like(model).cpu(), scores, PruneConfig(fraction=0.2),
                 generator(2), levels=levels)


def step_samples(n: int, batch: int, first: int, last: int) -> int:
    """Images in steps ``first..last-1`` of epochs of ``n`` images in batches of ``batch`` (the
    last batch of an epoch short), the epoch structure of every side."""
    batch = min(batch, n)
    per_epoch = math.ceil(n / batch)
    short = n - (per_epoch - 1) * batch
    return sum(short if s % per_epoch == per_epoch - 1 else batch for s in range(first, last))


class StepClock:
    """A step hook reading the clocks after step ``skip`` and after step ``iterations`` (counted
    from 1), synchronizing CUDA first; the plain loops call ``after_step`` the same way.

    Three measures of the timed steps: wall time; the process's CPU time, which hardly sees the
    other processes of a shared machine (meaningless on CUDA, or with threads waiting on each
    other); and the median wall time of one step, which ignores the steps that another process
    preempted (the steady state, leaving out what happens once an epoch)."""

    def __init__(self, skip: int, iterations: int, device: torch.device) -> None:
        if not 0 < skip < iterations:
            raise ValueError(f"need 0 < skip < iterations, got {skip} and {iterations}")
        self.skip, self.iterations, self.cuda = skip, iterations, device.type == "cuda"
        self.count = 0
        self.start = self.end = (math.nan, math.nan)
        self.stamps: list[float] = []

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        self.count += 1
        if self.count > self.skip:
            self.stamps.append(time.perf_counter())
        if self.count == self.skip or self.count == self.iterations:
            if self.cuda:
                torch.cuda.synchronize()
            now = (time.perf_counter(), time.process_time())
            if self.count == self.skip:
                self.start = now
            else:
                self.end = now

    def rates(self, n_train: int, batch: int) -> Rates:
        """Images/s by (wall time, CPU time, median step) over the timed steps."""
        if self.count != self.iterations:
            raise RuntimeError(f"clock saw {self.count} of {self.iterations} steps")
        images = step_samples(n_train, batch, self.skip, self.iterations)
        steps = [b - a for a, b in zip(self.stamps, self.stamps[1:])]
        median_step = statistics.median(steps) if steps else self.stamps[0] - self.start[0]
        return (images / (self.end[0] - self.start[0]), images / (self.end[1] - self.start[1]),
                min(batch, n_train) / median_step)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(bench: Bench, splits: Splits, mask: Mask, iterations: int, skip: int,
         device: torch.device, amp: bool) -> tuple[Rates, float]:
    """(rates of the timed steps, wall-time images/s of the whole ``train`` call)."""
    model = bench.build(device)
    clock = StepClock(skip, iterations, device)
    sync(device)
    t0 = time.perf_counter()
    train(model, mask, splits, bench.train_config(iterations, amp), task="classification",
          device=device, hooks=(clock,))
    sync(device)
    whole = step_samples(len(splits.train), bench.batch, 0, iterations) / (time.perf_counter() - t0)
    return clock.rates(len(splits.train), bench.batch), whole


def prune_model(bench: Bench, mask: Mask, device: torch.device) -> nn.Module:
    model = bench.build(device)
    for name in mask.names():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        torch_prune.custom_from_mask(module, "weight", mask[name].to(device))
    return model


def index_batches(x: torch.Tensor, y: torch.Tensor, batch: int
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless epochs of shuffled index batches of tensors already on their device."""
    while True:
        perm = torch.randperm(len(x), device=x.device)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            yield x[idx], y[idx]


def plain(bench: Bench, train_data: TensorData, mask: Mask, iterations: int, skip: int,
          device: torch.device, amp: bool, side: str) -> Rates:
    """One plain-PyTorch side (``LOADER``, ``PRUNE_FUSED`` or ``FASTEST``)."""
    torch.manual_seed(0)
    clock = StepClock(skip, iterations, device)
    cast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp \
        else contextlib.nullcontext
    if side == FASTEST:
        model = bench.build(device)
        params = [model.get_parameter(n) for n in mask.names()]
        # 0/1 masks laid out like the weights (channels-last on CUDA): fused foreach kernels
        masks = [torch.empty_like(p, requires_grad=False).copy_(mask[n])
                 for n, p in zip(mask.names(), params)]
        with torch.no_grad():
            torch._foreach_mul_(params, masks)
    else:
        model = prune_model(bench, mask, device)
    model.train()
    last = channels_last(model, device)
    optimizer = bench.make_optimizer(list(model.parameters()), fused=side != LOADER)
    if side == LOADER:
        cpu = TensorData(train_data.x.cpu(), train_data.y.cpu())
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(cpu.x, cpu.y),
                                             batch_size=bench.batch, shuffle=True,
                                             pin_memory=device.type == "cuda")

        def epochs() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            while True:
                for x, y in loader:
                    yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        batches = epochs()
    else:
        batches = index_batches(train_data.x, train_data.y, bench.batch)
    for _ in range(iterations):
        x, y = next(batches)
        if last:
            x = x.contiguous(memory_format=torch.channels_last)
        with cast():
            out = model(x)
        loss = nn.functional.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if side == FASTEST:
            torch._foreach_mul_([p.grad for p in params], masks)
            optimizer.step()
            with torch.no_grad():
                torch._foreach_mul_(params, masks)
        else:
            optimizer.step()
        clock.after_step()
    # every plain model is masked at the end: check it, so that the comparison is fair
    for name in mask.names():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        assert bool((module.weight[~mask[name].to(device)] == 0).all()), name
    return clock.rates(len(train_data), bench.batch)


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def model_sides(bench: Bench, device: torch.device, amp: bool, iterations: int, skip: int,
                n_train: int, sides_wanted: tuple[str, ...] = SIDES
                ) -> tuple[dict[str, Callable[[], Rates]], dict[str, Any]]:
    """The sides of one model as zero-argument callables, and its description."""
    splits, source = mnist_or_gaussian(n_train, 500)
    # tiny validation and test splits: the evaluations of train() fall outside the timed steps
    # anyway; this keeps its whole-call rate about the training steps as far as it can be
    small = Splits(splits.train, TensorData(splits.val.x[:1], splits.val.y[:1]),
                   TensorData(splits.test.x[:1], splits.test.y[:1]), 10).to(device)
    mask = make_mask(bench.build(torch.device("cpu")))
    whole: list[float] = []

    def run_ours() -> Rates:
        rates, call = ours(bench, small, mask, iterations, skip, device, amp)
        whole.append(call)
        return rates

    sides: dict[str, Callable[[], Rates]] = {OURS: run_ours}
    for side in sides_wanted[1:]:
        sides[side] = (lambda s=side: plain(bench, small.train, mask, iterations, skip,
                                            device, amp, s))
    info = {"model": bench.label, "batch": bench.batch, "iterations": iterations,
            "optimizer": f"{bench.optimizer} lr {bench.lr:g}"
                         + (f" momentum {bench.momentum:g}" if bench.momentum else "")
                         + (f" wd {bench.weight_decay:g}" if bench.weight_decay else ""),
            "options": bench.options.get(device.type, {}), "density": mask.density,
            "data": source, "whole_call": whole}
    return sides, info


def summarize(rates: dict[str, list[Rates]], info: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of one model: median images/s and medians over rounds of the ratios ours / side."""
    rows = []
    for side in rates:
        def ratios(k: int, side: str = side) -> list[float]:
            return [o[k] / s[k] for o, s in zip(rates[OURS], rates[side])]
        wall = ratios(0)
        rows.append({"model": info["model"], "method": side,
                     "images_per_s": statistics.median(r[0] for r in rates[side]),
                     "ratio_ours_over": statistics.median(wall),
                     "ratio_min": min(wall), "ratio_max": max(wall),
                     "cpu_images_per_s": statistics.median(r[1] for r in rates[side]),
                     "cpu_ratio_ours_over": statistics.median(ratios(1)),
                     "step_images_per_s": statistics.median(r[2] for r in rates[side]),
                     "step_ratio_ours_over": statistics.median(ratios(2))})
    rows.append({"model": info["model"], "method": "ours, whole train() call (info)",
                 "images_per_s": statistics.median(info["whole_call"])})
    return rows


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--no-amp", action="store_true",
                        help="on CUDA, train in float32 on every side (default: bfloat16 "
                             "autocast on every side, as train() does)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--iterations", type=float, default=1.0,
                        help="multiplies each model's default number of iterations")
    parser.add_argument("--skip", type=int, default=5,
                        help="steps left out of the timing at the start of every run")
    parser.add_argument("--n-train", type=int, default=7000)
    parser.add_argument("--out", default="results/benchmarks/imp.csv")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type not in ("cpu", "cuda"):
        parser.error("--device must be cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch.cuda.is_available() is False")
    amp = device.type == "cuda" and not args.no_amp
    torch.set_num_threads(args.threads)
    load_start = load()
    print(f"device {device}{' (bf16 autocast on every side)' if amp else ''}, "
          f"{args.threads} thread(s), {args.rounds} interleaved rounds, torch {torch.__version__}, "
          f"load average at start {load_start}")
    sides_wanted = SIDES
    runs = {}
    for key in args.models:
        bench = BENCHES[key]
        iterations = max(args.skip + 2, round(bench.iterations[device.type] * args.iterations))
        sides, info = model_sides(bench, device, amp, iterations, args.skip, args.n_train,
                                  sides_wanted)
        runs[key] = (sides, info)
        print(f"{info['model']} {info['options'] or ''}: density {info['density']:.3f}, "
              f"batch {info['batch']}, {info['optimizer']}, {iterations} iterations "
              f"(first {args.skip} untimed), data: {info['data']}")
        for fn in sides.values():  # warm-up
            fn()
        info["whole_call"].clear()
    rates: dict[str, dict[str, list[Rates]]] = {k: {s: [] for s in sides_wanted} for k in runs}
    for r in range(args.rounds):
        for key, (sides, _) in runs.items():
            order = list(sides_wanted)
            random.Random(r).shuffle(order)  # no side always follows the same one
            for side in order:
                rates[key][side].append(sides[side]())
        print(f"  round {r + 1}/{args.rounds} done, load average {load()}", flush=True)
    load_end = load()
    rows = []
    for key, (_, info) in runs.items():
        for row in summarize(rates[key], info):
            rows.append({**row, "device": str(device), "amp": amp, "threads": args.threads,
                         "rounds": args.rounds, "iterations": info["iterations"],
                         "timed_steps": info["iterations"] - args.skip, "batch": info["batch"],
                         "optimizer": info["optimizer"],
                         "options": ";".join(f"{k}={v}" for k, v in info["options"].items()),
                         "density": info["density"], "data": info["data"],
                         "torch": torch.__version__, "load_start": load_start,
                         "load_end": load_end})
    table = pd.DataFrame(rows)
    shown = table.rename(columns={"images_per_s": "images/s", "ratio_ours_over": "ours/side",
                                  "ratio_min": "min", "ratio_max": "max",
                                  "cpu_ratio_ours_over": "by CPU time",
                                  "step_ratio_ours_over": "by median step"})
    print(shown[["model", "method", "images/s", "ours/side", "min", "max", "by CPU time",
                 "by median step"]].to_string(
        index=False, na_rep="", float_format=lambda v: f"{v:,.3f}" if v < 10 else f"{v:,.0f}"))
    print(f"(ours/side: median over rounds of the per-round ratio of wall-time images/s, min and "
          f"max over rounds; the same ratio by CPU time and by median step time)\n"
          f"load average: start {load_start}, end {load_end}")
    for _, info in runs.values():
        pick = table[table.model == info["model"]].set_index("method")
        fastest, loader = pick.at[FASTEST, "ratio_ours_over"], pick.at[LOADER, "ratio_ours_over"]
        print(f"{info['model']}: ours / (plain + DataLoader) = {loader:.3f}, ours / (fastest "
              f"plain) = {fastest:.3f} (by CPU time {pick.at[FASTEST, 'cpu_ratio_ours_over']:.3f}, "
              f"by median step {pick.at[FASTEST, 'step_ratio_ours_over']:.3f}): "
              f"{'PASS' if fastest >= 1.0 else 'FAIL'} (target: ours >= 1.0x the fastest plain "
              "loop)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return table


if __name__ == "__main__":
    main()
