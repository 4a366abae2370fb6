"""Coverage (spec Sec. 3.3), quantile CIs, and the lueker / perturbed-coverage experiments."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.engine import Selection, plot_experiment, run_experiment, validate_experiment
from experiments.registry import get
from subset_sum import sup_error
from subset_sum.coverage import (
    bound_shape_linear,
    bound_shape_log,
    covering_size,
    draw_coefficients,
    fit_line,
    quantile_ci,
)


@pytest.mark.parametrize(("eta", "eps"), [(0.1, 0.0), (0.02, 0.0), (0.01, 0.05), (0.001, 0.2)])
def test_covering_size_is_the_first_covering_prefix(eta, eps):
    """n*: the tolerance-eta sup error of x[:n*] is 0 and that of x[:n* - 1] is positive."""
    for seed in range(8):
        n_star = covering_size(eta, eps, seed, n_max=40)
        x = draw_coefficients(40, seed)
        assert 1 <= n_star <= 40
        assert sup_error(x[:n_star], eps=eps, tol=eta) == 0.0
        if n_star > 1:
            assert sup_error(x[:n_star - 1], eps=eps, tol=eta) > 0.0
        # the same statement without the tolerance trick: every z is within eta of U
        assert sup_error(x[:n_star], eps=eps) <= eta + 1e-12


def test_covering_size_censors_at_n_max():
    assert covering_size(1e-6, 0.0, 0, n_max=5) == 6


def test_quantile_ci_order_statistic_and_coverage():
    values = np.arange(1.0, 101.0)
    estimate, low, high = quantile_ci(values, 0.9, 0.95)
    assert estimate == 90.0 and low <= estimate <= high
    rng = np.random.default_rng(0)
    true_q = 0.9  # Unif[0, 1]
    hits = 0
    for _ in range(400):
        _, low, high = quantile_ci(rng.random(200), 0.9, 0.95)
        hits += low <= true_q <= high
    assert hits / 400 >= 0.92


def test_fit_line_and_bound_shapes():
    slope, intercept, r2 = fit_line(np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0]))
    assert (slope, intercept, r2) == pytest.approx((2.0, 1.0, 1.0))
    eps = np.array([0.0, 0.1, 1.0])
    np.testing.assert_allclose(bound_shape_log(eps), 1 / (1 + np.log(1 + eps)))
    np.testing.assert_allclose(bound_shape_linear(eps), [1.0, 1 / 1.1, 0.5])
    with pytest.raises(ValueError):
        quantile_ci(np.array([]), 0.9)
    with pytest.raises(ValueError):
        covering_size(0.0, 0.0, 0)


def _run(name, tmp_path, trials, overrides):
    selection = Selection(trials=trials, overrides=overrides)
    report = run_experiment(name, selection, out=tmp_path, progress=False)
    assert not report.failures
    plot_experiment(name, selection, out=tmp_path)
    verdicts = validate_experiment(name, selection, out=tmp_path)
    claims = verdicts["claims"]
    stem = tmp_path / "figures" / name
    assert stem.with_suffix(".png").stat().st_size > 0
    assert stem.with_suffix(".pdf").stat().st_size > 0
    saved = json.loads((tmp_path / "results" / name / "validate.json").read_text())
    assert saved == verdicts
    return {c["claim"].split(" ")[0]: c for c in claims}, claims


def test_lueker_experiment_end_to_end(tmp_path):
    experiment = get("lueker")
    assert experiment.run_cell({"measure": "coverage", "eta": 0.1}, 3)["n_star"] == \
        covering_size(0.1, 0.0, 3)
    _, claims = _run("lueker", tmp_path, 40,
                     {"eta": (0.1, 0.01, 0.001), "n": (4, 8, 12)})
    assert len(claims) == 2
    assert all(c["verdict"] == "pass" for c in claims), claims


def test_perturbed_coverage_experiment_end_to_end(tmp_path):
    _, claims = _run("perturbed-coverage", tmp_path, 40,
                     {"eta": (0.1, 0.01, 0.001), "eps": (0.0, 0.05, 0.2),
                      "eps_over_eta": (0.0, 2.0, 10.0)})
    assert len(claims) == 3
    texts = " ".join(c["claim"] for c in claims)
    assert "bound shapes" in texts and "saturates" in texts
    saturation = next(c for c in claims if "saturates" in c["claim"])
    assert saturation["verdict"] == "pass", saturation
