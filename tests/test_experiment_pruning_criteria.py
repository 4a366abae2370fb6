"""pruning-criteria (Sakamoto & Sato 2022, Table 2): ``run_cell`` on tiny generated MNIST files,
the masks every criterion gives (level L's kept count, among level L-1's weights, the output layer
unpruned, large_final = IMP's mask keeping the largest trained weights), claims that pass on a
table shaped like the paper's and fail on contradicting or failed ones, the figure and the
parameter rules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_deep_lottery_imp import write_learnable_mnist

from experiments import engine
from experiments.engine import check_claims
from experiments.sakamoto2022 import pruning_criteria as pc
from experiments.sakamoto2022.tickets import OUTPUT_LAYER, run_tickets
from lottery_common import DATA_ENV

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPERIMENT = pc.EXPERIMENT


@pytest.fixture
def tiny_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Learnable MNIST-format files (400 test-split images), found through $LOTTERY_LAB_DATA."""
    write_learnable_mnist(tmp_path / "mnist", 20, 400, seed=0)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    monkeypatch.delenv("LOTTERY_LAB_IMP_CACHE", raising=False)
    return tmp_path


def _cell(**changes: object) -> dict:
    cell = {"dataset": "mnist", "mnist_files": "test", "N": 100, "n_val": 50, "n_test": 100,
            "model": "lenet_300_100", "width": 1.0, "levels": 2, "fraction": 0.44,
            "iterations": 6, "eval_every": 3, "batch_size": 16, "lr": 0.1, "label_noise": 0.0,
            "step_rule": "plain", "rho": 0.05, "variability": 0.01, "regularizer": "none",
            "regularization": 0.0, "augment": False, "device": "cpu"}
    cell.update(changes)
    return cell


def test_run_cell_measures_every_criterion_at_every_stage(tiny_mnist: Path) -> None:
    row = pc.run_cell(_cell(), seed=3)
    names = pc.criteria()
    assert names[:3] == pc.PAPER_CRITERIA and set(names) >= {"large_init", "movement"}
    assert row["level"] == 2 and row["imp_level"] == [0, 1, 2]
    assert row["target_density"] == pytest.approx(row["imp_density"][2])
    assert 0 <= row["train_base"] <= 1 and 0 <= row["test_base"] <= 1
    for c in names:
        assert row[f"kept_{c}"] == row["target_kept"]
        for stage in pc.STAGES:
            assert 0 <= row[f"train_{stage}_{c}"] <= 1
        assert math.isfinite(row[f"test_retrained_{c}"])
    assert row["mask_equals_imp"] is True
    # large_final's retraining is IMP's level L: same mask, init, data order, rate
    assert row["train_retrained_large_final"] == pytest.approx(row["imp_train_metric_end"][2])
    assert row["device"] == "cpu" and row["images_per_second"] > 0


def test_masks_have_the_target_count_and_large_final_keeps_the_largest(tiny_mnist: Path) -> None:
    tickets = run_tickets(_cell(), seed=4)
    masks = pc.criterion_masks(tickets, 2, seed=4)
    previous, trained = tickets.level(1)
    target, _ = tickets.level(2)
    assert set(masks) == set(pc.criteria())
    for c, mask in masks.items():
        assert mask.num_kept == target.num_kept, c
        assert mask.is_subset_of(previous), c
        assert bool(mask[OUTPUT_LAYER].all()), c  # the output layer stays unpruned
    assert masks["large_final"] == target
    names = [n for n in previous.names() if n != OUTPUT_LAYER]

    def magnitudes(mask: object, kept: bool) -> np.ndarray:
        parts = [trained[n].abs()[(mask[n] if kept else previous[n] & ~mask[n])].numpy()
                 for n in names]
        return np.concatenate(parts)

    large, small = masks["large_final"], masks["small_final"]
    assert magnitudes(large, True).min() >= magnitudes(large, False).max()
    assert magnitudes(small, True).max() <= magnitudes(small, False).min()
    assert masks["random"] != large and masks["random"] != small


