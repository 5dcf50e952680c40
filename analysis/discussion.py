"""Discussion paragraphs written from the study's numbers: change the results and the sentences change.

Every sentence is built from a computed quantity (best L per cell, split gap, speed, KL/recon terms, sample
spread); a paragraph is left out when its runs are missing rather than filled with generic text.
"""
from __future__ import annotations

import json
import math

import numpy as np

from analysis import covid_runs, figures_search, vae_runs
from analysis.common import CELLS, fmt_num
from analysis.results import StudyResults


def _pm(mean: float, half: float, n: int) -> str:
    return f"{mean:.3f}" + (f" ± {half:.3f} (95% CI, n={n})" if n > 1 and np.isfinite(half) else f" (n={n})")


def best_L_paragraph(results: StudyResults) -> str | None:
    rows = [r for r in covid_runs.acc_vs_L(results) if np.isfinite(r.acc_random)]
    if not rows:
        return None
    parts = []
    for cell in CELLS:
        rs = [r for r in rows if r.cell == cell]
        if not rs:
            continue
        best = max(rs, key=lambda r: r.acc_random)
        worst = min(rs, key=lambda r: r.acc_random)
        s = f"the {cell.upper()} did best at L={best.seq_len} ({_pm(best.acc_random, best.ci_random, best.n)})"
        if len(rs) > 1:
            s += f", {100 * (best.acc_random - worst.acc_random):.1f} points above its worst L={worst.seq_len}"
        parts.append(s)
    top = max(rows, key=lambda r: r.acc_random)
    text = "Under the random split " + "; ".join(parts) + "."
    text += f" The best cell/length pair overall was {top.cell.upper()} with L={top.seq_len}."
    overlapping = [r for r in rows if r is not top and np.isfinite(top.ci_random) and np.isfinite(r.ci_random)
                   and r.acc_random + r.ci_random >= top.acc_random - top.ci_random]
    if overlapping:
        text += (f" Its interval overlaps {len(overlapping)} other pair(s), so the ranking among those is not "
                 "settled by these seeds.")
    return text


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
    text = (f"The leakage-free time split (train on earlier days, test on later ones) {verdict} "
            f"(gap range {100 * gaps.min():.1f} to {100 * gaps.max():.1f} points over {len(rows)} cell/L settings); "
            f"the largest gap was {100 * gaps.max():.1f} points for {big.cell.upper()} at L={big.seq_len}.")
    if mean > 1.0:
        text += (" Overlapping windows of one country fall on both sides of a random split, so part of the "
                 "random-split accuracy is likely recall of neighbouring windows rather than forecasting skill.")
    return text


