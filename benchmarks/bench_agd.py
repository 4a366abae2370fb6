"""AGD iteration throughput: Numba kernels against a plain NumPy implementation, in one run.

Issue 2's benchmark. Problem: N = 3000, d = 500, K = 5, r in {25, 100, 500} (student support =
teacher support, random per neuron; r = 500 is dense). Measured, with the same thread count on
both sides (1 by default, ``--threads`` to change):

* NumPy single start: AGD iterations per second with ``reference.loss_and_gradient`` on the
  pre-gathered (K, N, r) inputs (batched ``matmul``, as a careful user writes it);
* ours single start: ``run_agd`` (fused Numba pass);
* ours batched: ``run_agd_multistart`` with M = 16 starts per data set, reported as per-start
  iterations per second and as a fraction of the machine's float64 matrix-product ceiling
  (one large ``A @ B`` timed in the same run; a batched iteration costs 4 K N r M flops).

Targets (issue 2): single start >= 2x NumPy at every r; batched >= 50% of the ceiling; batched
per-start throughput >= 4x NumPy single start at r = 100 and >= 8x at r = 500.

Three bounds are measured in the same run, so that a missed target can be told apart from a
slow kernel:

* ``stream_bound_vs_numpy``: NumPy single-start time over the time of one plain read of the
  single-start kernel's inputs (a vectorized sum over the sample blocks, or over ``XU`` for a
  shared support). A single-start iteration must read its inputs at least once, so no kernel
  can beat NumPy by more than this ratio;
* ``reread_bound_vs_numpy``: the same with every block read twice in a row (the second time
  from cache). The gradient needs each sample's residual, which needs all of its features, so
  a kernel that walks the data in blocks of B samples reads each block twice, once for the
  forward products and once for the gradient sums: this is its bound;
* ``per_start_target_share_of_ceiling``: the share of the matmul ceiling that the batched kernel
  would need to reach the per-start target (4x at r = 100, 8x at r = 500).

The machine's speed drifts (NumPy's single start at r = 100 varied by 25% between runs on our
CI-class machine, with its 12 MB of inputs in a shared L3 cache), so each quantity is measured
in ``--rounds`` interleaved rounds: every ratio compares times taken back to back in the same
round. The CSV has one row per (r, round); the printout gives the median and the range.

Run: ``python benchmarks/bench_agd.py`` (writes results/benchmarks/agd.csv).
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS that Numba's np.dot calls: load it before limiting threads)
from numba import njit
from threadpoolctl import threadpool_info, threadpool_limits

from sparse_teacher import reference
from sparse_teacher.agd import init_at_distance, run_agd, run_agd_multistart
from sparse_teacher.kernels import single_block_size
from sparse_teacher.problem import StudentProblem
from sparse_teacher.teacher import draw_student_supports, draw_teacher, make_dataset


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@njit(fastmath=True)
def _sum(flat):
    total = 0.0
    for k in range(flat.size):
        total += flat[k]
    return total


@njit
def read_once(a):
    """Sum of all entries: one streaming read of ``a`` (the least any single-start pass costs)."""
    return _sum(a.reshape(-1))


@njit
def read_twice(a, chunk):
    """Reads each run of ``chunk`` consecutive entries of ``a`` twice in a row (the second time
    from cache): the least a kernel that visits each block of samples twice costs."""
    flat = a.reshape(-1)
    total = 0.0
    for c0 in range(0, flat.size, chunk):
        block = flat[c0:c0 + chunk]
        total += _sum(block)
        total += _sum(block)
    return total


def numpy_agd(W0, Xg, y, iters, eta=0.5, beta=0.2):
    W, W_prev = W0.copy(), W0.copy()
    for _ in range(iters):
        _, g = reference.loss_and_gradient(W, Xg, y)
        W, W_prev = W - eta * g + beta * (W - W_prev), W
    return W


def matmul_ceiling(n: int = 2048, repeats: int = 3) -> float:
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    A @ B
    return 2 * n**3 / best_time(lambda: A @ B, repeats)


PER_START_TARGET = {100: 4.0, 500: 8.0}


def measure_round(prob, W0, starts, Xg, iters: int, repeats: int) -> dict:
    """One round: every time of one problem, taken back to back."""
    K, N, r, M = prob.K, prob.N, prob.r, starts.shape[0]
    ceiling = matmul_ceiling()
    t_np = best_time(partial(numpy_agd, W0, Xg, prob.y, iters), repeats) / iters
    t_single = best_time(partial(run_agd, prob, W0, tol=0.0, max_iter=iters), repeats) / iters
    t_batch = best_time(partial(run_agd_multistart, prob, starts, tol=0.0, max_iter=iters),
                        repeats) / iters
    if prob.shared_support:
        inputs, chunk = prob.XU, single_block_size(prob) * r
    else:
        inputs = prob.sample_blocks
        chunk = inputs[0].size
    t_read = best_time(lambda: [read_once(inputs) for _ in range(20)], repeats) / 20
    t_reread = best_time(lambda: [read_twice(inputs, chunk) for _ in range(20)], repeats) / 20
    target = PER_START_TARGET.get(r)
    flops = 4 * K * N * r * M
    return dict(
        numpy_single_it_per_s=1 / t_np, single_it_per_s=1 / t_single,
        batched_start_it_per_s=M / t_batch,
        single_vs_numpy=t_np / t_single,
        batched_per_start_vs_numpy_single=M * t_np / t_batch,
        batched_gflops=flops / t_batch / 1e9, ceiling_gflops=ceiling / 1e9,
        batched_fraction_of_ceiling=flops / t_batch / ceiling,
        stream_bound_vs_numpy=t_np / t_read,
        reread_bound_vs_numpy=t_np / t_reread,
        per_start_target_share_of_ceiling=(
            target * flops / (M * t_np) / ceiling if target else np.nan),
    )


def spread(values: pd.Series, fmt: str = "{:.2f}") -> str:
    """``median [min-max]`` of one quantity over the rounds."""
    return (fmt.format(values.median()) + " [" + fmt.format(values.min()) + "-"
            + fmt.format(values.max()) + "]")


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="results/benchmarks/agd.csv")
    args = parser.parse_args(argv)
    for name in ("threads", "iters", "repeats", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    N, d, K, M = 3000, 500, 5, 16
    rows = []
    with threadpool_limits(args.threads):
        blas = {i["internal_api"] + ":" + str(i.get("architecture")) for i in threadpool_info()}
        print(f"{args.rounds} interleaved rounds on {args.threads} thread(s) "
              f"({', '.join(sorted(blas))}); median [min-max] over the rounds")
        for r in (25, 100, 500):
            t = draw_teacher(d, K, r, seed=r)
            S = draw_student_supports(t, r, seed=r + 1)
            ds = make_dataset(t, N, seed=r + 2)
            prob = StudentProblem.from_data(ds.X, ds.y, S)
            W_star = t.in_student_coordinates(S)
            W0 = init_at_distance(W_star, 0.5, seed=0)
            starts = np.stack([init_at_distance(W_star, 0.5, seed=s) for s in range(M)])
            Xg = prob.gathered()
            run_agd(prob, W0, tol=0.0, max_iter=2)  # compile
            run_agd_multistart(prob, starts[:2], tol=0.0, max_iter=2)
            read_once(prob.XU)
            read_twice(prob.XU, 64)
            layout = ("shared" if prob.shared_support
                      else "union" if prob.blocks_use_union else "per-neuron")
            for k in range(args.rounds):
                row = dict(r=r, p=prob.p, layout=layout, threads=args.threads, round=k)
                row.update(measure_round(prob, W0, starts, Xg, args.iters, args.repeats))
                rows.append(row)
            sub = pd.DataFrame([row for row in rows if row["r"] == r])
            target = PER_START_TARGET.get(r)
            print(f"r={r:4d} p={prob.p:4d} ({layout} blocks)  NumPy single "
                  f"{spread(sub.numpy_single_it_per_s, '{:.0f}')} it/s, ceiling "
                  f"{spread(sub.ceiling_gflops, '{:.1f}')} GFLOP/s")
            print(f"    single start {spread(sub.single_vs_numpy)}x NumPy (target 2x; bounds: one "
                  f"read {spread(sub.stream_bound_vs_numpy)}x, block read twice "
                  f"{spread(sub.reread_bound_vs_numpy)}x)")
            print(f"    batched M={M}: {spread(100 * sub.batched_fraction_of_ceiling, '{:.0f}')}% "
                  f"of the ceiling (target 50%), per start "
                  f"{spread(sub.batched_per_start_vs_numpy_single)}x NumPy single"
                  + (f" (target {target:.0f}x, which needs "
                     f"{spread(100 * sub.per_start_target_share_of_ceiling, '{:.0f}')}% "
                     f"of the ceiling)" if target else ""), flush=True)
    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(f"wrote {out} (one row per r and round)")
    return table


if __name__ == "__main__":
    main()