def _paper_like(**changes: dict[str, float]) -> pd.DataFrame:
    """``contradicting_runs`` rewritten to Table 2: base 99%, each criterion's drops as the
    paper's (``changes`` replaces some: {criterion: {stage: drop in points}})."""
    runs = pc.contradicting_runs()
    drops = {c: dict(stages) for c, stages in pc.PAPER.items()}
    for c, stages in changes.items():
        drops[c].update(stages)
    for c, stages in drops.items():
        for s, d in stages.items():
            runs[f"train_{s}_{c}"] = 0.99 + d / 100
    return runs


def _verdicts(runs: pd.DataFrame) -> list[str]:
    return [c["verdict"] for c in check_claims("pruning-criteria", pc.claims(runs))["claims"]]


def test_claims_pass_on_the_papers_table_and_fail_otherwise() -> None:
    assert _verdicts(_paper_like()) == ["pass", "pass"]
    assert _verdicts(_paper_like(random={"pruned": -10.0})) == ["fail", "pass"]
    assert _verdicts(_paper_like(small_final={"retrained": 0.0})) == ["pass", "fail"]
    assert _verdicts(pc.contradicting_runs()) == ["fail", "fail"]
    failed = _paper_like()
    for column in failed.columns:
        if column.startswith("train_"):
            failed[column] = math.nan
    assert _verdicts(failed) == ["fail", "fail"]
    records = check_claims("pruning-criteria", pc.claims(_paper_like()))
    table = records["findings"][0]["measured"]
    assert "large_final: -19.8 +- 0.0 / -88.6 +- 0.0 / -0.3 +- 0.0" in table
    assert any("rewinding" in f["finding"] for f in records["findings"])


def test_drops_are_points_against_the_level_before() -> None:
    frame = pc.drops(_paper_like())
    row = frame[(frame["criterion"] == "small_final") & (frame["stage"] == "retrained")]
    assert len(row) == 6 and np.allclose(row["drop"], -8.0)


def test_plot_writes_files_and_copes_with_one_row(tmp_path: Path) -> None:
    pc.plot(_paper_like(), tmp_path / "criteria")
    assert (tmp_path / "criteria.png").stat().st_size > 0 and (tmp_path / "criteria.pdf").exists()
    pc.plot(pc.contradicting_runs().iloc[:1], tmp_path / "one")
    assert (tmp_path / "one.png").exists()


def test_parameter_rules() -> None:
    for size in ("quick", "full"):
        keys = engine.grid_keys(EXPERIMENT.size(size))
        assert not set(keys) - set(EXPERIMENT.params)
        cells = engine.expand_cells(EXPERIMENT, engine.Selection(size))
        assert sorted({p["lr"] for p in cells.values()}) == (
            pc.QUICK_LRS if size == "quick" else pc.FULL_LRS)
        for params in cells.values():
            assert EXPERIMENT.cell_problems(params) == []
    assert EXPERIMENT.cell_problems(_cell(lr=-0.1))[0][0] == "lr"
    assert EXPERIMENT.cell_problems(_cell(levels=0))[0][0] == "levels"
    assert EXPERIMENT.cell_problems(_cell(N=9900))[0][0] == "N"
    assert EXPERIMENT.shared_seed_params == ("lr",)


def test_tiny_runs_through_claims_and_plot(tiny_mnist: Path, tmp_path: Path) -> None:
    rows = [{**_cell(lr=lr), **pc.run_cell(_cell(lr=lr), seed=2), "trial": 0}
            for lr in (0.01, 0.1)]
    runs = pd.DataFrame(rows)
    records = check_claims("pruning-criteria", pc.claims(runs))
    assert len(records["claims"]) == 2
    assert "2 tickets" in records["claims"][0]["measured"]
    pc.plot(runs, tmp_path / "tiny")
    assert (tmp_path / "tiny.png").exists()
