"""l2-init (Sakamoto & Sato 2022, Sec. 3.3, Eq. 1, Figs. 3 and 7): ``run_cell`` on tiny generated
MNIST files with each penalty (finite per-level lists; a strong l2_init keeps the weights near the
initialization, a strong l2_norm shrinks their norm), the grids and their parameter rules (cells of
a trial share a seed), claims that pass on a table shaped like the paper and fail on contradicting
or failed ones, and the figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_deep_lottery_imp import write_learnable_mnist

from experiments import engine
from experiments.engine import check_claims
from experiments.sakamoto2022 import l2_init as li
from experiments.sakamoto2022.tickets import LARGE_LR, QUICK, SMALL_LR, train_config
from lottery_common import DATA_ENV

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPERIMENT = li.EXPERIMENT


@pytest.fixture
def tiny_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Learnable MNIST-format files (300 test-split images), found through $LOTTERY_LAB_DATA."""
    write_learnable_mnist(tmp_path / "mnist", 20, 300, seed=0)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    return tmp_path


def _cell(**changes: object) -> dict:
    cell = {k: v[0] for k, v in QUICK.items()}
    cell.update(N=100, n_val=50, n_test=100, levels=1, iterations=8, eval_every=4,
                batch_size=16, lr=LARGE_LR, device="cpu")
    cell.update(changes)
    return cell


def test_run_cell_with_each_penalty(tiny_mnist: Path, tmp_path: Path) -> None:
    rows = {}
    for penalty, lam in (("none", 0.0), ("l2_init", 0.5), ("l2_norm", 0.5)):
        cell = _cell(regularizer=penalty, regularization=lam)
        row = li.run_cell(cell, seed=4)
        assert row["imp_level"] == [0, 1] and row["device"] == "cpu"
        for field in ("test_metric_end", "distance_from_start", "weight_norm", "density"):
            values = row[f"imp_{field}"]
            assert len(values) == 2 and all(math.isfinite(v) for v in values)
        rows[penalty] = {**cell, **row, "trial": 0}
    # same seed, same data order: the penalties pull towards the initialization / towards 0
    assert rows["l2_init"]["imp_distance_from_start"][0] < \
        rows["none"]["imp_distance_from_start"][0]
    assert rows["l2_norm"]["imp_weight_norm"][0] < rows["none"]["imp_weight_norm"][0]
    runs = pd.DataFrame(rows.values())
    records = check_claims("l2-init", li.claims(runs))
    assert len(records["claims"]) == 3
    li.plot(runs, tmp_path / "tiny")
    assert (tmp_path / "tiny.png").exists()


def test_the_penalty_replaces_weight_decay() -> None:
    assert train_config(_cell(), seed=0).weight_decay == 1e-4
    cfg = train_config(_cell(regularizer="l2_init", regularization=1e-3), seed=0)
    assert (cfg.weight_decay, cfg.regularizer, cfg.regularization) == (0.0, "l2_init", 1e-3)


def test_grids_obey_the_rules_and_cells_share_seeds() -> None:
    for size in ("quick", "full"):
        keys = engine.grid_keys(EXPERIMENT.size(size))
        assert not set(keys) - set(EXPERIMENT.params)
        for params in engine.expand_cells(EXPERIMENT, engine.Selection(size)).values():
            assert EXPERIMENT.cell_problems(params) == []
    quick = engine.expand_cells(EXPERIMENT, engine.Selection("quick")).values()
    assert sorted((p["lr"], p["regularizer"], p["regularization"]) for p in quick) == sorted(
        [(lr, "none", 0.0) for lr in (SMALL_LR, LARGE_LR)]
        + [(lr, p, lam) for lr in (SMALL_LR, LARGE_LR) for p in ("l2_init", "l2_norm")
           for lam in (1e-3, 1e-2)])
    assert EXPERIMENT.quick.trials == 2 and EXPERIMENT.full.trials == 3
    full = engine.expand_cells(EXPERIMENT, engine.Selection("full")).values()
    assert {p["regularization"] for p in full if p["regularizer"] != "none"} == \
        {1e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3}
    assert {(p["model"], p["dataset"]) for p in full} == {
        (m, d) for m in ("resnet20", "vgg16") for d in ("cifar10", "cifar100")}  # Fig. 7
    assert len(full) == 4 * (2 + 24)
    tasks = engine.expand_tasks(EXPERIMENT, engine.Selection("quick"))
    for trial in (0, 1):
        assert len({t.seed for t in tasks if t.trial == trial}) == 1  # paired cells
    assert EXPERIMENT.cell_problems(_cell(regularizer="l1"))[0][0] == "regularizer"
    assert EXPERIMENT.cell_problems(_cell(regularization=-1e-3))[0][0] == "regularization"


