"""The runner: run every missing trial of a selection and save the rows as they finish.

A rerun skips the identities already saved; ``force=True`` deletes the table first. A trial that
raises is not saved; it is reported (parameters, trial, seed, error) and written to
``results/NAME/failures.json``. Every row holds its parameters, ``experiment``, ``size``,
``cell_key``, ``trial``, ``seed``, ``master_seed``, ``wall_time_s``, ``version`` (of the
package) and ``git_commit``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sparse_teacher._validation import check_int

from ..registry import Experiment, get
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
    from sparse_teacher import __version__

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

    @property
    def complete(self) -> bool:
        return not self.failures and self.n_cached + self.n_new == self.n_tasks


def resolve(experiment: Experiment | str) -> Experiment:
    return get(experiment) if isinstance(experiment, str) else experiment


def run_experiment(experiment: Experiment | str, selection: Selection | None = None, *,
                   out: str | os.PathLike[str] = ".", n_jobs: int = 1, backend: str = "loky",
                   scheduler: str | None = None, force: bool = False, progress: bool = True,
                   chunk_rows: int = 500, chunk_seconds: float = 5.0) -> RunReport:
    """Run every missing trial of the selection and append the rows as they finish.

    Rows are written as a new part every ``chunk_rows`` rows, every ``chunk_seconds`` seconds
    (``ChunkWriter``) and on Ctrl-C. ``force`` deletes the saved table first. The table is
    locked for the run: a second run of the same experiment under ``out`` is refused.
    """
    from tqdm.auto import tqdm

    experiment = resolve(experiment)
    selection = selection or Selection()
    n_jobs = check_parallel(n_jobs, backend)
    chunk_rows = check_int("chunk_rows", chunk_rows, minimum=1)
    tasks = expand_tasks(experiment, selection)
    store = RunStore(out, experiment.name)
    with store.lock():
        if force:
            store.clear()
        store.clean_temporaries()
        store.validate_path.unlink(missing_ok=True)  # verdicts are rewritten once the run is complete
        saved = store.load()
        done = set()
        if len(saved):
            mine = saved[saved["master_seed"] == selection.seed]
            done = set(zip(mine["cell_key"], mine["trial"].astype(int), strict=True))
        todo = [t for t in tasks if (t.key, t.trial) not in done]
        commit = git_commit()
        version = package_version()
        write_json(store.manifest_path, {
            "experiment": experiment.name, "paper": experiment.paper,
            "selection": selection.to_json(), "n_tasks": len(tasks), "version": version,
            "git_commit": commit, "started_at": datetime.now(timezone.utc).isoformat(),
            "notes": experiment.notes,
        })
        meta = {"experiment": experiment.name, "size": selection.size,
                "master_seed": selection.seed, "version": version, "git_commit": commit}
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
            writer.close()
            bar.close()
        n_new = writer.n_written
        if failures:
            write_json(store.failures_path, [
                {"params": f.params, "trial": f.trial, "seed": f.seed, "error": f.error}
                for f in failures])
        else:
            store.failures_path.unlink(missing_ok=True)
            store.compact()
    return RunReport(experiment.name, len(tasks), len(tasks) - len(todo), n_new, failures,
                     time.monotonic() - start)


# ---------------------------------------------------------------------------------------------
# From saved results: rows of a selection, figure, claims
# ---------------------------------------------------------------------------------------------
