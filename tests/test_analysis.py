"""Fits (logistic boundary, line, power law), claim records and the shared plot helpers."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from experiments import analysis, plotting
from experiments.analysis import fit_line, fit_logistic_boundary


def _bernoulli(a: float, b: float, xs: np.ndarray, trials: int, seed: int):
    rng = np.random.default_rng(seed)
    x = np.repeat(xs, trials)
    p = 1 / (1 + np.exp(-(a + b * x)))
    return x, (rng.random(x.size) < p).astype(float)


def _nll(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    eta = theta[0] + theta[1] * x
    return float(np.sum(np.logaddexp(0, eta) - y * eta))


# --- logistic boundary ------------------------------------------------------------------------

def test_logistic_fit_recovers_a_known_boundary():
    # P(success) = sigmoid(2 (x - 3)): the 50% point is x50 = 3
    x, y = _bernoulli(-6.0, 2.0, np.linspace(0, 6, 13), 40, seed=1)
    fit = fit_logistic_boundary(x, y)
    assert fit.status == "ok" and fit.n == x.size
    assert fit.ci[0] < 3.0 < fit.ci[1]
    assert fit.ci[1] - fit.ci[0] < 0.5
    assert abs(fit.slope - 2.0) < 0.6
    assert fit.x_at(0.5) == pytest.approx(fit.x50)
    assert fit.probability(fit.x50) == pytest.approx(0.5)
    assert fit.x_at(0.9) > fit.x50 > fit.x_at(0.1)


def test_logistic_interval_covers_the_truth_at_its_level():
    hits = 0
    reps = 300
    for seed in range(reps):
        x, y = _bernoulli(1.5, -1.0, np.linspace(-1, 4, 11), 20, seed=seed)  # x50 = 1.5
        lo, hi = fit_logistic_boundary(x, y, level=0.9).ci
        hits += lo <= 1.5 <= hi
    coverage = hits / reps
    # binomial sd of the coverage estimate is ~0.017: accept 0.9 +- 3.5 sd
    assert 0.84 <= coverage <= 0.96, coverage


def test_logistic_fit_matches_scipy_and_finite_difference_errors():
    x, y = _bernoulli(-2.0, 0.8, np.linspace(0, 5, 9), 15, seed=7)
    fit = fit_logistic_boundary(x, y, ridge=0.0)
    ref = optimize.minimize(_nll, np.zeros(2), args=(x, y), method="BFGS",
                            options={"gtol": 1e-10})
    assert fit.intercept == pytest.approx(ref.x[0], abs=1e-5)
    assert fit.slope == pytest.approx(ref.x[1], abs=1e-5)
    # delta method with the finite-difference Hessian of the negative log-likelihood
    theta, h = np.array([fit.intercept, fit.slope]), 1e-4
    hess = np.empty((2, 2))
    for i in range(2):
        for j in range(2):
            ei, ej = np.eye(2)[i] * h, np.eye(2)[j] * h
            hess[i, j] = (_nll(theta + ei + ej, x, y) - _nll(theta + ei - ej, x, y)
                          - _nll(theta - ei + ej, x, y) + _nll(theta - ei - ej, x, y)) / (4 * h * h)
    a, b = theta
    grad = np.array([-1 / b, a / b**2])
    stderr = math.sqrt(grad @ np.linalg.inv(hess) @ grad)
    assert fit.stderr == pytest.approx(stderr, rel=1e-4)
    assert fit.x50 == pytest.approx(-a / b)
    assert fit.ci[1] - fit.x50 == pytest.approx(1.959964 * stderr, rel=1e-4)


def test_tiny_ridge_barely_moves_the_estimate():
    x, y = _bernoulli(-2.0, 0.8, np.linspace(0, 5, 9), 15, seed=7)
    plain, ridged = fit_logistic_boundary(x, y, ridge=0.0), fit_logistic_boundary(x, y)
    assert ridged.x50 == pytest.approx(plain.x50, abs=1e-5)


def test_separated_and_one_class_data_are_reported():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    fit = fit_logistic_boundary(x, np.array([0, 0, 0, 1, 1, 1]))
    assert fit.status == "separated" and fit.ci == (3.0, 4.0)
    assert 3.0 <= fit.x50 <= 4.0 and np.isfinite(fit.slope) and fit.slope > 0
    down = fit_logistic_boundary(x, np.array([1, 1, 0, 0, 0, 0]))
    assert down.status == "separated" and down.ci == (2.0, 3.0) and down.slope < 0
    tie = fit_logistic_boundary(np.array([1.0, 2.0, 2.0, 3.0]), np.array([0, 0, 1, 1]))
    assert tie.status == "separated" and tie.x50 == 2.0
    for y, status in ((np.ones(6), "all-success"), (np.zeros(6), "all-failure")):
        fit = fit_logistic_boundary(x, y)
        assert fit.status == status and math.isnan(fit.x50) and all(map(math.isnan, fit.ci))


def test_logistic_bad_input():
    with pytest.raises(ValueError, match="only 0/1"):
        fit_logistic_boundary([1.0, 2.0], [0, 2])
    with pytest.raises(ValueError, match="same length"):
        fit_logistic_boundary([1.0, 2.0, 3.0], [0, 1])
    with pytest.raises(ValueError, match="two distinct values"):
        fit_logistic_boundary([1.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match="level must lie in"):
        fit_logistic_boundary([1.0, 2.0], [0, 1], level=1.0)


def test_fit_boundaries_recovers_a_linear_phase_boundary():
    # success iff y is above the boundary y50(x) = 2 x + 1 (logistic width 0.5)
    rng = np.random.default_rng(3)
    rows = []
    for xv in (1.0, 2.0, 3.0, 4.0):
        for yv in np.linspace(0, 12, 25):
            p = 1 / (1 + np.exp(-(yv - (2 * xv + 1)) / 0.5))
            rows += [{"x": xv, "y": yv, "ok": int(rng.random() < p)} for _ in range(12)]
    runs = pd.DataFrame(rows)
    table = analysis.fit_boundaries(runs, by="x", x="y", success="ok")
    assert list(table["x"]) == [1.0, 2.0, 3.0, 4.0] and set(table["status"]) == {"ok"}
    error = table["x50"] - (2 * table["x"] + 1)
    assert np.all(table["stderr"] < 0.2) and np.all(np.abs(error) < 4 * table["stderr"])
    line = fit_line(table["x"], table["x50"])
    assert line.slope_ci[0] < 2.0 < line.slope_ci[1]
    with pytest.raises(ValueError, match="column 'z' not in runs"):
        analysis.fit_boundaries(runs, by="z", x="y", success="ok")


# --- lines and power laws ---------------------------------------------------------------------

def test_line_fit_matches_polyfit_and_textbook_interval():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 10, 30)
    y = 1.5 - 0.7 * x + rng.normal(0, 0.3, x.size)
    fit = fit_line(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    assert fit.slope == pytest.approx(slope, rel=1e-12)
    assert fit.intercept == pytest.approx(intercept, rel=1e-12)
    assert fit.r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, rel=1e-12)
    residual = y - (intercept + slope * x)
    se = math.sqrt(residual @ residual / (x.size - 2) / np.sum((x - x.mean()) ** 2))
    assert fit.slope_stderr == pytest.approx(se, rel=1e-10)
    t = 2.048407141795  # t_{28, 0.975}
    assert fit.slope_ci == pytest.approx((slope - t * se, slope + t * se), rel=1e-9)
    assert fit.slope_ci[0] < -0.7 < fit.slope_ci[1]
    with pytest.raises(ValueError, match="at least 3 points"):
        fit_line([1.0, 2.0], [1.0, 2.0])


def test_power_law_exponent():
    x = np.array([10.0, 20, 40, 80, 160])
    fit = analysis.fit_power_law(x, 3.0 * x**1.5)
    assert fit.slope == pytest.approx(1.5) and math.exp(fit.intercept) == pytest.approx(3.0)
    assert fit.r2 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        analysis.fit_power_law([1.0, 0.0, 2.0], [1.0, 1.0, 1.0])


# --- claims -----------------------------------------------------------------------------------

def test_claim_records():
    record = analysis.claim("slope is 2", 2, np.float64(1.97), True)
    assert record == {"claim": "slope is 2", "predicted": 2, "measured": 1.97,
                      "verdict": "pass"}
    assert type(record["measured"]) is float
    assert analysis.claim("c", "n log n", "n^1.1", False)["verdict"] == "fail"
    inside = analysis.claim_in_interval("exponent 1", 1.0, 1.05, (0.95, 1.15))
    assert inside["verdict"] == "pass" and inside["measured"] == "1.05 [0.95, 1.15]"
    outside = analysis.claim_in_interval("exponent 1", 1.0, 1.2, (1.1, 1.3))
    assert outside["verdict"] == "fail"
    tolerant = analysis.claim_in_interval("exponent 1", 1.0, 1.2, (1.1, 1.3), tolerance=0.1)
    assert tolerant["verdict"] == "pass" and "tolerance 0.1" in tolerant["measured"]
    assert analysis.claim_in_interval("c", 1.0, math.nan, (math.nan, math.nan))["verdict"] == \
        "fail"
    with pytest.raises(ValueError, match="non-empty string"):
        analysis.claim("", 1, 1, True)


# --- plotting ---------------------------------------------------------------------------------

def test_save_figure_writes_png_and_pdf_and_closes(tmp_path):
    fig, ax = plotting.figure()
    ax.plot([0, 1], [0, 1])
    png, pdf = plotting.save_figure(fig, tmp_path / "sub" / "fig")
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    assert not plt.fignum_exists(fig.number)


def test_cell_edges():
    assert plotting.cell_edges([1.0, 2.0, 4.0]).tolist() == [0.5, 1.5, 3.0, 5.0]
    assert plotting.cell_edges([1.0, 4.0, 16.0], log=True) == pytest.approx([0.5, 2, 8, 32])
    with pytest.raises(ValueError, match="positive"):
        plotting.cell_edges([0.0, 1.0], log=True)


def test_success_heatmap_draws_rates_and_boundary(tmp_path):
    rows = [{"k": k, "m": m, "ok": int(m >= 2 * k + (t % 2))}
            for k in (1, 2, 3) for m in range(0, 10) for t in range(4)]
    fig, ax = plotting.figure()
    table = plotting.success_heatmap(ax, pd.DataFrame(rows), x="k", y="m", success="ok")
    mesh = ax.collections[0]
    rates = np.asarray(mesh.get_array()).reshape(10, 3)
    assert rates[0].tolist() == [0, 0, 0] and rates[-1].tolist() == [1, 1, 1]
    assert rates[2, 0] == 0.5  # k = 1, m = 2: success on even trials only
    assert list(table["status"]) == ["separated"] * 3
    assert table["x50"].between(2 * table["k"], 2 * table["k"] + 1).all()
    assert ax.get_xlabel() == "k" and ax.get_ylabel() == "m"
    plotting.save_figure(fig, tmp_path / "heat")
    assert (tmp_path / "heat.png").is_file()
