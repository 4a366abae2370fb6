"""The sparse-teacher experiments of issue 3: end to end at a tiny size, and their claims on
synthetic tables that obey (pass) or break (fail) the predicted law."""

import json

import numpy as np
import pandas as pd
import pytest

from experiments import cli
from experiments.zhang2021 import convergence, convex_radius, local_convexity, sample_complexity
from experiments.zhang2021.teacher_instances import agd_summary, draw_instance
from sparse_teacher.agd import init_at_distance, run_agd
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
                        "lam=0.1,1.0", "max_iter=2000", "long_factor=3")
    assert len(runs) == 4
    assert set(runs["outcome"]) <= {"success", "slow", "stalled", "diverged"}
    assert set(runs["outcome_long"]) <= {"success", "slow", "stalled", "diverged"}
    assert (runs["n_iter"] <= 2000).all() and (runs["n_iter_long"] <= 6000).all()
    assert (runs["n_iter_long"] >= runs["n_iter"]).all()
    assert runs.loc[runs["success"], "converges"].all()  # within the cap implies converging


def test_convex_radius_cell_reads_the_capped_run_off_the_long_one():
    """The capped columns equal a run of Algorithm 1 stopped at max_iter, on a run that needs more."""
    params = dict(d=30, K=3, r=12, N=60, lam=1.0, eta=0.5, beta=0.2, max_iter=300, long_factor=20)
    out = convex_radius.run_cell(params, seed=3)
    assert out["n_iter_long"] > 300 and out["n_iter"] == 300  # the long run went past the cap
    inst = draw_instance(d=30, K=3, r=12, N=60, seed=3)
    W0 = init_at_distance(inst.W_star, 1.0, inst.init_rng)
    capped = agd_summary(run_agd(inst.problem, W0, eta=0.5, beta=0.2, max_iter=300,
                                 W_star=inst.W_star))
    for key, value in capped.items():
        expected = pytest.approx(value, nan_ok=True) if isinstance(value, float) else value
        assert out[key] == expected, key
    assert out["converges"] == (out["outcome_long"] in ("success", "slow"))
    assert np.isnan(out["first_success_iter"]) == (out["outcome_long"] != "success")


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


def _radius_table(cap_edge, long_edge, seed=0):
    """Synthetic runs: success within the cap below ``cap_edge(r)``, convergence below
    ``long_edge(r)`` (the same uniform draw decides both, so success implies convergence)."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in (20, 40, 60, 80, 100):
        for lam in np.linspace(0.1, 6, 16):
            for trial in range(20):
                u = rng.random()
                success = bool(u < 1 / (1 + np.exp(4 * (lam - cap_edge(r)))))
                converges = bool(u < 1 / (1 + np.exp(4 * (lam - long_edge(r)))))
                rows.append(dict(r=r, lam=lam, trial=trial, success=success,
                                 outcome="success" if success else "slow" if converges
                                 else "stalled",
                                 converges=converges,
                                 outcome_long="success" if converges else "stalled"))
    return pd.DataFrame(rows)


def test_convex_radius_claims_follow_the_law():
    falling = _radius_table(lambda r: 4.0 - 0.3 * np.sqrt(r), lambda r: 6.0 - 0.3 * np.sqrt(r))
    records = convex_radius.claims(falling)
    assert _verdicts(records) == ["pass", "pass"]
    assert all("verdict" not in r for r in records[2:]) and len(records) >= 4
    # each claim reads its own boundary: only the within-cap one falls here
    mixed = _radius_table(lambda r: 4.0 - 0.3 * np.sqrt(r), lambda r: 2.5 + 0.3 * np.sqrt(r))
    assert _verdicts(convex_radius.claims(mixed)) == ["pass", "fail"]
    rising = _radius_table(lambda r: 0.5 + 0.3 * np.sqrt(r), lambda r: 1.5 + 0.4 * np.sqrt(r))
    assert _verdicts(convex_radius.claims(rising)) == ["fail", "fail"]


def test_convex_radius_boundaries_and_findings():
    table = _radius_table(lambda r: 4.0 - 0.3 * np.sqrt(r), lambda r: 5.5 - 0.3 * np.sqrt(r))
    edges = convex_radius.boundaries(table)
    assert set(edges["criterion"]) == {"success", "converges"}
    for criterion, offset in (("success", 4.0), ("converges", 5.5)):
        rows = edges[edges["criterion"] == criterion].sort_values("r")
        assert rows["in_grid"].all()
        expected = offset - 0.3 * np.sqrt(rows["r"].to_numpy(float))
        assert np.allclose(rows["x50"], expected, atol=0.25)
    checked = next(r for r in convex_radius.claims(table) if "long run checks" in r.get("finding", ""))
    slow = int((table["outcome"] == "slow").sum())
    assert checked["measured"].startswith(f"{slow} of {slow} slow")
    # a boundary beyond the lam grid is reported, not fitted
    beyond = _radius_table(lambda r: 4.0 - 0.3 * np.sqrt(r), lambda r: 9.0 + 0 * r)
    assert not convex_radius.boundaries(beyond).query("criterion == 'converges'")["in_grid"].any()
    assert _verdicts(convex_radius.claims(beyond)) == ["pass", "fail"]


def test_convex_radius_contradicting_runs_fail_both_claims():
    runs = convex_radius.contradicting_runs()
    assert _verdicts(convex_radius.claims(runs)) == ["fail", "fail"]
    pd.testing.assert_frame_equal(runs, convex_radius.contradicting_runs())


def _phase_table(n_star, ds=(100, 400, 1600), seed=0):
    """Synthetic runs whose 50% sample size is ``n_star(r, d)`` (K = 5)."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in ds:
        for r in (10, 20, 30, 40, 50):
            for N in np.geomspace(20, 6000, 24).astype(int):
                for trial in range(10):
                    p = 1 / (1 + np.exp(-8 * (np.log(N) - np.log(n_star(r, d)))))
                    rows.append(dict(r=r, N=int(N), d=d, K=5, trial=trial,
                                     reaches_teacher=bool(rng.random() < p)))
    return pd.DataFrame(rows)


