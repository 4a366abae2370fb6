"""sam-tickets (Sakamoto & Sato 2022, Table 3 and Fig. 5): ``run_cell`` on tiny generated MNIST
files with each step rule (finite per-level lists, SAM's ``||eps|| = rho``, NVRM's noise ratio),
the grids and their parameter rules (arms of a trial share a seed), claims that pass on a table
shaped like the paper and fail on contradicting or failed ones, and the figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_deep_lottery_imp import write_learnable_mnist

from experiments import engine
from experiments.engine import check_claims
from experiments.sakamoto2022 import sam_tickets as st
from experiments.sakamoto2022.tickets import LARGE_LR, QUICK, SMALL_LR
from lottery_common import DATA_ENV

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPERIMENT = st.EXPERIMENT


@pytest.fixture
def tiny_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Learnable MNIST-format files (300 test-split images), found through $LOTTERY_LAB_DATA."""
    write_learnable_mnist(tmp_path / "mnist", 20, 300, seed=0)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    return tmp_path


def _cell(**changes: object) -> dict:
    cell = {k: v[0] for k, v in QUICK.items()}
    cell.update(N=100, n_val=50, n_test=100, levels=1, iterations=6, eval_every=3,
                batch_size=16, device="cpu")
    cell.update(changes)
    return cell


def test_run_cell_with_each_step_rule(tiny_mnist: Path, tmp_path: Path) -> None:
    rows = []
    for rule, lr in (("plain", SMALL_LR), ("sam", SMALL_LR), ("nvrm", SMALL_LR),
                     ("plain", LARGE_LR), ("sam", LARGE_LR)):
        cell = _cell(step_rule=rule, lr=lr, rho=0.05, variability=0.01)
        row = st.run_cell(cell, seed=3)
        assert row["imp_level"] == [0, 1] and row["device"] == "cpu"
        for field in ("test_metric_end", "distance_from_start", "weight_norm", "density"):
            values = row[f"imp_{field}"]
            assert len(values) == 2 and all(math.isfinite(v) for v in values)
        assert row["imp_density"][1] == pytest.approx(0.56, abs=0.01)
        if rule == "sam":
            assert row["imp_sam_eps_norm"] == pytest.approx([0.05, 0.05], rel=1e-5)
            assert row["imp_sam_eps_share_on_pruned_max"] == [0.0, 0.0]
            assert all(math.isfinite(v) for v in row["imp_sam_loss_increase"])
        else:
            assert "imp_sam_eps_norm" not in row
        if rule == "nvrm":
            assert all(0 < v < 1 for v in row["imp_nvrm_noise_to_weight_norm"])
        rows.append({**cell, **row, "trial": 0})
    runs = pd.DataFrame(rows)
    records = check_claims("sam-tickets", st.claims(runs))
    assert len(records["claims"]) == 3
    text = " ".join(f["measured"] for f in records["findings"])
    assert "rho 0.05: ||eps|| 0.05" in text and "b 0.01" in text
    st.plot(runs, tmp_path / "tiny")
    assert (tmp_path / "tiny.png").exists()


def test_grids_obey_the_rules_and_arms_share_seeds() -> None:
    for size in ("quick", "full"):
        keys = engine.grid_keys(EXPERIMENT.size(size))
        assert not set(keys) - set(EXPERIMENT.params)
        cells = engine.expand_cells(EXPERIMENT, engine.Selection(size))
        for params in cells.values():
            assert EXPERIMENT.cell_problems(params) == []
        arms = {(p["step_rule"], p["lr"], p["rho"] if p["step_rule"] == "sam" else None,
                 p["variability"] if p["step_rule"] == "nvrm" else None) for p in cells.values()}
        assert ("plain", SMALL_LR, None, None) in arms and ("plain", LARGE_LR, None, None) in arms
        assert not any(rule == "nvrm" and lr == LARGE_LR for rule, lr, _, _ in arms)
    quick = engine.expand_cells(EXPERIMENT, engine.Selection("quick"))
    assert len(quick) == 5 and EXPERIMENT.quick.trials == 2
    full = engine.expand_cells(EXPERIMENT, engine.Selection("full"))
    assert {p["rho"] for p in full.values() if p["step_rule"] == "sam"} == {0.05, 0.1, 0.2, 0.5}
    assert {p["variability"] for p in full.values() if p["step_rule"] == "nvrm"} == \
        {0.014, 0.018, 0.022, 0.026}
    assert len(full) == 4 * (2 + 8 + 4) and EXPERIMENT.full.trials == 3
    assert {(p["model"], p["dataset"]) for p in full.values()} == {
        (m, d) for m in ("resnet20", "vgg16") for d in ("cifar10", "cifar100")}  # Table 3
    tasks = engine.expand_tasks(EXPERIMENT, engine.Selection("quick"))
    for trial in (0, 1):
        assert len({t.seed for t in tasks if t.trial == trial}) == 1  # paired arms
    assert tasks[0].seed != next(t.seed for t in tasks if t.trial == 1)
    assert EXPERIMENT.cell_problems(_cell(step_rule="adam"))[0][0] == "step_rule"
    assert EXPERIMENT.cell_problems(_cell(rho=-0.1))[0][0] == "rho"


