"""Grid expansion and canonical cell keys.

A size's cells are the union of the Cartesian products of its grids; a cell that two grids share
is run once. Overrides (``Selection.overrides``, already typed: the CLI parses ``--set``) replace
a parameter's list in every grid of the size that has it.

A cell is named by ``canonical_key(params)``: JSON with sorted keys, NumPy scalars turned into
Python ones, tuples into lists, and an integral float written as an int (``1.0`` and ``1`` give
the same key, ``True`` stays distinct from ``1``, NaN and inf are refused). Argument order never
changes a key.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lottery_common import check_int, plain_data

from ..registry import Experiment, Size, show_value
from .seeds import derive_seed

METADATA_COLUMNS: tuple[str, ...] = (
    "experiment", "size", "cell_key", "trial", "seed", "master_seed", "code_version",
    "wall_time_s", "version", "git_commit",
)
"""Columns the engine adds to every row; parameters and outputs may not use these names."""

IDENTITY: tuple[str, str, str, str] = ("cell_key", "trial", "master_seed", "code_version")
"""The columns that identify a row: no two saved rows share them. ``code_version``
(``engine.fingerprint``) names the code that computed the row, so a row computed by older code
is another row (stale), never the current one."""


def _plain(name: str, value: Any) -> Any:
    """``value`` as a plain Python scalar (or list of them); refuse anything else."""
    return plain_data(value, name, nested=False)


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
    check_cells(experiment, cells.values(), selection)
    return cells


MAX_PROBLEMS = 6
"""At most this many distinct problems are listed in the one error of ``check_cells``."""

_CONTEXT = re.compile(r"(.*) \((\w+) = ([^(),]+)\)")
"""A problem ending in the value of the parameter that bounds it: ``... to d (d = 100)``."""


def check_cells(experiment: Experiment, cells: Iterable[Mapping[str, Any]],
                selection: Selection) -> None:
    """Raise one ValueError listing every distinct rule the cells break (``Experiment.params``
    and ``Experiment.check``), in the user's terms, each once: ``--set r=200: r must be an
    integer from 1 to d (d = 100)``. A rule broken at several values of the parameter bounding
    it is one line (``--set K=30: K must be an integer from 1 to r (r = 10, 20)``); a problem
    caused by other ``--set`` keys names them and the grid's values (``--set d=5: r must be an
    integer from 1 to d (d = 5), got r = 10, 40``)."""
    # (prefix, rule text without its bound, bound name, blamed name) -> (bound values, grid values)
    found: dict[tuple[str, str, str, str], tuple[list[str], list[str]]] = {}
    for params in cells:
        for name, text in experiment.cell_problems(params):
            value = show_value(params.get(name))
            mine = [k for k in params if k in selection.overrides]
            if name in selection.overrides:
                prefix, got = f"--set {name}={value}", ""
            elif mine:
                prefix, got = "--set " + " ".join(f"{k}={show_value(params[k])}" for k in mine), value
            else:  # a declared grid that breaks its own rules (a bug of the experiment)
                prefix, got = f"the {selection.size} grid's {name}={value}", ""
            match = _CONTEXT.fullmatch(text)
            head, bound, bound_value = match.groups() if match else (text, "", "")
            bounds, grid = found.setdefault((prefix, head, bound, name), ([], []))
            for values, new in ((bounds, bound_value), (grid, got)):
                if new and new not in values:
                    values.append(new)
    if not found:
        return
    parts = [f"{prefix}: {head}" + (f" ({bound} = {', '.join(bounds)})" if bounds else "")
             + (f", got {name} = {', '.join(grid)}" if grid else "")
             for (prefix, head, bound, name), (bounds, grid) in found.items()]
    more = len(parts) - MAX_PROBLEMS
    listed = "; ".join(parts[:MAX_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
    raise ValueError(f"bad parameter values for experiment {experiment.name!r}: {listed}")


def expand_tasks(experiment: Experiment, selection: Selection) -> list[Task]:
    """Every (cell, trial) of the selection, in grid order, with its derived seed (from the cell's
    parameters less the experiment's ``shared_seed_params``)."""
    size = experiment.size(selection.size)
    trials = selection.trials if selection.trials is not None else size.trials
    trials = check_int(f"trials of {experiment.name!r}", trials, minimum=1)
    shared = set(experiment.shared_seed_params)
    tasks = []
    for key, params in expand_cells(experiment, selection).items():
        seed_key = canonical_key({k: v for k, v in params.items() if k not in shared}) \
            if shared else key
        for trial in range(trials):
            tasks.append(Task(len(tasks), params, key, trial,
                              derive_seed(selection.seed, experiment.name, seed_key, trial)))
    return tasks


# ---------------------------------------------------------------------------------------------
# Storage: a directory of atomically written Parquet parts
# ---------------------------------------------------------------------------------------------
