"""The edge-popup experiment (Ramanujan et al., CVPR 2020): ``run_cell`` on tiny generated MNIST
files for both methods (row fields, density honored by the exported subnetwork, reproducible),
the parameter rules, what ``missing_data`` says, claims that pass on a table obeying the paper and
fail on tables that contradict it (or where every run failed), and the figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_deep_lottery_data import write_mnist

from experiments import engine
from experiments.engine import check_claims
from experiments.ramanujan2020 import edge_popup as ep
from experiments.registry import Param
from lottery_common import DATA_ENV

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPERIMENT = ep.EXPERIMENT


@pytest.fixture
def tiny_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """400 generated images in the MNIST test-split IDX format, found through $LOTTERY_LAB_DATA."""
    write_mnist(tmp_path / "mnist", "test", 400, seed=3)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    return tmp_path


def _cell(**changes: object) -> dict:
    cell = {"method": "edge_popup", "model": "fc", "width": 0.1, "init": "signed_constant",
            "density": 0.3, "dataset": "mnist", "mnist_files": "test", "N": 100, "n_val": 50,
            "n_test": 100, "iterations": 6, "eval_every": 3, "batch_size": 16, "lr": 0.1,
            "weight_decay": 5e-4, "augment": False, "device": "cpu"}
    cell.update(changes)
    return cell


FIELDS = {"test_acc", "test_acc_at_stop", "train_acc", "early_stop_iteration", "kept_fraction",
          "layer_density_min", "layer_density_max", "n_weights", "n_kept", "n_train", "device"}


def test_edge_popup_row_honors_the_density(tiny_mnist: Path) -> None:
    row = ep.run_cell(_cell(), seed=11)
    assert set(row) == FIELDS
    assert 0 <= row["test_acc"] <= 1 and 0 <= row["train_acc"] <= 1
    # fc 784-78-10-10 at width 0.1 (hidden 30, 10): 784*30 + 30*10 + 10*10 weights, 30% each
    assert row["n_weights"] == 784 * 30 + 30 * 10 + 10 * 10
    assert row["n_kept"] == round(0.3 * 784 * 30) + 90 + 30
    assert row["kept_fraction"] == pytest.approx(0.3)
    assert row["layer_density_min"] == pytest.approx(0.3)
    assert row["layer_density_max"] == pytest.approx(0.3)
    assert row["n_train"] == 100 and row["device"] == "cpu"
    assert row == ep.run_cell(_cell(), seed=11)  # the seed fixes the row
    assert row != ep.run_cell(_cell(), seed=12)


def test_conv_edge_popup_keeps_density_per_layer(tiny_mnist: Path) -> None:
    row = ep.run_cell(_cell(model="conv2", width=0.125, density=0.1, init="kaiming_normal",
                            iterations=2, eval_every=2), seed=5)
    # conv 1->8 (72 weights, keeps 7), conv 8->8 (576, keeps 58), fc 1568-256-256-10
    assert row["layer_density_min"] == pytest.approx(7 / 72)
    assert row["layer_density_max"] == pytest.approx(58 / 576)
    assert abs(row["kept_fraction"] - 0.1) < 1e-4


def test_dense_baseline_row(tiny_mnist: Path) -> None:
    row = ep.run_cell(_cell(method="dense", density=1.0, lr=0.01, init="kaiming_normal"), seed=2)
    assert set(row) == FIELDS
    assert row["kept_fraction"] == 1.0 and row["n_kept"] == row["n_weights"]
    assert row["n_weights"] == 784 * 30 + 30 * 10 + 10 * 10


def test_rules_cover_every_grid_parameter_and_catch_bad_cells() -> None:
    for size in ("quick", "full"):
        keys = engine.grid_keys(EXPERIMENT.size(size))
        assert set(keys) <= set(EXPERIMENT.params)
        assert all(isinstance(EXPERIMENT.params[k], Param) for k in keys)
        for params in engine.expand_cells(EXPERIMENT, engine.Selection(size)).values():
            assert EXPERIMENT.cell_problems(params) == []
    cell = {k: v for k, v in _cell().items() if k != "device"}
    assert EXPERIMENT.cell_problems({**cell, "density": 0.0})[0][0] == "density"
    assert EXPERIMENT.cell_problems({**cell, "density": 1.5})[0][0] == "density"
    assert EXPERIMENT.cell_problems({**cell, "method": "dense"}) == [
        ("density", "density must be 1 for method 'dense' (the densely trained baseline)")]
    assert EXPERIMENT.cell_problems({**cell, "N": 9900})[0][0] == "N"
    assert EXPERIMENT.cell_problems({**cell, "dataset": "cifar10"})[0][0] == "dataset"
    full = {k: v for k, v in cell.items() if k != "mnist_files"}
    assert EXPERIMENT.cell_problems({**full, "dataset": "cifar10", "N": 45000, "n_val": 5000,
                                     "n_test": 0}) == []
    assert EXPERIMENT.cell_problems({**full, "dataset": "cifar10", "N": 46000, "n_val": 5000,
                                     "n_test": 0})[0][0] == "N"
    with pytest.raises(ValueError, match="density must be"):
        engine.expand_cells(EXPERIMENT, engine.Selection("quick", overrides={"density": (2.0,)}))


def test_missing_data_names_the_cifar_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    message = EXPERIMENT.missing_data("full")
    assert message is not None
    for name in ["data_batch_1", "data_batch_5", "test_batch", str(tmp_path),
                 "cifar-10-python.tar.gz"]:
        assert name in message
    assert "mnist" in EXPERIMENT.missing_data("quick")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        (folder / name).write_bytes(b"x")
    message = EXPERIMENT.missing_data("full")
    assert "test_batch" in message and "data_batch_1" not in message
    (folder / "test_batch").write_bytes(b"x")
    assert EXPERIMENT.missing_data("full") is None


def _verdicts(runs: pd.DataFrame) -> list[str]:
    split = check_claims(EXPERIMENT.name, EXPERIMENT.claims(runs))
    assert len(split["claims"]) == 3
    return [c["verdict"] for c in split["claims"]]


def test_claims_pass_on_a_table_that_obeys_the_paper() -> None:
    runs = ep._synthetic_runs(peak=True, sc_gain=0.01)
    assert _verdicts(runs) == ["pass", "pass", "pass"]
    records = EXPERIMENT.claims(runs)
    gap = [r for r in records if "finding" in r and "densely trained" in r["finding"]]
    assert gap and "fc:" in gap[0]["measured"] and "conv2 x0.125:" in gap[0]["measured"]


def test_claims_fail_on_tables_that_contradict_it() -> None:
    assert _verdicts(EXPERIMENT.contradicting_runs()) == ["pass", "fail", "fail"]
    pd.testing.assert_frame_equal(EXPERIMENT.contradicting_runs(), EXPERIMENT.contradicting_runs())
    runs = ep._synthetic_runs(peak=True, sc_gain=0.01)
    low = runs.copy()
    at_half = (low["method"] == "edge_popup") & (low["density"] == 0.5) & (low["trial"] == 1)
    low.loc[at_half & (low["model"] == "fc"), "test_acc"] = 0.3  # one trial near chance
    assert _verdicts(low)[0] == "fail"
    flat = runs.copy()  # an end within the declared margin of the best
    ends = (flat["method"] == "edge_popup") & (flat["density"] == 0.9)
    flat.loc[ends, "test_acc"] = flat.loc[ends, "test_acc"] + 0.115
    assert _verdicts(flat)[1] == "fail"
    noisy = runs.copy()  # signed constant 2 pt behind on one model: the bound falls below -0.5
    sc_fc = (noisy["init"] == "signed_constant") & (noisy["model"] == "fc")
    noisy.loc[sc_fc, "test_acc"] = noisy.loc[sc_fc, "test_acc"] - 0.03
    assert _verdicts(noisy)[2] == "fail"


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_claims_fail_when_every_run_failed(bad: float, tmp_path: Path) -> None:
    runs = ep._synthetic_runs(peak=True, sc_gain=0.01)
    for column in ("test_acc", "test_acc_at_stop", "train_acc", "kept_fraction"):
        runs[column] = bad
    assert _verdicts(runs) == ["fail", "fail", "fail"]
    EXPERIMENT.plot(runs, tmp_path / "failed")
    assert (tmp_path / "failed.png").exists()


def test_single_row_and_single_cell_tables(tmp_path: Path) -> None:
    runs = EXPERIMENT.contradicting_runs()
    for i, table in enumerate((runs.iloc[:1], runs.iloc[:2], runs[runs["method"] == "dense"])):
        table = table.reset_index(drop=True)
        assert "fail" in _verdicts(table)
        EXPERIMENT.plot(table, tmp_path / f"t{i}")
        assert (tmp_path / f"t{i}.png").exists()


def test_plot_writes_png_and_pdf(tmp_path: Path) -> None:
    runs = ep._synthetic_runs(peak=True, sc_gain=0.01)
    EXPERIMENT.plot(runs, tmp_path / "edge-popup")
    for suffix in (".png", ".pdf"):
        assert (tmp_path / f"edge-popup{suffix}").stat().st_size > 0


def test_contradicting_table_is_in_the_saved_format() -> None:
    runs = EXPERIMENT.contradicting_runs()
    keys = set(engine.grid_keys(EXPERIMENT.quick))
    assert keys | {"trial"} <= set(runs.columns)
    for params in runs[sorted(keys)].to_dict("records"):
        assert EXPERIMENT.cell_problems(params) == []
    assert np.isfinite(runs["test_acc"]).all()
