"""Results cannot go stale: code versions, recomputation of stale rows, one seed and one hash."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import re
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TOY, make_toy

from experiments import cli, engine
from experiments.engine import (
    RunStore,
    Selection,
    code_version,
    load_runs,
    run_experiment,
    selected_runs,
)
from experiments.engine import fingerprint as fp
from experiments.registry import get
from lottery_common import derive_seed, stable_hash
from lottery_common.fingerprint import module_closure, modules_digest, source_digest

REPO = Path(__file__).resolve().parents[1]


def _run(experiment, out, **kwargs):
    kwargs.setdefault("progress", False)
    return run_experiment(experiment, kwargs.pop("selection", Selection()), out=out, **kwargs)


def _values(runs: pd.DataFrame) -> pd.DataFrame:
    """The computed part of a table, sorted by cell and trial."""
    return (runs[["cell_key", "trial", "master_seed", "seed", "x", "n", "success", "value"]]
            .sort_values(["cell_key", "trial", "master_seed"]).reset_index(drop=True))


# --- one seed derivation, one hash ------------------------------------------------------------

def _old_engine_seed(master: int, experiment: str, key: str, trial: int) -> int:
    """The engine's derivation before it moved to lottery_common (kept here as the reference)."""
    digest = hashlib.sha256(f"{experiment}\x00{key}".encode()).digest()
    words = [int(w) for w in np.frombuffer(digest, dtype="<u4")]
    state = np.random.SeedSequence([master, trial, *words]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def test_engine_seeds_are_unchanged():
    # computed with the engine's own implementation before lottery_common existed
    assert engine.derive_seed(0, "toy", '{"n":1}', 0) == 7608416225702139559
    assert engine.derive_seed(3, "sample_complexity", '{"a":1,"b":0.5}', 7) == 873581845066521331
    assert engine.derive_seed(2**40, "x", "", 123456) == 357750435942718158
    rng = np.random.default_rng(0)
    for _ in range(200):
        master, trial = int(rng.integers(0, 2**62)), int(rng.integers(0, 10**6))
        name, key = f"e{rng.integers(100)}", json.dumps({"r": float(rng.random())})
        assert engine.derive_seed(master, name, key, trial) == _old_engine_seed(master, name, key,
                                                                               trial)
    # the engine is the common derivation at (trial, "NAME\0KEY")
    assert engine.derive_seed(5, TOY, "k", 2) == derive_seed(5, 2, f"{TOY}\x00k")


def test_common_derive_seed():
    assert derive_seed(0, "imp/prune", 1) == derive_seed(0, "imp/prune", 1)
    seeds = {derive_seed(0, "imp/prune", 1), derive_seed(0, "imp/prune", 1, 1),
             derive_seed(0, "imp/reinit", 1), derive_seed(1, "imp/prune", 1),
             derive_seed(0, "data_order", 0), derive_seed(0, "data_order"), derive_seed(1, 2),
             derive_seed(2, 1), derive_seed(0)}
    assert len(seeds) == 9 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(0, 1) == 2918264622725855778  # pinned: changing it changes every IMP run
    with pytest.raises(ValueError, match="seed must be >= 0"):
        derive_seed(-1)
    with pytest.raises(ValueError, match="coordinate 1 must be an integer"):
        derive_seed(0, "a", 1.5)
    with pytest.raises(ValueError, match="must be an integer"):
        derive_seed(0, True)


def test_stable_hash_is_canonical():
    a = stable_hash({"b": 1, "a": [1, 2.5, "s", None, True]})
    assert a == stable_hash({"a": (np.int64(1), np.float64(2.5), "s", None, True), "b": 1})
    assert re.fullmatch(r"[0-9a-f]{64}", a)
    text = json.dumps([{"a": [1, 2.5, "s", None, True], "b": 1}], sort_keys=True,
                      separators=(",", ":"))
    assert a == hashlib.sha256(text.encode()).hexdigest()
    assert stable_hash(1) != stable_hash("1") != stable_hash(True)
    assert stable_hash("a", "b") != stable_hash("ab") != stable_hash(["a", "b"])
    assert stable_hash(b"\x00\x01") == stable_hash(b"\x00\x01") != stable_hash(b"\x00\x02")
    with pytest.raises(ValueError, match="non-finite"):
        stable_hash(float("nan"))
    with pytest.raises(ValueError, match="keys must be strings"):
        stable_hash({1: 2})
    with pytest.raises(ValueError, match="cannot encode"):
        stable_hash(object())


def _python_files() -> list[Path]:
    skip = {"results", "figures", ".git", "build", "dist"}
    return [p for p in REPO.rglob("*.py")
            if not any(part in skip or part.startswith(".") or part.endswith(".egg-info")
                       for part in p.relative_to(REPO).parts)]


def test_md5_only_verifies_downloaded_archives():
    md5 = re.compile(r"hashlib\.md5|from\s+hashlib\s+import[^\n]*\bmd5\b")
    users = {str(p.relative_to(REPO)) for p in _python_files() if md5.search(p.read_text())}
    # data.py checks the published MD5s of downloaded archives; its test builds such archives
    assert users <= {"deep_lottery/data.py", "tests/test_deep_lottery_data.py"}, users


def test_one_seed_derivation():
    definitions = {str(p.relative_to(REPO)) for p in _python_files()
                   if re.search(r"^def derive_seed\(", p.read_text(), re.MULTILINE)}
    assert definitions == {"lottery_common/seeds.py", "experiments/engine/seeds.py"}


# --- code fingerprints ------------------------------------------------------------------------

def test_source_digest_ignores_docstrings_and_comments_only():
    base = 'def f(x):\n    """Doc."""\n    return x + 1\n'
    same = [
        'def f(x):\n    """Other words entirely."""\n    return x + 1\n',
        '"""Module doc."""\n# a comment\n\ndef f(x):  # why\n    return (x\n            + 1)\n',
    ]
    changed = ['def f(x):\n    """Doc."""\n    return x + 2\n',
               'def f(y):\n    """Doc."""\n    return y + 1\n',
               'def f(x):\n    """Doc."""\n    return x + 1\nK = 1\n']
    assert all(source_digest(s) == source_digest(base) for s in same)
    assert len({source_digest(s) for s in [base, *changed]}) == 4


def _package(tmp_path: Path, monkeypatch) -> str:
    """A throw-away library package ``NAME`` with modules kernel, helper and unused."""
    name = f"stalekit_{uuid.uuid4().hex[:8]}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""A library."""\n')
    (pkg / "kernel.py").write_text(textwrap.dedent('''\
        """The kernel."""
        from . import helper


        def shift():
            """How far values move."""
            return helper.OFFSET
        '''))
    (pkg / "helper.py").write_text('"""Constants."""\nOFFSET = 0.0\n')
    (pkg / "unused.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_closure_follows_imports_inside_functions(tmp_path, monkeypatch):
    name = _package(tmp_path, monkeypatch)
    own = tmp_path / "own_module.py"
    own.write_text(f"import numpy\n\ndef run():\n    from {name}.kernel import shift\n"
                   f"    return shift()\n")
    modules = module_closure(follow=[name], scan=[("own_module", own)])
    assert list(modules) == [f"{name}.helper", f"{name}.kernel"]
    digest = modules_digest(modules)
    helper = tmp_path / name / "helper.py"
    helper.write_text('"""Constants, reworded."""\n# a comment\nOFFSET = 0.0\n')
    assert modules_digest(modules) == digest
    helper.write_text('"""Constants."""\nOFFSET = 100.0\n')
    assert modules_digest(modules) != digest


def test_real_experiments_hash_their_library_not_their_presentation():
    lueker = fp.library_modules(get("lueker"))
    assert {"subset_sum.coverage", "lottery_common.seeds"} <= set(lueker)
    assert not any(m.startswith(("experiments.", "deep_lottery")) for m in lueker)
    synthetic = fp.library_modules(get("imp-synthetic"))  # imported inside run_cell
    assert {"deep_lottery.imp", "deep_lottery.training"} <= set(synthetic)
    assert "experiments.zhang2021.imp_synthetic" not in synthetic  # declared by its version
    mnist = fp.library_modules(get("imp-mnist"))
    assert "experiments.mnist_imp" in mnist
    noise = fp.library_modules(get("noise"))
    assert "experiments.zhang2021.teacher_instances" in noise
    for experiment in (get("lueker"), get("imp-mnist"), get("noise")):
        modules = set(fp.library_modules(experiment))
        assert not any(fp.not_hashed(m) for m in modules)
        assert re.fullmatch(rf"{experiment.version}-[0-9a-f]{{12}}", code_version(experiment))


def test_code_version_follows_version_and_library_code_not_run_cell_wrappers():
    toy = make_toy()
    version = code_version(toy)
    assert version.startswith("1-")
    assert code_version(dataclasses.replace(toy, version=2)) == "2-" + version[2:]
    assert code_version(make_toy(sleep=0.01)) == version
    assert code_version(dataclasses.replace(toy, run_cell=lambda p, s: {})) == version
    with pytest.raises(ValueError, match="version"):
        code_version(dataclasses.replace(toy, version=-1))


# --- the runner: stale rows are recomputed, never mixed ---------------------------------------

def test_bumped_version_recomputes_every_row_and_drops_the_stale_ones(tmp_path):
    toy = make_toy()
    first = _run(toy, tmp_path)
    assert first.n_new == 28 and first.n_stale == 0
    before = load_runs(tmp_path, TOY)
    assert set(before["code_version"]) == {code_version(toy)}
    bumped = dataclasses.replace(toy, version=2)
    report = _run(bumped, tmp_path)
    assert (report.n_cached, report.n_new, report.n_stale) == (0, 28, 28) and report.complete
    after = load_runs(tmp_path, TOY)
    assert len(after) == 28 and set(after["code_version"]) == {code_version(bumped)}
    assert len(RunStore(tmp_path, TOY).parts()) == 1
    pd.testing.assert_frame_equal(_values(after), _values(before))  # same seeds, same toy
    assert _run(bumped, tmp_path).n_new == 0  # now current
    rows, missing = selected_runs(bumped, Selection(), tmp_path)
    assert len(rows) == 28 and missing == 0
    assert len(engine.plot_experiment(bumped, Selection(), tmp_path)) == 2
    assert engine.validate_experiment(bumped, Selection(), tmp_path)["claims"]
    # the old code's selection is no longer saved: a one-line error with the command
    with pytest.raises(ValueError, match="computed by older code") as info:
        selected_runs(toy, Selection(), tmp_path)
    assert f"`lottery-lab run {TOY} --quick --out {tmp_path}`" in str(info.value)
    assert "\n" not in str(info.value)


def test_only_the_superseded_stale_rows_are_dropped(tmp_path):
    toy, bumped = make_toy(), dataclasses.replace(make_toy(), version=2)
    _run(toy, tmp_path)
    _run(toy, tmp_path, selection=Selection("full"))  # 62 more rows
    _run(toy, tmp_path, selection=Selection(seed=7))  # 28 more rows
    assert len(load_runs(tmp_path, TOY)) == 28 + 62 + 28
    report = _run(bumped, tmp_path)
    assert (report.n_new, report.n_stale) == (28, 28)
    runs = load_runs(tmp_path, TOY)
    assert len(runs) == 28 + 62 + 28
    assert (runs["code_version"] == code_version(bumped)).sum() == 28
    assert engine.stale_rows(bumped, tmp_path) == 62 + 28
    assert engine.stale_rows(toy, tmp_path) == 28
    current, missing = selected_runs(bumped, Selection("full"), tmp_path)
    assert len(current) == 28 and missing == 62  # never mixed with the stale 62
    with pytest.raises(ValueError, match=f"--quick --seed 7 --out {re.escape(str(tmp_path))}"):
        selected_runs(bumped, Selection(seed=7), tmp_path)
    full = _run(bumped, tmp_path, selection=Selection("full"))
    assert (full.n_cached, full.n_new, full.n_stale) == (28, 62, 62)
    assert engine.stale_rows(bumped, tmp_path) == 28  # seed 7 only


def test_a_failed_run_keeps_the_stale_rows_until_a_complete_one(tmp_path):
    _run(make_toy(), tmp_path)
    broken = dataclasses.replace(make_toy(fail_x=0.5), version=2)
    report = _run(broken, tmp_path)
    assert len(report.failures) == 8 and report.n_new == 20
    runs = load_runs(tmp_path, TOY)
    assert len(runs) == 28 + 20  # both versions, never mixed in a selection
    rows, missing = selected_runs(broken, Selection(), tmp_path)
    assert len(rows) == 20 and missing == 8
    fixed = _run(dataclasses.replace(make_toy(), version=2), tmp_path)
    assert (fixed.n_cached, fixed.n_new, fixed.n_stale) == (20, 8, 8)
    assert len(load_runs(tmp_path, TOY)) == 28


def test_tables_written_before_code_versions_load_and_are_recomputed(tmp_path):
    toy = make_toy()
    _run(toy, tmp_path)
    store = RunStore(tmp_path, TOY)
    (part,) = store.parts()
    old = pd.read_parquet(part).drop(columns="code_version")
    old.to_parquet(part, index=False)
    loaded = load_runs(tmp_path, TOY)
    assert len(loaded) == 28 and loaded["code_version"].isna().all()
    assert engine.stale_rows(toy, tmp_path) == 28
    with pytest.raises(ValueError, match="older code .*code version none"):
        selected_runs(toy, Selection(), tmp_path)
    report = _run(toy, tmp_path)
    assert (report.n_cached, report.n_new, report.n_stale) == (0, 28, 28)
    runs = load_runs(tmp_path, TOY)
    assert len(runs) == 28 and set(runs["code_version"]) == {code_version(toy)}
    pd.testing.assert_frame_equal(_values(runs), _values(old))


def test_editing_a_library_module_recomputes_the_rows(tmp_path, monkeypatch):
    (tmp_path / "lib").mkdir()
    name = _package(tmp_path / "lib", monkeypatch)
    module = f"stale_experiment_{uuid.uuid4().hex[:8]}"
    (tmp_path / "lib" / f"{module}.py").write_text(textwrap.dedent(f'''\
        import numpy as np


        def run_cell(params, seed):
            from {name}.kernel import shift

            rng = np.random.default_rng(seed)
            return {{"success": int(rng.random() < params["x"]), "value": rng.normal() + shift()}}


        def claims(runs):
            return [{{"finding": "mean value", "measured": float(runs["value"].mean())}}]
        '''))
    monkeypatch.setattr(fp, "FOLLOW", (*fp.FOLLOW, name))
    experiment_module = importlib.import_module(module)
    kernel = importlib.import_module(f"{name}.kernel")
    toy = dataclasses.replace(make_toy(), run_cell=experiment_module.run_cell,
                              claims=experiment_module.claims)
    assert f"{name}.kernel" in fp.library_modules(toy)
    assert _run(toy, tmp_path / "out").n_new == 28
    version = code_version(toy)
    helper = tmp_path / "lib" / name / "helper.py"
    helper.write_text('"""Constants (a docstring edit changes nothing)."""\nOFFSET = 0.0\n')
    assert code_version(toy) == version
    assert _run(toy, tmp_path / "out").n_new == 0
    helper.write_text('"""Constants."""\nOFFSET = 100.0\n')
    importlib.reload(sys.modules[f"{name}.helper"])
    importlib.reload(kernel)
    assert code_version(toy) != version
    report = _run(toy, tmp_path / "out")
    assert (report.n_cached, report.n_new, report.n_stale) == (0, 28, 28)
    runs = load_runs(tmp_path / "out", TOY)
    assert len(runs) == 28 and (runs["value"] > 90).all()  # the new code's values only


# --- lottery-lab list -------------------------------------------------------------------------

def test_list_shows_whether_saved_results_are_current(capsys, toy, tmp_path):
    def status() -> str:
        assert cli.main(["list", "--out", str(tmp_path)]) == 0
        line = next(r for r in capsys.readouterr().out.splitlines() if r.startswith(TOY))
        return line.rstrip()

    assert status().endswith(" -")
    _run(toy, tmp_path)
    assert status().endswith(" current")
    _run(dataclasses.replace(toy, version=2), tmp_path)  # saved by other code than registered
    assert status().endswith(" stale (28 rows)")
    code = cli.main(["plot", TOY, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "computed by older code" in err and f"lottery-lab run {TOY}" in err


# --- the IMP level cache follows the same rule ------------------------------------------------

def test_imp_cache_folder_follows_the_code(tmp_path, monkeypatch):
    from deep_lottery import imp
    from deep_lottery.training import TrainConfig

    modules = set(imp._code_modules())
    assert {"deep_lottery.imp", "deep_lottery.training",
            "deep_lottery.models", "deep_lottery.pruning",
            "lottery_common.seeds"} <= modules
    config = imp.IMPConfig(levels=1, train=TrainConfig(iterations=10))
    monkeypatch.setenv(imp.CACHE_ENV, str(tmp_path))
    here = imp.cache_directory(config, {"data": "x"})
    assert here.parent == tmp_path and re.fullmatch(r"imp_[0-9a-f]{64}", here.name)
    assert here == imp.cache_directory(config, {"data": "x"})
    assert here != imp.cache_directory(config, {"data": "y"})
    assert imp.config_hash(config) == stable_hash({"config": config.to_dict(), "extra": {},
                                                   "code": imp.code_fingerprint()})
    imp._Store(here, config, {"data": "x"})  # writes hparams.json with the fingerprint
    monkeypatch.setattr(imp, "code_fingerprint", lambda: "edited")
    moved = imp.cache_directory(config, {"data": "x"})
    assert moved != here and moved.parent == tmp_path
    with pytest.raises(ValueError, match="older code"):
        imp._Store(here, config, {"data": "x"})  # a level of other code is never reused
