"""Hutchinson trace cost per probe on a masked Lenet-5: ``deep_lottery.curvature`` against
PyHessian's algorithm (amirgholami/PyHessian ``hessian.trace``), on the same probes.

Model and data: ``build_model("lenet5", seed=0, input_shape=(1, 28, 28))`` (61,706 parameters),
magnitude-pruned to density 0.8^5 = 0.328 (global ``large_final``, five levels at once) with the
mask applied to the weights; ``--n`` MNIST-shaped images (the real MNIST test split when the data
directory holds it, else Gaussian images), one batch, model in ``eval()``, mean cross-entropy.

Methods, all measuring ``v^T M H M v`` for the same masked Rademacher probes ``v`` (ours draws
them from the seed; the reference gets the same vectors cut into per-parameter tensors):

* reference: PyHessian's single-batch path written as it is: ``loss.backward(create_graph=True)``
  once, ``gradsH = [p.grad + 0.]``, then per probe ``torch.autograd.grad(gradsH, params,
  grad_outputs=v, only_inputs=True, retain_graph=True)`` and ``group_product(Hv, v).item()``;
* ours, ``hvp="graph"`` (the default for one batch): the same reverse-over-reverse product through
  a gradient graph built once, on one flat parameter vector through ``functional_call``;
* ours, ``hvp="jvp"``: torch.func forward-over-reverse, ``jvp(grad(f), (theta,), (v,))``, which
  redoes the forward and backward pass in every product (the default for several batches);
* ours, ``hvp="linearize"``: ``torch.func.linearize`` of the gradient, traced once.

Each method runs ``--probes`` probes per round (a fixed count, ``tol=None``), rounds interleaved in
a rotating order. Reported: the one-off setup (gradient graph or tracing; the first product's
forward-mode warm-up happens in the untimed warm-up round), the median time per probe after setup,
and the median within-round speed-up over the reference (reference time / method time, per probe
after setup). Before timing, each method's samples must equal the reference's to 1e-4 of the
largest ``|v^T H v|`` (one sample can cancel to near zero, so not relative to itself).

Run ``python benchmarks/bench_hessian.py`` (writes ``results/benchmarks/hessian.csv``);
``--device cuda`` on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from mnist_shaped_data import mnist_or_gaussian
from torch import nn

from deep_lottery.curvature import HessianOperator, hutchinson_trace, rademacher
from deep_lottery.data import TensorData
from deep_lottery.device import choose_device, generator
from deep_lottery.masks import Mask
from deep_lottery.models import build_model, prunable_names
from deep_lottery.pruning import PruneConfig, keep_scores, prune
from lottery_common import derive_seed

LEVELS = 5  # density 0.8^5 = 0.328

REFERENCE = "reference: PyHessian trace (create_graph once, autograd.grad per probe)"
OURS = {"graph": "ours: hvp='graph' (default, one batch)",
        "jvp": "ours: hvp='jvp' (torch.func, recomputes)",
        "linearize": "ours: hvp='linearize' (traced once)"}


# --- the reference: PyHessian, as written -------------------------------------------------------

def group_product(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> torch.Tensor:
    """PyHessian ``utils.group_product``."""
    return sum(torch.sum(x * y) for (x, y) in zip(xs, ys))


def get_params_grad(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """PyHessian ``utils.get_params_grad``."""
    params, grads = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        params.append(param)
        grads.append(0. if param.grad is None else param.grad + 0.)
    return params, grads


def reference_trace(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    probes: list[list[torch.Tensor]] | Callable[[int], list[torch.Tensor]],
                    count: int) -> tuple[list[float], float]:
    """PyHessian ``hessian.__init__`` (single batch) + ``trace`` with our probes;
    (samples, setup seconds)."""
    t0 = time.perf_counter()
    model.eval()
    outputs = model(x)
    loss = nn.functional.cross_entropy(outputs, y)
    with warnings.catch_warnings():  # torch warns about the .grad reference cycle; freed below
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph")
        loss.backward(create_graph=True)
    params, grads_h = get_params_grad(model)
    setup = time.perf_counter() - t0
    trace_vhv = []
    for i in range(count):
        model.zero_grad()
        v = probes(i) if callable(probes) else probes[i]
        hv = torch.autograd.grad(grads_h, params, grad_outputs=v, only_inputs=True,
                                 retain_graph=True)
        trace_vhv.append(group_product(hv, v).cpu().item())
    model.zero_grad(set_to_none=True)  # drop the graph PyHessian leaves in .grad
    return trace_vhv, setup


# --- ours ----------------------------------------------------------------------------------------

def ours_trace(model: nn.Module, data: TensorData, mask: Mask, hvp: str, seed: int, count: int
               ) -> tuple[list[float], float]:
    t0 = time.perf_counter()
    op = HessianOperator.from_model(model, data, "classification", mask, batch_size=len(data),
                                    hvp=hvp).prepare()
    setup = time.perf_counter() - t0
    return hutchinson_trace(op, max_probes=count, tol=None, seed=seed).samples, setup


# --- setup -------------------------------------------------------------------------------------

def masked_lenet5(device: torch.device) -> tuple[nn.Module, Mask]:
    model = build_model("lenet5", seed=0, input_shape=(1, 28, 28))
    names = prunable_names(model)
    params = dict(model.named_parameters())
    scores = keep_scores("large_final", params, None, names, generator(1))
    mask = prune(model, Mask.ones_like(model), scores, PruneConfig(fraction=0.2, scope="global"),
                 generator(2), levels=LEVELS)
    mask.apply(model)
    return model.to(device), mask.to(device)


def timed(device: torch.device, fn: Callable[[], tuple[list[float], float]]
          ) -> tuple[list[float], float, float]:
    """(samples, setup seconds, total seconds)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    samples, setup = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return samples, setup, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=512, help="images (one batch)")
    parser.add_argument("--probes", type=int, default=8, help="probes per method and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--methods", default="graph,jvp,linearize")
    parser.add_argument("--out", default="results/benchmarks/hessian.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    splits, source = mnist_or_gaussian(args.n, 1)
    data = TensorData(splits.train.x.to(device), splits.train.y.to(device))
    model, mask = masked_lenet5(device)
    ours = [m.strip() for m in args.methods.split(",") if m.strip()]
    probe_op = HessianOperator.from_model(model, data, "classification", mask)
    n_params = probe_op.size
    print(f"Hutchinson trace of masked Lenet-5 ({n_params:,} parameters, {probe_op.dim:,} kept, "
          f"weight density {mask.density:.3f}), {len(data)} images ({source}), one batch, "
          f"{args.probes} probes x {args.rounds} rounds, device {device}, {args.threads} "
          f"thread(s), torch {torch.__version__}")

    def reference_probes(seed: int) -> Callable[[int], list[torch.Tensor]]:
        return lambda i: list(probe_op.unflatten(
            rademacher(probe_op, derive_seed(seed, "hutchinson", i))).values())

    def run(name: str, seed: int, count: int) -> tuple[list[float], float, float]:
        if name == REFERENCE:
            return timed(device, lambda: reference_trace(model, data.x, data.y,
                                                         reference_probes(seed), count))
        hvp = next(k for k, v in OURS.items() if v == name)
        return timed(device, lambda: ours_trace(model, data, mask, hvp, seed, count))

    names = [REFERENCE] + [OURS[m] for m in ours]
    # warm-up (forward-mode AD loads its decompositions once per process) and the check
    warm = {name: run(name, 0, 3)[0] for name in names}
    ref = warm[REFERENCE]
    scale = max(abs(b) for b in ref)  # a single v^T H v can cancel to near 0
    gaps = {}
    for name in names[1:]:
        gaps[name] = max(abs(a - b) for a, b in zip(warm[name], ref)) / scale
        print(f"same v^T H v as the reference: {name}: max |difference| / max |v^T H v| = "
              f"{gaps[name]:.1e}")
        assert gaps[name] < 1e-4, f"{name} disagrees with the reference"

    per_probe: dict[str, list[float]] = {name: [] for name in names}
    setups: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            _, setup, total = run(name, r + 1, args.probes)
            setups[name].append(setup)
            per_probe[name].append((total - setup) / args.probes)
    rows = []
    for name in names:
        ratios = [a / b for a, b in zip(per_probe[REFERENCE], per_probe[name])]
        rows.append({"method": name, "setup_ms": statistics.median(setups[name]) * 1e3,
                     "ms_per_probe": statistics.median(per_probe[name]) * 1e3,
                     "speedup_vs_reference": statistics.median(ratios),
                     "min_speedup": min(ratios), "max_speedup": max(ratios),
                     "max_rel_diff_vs_reference": gaps.get(name, 0.0)})
    table = pd.DataFrame(rows)
    print(table.drop(columns="max_rel_diff_vs_reference").to_string(
        index=False, float_format=lambda v: f"{v:,.2f}"))
    for key, value in (("device", str(device)), ("threads", args.threads), ("n", len(data)),
                       ("probes", args.probes), ("rounds", args.rounds),
                       ("density", mask.density), ("data", source),
                       ("torch", torch.__version__)):
        table[key] = value
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return table


if __name__ == "__main__":
    main()
