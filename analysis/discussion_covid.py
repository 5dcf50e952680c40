"""Problem 1's discussion, written from the study's numbers: the chosen model against the baselines, L, features,
one-class predictors, the split gap, speed and normalisation.

Every sentence comes from a computed quantity; a paragraph is left out when its runs are missing. Model numbers
are test accuracies with 95% t-intervals over the seeds inside a trial; the ranking among configurations uses the
validation part where a choice is made, and gains are measured against baselines on the same windows and splits
(the majority-class rate changes with L, so raw accuracy alone would rank L by its label balance).
"""
from __future__ import annotations

import math

import numpy as np

from analysis import covid_runs
from analysis.common import CELLS, fmt_num, short_num
from analysis.results import StudyResults
from trainables.names import BASELINE

BASELINE_NAMES = {"majority": "the majority class", "weekly": "the weekly rule", "logistic": "logistic regression",
                  "boosted_trees": "gradient-boosted trees"}


def _pm(mean: float, half: float, n: int) -> str:
    return f"{mean:.3f}" + (f" ± {half:.3f} (95% CI over {n} seeds)" if n > 1 and np.isfinite(half) else f" ({n} seed)")


def _points(x: float) -> str:
    return f"{100 * x:+.1f} points"


def chosen_paragraph(results: StudyResults) -> str | None:
    """The chosen configuration's test numbers on both splits, beside every baseline on its windows."""
    run = covid_runs.best_sequence_run(results)
    if run is None:
        return None
    metric, _ = covid_runs.objective(results)
    p = run.param
    text = (f"Chosen on {metric} ({fmt_num(run.metrics.get(metric))}) among {len(covid_runs.sequence_runs(results))} "
            f"trials: {p('cell', '?').upper()}, L={p('seq_len')}, hidden {p('hidden_size')}, features '{p('features', 'counts')}', "
            f"norm '{p('norm')}', lr {short_num(p('lr'))}. Its test accuracy is "
            f"{_pm(*covid_runs.interval([run], 'test_acc'))} on the {p('split', 'random')} split")
    # a time-split study's main models are the leakage-free ones: no twin to name twice
    text += "." if p("split", "random") == "time" else f" and {_pm(*covid_runs.interval([run], 'test_acc_time'))} on the time split."
    text += ensemble_sentence(run)
    for split, key in (("random", "test_acc"), ("time", "test_acc_time")):
        found = covid_runs.baselines_at(results, run, split)
        if not found:
            continue
        model = run.metrics.get(key, math.nan)
        parts = [f"{BASELINE_NAMES.get(n, n)} {fmt_num(b.metrics.get('test_acc'))}" for n, b in sorted(found.items())]
        best = max(found, key=lambda n: found[n].metrics.get("test_acc", -1))
        gap = model - found[best].metrics.get("test_acc", math.nan)
        verdict = "above" if gap > 0 else "below"
        text += (f" On the {split} split's test windows the baselines score {', '.join(parts)}; the chosen model is "
                 f"{abs(100 * gap):.1f} points {verdict} the best of them ({BASELINE_NAMES.get(best, best)}).")
    return text


def ensemble_sentence(run) -> str:
    """The seed ensemble beside the single models: the objective stays the single-model mean (see README)."""
    pairs = [(split, run.metrics.get(single, math.nan), run.metrics.get(f"{single}_ens", math.nan))
             for split, single in (("random", "test_acc"), ("time", "test_acc_time"))]
    pairs = [(s, one, ens) for s, one, ens in pairs if np.isfinite(one) and np.isfinite(ens)]
    if run.param("split", "random") == "time":
        pairs = pairs[:1]
        pairs = [("time", one, ens) for _, one, ens in pairs]
    if not pairs:
        return ""
    said = "; ".join(f"{ens:.3f} on the {s} split ({100 * (ens - one):+.1f} points over the single-model mean)"
                     for s, one, ens in pairs)
    best = run.metrics.get("best_epoch", math.nan)
    when = f" Each model is scored at its best validation epoch (mean {best:.1f})." if np.isfinite(best) else ""
    return f" Its {covid_runs.seeds_of(run)}-seed ensemble (the mean of the seeds' probabilities) scores {said}.{when}"


