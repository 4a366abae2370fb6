"""mask-transfer (Sakamoto & Sato 2022, App. B.3, Fig. 6): ``run_cell`` on tiny generated MNIST
files (each pruned level's mask retrained at ``transfer_lr``; copied from IMP where the rates are
equal, which is what retraining would give), paired cells across rates, claims that pass on a
table shaped like the paper's text and fail on contradicting or failed ones, the figure and the
parameter rules."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest
from test_deep_lottery_imp import write_learnable_mnist

from experiments import engine
from experiments.engine import check_claims
from experiments.sakamoto2022 import mask_transfer as mt
from experiments.sakamoto2022.tickets import LARGE_LR, SMALL_LR, run_tickets
from lottery_common import DATA_ENV

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPERIMENT = mt.EXPERIMENT


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
            "iterations": 6, "eval_every": 3, "batch_size": 16, "lr": SMALL_LR,
            "transfer_lr": LARGE_LR, "label_noise": 0.0, "step_rule": "plain", "rho": 0.05,
            "variability": 0.01, "regularizer": "none", "regularization": 0.0,
            "augment": False, "device": "cpu"}
    cell.update(changes)
    return cell


def test_run_cell_retrains_every_pruned_mask_at_the_transfer_rate(tiny_mnist: Path) -> None:
    small = mt.run_cell(_cell(), seed=3)
    large = mt.run_cell(_cell(lr=LARGE_LR), seed=3)
    for row in (small, large):
        assert row["imp_level"] == [0, 1, 2] and row["transfer_level"] == [1, 2]
        assert row["transfer_density"] == pytest.approx(row["imp_density"][1:])
        for f in mt.TRANSFER_FIELDS:
            assert all(math.isfinite(v) for v in row[f"transfer_{f}"]), f
        assert all(0 <= v <= 1 for v in row["transfer_test_metric_end"])
    assert small["transfer_is_imp"] is False and large["transfer_is_imp"] is True
    # global pruning removes the same counts at both rates: the comparison is at equal density
    assert small["imp_density"] == pytest.approx(large["imp_density"])
    # where the rates are equal, the "transfer" is IMP's own level
    assert large["transfer_test_metric_end"] == large["imp_test_metric_end"][1:]
    assert small["transfer_distance_from_start"] != small["imp_distance_from_start"][1:]


def test_retraining_a_level_at_its_own_rate_is_imp(tiny_mnist: Path) -> None:
    """The shortcut of the cells with lr == transfer_lr: retraining a level's mask from the
    initialization with the ticket's configuration reproduces IMP's level exactly, and both
    rates' runs start from the same initialization."""
    from deep_lottery.training import train

    tickets = run_tickets(_cell(lr=LARGE_LR), seed=5)
    mask, _ = tickets.level(2)
    model = tickets.make_model(0)
    model.load_state_dict(tickets.states.rewind)
    mask.apply(model)
    result = train(model, mask, tickets.splits, dataclasses.replace(tickets.train, lr=LARGE_LR),
                   task="classification", device=tickets.device)
    assert result.test_metric_end == tickets.record(2)["test_metric_end"]
    other = run_tickets(_cell(), seed=5)
    assert all(bool((other.states.rewind[k] == v).all())
               for k, v in tickets.states.rewind.items())
    assert other.train.data_order_seed == tickets.train.data_order_seed


def _table(transfer: list[float], large: list[float], ticket: tuple[float, ...] = (
        0.95, 0.95, 0.94, 0.93)) -> pd.DataFrame:
    """``contradicting_runs`` with the small-rate ticket's test accuracy ``ticket`` (levels
    0-3), its masks at the large rate ``transfer`` (levels 1-3) and large-rate IMP ``large``
    (levels 0-3) in every trial."""
    runs = mt.contradicting_runs()
    for i, row in runs.iterrows():
        if row["lr"] == SMALL_LR:
            runs.at[i, "imp_test_metric_end"] = list(ticket)
            runs.at[i, "transfer_test_metric_end"] = list(transfer)
        else:
            runs.at[i, "imp_test_metric_end"] = list(large)
            runs.at[i, "transfer_test_metric_end"] = list(large[1:])
    return runs


def _verdicts(runs: pd.DataFrame) -> list[str]:
    return [c["verdict"] for c in check_claims("mask-transfer", mt.claims(runs))["claims"]]


