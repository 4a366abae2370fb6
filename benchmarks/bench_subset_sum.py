"""Exact subset-sum solvers against the HiGHS MILP reference and brute force, in one run.

Issue 4's benchmark. For n in {16, 24, 32, 40} and eps in {0, 1e-3, 1e-2}, on ``--instances``
random instances per cell (x ~ Unif[-1, 1]^n, z ~ Unif[-1, 1]):

* ours: meet in the middle (eps = 0) or the interval-union DP (eps > 0), best of ``--repeats``;
* reference: ``milp_subset_sum`` (scipy.optimize.milp / HiGHS, zero gap, tightest tolerances),
  one run with a ``--time-limit`` per instance; when HiGHS hits the limit its time is a lower
  bound on the time it needs, so the ratio is a lower bound too (marked ``>=``).

"identical" compares the two optima (|difference| <= 1e-9, the MILP's error being recomputed
from its rounded mask); ``milp_proved`` says whether HiGHS proved optimality in time. Plain
subset sum: meet in the middle against brute-force enumeration at n = 22 (``all_subset_sums`` +
argmin, Numba, and the same in plain NumPy). Target (issue 4): ours >= 100x faster than the MILP.

Run: ``python benchmarks/bench_subset_sum.py`` (writes results/benchmarks/subset_sum.csv).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from subset_sum import brute_force, meet_in_the_middle, milp_subset_sum, perturbed_subset_sum


def best_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def numpy_brute_force(x: np.ndarray, z: float) -> float:
    """Plain NumPy enumeration by doubling (the spec's description, no Numba)."""
    sums = np.zeros(1)
    for xk in x:
        sums = np.concatenate([sums, sums + xk])
    return float(np.min(np.abs(sums - z)))


def exact(x: np.ndarray, z: float, eps: float):
    return meet_in_the_middle(x, z) if eps == 0 else perturbed_subset_sum(x, z, eps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 24, 32, 40])
    parser.add_argument("--eps", type=float, nargs="+", default=[0.0, 1e-3, 1e-2])
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/benchmarks/subset_sum.csv")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    warm = rng.uniform(-1, 1, 8)
    for eps in args.eps:  # compile (or load the cache) before timing
        exact(warm, 0.1, eps)
    brute_force(warm, 0.1)

    rows = []
    cells = [(n, eps, k) for n in args.sizes for eps in args.eps for k in range(args.instances)]
    for n, eps, k in tqdm(cells, desc="exact vs MILP"):
        x = rng.uniform(-1.0, 1.0, n)
        z = float(rng.uniform(-1.0, 1.0))
        ours_s, ours = best_time(lambda x=x, z=z, eps=eps: exact(x, z, eps), args.repeats)
        t0 = time.perf_counter()
        ref = milp_subset_sum(x, z, eps, time_limit=args.time_limit)
        milp_s = time.perf_counter() - t0
        proved = ref.lower_bound >= ref.error - 1e-12 and milp_s < args.time_limit
        rows.append({"problem": "plain" if eps == 0 else "perturbed", "n": n, "eps": eps,
                     "instance": k, "ours": "meet-in-middle" if eps == 0 else "interval DP",
                     "reference": "HiGHS MILP", "ours_s": ours_s, "reference_s": milp_s,
                     "ratio": milp_s / ours_s, "ratio_is_lower_bound": not proved,
                     "ours_error": ours.error, "reference_error": ref.error,
                     "identical": abs(ours.error - ref.error) <= 1e-9, "milp_proved": proved})

    x = rng.uniform(-1.0, 1.0, 22)
    z = float(rng.uniform(-1.0, 1.0))
    mitm_s, mitm = best_time(lambda: meet_in_the_middle(x, z), args.repeats)
    for name, fn in (("brute force (Numba)", lambda: brute_force(x, z).error),
                     ("brute force (NumPy)", lambda: numpy_brute_force(x, z))):
        ref_s, ref_error = best_time(fn, max(1, args.repeats // 2))
        rows.append({"problem": "plain", "n": 22, "eps": 0.0, "instance": 0,
                     "ours": "meet-in-middle", "reference": name, "ours_s": mitm_s,
                     "reference_s": ref_s, "ratio": ref_s / mitm_s, "ratio_is_lower_bound": False,
                     "ours_error": mitm.error, "reference_error": ref_error,
                     "identical": abs(mitm.error - ref_error) <= 1e-12, "milp_proved": None})

    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        shown = table.assign(ratio=[(">=" if lb else "") + f"{r:.3g}"
                                    for r, lb in zip(table["ratio"], table["ratio_is_lower_bound"],
                                                     strict=True)])
        print(shown[["problem", "n", "eps", "instance", "ours", "reference", "ours_s",
                     "reference_s", "ratio", "ours_error", "reference_error", "identical",
                     "milp_proved"]].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    milp = table[table["reference"] == "HiGHS MILP"]
    print(f"\nexact vs MILP: median ratio {milp['ratio'].median():.3g}, minimum "
          f"{milp['ratio'].min():.3g}; identical optimum in {int(milp['identical'].sum())} of "
          f"{len(milp)}; MILP proved optimality in {int(milp['milp_proved'].sum())} of {len(milp)}")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
