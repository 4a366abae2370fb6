"""PGD + Edge-Popup (Xiong et al. 2023, Algorithm 1): the row of one cell on generated MNIST
files, the projection (never outside the ball, active, eps = 0 keeps W_0, one W_0 for every eps),
claims that pass on the published table and fail on tables that contradict it, and the plot."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from experiments import engine  # noqa: E402
from experiments.engine import check_claims  # noqa: E402
from experiments.xiong2023 import pgd_strong_lth as pgd  # noqa: E402

TINY = {"eps": 1e-3, "s_values": "coarse", "hidden": 16, "pgd_iterations": 8,
        "ep_iterations": 4, "N": 100, "n_val": 50, "n_test": 50, "mnist_files": "test",
        "device": "cpu"}


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch, one_torch_thread):
    from tests.test_deep_lottery_data import write_mnist

    write_mnist(tmp_path / "mnist", "test", 300, seed=0)
    monkeypatch.setenv("LOTTERY_LAB_DATA", str(tmp_path))
    return tmp_path


def _tol(state, names, eps):
    largest = max(float(state[n].abs().max()) for n in names)
    return pgd.ROUNDING * (largest + eps)


def test_run_cell_row(tiny_mnist):
    row = pgd.run_cell(dict(TINY), seed=7)
    s_values = pgd.S_VALUES["coarse"]
    assert row["s_level"] == list(s_values)
    for field in pgd.LIST_FIELDS:
        assert len(row[field]) == len(s_values) and all(np.isfinite(row[field]))
    assert all(0 <= a <= 1 for a in row["test_acc"])
    assert row["pgd_test_acc"] == row["test_acc"][0]
    assert len(row["layer_eps_over_std"]) == len(row["layer_share_at_bound"]) == 2
    assert row["layer_eps_over_std"][0] == pytest.approx(1e-3 / row["layer_init_std"][0])
    eps = TINY["eps"]
    tol = pgd.ROUNDING * (row["max_abs_weight"] + eps)
    assert row["max_shift"] <= eps + tol
    # lr 0.1 steps are far larger than eps = 1e-3: the clip binds and weights sit at the bound
    assert row["steps_outside"] > 0 and row["pre_clip_max_shift"] > eps
    assert row["max_shift"] >= eps - tol and row["share_at_bound"] > 0
    assert row["pgd_steps"] == TINY["pgd_iterations"]
    from experiments.engine.parallel import _outputs

    _outputs(row, TINY)  # storable: plain scalars and lists


def test_pgd_iterate_stays_in_the_ball(tiny_mnist):
    from experiments.mnist_imp import mnist_splits

    splits = mnist_splits(TINY)
    for eps in (1e-3, 3e-2):
        phase = pgd.pgd_phase({**TINY, "eps": eps}, splits, 3, torch.device("cpu"))
        tol = _tol(phase["wt"], phase["names"], eps)
        shifts = [(phase["wt"][n].double() - phase["w0"][n].double()).abs()
                  for n in phase["names"]]
        assert max(float(s.max()) for s in shifts) <= eps + tol
        assert any(float(s.max()) > 0 for s in shifts)  # training moved the weights
        at_bound = sum(int((s >= eps - tol).sum()) for s in shifts)
        assert at_bound > 0  # the clip is active
        stats = pgd._clip_stats(phase, eps)
        assert stats["share_at_bound"] == pytest.approx(
            at_bound / sum(s.numel() for s in shifts), abs=1e-3)


def test_eps_zero_keeps_w0_and_w0_is_shared_across_eps(tiny_mnist):
    from deep_lottery.training import evaluate
    from experiments.mnist_imp import mnist_splits

    splits = mnist_splits(TINY)
    cpu = torch.device("cpu")
    zero = pgd.pgd_phase({**TINY, "eps": 0.0}, splits, 1, cpu)
    assert zero["result"] is None
    for n in zero["names"]:
        assert torch.equal(zero["wt"][n], zero["w0"][n])
    other = pgd.pgd_phase({**TINY, "eps": 1e-2}, splits, 1, cpu)  # same trial seed, other eps
    for n in zero["names"]:
        assert torch.equal(other["w0"][n], zero["w0"][n])
    row = pgd.run_cell({**TINY, "eps": 0.0}, seed=5)
    assert row["max_shift"] == 0.0 and row["pgd_steps"] == 0 and row["steps_outside"] == 0
    _, acc = evaluate(pgd._model(TINY, 5), splits.test, "classification", cpu, amp=False)
    assert row["test_acc"][0] == pytest.approx(acc)


def _verdicts(runs):
    records = pgd.claims(runs)
    split = check_claims(pgd.NAME, records)
    assert split["findings"]
    return [c["verdict"] for c in split["claims"]]


def test_claims_pass_on_the_published_table():
    assert _verdicts(pgd.paper_runs()) == ["pass"] * 5


def test_claims_fail_on_the_contradicting_table():
    verdicts = _verdicts(pgd.contradicting_runs())
    assert verdicts[1:] == ["fail"] * 4


def _paper_with(change):
    table = {s: list(v) for s, v in pgd.PAPER_TABLE.items()}
    change(table)
    return pgd.synthetic_runs(table, pgd.EPS_PAPER)


@pytest.mark.parametrize("index, change", [
    (0, lambda t: [t[s].__setitem__(0, 0.6 * t[s][0]) for s in t if s > 0]),  # weak at eps=0
    (1, lambda t: t[0.0].__setitem__(0, 0.5)),  # random net far from chance
    (1, lambda t: t.__setitem__(0.0, [.12, .6, .55, .5, .45, .4, .995, .99, .988, .985, .982])),
    (2, lambda t: t[0.8].__setitem__(1, 0.95)),  # best s = 0.8 at eps = 1e-3
    (3, lambda t: t[0.3].__setitem__(9, 0.99)),  # pruning beats SGD at eps = 0.2
])
def test_each_claim_can_fail(index, change):
    verdicts = _verdicts(_paper_with(change))
    assert verdicts[index] == "fail"
    assert verdicts.count("fail") == 1


def test_clip_claim_fails_outside_the_ball_and_when_idle():
    runs = pgd.paper_runs()
    assert _verdicts(pgd.synthetic_runs(pgd.PAPER_TABLE, pgd.EPS_PAPER, clip_ok=False))[4] \
        == "fail"
    idle = runs.copy()
    idle.loc[idle["eps"] == 0.1, "max_shift"] = 0.05  # a step left the ball, W_T is inside
    assert _verdicts(idle)[4] == "fail"
    unneeded = idle.copy()
    unneeded.loc[unneeded["eps"] == 0.1, "pre_clip_max_shift"] = 0.05  # never left: fine
    assert _verdicts(unneeded)[4] == "pass"


def test_claims_on_missing_values_fail_without_errors():
    runs = pgd.paper_runs()
    runs["test_acc"] = [[math.nan] * len(v) for v in runs["test_acc"]]
    assert _verdicts(runs)[:4] == ["fail"] * 4


def test_grids_obey_their_rules():
    experiment = pgd.EXPERIMENT
    for size in ("quick", "full"):
        cells = engine.expand_cells(experiment, engine.Selection(size))
        assert all(experiment.cell_problems(p) == [] for p in cells.values())
    quick = engine.expand_cells(experiment, engine.Selection("quick"))
    assert len(quick) == len(pgd.EPS_QUICK)


def test_plot_writes_files(tmp_path):
    for name, runs in (("paper", pgd.paper_runs()), ("contra", pgd.contradicting_runs()),
                       ("one", pgd.paper_runs().iloc[:1])):
        pgd.plot(runs, tmp_path / name)
        assert (tmp_path / f"{name}.png").stat().st_size > 0
        assert (tmp_path / f"{name}.pdf").stat().st_size > 0


def test_every_eps_of_a_trial_shares_its_seed():
    from experiments.engine import Selection, expand_tasks

    tasks = expand_tasks(pgd.EXPERIMENT, Selection())
    by_trial: dict[int, set[int]] = {}
    for task in tasks:
        by_trial.setdefault(task.trial, set()).add(task.seed)
    assert all(len(seeds) == 1 for seeds in by_trial.values())  # one W_0 per trial, every eps
    assert len({next(iter(seeds)) for seeds in by_trial.values()}) == len(by_trial)
