"""The lth-lenet experiment (Frankle & Carbin 2019, Figs. 1, 3, 4): ``run_cell`` on tiny generated
MNIST files (per-level fields, histories and the four branches), the registration, and claims that
pass on a table obeying the paper and fail, one at a time, on tables that contradict it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.engine import check_claims, grid_keys
from experiments.frankle2019 import lth_lenet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPERIMENT = lth_lenet.EXPERIMENT
CLAIMS = ("reinit accuracy", "reinit speed", "random accuracy", "random speed", "end accuracy",
          "dense match", "fig3 speed", "one-shot")
"""The claims in the order ``claims`` returns them."""


@pytest.fixture(scope="module")
def tiny_mnist(learnable_mnist_dir: Path) -> Path:
    return learnable_mnist_dir


def test_run_cell_row_holds_every_branch_and_history(tiny_mnist: Path, tmp_path: Path) -> None:
    params = {"dataset": "mnist", "N": 300, "levels": 2, "iterations": 30, "eval_every": 10,
              "n_val": 100, "n_test": 0, "mnist_files": "train", "data_dir": str(tiny_mnist),
              "device": "cpu"}
    row = lth_lenet.run_cell(params, 2)
    assert row["device"] == "cpu" and row["images_per_second"] > 0
    assert row["imp_level"] == [0, 1, 2]
    for branch in lth_lenet.BRANCHES:
        levels = [0, 1, 2] if branch == "imp" else [1, 2]
        assert row[f"{branch}_level"] == levels
        for field in ("density", "early_stop_iteration", "test_metric_at_stop",
                      "test_metric_end", "train_metric_end", "train_metric_at_stop",
                      "val_loss_min"):
            assert len(row[f"{branch}_{field}"]) == len(levels), (branch, field)
        assert row[f"{branch}_density"] == row["imp_density"][-len(levels):]  # same counts
        assert all(0 <= v <= 1 for v in row[f"{branch}_train_metric_at_stop"])
        # every level evaluates at 0, 10, 20 and after the last step (30)
        assert row[f"{branch}_history_level"] == [lv for lv in levels for _ in range(4)]
        assert row[f"{branch}_history_iteration"] == [0.0, 10.0, 20.0, 30.0] * len(levels)
        for name in ("val_metric", "test_metric"):
            values = row[f"{branch}_history_{name}"]
            assert len(values) == 4 * len(levels) and all(0 <= v <= 1 for v in values)
        ends = row[f"{branch}_history_test_metric"][3::4]  # the test accuracy after training
        assert ends == pytest.approx(row[f"{branch}_test_metric_end"])
    assert row["imp_test_metric_end"][0] > 0.5  # it learned the patches (chance: 0.1)

    runs = pd.DataFrame([{**params, **row, "trial": 0}])
    lth_lenet.plot(runs, tmp_path / "lth")
    assert (tmp_path / "lth.png").exists() and (tmp_path / "lth.pdf").exists()
    split = check_claims("lth-lenet", lth_lenet.claims(runs))
    assert len(split["claims"]) == len(CLAIMS) and len(split["findings"]) == 4
    reach = lth_lenet.reach_iterations(runs)["reach"]
    assert len(reach) == 3 and all(np.isinf(v) or v % 10 == 0 for v in reach)


def test_registration_names_the_figures_and_rules_every_parameter() -> None:
    assert all("Fig" in EXPERIMENT.paper and n in EXPERIMENT.paper for n in ("1", "3", "4"))
    assert EXPERIMENT.version >= 2
    for size in (EXPERIMENT.quick, EXPERIMENT.full):
        assert set(grid_keys(size)) <= set(EXPERIMENT.params)
        assert [g["dataset"] for g in size.grids] == [["mnist"]]
    cell = {k: v[0] for k, v in EXPERIMENT.quick.grids[0].items()}
    assert EXPERIMENT.cell_problems(cell) == []
    assert EXPERIMENT.cell_problems({**cell, "dataset": "svhn"})[0][0] == "dataset"
    assert EXPERIMENT.cell_problems({**cell, "N": 8000})[0][0] == "N"
    full = {k: v[0] for k, v in EXPERIMENT.full.grids[0].items()}
    assert (full["N"], full["n_val"], full["iterations"], EXPERIMENT.full.trials) == (
        55000, 5000, 50000, 5)
    assert "random_prune" in EXPERIMENT.notes


# ----------------------------------------------------------------------------- claims

def _accuracy(branch: str, level: int, trial: int) -> float:
    """Tickets gain 0.3 pt per level to level 7, controls lose, one-shot gains less."""
    noise = 0.0005 * ((trial + level) % 3 - 1)
    slope = {"imp": 0.003 * min(level, 7) / max(level, 1), "reinit": -0.002,
             "random_prune": -0.003, "one_shot": 0.001}[branch]
    return 0.95 + slope * level + noise


def _stop(branch: str, level: int, trial: int) -> float:
    return 600.0 - 40 * min(level, 7) if branch == "imp" else 600.0 + 20 * level


def _verdicts(runs: pd.DataFrame) -> dict[str, str]:
    split = check_claims("lth-lenet", lth_lenet.claims(runs))
    assert len(split["claims"]) == len(CLAIMS)
    return dict(zip(CLAIMS, (c["verdict"] for c in split["claims"])))


def test_claims_pass_on_runs_that_obey_the_paper() -> None:
    runs = lth_lenet.made_up_runs(_accuracy, _stop)
    assert set(_verdicts(runs).values()) == {"pass"}
    texts = [c.get("claim", c.get("finding")) + c["measured"] for c in lth_lenet.claims(runs)]
    assert all("paper" in t for t in texts)  # the paper's numbers beside the measured ones


@pytest.mark.parametrize("failing, accuracy, stop", [
    ("random accuracy", lambda b, lv, t: _accuracy("imp" if b == "random_prune" else b, lv, t)
     + 0.002 * (b == "random_prune"), _stop),
    ("random speed", _accuracy, lambda b, lv, t: 300.0 if b == "random_prune" else _stop(b, lv, t)),
    ("reinit speed", _accuracy, lambda b, lv, t: 300.0 if b == "reinit" else _stop(b, lv, t)),
    ("fig3 speed", _accuracy, lambda b, lv, t: 900.0 if b == "imp" and lv else _stop(b, lv, t)
     + 400 * (b != "imp")),
    ("dense match", lambda b, lv, t: _accuracy(b, lv, t) - 0.028 * (b == "imp" and lv == 7),
     _stop),
    ("one-shot", lambda b, lv, t: _accuracy(b, lv, t) + 0.03 * (b == "one_shot" and lv >= 7),
     _stop),
])
def test_each_claim_can_fail_alone(failing: str, accuracy, stop) -> None:
    verdicts = _verdicts(lth_lenet.made_up_runs(accuracy, stop))
    assert verdicts.pop(failing) == "fail"
    assert set(verdicts.values()) == {"pass"}, verdicts


def test_contradicting_runs_fail_the_ticket_claims() -> None:
    verdicts = _verdicts(lth_lenet.contradicting_runs())
    assert verdicts["reinit accuracy"] == verdicts["random accuracy"] == "fail"
    assert verdicts["fig3 speed"] == verdicts["dense match"] == "fail"


def test_reach_iteration_is_the_first_evaluation_at_the_target() -> None:
    runs = lth_lenet.made_up_runs(lambda b, lv, t: 0.9 if lv < 3 else 0.5,
                                  lambda b, lv, t: 300.0 if lv == 0 else 150.0, levels=3, trials=1)
    reach = lth_lenet.reach_iterations(runs).set_index("level")["reach"]
    grid = np.arange(0, 1001, 50.0)
    target = lth_lenet.REACH_FRACTION * 0.9
    for level, scale in ((0, 300.0), (1, 150.0), (2, 150.0)):
        curve = 0.1 + 0.8 * (1 - np.exp(-3 * grid / scale))
        assert reach[level] == grid[np.argmax(curve >= target)]
    assert reach[1] < reach[0]
    assert reach[3] == np.inf  # never reaches it


def test_a_failed_trial_row_is_skipped() -> None:
    runs = lth_lenet.made_up_runs(_accuracy, _stop)
    failed = pd.DataFrame([{"trial": 2, "N": 5000, "error": "RuntimeError: boom"}])
    both = pd.concat([runs, failed], ignore_index=True)
    assert _verdicts(both) == _verdicts(runs)
