"""The experiment contract and the registry of named experiments.

An experiment declares what it measures; the engine (``experiments.engine``) decides how it runs
(parallelism, seeding, saving, resuming, progress). Data flows one way: ``run_cell`` is pure,
``plot`` and ``claims`` read only the saved runs table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

Grid = Mapping[str, Sequence[Any]]
"""Parameter name -> list of values; the cells are the Cartesian product."""


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
    """``missing_data(size)``: None when the data the size needs is on disk, else one line saying
    what is missing; ``run all`` then skips the experiment instead of failing its trials."""

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
