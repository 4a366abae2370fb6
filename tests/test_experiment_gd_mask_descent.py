"""The gd-mask-descent experiment (spec Sec. 7): exact optimal-mask error, the GD step, equal
row updates, claims on hand-built tables, and the figure."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from experiments.xiong2023 import gd_mask_descent as gd


def _reference_error(U: np.ndarray, w: np.ndarray) -> float:
    """min over all 2^(n d) 0/1 masks of ||w - (U * M)^T 1||_2, by enumeration."""
    n, d = U.shape
    best = math.inf
    for bits in itertools.product((0.0, 1.0), repeat=n * d):
        mask = np.array(bits).reshape(n, d)
        best = min(best, float(np.linalg.norm(w - (U * mask).sum(axis=0))))
    return best


def _instance(seed: int, n: int = 6, d: int = 3, m: int = 40):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, d)), rng.uniform(-1, 1, d), rng.uniform(-1, 1, (n, d)))


@pytest.mark.parametrize("seed", range(4))
def test_optimal_mask_error_is_exact(seed):
    rng = np.random.default_rng(seed)
    n, d = (3, 3) if seed % 2 else (4, 2)  # 2^(n d) <= 512 masks
    U, w = rng.uniform(-1, 1, (n, d)), rng.uniform(-1, 1, d)
    error, mask = gd.optimal_mask_error(U, w)
    assert error == pytest.approx(_reference_error(U, w), abs=1e-14)
    assert mask.shape == (n, d) and mask.dtype == bool
    assert float(np.linalg.norm(w - (U * mask).sum(axis=0))) == pytest.approx(error, abs=1e-14)


def test_gradient_matches_finite_differences_and_the_hand_formula():
    X, w, U = _instance(1)
    grad = gd.gradient(U, X, w)
    h = 1e-6
    for k, j in [(0, 0), (2, 1), (5, 2)]:
        plus, minus = U.copy(), U.copy()
        plus[k, j] += h
        minus[k, j] -= h
        numeric = (gd.loss(plus, X, w) - gd.loss(minus, X, w)) / (2 * h)
        assert grad[k, j] == pytest.approx(numeric, rel=1e-6)
    hand = 2 * sum((U.sum(0) @ x - w @ x) * x for x in X)
    np.testing.assert_allclose(grad, np.tile(hand, (U.shape[0], 1)), rtol=1e-12)
    # the step 1/L contracts U^T 1 - w: L bounds the Hessian 2 (1 1^T) kron X^T X
    L = gd.lipschitz(X, U.shape[0])
    assert L == pytest.approx(2 * U.shape[0] * np.linalg.norm(X, 2) ** 2)
    step = U - gd.gradient(U, X, w) / L
    assert gd.loss(step, X, w) < gd.loss(U, X, w)


@pytest.mark.parametrize("eps", [None, 0.05])
def test_every_row_gets_the_same_update(eps):
    X, w, U0 = _instance(2)
    alpha = 1.0 / gd.lipschitz(X, U0.shape[0])
    path = gd.descent_path(U0, X, w, alpha, 60, eps)
    assert path["row_checked_steps"] > 0
    assert path["row_deviation"] < gd.ROW_TOLERANCE
    shift = path["U"] - U0  # = 1 c^T: every column moved by one common scalar
    np.testing.assert_allclose(shift, np.tile(shift[0], (U0.shape[0], 1)), atol=1e-12)
    if eps is None:  # U^T 1 -> w: the all-ones mask becomes exact
        assert path["errors"][-1] <= 1e-12
        np.testing.assert_allclose(path["U"].sum(axis=0), w, atol=1e-12)
    else:
        assert path["max_drift"] <= eps * (1 + 1e-12)


def test_run_cell_counts_every_step():
    params = {"n": 6, "d": 3, "m": 50, "iterations": 300, "lr": 0.5}
    row = gd.run_cell(params, 7)
    assert row["final_error"] <= gd.FINAL_TOLERANCE * row["w_norm"]
    assert row["increases"] + row["decreases"] <= 300
    assert row["increase_share"] == row["increases"] / 300
    assert len(row["path_steps"]) == len(row["path_error"]) <= gd.PATH_POINTS
    assert row["path_steps"][0] == 0 and row["path_steps"][-1] == 300
    assert row["path_error"][0] == row["initial_error"]
    assert math.isnan(row["drift_over_eps"])
    boxed = gd.run_cell({**params, "eps": 0.02}, 7)
    assert boxed["drift_over_eps"] <= 1 + 1e-12
    assert boxed["initial_error"] == row["initial_error"]  # same instance (same seed)


def _row(projected: bool, trial: int, **changes) -> dict:
    steps = gd.path_steps(100)
    row = {"n": 8, "d": 5, "m": 200, "iterations": 100, "lr": 1.0, "trial": trial,
           "w_norm": 1.0, "initial_error": 1e-2, "final_error": 1e-16,
           "final_all_ones_error": 1e-16, "min_error": 1e-16, "increases": trial,
           "decreases": 10, "increase_share": trial / 100, "first_increase": 2 if trial else 0,
           "row_deviation": 1e-12,
           "row_checked_steps": 12, "max_drift": 0.3, "drift_over_eps": math.nan,
           "path_steps": [int(s) for s in steps],
           "path_error": [1e-2 * 0.5 ** float(s) for s in steps]}
    if projected:
        row.update(eps=0.1, final_error=1e-3, max_drift=0.1, drift_over_eps=1.0)
    return {**row, **changes}


def _verdicts(runs: pd.DataFrame) -> list[str]:
    return [c["verdict"] for c in gd.claims(runs) if "verdict" in c]


def test_claims_pass_on_a_table_that_obeys_the_analysis():
    runs = pd.DataFrame([_row(p, t) for p in (False, True) for t in range(3)])
    records = gd.claims(runs)
    assert _verdicts(runs) == ["pass", "pass", "pass"]
    findings = [r for r in records if "finding" in r]
    assert len(findings) == 3 and all("verdict" not in r for r in findings)
    assert "2 of 3 runs with an increase" in findings[0]["measured"]
    assert "3 increasing of 33 changing steps" in findings[0]["measured"]


@pytest.mark.parametrize(("changes", "projected", "failing"), [
    ({"final_error": 1e-6}, False, 0),  # GD stalls: the all-ones mask never becomes exact
    ({"final_error": math.nan}, False, 0),
    ({"row_deviation": 1e-6}, False, 1),  # rows updated differently
    ({"row_checked_steps": 0}, False, 1),  # nothing checked is no evidence
    ({"drift_over_eps": 1.01}, True, 2),  # the projection let the iterate out
])
def test_each_claim_can_fail(changes, projected, failing):
    rows = [_row(p, t) for p in (False, True) for t in range(3)]
    rows[3 if projected else 0] = _row(projected, 0, **changes)
    verdicts = _verdicts(pd.DataFrame(rows))
    assert verdicts[failing] == "fail"
    assert verdicts.count("fail") == 1


def test_claims_without_one_kind_of_run_fail_and_contradicting_table_fails():
    plain = pd.DataFrame([_row(False, t) for t in range(2)])
    assert _verdicts(plain) == ["pass", "pass", "fail"]
    assert _verdicts(gd.contradicting_runs()) == ["fail", "fail", "fail"]


def test_plot_writes_files(tmp_path):
    runs = pd.DataFrame([_row(p, t) for p in (False, True) for t in range(3)])
    gd.plot(runs, tmp_path / "fig")
    assert (tmp_path / "fig.png").stat().st_size > 0 and (tmp_path / "fig.pdf").exists()
    gd.plot(runs[runs["eps"].isna()].drop(columns="eps"), tmp_path / "plain")
    assert (tmp_path / "plain.png").exists()


def test_parameter_rules():
    cell = {"n": 8, "d": 5, "m": 200, "iterations": 10, "lr": 1.0, "eps": 0.1}
    assert gd.EXPERIMENT.cell_problems(cell) == []
    assert [p for p, _ in gd.EXPERIMENT.cell_problems({**cell, "m": 3})] == ["m"]
    assert [p for p, _ in gd.EXPERIMENT.cell_problems({**cell, "lr": 2.0})] == ["lr"]
    assert [p for p, _ in gd.EXPERIMENT.cell_problems({**cell, "eps": 0.0})] == ["eps"]
    assert [p for p, _ in gd.EXPERIMENT.cell_problems({**cell, "n": gd.N_MAX + 1})] == ["n"]
