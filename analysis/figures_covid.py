"""Problem 1 figures: correlation heatmaps, learning curves per cell, accuracy vs L, normalisation, confusion, map.

Each `fig_*(results, out_dir) -> Path | None` draws one file; None (with the reason in `results.skipped`) when
the study lacks the runs or the data the figure needs.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from analysis import covid_runs
from analysis.common import CELL_COLOURS, CELLS, curve_key, mean_curve, plt, save, scored_epoch
from analysis.results import StudyResults
from data.errors import DataError
from trainables.names import CONFUSION, PREDICTIONS


def top_correlated(corr: np.ndarray, n: int = 30) -> np.ndarray:
    """Indices of the n countries with the highest mean correlation to all others, ordered by clustering
    so that blocks of co-moving countries sit together."""
    off = np.array(corr, dtype=float)
    np.fill_diagonal(off, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row (zero-variance country) scores -inf below
        score = np.nanmean(off, axis=1)
    score = np.where(np.isfinite(score), score, -np.inf)
    idx = np.argsort(-score)[: min(n, int(np.isfinite(score).sum()))]
    if len(idx) > 2:
        from scipy.cluster.hierarchy import leaves_list, linkage
        from scipy.spatial.distance import squareform

        sub = np.nan_to_num(np.array(corr)[np.ix_(idx, idx)], nan=0.0)
        dist = np.clip(1 - sub, 0, 2)
        np.fill_diagonal(dist, 0)
        idx = idx[leaves_list(linkage(squareform((dist + dist.T) / 2, checks=False), "average"))]
    return idx


UNDEFINED_GREY = "#cccccc"


def draw_corr_heatmap(corr: np.ndarray, names: list[str], title: str, zoom: bool = False):
    """The heatmap as a matplotlib Figure (drawn, not saved, so a test can read its Axes): every label when few
    countries, every k-th when many. zoom: a sequential colour scale from the smallest value shown, so differences
    among highly correlated countries stay visible. NaN cells (a country with zero variance in the date range has
    no correlation) are grey, and only then a legend entry says so."""
    from matplotlib.patches import Patch

    corr = np.asarray(corr, dtype=float)
    n = len(names)
    size = min(14.0, max(6.0, 0.28 * n + 2)) if n <= 40 else 12.0
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    lo = -1.0
    if zoom and np.isfinite(corr).any():
        lo = max(-1.0, np.floor(np.nanmin(corr) * 10) / 10)
    cmap = plt.get_cmap("magma_r" if zoom else "RdBu_r").with_extremes(bad=UNDEFINED_GREY)
    im = ax.imshow(np.ma.masked_invalid(corr), cmap=cmap, vmin=lo, vmax=1, interpolation="nearest")
    step = 1 if n <= 40 else int(np.ceil(n / 50))
    ticks = np.arange(0, n, step)
    fs = 8 if n <= 40 else 5
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=fs)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=fs)
    ax.grid(False)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="Pearson r (daily new cases)")
    if np.isnan(corr).any():
        flat = int(np.isnan(corr).all(axis=1).sum())
        label = "undefined: no variance\nin this date range" + (f"\n({flat} {'country' if flat == 1 else 'countries'})"
                                                                  if flat else "")
        # Below the colour bar: the only free corner (tick labels run along the bottom and the left).
        ax.legend(handles=[Patch(facecolor=UNDEFINED_GREY, edgecolor="0.4", label=label)], loc="upper left",
                  bbox_to_anchor=(1.0, -0.01), fontsize=8, frameon=False, handlelength=1.2, borderaxespad=0.0)
    return fig


def _corr(results, corr, names, figure):
    """(matrix, names, " (first..last day)" or "") from the arguments, else from the CSV."""
    if corr is not None:
        return np.asarray(corr), list(names), ""
    from analysis.covid_data import correlation

    try:
        c, nm, info = correlation(results)
    except DataError as err:  # no CSV here (or not one the data layer can read): the report says why
        results.skip(figure, f"needs the COVID CSV ({err})")
        return None, None, None
    return c, nm, f" ({info['first']}..{info['last']})"


def fig_corr_all(results: StudyResults, out_dir, *, corr=None, names=None) -> Path | None:
    """Correlation of daily new cases for every pair of countries (the homework's figure i)."""
    corr, names, span = _corr(results, corr, names, "corr_all")
    if corr is None:
        return None
    title = f"Correlation of daily new cases, all {len(names)} countries{span}"
    return save(draw_corr_heatmap(corr, names, title), out_dir, "covid_corr_all.png")


def fig_corr_top(results: StudyResults, out_dir, *, corr=None, names=None, n: int = 30) -> Path | None:
    """The same matrix cut to the n most correlated countries, with legible labels."""
    corr, names, span = _corr(results, corr, names, "corr_top")
    if corr is None:
        return None
    idx = top_correlated(corr, n)
    fig = draw_corr_heatmap(corr[np.ix_(idx, idx)], [names[i] for i in idx],
                            f"Top {len(idx)} countries by mean correlation{span}", zoom=True)
    return save(fig, out_dir, "covid_corr_top.png")


def _band(ax, runs, key, colour, label, style="-"):
    """Mean curve over runs with its min..max band; one run with seeds inside: mean +- its std over seeds."""
    key = curve_key(runs, key)
    mc = mean_curve(runs, key)
    if mc is None:
        return
    steps, mean, (lo, hi) = mc
    ax.plot(steps, mean, style, color=colour, label=label)
    std = runs[0].history.get(f"{key}_std") if len(runs) == 1 else None
    if std is not None and len(std[1]) == len(mean):
        lo, hi = mean - std[1], mean + std[1]
    if len(runs) > 1 or std is not None:
        ax.fill_between(steps, lo, hi, color=colour, alpha=0.15)


def _mark_scored_epoch(ax, runs) -> None:
    """A line at the epoch whose weights are scored (the mean of the seeds' best validation epochs), and a cross
    where patience stopped the run."""
    if len(runs) != 1:
        return
    best, stopped = scored_epoch(runs[0])
    if np.isfinite(best):
        ax.axvline(best, color="0.5", lw=0.8, ls="--", label=f"best val epoch (mean {best:.1f})")
    if stopped is not None:
        ax.axvline(stopped, color="black", lw=1.0, label=f"stopped early (epoch {stopped})")


def fig_cell_curves(results: StudyResults, out_dir) -> Path | None:
    """Train/validation/test accuracy (top) and loss (bottom) per epoch, one column per cell type, same L and norm."""
    by_cell, label = covid_runs.curve_runs(results)
    if not by_cell:
        results.skip("cell_curves", "no finished sequence runs")
        return None
    cells = [c for c in CELLS if c in by_cell]
    fig, axes = plt.subplots(2, len(cells), figsize=(4.2 * len(cells), 6.5), sharey="row", squeeze=False)
    for j, cell in enumerate(cells):
        runs = by_cell[cell]
        split = runs[0].params.get("split", "random")  # a time-split trial's main models are the time split's
        for i, (metric, name) in enumerate((("acc", "accuracy"), ("loss", "loss"))):
            ax = axes[i, j]
            _band(ax, runs, f"train_{metric}", CELL_COLOURS[cell], "train", "--")
            _band(ax, runs, f"val_{metric}", CELL_COLOURS[cell], f"validation ({split} split)", "-.")
            _band(ax, runs, f"test_{metric}", CELL_COLOURS[cell], f"test ({split} split)")
            if split != "time":
                _band(ax, runs, f"test_{metric}_time", "0.35", "test (time split)", ":")
            _mark_scored_epoch(ax, runs)
            ax.set_xlabel("epoch")
            ax.set_ylabel(name)
            if i == 0:
                n = sum(covid_runs.seeds_of(r) for r in runs)
                ax.set_title(f"{cell.upper()}, L={runs[0].params.get('seq_len')} ({n} seed{'s' if n > 1 else ''})")
            ax.legend(fontsize=8)
    fig.suptitle(f"Learning curves per cell type ({label}; band = spread over seeds; each model is scored at its best "
                 "validation epoch)")
    fig.tight_layout()
    return save(fig, out_dir, "covid_cell_curves.png")


BASELINE_STYLE = {"majority": ("black", "--", "majority class"), "weekly": ("#8c564b", ":", "weekly rule"),
                  "logistic": ("#9467bd", ":", "logistic regression"),
                  "boosted_trees": ("#7f7f7f", "-.", "gradient-boosted trees")}


def fig_acc_vs_L(results: StudyResults, out_dir) -> Path | None:
    """Final test accuracy against L per cell, random split (left) and time split (right), 95% t-intervals over
    seeds, beside the baselines on the same windows (the majority-class rate changes with L, so it is drawn too)."""
    rows = covid_runs.acc_vs_L(results)
    if not rows:
        results.skip("acc_vs_L", "no fixed sequence runs with seq_len")
        return None
    base = covid_runs.baselines_by_L(results)
    # a panel per split the models trained on (a time-split study has no random-split models)
    panels = [p for p in (("acc_random", "ci_random", "random", "random split (homework)"),
                          ("acc_time", "ci_time", "time", "time split (leakage-free)"))
              if any(np.isfinite(getattr(r, p[0])) for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.6), sharey=True, squeeze=False)
    axes = axes[0]
    lens = sorted({r.seq_len for r in rows})
    dodge = 0.012 * (max(lens) - min(lens) or 1)  # side-step the cells so their interval bars do not overlap
    for ax, (attr, ci, split, title) in zip(axes, panels):
        for name, (colour, style, label) in BASELINE_STYLE.items():
            pts = [(L, base[L][split][name]) for L in lens if L in base and name in base[L][split]]
            if not pts and name == "majority":  # no baseline runs (an older study): the majority rate it logged
                key = "majority_random" if split == "random" else "majority_time"
                pts = [(r.seq_len, getattr(r, key)) for r in rows if r.cell == rows[0].cell]
            pts = [(L, v) for L, v in pts if np.isfinite(v)]
            if pts:
                ax.plot(*zip(*pts), style, color=colour, lw=1.3, marker=".", label=label, zorder=1)
        for k, cell in enumerate(CELLS):
            rs = [r for r in rows if r.cell == cell and np.isfinite(getattr(r, attr))]
            if not rs:
                continue
            x = np.array([r.seq_len for r in rs]) + (k - 1) * dodge
            y = np.array([getattr(r, attr) for r in rs])
            err = np.nan_to_num(np.array([getattr(r, ci) for r in rs]))
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=CELL_COLOURS[cell], label=cell.upper(), zorder=3)
        ax.set_xlabel("sequence length L (days)")
        ax.set_xticks(lens)
        ax.set_title(title)
        ax.legend(fontsize=8, ncol=2)
    axes[0].set_ylabel("final test accuracy")
    n = max(max(r.n, r.n_time) for r in rows)
    fig.suptitle(f"Test accuracy vs L beside the baselines (mean of {n} seeds; bars = 95% t-interval)")
    fig.tight_layout()
    return save(fig, out_dir, "covid_acc_vs_L.png")


