"""Bad input reaching the computation, caught before any trial runs; plots and claims that cope
with degenerate tables.

* Every grid parameter of every registered experiment has a declared rule (``Experiment.params``)
  and both sizes' grids pass their own rules; ``--set`` values outside a rule (``r=-5``, ``r``
  above ``d``, ``eta=-1``, ``lam=-1``, ``N=0``) stop ``lottery-lab run`` with one line naming the
  user's parameter, the value and the allowed range, exit status 2, and nothing run.
* A corrupted MNIST ``.gz`` is named, once, before the run starts (and the reader names it too).
* Every experiment's ``plot`` and ``claims`` run on all-diverged, all-failed and single-cell
  tables derived from its ``contradicting_runs()``: no exception, well-formed records, and a
  failing claim when every run failed.
* ``strong-lth-construction`` says on the console, in its rows, figure and claims which target
  it used (the MNIST-trained MLP or the random fallback).
"""

from __future__ import annotations

import gzip
import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from experiments import cli, engine
from experiments.engine import check_claims
from experiments.registry import Param, all_experiments

NAMES = sorted(all_experiments())


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    assert lines[0].startswith("lottery-lab: error: ")
    return lines[0]


# ----------------------------------------------------------------------------- parameter rules

@pytest.mark.parametrize("name", NAMES)
def test_every_grid_parameter_has_a_rule_and_the_grids_obey_them(name: str) -> None:
    experiment = all_experiments()[name]
    for size in ("quick", "full"):
        keys = engine.grid_keys(experiment.size(size))
        missing = sorted(set(keys) - set(experiment.params))
        assert not missing, f"{name!r} declares no rule for {missing} ({size} grid)"
        assert all(isinstance(experiment.params[k], Param) for k in keys)
        cells = engine.expand_cells(experiment, engine.Selection(size))  # raises on a violation
        for params in cells.values():
            assert experiment.cell_problems(params) == []


def test_param_rules_describe_what_is_allowed() -> None:
    rule = Param("int", low=1, high="d")
    assert rule.describe() == "an integer from 1 to d"
    assert rule.problem("r", 200, {"r": 200, "d": 100}) == "r must be an integer from 1 to d (d = 100)"
    assert rule.problem("r", 50, {"r": 50, "d": 100}) is None
    assert rule.problem("r", 2.5, {"r": 2.5, "d": 100}) is not None
    assert rule.problem("r", True, {"r": True, "d": 100}) is not None
    assert Param("float", low=0, low_open=True).problem("eta", -1.0, {}) == "eta must be a number > 0"
    beta = Param("float", low=0, high=1, high_open=True)
    assert beta.problem("beta", 1.0, {}) == "beta must be a number in [0, 1)"
    assert beta.problem("beta", 0.0, {}) is None
    assert Param("float", low=0).problem("lam", math.nan, {}) == "lam must be a number >= 0"
    choice = Param("str", choices=("train", "test"))
    assert choice.problem("mnist_files", "val", {}) == "mnist_files must be one of 'train', 'test'"
    assert Param("bool").problem("agd", 1, {}) == "agd must be true or false"


