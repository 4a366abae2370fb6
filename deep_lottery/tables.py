"""IMP records to table rows and back: one experiment trial is one row whose per-level values are
short lists (``<branch>_<field>``), and ``explode_levels`` turns a runs table into one row per
(trial, branch, level) for plotting and claims."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

FIELDS = ("density", "early_stop_iteration", "test_metric_at_stop", "test_metric_end",
          "train_metric_end", "val_loss_min")


def records_to_row(records: Sequence[dict[str, Any]], fields: Sequence[str] = FIELDS,
                   histories: Sequence[str] = ()) -> dict[str, list[float]]:
    """``{"<branch>_<field>": [value at each level, in level order]}`` (level 0 is in ``imp``).

    ``histories`` names entries of each record's ``history`` (e.g. "iteration", "test_metric"):
    they are stored flat over the levels as ``<branch>_history_<name>``, with the level of each
    point in ``<branch>_history_level`` (``explode_history`` undoes it)."""
    row: dict[str, list[float]] = {}
    for branch in dict.fromkeys(r["branch"] for r in records):
        rows = sorted((r for r in records if r["branch"] == branch), key=lambda r: r["level"])
        row[f"{branch}_level"] = [int(r["level"]) for r in rows]
        for f in fields:
            row[f"{branch}_{f}"] = [float(r[f]) for r in rows]
        if histories:
            lengths = [len(r["history"][histories[0]]) for r in rows]
            row[f"{branch}_history_level"] = [int(r["level"]) for r, n in zip(rows, lengths)
                                              for _ in range(n)]
            for name in histories:
                row[f"{branch}_history_{name}"] = [float(v) for r in rows
                                                   for v in r["history"][name]]
    return row


def explode_history(runs: pd.DataFrame, branch: str, keys: Sequence[str],
                    histories: Sequence[str]) -> pd.DataFrame:
    """One row per (trial, level, evaluation) of ``branch``: ``keys``, ``level`` and ``histories``."""
    out = []
    for _, run in runs.iterrows():
        levels = run.get(f"{branch}_history_level")
        if levels is None or not hasattr(levels, "__len__"):
            continue
        for i, level in enumerate(levels):
            item = {k: run[k] for k in keys}
            item["level"] = int(level)
            for name in histories:
                item[name] = float(run[f"{branch}_history_{name}"][i])
            out.append(item)
    return pd.DataFrame(out, columns=[*keys, "level", *histories])


def explode_levels(runs: pd.DataFrame, branch: str, keys: Sequence[str],
                   fields: Sequence[str] = FIELDS) -> pd.DataFrame:
    """One row per (trial, level) of ``branch``: the ``keys`` columns plus ``level`` and ``fields``."""
    out = []
    for _, run in runs.iterrows():
        levels = run.get(f"{branch}_level")
        if levels is None or (not hasattr(levels, "__len__")):
            continue
        for i, level in enumerate(levels):
            item = {k: run[k] for k in keys}
            item["level"] = int(level)
            for f in fields:
                item[f] = float(run[f"{branch}_{f}"][i])
            out.append(item)
    return pd.DataFrame(out, columns=[*keys, "level", *fields])
