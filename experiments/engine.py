"""The experiment engine: run a grid of cells x trials, save rows as they finish, resume.

An experiment (``experiments.registry.Experiment``) declares *what* to measure; this module
decides *how*: it expands the grid, derives every trial's seed from its coordinates, runs
``run_cell`` in parallel (joblib loky by default, Dask through joblib's dask backend), appends
finished rows to ``results/NAME/runs.parquet`` in small chunks, resumes an interrupted run, then
draws the figure and evaluates the claims from the saved table only.

Design choices (the contract the tests check):

* **Cells.** A size's cells are the union of the Cartesian products of its grids; a cell that two
  grids share is run once. ``--set key=v1,v2`` replaces that parameter's list in every grid of the
  chosen size that has it.
* **Canonical key.** A cell is named by ``canonical_key(params)``: JSON with sorted keys, NumPy
  scalars turned into Python ones, tuples into lists, and an integral float written as an int
  (``1.0`` and ``1`` give the same key, ``True`` stays distinct from ``1``, NaN and inf are
  refused). Argument order never changes a key. ``run_cell`` receives the values with the types
  the grid declares, and ``--set`` values are coerced to the declared type, so the same key
  always means the same call.
* **Seeds.** The seed of (cell, trial) is drawn from ``numpy.random.SeedSequence`` fed with the
  master seed, the trial index and the SHA-256 of ``experiment name + canonical key``; it never
  depends on scheduling, so the table is identical for every ``n_jobs`` and backend.
* **Storage.** ``runs.parquet`` is a *directory* of part files ``part-NNNNNN-TOKEN.parquet``.
  Each chunk is written to a hidden temporary file, fsync'ed and atomically renamed, so a killed
  run (Ctrl-C, ``kill -9``) leaves only complete parts and loses at most the rows of the chunk in
  flight: a chunk is written every ``chunk_rows`` rows and, from a background thread, every
  ``chunk_seconds`` seconds, so ``kill -9`` loses at most the rows finished in the last few
  seconds (plus the trials still running). Ctrl-C writes the chunk in flight before stopping.
  A finished run compacts the parts into one. ``load_runs`` reads every part and drops
  duplicate identities, so even a kill during compaction never duplicates a row.
  (``pandas.read_parquet(directory)`` also reads the table when all parts share one schema.)
* **Identity and resume.** A row is identified by ``(cell_key, trial, master_seed)``. A rerun
  skips identities already saved; ``force=True`` deletes the table first. Rows of other sizes,
  seeds or overrides stay in the table, but figures and claims only ever use the rows of the
  selected grid (``Selection``), so a quick run followed by a full run never mixes silently;
  a full-size cell whose parameters equal a quick-size cell reuses that row (same seed, same
  pure computation).
* **Failures.** A trial that raises is not saved; it is reported (parameters, trial, seed,
  error) at the end and written to ``results/NAME/failures.json``; the other trials go on.
* **Threads.** Inside every worker BLAS/OpenMP pools are limited to one thread (threadpoolctl,
  and ``OMP/OPENBLAS/MKL_NUM_THREADS=1`` in worker processes) and Numba's pool to one
  thread; ``n_jobs=1`` runs in-process without a pool, for debugging.
* **Metadata.** Every row holds its parameters (one column each), ``experiment``, ``size``,
  ``cell_key``, ``trial``, ``seed``, ``master_seed``, ``wall_time_s``, ``version`` (of the
  package) and ``git_commit`` ("unknown" outside a repository, suffixed ``-dirty`` when tracked
  files differ from the commit).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import numbers
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sparse_teacher._validation import check_int

from .registry import Experiment, Size, get

METADATA_COLUMNS: tuple[str, ...] = (
    "experiment", "size", "cell_key", "trial", "seed", "master_seed", "wall_time_s", "version",
    "git_commit",
)
"""Columns the engine adds to every row; parameters and outputs may not use these names."""

IDENTITY: tuple[str, str, str] = ("cell_key", "trial", "master_seed")
"""The columns that identify a row: no two saved rows share them."""

BACKENDS: tuple[str, ...] = ("loky", "dask")
DASK_CONNECT_TIMEOUT = "20s"
"""How long to wait for ``--scheduler ADDRESS`` before giving up with a clear error."""
THREAD_VARIABLES: tuple[str, ...] = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Set to 1 in workers. Numba's pool is limited with ``numba.set_num_threads(1)`` instead:
changing NUMBA_NUM_THREADS after Numba launched its threads makes its next compile fail, and
Dask's in-process (threaded) workers share the environment of the main process."""


