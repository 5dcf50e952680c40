"""The COVID part's report section (homework problem 1): the built-in `covid` trainable's `report_section`.

`section(results, part, fig_dir, out_dir)` draws the figures below into fig_dir and returns the section's blocks
(analysis.report writes them as HTML and Markdown).
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from analysis import covid_runs, describe, discussion, figures_covid, figures_search
from analysis.common import draw_figures, figure_block, fmt_num
from analysis.results import StudyResults

# (part, key, caption, function)
FIGURES = [
    ("covid", "corr_all", "Pearson correlation of daily new cases for every pair of countries.", figures_covid.fig_corr_all),
    ("covid", "corr_top", "The most correlated countries (by mean correlation), clustered.", figures_covid.fig_corr_top),
    ("covid", "cell_curves", "Train/test accuracy and loss per epoch for RNN, LSTM and GRU.", figures_covid.fig_cell_curves),
    ("covid", "acc_vs_L", "Final test accuracy against L per cell, random and time split.", figures_covid.fig_acc_vs_L),
    ("covid", "norm_effect", "Learning curves with and without input normalisation.", figures_covid.fig_norm_effect),
    ("covid", "confusion", "Confusion matrix of the best model on its test split.", figures_covid.fig_confusion),
    ("covid", "world_map", "P(increase) on the next, unlabelled day per country (pygal).", figures_covid.fig_world_map),
    ("covid", "covid_search_history", "Optuna optimisation history of the COVID search.", figures_search.fig_covid_search_history),
    ("covid", "covid_search_importance", "Parameter importances of the COVID search.", figures_search.fig_covid_search_importance),
]


def section(results: StudyResults, part: str, fig_dir: Path, out_dir: Path) -> list:
    """Problem 1's questions (i-vi) answered from the part's runs; `results` is the part's view (its trials and
    baselines)."""
    figs = draw_figures(FIGURES, results, fig_dir) if results.select(part=part) else {}
    fig = partial(figure_block, FIGURES, figs, results=results, out_dir=out_dir)
    b: list = [("h2", "Problem 1: COVID-19, recurrent classifier of a next-day increase")]
    best = covid_runs.best_sequence_run(results)
    if best is None:
        return b + [("p", "This study has no finished COVID (sequence) runs.")]
    b += [("h3", "Data and preprocessing (from the best run's config)")]
    b += [("list", describe.sequence_preprocessing(best, covid_runs.summary(best)))]
    b += [("h3", "Architecture"), ("p", f"Best run {best.name}: {best.param('cell', '?').upper()}, hidden size "
          f"{best.param('hidden_size')}, {best.param('num_layers')} layer(s), optimiser {best.param('optimizer', 'adam')}, "
          f"lr {best.param('lr')}, batch {best.param('batch_size')}, {best.param('epochs')} epochs.")]
    b.append(("pre", describe.sequence_model(best)))
    b += [("h3", "i. Correlation between countries"), fig("corr_all"), fig("corr_top")]
    c = covid_runs.set_c(results)
    b.append(("h3", "ii. The set C"))
    if c:
        rows = [["strategy", c["strategy"]], ["threshold", c["threshold"]], ["size", str(c["size"])]]
        rows += [["reference", c["reference"]]] if c.get("reference") else []
        rows += [["min partners", c["min_partners"]]] if c.get("min_partners") else []
        b.append(("table", ["", "value"], rows))
        b.append(("p", "Countries: " + ", ".join(c["countries"]) if c["countries"] else
                  f"The country list was not logged and could not be recomputed: {c.get('error', 'unknown')}"))
    b += [("h3", "iii. Training and test accuracy"), fig("cell_curves")]
    b += [("h3", "iv. RNN vs LSTM vs GRU, and the sequence length L")]
    rows = covid_runs.acc_vs_L(results)
    if rows:
        b.append(("p", "Test accuracy of the single models (mean over seeds, 95% t-interval) and of their seed "
                       "ensemble (the mean of the seeds' probabilities), each model at its best validation epoch."))
        b.append(("table", ["cell", "L", "seeds", "test acc (random split)", "95% CI ±", "ensemble", "majority rate",
                            "test acc (time split)", "95% CI ±", "ensemble (time)", "majority rate (time)"],
                  [[r.cell.upper(), str(r.seq_len), str(r.n or r.n_time), fmt_num(r.acc_random), fmt_num(r.ci_random),
                    fmt_num(r.ens_random), fmt_num(r.majority_random), fmt_num(r.acc_time), fmt_num(r.ci_time),
                    fmt_num(r.ens_time), fmt_num(r.majority_time)]
                   for r in rows]))
    b += _baseline_table(results)
    b += [fig("acc_vs_L"), fig("norm_effect")]
    b += [("h3", "Best model"), fig("confusion")]
    b += [("h3", "v. Probability of an increase, world map")] + _map_blocks(fig, figs, fig_dir)
    b += [("h3", "Hyperparameter search (Optuna)"), fig("covid_search_history"), fig("covid_search_importance")]
    b += [("h3", "vi. Discussion")] + [("p", p) for p in discussion.covid_discussion(results)]
    return b


def _map_blocks(fig, figs: dict, fig_dir: Path) -> list:
    """The map with a caption that counts its grey shapes, and the data's countries that pygal cannot draw."""
    side = fig_dir / "covid_world_map.json"
    info = json.loads(side.read_text()) if figs.get("world_map") and side.is_file() else {}
    extra = ""
    if "no_data" in info:
        n = info["no_data"]
        extra = (f"{n} {'country' if n == 1 else 'countries'} on the map {'has' if n == 1 else 'have'} no data (grey). "
                 "Hover over a country for its probability and date.")
    b = [fig("world_map", extra=extra)]
    if info.get("unmapped"):
        b.append(("p", f"Not on pygal's world map (no ISO code or no shape): {', '.join(info['unmapped'])}."))
    return b


def _baseline_table(results) -> list:
    """Test accuracy of every baseline at each L of the table above, on the same windows and splits."""
    by_l = covid_runs.baselines_by_L(results)
    if not by_l:
        return []
    names = ["majority", "weekly", "logistic", "boosted_trees"]
    rows = [[str(L), split] + [fmt_num(accs.get(n)) if n in accs else "-" for n in names]
            for L, by_split in sorted(by_l.items()) for split, accs in by_split.items() if accs]
    return [("p", "Baselines on the same windows and splits (test accuracy; the weekly rule needs L >= 7): the "
                  "majority class of the training part, the weekly rule, logistic regression and gradient-boosted "
                  "trees on the window relative to its last day, the last day's level and the weekday."),
            ("table", ["L", "split", "majority class", "weekly rule", "logistic regression", "gradient-boosted trees"],
             rows)]
