"""The experiment engine: keys, seeds, grids, parallel equality, resume, failures, storage."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TOY, make_toy, toy_run_cell

import lottery_common
from experiments import analysis, cli_overrides, engine
from experiments.cli_overrides import coerce_overrides
from experiments.engine import (
    RunStore,
    Selection,
    canonical_key,
    derive_seed,
    expand_tasks,
    load_runs,
    run_experiment,
    selected_runs,
)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _table(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by identity, without the wall time (the only non-deterministic column)."""
    return (runs.drop(columns="wall_time_s").sort_values(["cell_key", "trial", "master_seed"])
            .reset_index(drop=True))


def _run(experiment, out, **kwargs):
    kwargs.setdefault("progress", False)
    return run_experiment(experiment, kwargs.pop("selection", Selection()), out=out, **kwargs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    """The toy's quick table from one uninterrupted in-process run."""
    out = tmp_path_factory.mktemp("reference")
    report = _run(make_toy(), out)
    assert report.complete and report.n_new == 28
    return load_runs(out, TOY)


# --- keys and seeds ---------------------------------------------------------------------------

def test_canonical_key_ignores_argument_order_and_number_type():
    assert canonical_key({"a": 1, "b": 0.5, "c": "s"}) == canonical_key({"c": "s", "b": 0.5,
                                                                          "a": 1})
    assert canonical_key({"r": 50}) == canonical_key({"r": 50.0}) == canonical_key(
        {"r": np.int64(50)}) == canonical_key({"r": np.float32(50.0)})
    assert canonical_key({"b": (1, 2.0)}) == canonical_key({"b": [1.0, 2]})
    assert canonical_key({"flag": True}) != canonical_key({"flag": 1})
    assert canonical_key({"x": 0.1}) != canonical_key({"x": 0.1000001})
    assert json.loads(canonical_key({"x": 0.1, "n": 3})) == {"n": 3, "x": 0.1}
    with pytest.raises(ValueError, match="finite"):
        canonical_key({"x": float("nan")})
    with pytest.raises(ValueError, match="must be None, bool, int, float, str"):
        canonical_key({"x": {"nested": 1}})


def test_seed_depends_on_coordinates_only():
    key = canonical_key({"n": 1, "x": 0.5})
    seed = derive_seed(0, TOY, key, 3)
    assert seed == derive_seed(0, TOY, canonical_key({"x": 0.5, "n": 1.0}), 3)
    others = {derive_seed(1, TOY, key, 3), derive_seed(0, TOY, key, 2),
              derive_seed(0, "other", key, 3), derive_seed(0, TOY, canonical_key({"n": 2}), 3)}
    assert seed not in others and len(others) == 4
    seeds = [derive_seed(0, TOY, key, t) for t in range(1000)]
    assert len(set(seeds)) == 1000 and 0 <= min(seeds) and max(seeds) < 2**63
    with pytest.raises(ValueError, match="seed must be >= 0"):
        derive_seed(-1, TOY, key, 0)


# --- grids and overrides ----------------------------------------------------------------------

def test_expand_tasks_unions_grids_and_dedupes_cells():
    toy = make_toy()
    tasks = expand_tasks(toy, Selection())
    cells = {t.key for t in tasks}
    assert len(cells) == 7 and len(tasks) == 28  # (0.5, 2) is in both quick grids
    assert [t.index for t in tasks] == list(range(28))
    full = expand_tasks(toy, Selection("full", trials=2))
    assert len(full) == 5 * 3 * 2
    for t in tasks:
        assert t.seed == derive_seed(0, TOY, t.key, t.trial)
        assert t.key == canonical_key(t.params)
    over = expand_tasks(toy, Selection(overrides={"x": (0.2, 0.4)}, trials=1))
    assert sorted((t.params["x"], t.params["n"]) for t in over) == [
        (0.2, 1), (0.2, 2), (0.4, 1), (0.4, 2)]
    with pytest.raises(ValueError, match="unknown --set key 'r'.*allowed keys: n, x"):
        expand_tasks(toy, Selection(overrides={"r": (1,)}))


def test_coerce_overrides_follows_declared_types():
    toy = make_toy()
    got = coerce_overrides(toy, "quick", {"n": ["3", "4.0"], "x": ["1", "0.25"]})
    assert got == {"n": (3, 4), "x": (1.0, 0.25)}
    assert all(type(v) is int for v in got["n"]) and all(type(v) is float for v in got["x"])
    # int vs float spelling never changes the cells, keys or seeds
    a = expand_tasks(toy, Selection(overrides=coerce_overrides(toy, "quick", {"x": ["1"]})))
    b = expand_tasks(toy, Selection(overrides=coerce_overrides(toy, "quick", {"x": ["1.0"]})))
    assert [(t.key, t.seed) for t in a] == [(t.key, t.seed) for t in b]
    with pytest.raises(ValueError, match="--set n takes integers, got '2.5'"):
        coerce_overrides(toy, "quick", {"n": ["2.5"]})
    with pytest.raises(ValueError, match="--set x takes numbers, got 'abc'"):
        coerce_overrides(toy, "quick", {"x": ["abc"]})
    with pytest.raises(ValueError, match="unknown --set key 'y'.*allowed keys: n, x"):
        coerce_overrides(toy, "quick", {"y": ["1"]})
    assert coerce_overrides(toy, "quick", {"y": ["1"]}, strict=False) == {}
    assert cli_overrides.split_set_items(["r=20,50", "b=true"]) == {"r": ["20", "50"], "b": ["true"]}
    for bad in ("r", "=1", "r=", "r=1,,2"):
        with pytest.raises(ValueError, match="bad --set item"):
            cli_overrides.split_set_items([bad])
    assert [cli_overrides.parse_value(s) for s in ("1", "1.5", "TRUE", "abc")] == [1, 1.5, True, "abc"]


# --- running ----------------------------------------------------------------------------------

def test_rows_hold_parameters_seeds_and_metadata(reference):
    runs = reference
    assert len(runs) == 28 and not runs.duplicated(list(engine.IDENTITY)).any()
    for column in (*engine.METADATA_COLUMNS, "x", "n", "success", "value"):
        assert column in runs.columns
    assert set(runs["version"]) == {lottery_common.__version__}
    assert set(runs["size"]) == {"quick"} and set(runs["master_seed"]) == {0}
    assert (runs["wall_time_s"] >= 0).all()
    for row in runs.itertuples():
        params = {"x": row.x, "n": row.n}
        assert row.cell_key == canonical_key(params)
        assert row.seed == derive_seed(0, TOY, row.cell_key, row.trial)
        assert {"success": row.success, "value": row.value} == toy_run_cell(params, row.seed)


def test_same_table_for_one_and_two_jobs(tmp_path, reference):
    report = _run(make_toy(), tmp_path, n_jobs=2)
    assert report.complete and report.n_new == 28
    pd.testing.assert_frame_equal(_table(load_runs(tmp_path, TOY)), _table(reference))


def test_same_table_on_dask_local_cluster(tmp_path, reference):
    pytest.importorskip("distributed")
    report = _run(make_toy(), tmp_path, n_jobs=2, backend="dask")
    assert report.complete
    pd.testing.assert_frame_equal(_table(load_runs(tmp_path, TOY)), _table(reference))


def test_same_table_on_a_dask_scheduler_address(tmp_path, reference, monkeypatch):
    distributed = pytest.importorskip("distributed")
    from threadpoolctl import threadpool_limits

    # the workers are threads of this process: restore what they change for the other tests
    for variable in engine.THREAD_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(engine.parallel, "_WORKER_LIMITED", False)
    with threadpool_limits(limits=None), distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        report = _run(make_toy(), tmp_path, backend="dask", scheduler=cluster.scheduler_address)
    assert report.complete
    pd.testing.assert_frame_equal(_table(load_runs(tmp_path, TOY)), _table(reference))
    monkeypatch.setattr(engine.parallel, "DASK_CONNECT_TIMEOUT", "1s")
    with pytest.raises(ValueError, match="cannot reach the Dask scheduler"):
        _run(make_toy(), tmp_path, backend="dask", scheduler="tcp://127.0.0.1:9", force=True)


def thread_probe(params: dict, seed: int) -> dict:
    """Report the thread settings seen inside a trial (for the worker test)."""
    import numba
    from threadpoolctl import threadpool_info

    pools = [p["num_threads"] for p in threadpool_info()]
    return {"max_pool_threads": max(pools, default=1),
            "omp_env": os.environ.get("OMP_NUM_THREADS", ""),
            "numba_threads": numba.get_num_threads()}


def test_workers_are_single_threaded(tmp_path):
    probe = make_toy()
    probe = dataclasses.replace(probe, run_cell=thread_probe)
    assert _run(probe, tmp_path, n_jobs=2).complete
    runs = load_runs(tmp_path, TOY)
    assert set(runs["max_pool_threads"]) == {1}
    assert set(runs["omp_env"]) == {"1"} and set(runs["numba_threads"]) == {1}


def test_single_threaded_limits_and_restores_numba():
    numba = pytest.importorskip("numba")
    from threadpoolctl import threadpool_info

    before = numba.get_num_threads()
    with engine.single_threaded():
        assert numba.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
    assert numba.get_num_threads() == before


def test_rerun_skips_saved_rows_and_force_starts_over(tmp_path, reference):
    toy = make_toy()
    _run(toy, tmp_path)
    again = _run(toy, tmp_path)
    assert (again.n_cached, again.n_new) == (28, 0)
    assert len(RunStore(tmp_path, TOY).parts()) == 1  # compacted
    forced = _run(toy, tmp_path, force=True)
    assert (forced.n_cached, forced.n_new) == (0, 28)
    pd.testing.assert_frame_equal(_table(load_runs(tmp_path, TOY)), _table(reference))


class _InterruptAfter:
    """A run_cell that behaves like the toy, then raises KeyboardInterrupt (Ctrl-C) at call k."""

    def __init__(self, k: int) -> None:
        self.k, self.calls = k, 0

    def __call__(self, params: dict, seed: int) -> dict:
        self.calls += 1
        if self.calls == self.k:
            raise KeyboardInterrupt
        return toy_run_cell(params, seed)


def test_ctrl_c_loses_nothing_and_resume_completes(tmp_path, reference):
    toy = make_toy()
    interrupted = dataclasses.replace(toy, run_cell=_InterruptAfter(12))
    with pytest.raises(KeyboardInterrupt):
        _run(interrupted, tmp_path, chunk_rows=100)  # the chunk in flight is flushed on Ctrl-C
    assert len(load_runs(tmp_path, TOY)) == 11
    resumed = _run(toy, tmp_path)
    assert (resumed.n_cached, resumed.n_new) == (11, 17)
    pd.testing.assert_frame_equal(_table(load_runs(tmp_path, TOY)), _table(reference))


def test_sigkill_mid_run_loses_at_most_the_chunk_in_flight(tmp_path, reference):
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from conftest import make_toy;"
        "from experiments.engine import run_experiment, Selection;"
        "run_experiment(make_toy(sleep=0.05), Selection(), out=sys.argv[2], progress=False,"
        " chunk_rows=3, chunk_seconds=100)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(TESTS), str(tmp_path)], cwd=REPO)
    store = RunStore(tmp_path, TOY)
    deadline = time.monotonic() + 60
    while len(store.parts()) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it was killed"
    saved = load_runs(tmp_path, TOY)
    assert 9 <= len(saved) < 28 and len(saved) % 3 == 0  # whole chunks only
    resumed = _run(make_toy(), tmp_path)
    assert (resumed.n_cached, resumed.n_new) == (len(saved), 28 - len(saved))
    final = load_runs(tmp_path, TOY)
    assert not final.duplicated(list(engine.IDENTITY)).any()
    pd.testing.assert_frame_equal(_table(final), _table(reference))


def test_chunk_writer_writes_by_size_and_by_time(tmp_path):
    def row(i: int) -> dict:
        return {"cell_key": f"k{i}", "trial": 0, "master_seed": 0, "v": i}

    store = RunStore(tmp_path, TOY)
    by_size = engine.ChunkWriter(store, chunk_rows=2, chunk_seconds=100)
    by_size.add(row(0))
    assert store.parts() == []
    by_size.add(row(1))
    assert len(store.parts()) == 1
    by_size.add(row(2))
    by_size.close()
    assert len(store.parts()) == 2 and by_size.n_written == 3
    # a row that arrives alone is written by the background thread, without waiting for more
    by_time = engine.ChunkWriter(store, chunk_rows=1000, chunk_seconds=0.05)
    by_time.add(row(3))
    deadline = time.monotonic() + 10
    while len(store.parts()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(store.parts()) == 3 and by_time.n_written == 1
    by_time.close()
    assert list(load_runs(tmp_path, TOY)["v"]) == [0, 1, 2, 3]


def test_a_second_concurrent_run_is_refused(tmp_path):
    store = RunStore(tmp_path, TOY)
    with store.lock(), pytest.raises(ValueError, match="another run is writing"):
        _run(make_toy(), tmp_path)
    assert _run(make_toy(), tmp_path).n_new == 28  # released


def test_duplicate_parts_never_duplicate_rows(tmp_path, reference):
    # e.g. a kill between writing the compacted part and deleting the old ones
    _run(make_toy(), tmp_path)
    store = RunStore(tmp_path, TOY)
    (part,) = store.parts()
    shutil.copy(part, store.table / "part-999999-copy.parquet")
    (store.table / ".tmp-deadbeef.parquet").write_bytes(b"half a file")
    assert len(load_runs(tmp_path, TOY)) == 28
    assert _run(make_toy(), tmp_path).n_new == 0
    assert len(store.parts()) == 1 and not list(store.table.glob(".tmp-*"))
    pd.testing.assert_frame_equal(_table(load_runs(tmp_path, TOY)), _table(reference))


def test_failed_trials_are_reported_not_cached(tmp_path, reference):
    report = _run(make_toy(fail_x=0.5), tmp_path)
    assert len(report.failures) == 8 and report.n_new == 20 and not report.complete
    assert {f.params["x"] for f in report.failures} == {0.5}
    assert all("toy failure at x=0.5" in f.error for f in report.failures)
    assert "trial" in report.failures[0].summary()
    saved = load_runs(tmp_path, TOY)
    assert len(saved) == 20 and (saved["x"] != 0.5).all()
    logged = json.loads(RunStore(tmp_path, TOY).failures_path.read_text())
    assert len(logged) == 8 and "RuntimeError" in logged[0]["error"]
    fixed = _run(make_toy(), tmp_path)
    assert (fixed.n_cached, fixed.n_new, len(fixed.failures)) == (20, 8, 0)
    assert not RunStore(tmp_path, TOY).failures_path.exists()
    pd.testing.assert_frame_equal(_table(load_runs(tmp_path, TOY)), _table(reference))


def _clashing_cell(params: dict, seed: int) -> dict:
    return {"x": 1.0}


def test_outputs_that_clash_with_parameters_fail_clearly(tmp_path):
    toy = make_toy()
    bad = dataclasses.replace(toy, run_cell=_clashing_cell)
    report = _run(bad, tmp_path)
    assert len(report.failures) == 28 and report.n_new == 0
    assert "clashes with a parameter" in report.failures[0].error


def test_sizes_and_seeds_never_mix(tmp_path):
    toy = make_toy()
    _run(toy, tmp_path)
    full = _run(toy, tmp_path, selection=Selection("full"))
    assert (full.n_tasks, full.n_cached, full.n_new) == (90, 28, 62)  # shared cells reused
    quick_rows, missing = selected_runs(toy, Selection(), tmp_path)
    assert len(quick_rows) == 28 and missing == 0
    assert len(selected_runs(toy, Selection("full"), tmp_path)[0]) == 90
    other = _run(toy, tmp_path, selection=Selection(seed=7))
    assert (other.n_cached, other.n_new) == (0, 28)
    seven, _ = selected_runs(toy, Selection(seed=7), tmp_path)
    assert set(seven["master_seed"]) == {7} and len(seven) == 28
    assert len(load_runs(tmp_path, TOY)) == 90 + 28
    # grid order, whatever the completion order
    assert list(quick_rows["cell_key"]) == [t.key for t in expand_tasks(toy, Selection())]


def test_plot_and_validate_read_saved_rows(tmp_path):
    toy = make_toy()
    with pytest.raises(ValueError, match="no saved results for 'toy-engine-test'"):
        engine.plot_experiment(toy, Selection(), tmp_path)
    _run(toy, tmp_path)
    assert engine.saved_selection(toy, tmp_path) == Selection()
    paths = engine.plot_experiment(toy, Selection(), tmp_path)
    assert [p.name for p in paths] == [f"{TOY}.png", f"{TOY}.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    verdicts = engine.validate_experiment(toy, Selection(), tmp_path)
    saved = json.loads(RunStore(tmp_path, TOY).validate_path.read_text())
    assert saved == verdicts and saved["findings"] == []
    assert set(saved["claims"][0]) == {"claim", "predicted", "measured", "verdict"}
    table = engine.collect_verdicts(tmp_path)
    assert list(table.columns) == ["experiment", "claim", "predicted", "measured", "verdict"]
    assert list(table["experiment"]) == [TOY]
    with pytest.raises(ValueError, match="no saved rows .* match the full grid"):
        engine.validate_experiment(toy, Selection("full", seed=3), tmp_path)


def test_findings_are_kept_apart_from_claims():
    records = [analysis.claim("c", 1, 2, False), analysis.finding("f", "3 of 4")]
    split = engine.check_claims("x", records)
    assert split == {"claims": [records[0]], "findings": [{"finding": "f", "measured": "3 of 4"}]}
    with pytest.raises(engine.ExperimentError, match="a finding"):
        engine.check_claims("x", [{"finding": "f", "measured": 1, "verdict": "pass"}])


def test_bad_claims_are_reported_as_experiment_errors():
    with pytest.raises(engine.ExperimentError, match="must have exactly the keys"):
        engine.check_claims("x", [{"claim": "c", "verdict": "pass"}])
    with pytest.raises(engine.ExperimentError, match="'pass' or 'fail'"):
        engine.check_claims("x", [{"claim": "c", "predicted": 1, "measured": 1,
                                   "verdict": "ok"}])


def test_parallel_settings_are_checked():
    for n_jobs, match in ((0, "positive integer or -1"), (-2, "positive integer or -1"),
                          (1.5, "must be an integer")):
        with pytest.raises(ValueError, match=match):
            engine.check_parallel(n_jobs, "loky")
    with pytest.raises(ValueError, match="backend must be one of loky, dask, got 'mpi'"):
        engine.check_parallel(1, "mpi")
    with pytest.raises(ValueError, match="size must be 'quick' or 'full'"):
        Selection("medium")
    with pytest.raises(ValueError, match="trials must be >= 1"):
        Selection(trials=0)


def test_shared_seed_params_pair_cells_that_differ_only_in_them():
    """Cells differing only in a shared parameter get the same seed per trial; others do not."""
    toy = dataclasses.replace(make_toy(), shared_seed_params=("x",))
    tasks = expand_tasks(toy, Selection())
    seeds = {(t.params["x"], t.params["n"], t.trial): t.seed for t in tasks}
    for (_x, n, trial), seed in seeds.items():
        assert seed == seeds[(0.5, n, trial)]  # every x of the same (n, trial) shares the seed
    assert seeds[(0.5, 1, 0)] != seeds[(0.5, 2, 0)]  # n is not shared
    assert seeds[(0.5, 1, 0)] != seeds[(0.5, 1, 1)]  # nor the trial
    plain = {(t.params["x"], t.params["n"], t.trial): t.seed for t in expand_tasks(make_toy(),
                                                                                    Selection())}
    assert len(set(plain.values())) == len(plain)  # without it every (cell, trial) differs
