"""The report section of any part whose trainable brings none of its own (a plugin, or one this machine cannot
import): what every study logs is enough. The objective and its direction come from the part's space tag, the
curves from the per-epoch metrics, the search from the part's Optuna study; nothing here knows the model.

`section(results, part, fig_dir, out_dir)` draws three figures into fig_dir (the objective per epoch of every
trial, the Optuna history, the parameter importances) and returns the blocks: the best trials with their states,
the chosen one's settings and final numbers, its `test_*` numbers apart (reported, never used to choose), and the
trainable's baselines on its data setting where it has them. Trials are named as `study show` names them (their
trial id) and their states are its states: a trial ASHA stopped is pruned, not complete.
"""
from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection

from analysis import figures_search
from analysis.common import curve_key, draw_figures, figure_block, plt, save, short_num
from analysis.results import RunInfo, StudyResults
from analysis.trial_states import optuna_states, trial_state
from trainables.names import BASELINE_TAG, CURVE_PREFIX, EPOCH, TEST_PREFIX

TOP = 5
# Optuna's trial states as the report says them (a pruned trial was stopped early by the scheduler, not finished)
STATE_WORDS = {"COMPLETE": "complete", "PRUNED": "pruned (stopped early by the scheduler)", "FAIL": "failed",
               "RUNNING": "running"}
NOT_SETTINGS = {"data_dir", "device", "num_threads", "impl"}  # where and how fast, not what a trial computes


def figures(part: str) -> list:
    """(part, key, caption, function(results, out_dir)) of the part's figures, named after the part."""
    return [
        (part, f"{part}_learning_curves", f"The objective per epoch of every finished {part} trial; the chosen one "
                                          "in red.", partial(fig_learning_curves, part=part)),
        (part, f"{part}_search_history", f"Optuna optimisation history of the {part} search.",
         partial(figures_search.fig_search_history, part=part)),
        (part, f"{part}_search_importance", f"Parameter importances (fANOVA) of the {part} search.",
         partial(figures_search.fig_search_importance, part=part)),
    ]


