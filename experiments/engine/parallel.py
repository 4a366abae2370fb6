"""Parallel execution of trials: in-process, joblib loky, or Dask through joblib.

Inside every worker BLAS/OpenMP pools are limited to one thread (threadpoolctl, and
``OMP/OPENBLAS/MKL_NUM_THREADS=1`` in worker processes) and Numba's pool to one thread;
``n_jobs=1`` runs in-process without a pool, for debugging. A trial that raises is returned as
text, never raised, so one failing trial never stops the others.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from lottery_common import check_int

from .keys import METADATA_COLUMNS, Task, _plain

BACKENDS: tuple[str, ...] = ("loky", "dask")


DASK_CONNECT_TIMEOUT = "20s"
"""How long to wait for ``--scheduler ADDRESS`` before giving up with a clear error."""


THREAD_VARIABLES: tuple[str, ...] = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Set to 1 in workers. Numba's pool is limited with ``numba.set_num_threads(1)`` instead:
changing NUMBA_NUM_THREADS after Numba launched its threads makes its next compile fail, and
Dask's in-process (threaded) workers share the environment of the main process."""


def check_parallel(n_jobs: int, backend: str) -> int:
    n_jobs = check_int("n_jobs", n_jobs)
    if n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be a positive integer or -1 (all cores), got {n_jobs}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return n_jobs


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
