"""The lth-conv (F&C Fig. 5) and lth-dropout (Fig. 6) experiments: ``run_cell`` on tiny generated
MNIST files, the registration, plots, and claims that pass on tables obeying the paper and fail on
tables contradicting it (including degenerate tables, as ``test_bad_params`` builds them)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from experiments import engine
from experiments.engine import check_claims
from experiments.frankle2019 import lth_conv, lth_dropout

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPERIMENTS = {"lth-conv": lth_conv, "lth-dropout": lth_dropout}
CONV_CLAIMS = ("reinit accuracy", "reinit speed", "random accuracy", "dense speed",
               "dense accuracy", "fall-off", "depth")
"""The lth-conv claims in the order ``claims`` returns them."""


@pytest.fixture(scope="module")
def tiny_mnist(learnable_mnist_dir: Path) -> Path:
    return learnable_mnist_dir


def _params(data: Path, **changes) -> dict:
    return {"dataset": "mnist", "N": 300, "levels": 2, "iterations": 20, "eval_every": 10,
            "n_val": 100, "n_test": 0, "mnist_files": "train", "data_dir": str(data),
            "device": "cpu", "model": "conv2", "width": 0.0625, "lr": 2e-3, "conv_rate": 0.1,
            "fc_rate": 0.2, **changes}


def _verdicts(records: list[dict]) -> list[str]:
    return [r["verdict"] for r in check_claims("x", records)["claims"]]


# ----------------------------------------------------------------------------- run_cell

def test_lth_conv_run_cell_plot_and_claims(tiny_mnist: Path, tmp_path: Path) -> None:
    params = _params(tiny_mnist)
    row = lth_conv.run_cell(params, 1)
    assert row["imp_level"] == [0, 1, 2] and row["device"] == "cpu"
    for branch in ("reinit", "random_prune"):
        assert row[f"{branch}_level"] == [1, 2]
        assert row[f"{branch}_density"] == row["imp_density"][1:]  # equal per-layer counts
    # conv at 10%, fc at 20% (output 10%): the fc-dominated density lies between 0.8 and 0.9
    assert 0.8 < row["imp_density"][1] < 0.82
    assert all(0 <= v <= 20 for v in row["imp_early_stop_iteration"])
    assert row["imp_test_metric_end"][0] > 0.3  # it learns the patches (chance: 0.1)
    runs = pd.DataFrame([{**params, **row, "trial": 0},
                         {**params, **row, "model": "conv6", "trial": 0}])
    lth_conv.plot(runs, tmp_path / "conv")
    assert (tmp_path / "conv.png").stat().st_size > 0 and (tmp_path / "conv.pdf").exists()
    assert len(_verdicts(lth_conv.claims(runs))) == len(CONV_CLAIMS)


def test_lth_dropout_run_cell_triples_iterations_and_adds_reinit(tiny_mnist: Path, tmp_path: Path,
                                                                 monkeypatch) -> None:
    seen = []
    real = lth_dropout.run_imp_cell

    def spy(params, seed, **kwargs):
        seen.append(kwargs)
        return real(params, seed, **kwargs)

    monkeypatch.setattr(lth_dropout, "run_imp_cell", spy)
    rows = []
    for p in (0.0, 0.5):
        params = _params(tiny_mnist, iterations=10, dropout=p)
        rows.append({**params, **lth_dropout.run_cell(params, 3), "trial": 0})
    plain, dropped = seen
    assert plain["train"].iterations == 10 and dropped["train"].iterations == 30
    assert plain["branches"] == ("imp",) and dropped["branches"] == ("imp", "reinit")
    assert plain["model_options"]["dropout"] == 0.0 and dropped["model_options"]["dropout"] == 0.5
    assert "reinit_level" not in rows[0]
    assert rows[1]["reinit_level"] == [1, 2]
    assert max(rows[1]["imp_early_stop_iteration"]) <= 30
    runs = pd.DataFrame(rows)
    lth_dropout.plot(runs, tmp_path / "drop")
    assert (tmp_path / "drop.png").exists() and (tmp_path / "drop.pdf").exists()
    assert len(_verdicts(lth_dropout.claims(runs))) == 3


# ----------------------------------------------------------------------------- registration

@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_registration_grids_and_data(name: str) -> None:
    experiment = EXPERIMENTS[name].EXPERIMENT
    assert experiment.name == name and experiment.requires == ("torch",)
    for size, dataset in (("quick", "mnist"), ("full", "cifar10")):
        keys = engine.grid_keys(experiment.size(size))
        assert set(keys) <= set(experiment.params)
        cells = engine.expand_cells(experiment, engine.Selection(size))
        assert cells and all(c["dataset"] == dataset for c in cells.values())
        assert all(experiment.cell_problems(c) == [] for c in cells.values())
    full = engine.expand_cells(experiment, engine.Selection("full")).values()
    for cell in full:  # the paper's settings
        paper = lth_conv.PAPER[cell["model"]]
        assert cell["iterations"] == paper["iterations"] and cell["conv_rate"] == paper["conv_rate"]
        lr = lth_dropout.PAPER[cell["model"]]["lr"] if cell.get("dropout") else paper["lr"]
        assert cell["lr"] == lr and cell["fc_rate"] == 0.2 and cell["width"] == 1.0
    assert experiment.full.trials == 5 and "unmeasured" in experiment.full.estimate
    assert experiment.cell_problems({**next(iter(full)), "N": 49000}) != []


# ----------------------------------------------------------------------------- lth-conv claims

def _conv_runs(fall: dict[str, float | None], *, ticket_gain: float = 0.01,
               dip_sparsest: bool = False) -> pd.DataFrame:
    """Dense 95%; tickets ``ticket_gain`` above it until their P_m drops to ``fall[model]`` (None:
    never), 3 pt below it from there; reinit 1 pt and random pruning 2 pt under the dense net;
    tickets stop at 120, the dense net at 200, the controls at 250 iterations."""
    def accuracy(model, branch, trial, level, density):
        base = 0.95 + 0.001 * trial
        if level == 0:
            return base
        if branch == "reinit":
            return base - 0.01
        if branch == "random_prune":
            return base - 0.02
        if dip_sparsest and level == 20:
            return base - 0.03
        return base - 0.03 if fall[model] is not None and density <= fall[model] \
            else base + ticket_gain

    def stop(model, branch, trial, level, density):
        return 200.0 if level == 0 else (120.0 if branch == "imp" else 250.0)

    return lth_conv.synthetic_runs(accuracy, stop)


def test_lth_conv_claims_pass_on_runs_obeying_the_paper() -> None:
    records = lth_conv.claims(_conv_runs({"conv2": 0.04, "conv6": 0.02}))
    assert _verdicts(records) == ["pass"] * len(CONV_CLAIMS), records
    text = " ".join(r.get("claim", "") for r in records)
    assert "3.5x at P_m 8.8%" in text and "+3.3 pt at P_m 26.4%" in text
    depth = records[CONV_CLAIMS.index("depth")]["measured"]
    assert "Conv-6" in depth and "falls off at P_m 1.8%" in depth and "3.5%" in depth


@pytest.mark.parametrize("fall, dip, expected", [
    ({"conv2": None, "conv6": None}, False, {"fall-off": "fail", "depth": "fail"}),
    ({"conv2": 0.04, "conv6": None}, False, {"fall-off": "fail", "depth": "pass"}),
    ({"conv2": 0.04, "conv6": 0.1}, False, {"fall-off": "pass", "depth": "fail"}),
    ({"conv2": None, "conv6": 0.02}, False, {"fall-off": "fail", "depth": "fail"}),
    ({"conv2": None, "conv6": None}, True, {"fall-off": "fail", "depth": "fail"}),
])
def test_lth_conv_fall_off_and_depth_claims_can_fail(fall, dip, expected) -> None:
    verdicts = dict(zip(CONV_CLAIMS, _verdicts(lth_conv.claims(_conv_runs(fall, dip_sparsest=dip)))))
    for name, verdict in expected.items():
        assert verdicts[name] == verdict, (name, verdicts)


def test_lth_conv_claims_fail_on_contradicting_runs_and_findings_quote_the_paper() -> None:
    records = lth_conv.claims(lth_conv.contradicting_runs())
    verdicts = dict(zip(CONV_CLAIMS, _verdicts(records)))
    for name in ("reinit accuracy", "reinit speed", "random accuracy", "dense speed",
                 "dense accuracy", "depth"):
        assert verdicts[name] == "fail", name
    findings = [r for r in records if "finding" in r]
    assert any("F&C 3.5x at 8.8%" in f["measured"] for f in findings)
    worse = _conv_runs({"conv2": 0.04, "conv6": 0.02}, ticket_gain=-0.004)
    verdicts = dict(zip(CONV_CLAIMS, _verdicts(lth_conv.claims(worse))))
    assert verdicts["dense accuracy"] == "fail" and verdicts["reinit accuracy"] == "pass"


def test_lth_conv_claims_need_a_run_of_each_net() -> None:
    runs = _conv_runs({"conv2": 0.04, "conv6": 0.02})
    one_net = runs[runs["model"] == "conv2"].reset_index(drop=True)
    verdicts = dict(zip(CONV_CLAIMS, _verdicts(lth_conv.claims(one_net))))
    assert verdicts["depth"] == "fail" and verdicts["reinit accuracy"] == "pass"
    assert set(_verdicts(lth_conv.claims(runs.iloc[:0]))) == {"fail"}


# ----------------------------------------------------------------------------- lth-dropout claims

def _dropout_runs(dense_gain: float = 0.01, further: float = 0.01, reinit: float = -0.005
                  ) -> pd.DataFrame:
    """Dense 95% without dropout, ``95 + dense_gain`` with it; dropout tickets ``further`` above
    their dense net, reinit ``reinit`` from it; tickets without dropout 0.5 pt above 95%."""
    def make(p: float) -> pd.DataFrame:
        def accuracy(model, branch, trial, level, density):
            base = 0.95 + 0.001 * trial + (dense_gain if p else 0.0)
            if level == 0:
                return base
            if not p:
                return base + 0.005
            return base + (further if branch == "imp" else reinit)

        def stop(model, branch, trial, level, density):
            return (300.0 if p else 100.0) * (0.8 if level and branch == "imp" else 1.0)

        return lth_conv.synthetic_runs(accuracy, stop, levels=3,
                                       extra={"dropout": p, "iterations": 100},
                                       branches=("imp", "reinit") if p else ("imp",))

    return pd.concat([make(0.0), make(0.5)], ignore_index=True)


def test_lth_dropout_claims_pass_and_fail() -> None:
    records = lth_dropout.claims(_dropout_runs())
    assert _verdicts(records) == ["pass"] * 3, records
    speed = next(r for r in records if r.get("finding", "").startswith("early-stop speed-up"))
    assert "mean 1.25x" in speed["measured"] and "1.58x" in speed["finding"]
    assert _verdicts(lth_dropout.claims(_dropout_runs(dense_gain=-0.01))) == ["pass", "fail",
                                                                               "pass"]
    assert _verdicts(lth_dropout.claims(_dropout_runs(further=-0.002))) == ["pass", "pass",
                                                                             "fail"]
    assert _verdicts(lth_dropout.claims(_dropout_runs(reinit=0.02))) == ["fail", "pass", "pass"]
    assert _verdicts(lth_dropout.claims(lth_dropout.contradicting_runs())) == ["fail"] * 3
    no_dropout = _dropout_runs().query("dropout == 0").reset_index(drop=True)
    assert _verdicts(lth_dropout.claims(no_dropout)) == ["fail"] * 3


# ----------------------------------------------------------------------------- degenerate tables

@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_plot_and_claims_cope_with_degenerate_tables(name: str, tmp_path: Path) -> None:
    from tests.test_bad_params import TABLES

    module = EXPERIMENTS[name]
    first, second = module.contradicting_runs(), module.contradicting_runs()
    pd.testing.assert_frame_equal(first, second)
    assert "fail" in _verdicts(module.claims(first))
    for table, make in TABLES.items():
        runs = make(name, first)
        if table in ("all-diverged", "single-row"):  # test_bad_params plots them all once listed
            module.plot(runs, tmp_path / table)
            assert (tmp_path / f"{table}.png").exists()
        verdicts = _verdicts(module.claims(runs))
        assert verdicts, table
        if table.startswith("all-"):
            assert "fail" in verdicts and "pass" not in verdicts, table