@pytest.mark.parametrize("argv, expected", [
    (["convex-radius", "--set", "r=-5"], ["--set r=-5: r must be an integer from 1 to d"]),
    (["convex-radius", "--set", "r=200"], ["--set r=200: r must be an integer from 1 to d (d = 100)"]),
    (["convergence", "--set", "eta=-1"], ["--set eta=-1: eta must be a number > 0"]),
    (["convergence", "--set", "lam=-1"], ["--set lam=-1: lam must be a number >= 0"]),
    (["sample-complexity", "--set", "N=0"], ["--set N=0: N must be an integer >= 1"]),
    (["noise", "--set", "r=-5,400", "beta=1"], ["--set r=-5: r must be", "--set r=400: r must be",
                                               "(d = 300)", "--set beta=1: beta must be a "
                                               "number in [0, 1)"]),
    (["lueker", "--set", "eta=0"], ["--set eta=0: eta must be a number in (0, 1]"]),
    (["perturbed-coverage", "--set", "eps=-0.1"], ["--set eps=-0.1: eps must be a number >= 0"]),
    (["strong-lth-construction", "--set", "n=0"], ["--set n=0: n must be an integer from 1 to"]),
    (["tensor-init", "--set", "K=30"], ["--set K=30: K must be an integer from 1 to r"]),
    (["local-convexity", "--set", "d=5"], ["r must be an integer from 1 to d (d = 5)"]),
    (["imp-synthetic", "--set", "iterations=0"], ["--set iterations=0: iterations must be an "
                                                 "integer >= 1"]),
    (["imp-mnist", "--set", "N=8000"], ["--set N=8000: N must be at most 7000"]),
    (["lth-lenet", "--set", "mnist_files=val"], ["--set mnist_files=val: mnist_files must be one "
                                                 "of 'train', 'test'"]),
])
def test_bad_set_values_stop_the_run_with_one_line(capsys, tmp_path, monkeypatch, argv, expected):
    monkeypatch.setenv("LOTTERY_LAB_DATA", str(tmp_path / "no-data"))  # checks come before data
    if argv[0] in ("imp-mnist", "lth-lenet", "imp-synthetic"):  # requires torch (checked first)
        pytest.importorskip("torch")
    if argv[0] in ("imp-mnist", "lth-lenet"):  # and MNIST files
        from tests.test_deep_lottery_data import write_mnist

        write_mnist(tmp_path / "no-data" / "mnist", "test", 4, seed=0)
    code = cli.main(["run", *argv, "--out", str(tmp_path), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    line = _one_line_error(err)
    assert f"experiment '{argv[0]}'" in line
    for text in expected:
        assert text in line, line
    assert "r_star" not in line
    assert not (tmp_path / "results").exists(), "nothing may run (or be saved) on bad input"


def test_each_bad_value_is_reported_once(capsys, tmp_path):
    code = cli.main(["run", "convex-radius", "--set", "r=200", "--out", str(tmp_path)])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and line.count("r=200") == 1  # 11 lam values x 1 r: one message


def test_run_all_checks_every_experiment_before_running_any(capsys, tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(cli, "_run_one", lambda e, s, a: ran.append(e.name) or 0)
    code = cli.main(["run", "all", "--set", "r=200", "--out", str(tmp_path)])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and ran == []
    assert "--set r=200" in line


def test_the_library_never_sees_an_unchecked_value():
    """A selection built in Python (not through the CLI) is checked the same way."""
    experiment = all_experiments()["convergence"]
    bad = engine.Selection("quick", overrides={"r": (400,), "eta": (0.0,)})
    with pytest.raises(ValueError, match="experiment 'convergence'") as info:
        engine.expand_tasks(experiment, bad)
    assert "--set r=400: r must be an integer from 1 to d (d = 300)" in str(info.value)
    assert "--set eta=0: eta must be a number > 0" in str(info.value)


# ----------------------------------------------------------------------------- corrupted MNIST

def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"this is not gzip" + data[16:])


@pytest.mark.parametrize("how", ["truncated", "not-gzip"])
def test_the_reader_names_a_corrupted_file(tmp_path, how):
    from deep_lottery.idx_files import read_idx, write_idx

    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(path, np.arange(1000, dtype=np.uint8))
    _corrupt(path, how)
    with pytest.raises(ValueError, match=rf"{path}.*corrupted.*replace it with a fresh copy"):
        read_idx(path)


@pytest.mark.parametrize("name", ["imp-mnist", "lth-lenet", "strong-lth-construction"])
def test_a_corrupted_mnist_file_is_named_once_before_the_run(capsys, tmp_path, monkeypatch, name):
    pytest.importorskip("torch")
    from tests.test_deep_lottery_data import write_mnist

    folder = tmp_path / "data" / "mnist"
    write_mnist(folder, "test", 2000, seed=0)
    bad = folder / "t10k-images-idx3-ubyte.gz"
    _corrupt(bad, "truncated")
    monkeypatch.setenv("LOTTERY_LAB_DATA", str(tmp_path / "data"))
    code = cli.main(["run", name, "--out", str(tmp_path), "--no-progress"])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2
    assert f"mnist file {bad} is corrupted" in line and "replace it with a fresh copy" in line
    assert not (tmp_path / "results").exists()
    code = cli.main(["run", "all", "--out", str(tmp_path), "--no-progress", "--set", "N=-1"])
    assert code == 2  # a bad value in any experiment stops run all before the data checks


def test_run_all_skips_experiments_whose_mnist_file_is_corrupted(tmp_path, monkeypatch):
    from experiments.mnist_imp import missing_mnist
    from experiments.pensia2020 import strong_lth_construction as slc
    from tests.test_deep_lottery_data import write_mnist

    folder = tmp_path / "mnist"
    write_mnist(folder, "test", 50, seed=0)
    monkeypatch.setenv("LOTTERY_LAB_DATA", str(tmp_path))
    assert missing_mnist("quick") is None and slc.EXPERIMENT.missing_data("quick") is None
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01")[:-6])
    message = missing_mnist("quick")
    assert message is not None and str(bad) in message and "corrupted" in message
    assert str(bad) in slc.EXPERIMENT.missing_data("quick")


# ----------------------------------------------------------------------------- degenerate tables

_OUTCOME_PREFIXES = ("outcome", "status")
_STRUCTURE_SUFFIXES = ("_level", "_density", "history_every")


def _parameters(name: str) -> set[str]:
    experiment = all_experiments()[name]
    return set(engine.grid_keys(experiment.quick)) | set(engine.grid_keys(experiment.full))


def _spoil(name: str, runs: pd.DataFrame, bad: float) -> pd.DataFrame:
    """Every outcome of every run failed: booleans false, numbers ``bad`` (NaN: failed, inf:
    diverged), per-level or per-iteration lists of ``bad``, outcome labels "diverged"."""
    keep = _parameters(name) | {"trial", "data"}
    out = runs.copy()
    for column in runs.columns:
        if column in keep or column.endswith(_STRUCTURE_SUFFIXES):
            continue
        values = runs[column]
        first = values.dropna().iloc[0] if values.notna().any() else None
        if isinstance(first, (bool, np.bool_)):
            out[column] = False
        elif isinstance(first, (list, tuple, np.ndarray)):
            out[column] = [[bad] * len(v) if isinstance(v, (list, tuple, np.ndarray)) else v
                           for v in values]
        elif isinstance(first, numbers.Integral):
            continue  # counts and sizes (n_star, n_iter, weights) keep their meaning
        elif isinstance(first, numbers.Real):
            out[column] = np.where(values.isna(), np.nan, bad)
        elif isinstance(first, str) and column.startswith(_OUTCOME_PREFIXES):
            out[column] = "diverged"
    return out


def _single_cell(name: str, runs: pd.DataFrame) -> pd.DataFrame:
    params = [p for p in _parameters(name) if p in runs.columns]
    first = runs.iloc[0]
    mask = pd.Series(True, index=runs.index)
    for p in params:
        value = first[p]
        mask &= runs[p].isna() if _isnan(value) else runs[p].eq(value)
    return runs[mask].reset_index(drop=True)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


TABLES = {
    "all-failed": lambda name, runs: _spoil(name, runs, math.nan),
    "all-diverged": lambda name, runs: _spoil(name, runs, math.inf),
    "single-cell": _single_cell,
    "single-row": lambda name, runs: runs.iloc[:1].reset_index(drop=True),
}


@pytest.mark.parametrize("table", sorted(TABLES))
@pytest.mark.parametrize("name", NAMES)
def test_plot_and_claims_cope_with_degenerate_tables(name: str, table: str, tmp_path: Path) -> None:
    experiment = all_experiments()[name]
    runs = TABLES[table](name, experiment.contradicting_runs())
    assert len(runs)
    experiment.plot(runs, tmp_path / "x")
    assert (tmp_path / "x.png").exists()
    records = experiment.claims(runs)
    split = check_claims(name, records)
    assert split["claims"], f"{name!r} makes no claim on the {table} table"
    if table.startswith("all-"):
        verdicts = [c["verdict"] for c in split["claims"]]
        assert "fail" in verdicts, f"{name!r}: every run failed, yet every claim passes: {records}"


def test_convergence_with_every_run_diverged_writes_its_verdicts(tmp_path):
    """``--set eta=1000``: every AGD and GD run diverges; the figure and validate.json are
    written and the claims fail (the plot used to crash)."""
    code = cli.main(["run", "convergence", "--set", "eta=1000", "N=200", "d=40", "r=5,10,15",
                     "max_iter=50", "--trials", "2", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    assert (tmp_path / "figures" / "convergence.png").exists()
    verdicts = engine.RunStore(tmp_path, "convergence").validate_path
    assert verdicts.exists()
    import json

    claims = json.loads(verdicts.read_text())
    text = json.dumps(claims)
    assert '"fail"' in text and '"pass"' not in text


# ----------------------------------------------------------------------------- strong-LTH target

def test_strong_lth_says_which_target_it_used(tmp_path, monkeypatch, capsys):
    from experiments.pensia2020 import strong_lth_construction as slc

    monkeypatch.setenv("LOTTERY_LAB_DATA", str(tmp_path / "nowhere"))
    try:
        notice = slc.EXPERIMENT.notice("quick")
        assert notice is not None and "MNIST test split not found" in notice
        assert "random" in notice
        row = slc.run_cell({"hidden": 4, "n": 4, "eps": 0.0}, 0)
        assert row["data"] == "random"
        code = cli.main(["run", "strong-lth-construction", "--set", "hidden=4", "n=4,8,12",
                         "eps=0,0.1", "--trials", "1", "--out", str(tmp_path), "--no-progress"])
        out = capsys.readouterr().out
    finally:
        slc.load_target.cache_clear()  # the random target of this folder
    assert code == 0
    assert "strong-lth-construction: note: MNIST test split not found" in out
    manifest = engine.RunStore(tmp_path, "strong-lth-construction").manifest_path.read_text()
    assert "MNIST test split not found" in manifest and "random" in manifest
    runs = slc.contradicting_runs()
    assert all("target: random" in c["measured"] for c in slc.claims(runs) if "verdict" in c)
    assert "random" in slc.target_title(runs)
    assert "MNIST" in slc.target_title(runs.assign(data="mnist"))
    assert "mixed" in slc.target_title(runs.assign(data=["mnist", "random"] * (len(runs) // 2)))
