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


def sequence_runs(results: StudyResults) -> list[RunInfo]:
    return results.select(trainable="sequence")


def design_runs(results: StudyResults) -> list[RunInfo]:
    """The fixed grid (cells x L x seeds) at its usual normalisation; all sequence runs if there is no fixed group."""
    runs = results.select(trainable="sequence", group="fixed") or sequence_runs(results)
    norm = most_common(runs, "norm")
    return [r for r in runs if norm is None or r.params.get("norm") == norm]


def best_sequence_run(results: StudyResults, need: str | None = None) -> RunInfo | None:
    """The best model: highest final test accuracy over every sequence run (fixed and search), optionally one with an artefact."""
    runs = sequence_runs(results)
    if need:
        runs = [r for r in runs if need in r.artifacts]
    return best_run(runs, "test_acc", "max")


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


def acc_vs_L(results: StudyResults) -> list[AccRow]:
    """Final test accuracy per (cell, L): random split from split=random runs, time split from test_acc_time
    (every run also scores the leakage-free time split) or from split=time runs when that metric is absent."""
    runs = design_runs(results)
    rows = []
    lens = sorted({int(r.num("seq_len")) for r in runs if np.isfinite(r.num("seq_len"))})
    for cell in CELLS:
        for L in lens:
            group = [r for r in runs if r.params.get("cell") == cell and int(r.num("seq_len", -1)) == L]
            if not group:
                continue
            rand = [r.metrics.get("test_acc", math.nan) for r in group if r.params.get("split", "random") == "random"]
            time_ = [r.metrics["test_acc_time"] for r in group if "test_acc_time" in r.metrics]
            if not time_:
                time_ = [r.metrics.get("test_acc", math.nan) for r in group if r.params.get("split") == "time"]
            m_r, h_r, n_r = t_interval(rand)
            m_t, h_t, n_t = t_interval(time_)
            rows.append(AccRow(cell, L, n_r, m_r, h_r, m_t, h_t, n_t))
    return rows


def curve_runs(results: StudyResults) -> tuple[dict[str, list[RunInfo]], str]:
    """For each cell, the design runs at the best run's L (so the three cells are compared at one L); label says which."""
    runs = design_runs(results)
    best = best_run(runs, "test_acc")
    if best is None:
        return {}, ""
    L = best.params.get("seq_len")
    out = {}
    for cell in CELLS:
        same = [r for r in runs if r.params.get("cell") == cell and r.params.get("seq_len") == L]
        if not same:
            own = best_run([r for r in runs if r.params.get("cell") == cell], "test_acc")
            same = [own] if own else []
        if same:
            out[cell] = same
    return out, f"L={L}, norm={best.params.get('norm')}"


def norm_pairs(results: StudyResults) -> tuple[dict[str, list[RunInfo]], str] | None:
    """Runs that differ only in normalisation: the (cell, L) with the most distinct norm values (needs >= 2)."""
    runs = results.select(trainable="sequence", group="fixed") or sequence_runs(results)
    combos: dict[tuple, dict[str, list[RunInfo]]] = {}
    for r in runs:
        key = (r.params.get("cell"), r.params.get("seq_len"), r.params.get("split", "random"))
        combos.setdefault(key, {}).setdefault(r.params.get("norm", "?"), []).append(r)
    usable = [(k, v) for k, v in combos.items() if len(v) >= 2]
    if not usable:
        return None
    key, by_norm = max(usable, key=lambda kv: (len(kv[1]), sum(map(len, kv[1].values()))))
    return by_norm, f"{key[0]}, L={key[1]}, split={key[2]}"


def epochs_to_best(run: RunInfo, key: str = "test_acc") -> tuple[int, float] | None:
    """Epoch where the run first reached 99% of its best test accuracy, and the wall time spent until then."""
    curve = run.history.get(key)
    if curve is None or not len(curve[0]):
        return None
    steps, vals = curve
    idx = int(np.argmax(vals >= 0.99 * vals.max()))
    times = run.history.get("epoch_time_s")
    spent = float(times[1][: idx + 1].sum()) if times is not None else math.nan
    return int(steps[idx]), spent


def set_c(results: StudyResults) -> dict | None:
    """The country set C of the best model: strategy and threshold from its params, the list from its summary
    (or recomputed from the data when the summary lacks it)."""
    run = best_sequence_run(results)
    if run is None:
        return None
    info = {
        "strategy": run.param("selection", "?"),
        "threshold": run.param("threshold", "?"),
        "reference": run.param("reference") if run.param("selection") == "reference" else None,
        "min_partners": run.param("min_partners") if run.param("selection") == "k-partners" else None,
        "countries": None,
    }
    summary = run.artifacts.get("summary.json")
    n_logged = None
    if summary is not None:
        data = json.loads(summary.read_text())
        info["countries"] = data.get("countries_c") or data.get("set_c")
        n_logged = data.get("n_countries_c")
    if info["countries"] is None:
        try:
            from analysis.covid_data import recompute_set_c

            info["countries"] = recompute_set_c(results, run)
        except Exception as err:  # data missing or its modules not there: the section says so
            info["error"] = f"{type(err).__name__}: {err}"
    info["size"] = len(info["countries"]) if info["countries"] is not None else n_logged
    return info