def _paper_like(init_gain: float = 0.05, norm_gain: float = 0.0, init_dense: float = 0.0,
                monotone: bool = True) -> pd.DataFrame:
    """Fig. 3: at the large rate the ticket loses 4 pt per level without a penalty and l2_init at
    the larger lambda wins back ``init_gain`` (l2_norm ``norm_gain``) at the sparsest level, the
    dense net moving by ``init_dense`` with l2_init; the small-rate ticket keeps its accuracy.
    l2_init's distance from the initialization decreases with lambda (unless not ``monotone``)."""
    def accuracy(lr: float, penalty: str, lam: float, level: int, trial: int) -> float:
        acc = 0.95 - (0.04 if lr == LARGE_LR else 0.003) * level + 0.001 * trial
        if lr == LARGE_LR and lam == max(li.QUICK_LAMBDAS):
            gain = init_gain if penalty == "l2_init" else norm_gain
            dense = init_dense if penalty == "l2_init" else 0.0
            acc += dense + (gain - dense) * level / 2
        return acc

    def distance(lr: float, penalty: str, lam: float) -> float:
        if penalty != "l2_init":
            return 3.0
        return 3.0 / (1 + 100 * lam) if monotone else 3.0 + lam

    return li.synthetic_runs(accuracy, distance)


def _verdicts(runs: pd.DataFrame) -> list[str]:
    return [c["verdict"] for c in check_claims("l2-init", li.claims(runs))["claims"]]


def test_claims_pass_on_the_papers_pattern_and_fail_otherwise() -> None:
    assert _verdicts(_paper_like()) == ["pass"] * 3
    assert _verdicts(_paper_like(monotone=False)) == ["fail", "pass", "pass"]
    assert _verdicts(_paper_like(norm_gain=0.06)) == ["pass", "fail", "pass"]
    # l2_init lifts the dense net more than the ticket: higher ticket, wider gap
    assert _verdicts(_paper_like(init_gain=0.05, init_dense=0.06)) == ["pass", "pass", "fail"]
    assert _verdicts(li.contradicting_runs()) == ["fail"] * 3
    for bad in (math.nan, math.inf):
        failed = _paper_like()
        for column in ("imp_test_metric_end", "imp_distance_from_start"):
            failed[column] = [[bad] * len(v) for v in failed[column]]
        assert _verdicts(failed) == ["fail"] * 3
    no_penalty = _paper_like()[lambda t: t["regularizer"] == "none"]
    assert _verdicts(no_penalty) == ["fail"] * 3
    records = check_claims("l2-init", li.claims(_paper_like()))
    assert "lambda 0.01" in records["claims"][1]["measured"]  # the best lambda of each penalty
    assert any("l2_norm widens" in f["finding"] for f in records["findings"])


def test_plot_writes_files_and_copes_with_one_row(tmp_path: Path) -> None:
    li.plot(_paper_like(), tmp_path / "l2")
    assert (tmp_path / "l2.png").stat().st_size > 0 and (tmp_path / "l2.pdf").exists()
    li.plot(li.contradicting_runs().iloc[:1], tmp_path / "one")
    assert (tmp_path / "one.png").exists()
    nan = _paper_like()
    nan["imp_test_metric_end"] = [[np.nan] * len(v) for v in nan["imp_test_metric_end"]]
    li.plot(nan, tmp_path / "nan")
    assert (tmp_path / "nan.png").exists()