PAPER_LIKE = ([0.97, 0.95, 0.90], [0.96, 0.96, 0.93, 0.90])
"""Fig. 6's shape: +2 pt at the first pruned level, -3 pt at the sparsest, where large-rate IMP
is as good as the transferred mask."""


def test_claims_pass_on_the_papers_pattern_and_fail_otherwise() -> None:
    assert _verdicts(_table(*PAPER_LIKE)) == ["pass"] * 3
    assert _verdicts(_table([0.94, 0.95, 0.90], PAPER_LIKE[1]))[0] == "fail"  # no gain at L1
    assert _verdicts(_table([0.97, 0.96, 0.96], PAPER_LIKE[1]))[1] == "fail"  # gain grows
    within = _table([0.97, 0.95, 0.905], PAPER_LIKE[1])  # +0.5 pt over large IMP: within MARGIN
    assert _verdicts(within) == ["pass"] * 3
    beyond = _table([0.97, 0.95, 0.915], PAPER_LIKE[1])  # +1.5 pt: beyond it
    assert _verdicts(beyond) == ["pass", "pass", "fail"]
    assert _verdicts(mt.contradicting_runs()) == ["fail"] * 3
    failed = _table(*PAPER_LIKE)
    for column in ("imp_test_metric_end", "transfer_test_metric_end"):
        failed[column] = [[None] * len(v) for v in failed[column]]
    assert _verdicts(failed) == ["fail"] * 3
    only_small = _table(*PAPER_LIKE)[lambda t: t["lr"] == SMALL_LR]
    assert _verdicts(only_small) == ["pass", "pass", "fail"]  # no large-rate IMP to compare
    records = check_claims("mask-transfer", mt.claims(_table(*PAPER_LIKE)))
    table = records["findings"][0]["measured"]
    assert "L1 (44.0% sparse): ticket 95.00%, transfer - ticket +2.00" in table


def test_comparison_is_paired_by_trial_and_level() -> None:
    runs = _table(*PAPER_LIKE)
    for i in runs.index[(runs["trial"] == 1) & (runs["lr"] == SMALL_LR)]:
        runs.at[i, "transfer_test_metric_end"] = [0.99, 0.95, 0.90]
    frame = mt.comparison(runs)
    assert list(frame["level"].unique()) == [1, 2, 3] and len(frame) == 6
    first = frame[frame["level"] == 1].set_index("trial")["improvement"]
    assert first.to_dict() == pytest.approx({0: 2.0, 1: 4.0})


def test_plot_writes_files_and_copes_with_one_row(tmp_path: Path) -> None:
    mt.plot(_table(*PAPER_LIKE), tmp_path / "transfer")
    assert (tmp_path / "transfer.png").stat().st_size > 0 and (tmp_path / "transfer.pdf").exists()
    mt.plot(mt.contradicting_runs().iloc[:1], tmp_path / "one")
    assert (tmp_path / "one.png").exists()


def test_parameter_rules() -> None:
    for size in ("quick", "full"):
        keys = engine.grid_keys(EXPERIMENT.size(size))
        assert not set(keys) - set(EXPERIMENT.params)
        cells = engine.expand_cells(EXPERIMENT, engine.Selection(size))
        assert sorted({(p["lr"], p["transfer_lr"]) for p in cells.values()}) == [
            (SMALL_LR, LARGE_LR), (LARGE_LR, LARGE_LR)]
        for params in cells.values():
            assert EXPERIMENT.cell_problems(params) == []
    assert EXPERIMENT.cell_problems(_cell(transfer_lr=0.0))[0][0] == "transfer_lr"
    assert EXPERIMENT.cell_problems(_cell(lr=-1.0))[0][0] == "lr"
    assert set(EXPERIMENT.shared_seed_params) == {"lr", "transfer_lr"}


def test_tiny_runs_through_claims_and_plot(tiny_mnist: Path, tmp_path: Path) -> None:
    rows = [{**_cell(lr=lr), **mt.run_cell(_cell(lr=lr), seed=2), "trial": 0}
            for lr in (SMALL_LR, LARGE_LR)]
    runs = pd.DataFrame(rows)
    records = check_claims("mask-transfer", mt.claims(runs))
    assert len(records["claims"]) == 3
    frame = mt.comparison(runs)
    assert len(frame) == 2 and frame[["ticket", "transfer", "large"]].notna().all().all()
    mt.plot(runs, tmp_path / "tiny")
    assert (tmp_path / "tiny.png").exists()
