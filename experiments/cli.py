"""The ``lottery-lab`` command line: list, run, plot, validate and report experiments.

``lottery-lab run NAME|all [--quick|--full]`` runs the grid (resuming saved rows), draws
``figures/NAME.png``/``.pdf``, writes ``results/NAME/validate.json`` and prints the verdicts.
``plot`` and ``validate`` work from the saved rows only; ``report`` prints every verdict.
User errors (unknown names, keys or values, an unreadable saved file, a folder that refuses a
write) print one line ``lottery-lab: error: ...`` saying what is allowed or what to do and exit
with status 2; failed trials exit with status 1; a verdict of "fail" is a scientific result,
not an error, and exits with 0.
"""

from __future__ import annotations

import argparse
import errno
import functools
import importlib.util
import os
import shutil
import sys
import textwrap
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from . import cli_overrides, engine
from .engine.verdicts import write_refused
from .registry import Experiment, all_experiments
from .report import FORMATS, render

PROG = "lottery-lab"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``lottery-lab: error: MESSAGE`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _n_jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer or -1 (all cores), got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _add_selection(parser: argparse.ArgumentParser, *, saved_default: bool) -> None:
    default = "the last run's" if saved_default else None
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick",
                      help="the quick grid (" + (f"default: {default} size)" if default
                                                   else "the default)"))
    size.add_argument("--full", dest="size", action="store_const", const="full",
                      help="the paper's full grid")
    parser.add_argument("--seed", type=_non_negative, default=None, metavar="S",
                        help=f"master seed (default: {default or 0})")
    parser.add_argument("--trials", type=_positive, default=None, metavar="T",
                        help="trials per cell (default: the size's own)")
    parser.add_argument("--set", dest="sets", action="extend", nargs="+", default=[],
                        metavar="KEY=VALUE",
                        help="override a grid parameter list, e.g. --set r=20,50 beta=0.5 "
                             "(with `run all`, in the experiments that have the key)")
    parser.add_argument("--out", default=".", metavar="DIR",
                        help="root of results/ and figures/ (default: current directory)")


def build_parser() -> argparse.ArgumentParser:
    from lottery_common import __version__

    parser = _Parser(prog=PROG, description="Numerical checks of lottery-ticket theory: run "
                     "the experiments, draw the figures, check the claims.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    listing = commands.add_parser("list", help="every experiment: paper figure, grid sizes, cost, "
                                  "whether its saved results are current")
    listing.add_argument("--out", default=".", metavar="DIR",
                         help="root of results/ (default: current directory)")

    run = commands.add_parser("run", help="run an experiment (or all), then plot and validate")
    run.add_argument("name", metavar="NAME|all")
    _add_selection(run, saved_default=False)
    run.add_argument("--n-jobs", type=_n_jobs, default=1, metavar="N",
                     help="parallel workers (-1: all cores; default 1, in-process; with "
                          "--backend dask and no --scheduler, the LocalCluster's workers)")
    run.add_argument("--backend", choices=engine.BACKENDS, default="loky",
                     help="joblib backend (default loky; dask runs on --scheduler or a "
                          "LocalCluster)")
    run.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="Dask scheduler address, e.g. tcp://host:8786 (with --backend dask)")
    run.add_argument("--force", action="store_true",
                     help="recompute every trial; the saved rows are replaced once none failed")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    for name, text in (("plot", "draw figures/NAME.png and .pdf from saved rows"),
                       ("validate", "evaluate the claims on saved rows, write validate.json")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("name", metavar="NAME")
        _add_selection(sub, saved_default=True)

    report = commands.add_parser("report", help="every claim with its verdict, findings apart")
    report.add_argument("--out", default=".", metavar="DIR",
                        help="root of results/ (default: current directory)")
    report.add_argument("--format", dest="fmt", choices=FORMATS, default="text",
                        help="text (blocks that fit the terminal; default), or markdown, csv, "
                             "json for pasting into papers")
    report.add_argument("--width", type=_positive, default=None, metavar="COLUMNS",
                        help="text width (default: the terminal's, at most 120)")
    report.add_argument("--whole", action="store_true",
                        help="text: print long measurements whole instead of cutting them")
    return parser


def _missing_requirements(experiment: Experiment, size: str = "quick") -> list[str]:
    """Optional modules that are not installed, then the data the size needs but lacks."""
    missing = [f"{m} (not installed)" for m in experiment.requires
               if importlib.util.find_spec(m) is None]
    if not missing and experiment.missing_data is not None:
        absent = experiment.missing_data(size)
        if absent:
            missing.append(absent)
    return missing


def _experiment(name: str, *, allow_all: bool = False) -> Experiment:
    experiments = all_experiments()
    if name not in experiments:
        known = (["all"] if allow_all else []) + sorted(experiments)
        raise ValueError(f"unknown experiment {name!r}; choose from: "
                         f"{', '.join(known) if known else '(none registered)'}")
    return experiments[name]


def _selection(experiment: Experiment, args: argparse.Namespace, *, strict: bool,
               saved_default: bool) -> engine.Selection:
    if saved_default and args.size is None and args.seed is None and args.trials is None \
            and not args.sets:
        return engine.saved_selection(experiment, args.out)
    size = args.size or "quick"
    raw = cli_overrides.split_set_items(args.sets)
    overrides = cli_overrides.coerce_overrides(experiment, size, raw, strict=strict)
    return engine.Selection(size=size, seed=args.seed or 0, trials=args.trials,
                            overrides=overrides)


def terminal_width() -> int:
    """The terminal's width in columns, at most 120 (100 when unknown)."""
    return min(shutil.get_terminal_size((100, 24)).columns, 120)


def _print_claims(name: str, verdicts: dict[str, list[dict[str, Any]]]) -> None:
    claims = pd.DataFrame([{"experiment": name, **c} for c in verdicts["claims"]],
                          columns=["experiment", *engine.CLAIM_KEYS])
    findings = pd.DataFrame([{"experiment": name, **f} for f in verdicts["findings"]],
                            columns=["experiment", *engine.FINDING_KEYS])
    print(render(claims, findings, width=terminal_width()))


selection_flags = engine.selection_flags
"""The ``run`` options that reproduce a selection, e.g. ``--full --seed 3 --set r=20,50``."""


def _warn_missing(name: str, selection: engine.Selection, out: str) -> None:
    _, missing = engine.selected_runs(name, selection, out)
    if missing:
        print(f"{PROG}: warning: {missing} trials of the {selection.size} grid of {name!r} are "
              f"not saved; `{PROG} run {name} {selection_flags(selection, out)}` completes them",
              file=sys.stderr)


def _plot_and_validate(experiment: Experiment, selection: engine.Selection, out: str) -> int:
    try:
        paths = engine.plot_experiment(experiment, selection, out)
        claims = engine.validate_experiment(experiment, selection, out)
    except engine.ExperimentError:  # a bug in the experiment's plot or claims: show it, go on
        print(f"{PROG}: plot/claims of {experiment.name!r} raised:", file=sys.stderr)
        traceback.print_exc()
        return 1
    print(f"{experiment.name}: figure {paths[0]} and {paths[1].name}")
    _print_claims(experiment.name, claims)
    return 0


def _run_one(experiment: Experiment, selection: engine.Selection,
             args: argparse.Namespace) -> int:
    engine.expand_cells(experiment, selection)  # bad values: one error before anything is said
    notice = experiment.notice(selection.size) if experiment.notice is not None else None
    if notice:  # e.g. a fallback to other data: said before the run, not found out after it
        print(f"{experiment.name}: note: {notice}")
    report = engine.run_experiment(experiment, selection, out=args.out, n_jobs=args.n_jobs,
                                   backend=args.backend, scheduler=args.scheduler,
                                   force=args.force, progress=not args.no_progress)
    print(f"{experiment.name}: {report.n_tasks} trials ({selection.size}, seed "
          f"{selection.seed}): {report.n_cached} already saved, {report.n_new} new"
          f"{f' ({report.n_stale} recomputed: saved by older code)' if report.n_stale else ''}, "
          f"{len(report.failures)} failed, {report.wall_time_s:.1f} s")
    if report.failures:
        store = engine.RunStore(args.out, experiment.name)
        print(f"{PROG}: {len(report.failures)} trials of {experiment.name!r} failed (not "
              f"saved; details in {store.failures_path}; run again to retry them):",
              file=sys.stderr)
        for failure in report.failures:
            print(f"  {failure.summary()}", file=sys.stderr)
        return 1
    return _plot_and_validate(experiment, selection, args.out)


def _cmd_run(args: argparse.Namespace) -> int:
    if args.scheduler and args.backend != "dask":
        raise ValueError("--scheduler needs --backend dask")
    if args.name != "all":
        experiment = _experiment(args.name, allow_all=True)
        missing = _missing_requirements(experiment, args.size or "quick")
        if missing:
            raise ValueError(f"experiment {experiment.name!r} requires {'; '.join(missing)}")
        return _run_one(experiment, _selection(experiment, args, strict=True,
                                               saved_default=False), args)
    experiments = all_experiments()
    if not experiments:
        raise ValueError("no experiments are registered (see experiments/catalog.py)")
    size = args.size or "quick"
    raw = cli_overrides.split_set_items(args.sets)
    known = sorted({k for e in experiments.values() for k in engine.grid_keys(e.size(size))})
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"unknown --set key {unknown[0]!r} for every experiment; allowed keys: "
                         f"{', '.join(known)}")
    selections = {name: _selection(e, args, strict=False, saved_default=False)
                  for name, e in sorted(experiments.items())}
    for name, experiment in sorted(experiments.items()):  # bad values: one error, nothing run
        engine.expand_cells(experiment, selections[name])
    status = 0
    for name, experiment in sorted(experiments.items()):
        missing = _missing_requirements(experiment, size)
        if missing:
            print(f"{name}: skipped, requires {'; '.join(missing)}")
            continue
        status = max(status, _run_one(experiment, selections[name], args))
    print()
    if len(engine.collect_verdicts(args.out)):
        _cmd_report(args)
    return status


def _cmd_list(args: argparse.Namespace) -> int:
    """One block per experiment, wrapped to the terminal: name and saved-results status, the
    paper and figure, both sizes (cells x trials = rows, estimated time), missing requirements."""
    experiments = sorted(all_experiments().items())
    if not experiments:
        print("no experiments registered")
        return 0
    width = terminal_width()
    wrap = functools.partial(textwrap.wrap, width=width, initial_indent="    ",
                             subsequent_indent="      ", break_on_hyphens=False)
    blocks = []
    for name, e in experiments:
        stale = engine.stale_rows(e, args.out)
        saved = "-" if stale is None else f"stale ({stale} rows)" if stale else "current"
        lines = [f"{name}  saved results: {saved}", *wrap(e.paper)]
        for which in ("quick", "full"):
            size = e.size(which)
            cells = len(engine.expand_cells(e, engine.Selection(which)))
            estimate = f", {size.estimate}" if size.estimate else ""
            lines += wrap(f"{which}: {cells} x {size.trials} = {cells * size.trials} rows"
                          f"{estimate}")
        missing = _missing_requirements(e)
        if missing:
            lines += wrap(f"missing: {', '.join(missing)}")
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    print()
    print("\n".join(textwrap.wrap(
        f"{len(experiments)} experiments; saved results: current, stale (computed by other code: "
        f"`{PROG} run NAME` recomputes them) or - (none) under {args.out}", width=width)))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    experiment = _experiment(args.name)
    selection = _selection(experiment, args, strict=True, saved_default=True)
    _warn_missing(experiment.name, selection, args.out)
    paths = engine.plot_experiment(experiment, selection, args.out)
    print(f"{experiment.name}: figure {paths[0]} and {paths[1].name}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    experiment = _experiment(args.name)
    selection = _selection(experiment, args, strict=True, saved_default=True)
    _warn_missing(experiment.name, selection, args.out)
    claims = engine.validate_experiment(experiment, selection, args.out)
    _print_claims(experiment.name, claims)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    claims = engine.collect_verdicts(args.out)
    if not len(claims):
        raise ValueError(f"no results/*/validate.json under {args.out!r}; run `{PROG} run all "
                         f"--quick` first")
    findings = engine.collect_findings(args.out)
    fmt = getattr(args, "fmt", "text")
    width = getattr(args, "width", None) or terminal_width()
    print(render(claims, findings, fmt, width=width,
                 max_lines=None if getattr(args, "whole", False) else 4))
    return 0


def _write_error(exc: OSError) -> str:
    """``cannot write to FOLDER (REASON); ...`` for a refused write (``write_refused``):
    FOLDER is the deepest existing folder (or file in the way) on the path of the write."""
    path = Path(os.fsdecode(exc.filename)).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    reason = os.strerror(exc.errno).lower()
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and not path.is_dir():
        reason = "not a directory"  # a file where a folder should be
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "choose another --out or make it writable"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free some space or choose another --out"
    else:
        advice = "choose another --out"
    return f"cannot write to {path} ({reason}); {advice}"


COMMANDS = {"list": _cmd_list, "run": _cmd_run, "plot": _cmd_plot, "validate": _cmd_validate,
            "report": _cmd_report}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lottery-lab``; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line usage error
        return int(exc.code or 0)
    try:
        return COMMANDS[args.command](args)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the user's folder refused a write: one line, not a traceback
        if not write_refused(exc):
            raise
        print(f"{PROG}: error: {_write_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished rows are saved, run the same command again to "
              f"resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
