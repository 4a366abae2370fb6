"""The sparse-teacher experiments of issue 3: end to end at a tiny size, and their claims on
synthetic tables that obey (pass) or break (fail) the predicted law."""

import json

import numpy as np
import pandas as pd
import pytest

from experiments import cli
from experiments.zhang2021 import convergence, convex_radius, local_convexity, sample_complexity
from sparse_teacher.theory import heavy_ball_rate


def _run_tiny(tmp_path, name, *sets):
    code = cli.main(["run", name, "--quick", "--trials", "1", "--out", str(tmp_path),
                     "--no-progress", "--set", *sets])
    assert code == 0
    assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
    assert (tmp_path / "figures" / f"{name}.pdf").exists()
    verdicts = json.loads((tmp_path / "results" / name / "validate.json").read_text())["claims"]
    assert verdicts and all(set(v) == {"claim", "predicted", "measured", "verdict"} for v in verdicts)
    assert all(v["verdict"] in ("pass", "fail") for v in verdicts)
    return pd.read_parquet(tmp_path / "results" / name / "runs.parquet"), verdicts


def test_convergence_end_to_end(tmp_path):
    runs, verdicts = _run_tiny(tmp_path, "convergence", "r=8,16,24", "N=400", "d=40",
                               "lam=0.1", "max_iter=8000")
    assert len(runs) == 3
    assert runs["success_agd"].all() and runs["success_gd"].all()
    assert (runs["rate_agd"] < runs["rate_gd"]).all() and (runs["rate_gd"] < 1).all()
    assert (runs["n_iter_agd"] < runs["n_iter_gd"]).all()
    first = np.asarray(runs["history_agd"].iloc[0])
    assert first[0] == pytest.approx(0.1) and first[-1] < 1e-4
    assert [v["verdict"] for v in verdicts[-2:]] == ["pass", "pass"]


def test_convex_radius_end_to_end(tmp_path):
    runs, _ = _run_tiny(tmp_path, "convex-radius", "r=6,10", "N=150", "d=30",
                        "lam=0.1,1.0", "max_iter=2000")
    assert len(runs) == 4
    assert set(runs["outcome"]) <= {"success", "slow", "stalled", "diverged"}


def test_sample_complexity_end_to_end(tmp_path):
    runs, _ = _run_tiny(tmp_path, "sample-complexity", "r=4,8", "N=15,200", "d=20",
                        "max_iter=6000")
    assert len(runs) == 4
    big = runs[runs["N"] == 200]
    assert big["reaches_teacher"].all()  # N = 200 >> K r: recovery
    small = runs[(runs["N"] == 15) & (runs["r"] == 8)]
    assert not small["reaches_teacher"].any()  # N = 15 < K r = 40 unknowns: not identifiable


def test_local_convexity_end_to_end(tmp_path):
    runs, _ = _run_tiny(tmp_path, "local-convexity", "r=5,10", "N=300", "d=30",
                        "lam=0.0,0.5")
    assert len(runs) == 4
    at_star = runs[runs["lam"] == 0.0]
    assert (at_star["lambda_min"] > 0).all()  # Gauss-Newton at W*: positive definite (N >> K r)
    assert (runs["lambda_max"] >= runs["lambda_min"]).all()


def _verdicts(records):
    return [r["verdict"] for r in records if "verdict" in r]


def test_convergence_claims_follow_the_law():
    rows = []
    for r in (10, 20, 40, 80):
        for trial in range(3):
            rows.append(dict(r=r, beta=0.2, trial=trial,
                             rate_agd=0.99 + 5e-4 * np.sqrt(r) + 1e-5 * trial,
                             rate_gd=0.995 + 5e-4 * np.sqrt(r) + 1e-5 * trial))
    good = pd.DataFrame(rows)
    good["rate_agd"] = heavy_ball_rate(good["rate_gd"], 0.2)
    assert _verdicts(convergence.claims(good)) == ["pass", "pass", "pass", "pass"]
    bad = good.assign(rate_agd=0.999 - 1e-4 * np.sqrt(good["r"]),
                      rate_gd=0.99 - 1e-4 * np.sqrt(good["r"]))
    assert _verdicts(convergence.claims(bad)) == ["fail", "fail", "fail", "fail"]


def _radius_table(boundary, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for r in (20, 40, 60, 80, 100):
        for lam in np.linspace(0.1, 4, 12):
            for _ in range(20):
                p = 1 / (1 + np.exp(4 * (lam - boundary(r))))
                success = bool(rng.random() < p)
                rows.append(dict(r=r, lam=lam, success=success,
                                 outcome="success" if success else "slow"))
    return pd.DataFrame(rows)


def test_convex_radius_claims_follow_the_law():
    good = _radius_table(lambda r: 4.0 - 0.3 * np.sqrt(r))
    assert _verdicts(convex_radius.claims(good))[0] == "pass"
    bad = _radius_table(lambda r: 0.5 + 0.3 * np.sqrt(r))
    assert _verdicts(convex_radius.claims(bad))[0] == "fail"


def _phase_table(n_star, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for r in (10, 20, 30, 40, 50):
        for N in np.geomspace(20, 6000, 16).astype(int):
            for _ in range(10):
                p = 1 / (1 + np.exp(-8 * (np.log(N) - np.log(n_star(r)))))
                rows.append(dict(r=r, N=int(N), d=100, reaches_teacher=bool(rng.random() < p)))
    return pd.DataFrame(rows)


def test_sample_complexity_claims_follow_the_law():
    assert _verdicts(sample_complexity.claims(_phase_table(lambda r: 6.0 * r))) == ["pass", "pass"]
    assert "fail" in _verdicts(sample_complexity.claims(_phase_table(lambda r: 0.6 * r**2)))


def test_local_convexity_claims_follow_the_law():
    rng = np.random.default_rng(0)
    rows = []
    for r in (10, 40, 80, 120, 160):
        for lam in (0.0, 0.5, 1.0):
            for _ in range(6):
                low = 0.2 - 0.02 * np.sqrt(r) * (1 + lam) + 0.01 * rng.standard_normal()
                rows.append(dict(r=r, lam=lam, lambda_min_K2=low, lambda_min=low / 9,
                                 lambda_max_K=0.4, positive_definite=bool(low > 0)))
    good = pd.DataFrame(rows)
    assert _verdicts(local_convexity.claims(good)) == ["pass", "pass", "pass"]
    flipped = good.assign(r=lambda t: 170 - t["r"])
    assert _verdicts(local_convexity.claims(flipped))[:2] == ["fail", "fail"]