def _paper_like(sam_small: float = 0.006, nvrm_small: float = 0.002,
                sam_large: float = 0.0) -> pd.DataFrame:
    """Table 3 / Fig. 5: the small-rate ticket keeps its accuracy, the large-rate one loses 3 pt
    per level; SAM (NVRM) adds ``sam_small`` (``nvrm_small``) at the small rate and ``sam_large``
    at the large rate, at the sparsest level (half of it at level 1)."""
    def accuracy(arm: str, lr: float, level: int, trial: int) -> float:
        acc = 0.92 - (0.03 if lr == LARGE_LR else 0.002) * level + 0.002 * trial
        gain = (sam_large if lr == LARGE_LR else sam_small) if arm.startswith("SAM") else \
            nvrm_small if arm.startswith("NVRM") else 0.0
        return acc + gain * level / 2

    return st.synthetic_runs(accuracy)


def _verdicts(runs: pd.DataFrame) -> list[str]:
    return [c["verdict"] for c in check_claims("sam-tickets", st.claims(runs))["claims"]]


def test_claims_pass_on_the_papers_pattern_and_fail_otherwise() -> None:
    assert _verdicts(_paper_like()) == ["pass"] * 3
    assert _verdicts(_paper_like(sam_small=-0.004, nvrm_small=-0.004, sam_large=-0.01)) == \
        ["pass"] * 3  # "the same": within 0.5 pt
    assert _verdicts(_paper_like(sam_small=-0.01, sam_large=-0.02)) == ["fail", "pass", "pass"]
    assert _verdicts(_paper_like(nvrm_small=-0.01)) == ["pass", "fail", "pass"]
    assert _verdicts(_paper_like(sam_large=0.01)) == ["pass", "pass", "fail"]
    assert _verdicts(st.contradicting_runs()) == ["fail"] * 3
    failed = _paper_like()
    failed["imp_test_metric_end"] = [[math.nan] * len(v) for v in failed["imp_test_metric_end"]]
    assert _verdicts(failed) == ["fail"] * 3
    diverged = _paper_like()
    diverged["imp_test_metric_end"] = [[math.inf] * len(v) for v in diverged["imp_test_metric_end"]]
    assert _verdicts(diverged) == ["fail"] * 3
    small_only = _paper_like()[lambda t: t["lr"] == SMALL_LR]
    assert _verdicts(small_only) == ["pass", "pass", "fail"]
    one_trial = _paper_like()[lambda t: t["trial"] == 0]
    assert _verdicts(one_trial) == ["pass"] * 3


def test_the_best_rho_is_selected_per_rate() -> None:
    runs = _paper_like()
    worse = runs[runs["step_rule"] == "sam"].assign(rho=0.5)
    worse["imp_test_metric_end"] = [[a - 0.05 for a in v] for v in worse["imp_test_metric_end"]]
    worse["imp_sam_eps_norm"] = [[0.5] * len(v) for v in worse["imp_sam_eps_norm"]]
    both = pd.concat([runs, worse], ignore_index=True)
    records = check_claims("sam-tickets", st.claims(both))
    assert [c["verdict"] for c in records["claims"]] == ["pass"] * 3
    assert "SAM rho=0.05" in records["claims"][0]["measured"]
    assert "rho 0.5: ||eps|| 0.5" in " ".join(f["measured"] for f in records["findings"])


def test_plot_writes_files_and_copes_with_one_row(tmp_path: Path) -> None:
    st.plot(_paper_like(), tmp_path / "sam")
    assert (tmp_path / "sam.png").stat().st_size > 0 and (tmp_path / "sam.pdf").exists()
    st.plot(st.contradicting_runs().iloc[:1], tmp_path / "one")
    assert (tmp_path / "one.png").exists()
    nan = _paper_like()
    nan["imp_test_metric_end"] = [[np.nan] * len(v) for v in nan["imp_test_metric_end"]]
    st.plot(nan, tmp_path / "nan")
    assert (tmp_path / "nan.png").exists()
