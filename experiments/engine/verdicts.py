"""From saved results only: the rows of a selection, the figure, the claims and their verdicts.

Figures and claims only ever use the rows of the selected grid, so a quick run followed by a full
run never mixes silently; a full-size cell whose parameters equal a quick-size cell reuses that
row (same seed, same pure computation). They also use only rows of the current
``code_version`` (``engine.fingerprint``): rows computed by older code are never mixed with new
ones, and a selection saved only by older code is refused with the ``run`` command that
recomputes it.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..registry import Experiment
from .fingerprint import code_version
from .keys import Selection, expand_tasks
from .runner import resolve
from .store import RunStore, UnreadablePart, one_line, write_json

VERDICTS = ("pass", "fail")


CLAIM_KEYS = ("claim", "predicted", "measured", "verdict")


def saved_selection(experiment: Experiment | str, out: str | os.PathLike[str] = ".") -> Selection:
    """The selection of the last complete ``run`` (from ``manifest.json``); quick defaults
    otherwise. An unreadable manifest raises a one-line ValueError saying what to do."""
    experiment = resolve(experiment)
    path = RunStore(out, experiment.name).manifest_path
    if not path.exists():
        return Selection()
    try:
        return Selection.from_json(json.loads(path.read_text())["selection"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is unreadable ({_reason(exc)}); choose the grid with --quick "
                         f"or --full (and --seed, --trials, --set), or rewrite it with "
                         f"`lottery-lab run {experiment.name}{_out_flag(out)}`") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"no key {exc}"
    return one_line(exc)


def _out_flag(out: str | os.PathLike[str]) -> str:
    return "" if str(out) == "." else f" --out {out}"


def selected_runs(experiment: Experiment | str, selection: Selection,
                  out: str | os.PathLike[str] = ".") -> tuple[pd.DataFrame, int]:
    """The saved current rows of the selection, in grid order, and how many of its trials are
    missing (not saved, or saved only by older code).

    Raises a ValueError when nothing is saved for it, or only rows computed by older code (the
    message gives the ``lottery-lab run`` command that recomputes them).
    """
    experiment = resolve(experiment)
    store = RunStore(out, experiment.name)
    try:
        runs = store.load()
    except UnreadablePart as exc:
        raise ValueError(f"results part {exc.path} is unreadable ({exc.reason}); run `lottery-lab "
                         f"run {experiment.name} {selection_flags(selection, out)}` to move it "
                         f"aside and recompute its rows") from None
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
    code = code_version(experiment)
    current = mine[mine["code_version"].eq(code)]
    if not len(current) and len(mine):
        raise ValueError(f"the saved rows of {experiment.name!r} for this selection were computed "
                         f"by older code (code version {_versions(mine)}, now {code}); recompute "
                         f"them with `lottery-lab run {experiment.name} "
                         f"{selection_flags(selection, out)}`")
    if not len(current):
        raise ValueError(f"no saved rows of {experiment.name!r} match the {selection.size} grid "
                         f"(seed {selection.seed}, trials {selection.trials}, overrides "
                         f"{dict(selection.overrides)}); run it first")
    return current.reset_index(drop=True), len(tasks) - len(current)


def _versions(runs: pd.DataFrame) -> str:
    names = sorted({str(v) if isinstance(v, str) else "none" for v in runs["code_version"]})
    return ", ".join(names)


def selection_flags(selection: Selection, out: str | os.PathLike[str] = ".") -> str:
    """The ``run`` options that reproduce ``selection``, e.g. ``--full --seed 3 --set r=20,50``."""
    flags = [f"--{selection.size}"]
    if selection.seed:
        flags.append(f"--seed {selection.seed}")
    if selection.trials is not None:
        flags.append(f"--trials {selection.trials}")
    if selection.overrides:
        flags.append("--set " + " ".join(f"{k}={','.join(map(str, v))}"
                                         for k, v in selection.overrides.items()))
    if str(out) != ".":
        flags.append(f"--out {out}")
    return " ".join(flags)


def stale_rows(experiment: Experiment | str, out: str | os.PathLike[str] = ".") -> int | None:
    """How many saved rows of the experiment (any selection) older code computed; None when
    nothing is saved."""
    experiment = resolve(experiment)
    store = RunStore(out, experiment.name)
    if not store.parts():
        return None
    runs = store.load()
    if not len(runs):
        return None
    return int((~runs["code_version"].eq(code_version(experiment))).sum())


class ExperimentError(RuntimeError):
    """An experiment's ``plot`` or ``claims`` raised or broke the contract (a bug, not input)."""


def plot_experiment(experiment: Experiment | str, selection: Selection,
                    out: str | os.PathLike[str] = ".") -> list[Path]:
    """Draw ``figures/NAME.png`` and ``.pdf`` from the saved rows of the selection."""
    experiment = resolve(experiment)
    runs, _ = selected_runs(experiment, selection, out)
    stem = RunStore(out, experiment.name).figure_stem
    check_writable(stem.parent)
    try:
        experiment.plot(runs, stem)
    except OSError as exc:
        if not (write_refused(exc) and _under(exc.filename, stem.parent)):
            raise ExperimentError(f"plot of {experiment.name!r} raised {type(exc).__name__}: "
                                  f"{exc}") from exc
        raise  # the figures folder refused the write: the user's folder, not a bug
    except Exception as exc:
        raise ExperimentError(f"plot of {experiment.name!r} raised {type(exc).__name__}: "
                              f"{exc}") from exc
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ExperimentError(f"plot of {experiment.name!r} did not write "
                              f"{', '.join(missing)}")
    return paths


WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST,
                          errno.EISDIR, errno.ENOSPC, errno.EDQUOT})
"""Errors of a folder that refuses a write (permissions, read-only, a file in the way, full)."""


def write_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is a folder refusing a write of the named file (``WRITE_ERRNOS``)."""
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS and exc.filename is not None


def _under(path: Any, folder: Path) -> bool:
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(folder.resolve())
    except (TypeError, ValueError, OSError):
        return False


def check_writable(folder: Path) -> None:
    """Create ``folder`` and check that a file can be written in it (``OSError`` otherwise), so
    that a refused write is reported before any work, never as an experiment's error."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
        pass


FINDING_KEYS = ("finding", "measured")


def check_claims(name: str, records: Any) -> dict[str, list[dict[str, Any]]]:
    """Split ``claims(runs)`` into ``{"claims": [...], "findings": [...]}``, checking each shape.

    A claim has exactly the keys ``CLAIM_KEYS`` and a verdict "pass" or "fail"; a finding has
    exactly ``FINDING_KEYS`` (no verdict: it is never counted as a pass).
    """
    if not isinstance(records, list):
        raise ExperimentError(f"claims of {name!r} must be a list, got {type(records).__name__}")
    out: dict[str, list[dict[str, Any]]] = {"claims": [], "findings": []}
    for c in records:
        if isinstance(c, Mapping) and set(c) == set(FINDING_KEYS):
            out["findings"].append(dict(c))
            continue
        if not isinstance(c, Mapping) or set(c) != set(CLAIM_KEYS):
            raise ExperimentError(f"each record of {name!r} must have exactly the keys "
                                  f"{', '.join(CLAIM_KEYS)} (a claim) or "
                                  f"{', '.join(FINDING_KEYS)} (a finding); got {c!r}")
        if c["verdict"] not in VERDICTS:
            raise ExperimentError(f"verdict of {name!r} must be 'pass' or 'fail', got "
                                  f"{c['verdict']!r}")
        out["claims"].append(dict(c))
    return out


def evaluate_claims(experiment: Experiment, runs: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """``experiment.claims(runs)`` checked and split into claims and findings."""
    try:
        records = experiment.claims(runs)
    except Exception as exc:
        raise ExperimentError(f"claims of {experiment.name!r} raised {type(exc).__name__}: "
                              f"{exc}") from exc
    return check_claims(experiment.name, records)


def validate_experiment(experiment: Experiment | str, selection: Selection,
                        out: str | os.PathLike[str] = ".") -> dict[str, list[dict[str, Any]]]:
    """Evaluate the claims on the saved rows; write ``results/NAME/validate.json``.

    The file holds ``{"claims": [...], "findings": [...]}``.
    """
    experiment = resolve(experiment)
    runs, _ = selected_runs(experiment, selection, out)
    verdicts = evaluate_claims(experiment, runs)
    write_json(RunStore(out, experiment.name).validate_path, verdicts)
    return verdicts


def _saved_verdicts(out: str | os.PathLike[str]) -> list[tuple[str, dict[str, Any]]]:
    pairs = []
    for path in sorted((Path(out) / "results").glob("*/validate.json")):
        name = path.parent.name
        try:
            data = json.loads(path.read_text())
            if isinstance(data, list):  # written before findings were kept apart: all claims
                data = {"claims": data, "findings": []}
            if not isinstance(data, dict) or not all(
                    isinstance(data.get(k, []), list)
                    and all(isinstance(c, Mapping) for c in data.get(k, []))
                    for k in ("claims", "findings")):
                raise ValueError("not a list of claims and findings")
        except ValueError as exc:
            raise ValueError(f"{path} is unreadable ({one_line(exc)}); rewrite it with "
                             f"`lottery-lab validate {name}{_out_flag(out)}` or delete it") from None
        pairs.append((name, data))
    return pairs


def collect_verdicts(out: str | os.PathLike[str] = ".") -> pd.DataFrame:
    """Every claim of every ``results/*/validate.json`` under ``out`` (experiment first)."""
    rows = [{"experiment": name, **{k: c.get(k) for k in CLAIM_KEYS}}
            for name, data in _saved_verdicts(out) for c in data.get("claims", [])]
    return pd.DataFrame(rows, columns=["experiment", *CLAIM_KEYS])


def collect_findings(out: str | os.PathLike[str] = ".") -> pd.DataFrame:
    """Every finding of every ``results/*/validate.json`` under ``out`` (experiment first)."""
    rows = [{"experiment": name, **{k: c.get(k) for k in FINDING_KEYS}}
            for name, data in _saved_verdicts(out) for c in data.get("findings", [])]
    return pd.DataFrame(rows, columns=["experiment", *FINDING_KEYS])
