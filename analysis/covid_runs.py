"""Which COVID runs answer which question: the fixed design, the best model, accuracy-vs-L groups, set C.

Kept apart from the plotting so the report's tables and the discussion use exactly the runs the figures use.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from analysis.common import CELLS, best_run, most_common, t_interval
from analysis.results import RunInfo, StudyResults
from data.errors import DataError
from trainables.names import BASELINE, BASELINE_TAG, SPACE_TAG, SUMMARY


def sequence_runs(results: StudyResults) -> list[RunInfo]:
    return results.select(trainable="covid")


def design_runs(results: StudyResults) -> list[RunInfo]:
    """The fixed grid (cells x L, seeds inside each trial) at its usual normalisation and features; all sequence
    runs if there is no fixed group."""
    runs = results.select(trainable="covid", group="fixed") or sequence_runs(results)
    for param in ("norm", "features"):
        common = most_common(runs, param)
        runs = [r for r in runs if common is None or r.params.get(param) == common]
    return runs


def objective(results: StudyResults) -> tuple[str, str]:
    """The metric the study chose on (logged with its search space), val_acc when it logged none. A store from
    before validation parts existed has no val_acc at all: its runs can only be ranked by test_acc."""
    space = json.loads(results.parent_tags.get(SPACE_TAG + "covid") or "{}")
    metric, mode = space.get("metric", "val_acc"), space.get("mode", "max")
    if not any(metric in r.metrics for r in sequence_runs(results)):
        return "test_acc", "max"
    return metric, mode


def best_sequence_run(results: StudyResults, need: str | None = None) -> RunInfo | None:
    """The chosen model: the best value of the study's objective (validation accuracy) over every sequence run,
    fixed and search; optionally only runs that have an artefact. Its test numbers are reported, never compared."""
    runs = sequence_runs(results)
    if need:
        runs = [r for r in runs if need in r.artifacts]
    metric, mode = objective(results)
    return best_run(runs, metric, mode)


def seeds_of(run: RunInfo) -> int:
    n = run.num("seeds", 1.0)
    return int(n) if np.isfinite(n) and n >= 1 else 1


def interval(runs: list[RunInfo], key: str, level: float = 0.95) -> tuple[float, float, int]:
    """Mean and t-interval half-width of a final metric over seeds.

    One run: its seeds are inside it (metric = mean over S seeds, `<key>_std` their sample std), so the interval
    is t(S-1) * std / sqrt(S). Several runs (one seed each, as older studies ran): over the runs' values.
    """
    runs = [r for r in runs if np.isfinite(r.metrics.get(key, math.nan))]
    if len(runs) != 1:
        return t_interval([r.metrics[key] for r in runs], level)
    run, n = runs[0], seeds_of(runs[0])
    std = run.metrics.get(f"{key}_std", math.nan)
    if n < 2 or not np.isfinite(std):
        return float(run.metrics[key]), math.nan, n
    from scipy import stats

    return float(run.metrics[key]), float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)), n


@dataclass
class AccRow:
    cell: str
    seq_len: int
    n: int
    acc_random: float
    ci_random: float
    acc_time: float
    ci_time: float
    n_time: int
    val_random: float = math.nan
    majority_random: float = math.nan
    majority_time: float = math.nan
    constant: int = 0  # main models (over seeds) that answered one class on the whole test part
    models: int = 0
    ens_random: float = math.nan  # the seed ensemble's test accuracy (mean probability of the S models)
    ens_time: float = math.nan


def acc_vs_L(results: StudyResults) -> list[AccRow]:
    """Final test accuracy per (cell, L) on the random and the time split, with intervals over seeds; the
    majority-class rate of each L (which changes with L) and how many models only predicted one class."""
    runs = design_runs(results)
    rows = []
    lens = sorted({int(r.num("seq_len")) for r in runs if np.isfinite(r.num("seq_len"))})
    for cell in CELLS:
        for L in lens:
            group = _one_trial([r for r in runs if r.params.get("cell") == cell and int(r.num("seq_len", -1)) == L],
                               results)
            if not group:
                continue
            rand = [r for r in group if r.params.get("split", "random") == "random"]
            m_r, h_r, n_r = interval(rand, "test_acc")
            m_t, h_t, n_t = interval(group, "test_acc_time")
            if not np.isfinite(m_t):
                m_t, h_t, n_t = interval([r for r in group if r.params.get("split") == "time"], "test_acc")
            summaries = [summary(r) for r in group]
            rows.append(AccRow(
                cell, L, n_r, m_r, h_r, m_t, h_t, n_t,
                val_random=interval(rand, "val_acc")[0],
                majority_random=_mean(summary(r).get("majority_rate") for r in rand),  # a time-split study has none
                majority_time=_mean(s.get("majority_rate_time") for s in summaries),
                constant=sum(int(s.get("constant_models", 0)) for s in summaries),
                models=sum(seeds_of(r) for r in group),
                ens_random=_mean(r.metrics.get("test_acc_ens") for r in rand if len(group) == 1),
                ens_time=_mean(r.metrics.get("test_acc_time_ens") for r in group if len(group) == 1)))
    return rows


def _one_trial(group: list[RunInfo], results: StudyResults) -> list[RunInfo]:
    """Several trials at one (cell, L), each with its seeds inside (extra fixed runs differing in other settings):
    the one chosen on the study's objective, so an interval is over one config's seeds, never across configs.
    Runs of one seed each (older studies) stay together: they are that config's seeds."""
    if len(group) < 2 or any(seeds_of(r) < 2 for r in group):
        return group
    metric, mode = objective(results)
    return [best_run(group, metric, mode)]


