"""ticket-sharpness (Sakamoto & Sato 2022, Table 1, Fig. 2): ``run_cell`` on tiny generated MNIST
files gives the curvature of every level (the trace against an exact Hessian of the same ticket),
claims that pass on a paper-shaped table and fail on contradicting or failed ones, and the
figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.engine import check_claims
from experiments.sakamoto2022 import ticket_sharpness as ts
from experiments.sakamoto2022.tickets import LARGE_LR, SMALL_LR

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cell(**changes: object) -> dict:
    cell = {k: v[0] for k, v in ts.QUICK.items()}
    cell.update({"N": 100, "n_val": 50, "n_test": 50, "levels": 2, "iterations": 12,
                 "eval_every": 6, "batch_size": 20, "model": "mlp", "hessian_examples": 40,
                 "probes": 400, "power_iterations": 200, "device": "cpu", "fraction": 0.5})
    cell.update(changes)
    return cell



def test_run_cell_measures_the_ticket_curvature_of_every_level(tiny_mnist_env: Path) -> None:
    params = _cell(model="lenet_300_100", hessian_examples=30, probes=60, power_iterations=60)
    row = ts.run_cell(params, seed=3)
    assert row["imp_level"] == [0, 1, 2]
    assert all(t > 0 for t in row["imp_hessian_trace"])
    assert all(s >= 0 for s in row["imp_trace_stderr"])
    for d in ts.DIRECTIONS:
        values = row[f"landscape_{d}"]
        assert len(values) == len(ts.LANDSCAPE_T)
        middle = values[len(values) // 2]
        assert middle == pytest.approx(min(values), abs=0.5) or d == "gradient"
    assert all(e > 0 for e in row["imp_top_eigenvalue"])
    sharp = row["expected_sharpness"]
    assert len(sharp) == len(ts.SHARPNESS_SIGMAS) and sharp[-1] > sharp[0]
    assert row["imp_trace_stderr"][2] < row["imp_hessian_trace"][2]


def _unit(op, i: int) -> torch.Tensor:
    v = torch.zeros(op.size, dtype=op.point.dtype)
    v[i] = 1.0
    return v


def test_trace_matches_the_exact_masked_diagonal_on_a_tiny_ticket(tiny_mnist_env: Path) -> None:
    """A ticket small enough for the exact diagonal: Hutchinson within 4 standard errors."""
    from deep_lottery.curvature import HessianOperator, hutchinson_trace
    from deep_lottery.data import TensorData
    from deep_lottery.masks import Mask
    from deep_lottery.models import build_model

    g = torch.Generator().manual_seed(0)
    model = build_model("mlp", seed=0, input_shape=(1, 4, 4), num_classes=3, hidden=(6,))
    mask = Mask({n: torch.rand(p.shape, generator=g) < 0.4 for n, p in model.named_parameters()
                 if n.endswith("weight")})
    data = TensorData(torch.randn(50, 1, 4, 4, generator=g), torch.randint(0, 3, (50,),
                                                                           generator=g))
    op = HessianOperator.from_model(model, data, "classification", mask)
    exact = sum(float(op.rayleigh(_unit(op, i))) for i in range(op.size)
                if op.mask_vector is None or op.mask_vector[i] != 0)
    result = hutchinson_trace(op, max_probes=400, tol=None, seed=1)
    assert abs(result.trace - exact) <= 4 * result.stderr + 1e-9


def _paper_table(small: float, large: float, sam: float, nvrm: float) -> pd.DataFrame:
    table = ts.contradicting_runs()
    traces = {("plain", SMALL_LR): small, ("plain", LARGE_LR): large, ("sam", SMALL_LR): sam,
              ("nvrm", SMALL_LR): nvrm}
    table["imp_hessian_trace"] = [[traces[(r, lr)]] * 2 for r, lr in
                                  zip(table["step_rule"], table["lr"])]
    return table


def test_claims_follow_the_traces() -> None:
    passing = ts.claims(_paper_table(1556.0, 400.0, 365.0, 1238.0))
    verdicts = [c["verdict"] for c in passing if "verdict" in c]
    assert verdicts == ["pass", "pass", "pass"]
    failing = ts.claims(ts.contradicting_runs())
    assert [c["verdict"] for c in failing if "verdict" in c] == ["fail", "fail", "fail"]
    # SAM sharper than SGD: only the SAM claim fails
    mixed = ts.claims(_paper_table(1556.0, 400.0, 2000.0, 1238.0))
    assert [c["verdict"] for c in mixed if "verdict" in c] == ["pass", "fail", "pass"]
    check_claims("ticket-sharpness", passing)


def test_claims_and_plot_cope_with_failed_and_empty_tables(tmp_path: Path) -> None:
    empty = pd.DataFrame({"lr": [SMALL_LR], "step_rule": ["plain"], "trial": [0]})
    out = ts.claims(empty)
    assert all(c["verdict"] == "fail" for c in out if "verdict" in c)
    ts.plot(empty, tmp_path / "empty")
    ts.plot(_paper_table(1556.0, 400.0, 365.0, 1238.0), tmp_path / "paper")
    assert (tmp_path / "paper.png").stat().st_size > 10_000


def test_the_hessian_set_must_fit_the_training_set() -> None:
    problems = ts.EXPERIMENT.cell_problems(_cell(hessian_examples=101))
    assert any(name == "hessian_examples" for name, _ in problems)
    assert not ts.EXPERIMENT.cell_problems(_cell())
    assert np.isfinite(ts.LANDSCAPE_T).all()
