"""Saved results survive damage and failures: unreadable parts, failed runs, folders that refuse
writes, and figure files that are byte-reproducible for the same saved results."""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import TOY, make_toy

from experiments import cli, engine, registry
from experiments.engine import RunStore, Selection, load_runs, run_experiment


def _call(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error_line(err: str) -> str:
    """The one ``lottery-lab: error:`` line of ``err`` (warnings may come before it)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.strip().splitlines() if not line.startswith("lottery-lab: "
                                                                            "warning: ")]
    assert len(errors) == 1 and errors[0].startswith("lottery-lab: error: "), err
    return errors[0]


def _table(runs: pd.DataFrame) -> pd.DataFrame:
    return (runs.drop(columns="wall_time_s").sort_values(["cell_key", "trial", "master_seed"])
            .reset_index(drop=True))


def _run(out: Path, capsys, *extra: str) -> tuple[int, str, str]:
    return _call(capsys, "run", TOY, "--out", str(out), "--no-progress", *extra)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("reference")
    assert run_experiment(make_toy(), Selection(), out=out, progress=False).complete
    return load_runs(out, TOY)


def _snapshot(out: Path) -> dict[str, bytes]:
    store = RunStore(out, TOY)
    return {p.name: p.read_bytes() for p in (store.manifest_path, store.validate_path)}


# --- unreadable parts --------------------------------------------------------------------------

def _data_end(raw: bytes) -> int:
    """Where a Parquet file's data pages end (its footer starts)."""
    return len(raw) - 8 - int.from_bytes(raw[-8:-4], "little")


CORRUPTIONS = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "zeroed": lambda raw: bytes(len(raw)),
    "garbled": lambda raw: (raw[: _data_end(raw) // 2] + b"\xa5" * 64
                            + raw[_data_end(raw) // 2 + 64:]),
}


def _two_parts(out: Path) -> tuple[Path, Path]:
    """Rewrite the saved table of the toy as two parts of 14 rows each."""
    store = RunStore(out, TOY)
    runs = store.load()
    shutil.rmtree(store.table)
    first = store.append(runs.iloc[:14].to_dict("records"))
    second = store.append(runs.iloc[14:].to_dict("records"))
    assert first is not None and second is not None
    return first, second


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_run_moves_an_unreadable_part_aside_and_recomputes_its_rows(capsys, toy, tmp_path,
                                                                    reference, kind):
    code, _, err = _run(tmp_path, capsys)
    assert code == 0, err
    _, bad = _two_parts(tmp_path)
    damaged = CORRUPTIONS[kind](bad.read_bytes())
    bad.write_bytes(damaged)

    code, out, err = _run(tmp_path, capsys)
    assert code == 0, err
    assert "28 trials (quick, seed 0): 14 already saved, 14 new, 0 failed" in out
    moved = RunStore(tmp_path, TOY).quarantine_dir / bad.name
    (warning,) = err.strip().splitlines()
    assert warning.startswith(f"lottery-lab: warning: results part {bad} is unreadable (")
    assert warning.endswith(f"moved it to {moved}, its rows are recomputed")
    assert moved.read_bytes() == damaged and not bad.exists()  # kept for inspection
    pd.testing.assert_frame_equal(_table(load_runs(tmp_path, TOY)), _table(reference))
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_plot_and_validate_name_an_unreadable_part_in_one_line(capsys, toy, tmp_path, kind):
    code, _, err = _run(tmp_path, capsys)
    assert code == 0, err
    (part,) = RunStore(tmp_path, TOY).parts()
    damaged = CORRUPTIONS[kind](part.read_bytes())
    part.write_bytes(damaged)
    figure = tmp_path / "figures" / f"{TOY}.png"
    before = figure.stat().st_mtime_ns
    for command in ("plot", "validate"):
        code, _, err = _call(capsys, command, TOY, "--out", str(tmp_path))
        assert code == 2
        line = _error_line(err)
        assert line.startswith(f"lottery-lab: error: results part {part} is unreadable (")
        assert line.endswith(f"; run `lottery-lab run {TOY} --quick --out {tmp_path}` to move it "
                             "aside and recompute its rows")
    assert part.read_bytes() == damaged  # read-only commands move nothing
    assert figure.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="is unreadable"):
        load_runs(tmp_path, TOY)


def test_report_and_plot_name_an_unreadable_verdicts_or_manifest_file(capsys, toy, tmp_path):
    code, _, err = _run(tmp_path, capsys)
    assert code == 0, err
    store = RunStore(tmp_path, TOY)
    for damaged in (b"", b"\x00" * 40, b'{"claims": [1, 2]}', b"[not json"):
        store.validate_path.write_bytes(damaged)
        code, _, err = _call(capsys, "report", "--out", str(tmp_path))
        assert code == 2
        line = _error_line(err)
        assert line.startswith(f"lottery-lab: error: {store.validate_path} is unreadable (")
        assert line.endswith(f"rewrite it with `lottery-lab validate {TOY} --out {tmp_path}` or "
                             "delete it")
    store.manifest_path.write_bytes(b"\x00" * 100)
    code, _, err = _call(capsys, "plot", TOY, "--out", str(tmp_path))
    assert code == 2
    line = _error_line(err)
    assert line.startswith(f"lottery-lab: error: {store.manifest_path} is unreadable (")
    assert "choose the grid with --quick or --full" in line
    code, _, err = _call(capsys, "plot", TOY, "--out", str(tmp_path), "--quick")
    assert code == 0, err  # an explicit grid does without it


# --- a failed run keeps the last good verdicts and manifest -----------------------------------

def test_an_unreachable_scheduler_keeps_rows_verdicts_and_manifest(capsys, toy, tmp_path,
                                                                   monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(engine.parallel, "DASK_CONNECT_TIMEOUT", "1s")
    code, _, err = _run(tmp_path, capsys)
    assert code == 0, err
    good, rows = _snapshot(tmp_path), load_runs(tmp_path, TOY)
    parts = RunStore(tmp_path, TOY).parts()
    dask = ("--backend", "dask", "--scheduler", "tcp://127.0.0.1:1")
    for extra in (("--seed", "1"), ("--force",)):
        code, _, err = _run(tmp_path, capsys, *dask, *extra)
        assert code == 2
        assert "cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'" in _error_line(err)
        assert _snapshot(tmp_path) == good
        assert RunStore(tmp_path, TOY).parts() == parts
        pd.testing.assert_frame_equal(load_runs(tmp_path, TOY), rows)
    # a corrupted part is moved aside, but the run that then fails changes no verdict
    (part,) = parts
    part.write_bytes(b"\x00" * 64)
    code, _, err = _run(tmp_path, capsys, *dask)
    assert code == 2 and "cannot reach the Dask scheduler" in _error_line(err)
    assert f"warning: results part {part} is unreadable" in err
    assert _snapshot(tmp_path) == good
    code, out, _ = _call(capsys, "report", "--out", str(tmp_path))
    assert code == 0 and "success rate grows like x" in out


def test_failed_trials_keep_the_last_complete_runs_verdicts_and_manifest(capsys, toy, tmp_path,
                                                                          monkeypatch):
    code, _, err = _run(tmp_path, capsys)
    assert code == 0, err
    good = _snapshot(tmp_path)
    monkeypatch.setitem(registry._REGISTRY, TOY, make_toy(fail_x=0.9))
    code, out, _ = _run(tmp_path, capsys, "--seed", "1")
    assert code == 1 and "20 new, 8 failed" in out
    assert _snapshot(tmp_path) == good
    assert engine.saved_selection(TOY, tmp_path) == Selection()  # plot/validate: the last good


def test_force_replaces_the_table_only_once_the_run_is_complete(tmp_path, reference):
    run_experiment(make_toy(), Selection(), out=tmp_path, progress=False)
    store = RunStore(tmp_path, TOY)
    store.validate_path.write_text("{}")
    good = _snapshot(tmp_path)
    failing = run_experiment(make_toy(fail_x=0.9), Selection(), out=tmp_path, progress=False,
                             force=True)
    assert len(failing.failures) == 8 and _snapshot(tmp_path) == good
    pd.testing.assert_frame_equal(_table(load_runs(tmp_path, TOY)), _table(reference))
    forced = run_experiment(make_toy(), Selection(), out=tmp_path, progress=False, force=True)
    assert (forced.n_cached, forced.n_new) == (0, 28) and len(store.parts()) == 1
    assert not store.validate_path.exists()  # out of date: `run` validates again next
    pd.testing.assert_frame_equal(_table(load_runs(tmp_path, TOY)), _table(reference))


def test_a_complete_rerun_that_changes_nothing_keeps_the_verdicts(tmp_path):
    run_experiment(make_toy(), Selection(), out=tmp_path, progress=False)
    engine.validate_experiment(make_toy(), Selection(), tmp_path)
    store = RunStore(tmp_path, TOY)
    verdicts = store.validate_path.read_bytes()
    run_experiment(make_toy(), Selection(), out=tmp_path, progress=False)
    assert store.validate_path.read_bytes() == verdicts
    run_experiment(make_toy(), Selection(seed=2), out=tmp_path, progress=False)
    assert not store.validate_path.exists()  # another selection: its verdicts are not these
    assert engine.saved_selection(make_toy(), tmp_path) == Selection(seed=2)


# --- folders that refuse writes ----------------------------------------------------------------

def _refuse_writes(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make every write under ``folder`` fail as in a read-only folder (for root, whom
    ``chmod`` does not stop): creating folders and opening files for writing raise
    PermissionError(EACCES) naming the path."""
    folder = folder.resolve()

    def refused(path) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(folder)
        except TypeError:  # a file descriptor
            return False

    def deny(path) -> PermissionError:
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    real_mkdir, real_os_open, real_open = os.mkdir, os.open, builtins.open

    def mkdir(path, *args, **kwargs):
        if refused(path):
            raise deny(path)
        return real_mkdir(path, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and refused(path):
            raise deny(path)
        return real_os_open(path, flags, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and refused(file):
            raise deny(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)


def _chmod_stops_writes(folder: Path) -> bool:
    """Whether a folder without write permission refuses writes here (not for root)."""
    probe = folder / ".probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        (probe / "file").write_text("")
    except PermissionError:
        return True
    finally:
        probe.chmod(0o755)
        shutil.rmtree(probe)
    return False


def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if _chmod_stops_writes(folder.parent):  # a real read-only folder
        folder.chmod(0o555)
    else:  # root: the same refusal, simulated
        _refuse_writes(monkeypatch, folder)


@pytest.fixture
def restore_modes(tmp_path):
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


def test_run_into_a_read_only_folder_is_one_line(capsys, toy, tmp_path, monkeypatch,
                                                 restore_modes):
    folder = tmp_path / "ro"
    _read_only(monkeypatch, folder)
    code, _, err = _run(folder, capsys)
    assert code == 2
    assert _error_line(err) == (f"lottery-lab: error: cannot write to {folder} (permission "
                                "denied); choose another --out or make it writable")


def test_plot_into_read_only_figures_is_one_line(capsys, toy, tmp_path, monkeypatch,
                                                 restore_modes):
    code, _, err = _run(tmp_path, capsys)
    assert code == 0, err
    figures = tmp_path / "figures"
    shutil.rmtree(figures)
    _read_only(monkeypatch, figures)
    for command in ("plot", "run"):  # `run` has its rows: it fails at the figure
        code, _, err = _call(capsys, command, TOY, "--out", str(tmp_path), "--no-progress"
                             if command == "run" else "--quick")
        assert code == 2
        assert _error_line(err) == (f"lottery-lab: error: cannot write to {figures} "
                                    "(permission denied); choose another --out or make it "
                                    "writable")
    assert not list(figures.iterdir())


def test_a_file_in_the_way_is_one_line(capsys, toy, tmp_path):
    """Real (not simulated) refusals, for root too: ``--out`` below a file, figures/ a file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = _run(blocker / "out", capsys)
    assert code == 2
    assert _error_line(err) == (f"lottery-lab: error: cannot write to {blocker} (not a "
                                "directory); choose another --out")
    (tmp_path / "figures").write_text("not a folder")
    code, out, err = _run(tmp_path, capsys)
    assert code == 2 and "28 new, 0 failed" in out  # the rows are saved
    assert _error_line(err) == (f"lottery-lab: error: cannot write to {tmp_path / 'figures'} "
                                "(not a directory); choose another --out")
    code, _, err = _call(capsys, "validate", TOY, "--out", str(blocker))
    assert code == 2 and "no saved results" in _error_line(err)


# --- byte-reproducible figures -----------------------------------------------------------------

def _draw(path_stem: Path, scale: float = 1.0) -> tuple[Path, Path]:
    from experiments.plotting import figure, save_figure, success_heatmap

    runs = pd.DataFrame({"x": [1, 1, 2, 2, 3, 3] * 2, "y": [1, 2] * 6,
                         "ok": [0, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1]})
    fig, (left, right) = figure(1, 2)
    success_heatmap(left, runs, x="x", y="y", success="ok", boundary=False)
    right.plot([0, 1, 2], [0, scale, 4], "o-", label="measured")
    right.set(title="Fig. 1 — ε, α ≤ 1", xlabel="x", ylabel="y")
    right.legend()
    return save_figure(fig, path_stem)


def test_save_figure_is_byte_reproducible(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000000000")
    first = _draw(tmp_path / "a" / "fig")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    second = _draw(tmp_path / "b" / "fig")
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    pdf = first[1].read_bytes()
    assert b"CreationDate" not in pdf and b"ModDate" not in pdf and b"Matplotlib v" not in pdf
    assert b"Software" not in first[0].read_bytes()
    # drawing it again into the same place leaves the files untouched
    bytes_before = [p.read_bytes() for p in first]
    for p in first:
        os.utime(p, ns=(1, 1))
    again = _draw(tmp_path / "a" / "fig")
    assert [p.read_bytes() for p in again] == bytes_before
    assert [p.stat().st_mtime_ns for p in again] == [1, 1]
    # another figure replaces them (atomically: no temporary file is left)
    _draw(tmp_path / "a" / "fig", scale=3.0)
    assert [p.read_bytes() for p in first] != bytes_before
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["fig.pdf", "fig.png"]


def test_replotting_the_same_saved_results_rewrites_nothing(capsys, toy, tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000000000")
    code, _, err = _run(one, capsys)
    assert code == 0, err
    shutil.copytree(one / "results", two / "results")
    figures = [one / "figures" / f"{TOY}.{ext}" for ext in ("png", "pdf")]
    saved = [p.read_bytes() for p in figures]
    for p in figures:
        os.utime(p, ns=(1, 1))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    for argv in (("plot", TOY, "--out", str(one)), ("run", TOY, "--out", str(one),
                                                   "--no-progress")):
        code, _, err = _call(capsys, *argv)
        assert code == 0, err
        assert [p.read_bytes() for p in figures] == saved
        assert [p.stat().st_mtime_ns for p in figures] == [1, 1]  # not rewritten
    code, _, err = _call(capsys, "plot", TOY, "--out", str(two))
    assert code == 0, err
    assert [(two / "figures" / p.name).read_bytes() for p in figures] == saved
