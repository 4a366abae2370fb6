"""The runner: run every missing trial of a selection and save the rows as they finish.

A rerun skips the identities already saved by the current code; ``force=True`` recomputes every
trial and replaces the whole table once it has them all. A trial that raises is not saved; it is
reported (parameters, trial, seed, error) and written to ``results/NAME/failures.json``. Every row
holds its parameters, ``experiment``, ``size``, ``cell_key``, ``trial``, ``seed``,
``master_seed``, ``code_version``, ``wall_time_s``, ``version`` (of the package) and
``git_commit``.

Results cannot go stale: a row's identity is (cell_key, trial, master_seed, code_version), where
``code_version`` is the experiment's declared ``version`` plus a digest of the library code it
calls (``engine.fingerprint``). A saved row of the selection with another code version (or none:
a table written before the column existed) is stale: it is recomputed like a missing one, and
once the run is complete the compaction drops the stale rows it superseded (rows of other
selections are kept, stale or not). ``plot`` and ``validate`` use current rows only.

A run that fails leaves the last good state in place: ``manifest.json`` (the selection ``plot``
and ``validate`` default to) is rewritten only once every trial of the run is saved (the first
run writes it at its start), and ``validate.json`` is deleted only then, when it has gone out of
date. A part
that cannot be read back is moved into ``results/NAME/quarantine/`` with a warning, and its rows
are recomputed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from lottery_common import check_int

from ..registry import Experiment, get
from .fingerprint import code_version
from .keys import Selection, canonical_key, expand_tasks
from .parallel import check_parallel, execute
from .store import ChunkWriter, RunStore, write_json


def git_commit() -> str:
    """The commit of the source tree (``-dirty`` if tracked files changed), or "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=here,
                               capture_output=True, timeout=30).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def package_version() -> str:
    from lottery_common import __version__

    return __version__


@dataclass
class Failure:
    """A trial that raised: its parameters, trial, seed and error text."""

    params: dict[str, Any]
    trial: int
    seed: int
    error: str

    def summary(self) -> str:
        first = self.error.splitlines()[0] if self.error else ""
        return f"{canonical_key(self.params)} trial {self.trial} (seed {self.seed}): {first}"


@dataclass
class RunReport:
    """What a run did: trials in the grid, already saved, newly saved, failed."""

    experiment: str
    n_tasks: int
    n_cached: int
    n_new: int
    failures: list[Failure]
    wall_time_s: float
    n_stale: int = 0  # trials of the selection saved only by older code (recomputed)
    code_version: str = ""
    quarantined: list[tuple[Path, Path]] = field(default_factory=list)  # (unreadable, moved to)

    @property
    def complete(self) -> bool:
        return not self.failures and self.n_cached + self.n_new == self.n_tasks


def resolve(experiment: Experiment | str) -> Experiment:
    return get(experiment) if isinstance(experiment, str) else experiment