def fig_norm_effect(results: StudyResults, out_dir) -> Path | None:
    """Learning curves of the same cell and L with and without input normalisation."""
    found = covid_runs.norm_pairs(results)
    if found is None:
        results.skip("norm_effect", "no cell/L trained with two different normalisations")
        return None
    by_norm, label = found
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, (norm, runs) in enumerate(sorted(by_norm.items())):
        c = "black" if norm == "none" else colours(k)
        tag = f"norm={norm} (n={len(runs)})"
        for ax, metric in zip(axes, ("acc", "loss")):
            _band(ax, runs, f"test_{metric}", c, f"{tag} test")
            _band(ax, runs, f"train_{metric}", c, f"{tag} train", "--")
    for ax, name in zip(axes, ("accuracy", "loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend(fontsize=8)
    fig.suptitle(f"Effect of input normalisation ({label})")
    fig.tight_layout()
    return save(fig, out_dir, "covid_norm_effect.png")


def _best_artifact(results: StudyResults, figure: str, name: str):
    """(best sequence run, its JSON artefact `name`), or (None, None) with the figure marked skipped."""
    run = covid_runs.best_sequence_run(results, need=name)
    if run is None:
        results.skip(figure, f"no sequence run with {name}")
        return None, None
    return run, json.loads(run.artifacts[name].read_text())


def fig_confusion(results: StudyResults, out_dir) -> Path | None:
    """Confusion matrix (counts and row-normalised rates) of the best model on its test split."""
    run, data = _best_artifact(results, "confusion", CONFUSION)
    if run is None:
        return None
    m = np.asarray(data["matrix"], dtype=float)
    labels = data.get("labels", ["0", "1"])
    rates = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5, 4.3))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}\n{rates[i, j]:.1%}", ha="center", va="center",
                    color="white" if rates[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Chosen model (on {covid_runs.objective(results)[0]}): {run.param('cell', '?').upper()}, L={run.param('seq_len')}, "
                 f"test acc {run.metrics.get('test_acc', float('nan')):.3f}\n(summed over its {covid_runs.seeds_of(run)} seeds)")
    return save(fig, out_dir, "covid_confusion.png")


