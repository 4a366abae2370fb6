"""lr-label-noise (Sakamoto & Sato 2022, Fig. 1): ``run_cell`` on tiny generated MNIST files with
and without label noise, the shared ticket settings (global pruning with the output layer kept,
SGD with momentum), claims that pass on a paper-shaped table and fail on contradicting or failed
ones, and the figure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from experiments.engine import check_claims
from experiments.sakamoto2022 import lr_label_noise as ln
from experiments.sakamoto2022 import tickets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cell(**changes: object) -> dict:
    cell = {k: v[0] for k, v in tickets.QUICK.items()}
    cell.update({"N": 100, "n_val": 50, "n_test": 50, "levels": 2, "iterations": 10,
                 "eval_every": 5, "batch_size": 20, "model": "lenet_300_100", "device": "cpu",
                 "fraction": 0.5})
    cell.update(changes)
    return cell



def test_run_cell_rows_with_and_without_label_noise(tiny_mnist_env: Path) -> None:
    clean = ln.run_cell(_cell(), seed=1)
    noisy = ln.run_cell(_cell(label_noise=0.4), seed=1)
    assert clean["imp_level"] == [0, 1, 2] == noisy["imp_level"]
    assert "imp_train_metric_noisy" not in clean  # no relabelled examples, no such metric
    assert len(noisy["imp_train_metric_noisy"]) == 3
    assert all(0 <= a <= 1 for a in noisy["imp_train_metric_noisy"])
    assert clean["imp_distance_from_start"][0] > 0
    # global pruning of 50% per level with the output layer unpruned
    run = tickets.run_tickets(_cell(), 1)
    mask, state = run.level(2)
    assert mask["fc.weight"].all()
    assert 0.2 < mask.density < 0.3
    for name, keep in mask.items():
        assert (state[name][~keep] == 0).all()
    assert run.train.optimizer == "sgd" and run.train.momentum == tickets.MOMENTUM
    assert run.train.weight_decay == tickets.WEIGHT_DECAY


def _paper_table() -> pd.DataFrame:
    """Noise hurts the small-rate ticket more; the small rate's ticket matches its dense net
    while the large rate's falls below it."""
    table = ln.contradicting_runs()
    for i, row in table.iterrows():
        small = row["lr"] == min(ln.QUICK_LRS)
        dense = 0.95 - (0.06 if row["label_noise"] and small else 0.02 if row["label_noise"]
                        else 0.0)
        final = dense + (0.0 if small else -0.04)
        table.at[i, "imp_test_metric_end"] = [dense, (dense + final) / 2, final]
    return table


def test_claims_pass_on_a_paper_shaped_table_and_fail_on_contradicting_ones() -> None:
    passing = ln.claims(_paper_table())
    assert [c["verdict"] for c in passing if "verdict" in c] == ["pass", "pass"]
    failing = ln.claims(ln.contradicting_runs())
    assert [c["verdict"] for c in failing if "verdict" in c] == ["fail", "fail"]
    check_claims("lr-label-noise", passing)


def test_claims_and_plot_cope_with_failed_tables(tmp_path: Path) -> None:
    empty = pd.DataFrame({"lr": [0.01], "label_noise": [0.0], "trial": [0]})
    assert all(c["verdict"] == "fail" for c in ln.claims(empty) if "verdict" in c)
    ln.plot(empty, tmp_path / "empty")
    ln.plot(_paper_table(), tmp_path / "paper")
    assert (tmp_path / "paper.png").stat().st_size > 10_000
