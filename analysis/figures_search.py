"""Optuna search figures: optimisation history and parameter importances.

A study keeps each part's Optuna study in its folder (`optuna.db`, study named after the part): the trials as
Optuna saw them (fixed runs first, then the searched ones; COMPLETE, PRUNED when ASHA stopped them, FAIL), with
the objective's name and direction as study attributes. The figures read that, with the distributions Optuna
stored with the trials. A study folder from before the storage existed has only its MLflow runs: then an
in-memory Optuna study is rebuilt from the finished child runs (fixed and search), with the Optuna distributions
of the space logged on the parent run (else inferred from the values), and Optuna's own fANOVA evaluator ranks
the params.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from analysis.common import plt, save
from analysis.results import RunInfo, StudyResults
from analysis.store import optuna_storage, reading
from trainables.names import GROUP_ATTR, OPTUNA_DB, SPACE_TAG, STOPPED_TAG, STUDY_KEYS

NOT_SEARCHED = {"seed", "data_dir", "device", "num_threads", "impl", "epochs", *STUDY_KEYS}
IMPORTANCE_TRIALS = 200  # fANOVA on at most this many trials (a random sample): see param_importances
DIRECTION = {"max": "maximize", "min": "minimize", "maximize": "maximize", "minimize": "minimize"}


def optuna_study(results: StudyResults, part: str):
    """The part's Optuna study from the study folder's storage; None for a folder without one. Read once per part
    and study (every figure and section of a report asks for it)."""
    key = ("optuna_study", part, results.study_dir)
    if key not in results.memo:
        results.memo[key] = _optuna_study(results, part)
    return results.memo[key]


def _optuna_study(results: StudyResults, part: str):
    import optuna

    if not results.study_dir:
        return None
    path = Path(results.study_dir) / OPTUNA_DB
    if not path.exists():
        return None
    storage = optuna_storage(path)  # read-only: a reader never writes, not even the schema
    with reading(path):
        if part not in optuna.get_all_study_names(storage):
            return None
        return optuna.load_study(study_name=part, storage=storage)


def objective(results: StudyResults, part: str, study=None) -> tuple[str, str]:
    """(metric, 'maximize'|'minimize') the search optimised: from the Optuna storage, else the study.space tag."""
    study = study if study is not None else optuna_study(results, part)
    if study is not None and study.user_attrs.get("metric"):
        return study.user_attrs["metric"], study.direction.name.lower()
    metric, mode = results.objective(part)
    return metric, DIRECTION[mode]


def search_trials(results: StudyResults, part: str) -> list[RunInfo]:
    """Every finished trial of the Optuna study, as MLflow runs: the fixed runs first (enqueued), then the search."""
    metric = objective(results, part)[0]
    runs = [r for r in results.select(part=part) if r.group in ("fixed", "search")]
    return [r for r in runs if np.isfinite(r.metrics.get(metric, math.nan))]


def _choice(choices, logged: str):
    """The typed choice a logged (string) param stands for: 16 for "16", 1.0 for "1.0"."""
    return next((c for c in choices if logged in (c, str(c), json.dumps(c))), logged)


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        return float(text)


def logged_space(results: StudyResults, part: str) -> dict | None:
    """The Optuna distributions the study logged on its parent run (tag study.space.<part>); None when it logged
    none, or (an older store) tuples instead of Optuna's JSON: then they are inferred from the values."""
    from optuna.distributions import json_to_distribution

    space = json.loads(results.parent_tags.get(SPACE_TAG + part) or "{}").get("space")
    if not space or not all(isinstance(v, str) for v in space.values()):
        return None
    return {name: json_to_distribution(text) for name, text in space.items()}


def infer_distributions(runs: list[RunInfo]) -> dict:
    """An Optuna distribution guessed from the logged values of each param that varies over the runs."""
    import optuna.distributions as d

    out = {}
    keys = sorted(set().union(*(r.logged_params or r.params for r in runs)) - NOT_SEARCHED)
    for key in keys:
        values = [r.params.get(key) for r in runs]
        if None in values or len(set(values)) < 2:
            continue
        try:
            nums = [_number(v) for v in values]
        except ValueError:
            nums = [math.nan]
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