def fig_learning_curves(results: StudyResults, out_dir, part: str) -> Path | None:
    """Each finished trial's objective per epoch (its learning curve where it logs `epoch_<metric>` beside the
    scored number), grey; the chosen trial on top in red."""
    figure = f"{part}_learning_curves"
    metric, mode = results.objective(part)
    runs = results.select(part=part)
    key = curve_key(runs, metric)
    curves = [(r, r.history[key]) for r in runs if key in r.history and len(r.history[key][0])]
    if not curves:
        results.skip(figure, f"no finished {part} trial logged {metric} per epoch")
        return None
    chosen = results.chosen(part)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    # The other trials as one collection of lines (one artist: a plot call per trial took 12 s at 1,000 trials)
    rest = [np.column_stack([steps, values]) for run, (steps, values) in curves if run is not chosen]
    ax.add_collection(LineCollection(rest, colors="#7f7f7f", linewidths=1.0, alpha=0.5, zorder=2))
    single = np.array([xy[0] for xy in rest if len(xy) == 1]).reshape(-1, 2)  # a one-epoch curve is a point
    if len(single):
        ax.scatter(single[:, 0], single[:, 1], color="#7f7f7f", alpha=0.5, s=9, zorder=2)
    for run, (steps, values) in curves:
        if run is chosen:
            ax.plot(steps, values, color="#d62728", lw=2.2, marker="o", ms=3, zorder=3, label=f"chosen: {run.trial_id}")
    ax.autoscale_view()
    ax.plot([], [], color="#7f7f7f", alpha=0.5, label=f"other trials ({len(rest)})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric if key == metric else f"{metric} (each epoch's own value)")
    ax.set_title(f"{part}: {metric} per epoch, {len(curves)} finished trials "
                 f"({'higher' if mode == 'max' else 'lower'} is better)", fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, out_dir, f"{figure}.png")


def section(results: StudyResults, part: str, fig_dir: Path, out_dir: Path) -> list:
    """The part's learning curves, search, best trials and chosen trial; `results` is the part's view."""
    runs = results.select(part=part)
    trainable = next((p.trainable for p in results.parts() if p.name == part), part)
    listed = figures(part)
    figs = draw_figures(listed, results, fig_dir) if runs else {}
    fig = partial(figure_block, listed, figs, results=results, out_dir=out_dir)
    b: list = [("h2", f"Part {part}" + (f" (trainable {trainable})" if trainable != part else ""))]
    if not runs:
        return b + [("p", f"This study has no finished {part} trials.")]
    metric, mode = results.objective(part)
    found = optuna_states(results.study_dir)
    states = {r.run_id: trial_state(r, found) for r in [*runs, *results.failed]}
    groups = ", ".join(f"{n} {g or 'untagged'}" for g, n in sorted(Counter(r.group for r in runs).items()))
    counts = ", ".join(f"{n} {STATE_WORDS.get(s, s.lower())}" for s, n in sorted(Counter(states.values()).items()))
    b.append(("p", f"Trials are chosen on {metric} ({'higher' if mode == 'max' else 'lower'} is better) among the "
                   f"{len(runs)} that ran ({groups}); by state: {counts}. Numbers named {TEST_PREFIX}* are reported, "
                   "never used to choose."))
    b += [("h3", "Learning curves"), fig(f"{part}_learning_curves")]
    b += [("h3", "Hyperparameter search (Optuna)"), fig(f"{part}_search_history"), fig(f"{part}_search_importance")]
    chosen = results.chosen(part)
    return (b + _best_blocks(runs, metric, mode, states) + _chosen_blocks(chosen, metric, len(runs), states)
            + _baseline_blocks(results, chosen, metric))


def varying(runs: list[RunInfo]) -> list[str]:
    """The settings whose logged values differ between the runs."""
    keys = sorted(set().union(*(r.params for r in runs)) - NOT_SETTINGS)
    return [k for k in keys if len({r.params.get(k) for r in runs}) > 1]


def _best_blocks(runs: list[RunInfo], metric: str, mode: str, states: dict[str, str]) -> list:
    scored = sorted((r for r in runs if metric in r.metrics), key=lambda r: r.metrics[metric], reverse=mode == "max")
    if not scored:
        return [("h3", "Best trials"), ("p", f"No finished trial reported {metric}.")]
    keys = varying(runs)
    rows = [[r.trial_id, r.group, states[r.run_id], f"{r.metrics[metric]:.4g}",
             *(short_num(r.params.get(k)) for k in keys), str(_epochs(r))] for r in scored[:TOP]]
    return [("h3", "Best trials"), ("p", f"The {min(TOP, len(scored))} best of {len(scored)} on {metric}, with the "
                                         "settings that vary between trials." if len(scored) > 1 else
                                         f"One trial reported {metric}."),
            ("table", ["trial", "group", "state", metric, *keys, "epochs run"], rows)]


def _chosen_blocks(run: RunInfo | None, metric: str, n: int, states: dict[str, str]) -> list:
    b: list = [("h3", "The chosen trial")]
    if run is None:
        return b + [("p", f"No finished trial reported {metric}.")]
    final = {k: v for k, v in sorted(run.metrics.items()) if k != EPOCH and not k.startswith(TEST_PREFIX)
             and not (k.startswith(CURVE_PREFIX) and k[len(CURVE_PREFIX):] in run.metrics)}
    test = {k: v for k, v in sorted(run.metrics.items()) if k.startswith(TEST_PREFIX)}
    b += [("p", f"Trial {run.trial_id} ({run.group}, {states[run.run_id].lower()}): the best {metric}, "
                f"{run.metrics[metric]:.4g}, of the {n} trial{'s' if n != 1 else ''} that ran. Its settings and final "
                "numbers:"),
          ("table", ["setting", "value"], [[k, str(run.param(k))] for k in sorted(run.params)]),
          ("table", ["metric", "final value"], [[k, f"{v:.4g}"] for k, v in final.items()])]
    if test:
        b += [("p", "Reported, not used to choose:"), ("table", ["metric", "final value"],
                                                       [[k, f"{v:.4g}"] for k, v in test.items()])]
    return b


def _baseline_blocks(results: StudyResults, run: RunInfo | None, metric: str) -> list:
    """The chosen trial beside the trainable's baselines on its data setting (`StudyResults.baselines_of`): its
    numbers and theirs, metric by metric, on each split the baselines were scored on. Nothing for a part without
    baselines; a line saying why where the setting's baselines are missing or cannot be told apart."""
    if run is None or not results.baselines(run.part):
        return []
    b: list = [("h3", "Beside the baselines")]
    found = results.baselines_of(run)
    if found is None:
        return b + [("p", f"The part's baselines were fitted on data settings that what the runs logged cannot tell "
                          f"apart from trial {run.trial_id}'s: none is shown.")]
    if not found:
        return b + [("p", f"No baseline was fitted on the data setting of trial {run.trial_id} (a part's baselines are "
                          "fitted after its trials, on the settings of those that did not fail).")]
    keys = sorted(set().union(*(r.metrics for r in found)), key=lambda k: (k != metric, k.startswith(TEST_PREFIX), k))
    rows = [[f"trial {run.trial_id} (chosen)", run.param("split") or "-",
             *(f"{run.metrics[k]:.4g}" if k in run.metrics else "-" for k in keys)]]
    for r in sorted(found, key=lambda r: (r.params.get("split", ""), _baseline_name(r))):
        rows.append([_baseline_name(r), r.param("split") or "-",
                     *(f"{r.metrics[k]:.4g}" if k in r.metrics else "-" for k in keys)])
    return b + [("p", f"The chosen trial and the baselines fitted on its data setting, each on the split named "
                      f"({TEST_PREFIX}* numbers are reported, never used to choose)."),
                ("table", ["trial or baseline", "split", *keys], rows)]


def _baseline_name(run: RunInfo) -> str:
    return run.tags.get(BASELINE_TAG) or run.param("baseline") or run.name


def _epochs(run: RunInfo) -> int:
    return max((int(steps[-1]) for steps, _ in run.history.values() if len(steps)), default=0)
