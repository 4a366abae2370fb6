"""The code version of an experiment: which code computed a saved row.

``code_version(experiment) == f"{experiment.version}-{digest[:12]}"``:

* ``experiment.version`` is declared by the experiment and raised by hand when the computation of
  its ``run_cell`` changes. The experiment's own module is *not* hashed, so editing its ``plot``,
  ``claims`` or text never stales its rows. The own module is the one that defines the
  experiment, found as the module of its ``claims`` function (every experiment module defines its
  ``run_cell``, ``plot`` and ``claims`` together; a ``run_cell`` swapped for a wrapper with
  ``dataclasses.replace`` keeps the experiment's module: a changed computation is declared by
  ``version``). Without a ``claims`` module, that of ``run_cell`` is used.
* ``digest`` covers the library code it calls: every module the experiment's module imports,
  transitively, found by a static scan of all its ``import``/``from`` statements (also those
  inside functions), following only our packages (``sparse_teacher``, ``subset_sum``, ``deep_lottery``,
  ``lottery_common`` and the helper modules of ``experiments``, e.g.
  ``zhang2021.teacher_instances`` and ``mnist_imp``), never the engine, the analysis, plotting,
  registry, catalog, report and command-line modules. ``lottery_common.seeds`` (every row's seed)
  is always included. Each module counts by its syntax tree without docstrings, so docstring and
  comment edits keep the digest (``lottery_common.fingerprint``).

A saved row carries the ``code_version`` it was computed by; rows of another code version are
stale: ``run`` recomputes them, ``plot``/``validate`` never use them, ``list`` shows them.

Not covered: third-party libraries (their versions are in the ``version``/``git_commit`` columns
only) and data files; parsing is cached per process (``lottery_common.fingerprint``).
"""

from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path

from lottery_common import check_int
from lottery_common.fingerprint import module_closure, modules_digest

from ..registry import Experiment

FOLLOW: tuple[str, ...] = ("sparse_teacher", "subset_sum", "deep_lottery", "lottery_common",
                           "experiments")
"""Top-level packages whose modules are followed and hashed."""

NOT_HASHED: tuple[str, ...] = (
    "experiments.engine", "experiments.analysis", "experiments.plotting", "experiments.registry",
    "experiments.catalog", "experiments.report",
)
"""Modules (and their submodules) of ``experiments`` that never compute a row; also ``experiments``
itself and every ``experiments.cli*`` module."""

ALWAYS: tuple[str, ...] = ("lottery_common.seeds",)
"""Modules every row depends on (the engine derives each row's seed with them)."""

DIGEST_LENGTH = 12


def not_hashed(name: str) -> bool:
    """True for modules that never compute a row (engine, analysis, plotting, CLI, ...)."""
    return (name == "experiments" or name.startswith("experiments.cli")
            or any(name == p or name.startswith(p + ".") for p in NOT_HASHED))


def _defining_module(func: object) -> tuple[str, Path | None]:
    while isinstance(func, functools.partial):
        func = func.func
    func = inspect.unwrap(func)  # type: ignore[arg-type]
    name = getattr(func, "__module__", None) or ""
    try:
        path = inspect.getsourcefile(func)  # type: ignore[arg-type]
    except TypeError:
        path = None
    if path is None:
        path = getattr(sys.modules.get(name), "__file__", None)
    return name, (Path(path) if path and path.endswith(".py") else None)


def own_module(experiment: Experiment) -> tuple[str, Path | None]:
    """The module that defines the experiment (that of ``claims``, else of ``run_cell``) and its
    file, if known."""
    name, path = _defining_module(experiment.claims)
    if not name or path is None:
        name, path = _defining_module(experiment.run_cell)
    return name, path


def library_modules(experiment: Experiment) -> dict[str, Path]:
    """The modules hashed into the experiment's code version: name -> file."""
    name, path = own_module(experiment)
    return module_closure(ALWAYS, follow=FOLLOW,
                          exclude=lambda m: m == name or not_hashed(m),
                          scan=[(name, path)] if path is not None else [])


def code_version(experiment: Experiment) -> str:
    """``f"{experiment.version}-{digest12}"``: the declared version and the library digest."""
    version = check_int(f"version of {experiment.name!r}", experiment.version, minimum=0)
    return f"{version}-{modules_digest(library_modules(experiment))[:DIGEST_LENGTH]}"
