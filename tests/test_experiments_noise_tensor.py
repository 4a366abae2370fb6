"""The ``noise`` (Fig. 5) and ``tensor-init`` (Lemma 1) experiments: helpers, tiny end-to-end runs,
and claims on synthetic tables that obey (pass) or break (fail) the predicted laws."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from experiments import analysis
from experiments.registry import all_experiments
from experiments.zhang2021 import noise
from experiments.zhang2021 import tensor_init as tensor_init_exp

# ----------------------------------------------------------------------------- helpers


def test_aitken_recovers_the_limit_of_a_linear_sequence() -> None:
    t = np.arange(5001)
    history = 0.5 + 0.3 * 0.998 ** t
    limit, remaining, rho = noise.aitken_limit(history, 1000)
    assert limit == pytest.approx(0.5, abs=1e-12)
    assert remaining == pytest.approx(history[-1] - 0.5, rel=1e-9)
    assert rho == pytest.approx(0.998 ** 1000, rel=1e-9)


def test_aitken_tail_cases() -> None:
    t = np.arange(301)
    growing = 1.0 + 1e-3 * t  # does not contract
    assert noise.aitken_limit(growing, 100)[1] == np.inf
    oscillating = 1.0 + 1e-3 * (-0.5) ** (t // 100)  # only its last change is known
    limit, remaining, rho = noise.aitken_limit(oscillating, 100)
    assert rho < 0 and remaining == pytest.approx(abs(oscillating[-1] - oscillating[-101]))
    chatter = 1.0 + 1e-7 * np.sin(t)  # changes far below `settled`: settled, tiny remainder
    limit, remaining, _ = noise.aitken_limit(chatter, 100, settled=1e-4)
    assert limit == chatter[-1] and remaining < 1e-6
    with pytest.raises(ValueError, match="window"):
        noise.aitken_limit(np.ones(10), 5)
    with pytest.raises(ValueError, match="window"):
        noise.aitken_limit(np.ones(10), 0)


def test_fixed_effect_slope_matches_dummy_variable_regression() -> None:
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(4), 15)
    x = rng.normal(size=groups.size) + groups
    y = 3.0 * groups - 0.7 * x + 0.1 * rng.normal(size=groups.size)
    slope, ci, n = analysis.fixed_effect_slope(x, y, groups)
    # brute force: OLS on [x, one dummy per group]
    design = np.column_stack([x] + [(groups == g).astype(float) for g in range(4)])
    coef, res, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = len(y) - design.shape[1]
    cov = res[0] / dof * np.linalg.inv(design.T @ design)
    from scipy import stats
    half = stats.t.ppf(0.975, dof) * np.sqrt(cov[0, 0])
    assert n == len(y)
    assert slope == pytest.approx(coef[0], rel=1e-10)
    assert ci == pytest.approx((coef[0] - half, coef[0] + half), rel=1e-8)
    assert ci[0] < -0.7 < ci[1]
    with pytest.raises(ValueError, match="groups"):
        analysis.fixed_effect_slope([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0, 0])


def test_both_experiments_are_registered() -> None:
    experiments = all_experiments()
    assert experiments["noise"] is noise.EXPERIMENT
    assert experiments["tensor-init"] is tensor_init_exp.EXPERIMENT
    assert noise.EXPERIMENT.full.trials == tensor_init_exp.EXPERIMENT.full.trials == 100


# ----------------------------------------------------------------------------- noise


def _noise_params(r: int, level: float) -> dict:
    return {"N": 300, "d": 30, "K": 3, "eta": 0.5, "beta": 0.2, "lam": 0.1, "max_iter": 4000,
            "noise_level": level, "r": r}


def test_noise_run_cell_noiseless_recovers_the_teacher() -> None:
    out = noise.run_cell(_noise_params(6, 0.0), seed=3)
    assert out["rel_error"] < 1e-4  # no noise: no floor
    assert out["noise_sigma"] == 0.0


def test_noise_end_to_end_tiny(tmp_path) -> None:
    rows = []
    for (r, level), trial in itertools.product(itertools.product([3, 6], [0.05, 0.1]), range(2)):
        params = _noise_params(r, level)
        out = noise.run_cell(params, seed=100 * r + 10 * trial + int(100 * level))
        assert out["outcome"] in ("converged", "not-converged", "diverged")
        assert np.isfinite(out["rel_error"]) and out["rel_error"] > 0
        assert out["noise_sigma"] > 0
        rows.append({**params, **out})
    runs = pd.DataFrame(rows)
    # the floor scales with the noise: same r, doubled noise level, larger median error
    med = runs.groupby(["r", "noise_level"])["rel_error"].median()
    assert (med.xs(0.1, level="noise_level") > med.xs(0.05, level="noise_level")).all()
    noise.plot(runs, tmp_path / "noise")
    assert (tmp_path / "noise.png").stat().st_size > 0 and (tmp_path / "noise.pdf").exists()
    records = noise.claims(runs)
    assert records and all(set(c) == {"claim", "predicted", "measured", "verdict"}
                           for c in records)


def _synthetic_noise(law, rng: np.random.Generator, outcome: str = "converged") -> pd.DataFrame:
    rows = []
    for r, level, _ in itertools.product([5, 10, 20, 30], [0.01, 0.02, 0.05, 0.1], range(6)):
        err = law(r, level) * np.exp(0.04 * rng.normal())
        rows.append({"r": r, "noise_level": level, "rel_error": err, "outcome": outcome})
    return pd.DataFrame(rows)


def test_noise_claims_pass_on_the_law_and_fail_off_it() -> None:
    rng = np.random.default_rng(0)
    good = _synthetic_noise(lambda r, s: 0.23 * np.sqrt(r) * s, rng)
    assert [c["verdict"] for c in noise.claims(good)] == ["pass"] * 6
    # error falling with r and growing like the square of the noise: every law claim fails
    bad = _synthetic_noise(lambda r, s: 5.0 * s ** 2 / np.sqrt(r), rng)
    verdicts = [c["verdict"] for c in noise.claims(bad)]
    assert verdicts[0] == "pass" and verdicts[1:] == ["fail"] * 5
    # runs that did not converge are excluded and make the first claim fail
    stuck = _synthetic_noise(lambda r, s: 0.23 * np.sqrt(r) * s, rng, outcome="not-converged")
    records = noise.claims(pd.concat([good.iloc[:10], stuck], ignore_index=True))
    assert records[0]["verdict"] == "fail" and "not-converged" in records[0]["measured"]


# ----------------------------------------------------------------------------- tensor-init


def _ti_params(N: int, r: int, agd: bool) -> dict:
    return {"K": 2, "d": 20, "r": r, "N": N, "eta": 0.5, "beta": 0.2, "max_iter": 4000,
            "agd": agd}


def test_tensor_init_end_to_end_tiny(tmp_path) -> None:
    rows = []
    cells = [(N, r, False) for N in (20_000, 40_000, 80_000) for r in (4, 8)]
    cells += [(N, 6, True) for N in (10, 400)]
    for (N, r, agd), trial in itertools.product(cells, range(2)):
        params = _ti_params(N, r, agd)
        rows.append({**params, **tensor_init_exp.run_cell(params, seed=N + r + trial)})
    runs = pd.DataFrame(rows)
    small = runs[(runs["N"] == 10)]
    assert (~small["init_defined"]).all() and (small["outcome"] == "init-undefined").all()
    defined = runs[runs["init_defined"].astype(bool)]
    assert (defined["init_error"] > 0).all() and (defined["init_error"] < 0.5).all()
    agd_rows = runs[runs["agd"] & runs["init_defined"]]
    assert agd_rows["success"].all() and (agd_rows["rel_error"] < 1e-4).all()
    tensor_init_exp.plot(runs, tmp_path / "tensor-init")
    assert (tmp_path / "tensor-init.png").stat().st_size > 0
    assert (tmp_path / "tensor-init.pdf").exists()
    records = tensor_init_exp.claims(runs)
    assert len(records) == 3 and records[2]["verdict"] == "pass"


def _synthetic_ti(law, success_rate, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for N, r, _ in itertools.product([20_000, 50_000, 100_000, 200_000], [10, 20, 40], range(8)):
        rows.append({"N": N, "r": r, "d": 100, "agd": False, "init_defined": True,
                     "init_error": law(N, r) * np.exp(0.05 * rng.normal())})
    for N, trial in itertools.product([100, 300, 1000], range(10)):
        ok = bool(trial < 10 * success_rate(N))
        rows.append({"N": N, "r": 20, "d": 100, "agd": True, "init_defined": True,
                     "init_error": 1.0, "success": ok, "reaches_teacher": ok})
    return pd.DataFrame(rows)


def test_tensor_init_claims_pass_on_the_law_and_fail_off_it() -> None:
    rng = np.random.default_rng(2)
    good = _synthetic_ti(lambda N, r: 0.9 * np.sqrt(r * np.log(100) / N),
                         lambda N: min(1.0, N / 300), rng)
    assert [c["verdict"] for c in tensor_init_exp.claims(good)] == ["pass"] * 3
    bad = _synthetic_ti(lambda N, r: 2.0 * N ** -0.2 / np.sqrt(r), lambda N: 0.5, rng)
    assert [c["verdict"] for c in tensor_init_exp.claims(bad)] == ["fail"] * 3