# ---------------------------------------------------------------------------------------------
# Canonical keys and seeds
# ---------------------------------------------------------------------------------------------

def _plain(name: str, value: Any) -> Any:
    """``value`` as a plain Python scalar (or list of them); refuse anything else."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(name, v) for v in (value.tolist() if isinstance(value, np.ndarray)
                                           else value)]
    raise ValueError(f"{name} must be None, bool, int, float, str or a list of those, got "
                     f"{value!r} ({type(value).__name__})")


def _key_form(value: Any) -> Any:
    if isinstance(value, list):
        return [_key_form(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def canonical_key(params: Mapping[str, Any]) -> str:
    """The canonical JSON name of a cell: sorted keys, integral floats written as ints.

    ``canonical_key({"a": 1, "b": 0.5}) == canonical_key({"b": 0.5, "a": 1.0})``.
    """
    plain = {}
    for name, value in params.items():
        if not isinstance(name, str):
            raise ValueError(f"parameter names must be strings, got {name!r}")
        plain[name] = _key_form(_plain(f"parameter {name!r}", value))
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), allow_nan=False)


def derive_seed(master_seed: int, experiment: str, key: str, trial: int) -> int:
    """The seed of one (cell, trial): ``SeedSequence([master, trial, sha256(name, key)])``.

    Returns a non-negative int below 2**63 (it fits the int64 ``seed`` column).
    """
    master_seed = check_int("seed", master_seed, minimum=0)
    trial = check_int("trial", trial, minimum=0)
    digest = hashlib.sha256(f"{experiment}\x00{key}".encode()).digest()
    words = [int(w) for w in np.frombuffer(digest, dtype="<u4")]
    state = np.random.SeedSequence([master_seed, trial, *words]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


# ---------------------------------------------------------------------------------------------
# Grids, overrides, selections
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    """Which rows a run produces and a figure uses: size, master seed, trials, overrides."""

    size: str = "quick"
    seed: int = 0
    trials: int | None = None  # None: the size's own number of trials
    overrides: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size not in ("quick", "full"):
            raise ValueError(f"size must be 'quick' or 'full', got {self.size!r}")
        check_int("seed", self.seed, minimum=0)
        if self.trials is not None:
            check_int("trials", self.trials, minimum=1)
        object.__setattr__(self, "overrides",
                           {k: tuple(v) for k, v in sorted(dict(self.overrides).items())})

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "seed": self.seed, "trials": self.trials,
                "overrides": {k: list(v) for k, v in self.overrides.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Selection:
        return cls(size=data["size"], seed=data["seed"], trials=data.get("trials"),
                   overrides={k: tuple(v) for k, v in data.get("overrides", {}).items()})


@dataclass(frozen=True)
class Task:
    """One trial of one cell: what ``run_cell(params, seed)`` is called with."""

    index: int
    params: Mapping[str, Any]
    key: str
    trial: int
    seed: int


def grid_keys(size: Size) -> list[str]:
    """Every parameter name that appears in one of the size's grids (sorted)."""
    return sorted({name for grid in size.grids for name in grid})


def _declared_kind(values: Sequence[Any]) -> str:
    """'bool', 'int', 'float', 'str' or 'mixed' for the values a grid declares."""
    kinds = set()
    for v in values:
        if isinstance(v, (bool, np.bool_)):
            kinds.add("bool")
        elif isinstance(v, numbers.Integral):
            kinds.add("int")
        elif isinstance(v, numbers.Real):
            kinds.add("float")
        elif isinstance(v, str):
            kinds.add("str")
        else:
            kinds.add("mixed")
    if kinds == {"int", "float"}:
        return "float"
    return kinds.pop() if len(kinds) == 1 else "mixed"


