"""The experiment engine: run a grid of cells x trials, save rows as they finish, resume, judge.

An experiment (``experiments.registry.Experiment``) declares *what* to measure; the engine decides
*how*, in parts with one job each:

* ``keys``     -- grid expansion, canonical cell keys, selections and tasks;
* ``seeds``    -- the seed of one (cell, trial) from its coordinates;
* ``fingerprint`` -- the code version of an experiment: its declared ``version`` and a digest of
  the library modules it calls; part of every row's identity, so results cannot go stale;
* ``store``    -- ``results/NAME/``: atomically written Parquet parts, manifest, verdicts, lock;
* ``parallel`` -- in-process, joblib loky or Dask execution with one thread per worker;
* ``runner``   -- run the missing trials of a selection and save rows as they finish;
* ``verdicts`` -- from saved rows only: the figure, the claims and findings, ``validate.json``.

A row is identified by (cell_key, trial, master_seed, code_version). ``run`` reuses rows of the
current code version and recomputes the others (then drops the stale rows it replaced);
``plot``/``validate`` read current rows only; ``lottery-lab list`` shows which experiments have
stale rows (``stale_rows``).

Parsing ``--set`` strings is the command line's job (``experiments.cli_overrides``): the engine
receives typed values and checks them once, in ``expand_cells``.
"""

from .fingerprint import code_version
from .keys import (
    IDENTITY,
    METADATA_COLUMNS,
    Selection,
    Task,
    canonical_key,
    expand_cells,
    expand_tasks,
    grid_keys,
)
from .parallel import BACKENDS, THREAD_VARIABLES, check_parallel, execute, single_threaded
from .runner import Failure, RunReport, git_commit, package_version, resolve, run_experiment
from .seeds import derive_seed
from .store import ChunkWriter, RunStore, load_runs, write_json
from .verdicts import (
    CLAIM_KEYS,
    FINDING_KEYS,
    VERDICTS,
    ExperimentError,
    check_claims,
    collect_findings,
    collect_verdicts,
    evaluate_claims,
    plot_experiment,
    saved_selection,
    selected_runs,
    selection_flags,
    stale_rows,
    validate_experiment,
)

__all__ = [
    "BACKENDS", "CLAIM_KEYS", "FINDING_KEYS", "IDENTITY", "METADATA_COLUMNS", "THREAD_VARIABLES",
    "VERDICTS", "ChunkWriter", "ExperimentError", "Failure", "RunReport", "RunStore", "Selection",
    "Task", "canonical_key", "check_claims", "check_parallel", "code_version", "collect_findings",
    "collect_verdicts", "derive_seed", "evaluate_claims", "execute", "expand_cells", "expand_tasks",
    "git_commit", "grid_keys", "load_runs", "package_version", "plot_experiment", "resolve",
    "run_experiment", "saved_selection", "selected_runs", "selection_flags", "single_threaded",
    "stale_rows", "validate_experiment", "write_json",
]
