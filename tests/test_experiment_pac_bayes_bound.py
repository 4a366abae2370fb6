"""pac-bayes-bound (Sakamoto & Sato 2022, Sec. 4.2-4.3, Fig. 4): ``run_cell`` on tiny generated
MNIST files (the KL of each family against its closed form, the bound against Eq. 16), claims
that pass on a paper-shaped table and fail on contradicting or failed ones, and the figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.engine import check_claims
from experiments.sakamoto2022 import pac_bayes_bound as pbb

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cell(**changes: object) -> dict:
    cell = {k: v[0] for k, v in pbb.QUICK.items()}
    cell.update({"N": 100, "n_val": 50, "n_test": 50, "levels": 2, "iterations": 12,
                 "eval_every": 6, "batch_size": 20, "model": "mlp", "draws": 2,
                 "device": "cpu", "fraction": 0.5})
    cell.update(changes)
    return cell



def test_run_cell_gives_each_family_its_closed_form_kl_and_bound(tiny_mnist_env: Path) -> None:
    from deep_lottery.pac_bayes import complexity_term, mask_kl, variational_bound
    from experiments.sakamoto2022.tickets import run_tickets

    params = _cell()
    row = pbb.run_cell(params, seed=4)
    assert row["sigma"] == list(pbb.SIGMAS)
    assert 0.2 < row["density"] < 0.3  # two levels of 50% (output layer unpruned)
    tickets = run_tickets(params, 4)
    mask, trained = tickets.level(2)
    init = tickets.states.rewind
    n_kept, n_pruned = mask.num_kept, mask.num_total - mask.num_kept
    for i, sigma in enumerate(pbb.SIGMAS):
        # spike-and-slab: oracle Gaussian KL over kept weights and every bias, plus Eq. 5
        gauss = 0.0
        for name, value in trained.items():
            keep = mask[name].numpy() if name in mask else np.ones(value.shape, bool)
            d = (value.numpy() - init[name].numpy() * keep)[keep]
            gauss += 0.5 * np.log1p(d ** 2 / sigma ** 2).sum()
        expected = gauss + mask_kl(n_kept, n_pruned, mask.density)
        assert row["spike_and_slab_kl"][i] == pytest.approx(expected, rel=1e-6)
        assert row["spike_and_slab_kl_mask"][i] == pytest.approx(
            n_kept * -math.log(mask.density) + n_pruned * -math.log(1 - mask.density), rel=1e-9)
        # zero-mean Gaussian: every coordinate, pruned ones (mu = 0, mu0 = 0) cost nothing
        zero = sum(0.5 * np.log1p(v.numpy() ** 2 / sigma ** 2).sum() for v in trained.values())
        assert row["gaussian_zero_kl"][i] == pytest.approx(zero, rel=1e-6)
        assert row["gaussian_zero_kl_mask"][i] == 0.0
        for family in pbb.FAMILY_NAMES:
            b = complexity_term(row[f"{family}_kl"][i] + math.log(len(pbb.SIGMAS)), params["N"],
                                pbb.DELTA)
            assert row[f"{family}_bound"][i] == pytest.approx(
                variational_bound(row[f"{family}_risk"][i], b), rel=1e-9)
            assert 0.0 <= row[f"{family}_risk"][i] <= 1.0
    for family in pbb.FAMILY_NAMES:
        assert row[f"{family}_bound_best"] == min(row[f"{family}_bound"])


def _paper_table() -> pd.DataFrame:
    """Spike-and-slab tighter and following the test error, the zero-mean Gaussian not."""
    table = pbb.contradicting_runs()
    order = table["test_error"].to_numpy(float)
    table["spike_and_slab_bound_best"] = 0.5 + order
    table["gaussian_bound_best"] = 0.9
    table["gaussian_zero_bound_best"] = 0.8 - order
    return table


def test_claims_pass_on_a_paper_shaped_table_and_fail_on_contradicting_ones() -> None:
    passing = pbb.claims(_paper_table())
    assert [c["verdict"] for c in passing if "verdict" in c] == ["pass", "pass", "pass"]
    failing = pbb.claims(pbb.contradicting_runs())
    assert [c["verdict"] for c in failing if "verdict" in c] == ["fail", "fail", "fail"]
    check_claims("pac-bayes-bound", passing)


def test_diverged_tickets_are_left_out_not_fatal(tmp_path: Path) -> None:
    table = _paper_table()
    table.loc[0, "spike_and_slab_bound_best"] = None  # a diverged ticket's bound
    out = pbb.claims(table)
    assert "over 9 tickets" in out[0]["measured"]
    pbb.plot(table, tmp_path / "fig")
    assert (tmp_path / "fig.png").stat().st_size > 10_000
    empty = pd.DataFrame({"lr": [0.01], "trial": [0]})
    assert all(c["verdict"] == "fail" for c in pbb.claims(empty) if "verdict" in c)
    pbb.plot(empty, tmp_path / "empty")
