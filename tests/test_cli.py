"""The ``lottery-lab`` command line: commands, one-line errors, the installed entry point."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TOY, make_toy

import lottery_common
from experiments import cli, engine


def _call(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lottery-lab: error: ") and "Traceback" not in err
    return lines[0]


def test_version_in_process(capsys):
    code, out, _ = _call(capsys, "--version")
    assert code == 0 and out.strip() == f"lottery-lab {lottery_common.__version__}"


def test_version_through_the_installed_entry_point():
    exe = shutil.which("lottery-lab")
    command = [exe] if exe else [sys.executable, "-m", "experiments.cli"]
    done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert done.stdout.strip() == f"lottery-lab {lottery_common.__version__}"


def test_list_shows_paper_and_cost(capsys, toy):
    code, out, _ = _call(capsys, "list")
    assert code == 0
    block = out.split(f"{TOY}  saved results: -\n")[1].split("\n\n")[0]
    assert "Toy paper, Fig. 0" in block and "quick: 7 x 4 = 28 rows, ~1 s" in block
    assert "full: 15 x 6 = 90 rows" in block
    assert max(len(line) for line in out.splitlines()) <= 120


def test_run_plot_validate_report(capsys, toy, tmp_path):
    out_dir = str(tmp_path)
    code, out, err = _call(capsys, "run", TOY, "--quick", "--out", out_dir, "--no-progress")
    assert code == 0, err
    assert "28 trials (quick, seed 0): 0 already saved, 28 new, 0 failed" in out
    assert "success rate grows like x" in out and ("[PASS]" in out or "[FAIL]" in out)
    for path in ("figures/toy-engine-test.png", "figures/toy-engine-test.pdf",
                 "results/toy-engine-test/validate.json"):
        assert (tmp_path / path).is_file()
    assert len(engine.RunStore(tmp_path, TOY).parts()) == 1

    code, out, _ = _call(capsys, "run", TOY, "--out", out_dir, "--no-progress")
    assert code == 0 and "28 already saved, 0 new" in out

    (tmp_path / "figures" / "toy-engine-test.png").unlink()
    code, out, _ = _call(capsys, "plot", TOY, "--out", out_dir)
    assert code == 0 and (tmp_path / "figures" / "toy-engine-test.png").is_file()
    code, out, _ = _call(capsys, "validate", TOY, "--out", out_dir)
    assert code == 0 and "success rate grows like x" in out

    code, out, _ = _call(capsys, "report", "--out", out_dir)
    assert code == 0
    assert TOY in out and "success rate grows like x" in out
    verdict = json.loads((tmp_path / "results" / TOY / "validate.json").read_text())["claims"][0]
    assert f"1 claims: {int(verdict['verdict'] == 'pass')} pass" in out


def test_set_and_trials_choose_the_grid(capsys, toy, tmp_path):
    code, out, err = _call(capsys, "run", TOY, "--out", str(tmp_path), "--no-progress",
                           "--set", "x=0.2,0.4", "--trials", "2", "--seed", "5")
    assert code == 0, err
    assert "8 trials (quick, seed 5)" in out
    runs = engine.load_runs(tmp_path, TOY)
    assert sorted(set(runs["x"])) == [0.2, 0.4] and len(runs) == 8
    # plot / validate default to the last run's selection
    code, out, err = _call(capsys, "validate", TOY, "--out", str(tmp_path))
    assert code == 0 and "warning" not in err
    # a different selection with nothing saved is a one-line error
    code, _, err = _call(capsys, "validate", TOY, "--out", str(tmp_path), "--full")
    assert code == 2 and "no saved rows" in _one_line_error(err)


def test_partial_selection_warns_with_the_command_that_completes_it(capsys, toy, tmp_path):
    code, _, _ = _call(capsys, "run", TOY, "--out", str(tmp_path), "--no-progress")
    assert code == 0
    code, _, err = _call(capsys, "validate", TOY, "--out", str(tmp_path), "--full", "--set",
                         "n=1,2")
    assert code == 0
    assert ("warning: 32 trials of the full grid of 'toy-engine-test' are not saved; "
            f"`lottery-lab run toy-engine-test --full --set n=1,2 --out {tmp_path}`") in err
    selection = engine.Selection("full", seed=3, trials=2, overrides={"x": (0.5, 1.0)})
    assert cli.selection_flags(selection) == "--full --seed 3 --trials 2 --set x=0.5,1.0"


def test_failed_trials_exit_1_and_name_the_parameters(capsys, monkeypatch, tmp_path):
    from experiments import registry

    registry.all_experiments()
    monkeypatch.setitem(registry._REGISTRY, TOY, make_toy(fail_x=0.9))
    code, out, err = _call(capsys, "run", TOY, "--out", str(tmp_path), "--no-progress")
    assert code == 1
    assert "20 new, 8 failed" in out and "8 trials of 'toy-engine-test' failed" in err
    assert '{"n":1,"x":0.9} trial 0' in err and "RuntimeError: toy failure at x=0.9" in err
    assert not (tmp_path / "figures" / "toy-engine-test.png").exists()


@pytest.mark.parametrize("argv, expected", [
    (["run", "nope"], ["unknown experiment 'nope'; choose from: all, ", TOY]),
    (["plot", "nope"], ["unknown experiment 'nope'; choose from: ", TOY]),
    (["run", TOY, "--set", "r=3"], ["unknown --set key 'r' for experiment 'toy-engine-test'; "
                                    "allowed keys: n, x"]),
    (["run", TOY, "--set", "n=abc"], ["--set n takes integers, got 'abc'"]),
    (["run", TOY, "--set", "n"], ["bad --set item 'n'; expected key=value"]),
    (["run", TOY, "--n-jobs", "0"], ["argument --n-jobs: must be a positive integer or -1 "
                                     "(all cores), got '0'"]),
    (["run", TOY, "--n-jobs", "two"], ["argument --n-jobs: must be a positive integer or -1"]),
    (["run", TOY, "--backend", "mpi"], ["argument --backend: invalid choice: 'mpi'", "loky",
                                        "dask"]),
    (["run", TOY, "--trials", "0"], ["argument --trials: must be a positive integer, got '0'"]),
    (["run", TOY, "--seed", "-3"], ["argument --seed: must be a non-negative integer"]),
    (["run", TOY, "--quick", "--full"], ["argument --full: not allowed with argument --quick"]),
    (["run", TOY, "--scheduler", "tcp://h:1"], ["--scheduler needs --backend dask"]),
    (["run", "all", "--set", "zzz=1"], ["unknown --set key 'zzz' for every experiment; "
                                        "allowed keys: ", "n, ", "x"]),
    (["frobnicate"], ["argument COMMAND: invalid choice: 'frobnicate'", "list", "report"]),
    ([], ["the following arguments are required: COMMAND"]),
])
def test_bad_input_gives_one_line_error(capsys, toy, tmp_path, argv, expected):
    out_args = ["--out", str(tmp_path)] if argv[:1] in (["run"], ["plot"]) else []
    code, _, err = _call(capsys, *argv, *out_args)
    assert code == 2
    line = _one_line_error(err)
    for text in expected:
        assert text in line
    assert not (tmp_path / "results").exists()


def test_plot_and_report_without_results_are_clear_errors(capsys, toy, tmp_path):
    code, _, err = _call(capsys, "plot", TOY, "--out", str(tmp_path))
    assert code == 2
    assert "no saved results for 'toy-engine-test'" in _one_line_error(err)
    code, _, err = _call(capsys, "report", "--out", str(tmp_path))
    assert code == 2 and "run all --quick" in _one_line_error(err)


def test_run_all_skips_missing_requirements_and_reports(capsys, monkeypatch, tmp_path):
    toy = make_toy()
    needy = dataclasses.replace(make_toy(name="toy-needs-module"),
                                requires=("module_that_is_not_installed_xyz",))
    monkeypatch.setattr(cli, "all_experiments", lambda: {TOY: toy, needy.name: needy})
    code, out, err = _call(capsys, "run", "all", "--quick", "--out", str(tmp_path),
                           "--no-progress", "--set", "n=1")
    assert code == 0, err
    assert "toy-needs-module: skipped, requires module_that_is_not_installed_xyz" in out
    assert "16 trials (quick, seed 0)" in out  # x in {0.1, 0.5, 0.9} (+0.7 of grid 2), n = 1
    assert "1 claims:" in out and not (tmp_path / "results" / "toy-needs-module").exists()
    code, _, err = _call(capsys, "run", "toy-needs-module", "--out", str(tmp_path))
    assert code == 2 and "requires module_that_is_not_installed_xyz" in _one_line_error(err)


def test_module_entry_point_runs_in_a_fresh_process(tmp_path):
    """``python -m experiments.cli`` with a bad name: exit 2, one line, no traceback."""
    done = subprocess.run([sys.executable, "-m", "experiments.cli", "run", "no-such-thing",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2
    assert _one_line_error(done.stderr).startswith("lottery-lab: error: unknown experiment")


def test_run_all_skips_experiments_whose_data_is_missing(tmp_path, monkeypatch, capsys):
    """Without MNIST on disk the MNIST experiments are skipped with a message, not failed."""
    from experiments.zhang2021 import imp_mnist

    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("LOTTERY_LAB_DATA", str(empty))
    assert "mnist test files not found under" in imp_mnist.missing_mnist("quick")
    assert "train/test" in imp_mnist.missing_mnist("full")
    code = cli.main(["run", "imp-mnist", "--quick", "--out", str(tmp_path)])
    assert code == 2
    assert "requires mnist test files not found" in capsys.readouterr().err
    cli.main(["list"])
    assert "mnist test files not found" in capsys.readouterr().out
