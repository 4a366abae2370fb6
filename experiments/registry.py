"""The experiment contract and the registry of named experiments.

An experiment declares what it measures; the engine (``experiments.engine``) decides how it runs
(parallelism, seeding, saving, resuming, progress). Data flows one way: ``run_cell`` is pure,
``plot`` and ``claims`` read only the saved runs table.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

Grid = Mapping[str, Sequence[Any]]
"""Parameter name -> list of values; the cells are the Cartesian product."""


Bound = int | float | str
"""A bound of a parameter rule: a number, or the name of another parameter of the same cell."""

KINDS = ("int", "float", "bool", "str")


@dataclass(frozen=True)
class Param:
    """The values one grid parameter may take, checked for every cell before any trial runs.

    ``kind`` is "int", "float" (any finite real number), "bool" or "str"; ``low``/``high`` bound
    the value (inclusive unless ``low_open``/``high_open``), each a number or the name of another
    parameter of the same cell (``Param("int", low=1, high="d")``: r <= d); ``choices`` lists the
    allowed values. ``problem(name, value, cell)`` says what is wrong, in the user's terms
    (``"r must be an integer from 1 to d (d = 100)"``), or None.
    """

    kind: str = "float"
    low: Bound | None = None
    high: Bound | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    def describe(self) -> str:
        """What is allowed, e.g. "an integer >= 1", "a number in [0, 1)", "one of 'a', 'b'"."""
        if self.choices:
            return "one of " + ", ".join(show_value(c, quote=True) for c in self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return "a string"
        noun = "an integer" if self.kind == "int" else "a number"
        low, high = self.low, self.high
        if low is not None and high is not None:
            if self.kind == "int" and not (self.low_open or self.high_open):
                return f"{noun} from {show_value(low)} to {show_value(high)}"
            return (f"{noun} in {'(' if self.low_open else '['}{show_value(low)}, {show_value(high)}"
                    f"{')' if self.high_open else ']'}")
        if low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {show_value(low)}"
        if high is not None:
            return f"{noun} {'<' if self.high_open else '<='} {show_value(high)}"
        return noun

    def problem(self, name: str, value: Any, cell: Mapping[str, Any]) -> str | None:
        """None when ``value`` obeys the rule in ``cell``, else ``"NAME must be ..."``."""
        named = [b for b in (self.low, self.high) if isinstance(b, str) and b in cell]
        context = ", ".join(f"{b} = {show_value(cell.get(b))}" for b in named)
        text = f"{name} must be {self.describe()}" + (f" ({context})" if context else "")
        if self.choices:
            return None if any(_same(value, c) for c in self.choices) else text
        if self.kind == "bool":
            return None if isinstance(value, bool) else text
        if self.kind == "str":
            return None if isinstance(value, str) else text
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(float(value)):
            return text
        if self.kind == "int" and not float(value).is_integer():
            return text
        low, high = (_resolve(b, cell) for b in (self.low, self.high))
        if low is not None and (value <= low if self.low_open else value < low):
            return text
        if high is not None and (value >= high if self.high_open else value > high):
            return text
        return None


def _resolve(bound: Bound | None, cell: Mapping[str, Any]) -> float | None:
    if isinstance(bound, str):
        value = cell.get(bound)
        return float(value) if isinstance(value, numbers.Real) else None
    return bound


def _same(value: Any, choice: Any) -> bool:
    return type(value) is type(choice) and value == choice or (
        isinstance(value, numbers.Real) and isinstance(choice, numbers.Real)
        and not isinstance(value, bool) and not isinstance(choice, bool) and value == choice)


def show_value(value: Any, quote: bool = False) -> str:
    """A parameter value as the user writes it: ``1`` for 1.0, ``true``, ``'test'`` (quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, str):
        return repr(value) if quote else value
    return str(value)


@dataclass(frozen=True)
class Size:
    """One size (``quick`` or ``full``) of an experiment.

    ``grids`` is a list of grids; the cells of the size are the union of their products (so an
    experiment can hold several sweeps). ``trials`` repetitions are run per cell, each with its own
    seed derived from the master seed and the cell's coordinates.
    """

    grids: Sequence[Grid]
    trials: int
    estimate: str = ""  # rough wall-time estimate on 2 cores, e.g. "~1 min"


