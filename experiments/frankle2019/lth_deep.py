"""Winning tickets in deeper nets: VGG-19 and Resnet-18 on CIFAR-10 (Frankle & Carbin, ICLR 2019,
Sec. 4, Figs. 7-8, and the appendix on global vs layer-wise pruning and warmup).

IMP with SGD (momentum 0.9, weight decay 1e-4, step schedule), pruning 20% of the remaining conv
weights per level and resetting to the initialization, beside the random-reinitialization control
(the ticket's mask, fresh weights). A cell is one (model, learning rate, warmup, pruning scope):

* ``scope`` = "global" ranks the conv weights of all layers together (the paper's choice for these
  nets); the output layer, and for the ResNet the two 1x1 shortcut convs, are never pruned (F&C
  leave out their 5120 / 640 + 2560 weights; ``IGNORE``).
* ``scope`` = "layerwise" prunes every conv by the same fraction and leaves the output layer dense
  (``PruneConfig.ignore`` only applies to global pruning, so the ResNet shortcuts are pruned too).

F&C's "Resnet-18" is the 20-layer CIFAR net (conv 16, 3x[16, 16], 3x[32, 32], 3x[64, 64], avg-pool,
fc 10; 270K conv weights): our ``resnet20`` at width 16, as the tests check. Its rate with warmup is
0.03 (F&C found no warmup that makes 0.1 work for it); VGG-19's is 0.1 (``WARMUP_LR``).

Claims (accuracy at the end of training, the right panels of Figs. 7-8; thresholds declared before
any run as the constants below):

* at lr 0.1 without warmup, tickets are no better than reinitialized copies: the mean paired gap
  (ticket - reinit, same trial and level, pruned levels) is at most ``TICKET_MARGIN``, per model;
* with warmup, tickets beat their reinitialized copies by more than ``TICKET_MARGIN``, per model;
* global pruning beats layer-wise at the sparsest level both reach (every model and setting run
  with both scopes; mean over trials above ``GLOBAL_MARGIN``).

Findings: the ticket gap at lr 0.01, accuracy/density tables, the smallest winning ticket (ticket
at least as accurate as the dense net of its setting), dense accuracy, early stopping, throughput.

Sizes (details in ``notes``): full = CIFAR-10 at the paper's settings, 20 levels, 5 trials, on a
GPU (not measured). Quick = CPU, the MNIST test split re-split 2,000 test / 500 validation / 1,000
training, 28x28x1 inputs; VGG-19 at width 1/16 (150 iterations per level) and ResNet-20 at width 4
(100), batch 64, 3 levels at 30%, warmup scaled with the run, 1 trial, and only the five cells the
claims need (no lr 0.01 cell): a pipeline check, far too small to expect the paper's effects.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter, ScalarFormatter

from ..analysis import claim, finding, throughput_finding
from ..plotting import figure, legend, save_figure
from ..registry import Experiment, Param, Size, register
from .imp_runs import IMP_PARAMS, check_sizes, missing_data, run_imp_cell

MODELS = ("vgg19", "resnet20")
SCOPES = ("global", "layerwise")
TITLES = {"vgg19": "VGG-19 (F&C Fig. 7)",
          "resnet20": "ResNet-20 = F&C's 'Resnet-18' (Fig. 8)"}
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
INIT = "glorot"  # F&C: Gaussian Glorot for every network
MILESTONES = {"vgg19": (0.5, 0.75), "resnet20": (2 / 3, 5 / 6)}
"""Learning-rate drops (x0.1) as fractions of the iterations: VGG-19 at epochs 80 and 120 of 160,
Resnet-18 at 20k and 25k of 30k."""
IGNORE = {"vgg19": ("fc.weight",),
          "resnet20": ("fc.weight", "blocks.3.shortcut.0.weight", "blocks.6.shortcut.0.weight")}
"""Tensors global pruning leaves dense (F&C: the output layer; the ResNet's 1x1 shortcuts)."""

HIGH_LR = 0.1
LOW_LR = 0.01
WARMUP_LR = {"vgg19": 0.1, "resnet20": 0.03}
"""The rate F&C train with warmup (VGG-19 k = 10k; Resnet-18 k = 20k at 0.03: 0.1 never worked)."""

TICKET_MARGIN = 0.01
"""1 percentage point: a ticket 'beats' reinit when the mean paired accuracy gap over the pruned
levels exceeds it, and is 'no better' when the gap is at most it. Declared before any run
(about 1.5x the standard error of one level's gap on a 2,000-image test set at 95% accuracy)."""
GLOBAL_MARGIN = 0.0
"""Global beats layer-wise when its mean accuracy at the sparsest common level is above layer-wise
by more than this (declared before any run)."""

METRIC = "test_metric_end"
"""Accuracy at the end of training (Figs. 7-8 plot accuracy at fixed iterations, not early stop)."""
KEYS = ("model", "width", "lr", "warmup", "scope", "trial")
TICKS = (100, 80, 60, 40, 30, 20, 10, 5, 2, 1)

PARAMS: dict[str, Param] = {
    **IMP_PARAMS,
    "model": Param("str", choices=MODELS),
    "width": Param("float", low=0.0, low_open=True),
    "batch_size": Param("int", low=1),
    "lr": Param("float", low=0.0, low_open=True),
    "warmup": Param("int", low=0, high="iterations"),
    "scope": Param("str", choices=SCOPES),
    "reinit": Param("bool"),
    "fraction": Param("float", low=0.0, high=1.0, low_open=True, high_open=True),
    "augment": Param("bool"),
}
"""Rules of every grid parameter: ``width`` multiplies VGG's channels or is the ResNet's base width
(an integer, 16 in the paper); ``warmup`` is the number of linear-warmup iterations (0: none);
``fraction`` is pruned per level; ``reinit`` adds the random-reinitialization control."""


def check(cell: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Data sizes (``check_sizes``), and an integer base width for the ResNet."""
    yield from check_sizes(cell)
    width = cell.get("width")
    if cell.get("model") == "resnet20" and isinstance(width, (int, float)) \
            and not float(width).is_integer():
        yield ("width", f"width must be an integer for resnet20 (its base width), got {width}")


def _width(model: str, width: float) -> float | int:
    return int(width) if model == "resnet20" else float(width)


def train_config(params: Mapping[str, Any]) -> Any:
    """The cell's ``TrainConfig`` (SGD, momentum 0.9, wd 1e-4, drops at ``MILESTONES``)."""
    from deep_lottery.training import TrainConfig

    iterations = int(params["iterations"])
    return TrainConfig(iterations=iterations, batch_size=int(params["batch_size"]),
                       optimizer="sgd", lr=float(params["lr"]), momentum=MOMENTUM,
                       weight_decay=WEIGHT_DECAY,
                       milestones=tuple(round(f * iterations) for f in MILESTONES[params["model"]]),
                       warmup_iterations=int(params["warmup"]),
                       eval_every=int(params["eval_every"]), augment=bool(params["augment"]))


def prune_config(params: Mapping[str, Any]) -> Any:
    """Global (``IGNORE`` left dense) or layer-wise (output layer dense) magnitude pruning."""
    from deep_lottery.pruning import PruneConfig

    fraction = float(params["fraction"])
    if params["scope"] == "global":
        return PruneConfig(fraction=fraction, scope="global", ignore=IGNORE[params["model"]])
    return PruneConfig(fraction=fraction, scope="layerwise", output_fraction=0.0)


def run_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """One IMP run (and its reinit control when ``reinit``); per-level lists."""
    model = params["model"]
    branches = ("imp", "reinit") if params["reinit"] else ("imp",)
    return run_imp_cell(params, seed, model=model, init=INIT, train=train_config(params),
                        prune=prune_config(params), branches=branches,
                        model_options={"width": _width(model, params["width"])})


# --- tables ---------------------------------------------------------------------------------

def _table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, trial, level) with the ticket's and (where run) the reinit's fields."""
    from deep_lottery.tables import FIELDS, explode_levels

    keys = [k for k in KEYS if k in runs.columns]
    imp = explode_levels(runs, "imp", keys)
    reinit = explode_levels(runs, "reinit", keys)[[*keys, "level", *FIELDS]]
    reinit = reinit.rename(columns={f: f"reinit_{f}" for f in FIELDS})
    table = imp.merge(reinit, on=[*keys, "level"], how="left")
    for k in KEYS:
        if k not in table.columns:
            table[k] = "global" if k == "scope" else 0
    return table


def _nets(table: pd.DataFrame) -> list[tuple[str, float]]:
    nets = table[["model", "width"]].drop_duplicates().itertuples(index=False, name=None)
    return sorted(nets, key=lambda n: (MODELS.index(n[0]) if n[0] in MODELS else 99, n[1]))


def _settings(rows: pd.DataFrame) -> list[tuple[float, int, str]]:
    found = rows[["lr", "warmup", "scope"]].drop_duplicates().itertuples(index=False, name=None)
    return sorted(found, key=lambda s: (-s[0], s[1], SCOPES.index(s[2]) if s[2] in SCOPES else 9))


def _label(lr: float, warmup: int, scope: str | None = None) -> str:
    text = f"lr {lr:g}" + (f", warmup {int(warmup)} it" if warmup else "")
    return text if scope is None else f"{text}, {scope}"


def _net_label(net: tuple[str, float]) -> str:
    return f"{net[0]} (width {net[1]:g})"


def _select(table: pd.DataFrame, net: tuple[str, float], lr: float | None, warmup: bool | None,
            scope: str = "global") -> pd.DataFrame:
    rows = table[(table["model"] == net[0]) & (table["width"] == net[1])
                 & (table["scope"] == scope)]
    if lr is not None:
        rows = rows[np.isclose(rows["lr"].astype(float), lr)]
    if warmup is not None:
        rows = rows[(rows["warmup"] > 0) == warmup]
    return rows


def _ticket_gap(rows: pd.DataFrame) -> tuple[float, int, str]:
    """Mean of ticket - reinit over (trial, pruned level) pairs; pair count; per-level means."""
    pairs = rows[rows["level"] > 0]
    if f"reinit_{METRIC}" not in pairs.columns:
        return math.nan, 0, ""
    gap = (pairs[METRIC] - pairs[f"reinit_{METRIC}"]).rename("gap")
    pairs = pairs.assign(gap=gap).dropna(subset=["gap"])
    per_level = pairs.groupby("level").agg(density=("density", "mean"), gap=("gap", "mean"))
    text = ", ".join(f"{100 * r.density:.0f}%: {100 * r.gap:+.2f}" for r in per_level.itertuples())
    return (float(pairs["gap"].mean()) if len(pairs) else math.nan), len(pairs), text


def _curve(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    return rows.groupby("level").agg(density=("density", "mean"), acc=(column, "mean"),
                                     acc_sd=(column, "std")).reset_index()


# --- plot -----------------------------------------------------------------------------------

def plot(runs: pd.DataFrame, path_stem: Path) -> None:
    """Per model: accuracy at the end of training against the weights remaining (log, falling),
    one colour per (lr, warmup); tickets solid (global) or dotted (layer-wise), reinit dashed."""
    table = _table(runs)
    nets = _nets(table) or [("vgg19", 1.0)]
    fig, axes = figure(1, len(nets), figsize=(6.2 * len(nets), 4.6), squeeze=False)
    for ax, net in zip(axes[0], nets):
        rows = table[(table["model"] == net[0]) & (table["width"] == net[1])]
        colours: dict[tuple[float, int], Any] = {}
        for lr, warmup, scope in _settings(rows):
            cell = rows[np.isclose(rows["lr"].astype(float), lr) & (rows["warmup"] == warmup)
                        & (rows["scope"] == scope)]
            colour = colours.setdefault((lr, warmup), f"C{len(colours)}")
            c = _curve(cell, METRIC)
            ticket_style, reinit_style = ("o-", "o--") if scope == "global" else ("s:", "s-.")
            ax.plot(100 * c["density"], 100 * c["acc"], ticket_style, color=colour, ms=4,
                    label=f"ticket, {_label(lr, warmup, scope)}")
            if f"reinit_{METRIC}" in cell.columns and cell[f"reinit_{METRIC}"].notna().any():
                r = _curve(cell.assign(**{f"reinit_{METRIC}": cell[f"reinit_{METRIC}"].where(
                    cell["level"] > 0, cell[METRIC])}), f"reinit_{METRIC}")
                ax.plot(100 * r["density"], 100 * r["acc"], reinit_style, color=colour, ms=3,
                        mfc="none", label=f"reinit, {_label(lr, warmup, scope)}")
        finite = table["density"].replace([np.inf, -np.inf], np.nan).dropna()
        if len(finite) and (finite > 0).all():
            ax.set_xscale("log")
            low = 100 * float(finite.min())
            ax.set_xticks([t for t in TICKS if t >= 0.9 * low])
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.invert_xaxis()
        ax.set(xlabel="P_m, weights remaining (%)", ylabel="test accuracy at end of training (%)",
               title=f"{TITLES.get(net[0], net[0])}, width {net[1]:g}")
        legend(ax, fontsize=7)
    fig.suptitle("Frankle & Carbin 2019, Figs. 7-8: IMP tickets (solid: global, dotted: "
                 "layer-wise) vs random reinitialization (dashed)", fontsize=10)
    save_figure(fig, path_stem)


# --- claims ---------------------------------------------------------------------------------

PAPER_NO_WARMUP = ("F&C: at lr 0.1 the pruned nets with the original init do no better than when "
                   "reinitialized (VGG-19 and Resnet-18)")
PAPER_WARMUP = {"vgg19": "F&C: VGG-19, lr 0.1 with warmup k = 10k: tickets beat the dense net down "
                         "to P_m 1.5%, reinitialized copies reach much lower accuracy",
                "resnet20": "F&C: Resnet-18, lr 0.03 with warmup k = 20k: 90.5% at P_m 27.1%, "
                            "winning tickets down to P_m 11.8%"}
PAPER_GLOBAL = ("F&C appendix: VGG-19 (lr 0.1, warmup) winning tickets down to P_m 6.9% layer-wise "
                "vs 1.5% global; the same direction, less extreme, for Resnet-18")


def _gap_claim(table: pd.DataFrame, net: tuple[str, float], warmup: bool) -> dict[str, Any]:
    lr = WARMUP_LR.get(net[0], HIGH_LR) if warmup else HIGH_LR
    gap, n, per_level = _ticket_gap(_select(table, net, lr, warmup))
    setting = f"lr {lr:g} " + ("with" if warmup else "without") + " warmup"
    measured = (f"{100 * gap:+.2f} pt over {n} (trial, level) pairs; per level (P_m: pt) "
                f"{per_level}") if n else f"no global {setting} runs with reinit"
    predicted = ("mean paired gap ticket - reinit (end-of-training accuracy, pruned levels) "
                 + ("> " if warmup else "<= ") + f"{100 * TICKET_MARGIN:g} pt")
    if warmup:
        return claim(f"{_net_label(net)}, global, {setting}: tickets beat their random "
                     f"reinitializations ({PAPER_WARMUP.get(net[0], '')})", predicted, measured,
                     bool(n) and gap > TICKET_MARGIN)
    return claim(f"{_net_label(net)}, global, {setting}: tickets are no better than their random "
                 f"reinitializations ({PAPER_NO_WARMUP})", predicted, measured,
                 bool(n) and gap <= TICKET_MARGIN)


def _scope_gaps(table: pd.DataFrame) -> list[tuple[Any, ...]]:
    """(net, lr, warmup, density, global - layer-wise, trials) at the sparsest level common to
    both scopes of every (net, lr, warmup) run with both (means over trials, paired by trial)."""
    out = []
    for net in _nets(table):
        rows = table[(table["model"] == net[0]) & (table["width"] == net[1])]
        for lr, warmup in rows[["lr", "warmup"]].drop_duplicates().itertuples(index=False,
                                                                              name=None):
            same = rows[np.isclose(rows["lr"].astype(float), lr) & (rows["warmup"] == warmup)]
            g = same[same["scope"] == "global"].set_index(["trial", "level"])
            lw = same[same["scope"] == "layerwise"].set_index(["trial", "level"])
            common = g.index.intersection(lw.index)
            if not len(common):
                continue
            level = max(lv for _, lv in common)
            idx = [i for i in common if i[1] == level]
            diff = (g.loc[idx, METRIC] - lw.loc[idx, METRIC]).mean()
            density = float(g.loc[idx, "density"].mean())
            out.append((net, float(lr), int(warmup), density, float(diff), len(idx)))
    return out


def claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Per model: no warmup at lr 0.1 -> ticket ~ reinit; warmup -> ticket > reinit; global beats
    layer-wise at the sparsest level; findings (tables, lr 0.01, winning tickets, early stop)."""
    table = _table(runs)
    nets = _nets(table)
    if not nets:
        return [claim("IMP finds winning tickets only with warmup at high learning rate",
                      "runs of vgg19 / resnet20", "no runs", False)]
    out = []
    for net in nets:
        out.append(_gap_claim(table, net, warmup=False))
        out.append(_gap_claim(table, net, warmup=True))
    scope = _scope_gaps(table)
    parts = [f"{_net_label(net)} {_label(lr, w)}: {100 * d:+.2f} pt at P_m {100 * dens:.1f}% "
             f"({t} trials)" for net, lr, w, dens, d, t in scope]
    out.append(claim(f"global pruning beats layer-wise pruning at the sparsest level both reach, "
                     f"for every model and setting run with both ({PAPER_GLOBAL})",
                     f"global - layer-wise end-of-training accuracy > {100 * GLOBAL_MARGIN:g} pt "
                     f"in every pair", "; ".join(parts) if parts else "no setting run with both "
                     "scopes", bool(scope) and all(s[4] > GLOBAL_MARGIN for s in scope)))
    out.extend(_findings(runs, table, nets))
    return out


def _findings(runs: pd.DataFrame, table: pd.DataFrame, nets: list[tuple[str, float]]
              ) -> list[dict[str, Any]]:
    out = []
    low = []
    for net in nets:
        gap, n, per_level = _ticket_gap(_select(table, net, LOW_LR, False))
        if n:
            low.append(f"{_net_label(net)}: {100 * gap:+.2f} pt ({per_level})")
    if low:
        out.append(finding("lr 0.01 without warmup, global: mean ticket - reinit gap (F&C: the "
                           "usual lottery-ticket pattern reappears at the lower rate; VGG-19 "
                           "within 1 pt of the original accuracy while P_m >= 3.5%, Resnet-18 "
                           "89.5% at 41.7%-21.9%)", "; ".join(low)))
    tables, winners, dense, stops = [], [], [], []
    for net in nets:
        rows = table[(table["model"] == net[0]) & (table["width"] == net[1])]
        for lr, warmup, scope in _settings(rows):
            cell = rows[np.isclose(rows["lr"].astype(float), lr) & (rows["warmup"] == warmup)
                        & (rows["scope"] == scope)]
            name = f"{_net_label(net)} {_label(lr, warmup, scope)}"
            c = _curve(cell, METRIC)
            has_reinit = f"reinit_{METRIC}" in cell.columns and cell[f"reinit_{METRIC}"].notna().any()
            r = _curve(cell, f"reinit_{METRIC}").set_index("level") if has_reinit else None
            cols = []
            for row in c.itertuples():
                text = f"{100 * row.density:.1f}%: {100 * row.acc:.2f}"
                if r is not None and row.level > 0 and row.level in r.index:
                    text += f"/{100 * r.loc[row.level, 'acc']:.2f}"
                cols.append(text)
            tables.append(f"{name}: " + " | ".join(cols))
            base = c[c["level"] == 0]["acc"]
            if len(base) and np.isfinite(base.iloc[0]):
                dense.append(f"{name.rsplit(',', 1)[0]}: {100 * base.iloc[0]:.2f}%")
                ok = c[(c["level"] > 0) & (c["acc"] >= base.iloc[0])]
                winners.append(f"{name}: " + (f"{100 * ok['density'].min():.1f}%" if len(ok)
                                              else "none"))
            pruned = cell[cell["level"] > 0]
            if len(pruned):
                stop_r = pruned["reinit_early_stop_iteration"].mean() if has_reinit else math.nan
                stops.append(f"{name}: ticket {pruned['early_stop_iteration'].mean():.0f} "
                             f"(reinit {stop_r:.0f}); ticket acc at stop - at end "
                             f"{100 * (pruned['test_metric_at_stop'] - pruned[METRIC]).mean():+.2f}"
                             f" pt")
    out.append(finding("accuracy (%) at the end of training against P_m, mean over trials: "
                       "ticket/reinit per level", "; ".join(tables) or "none"))
    out.append(finding("smallest P_m at which the mean ticket is at least as accurate as the dense "
                       "net of the same setting (F&C: VGG-19 warmup 1.5% global, 6.9% layer-wise; "
                       "Resnet-18 lr 0.03 warmup 11.8%)", "; ".join(winners) or "none"))
    out.append(finding("dense accuracy per setting (F&C: warmup adds ~1 pt to VGG-19 at lr 0.1; "
                       "Resnet-18 at lr 0.1 90.5%)", "; ".join(dict.fromkeys(dense)) or "none"))
    out.append(finding("early stopping (minimum validation loss), pruned levels: mean iteration, "
                       "and test accuracy there minus at the end", "; ".join(stops) or "none"))
    speed_record = throughput_finding(runs)
    if speed_record is not None:
        out.append(speed_record)
    return out


# --- contradicting runs ---------------------------------------------------------------------

def contradicting_runs() -> pd.DataFrame:
    """Rows (``run_imp_cell`` format) where tickets beat reinit only *without* warmup and
    layer-wise beats global: every claim fails."""
    from experiments.frankle2019.imp_runs import ROW_FIELDS

    levels = list(range(4))
    density = [0.8**lv for lv in levels]

    def branch(name: str, acc: list[float], first: int) -> dict[str, list]:
        values = {"density": density, "early_stop_iteration": [300.0] * 4,
                  "test_metric_at_stop": acc, "test_metric_end": acc,
                  "train_metric_end": [min(1.0, a + 0.03) for a in acc],
                  "train_metric_at_stop": [min(1.0, a + 0.03) for a in acc],
                  "val_loss_min": [1.0 - a for a in acc]}
        row: dict[str, list] = {f"{name}_level": levels[first:]}
        row.update({f"{name}_{f}": [float(v) for v in values[f][first:]] for f in ROW_FIELDS})
        return row

    rows = []
    for model, width in (("vgg19", 0.0625), ("resnet20", 4)):
        warm_lr = WARMUP_LR[model]
        for trial in range(2):
            base = 0.95 - 0.002 * trial
            cells = [(HIGH_LR, 0, "global", [base - 0.01 * lv for lv in levels],
                      [base - 0.05 * lv for lv in levels]),
                     (warm_lr, 30, "global", [base - 0.03 * lv for lv in levels],
                      [base - 0.03 * lv for lv in levels]),
                     (warm_lr, 30, "layerwise", [base] * 4, None)]
            for lr, warmup, scope, ticket, reinit in cells:
                row = {"dataset": "mnist", "mnist_files": "test", "N": 1000, "n_val": 500,
                       "n_test": 2000, "levels": 3, "iterations": 100, "eval_every": 50,
                       "model": model, "width": width, "batch_size": 64, "lr": lr,
                       "warmup": warmup, "scope": scope, "reinit": reinit is not None,
                       "fraction": 0.2, "augment": False, "trial": trial,
                       **branch("imp", ticket, 0), "images_per_second": 1000.0, "device": "cpu"}
                if reinit is not None:
                    row.update(branch("reinit", reinit, 1))
                rows.append(row)
    return pd.DataFrame(rows)


# --- sizes ----------------------------------------------------------------------------------

_QUICK = {"dataset": ["mnist"], "mnist_files": ["test"], "N": [1000], "n_val": [500],
          "n_test": [2000], "levels": [3], "fraction": [0.3], "augment": [False],
          "batch_size": [64], "eval_every": [50]}
_QUICK_VGG = {**_QUICK, "model": ["vgg19"], "width": [0.0625], "iterations": [150]}
_QUICK_RESNET = {**_QUICK, "model": ["resnet20"], "width": [4], "iterations": [100]}
_FULL = {"dataset": ["cifar10"], "N": [45000], "n_val": [5000],
         "n_test": [0], "levels": [20], "fraction": [0.2], "augment": [True]}
_FULL_VGG = {**_FULL, "model": ["vgg19"], "width": [1.0], "batch_size": [64],
             "iterations": [112480], "eval_every": [703]}
_FULL_RESNET = {**_FULL, "model": ["resnet20"], "width": [16], "batch_size": [128],
                "iterations": [30000], "eval_every": [500]}


def _full_grids(base: dict[str, list], warm_lr: float, warmup: int) -> list[dict[str, list]]:
    settings = [(HIGH_LR, 0), (LOW_LR, 0), (warm_lr, warmup)]
    return [{**base, "lr": [lr], "warmup": [k], "scope": [scope], "reinit": [scope == "global"]}
            for lr, k in settings for scope in SCOPES]


EXPERIMENT = register(Experiment(
    name="lth-deep",
    paper="Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019), Sec. 4, Figs. 7-8 and "
          "the appendix on global vs layer-wise pruning",
    description="VGG-19 and ResNet-20 ('Resnet-18'): IMP tickets vs random reinitialization at "
                "lr 0.1 / 0.01 / with warmup, global vs layer-wise pruning, accuracy against P_m",
    quick=Size(grids=[
        {**_QUICK_VGG, "lr": [0.1], "warmup": [0], "scope": ["global"], "reinit": [True]},
        {**_QUICK_VGG, "lr": [0.1], "warmup": [13], "scope": ["global"], "reinit": [True]},
        {**_QUICK_VGG, "lr": [0.1], "warmup": [13], "scope": ["layerwise"], "reinit": [False]},
        {**_QUICK_RESNET, "lr": [0.1], "warmup": [0], "scope": ["global"], "reinit": [True]},
        {**_QUICK_RESNET, "lr": [0.03], "warmup": [67], "scope": ["global"], "reinit": [True]},
    ], trials=1, estimate="~1.5 min on 2 idle cores (165 CPU-s measured; 4.4 min wall on 2 cores "
                             "loaded 3-5 by other jobs)"),
    full=Size(grids=[*_full_grids(_FULL_VGG, WARMUP_LR["vgg19"], 10000),
                     *_full_grids(_FULL_RESNET, WARMUP_LR["resnet20"], 20000)],
              trials=5, estimate="GPU, unmeasured guess: ~300 GPU-hours on one H200-class GPU "
                                 "(1,860 trainings; ~15 min per VGG-19, ~3 min per ResNet-20)"),
    run_cell=run_cell, plot=plot, claims=claims, contradicting_runs=contradicting_runs,
    version=1,
    shared_seed_params=("lr", "warmup", "scope", "reinit"),
    notes="Setup as F&C's appendix: SGD momentum 0.9, weight decay 1e-4, step schedule x0.1 at "
          "50%/75% of training (VGG-19: epochs 80/120 of 160 = 112,480 iterations, batch 64) or "
          "2/3 and 5/6 (Resnet-18: 20k/25k of 30k iterations, batch 128); linear warmup from 0 "
          "(open_lth's form) over k iterations, k = 10k at lr 0.1 for VGG-19 and k = 20k at lr 0.03 "
          "for Resnet-18 (F&C could not make 0.1 work for Resnet-18 even with warmup, so its warmup "
          "cells use 0.03); Gaussian Glorot init for weights, BatchNorm gamma ~ U(0,1), beta 0 "
          "(open_lth; F&C do not say); reset to the initialization after each level; 20% of the "
          "remaining conv weights per level. Global pruning leaves the output layer (5120 / 640 "
          "weights) and the ResNet's two 1x1 shortcut convs (2560) dense, as F&C do; layer-wise "
          "pruning (F&C silent on its details) takes 20% of every conv and leaves the output "
          "layer dense, but prunes the ResNet shortcuts too (deep_lottery's layer-wise pruning "
          "has no ignore list). F&C's 'Resnet-18' is the 20-layer 16/32/64 CIFAR ResNet (274K / "
          "270K weights): deep_lottery's resnet20 at width 16. Reinit: a fresh Glorot draw on "
          "the ticket's mask, trained with the same schedule. Accuracy is measured at the end of "
          "training (Figs. 7-8's last panel; the 30K/60K and 10K/20K panels are not recorded); "
          "early stopping (minimum validation loss) is only a finding. Seeds: lr, warmup, scope "
          "and reinit are left out of the seed, so every cell of one (model, trial) starts from "
          "the same network and data order (paired comparisons). Full size: CIFAR-10 45k/5k/10k, "
          "random flip + 4-pixel crop, 20 levels (P_m to 1.2%), 5 trials (F&C's count); per model "
          "the three settings (lr 0.1, lr 0.01, warmup) with global pruning and the reinit control, "
          "and the same three with layer-wise pruning without reinit (no claim uses it; F&C's "
          "appendix shows it); GPU estimate not measured (no GPU was available). Quick size (CPU, "
          "MNIST, for the pipeline, far too small to expect F&C's effects): only the MNIST test "
          "split is on disk, re-split with seed 0 into 2,000 test / 500 validation / 1,000 "
          "training images; 28x28x1 inputs through the builders; VGG-19 at width 1/16 (4-32 "
          "channels, 78K conv weights; 150 iterations per level), ResNet-20 at base width 4 (17K "
          "weights; 100 iterations per level), both at batch 64, no augmentation, 3 levels at "
          "30% per level (P_m down to 34%), validation every 50 iterations, 1 trial; warmup "
          "scaled with the run (VGG 13 = 150 x 10k/112k, ResNet 67 = 100 x 20k/30k, which leaves "
          "the ResNet's warmup cell barely trained); only the cells the claims need: lr 0.1 with "
          "and without warmup (global, with reinit) for both models, and VGG-19's warmup cell "
          "with layer-wise pruning (without reinit); no lr 0.01 cell, so that finding is absent. "
          "Sized from single IMP runs measured with one torch thread on a loaded 2-core machine "
          "(VGG ~3.5 CPU-s, ResNet ~6.5 CPU-s per training; 32 trainings); the whole quick run "
          "took 165 CPU-s (user + sys) with --n-jobs -1. "
          "$LOTTERY_LAB_IMP_CACHE keeps per-level outputs (resume).",
    requires=("torch",),
    missing_data=missing_data({"quick": "mnist", "full": "cifar10"}),
    params=PARAMS,
    check=check,
))