def _best_model(records):
    text = next(r["measured"] for r in records if r.get("finding", "").startswith("Which"))
    return text.split(",")[0].removeprefix("best: ")


def test_sample_complexity_claims_follow_the_law():
    # N* = 1.3 r log d: linear in r at every d and proportional to log d
    theory = sample_complexity.claims(_phase_table(lambda r, d: 1.3 * r * np.log(d)))
    assert _verdicts(theory) == ["pass"] * 4
    assert _best_model(theory) in ("N = c r log d", "N = a + b r log d")
    # N* = 1.3 K r at every d (the counting picture): linear in r, no growth with d
    counting = _phase_table(lambda r, d: 6.5 * r)
    records = sample_complexity.claims(counting)
    assert _verdicts(records) == ["pass", "pass", "pass", "fail"]
    assert _best_model(records) in ("N = c K r (= c' r at fixed K)", "N = a + b r")
    edges = sample_complexity.boundaries(counting)
    assert edges["in_grid"].all() and set(edges["d"]) == {100, 400, 1600}
    assert abs(np.median(edges["per_unknown"]) - 1.3) < 0.05
    assert edges["per_unknown"].between(1.1, 1.5).all()
    # quadratic in r: every per-d slope claim fails
    assert _verdicts(sample_complexity.claims(_phase_table(lambda r, d: 0.6 * r**2)))[:3] == \
        ["fail"] * 3
    # a single d cannot show a dependence on d: that claim fails instead of passing by default
    single = sample_complexity.claims(_phase_table(lambda r, d: 6.5 * r, ds=(100,)))
    assert _verdicts(single) == ["pass", "fail"]


def test_sample_complexity_contradicting_runs_fail():
    runs = sample_complexity.contradicting_runs()
    verdicts = _verdicts(sample_complexity.claims(runs))
    assert verdicts[-1] == "fail" and "fail" in verdicts[:-1]
    pd.testing.assert_frame_equal(runs, sample_complexity.contradicting_runs())


def test_sample_complexity_quick_grid_varies_d_over_a_factor_of_4():
    grids = sample_complexity.EXPERIMENT.quick.grids
    ds = {d for grid in grids for d in grid["d"]}
    assert len(ds) >= 3 and max(ds) / min(ds) >= 4
    for grid in grids:  # N spans the counting baseline K r on both sides
        (r,), (K,) = grid["r"], grid["K"]
        assert min(grid["N"]) < 1.3 * K * r < max(grid["N"]) and max(grid["N"]) >= 2 * K * r


def test_heavy_ball_rate_matches_its_docstrings():
    a = 1e-4  # 1 - nu_GD
    # fixed momentum: a constant-factor gain, 1 - nu ~ a / (1 - beta)
    assert 1 - heavy_ball_rate(1 - a, 0.2) == pytest.approx(a / 0.8, rel=1e-3)
    # critical momentum (1 - sqrt(a))^2: the square-root gain, 1 - nu = sqrt(a)
    assert 1 - heavy_ball_rate(1 - a, (1 - np.sqrt(a)) ** 2) == pytest.approx(np.sqrt(a), rel=1e-6)
    # complex roots: modulus sqrt(beta)
    assert heavy_ball_rate(0.5, 0.5) == pytest.approx(np.sqrt(0.5))


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