@dataclass(frozen=True)
class Experiment:
    """A named paper figure or table.

    * ``run_cell(params, seed) -> dict``: pure; measures one trial of one cell. Values must be
      scalars (or short lists) so one trial is one row of the runs table.
    * ``plot(runs, path_stem)``: draws from the saved table; writes ``path_stem.png`` and ``.pdf``.
    * ``claims(runs)`` -> a list of claim records ``{"claim", "predicted", "measured",
      "verdict"}`` (verdict "pass"/"fail", computed from the runs) and finding records
      ``{"finding", "measured"}`` (observations without a prediction, never counted as passes).
    * ``contradicting_runs()`` -> a runs table built to contradict the theory: at least one claim
      must fail on it (a test checks this for every registered experiment).
    * ``version``: raise it when the computation of ``run_cell`` changes; saved rows of another
      version are stale.
    * ``params`` (a ``Param`` per grid parameter) and ``check`` (rules across parameters): every
      cell of a selection is checked before any trial runs, so a bad ``--set`` value is one error
      in the user's terms, never a failed trial per cell (a test checks that every grid parameter
      of every registered experiment has a rule).
    * ``plot`` and ``claims`` must cope with any table ``run_cell`` can produce, including every
      run diverged or failed and a single cell (a test runs them on such tables).
    """

    name: str
    paper: str
    description: str
    quick: Size
    full: Size
    run_cell: Callable[[dict[str, Any], int], dict[str, Any]]
    plot: Callable[[pd.DataFrame, Path], None]
    claims: Callable[[pd.DataFrame], list[dict[str, Any]]]
    contradicting_runs: Callable[[], pd.DataFrame] | None = None
    version: int = 1
    notes: str = ""  # choices made where the paper is silent (recorded with the results)
    requires: Sequence[str] = field(default_factory=tuple)  # optional imports, e.g. ("torch",)
    missing_data: Callable[[str], str | None] | None = None
    """``missing_data(size)``: None when the data the size needs is on disk and readable, else one
    line saying what is missing or corrupted; ``run all`` then skips the experiment instead of
    failing its trials."""
    params: Mapping[str, Param] = field(default_factory=dict)
    """The rule of every grid parameter (``Param``); each cell of a selection is checked before
    any trial runs (``engine.expand_cells``), so a bad ``--set`` value is one error, not a failed
    trial per cell."""
    check: Callable[[Mapping[str, Any]], Iterable[tuple[str, str]]] | None = None
    """Checks across parameters that ``params`` cannot declare: ``check(cell)`` yields
    ``(parameter to blame, "NAME must be ...")`` for each problem of the cell."""
    notice: Callable[[str], str | None] | None = None
    """``notice(size)``: one line the user must see before a run of that size (e.g. a fallback
    to other data), or None; the command line prints it."""
    shared_seed_params: tuple[str, ...] = ()
    """Grid parameters left out of the seed: cells that differ only in them get the same seed in
    each trial (common random numbers: e.g. the same random network and data order at every
    density, so that comparisons across those parameters are paired)."""

    def cell_problems(self, cell: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(parameter, what is wrong)`` for every rule the cell breaks (empty: a valid cell)."""
        problems = []
        for name, value in cell.items():
            rule = self.params.get(name)
            text = None if rule is None else rule.problem(name, value, cell)
            if text is not None:
                problems.append((name, text))
        if self.check is not None and not problems:
            problems.extend(self.check(cell))
        return problems

    def size(self, which: str) -> Size:
        if which not in ("quick", "full"):
            raise ValueError(f"size must be 'quick' or 'full', got {which!r}")
        return self.quick if which == "quick" else self.full


_REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add an experiment to the registry (names are unique)."""
    if experiment.name in _REGISTRY and _REGISTRY[experiment.name] is not experiment:
        raise ValueError(f"experiment {experiment.name!r} is registered twice")
    _REGISTRY[experiment.name] = experiment
    return experiment


def all_experiments() -> dict[str, Experiment]:
    """Every registered experiment, by name (importing the experiment modules first)."""
    from . import catalog  # noqa: F401  (imports register the experiments)

    return dict(_REGISTRY)


def get(name: str) -> Experiment:
    experiments = all_experiments()
    if name not in experiments:
        raise ValueError(f"unknown experiment {name!r}; known experiments: "
                         f"{', '.join(sorted(experiments))}")
    return experiments[name]