def baseline_gap_paragraph(results: StudyResults) -> str | None:
    """Per cell: its best and worst gain over the best baseline (chosen on validation) across L, both splits."""
    rows = covid_runs.acc_vs_L(results)
    design = covid_runs.design_runs(results)
    if not rows or not results.select(trainable=BASELINE):
        return None
    parts = []
    for split, attr, ci in (("random", "acc_random", "ci_random"), ("time", "acc_time", "ci_time")):
        gains = []
        for r in rows:
            like = next((d for d in design if int(d.num("seq_len", -1)) == r.seq_len), None)
            best = covid_runs.best_baseline(results, like, split) if like is not None else None
            if best is not None and np.isfinite(getattr(r, attr)):
                gains.append((getattr(r, attr) - best[1], r, best[0], getattr(r, ci)))
        if not gains:
            continue
        above = sum(g > 0 for g, *_ in gains)
        top = max(gains, key=lambda g: g[0])
        sure = sum(g - h > 0 for g, _, _, h in gains if np.isfinite(h))
        parts.append(f"on the {split} split {above} of {len(gains)} cell/L settings beat the best baseline at their L "
                     f"({sure} with the whole 95% interval above it); the largest gain is {_points(top[0])} "
                     f"({top[1].cell.upper()} at L={top[1].seq_len} against {BASELINE_NAMES.get(top[2], top[2])}, "
                     f"seed interval ± {fmt_num(top[3])})")
    if not parts:
        return None
    return ("Against the baselines on the same windows and splits (the best baseline at each L, chosen on validation), "
            + "; ".join(parts) + ".")


def length_paragraph(results: StudyResults) -> str | None:
    """Which L helps, measured as accuracy above the majority-class rate of that L (which itself changes with L)."""
    rows = [r for r in covid_runs.acc_vs_L(results) if np.isfinite(r.acc_random) and np.isfinite(r.majority_random)]
    if len(rows) < 2:
        return None
    lens = sorted({r.seq_len for r in rows})
    major = {L: np.mean([r.majority_random for r in rows if r.seq_len == L]) for L in lens}
    lo, hi = min(major.values()), max(major.values())
    if hi - lo >= 0.005:
        text = (f"The majority-class rate on the random split's test part moves with L, from {major[lens[0]]:.3f} at "
                f"L={lens[0]} to {major[lens[-1]]:.3f} at L={lens[-1]}, so accuracy is compared above it here.")
    else:
        text = (f"The majority-class rate on the random split's test part is {np.mean(list(major.values())):.3f} at "
                f"every L here; accuracy is compared above it.")
    parts = []
    for cell in CELLS:
        rs = [r for r in rows if r.cell == cell]
        if len(rs) < 2:
            continue
        lift = {r.seq_len: r.acc_random - r.majority_random for r in rs}
        best, worst = max(lift, key=lift.get), min(lift, key=lift.get)
        parts.append(f"the {cell.upper()} gains most above it at L={best} ({_points(lift[best])}) and least at L={worst} "
                     f"({_points(lift[worst])})")
    if not parts:
        return text
    joined = "; ".join(parts)
    return f"{text} {joined[0].upper()}{joined[1:]}."


def constant_paragraph(results: StudyResults) -> str | None:
    """Models that answered one class on the whole test part are majority-class predictors: name them."""
    rows = [r for r in covid_runs.acc_vs_L(results) if r.models]
    named = [f"{r.cell.upper()} at L={r.seq_len} ({r.constant} of {r.models} seeds)" for r in rows if r.constant]
    if not rows:
        return None
    if not named:
        return (f"None of the {sum(r.models for r in rows)} models behind the accuracy-vs-L table predicts a single "
                "class on the whole test part.")
    return (f"{sum(r.constant for r in rows)} of {sum(r.models for r in rows)} models behind the accuracy-vs-L table "
            f"predict a single class on the whole test part: {', '.join(named)}. Those are majority-class predictors, "
            "whatever their cell; their accuracy is the majority rate, not forecasting skill.")


def features_paragraph(results: StudyResults) -> str | None:
    """What the searched inputs did: best and mean validation accuracy per feature set over the search trials."""
    runs = [r for r in covid_runs.sequence_runs(results) if np.isfinite(r.metrics.get("val_acc", math.nan))]
    by: dict[str, list[float]] = {}
    for r in runs:
        by.setdefault(r.param("features", "counts"), []).append(r.metrics["val_acc"])
    if len(by) < 2:
        return None
    order = sorted(by, key=lambda f: -max(by[f]))
    parts = [f"'{f}' best {max(by[f]):.3f}, mean {np.mean(by[f]):.3f} over {len(by[f])} trial{'s' if len(by[f]) > 1 else ''}"
             for f in order]
    return (f"Validation accuracy by input features over the {len(runs)} trials (fixed and searched; trials differ in "
            f"other settings too): {'; '.join(parts)}.")