def parse_value(text: str) -> bool | int | float | str:
    """Parse one ``--set`` value: bool (true/false), int, finite float, else the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    if not math.isfinite(value):
        raise ValueError(f"--set values must be finite, got {text!r}")
    return value


def _coerce(name: str, text: str, kind: str) -> Any:
    if kind == "str":
        return text
    value = parse_value(text)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"--set {name} takes booleans (true or false), got {text!r}")
        return value
    if kind in ("int", "float") and (isinstance(value, (bool, str))):
        raise ValueError(f"--set {name} takes {'integers' if kind == 'int' else 'numbers'}, "
                         f"got {text!r}")
    if kind == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"--set {name} takes integers, got {text!r}")
            value = int(value)
        return value
    if kind == "float":
        return float(value)
    return value


def split_set_items(items: Sequence[str]) -> dict[str, list[str]]:
    """``["r=20,50", "beta=0.5"] -> {"r": ["20", "50"], "beta": ["0.5"]}`` (later items win)."""
    raw: dict[str, list[str]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        parts = [v.strip() for v in values.split(",")]
        if not sep or not name or not values.strip() or any(p == "" for p in parts):
            raise ValueError(f"bad --set item {item!r}; expected key=value or key=v1,v2,...")
        raw[name] = parts
    return raw


def coerce_overrides(experiment: Experiment, size: str, raw: Mapping[str, Sequence[str]],
                     *, strict: bool = True) -> dict[str, tuple[Any, ...]]:
    """Turn raw ``--set`` strings into values of the declared type of each parameter.

    A parameter whose grid values are all ints takes integers (``50`` or ``50.0``), one whose
    values are floats takes numbers (stored as floats), booleans take true/false, strings take
    the text as is; mixed declarations take whatever ``parse_value`` reads. Unknown keys raise
    a ValueError listing the allowed keys (or are ignored when ``strict`` is false).
    """
    grids = experiment.size(size).grids
    allowed = grid_keys(experiment.size(size))
    overrides: dict[str, tuple[Any, ...]] = {}
    for name, texts in raw.items():
        if name not in allowed:
            if strict:
                raise ValueError(f"unknown --set key {name!r} for experiment "
                                 f"{experiment.name!r}; allowed keys: {', '.join(allowed)}")
            continue
        declared = [v for grid in grids if name in grid for v in grid[name]]
        kind = _declared_kind(declared)
        overrides[name] = tuple(_coerce(name, t, kind) for t in texts)
    return overrides


def expand_cells(experiment: Experiment, selection: Selection) -> dict[str, dict[str, Any]]:
    """Every cell of the selection in grid order: canonical key -> parameters."""
    size = experiment.size(selection.size)
    allowed = grid_keys(size)
    unknown = sorted(set(selection.overrides) - set(allowed))
    if unknown:
        raise ValueError(f"unknown --set key {unknown[0]!r} for experiment {experiment.name!r}; "
                         f"allowed keys: {', '.join(allowed)}")
    cells: dict[str, dict[str, Any]] = {}
    for grid in size.grids:
        names = list(grid)
        lists = []
        for name in names:
            if name in METADATA_COLUMNS:
                raise ValueError(f"parameter name {name!r} of {experiment.name!r} is reserved; "
                                 f"reserved names: {', '.join(METADATA_COLUMNS)}")
            values = list(selection.overrides.get(name, grid[name]))
            if not values:
                raise ValueError(f"parameter {name!r} of {experiment.name!r} has no values")
            lists.append([_plain(f"parameter {name!r}", v) for v in values])
        for combo in itertools.product(*lists):
            params = dict(zip(names, combo, strict=True))
            cells.setdefault(canonical_key(params), params)
    return cells


def expand_tasks(experiment: Experiment, selection: Selection) -> list[Task]:
    """Every (cell, trial) of the selection, in grid order, with its derived seed."""
    size = experiment.size(selection.size)
    trials = selection.trials if selection.trials is not None else size.trials
    trials = check_int(f"trials of {experiment.name!r}", trials, minimum=1)
    tasks = []
    for key, params in expand_cells(experiment, selection).items():
        for trial in range(trials):
            tasks.append(Task(len(tasks), params, key, trial,
                              derive_seed(selection.seed, experiment.name, key, trial)))
    return tasks


# ---------------------------------------------------------------------------------------------
# Storage: a directory of atomically written Parquet parts
# ---------------------------------------------------------------------------------------------

class RunStore:
    """``ROOT/results/NAME/``: ``runs.parquet/`` parts, ``manifest.json``, ``validate.json``."""

    def __init__(self, root: str | os.PathLike[str], name: str) -> None:
        self.root = Path(root)
        self.name = name
        self.dir = self.root / "results" / name
        self.table = self.dir / "runs.parquet"

    @property
    def validate_path(self) -> Path:
        return self.dir / "validate.json"

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    @property
    def failures_path(self) -> Path:
        return self.dir / "failures.json"

    @property
    def figure_stem(self) -> Path:
        return self.root / "figures" / self.name

    def parts(self) -> list[Path]:
        if not self.table.is_dir():
            return []
        return sorted(self.table.glob("part-*.parquet"))

    def _next_sequence(self) -> int:
        seqs = [int(p.name.split("-")[1]) for p in self.parts()]
        return max(seqs, default=0) + 1

    def append(self, rows: Sequence[Mapping[str, Any]]) -> Path | None:
        """Write ``rows`` as one new part (temporary file, fsync, atomic rename)."""
        if not rows:
            return None
        self.table.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:8]
        final = self.table / f"part-{self._next_sequence():06d}-{token}.parquet"
        tmp = self.table / f".tmp-{token}.parquet"
        frame = pd.DataFrame(list(rows))
        frame.to_parquet(tmp, index=False)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        return final

    def load(self) -> pd.DataFrame:
        """Every saved row (each identity once, the earliest written kept)."""
        frames = [pd.read_parquet(p) for p in self.parts()]
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=list(METADATA_COLUMNS))
        runs = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        runs = runs.drop_duplicates(subset=list(IDENTITY), keep="first").reset_index(drop=True)
        first = [c for c in METADATA_COLUMNS if c in runs.columns]
        return runs[first + [c for c in runs.columns if c not in METADATA_COLUMNS]]

    def compact(self) -> None:
        """Rewrite all parts as one (safe to interrupt: ``load`` drops duplicate identities)."""
        old = self.parts()
        if len(old) <= 1:
            return
        self.append(self.load().to_dict("records"))
        for part in old:
            part.unlink()

    def clean_temporaries(self) -> None:
        if self.table.is_dir():
            for tmp in self.table.glob(".tmp-*.parquet"):
                tmp.unlink()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on ``results/NAME/.lock`` (released even on ``kill -9``).

        Two runs writing the same table at once raise a ValueError instead of racing.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            yield
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ValueError(f"another run is writing {self.table}; wait for it to finish "
                                 f"(lock file {self.dir / '.lock'})") from None
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def clear(self) -> None:
        """Delete the saved rows, verdicts, manifest and failures of this experiment."""
        if self.table.exists():
            shutil.rmtree(self.table)
        for path in (self.validate_path, self.manifest_path, self.failures_path):
            path.unlink(missing_ok=True)


class ChunkWriter:
    """Buffer finished rows and append them to a ``RunStore`` in chunks.

    A chunk is written when ``chunk_rows`` rows are buffered, and a background thread writes
    whatever is buffered every ``chunk_seconds`` seconds, so a killed run loses at most the rows
    finished in the last ``chunk_seconds`` (and the trials still running), however slowly rows
    arrive. ``close`` writes the rest (it runs on Ctrl-C too).
    """

    def __init__(self, store: RunStore, *, chunk_rows: int, chunk_seconds: float) -> None:
        self.store = store
        self.chunk_rows = check_int("chunk_rows", chunk_rows, minimum=1)
        self.chunk_seconds = float(chunk_seconds)
        if not self.chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds}")
        self.n_written = 0
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._tick, name="chunk-writer", daemon=True)
        self._thread.start()

    def _flush(self) -> None:  # with the lock held
        if self._rows:
            self.store.append(self._rows)
            self.n_written += len(self._rows)
            self._rows = []

    def _tick(self) -> None:
        while not self._stop.wait(self.chunk_seconds):
            with self._lock:
                try:
                    self._flush()
                except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                    self._error = exc
                    return

    def add(self, row: dict[str, Any]) -> None:
        if self._error is not None:
            raise self._error
        with self._lock:
            self._rows.append(row)
            if len(self._rows) >= self.chunk_rows:
                self._flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            self._flush()
        if self._error is not None:
            raise self._error


def load_runs(root: str | os.PathLike[str], name: str) -> pd.DataFrame:
    """Every saved row of experiment ``name`` under ``root/results/``."""
    return RunStore(root, name).load()


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Limit BLAS/OpenMP (threadpoolctl) and Numba thread pools to one thread, then restore."""
    from threadpoolctl import threadpool_limits

    numba = sys.modules.get("numba")
    previous = None
    if numba is not None:
        previous = numba.get_num_threads()
        numba.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        if numba is not None and previous is not None:
            numba.set_num_threads(previous)