def speed_paragraph(results: StudyResults) -> str | None:
    by_cell, label = covid_runs.curve_runs(results)
    design = covid_runs.design_runs(results)
    if not by_cell:
        return None
    epoch_s = {}
    for cell in CELLS:
        times = [float(np.mean(r.history["epoch_time_s"][1])) for r in design
                 if r.params.get("cell") == cell and "epoch_time_s" in r.history]
        if times:
            epoch_s[cell] = float(np.mean(times))
    reach = {}
    for cell, runs in by_cell.items():
        found = [covid_runs.epochs_to_best(r) for r in runs]
        found = [f for f in found if f]
        if found:
            reach[cell] = (float(np.mean([f[0] for f in found])), float(np.mean([f[1] for f in found])))
    out = []
    if epoch_s:
        fast = min(epoch_s, key=epoch_s.get)
        others = ", ".join(f"{c.upper()} {t:.2f} s" for c, t in epoch_s.items() if c != fast)
        out.append(f"Per epoch the {fast.upper()} was cheapest ({epoch_s[fast]:.2f} s"
                   + (f" vs {others}" if others else "") + ").")
    if reach:
        quick = min(reach, key=lambda c: reach[c][0])
        slow = max(reach, key=lambda c: reach[c][0])
        s = (f"At {label} the {quick.upper()} reached 99% of its best test accuracy first, after "
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


def map_paragraph(results: StudyResults) -> str | None:
    run = covid_runs.best_sequence_run(results, need="predictions.json")
    if run is None:
        return None
    pred = json.loads(run.artifacts["predictions.json"].read_text())
    items = sorted(((v["p_increase"], k) for k, v in pred["countries"].items() if v.get("p_increase") is not None),
                   reverse=True)
    if not items:
        return None
    up = sum(p > 0.5 for p, _ in items)
    top = ", ".join(f"{k} ({p:.2f})" for p, k in items[:3])
    low = ", ".join(f"{k} ({p:.2f})" for p, k in items[-3:][::-1])
    return (f"The best model ({run.param('cell', '?').upper()}, L={run.param('seq_len')}, test accuracy "
            f"{fmt_num(run.metrics.get('test_acc'))}) predicts a rise in new cases on {pred.get('date')} for {up} of "
            f"{len(items)} countries; most likely: {top}; least likely: {low}.")


def _short(text: str) -> str:
    try:
        return f"{float(text):.3g}"
    except ValueError:
        return text


def search_paragraph(results: StudyResults, trainable: str) -> str | None:
    runs = figures_search.search_trials(results, trainable)
    if not runs:
        return None
    metric, direction = figures_search.OBJECTIVE[trainable]
    pick = max if direction == "maximize" else min
    best = pick(runs, key=lambda r: r.metrics[metric])
    varied = figures_search.infer_distributions(runs)
    cfg = ", ".join(f"{k}={_short(best.params[k])}" for k in varied) or "no parameter varied"
    text = f"The search ran {len(runs)} trial{'s' if len(runs) != 1 else ''}; the best reached {metric} = {best.metrics[metric]:.4g} ({cfg})."
    try:
        imp = figures_search.param_importances(results, trainable)
    except Exception:
        imp = {}
    if imp:
        name, value = next(iter(imp.items()))
        text += f" By fANOVA, {name} explains the most variance ({value:.2f})."
    return text


def covid_discussion(results: StudyResults) -> list[str]:
    paras = [best_L_paragraph(results), split_gap_paragraph(results), speed_paragraph(results),
             norm_paragraph(results), map_paragraph(results), search_paragraph(results, "sequence")]
    return [p for p in paras if p]


def vae_discussion(results: StudyResults) -> list[str]:
    runs = vae_runs.by_weight(results)
    out = []
    if runs:
        parts = []
        for w, r in runs.items():
            m = r.metrics
            parts.append(f"{vae_runs.weight_label(w)}: negative ELBO {fmt_num(m.get('test_neg_elbo'), 1)} nats/image "
                         f"({fmt_num(m.get('test_bits_per_dim'))} bits/dim) = reconstruction "
                         f"{fmt_num(m.get('test_recon'), 1)} + KL {fmt_num(m.get('test_kl'), 2)}")
        out.append("Held-out results after the last epoch. " + "; ".join(parts) + ".")
    base = runs.get(1.0)
    stats = {w: vae_runs.image_stats(r) for w, r in runs.items()}
    for w, effect in ((100.0, "x100"), (0.0, "x0")):
        r = runs.get(w)
        if r is None or base is None:
            continue
        kl, kl1 = r.metrics.get("test_kl", math.nan), base.metrics.get("test_kl", math.nan)
        rec, rec1 = r.metrics.get("test_recon", math.nan), base.metrics.get("test_recon", math.nan)
        ratio = kl / kl1 if kl1 > 0 else math.nan
        if ratio < 0.1:
            kl_txt = f"the KL term collapsed to {kl:.2f} nats (from {kl1:.1f} at weight 1): q(z|x) is nearly the prior, the codes carry little about the image"
        elif ratio > 2:
            kl_txt = f"the KL term grew to {kl:.1f} nats ({ratio:.1f}x the {kl1:.1f} at weight 1): nothing keeps q(z|x) near the prior"
        else:
            kl_txt = f"the KL term moved from {kl1:.1f} to {kl:.1f} nats"
        rec_txt = (f"reconstruction term {rec:.1f} vs {rec1:.1f} nats/image" + (" (worse)" if rec > rec1 else " (better)"))
        s, s1 = stats.get(w), stats.get(1.0)
        img_txt = ""
        if s and s1:
            img_txt = (f" Pixel RMSE of the reconstructions is {s.recon_rmse:.1f} (weight 1: {s1.recon_rmse:.1f}, on 0..255); "
                       f"the prior samples vary by {s.sample_std:.1f} per pixel across samples (weight 1: {s1.sample_std:.1f}, "
                       f"real images: {s.real_std:.1f})")
            if s.sample_std < 0.25 * s1.sample_std:
                img_txt += ", so the samples are nearly all the same average face."
            elif w == 0.0 and s.sample_std > s1.sample_std:
                img_txt += (", but spread is not quality: with no KL pull the codes leave the N(0, I) region, so "
                            "prior samples land where the decoder was never trained.")
            else:
                img_txt += "."
        out.append(f"KL {effect}: {kl_txt}; {rec_txt}.{img_txt}")
    all_vae = [r for r in results.select(trainable="vae") if {"test_kl", "test_recon"} <= set(r.metrics)
               and vae_runs.kl_weight(r) > 0]
    if len(all_vae) >= 3:
        from scipy.stats import spearmanr

        w = [vae_runs.kl_weight(r) for r in all_vae]
        rho_kl = spearmanr(w, [r.metrics["test_kl"] for r in all_vae]).statistic
        rho_rec = spearmanr(w, [r.metrics["test_recon"] for r in all_vae]).statistic
        out.append(f"Across {len(all_vae)} VAE runs with a positive KL weight, the weight's rank correlation is "
                   f"{rho_kl:+.2f} with the KL term and {rho_rec:+.2f} with the reconstruction term: "
                   + ("a heavier KL weight buys a smaller KL with worse reconstructions."
                      if rho_kl < 0 < rho_rec else "the expected trade-off is not clean in these runs."))
    sp = search_paragraph(results, "vae")
    if sp:
        out.append(sp)
    return out
