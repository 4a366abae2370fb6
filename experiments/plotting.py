"""Shared plot helpers: one style, saving PNG + PDF, success-rate heat maps with the 50% curve.

Matplotlib runs on the non-interactive Agg backend, so figures are drawn without a display.
Figure files are byte-reproducible: the same figure gives the same bytes (no creation date or
version in the metadata, one pinned font and renderer settings), and a file whose bytes would
not change is left untouched, so replotting unchanged results never dirties a checkout.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .analysis import fit_boundaries  # noqa: E402

STYLE: dict[str, Any] = {
    "figure.figsize": (6.0, 4.2),
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.bbox": "tight",
    "font.family": ["DejaVu Sans"],  # shipped with Matplotlib: the same glyphs on every machine
}
"""rcParams every figure of the project uses (``with plt.rc_context(STYLE)`` or ``figure``)."""

DPI = 150

RENDER: dict[str, Any] = {
    **{key: matplotlib.rcParamsDefault[key] for key in (
        "text.hinting", "text.hinting_factor", "text.antialiased", "lines.antialiased",
        "patch.antialiased", "path.simplify", "path.simplify_threshold", "agg.path.chunksize",
        "pdf.fonttype", "pdf.compression", "pdf.use14corefonts", "svg.fonttype")},
    "svg.hashsalt": "lottery-lab",
}
"""Renderer settings pinned when saving (Matplotlib's defaults, a fixed SVG salt), so that a
user's matplotlibrc cannot change the bytes of a figure."""

METADATA: dict[str, dict[str, Any]] = {
    "png": {"Software": None},
    "pdf": {"Creator": "lottery-lab", "Producer": None, "CreationDate": None, "ModDate": None},
}
"""File metadata without dates or versions (Matplotlib writes both by default)."""


def figure(*args: Any, **kwargs: Any) -> tuple[plt.Figure, Any]:
    """``plt.subplots`` in the project style (``constrained`` layout)."""
    with plt.rc_context(STYLE):
        kwargs.setdefault("layout", "constrained")
        return plt.subplots(*args, **kwargs)


def save_figure(fig: plt.Figure, path_stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``path_stem.png`` (150 dpi) and ``path_stem.pdf``, then close the figure.

    The bytes depend on the figure only (``METADATA``, ``RENDER``); a file that already holds
    them is not rewritten, and a new one replaces the old atomically.
    """
    stem = Path(path_stem)
    if stem.suffix in (".png", ".pdf"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = Path(f"{stem}.png"), Path(f"{stem}.pdf")
    try:
        with plt.rc_context({**STYLE, **RENDER}):
            for path, options in ((png, {"dpi": DPI}), (pdf, {})):
                fmt = path.suffix[1:]
                buffer = io.BytesIO()
                fig.savefig(buffer, format=fmt, metadata=METADATA[fmt], **options)
                write_if_changed(path, buffer.getvalue())
    finally:
        plt.close(fig)
    return png, pdf


def legend(ax: Any, **kwargs: Any) -> None:
    """``ax.legend(**kwargs)`` when something labelled was drawn (an empty table draws nothing,
    and an empty legend only warns)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically unless it already holds exactly these bytes (its
    modification time then stays); returns whether it wrote."""
    with contextlib.suppress(OSError):
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return True


def cell_edges(values: Sequence[float], log: bool = False) -> np.ndarray:
    """Edges of the cells centred on sorted ``values`` (midpoints; geometric when ``log``)."""
    v = np.asarray(sorted(values), dtype=float)
    if log and np.any(v <= 0):
        raise ValueError("log-scaled cell edges need positive values")
    t = np.log(v) if log else v
    if len(t) == 1:
        edges = np.array([t[0] - 0.5, t[0] + 0.5])
    else:
        mid = (t[1:] + t[:-1]) / 2
        edges = np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])
    return np.exp(edges) if log else edges


def success_heatmap(ax: Any, runs: pd.DataFrame, *, x: str, y: str, success: str,
                    boundary: bool = True, logx: bool = False, logy: bool = False,
                    level: float = 0.95, cmap: str = "viridis", colorbar: bool = True
                    ) -> pd.DataFrame:
    """Draw the mean of ``success`` over the (x, y) grid; overlay the 50% curve along y.

    For every x column a logistic fit of success against y (``analysis.fit_boundaries``) gives
    the 50% point and its confidence interval, drawn as white points with error bars (separated
    columns show the gap between the last failure and the first success). Returns the
    per-column boundary table (empty when ``boundary`` is false).
    """
    for column in (x, y, success):
        if column not in runs.columns:
            raise ValueError(f"column {column!r} not in runs; columns: {', '.join(runs.columns)}")
    rates = runs.groupby([y, x])[success].mean().unstack(x)
    rates = rates.sort_index().sort_index(axis=1)
    xs, ys = rates.columns.to_numpy(float), rates.index.to_numpy(float)
    mesh = ax.pcolormesh(cell_edges(xs, logx), cell_edges(ys, logy), rates.to_numpy(float),
                         cmap=cmap, vmin=0.0, vmax=1.0, shading="flat")
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(False)
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, label=f"success rate ({success})")
    if not boundary:
        return pd.DataFrame()
    table = fit_boundaries(runs, by=x, x=y, success=success, level=level)
    shown = table[np.isfinite(table["x50"])]
    if len(shown):
        err = np.vstack([shown["x50"] - shown["ci_low"], shown["ci_high"] - shown["x50"]])
        ax.errorbar(shown[x].to_numpy(float), shown["x50"].to_numpy(float),
                    yerr=np.clip(err, 0, None), fmt="o-", color="white", mec="black", ms=4,
                    lw=1.2, capsize=2, label=f"50% boundary ({level:.0%} CI)")
    return table