def split_gap_paragraph(results: StudyResults) -> str | None:
    rows = [r for r in covid_runs.acc_vs_L(results) if np.isfinite(r.acc_random) and np.isfinite(r.acc_time)]
    if not rows:
        return None
    gaps = np.array([r.acc_random - r.acc_time for r in rows])
    big = rows[int(np.argmax(gaps))]
    mean = 100 * gaps.mean()
    if abs(mean) < 1.0:
        verdict = "hardly differs from the random split"
    elif mean > 0:
        verdict = f"scores {mean:.1f} accuracy points lower on average than the random split"
    else:
        verdict = f"scores {-mean:.1f} points higher on average than the random split"
    text = (f"The leakage-free time split (train on earlier days, validate and test on later ones) {verdict} "
            f"(gap range {100 * gaps.min():.1f} to {100 * gaps.max():.1f} points over {len(rows)} cell/L settings); "
            f"the largest gap was {100 * gaps.max():.1f} points for {big.cell.upper()} at L={big.seq_len}.")
    maj = [(r.majority_random, r.majority_time) for r in rows if np.isfinite(r.majority_time)]
    if maj:
        text += (f" Part of the gap is the label balance: the majority-class rate is {np.mean([a for a, _ in maj]):.3f} "
                 f"on the random split's test part and {np.mean([b for _, b in maj]):.3f} on the time split's.")
    if mean > 1.0:
        text += (" Overlapping windows of one country fall on both sides of a random split, so part of the "
                 "random-split accuracy is likely recall of neighbouring windows rather than forecasting skill.")
    return text


# Params that do not change the cost of an epoch (or are the one compared)
SPEED_NEUTRAL = covid_runs.NOT_A_SETTING | {"cell", "lr", "weight_decay", "group"}


def speed_paragraph(results: StudyResults) -> str | None:
    by_cell, label = covid_runs.curve_runs(results)
    design = covid_runs.design_runs(results)
    if not by_cell:
        return None
    # epoch times only of runs equal in every setting that costs time but the cell (the fixed grid: each L)
    groups: dict[tuple, dict[str, list[float]]] = {}
    for r in design:
        if "epoch_time_s" in r.history:
            key = tuple(sorted((k, str(v)) for k, v in r.params.items() if k not in SPEED_NEUTRAL))
            groups.setdefault(key, {}).setdefault(r.params.get("cell"), []).append(
                float(np.mean(r.history["epoch_time_s"][1])))
    epoch_s = {}
    for cell in CELLS:
        times = [t for g in groups.values() if len(g) > 1 for t in g.get(cell, [])]
        if times:
            epoch_s[cell] = float(np.mean(times))
    reach = {}
    for cell, runs in by_cell.items():
        found = [f for f in (covid_runs.epochs_to_best(r) for r in runs) if f]
        if found:
            reach[cell] = (float(np.mean([f[0] for f in found])), float(np.mean([f[1] for f in found])))
    out = []
    if len(epoch_s) > 1:
        fast = min(epoch_s, key=epoch_s.get)
        others = ", ".join(f"{c.upper()} {t:.2f} s" for c, t in epoch_s.items() if c != fast)
        out.append(f"Per epoch (all seeds of a trial trained together) the {fast.upper()} was cheapest "
                   f"({epoch_s[fast]:.2f} s" + (f" vs {others}" if others else "") + ").")
    if reach:
        quick = min(reach, key=lambda c: reach[c][0])
        slow = max(reach, key=lambda c: reach[c][0])
        s = (f"At {label} the {quick.upper()} reached 99% of its best validation accuracy first, after "
             f"{reach[quick][0]:.1f} epochs on average ({fmt_num(reach[quick][1], 1)} s of training)")
        if slow != quick:
            s += f"; the {slow.upper()} needed {reach[slow][0]:.1f} epochs"
        out.append(s + ".")
    return " ".join(out) or None


def norm_paragraph(results: StudyResults) -> str | None:
    found = covid_runs.norm_pairs(results)
    if found is None:
        return None
    by_norm, label = found
    final = {n: float(np.mean([r.metrics.get("test_acc", math.nan) for r in runs])) for n, runs in by_norm.items()}
    best = max(final, key=final.get)
    worst = min(final, key=final.get)
    text = (f"Normalisation ({label}): final test accuracy "
            + ", ".join(f"{fmt_num(v)} with norm={n}" for n, v in sorted(final.items())) + ".")
    diff = 100 * (final[best] - final[worst])
    if diff < 1.0:
        text += " The inputs' scale made little difference here."
    else:
        text += (f" norm={best} beat norm={worst} by {diff:.1f} points"
                 + ("; a likely reason is that raw counts span several orders of magnitude across countries, "
                    "which saturating tanh/sigmoid units handle poorly." if worst == "none" else "."))
    return text


def paragraphs(results: StudyResults) -> list[str]:
    found = [chosen_paragraph(results), baseline_gap_paragraph(results), length_paragraph(results),
             constant_paragraph(results), features_paragraph(results), split_gap_paragraph(results),
             speed_paragraph(results), norm_paragraph(results)]
    return [p for p in found if p]