def _mean(values) -> float:
    v = [float(x) for x in values if x is not None and np.isfinite(float(x))]
    return float(np.mean(v)) if v else math.nan


def summary(run: RunInfo) -> dict:
    """The run's summary.json artefact (end-of-run numbers), or {} when it has none."""
    path = run.artifacts.get(SUMMARY)
    return json.loads(path.read_text()) if path is not None else {}


# ----------------------------------------------------------------------------------------------- baselines
def baselines_at(results: StudyResults, like: RunInfo, split: str) -> dict[str, RunInfo]:
    """The baseline runs on `like`'s data setting (date range, set C, L, label, trained split, fractions, seed),
    scored on `split`: name -> run."""
    keys = ("date_range", "revisions", "selection", "threshold", "seq_len", "label", "train_frac", "val_frac", "seed")
    out = {}
    for r in results.select(trainable=BASELINE):
        if r.params.get("split") != split or r.params.get("trained_split") != like.params.get("split", "random"):
            continue
        if all(r.params.get(k) == like.params.get(k) for k in keys if k in r.params):
            out[r.params.get("baseline", r.tags.get(BASELINE_TAG, "?"))] = r
    return out


def baselines_by_L(results: StudyResults) -> dict[int, dict[str, dict[str, float]]]:
    """Test accuracy of each baseline at each L of the design runs: {L: {split: {name: test_acc}}}."""
    out: dict[int, dict[str, dict[str, float]]] = {}
    for run in design_runs(results):
        L = int(run.num("seq_len", -1))
        if L in out:
            continue
        out[L] = {split: {name: float(r.metrics.get("test_acc", math.nan))
                          for name, r in baselines_at(results, run, split).items()}
                  for split in ("random", "time")}
    return {L: v for L, v in out.items() if any(v.values())}


def best_baseline(results: StudyResults, like: RunInfo, split: str) -> tuple[str, float] | None:
    """The baseline with the best validation accuracy on `like`'s setting (chosen like a model), and its test."""
    found = baselines_at(results, like, split)
    if not found:
        return None
    name = max(found, key=lambda n: found[n].metrics.get("val_acc", -1.0))
    return name, float(found[name].metrics.get("test_acc", math.nan))


def curve_runs(results: StudyResults) -> tuple[dict[str, list[RunInfo]], str]:
    """For each cell, the design runs at the L of the best design run on validation (so the three cells are
    compared at one L); the label says which."""
    runs = design_runs(results)
    metric, mode = objective(results)
    best = best_run(runs, metric, mode)
    if best is None:
        return {}, ""
    L = best.params.get("seq_len")
    out, elsewhere = {}, False
    for cell in CELLS:
        same = [r for r in runs if r.params.get("cell") == cell and r.params.get("seq_len") == L]
        if not same:
            own = best_run([r for r in runs if r.params.get("cell") == cell], metric, mode)
            same, elsewhere = ([own], True) if own else ([], elsewhere)
        if same:
            out[cell] = same
    where = f"L={L}" + (", or a cell's best L where it has no run at it" if elsewhere else "")
    return out, f"{where}, norm={best.params.get('norm')}"


def norm_pairs(results: StudyResults) -> tuple[dict[str, list[RunInfo]], str] | None:
    """Runs that differ only in normalisation: the (cell, L) with the most distinct norm values (needs >= 2)."""
    runs = results.select(trainable="covid", group="fixed") or sequence_runs(results)
    combos: dict[tuple, dict[str, list[RunInfo]]] = {}
    for r in runs:
        key = tuple(sorted((k, str(v)) for k, v in r.params.items() if k not in NOT_A_SETTING))
        combos.setdefault(key, {}).setdefault(r.params.get("norm", "?"), []).append(r)
    usable = [(k, v) for k, v in combos.items() if len(v) >= 2]
    if not usable:
        return None
    key, by_norm = max(usable, key=lambda kv: (len(kv[1]), sum(map(len, kv[1].values()))))
    p = dict(key)
    return by_norm, f"{p.get('cell')}, L={p.get('seq_len')}, split={p.get('split', 'random')}"


# Params that do not change what a run computes (or are the one compared): runs equal in every other are comparable
NOT_A_SETTING = {"norm", "data_dir", "device", "num_threads"}


def epochs_to_best(run: RunInfo, key: str = "val_acc") -> tuple[int, float] | None:
    """Epoch where the run first reached 99% of its best validation accuracy, and the wall time spent until then."""
    curve = run.history.get(key)
    if curve is None or not len(curve[0]):
        return None
    steps, vals = curve
    idx = int(np.argmax(vals >= 0.99 * vals.max()))
    times = run.history.get("epoch_time_s")
    spent = float(times[1][: idx + 1].sum()) if times is not None else math.nan
    return int(steps[idx]), spent


def set_c(results: StudyResults) -> dict | None:
    """The country set C of the chosen model: strategy and threshold from its params, the list from its summary
    (or recomputed from the data when the summary lacks it)."""
    run = best_sequence_run(results)
    if run is None:
        return None
    info = {
        "strategy": run.param("selection", "?"),
        "threshold": run.param("threshold", "?"),
        "reference": run.param("reference") if run.param("selection") == "reference" else None,
        "min_partners": run.param("min_partners") if run.param("selection") == "k-partners" else None,
    }
    logged = summary(run)
    info["countries"] = logged.get("countries_c") or logged.get("set_c")
    if info["countries"] is None:
        from analysis.covid_data import recompute_set_c

        try:
            info["countries"] = recompute_set_c(results, run)
        except DataError as err:  # no CSV here, or not the runs': the section says so
            info["error"] = str(err)
    info["size"] = len(info["countries"]) if info["countries"] is not None else logged.get("n_countries_c")
    return info