def run_experiment(experiment: Experiment | str, selection: Selection | None = None, *,
                   out: str | os.PathLike[str] = ".", n_jobs: int = 1, backend: str = "loky",
                   scheduler: str | None = None, force: bool = False, progress: bool = True,
                   chunk_rows: int = 500, chunk_seconds: float = 5.0) -> RunReport:
    """Run every missing or stale trial of the selection and append the rows as they finish.

    Rows saved by the current ``code_version(experiment)`` are reused; rows of the selection
    saved by other code are recomputed, and dropped by the compaction once the run is complete.
    Rows are written as a new part every ``chunk_rows`` rows, every ``chunk_seconds`` seconds
    (``ChunkWriter``) and on Ctrl-C. ``force`` recomputes every trial and, once none failed,
    deletes every row saved before. The table is locked for the run: a second run of the same
    experiment under ``out`` is refused. An unreadable part is moved aside (``RunStore.load``)
    and listed in ``RunReport.quarantined``; ``manifest.json`` and ``validate.json`` change
    only once the run has saved every trial (see the module docstring).
    """
    from tqdm.auto import tqdm

    experiment = resolve(experiment)
    selection = selection or Selection()
    n_jobs = check_parallel(n_jobs, backend)
    chunk_rows = check_int("chunk_rows", chunk_rows, minimum=1)
    tasks = expand_tasks(experiment, selection)
    code = code_version(experiment)
    store = RunStore(out, experiment.name)
    quarantined: list[tuple[Path, Path]] = []

    def move_aside(old: Path, new: Path, reason: str) -> None:
        quarantined.append((old, new))
        print(f"lottery-lab: warning: results part {old} is unreadable ({reason}); moved it to "
              f"{new}, its rows are recomputed", file=sys.stderr)

    with store.lock():
        store.clean_temporaries()
        # --force replaces these once the run has gone through every trial: until then (an
        # unreachable scheduler, Ctrl-C) the saved rows, verdicts and manifest stay as they are
        replaced = store.parts() if force else []
        if force:
            current: set[tuple[str, int]] = set()
            stale: set[tuple[str, int]] = set()
        else:
            current, stale = saved_trials(store.load(quarantine=move_aside), selection.seed, code)
        todo = [t for t in tasks if (t.key, t.trial) not in current]
        n_stale = sum((t.key, t.trial) in stale for t in todo)
        commit = git_commit()
        version = package_version()
        manifest = {
            "experiment": experiment.name, "paper": experiment.paper,
            "selection": selection.to_json(), "n_tasks": len(tasks), "version": version,
            "code_version": code, "git_commit": commit,
            "started_at": datetime.now(timezone.utc).isoformat(), "notes": experiment.notes,
            "notice": experiment.notice(selection.size) if experiment.notice else None,
        }
        if not store.manifest_path.exists():  # the first run: its selection until one completes
            write_json(store.manifest_path, manifest)
        meta = {"experiment": experiment.name, "size": selection.size,
                "master_seed": selection.seed, "code_version": code, "version": version,
                "git_commit": commit}
        by_index = {t.index: t for t in todo}
        failures: list[Failure] = []
        start = time.monotonic()
        writer = ChunkWriter(store, chunk_rows=chunk_rows, chunk_seconds=chunk_seconds)
        bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc=experiment.name,
                   unit="trial", file=sys.stderr, disable=not progress, dynamic_ncols=True)
        try:
            for index, values, wall, error in execute(todo, experiment.run_cell, n_jobs=n_jobs,
                                                      backend=backend, scheduler=scheduler):
                task = by_index[index]
                if error is not None:
                    failures.append(Failure(dict(task.params), task.trial, task.seed, error))
                    bar.set_postfix(failed=len(failures))
                else:
                    writer.add({**meta, "cell_key": task.key, "trial": task.trial, "seed": task.seed,
                                "wall_time_s": wall, **task.params, **values})
                bar.update(1)
        finally:
            try:
                writer.close()
            finally:
                bar.close()
        n_new = writer.n_written
        if failures:
            write_json(store.failures_path, [
                {"params": f.params, "trial": f.trial, "seed": f.seed, "error": f.error}
                for f in failures])
        else:  # only now: a run that fails leaves the manifest and verdicts of the last good one
            store.failures_path.unlink(missing_ok=True)
            if force or n_new or _changed(store.manifest_path, manifest):
                # out of date: rewritten by `validate` (which `lottery-lab run` calls next)
                store.validate_path.unlink(missing_ok=True)
            write_json(store.manifest_path, manifest)
            for part in replaced:
                part.unlink(missing_ok=True)
            keys = {(t.key, t.trial) for t in tasks}
            store.compact(drop=lambda runs: superseded(runs, selection.seed, code, keys))
    return RunReport(experiment.name, len(tasks), len(tasks) - len(todo), n_new, failures,
                     time.monotonic() - start, n_stale, code, quarantined)


def _changed(path: Path, manifest: dict[str, Any]) -> bool:
    """Whether the saved manifest at ``path`` names another selection or code (or is absent or
    unreadable) than ``manifest``."""
    try:
        saved = json.loads(path.read_text())
        return any(saved.get(k) != manifest[k] for k in ("selection", "code_version"))
    except (OSError, ValueError, AttributeError):
        return True


def _is_current(runs: pd.DataFrame, code: str) -> pd.Series:
    return runs["code_version"].eq(code)


def saved_trials(saved: pd.DataFrame, seed: int, code: str
                 ) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    """The (cell_key, trial) pairs saved under master ``seed`` by code ``code``, and by other
    code only (stale)."""
    if not len(saved):
        return set(), set()
    mine = saved[saved["master_seed"] == seed]
    is_current = _is_current(mine, code)
    pairs = list(zip(mine["cell_key"], mine["trial"].astype(int), strict=True))
    current = {p for p, ok in zip(pairs, is_current, strict=True) if ok}
    return current, {p for p in pairs if p not in current}


def superseded(runs: pd.DataFrame, seed: int, code: str, keys: set[tuple[str, int]]) -> pd.Series:
    """Rows of other code whose (cell_key, trial) under ``seed`` is in ``keys`` and saved by
    ``code``: the stale rows a complete run has replaced."""
    current, _ = saved_trials(runs, seed, code)
    replaced = keys & current
    pairs = zip(runs["cell_key"], runs["trial"].astype(int), strict=True)
    hit = pd.Series([p in replaced for p in pairs], index=runs.index, dtype=bool)
    return hit & (runs["master_seed"] == seed) & ~_is_current(runs, code)


# ---------------------------------------------------------------------------------------------
# From saved results: rows of a selection, figure, claims
# ---------------------------------------------------------------------------------------------