def rebuild_study(results: StudyResults, part: str):
    """An in-memory Optuna study with one COMPLETE trial per finished run, in start order (older study folders)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric, direction = objective(results, part)
    runs = search_trials(results, part)
    dists = logged_space(results, part) or infer_distributions(runs)
    study = optuna.create_study(direction=direction)
    for r in runs:
        params = {k: _choice(d.choices, r.params[k]) if isinstance(d, optuna.distributions.CategoricalDistribution)
                  else _number(r.params[k]) for k, d in dists.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=r.metrics[metric],
                                                  user_attrs={"run": r.name}))
    return study, runs


def param_importances(results: StudyResults, part: str) -> dict[str, float]:
    """fANOVA importances (Optuna's evaluator, fixed seed) over the COMPLETE trials of the Optuna storage where
    the study has one, else of the rebuilt study; empty when fANOVA has nothing to explain: fewer than two
    trials that differ in a parameter of the common search space and in the objective.

    Over IMPORTANCE_TRIALS trials, a random sample of that many (seed 0; `importance_trials` says how many were
    used): fANOVA's cost grows faster than its trials (measured on 2 cores, two parameters, 64 trees: 1.9 s at
    100 trials, 6.1 s at 256, 50 s at 1,000), and 200 trials rank a search space's parameters as well as more do.
    Computed once per part and study (the figure and the discussion share it)."""
    key = ("importances", part)
    if key not in results.memo:
        results.memo[key] = _importances(results, part)
    return results.memo[key][0]


def importance_trials(results: StudyResults, part: str) -> tuple[int, int]:
    """(trials the importances were computed on, COMPLETE trials in all)."""
    param_importances(results, part)
    return results.memo[("importances", part)][1]


def _importances(results: StudyResults, part: str) -> tuple[dict[str, float], tuple[int, int]]:
    import optuna

    study = optuna_study(results, part)
    study = rebuild_study(results, part)[0] if study is None else study
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    space = optuna.search_space.intersection_search_space(study.get_trials(deepcopy=False))
    if len({t.value for t in trials}) < 2 or not any(len({repr(t.params[k]) for t in trials}) > 1 for k in space):
        return {}, (0, len(trials))
    used = trials
    if len(trials) > IMPORTANCE_TRIALS:
        picked = np.random.default_rng(0).choice(len(trials), IMPORTANCE_TRIALS, replace=False)
        used = [trials[i] for i in sorted(picked)]
        study = optuna.create_study(directions=study.directions)
        study.add_trials(used)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return found, (len(used), len(trials))


@dataclass(frozen=True)
class SearchHistory:
    """One part's trials in Optuna's order (fixed runs first), for the history figure and its title."""

    metric: str
    direction: str                 # maximize | minimize
    values: np.ndarray             # final value; for a stopped trial the last value it reported; FAIL: NaN
    state: list[str]               # COMPLETE | PRUNED (stopped early by ASHA) | FAIL
    group: list[str]               # fixed | search
    source: str                    # "optuna storage" | "MLflow runs"

    @property
    def title(self) -> str:
        """'54 trials: 48 fixed, 6 searched (2 stopped early)': the fixed runs are trials, not searched ones."""
        n_fixed, n_search = self.group.count("fixed"), self.group.count("search")
        extra = [f"{self.state.count('PRUNED')} stopped early"] if "PRUNED" in self.state else []
        extra += [f"{self.state.count('FAIL')} failed"] if "FAIL" in self.state else []
        return (f"{len(self.state)} trials: {n_fixed} fixed, {n_search} searched"
                + (f" ({', '.join(extra)})" if extra else ""))


def search_history(results: StudyResults, part: str) -> SearchHistory | None:
    """The history from the Optuna storage, else from the finished MLflow runs; None without any trial. Read once
    per part and study (two figures use it)."""
    key = ("search_history", part, results.study_dir)
    if key not in results.memo:
        results.memo[key] = _search_history(results, part)
    return results.memo[key]


def _search_history(results: StudyResults, part: str) -> SearchHistory | None:
    import optuna

    study = optuna_study(results, part)
    if study is None:
        runs = search_trials(results, part)
        if not runs:
            return None
        metric, direction = objective(results, part)
        return SearchHistory(
            metric=metric, direction=direction, values=np.array([r.metrics[metric] for r in runs]),
            state=["PRUNED" if STOPPED_TAG in r.tags else "COMPLETE" for r in runs],
            group=[r.group for r in runs], source="MLflow runs")
    metric, direction = objective(results, part, study)
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    trials = sorted(study.get_trials(deepcopy=False, states=ended), key=lambda t: t.number)
    if not trials:
        return None
    n_fixed = int(study.user_attrs.get("fixed_runs", 0))

    def value(t) -> float:
        if t.state == optuna.trial.TrialState.COMPLETE:
            return float(t.value)
        steps = sorted(t.intermediate_values)
        return float(t.intermediate_values[steps[-1]]) if steps else math.nan

    return SearchHistory(
        metric=metric, direction=direction, values=np.array([value(t) for t in trials]),
        state=[t.state.name for t in trials],
        group=[t.user_attrs.get(GROUP_ATTR, "fixed" if t.number < n_fixed else "search") for t in trials],
        source="optuna storage")


def fig_search_history(results: StudyResults, out_dir, part: str):
    """The objective of each trial (fixed runs and searched ones) and the best so far."""
    figure = f"{part}_search_history"
    hist = search_history(results, part)
    if hist is None:
        results.skip(figure, f"no finished {part} trials")
        return None
    y = hist.values
    x = np.arange(1, len(y) + 1)
    state, group = np.array(hist.state), np.array(hist.group)
    complete = state == "COMPLETE"
    # Optuna's best so far: over the trials that ran their whole budget (a stopped trial's value is partial)
    worst = -np.inf if hist.direction == "maximize" else np.inf
    best = np.where(complete, y, worst)
    best = np.maximum.accumulate(best) if hist.direction == "maximize" else np.minimum.accumulate(best)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for mask, colour, marker, label in (
        (complete & (group == "fixed"), "#7f7f7f", "s", "fixed run"),
        (complete & (group != "fixed"), "#1f77b4", "o", "searched trial"),
        (state == "PRUNED", "#ff7f0e", "v", "stopped early by ASHA (last value)"),
    ):
        if mask.any():
            ax.scatter(x[mask], y[mask], color=colour, marker=marker, label=label, zorder=3)
    if np.isfinite(best).any():
        ax.step(x, np.where(np.isfinite(best), best, np.nan), where="post", color="#d62728", label="best so far")
    ax.set_xlabel("trial (Optuna's order: fixed runs first)")
    ax.set_ylabel(f"final {hist.metric} ({hist.direction})")
    ax.set_title(f"Optuna optimisation history, {part}: {hist.title}", fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, out_dir, f"{figure}.png")


def fig_search_importance(results: StudyResults, out_dir, part: str):
    """Which searched hyperparameters explain the objective (fANOVA)."""
    figure = f"{part}_search_importance"
    imp = param_importances(results, part)
    if not imp:
        results.skip(figure, f"needs at least two finished {part} trials that differ in a searched parameter "
                             "and in the objective")
        return None
    hist = search_history(results, part)
    used = [g for g, st in zip(hist.group, hist.state) if st == "COMPLETE"] if hist else []
    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.5))
    ax.barh(names, [imp[n] for n in names], color="#1f77b4")
    for i, n in enumerate(names):
        ax.text(imp[n], i, f" {imp[n]:.2f}", va="center", fontsize=9)
    ax.set_xlim(0, max(imp.values()) * 1.2 or 1)
    ax.set_xlabel(f"fANOVA importance for {objective(results, part)[0]}")
    sampled, complete = importance_trials(results, part)
    sample = f"; fANOVA on a random {sampled} of them" if sampled < complete else ""
    ax.set_title(f"Parameter importances, {part} ({len(used)} finished trials: "
                 f"{used.count('fixed')} fixed, {used.count('search')} searched{sample})", fontsize=10)
    return save(fig, out_dir, f"{figure}.png")


# The built-in sections' figures (analysis.section_covid, section_vae): their parts are named after their trainables.
fig_covid_search_history = partial(fig_search_history, part="covid")
fig_covid_search_importance = partial(fig_search_importance, part="covid")
fig_vae_search_history = partial(fig_search_history, part="vae")
fig_vae_search_importance = partial(fig_search_importance, part="vae")
