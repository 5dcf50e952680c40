"""Helpers every figure module shares: a headless matplotlib, the 95% t-interval, picking runs."""
from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window (CI and the report command are headless)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.results import RunInfo  # noqa: E402
from trainables.names import BEST_EPOCH, EARLY_STOPPED, curve  # noqa: E402

CELLS = ("rnn", "lstm", "gru")
CELL_COLOURS = {"rnn": "#1f77b4", "lstm": "#ff7f0e", "gru": "#2ca02c"}
plt.rcParams.update({"figure.dpi": 110, "font.size": 10, "axes.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3})


def save(fig, out_dir: str | Path, name: str) -> Path:
    """Write a PNG and close the figure (many figures in one process must not pile up in memory).
    Axes labelled 'epoch' or 'trial...' get whole-number ticks (a 2-epoch run must not show epoch 1.2)."""
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        if ax.get_xlabel() == "epoch" or ax.get_xlabel().startswith("trial"):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def draw_figures(figures: list, results, fig_dir: Path) -> dict[str, Path | None]:
    """Every figure of a section's list `(part, key, caption, function(results, out_dir))`; one the study's data
    cannot give is None, its reason in results.skipped."""
    return {key: fn(results, fig_dir) for _part, key, _caption, fn in figures}


def figure_block(figures: list, drawn: dict, key: str, results, out_dir: Path, extra: str = ""):
    """A report block for a drawn figure (path relative to the report), the one-line reason one was not drawn, or
    None (a figure the section did not try)."""
    caption = next(c for _p, k, c, _f in figures if k == key) + (f" {extra}" if extra else "")
    path = drawn.get(key)
    if path is None:
        reason = results.skipped.get(key)
        return ("p", f"[Figure '{key}' not drawn: {reason}]") if reason else None
    return ("fig", Path(os.path.relpath(path, out_dir)).as_posix(), caption)


def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of the Student-t interval; half-width NaN with fewer than two values."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(v[0]), math.nan, 1
    from scipy import stats

    half = stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n)
    return float(v.mean()), float(half), n


def best_run(runs: list[RunInfo], metric: str, mode: str = "max") -> RunInfo | None:
    """The run with the best final value of metric (runs without it are ignored)."""
    scored = [r for r in runs if np.isfinite(r.metrics.get(metric, math.nan))]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda r: r.metrics[metric])


def most_common(runs: list[RunInfo], param: str) -> str | None:
    values = [r.params.get(param) for r in runs if r.params.get(param) is not None]
    return Counter(values).most_common(1)[0][0] if values else None


def curve_key(runs: list[RunInfo], name: str) -> str:
    """Where a metric's learning curve is: `epoch_<name>` (plain names hold the best epoch's numbers since runs log
    both), else `name` itself (stores written before the split, whose plain names were per-epoch)."""
    key = curve(name)
    return key if any(key in r.history for r in runs) else name


def scored_epoch(run: RunInfo) -> tuple[float, int | None]:
    """(the epoch whose weights the run is scored by, the epoch patience stopped it at or None); nan when the run
    logged no best epoch (older stores: the last epoch)."""
    last = max((int(steps[-1]) for steps, _ in run.history.values() if len(steps)), default=None)
    return float(run.metrics.get(BEST_EPOCH, math.nan)), last if run.metrics.get(EARLY_STOPPED) else None


def mean_curve(runs: list[RunInfo], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Epoch-wise mean and spread (min..max) over runs, cut to the shortest run so every point has all seeds."""
    curves = [r.history[key] for r in runs if key in r.history and len(r.history[key][0])]
    if not curves:
        return None
    n = min(len(c[0]) for c in curves)
    steps = curves[0][0][:n]
    vals = np.stack([c[1][:n] for c in curves])
    return steps, vals.mean(0), np.stack([vals.min(0), vals.max(0)])


def fmt_num(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def short_num(text: str | None, digits: int = 4) -> str:
    """A logged number in a few significant digits (an lr drawn by the search has 17)."""
    try:
        return f"{float(text):.{digits}g}"
    except (TypeError, ValueError):
        return str(text)
