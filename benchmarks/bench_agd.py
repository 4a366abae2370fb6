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

Two bounds are measured in the same run, so that a missed target can be told apart from a slow
kernel:

* ``stream_bound_vs_numpy``: NumPy single-start time over the time of one plain read of the
  single-start kernel's inputs (a vectorized sum over the sample blocks, or over ``XU`` for a
  shared support). A single-start iteration must read its inputs at least once, so no kernel
  can beat NumPy by more than this ratio;
* ``per_start_target_share_of_ceiling``: the share of the matmul ceiling that the batched kernel
  would need to reach the per-start target (4x at r = 100, 8x at r = 500).

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
def read_once(a):
    """Sum of all entries: one streaming read of ``a`` (the least any single-start pass costs)."""
    flat = a.reshape(-1)
    total = 0.0
    for k in range(flat.size):
        total += flat[k]
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


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/benchmarks/agd.csv")
    args = parser.parse_args(argv)
    N, d, K, M = 3000, 500, 5, 16
    rows = []
    with threadpool_limits(args.threads):
        ceiling = matmul_ceiling()
        blas = {i["internal_api"] + ":" + str(i.get("architecture")) for i in threadpool_info()}
        print(f"float64 matmul ceiling: {ceiling / 1e9:.2f} GFLOP/s on {args.threads} thread(s) "
              f"({', '.join(sorted(blas))})")
        for r in (25, 100, 500):
            t = draw_teacher(d, K, r, seed=r)
            S = draw_student_supports(t, r, seed=r + 1)
            ds = make_dataset(t, N, seed=r + 2)
            prob = StudentProblem.from_data(ds.X, ds.y, S)
            W_star = t.in_student_coordinates(S)
            W0 = init_at_distance(W_star, 0.5, seed=0)
            starts = np.stack([init_at_distance(W_star, 0.5, seed=s) for s in range(M)])
            Xg = prob.gathered()
            it = args.iters
            run_agd(prob, W0, tol=0.0, max_iter=2)  # compile
            run_agd_multistart(prob, starts[:2], tol=0.0, max_iter=2)
            t_np = best_time(partial(numpy_agd, W0, Xg, prob.y, it), args.repeats) / it
            t_single = best_time(partial(run_agd, prob, W0, tol=0.0, max_iter=it), args.repeats) / it
            t_batch = best_time(partial(run_agd_multistart, prob, starts, tol=0.0, max_iter=it),
                                args.repeats) / it
            inputs = prob.XU if prob.shared_support else prob.sample_blocks
            read_once(inputs)
            t_read = best_time(lambda inputs=inputs: [read_once(inputs) for _ in range(20)],
                               args.repeats) / 20
            target = {100: 4.0, 500: 8.0}.get(r)
            flops = 4 * K * N * r * M
            row = dict(
                r=r, p=prob.p, threads=args.threads,
                numpy_single_it_per_s=1 / t_np, single_it_per_s=1 / t_single,
                batched_start_it_per_s=M / t_batch,
                single_vs_numpy=t_np / t_single,
                batched_per_start_vs_numpy_single=M * t_np / t_batch,
                batched_gflops=flops / t_batch / 1e9, ceiling_gflops=ceiling / 1e9,
                batched_fraction_of_ceiling=flops / t_batch / ceiling,
                stream_bound_vs_numpy=t_np / t_read,
                per_start_target_share_of_ceiling=(
                    target * flops / (M * t_np) / ceiling if target else np.nan),
            )
            rows.append(row)
            print(f"r={r:4d} p={prob.p:4d}  numpy {1 / t_np:8.1f} it/s | single {1 / t_single:8.1f} "
                  f"it/s ({row['single_vs_numpy']:.2f}x) | batched M={M}: "
                  f"{M / t_batch:8.1f} start-it/s ({row['batched_per_start_vs_numpy_single']:.2f}x"
                  f" numpy single), {row['batched_gflops']:.2f} GFLOP/s = "
                  f"{100 * row['batched_fraction_of_ceiling']:.0f}% of ceiling")
            print(f"        bounds: one read of the inputs = {row['stream_bound_vs_numpy']:.2f}x numpy "
                  f"single" + (f"; the {target:.0f}x per-start target needs "
                               f"{100 * row['per_start_target_share_of_ceiling']:.0f}% of the ceiling"
                               if target else ""))
    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(f"wrote {out}")
    return table


if __name__ == "__main__":
    main()