P_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0001)
P_COLOURS = ("#2166ac", "#67a9cf", "#f2e394", "#ef8a62", "#b2182b")  # no grey: grey means "no data"
NO_DATA_GREY = "#d4d4d4"
SVG_NS = "http://www.w3.org/2000/svg"


def _on_map(predictions: dict) -> dict[str, tuple[str, float]]:
    """Country name (as in the CSSE data) -> (iso2, p_increase) for each country pygal can draw with a probability."""
    from pygal_maps_world.maps import World

    out = {}
    for name, entry in sorted(predictions.items()):
        iso, p = (entry.get("iso2") or "").lower(), entry.get("p_increase")
        if iso in World.area_names and p is not None and np.isfinite(p):
            out[name] = (iso, float(p))
    return out


def world_map_values(predictions: dict) -> tuple[list[dict[str, float]], list[str]]:
    """p_increase per iso2, binned into five legend classes; names that pygal cannot draw come back separately."""
    mapped = _on_map(predictions)
    bins: list[dict[str, float]] = [{} for _ in P_COLOURS]
    for iso, p in mapped.values():
        k = int(np.searchsorted(P_BINS, p, side="right") - 1)
        bins[min(max(k, 0), len(P_COLOURS) - 1)][iso] = p
    return bins, [name for name in sorted(predictions) if name not in mapped]