def _outputs(values: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise ValueError(f"run_cell must return a dict of scalars, got {type(values).__name__}")
    out = {}
    for name, value in values.items():
        if not isinstance(name, str):
            raise ValueError(f"run_cell output names must be strings, got {name!r}")
        if name in METADATA_COLUMNS or name in params:
            raise ValueError(f"run_cell output {name!r} clashes with a parameter or a reserved "
                             f"column ({', '.join(METADATA_COLUMNS)})")
        if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
            out[name] = float(value)  # NaN / inf are legitimate measurements
        else:
            out[name] = _plain(f"run_cell output {name!r}", value)
    return out


_WORKER_LIMITED = False


def limit_worker_threads() -> None:
    """In a worker process: one BLAS/OpenMP/Numba thread from now on (once per process).

    Sets ``OMP/OPENBLAS/MKL_NUM_THREADS=1`` (read by libraries loaded later) and limits
    the pools already loaded with threadpoolctl; scanning the loaded libraries costs ~3 ms, so
    it is done on the first task of each worker only.
    """
    global _WORKER_LIMITED
    for variable in THREAD_VARIABLES:
        os.environ[variable] = "1"
    if not _WORKER_LIMITED:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
        _WORKER_LIMITED = True


def run_task(run_cell: Any, params: Mapping[str, Any], seed: int, index: int,
             in_worker: bool) -> tuple[int, dict[str, Any] | None, float, str | None]:
    """Run one trial; return ``(index, outputs, wall_time_s, error)``.

    In a worker (``in_worker``) thread pools are first limited to one thread
    (``limit_worker_threads`` and Numba's pool); in-process, ``execute`` holds
    ``single_threaded`` around the whole loop. Exceptions are caught and returned as text
    (with the traceback), so one failing trial never stops the others and is never saved.
    """
    if in_worker:
        limit_worker_threads()
        numba = sys.modules.get("numba")
        if numba is not None and numba.get_num_threads() != 1:
            numba.set_num_threads(1)
    start = time.perf_counter()
    try:
        values = _outputs(run_cell(dict(params), seed), params)
    except Exception as exc:  # noqa: BLE001 - reported to the user, never cached
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return index, None, 0.0, f"{type(exc).__name__}: {exc}\n{detail}"
    return index, values, time.perf_counter() - start, None


def _dask_client(scheduler: str | None, n_jobs: int) -> tuple[Any, Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise ValueError("backend 'dask' needs dask[distributed]: pip install "
                         "'dask[distributed]'") from exc
    if scheduler:
        try:
            return Client(scheduler, timeout=DASK_CONNECT_TIMEOUT), None
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
    workers = (os.cpu_count() or 1) if n_jobs == -1 else n_jobs
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    return Client(cluster), cluster


def execute(tasks: Sequence[Task], run_cell: Any, *, n_jobs: int = 1, backend: str = "loky",
            scheduler: str | None = None) -> Iterator[tuple[int, dict | None, float, str | None]]:
    """Yield ``run_task`` results as they finish (in-process when ``n_jobs == 1`` on loky)."""
    if not tasks:
        return
    from joblib import Parallel, delayed, parallel_config

    calls = (delayed(run_task)(run_cell, t.params, t.seed, t.index, True) for t in tasks)
    if backend == "loky":
        if n_jobs == 1:
            with single_threaded():
                for t in tasks:
                    yield run_task(run_cell, t.params, t.seed, t.index, False)
            return
        # loky replaces a worker whose memory grew by more than 300 MB since it started (the
        # PyTorch experiments do) and reports it with this warning; finished results are kept
        # and the pending ones go to the new worker, so the message is only noise here.
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given",
                                category=UserWarning)
        with parallel_config(backend="loky", inner_max_num_threads=1):
            yield from Parallel(n_jobs=n_jobs, return_as="generator_unordered")(calls)
        return
    client, cluster = _dask_client(scheduler, n_jobs)
    try:
        with parallel_config(backend="dask", client=client):
            yield from Parallel(n_jobs=-1, return_as="generator_unordered")(calls)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------

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


def check_parallel(n_jobs: int, backend: str) -> int:
    n_jobs = check_int("n_jobs", n_jobs)
    if n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be a positive integer or -1 (all cores), got {n_jobs}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return n_jobs


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


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
        _write_json(store.manifest_path, {
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
            _write_json(store.failures_path, [
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

def saved_selection(experiment: Experiment | str, out: str | os.PathLike[str] = ".") -> Selection:
    """The selection of the last ``run`` (from ``manifest.json``); quick defaults otherwise."""
    experiment = resolve(experiment)
    path = RunStore(out, experiment.name).manifest_path
    if not path.exists():
        return Selection()
    return Selection.from_json(json.loads(path.read_text())["selection"])


def selected_runs(experiment: Experiment | str, selection: Selection,
                  out: str | os.PathLike[str] = ".") -> tuple[pd.DataFrame, int]:
    """The saved rows of the selection, in grid order, and how many of its trials are missing.

    Raises a ValueError when nothing is saved for it.
    """
    experiment = resolve(experiment)
    store = RunStore(out, experiment.name)
    runs = store.load()
    if not len(runs):
        raise ValueError(f"no saved results for {experiment.name!r} under {store.dir}; run "
                         f"`lottery-lab run {experiment.name}` first")
    tasks = expand_tasks(experiment, selection)
    order = {(t.key, t.trial): t.index for t in tasks}
    mine = runs[runs["master_seed"] == selection.seed]
    pairs = zip(mine["cell_key"], mine["trial"], strict=True)
    position = pd.Series([order.get((k, int(t)), -1) for k, t in pairs], index=mine.index,
                         dtype=int)
    mine = mine.assign(_order=position)
    mine = mine[mine["_order"] >= 0].sort_values("_order").drop(columns="_order")
    if not len(mine):
        raise ValueError(f"no saved rows of {experiment.name!r} match the {selection.size} grid "
                         f"(seed {selection.seed}, trials {selection.trials}, overrides "
                         f"{dict(selection.overrides)}); run it first")
    return mine.reset_index(drop=True), len(tasks) - len(mine)


class ExperimentError(RuntimeError):
    """An experiment's ``plot`` or ``claims`` raised or broke the contract (a bug, not input)."""


def plot_experiment(experiment: Experiment | str, selection: Selection,
                    out: str | os.PathLike[str] = ".") -> list[Path]:
    """Draw ``figures/NAME.png`` and ``.pdf`` from the saved rows of the selection."""
    experiment = resolve(experiment)
    runs, _ = selected_runs(experiment, selection, out)
    stem = RunStore(out, experiment.name).figure_stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    try:
        experiment.plot(runs, stem)
    except Exception as exc:
        raise ExperimentError(f"plot of {experiment.name!r} raised {type(exc).__name__}: "
                              f"{exc}") from exc
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ExperimentError(f"plot of {experiment.name!r} did not write "
                              f"{', '.join(missing)}")
    return paths


VERDICTS = ("pass", "fail")
CLAIM_KEYS = ("claim", "predicted", "measured", "verdict")


def check_claims(name: str, claims: Any) -> list[dict[str, Any]]:
    """Check the shape of ``claims(runs)``: a list of dicts with the four keys."""
    if not isinstance(claims, list):
        raise ExperimentError(f"claims of {name!r} must be a list, got {type(claims).__name__}")
    for c in claims:
        if not isinstance(c, Mapping) or set(c) != set(CLAIM_KEYS):
            raise ExperimentError(f"each claim of {name!r} must have exactly the keys "
                               f"{', '.join(CLAIM_KEYS)}; got {c!r}")
        if c["verdict"] not in VERDICTS:
            raise ExperimentError(f"verdict of {name!r} must be 'pass' or 'fail', got "
                               f"{c['verdict']!r}")
    return [dict(c) for c in claims]


def validate_experiment(experiment: Experiment | str, selection: Selection,
                        out: str | os.PathLike[str] = ".") -> list[dict[str, Any]]:
    """Evaluate the claims on the saved rows and write ``results/NAME/validate.json``."""
    experiment = resolve(experiment)
    runs, _ = selected_runs(experiment, selection, out)
    try:
        claims = experiment.claims(runs)
    except Exception as exc:
        raise ExperimentError(f"claims of {experiment.name!r} raised {type(exc).__name__}: "
                              f"{exc}") from exc
    claims = check_claims(experiment.name, claims)
    _write_json(RunStore(out, experiment.name).validate_path, claims)
    return claims


def collect_verdicts(out: str | os.PathLike[str] = ".") -> pd.DataFrame:
    """Every ``results/*/validate.json`` under ``out`` as one table (experiment first)."""
    rows = []
    for path in sorted((Path(out) / "results").glob("*/validate.json")):
        for c in json.loads(path.read_text()):
            rows.append({"experiment": path.parent.name, **{k: c.get(k) for k in CLAIM_KEYS}})
    return pd.DataFrame(rows, columns=["experiment", *CLAIM_KEYS])
