"""Optuna search figures rebuilt from the MLflow runs: optimisation history and parameter importances.

The search trials are the child runs with group=search. Their params were logged as strings, so an in-memory
Optuna study is rebuilt with distributions inferred from the values (numbers -> int/float ranges, log scale when
they span a decade or more; anything else -> categorical), then Optuna's own fANOVA evaluator ranks the params.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from analysis.common import plt, save
from analysis.results import RunInfo, StudyResults

OBJECTIVE = {"sequence": ("test_acc", "maximize"), "vae": ("test_neg_elbo", "minimize")}
NOT_SEARCHED = {"seed", "data_dir", "device", "num_threads", "impl", "epochs", "group"}
PART = {"sequence": "covid", "vae": "vae"}


def search_trials(results: StudyResults, trainable: str) -> list[RunInfo]:
    """Every trial of the Optuna study: the fixed runs are its first (enqueued) trials, the search the rest."""
    metric = OBJECTIVE[trainable][0]
    runs = [r for r in results.select(trainable=trainable) if r.tags.get("group") in ("fixed", "search")]
    return [r for r in runs if np.isfinite(r.metrics.get(metric, math.nan))]


def _choice(choices, logged: str):
    """The typed choice a logged (string) param stands for: 16 for "16", 1.0 for "1.0"."""
    import json

    for c in choices:
        if logged == c or logged == str(c) or logged == json.dumps(c):
            return c
    return logged


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        return float(text)


def logged_space(results: StudyResults, trainable: str) -> dict | None:
    """The search space the study logged on its parent run (tag study.space.<part>), if it did."""
    import json

    text = results.parent_tags.get(f"study.space.{PART[trainable]}")
    return json.loads(text)["space"] if text else None


def space_distributions(space: dict) -> dict:
    """Optuna distributions of a preset's declarative space (the study's own definition)."""
    import optuna.distributions as d

    out = {}
    for name, spec in space.items():
        kind = spec[0]
        if kind == "categorical":
            out[name] = d.CategoricalDistribution(list(spec[1]))
        elif kind == "int":
            out[name] = d.IntDistribution(int(spec[1]), int(spec[2]))
        else:
            out[name] = d.FloatDistribution(float(spec[1]), float(spec[2]), log=kind == "loguniform")
    return out


def infer_distributions(runs: list[RunInfo], space: dict | None = None) -> dict:
    """An Optuna distribution for each searched param: from the logged space, else guessed from the values."""
    import optuna.distributions as d

    if space:
        return space_distributions(space)

    out = {}
    keys = sorted(set().union(*(r.logged_params or r.params for r in runs)) - NOT_SEARCHED)
    for key in keys:
        values = [r.params.get(key) for r in runs]
        if None in values or len(set(values)) < 2:
            continue
        try:
            nums = [_number(v) for v in values]
        except (TypeError, ValueError):
            out[key] = d.CategoricalDistribution(sorted(set(values)))
            continue
        if not all(np.isfinite(nums)):
            out[key] = d.CategoricalDistribution(sorted(set(values)))
        elif len(set(nums)) < min(len(nums), 9) and not all(isinstance(n, int) for n in nums):
            # repeated float levels (e.g. kl_weight from a categorical space, where 0 has no log): categorical
            out[key] = d.CategoricalDistribution(sorted(set(values), key=float))
        elif all(isinstance(n, int) for n in nums):
            out[key] = d.IntDistribution(min(nums), max(nums))
        else:
            lo, hi = min(nums), max(nums)
            out[key] = d.FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 10)
    return out


def rebuild_study(results: StudyResults, trainable: str):
    """An in-memory Optuna study with one COMPLETE trial per search run, in start order."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric, direction = OBJECTIVE[trainable]
    runs = search_trials(results, trainable)
    dists = infer_distributions(runs, logged_space(results, trainable))
    study = optuna.create_study(direction=direction)
    for r in runs:
        params = {}
        for k, dist in dists.items():
            v = r.params[k]
            params[k] = _choice(dist.choices, v) if isinstance(dist, optuna.distributions.CategoricalDistribution) \
                else _number(v)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=r.metrics[metric],
                                                  user_attrs={"run": r.name}))
    return study, runs


def param_importances(results: StudyResults, trainable: str) -> dict[str, float]:
    """fANOVA importances (Optuna's evaluator, fixed seed); empty when fewer than two trials or no varying param."""
    import optuna

    study, runs = rebuild_study(results, trainable)
    if len(runs) < 2 or not study.trials[0].distributions:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))


def _history(results: StudyResults, out_dir, trainable: str):
    figure = f"{PART[trainable]}_search_history"
    runs = search_trials(results, trainable)
    if not runs:
        results.skip(figure, f"no finished {trainable} search trials")
        return None
    metric, direction = OBJECTIVE[trainable]
    y = np.array([r.metrics[metric] for r in runs])
    x = np.arange(1, len(y) + 1)
    best = np.maximum.accumulate(y) if direction == "maximize" else np.minimum.accumulate(y)
    stopped = np.array(["stopped_early" in r.tags for r in runs])
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.scatter(x[~stopped], y[~stopped], color="#1f77b4", label="trial (all epochs)", zorder=3)
    if stopped.any():
        ax.scatter(x[stopped], y[stopped], color="#ff7f0e", marker="v", label="trial stopped early by ASHA", zorder=3)
    ax.step(x, best, where="post", color="#d62728", label="best so far")
    ax.set_xlabel("trial (in start order)")
    ax.set_ylabel(f"final {metric}")
    ax.set_title(f"Optuna optimisation history, {PART[trainable]} ({len(runs)} search trials, {direction})")
    ax.legend(fontsize=8)
    return save(fig, out_dir, f"{figure}.png")


def _importance(results: StudyResults, out_dir, trainable: str):
    figure = f"{PART[trainable]}_search_importance"
    try:
        imp = param_importances(results, trainable)
    except Exception as err:  # too few or degenerate trials for fANOVA: say so rather than fail the report
        results.skip(figure, f"importance evaluation failed ({type(err).__name__}: {err})")
        return None
    if not imp:
        results.skip(figure, f"needs at least two {trainable} search trials that differ in a parameter")
        return None
    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.5))
    ax.barh(names, [imp[n] for n in names], color="#1f77b4")
    for i, n in enumerate(names):
        ax.text(imp[n], i, f" {imp[n]:.2f}", va="center", fontsize=9)
    ax.set_xlim(0, max(imp.values()) * 1.2 or 1)
    ax.set_xlabel(f"fANOVA importance for {OBJECTIVE[trainable][0]}")
    ax.set_title(f"Parameter importances, {PART[trainable]} search ({len(search_trials(results, trainable))} trials)")
    return save(fig, out_dir, f"{figure}.png")


def fig_covid_search_history(results: StudyResults, out_dir):
    """Final test accuracy of each COVID search trial and the best so far."""
    return _history(results, out_dir, "sequence")


def fig_covid_search_importance(results: StudyResults, out_dir):
    """Which searched hyperparameters explain the COVID test accuracy (fANOVA)."""
    return _importance(results, out_dir, "sequence")


def fig_vae_search_history(results: StudyResults, out_dir):
    """Final held-out negative ELBO of each VAE search trial and the best so far."""
    return _history(results, out_dir, "vae")


def fig_vae_search_importance(results: StudyResults, out_dir):
    """Which searched hyperparameters explain the VAE's held-out negative ELBO (fANOVA)."""
    return _importance(results, out_dir, "vae")