def _offline_svg(tooltips: dict[str, str]):
    """An xml filter for pygal's tree: a <title> on every country shape (browsers show it on hover with no script,
    which pygal's tooltips need), grey for shapes without data, full opacity for the rest (pygal fades values inside
    a series, so a colour would no longer match its legend bin), and no script or comment (pygal's carry its web
    address and a config that only its CDN script reads)."""
    import xml.etree.ElementTree as ET

    from pygal_maps_world.maps import World

    def apply(root):
        for parent in list(root.iter()):
            for child in list(parent):
                if child.tag is ET.Comment or str(child.tag).rsplit("}", 1)[-1] == "script":
                    parent.remove(child)
        for g in root.iter():
            cls = (g.get("class") or "").split()
            if len(cls) < 3 or cls[1:3] != ["country", "map-element"]:
                continue
            iso = cls[0]
            title = ET.Element(f"{{{SVG_NS}}}title")
            if iso in tooltips:
                title.text = tooltips[iso]
                g.set("style", "fill-opacity: 1")
            else:
                title.text = f"{World.area_names.get(iso, iso)}: no data"
                g.set("style", f"fill: {NO_DATA_GREY}")
            g.insert(0, title)
        return root

    return apply


def fig_world_map(results: StudyResults, out_dir) -> Path | None:
    """pygal world map (SVG, no script, works offline) of P(increase) on the next unlabelled day, from the best
    model; hovering a country shows its probability and date. Beside it, covid_world_map.json: the countries of
    the data that pygal cannot draw and the number of pygal shapes with no data, for the report's caption."""
    from pygal.style import Style
    from pygal_maps_world.maps import World

    run, pred = _best_artifact(results, "world_map", PREDICTIONS)
    if run is None:
        return None
    date = pred.get("date", "?")
    bins, unmapped = world_map_values(pred["countries"])
    no_data = len(World.area_names) - sum(len(b) for b in bins)
    style = Style(colors=P_COLOURS + (NO_DATA_GREY,), background="white", plot_background="white",
                  title_font_size=18, legend_font_size=13)
    chart = World(style=style, js=[], width=1000, height=560, legend_at_bottom=True, legend_at_bottom_columns=6,
                  title=f"P(new cases rise on {date}), {run.param('cell', '?').upper()} "
                        f"L={run.param('seq_len')} (best model)",
                  value_formatter=lambda v: f"{v:.0%}")
    for (lo, hi), values in zip(zip(P_BINS[:-1], P_BINS[1:]), bins):
        chart.add(f"{lo:.1f}-{min(hi, 1.0):.1f} ({len(values)})", values)
    chart.add(f"no data ({no_data})", {})  # a legend entry for the grey shapes
    chart.add_xml_filter(_offline_svg({iso: f"{name}: {p:.0%} chance of a rise on {date}"
                                       for name, (iso, p) in _on_map(pred["countries"]).items()}))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "covid_world_map.svg"
    path.write_bytes(chart.render())
    (out / "covid_world_map.json").write_text(json.dumps(
        {"date": date, "unmapped": unmapped, "shapes": len(World.area_names), "no_data": no_data}))
    (out / "covid_world_map_unmapped.json").unlink(missing_ok=True)  # the older side file, now in the one above
    return path
