"""Discussion paragraphs written from the study's numbers: change the results and the sentences change.

Every sentence is built from a computed quantity (best L per cell, split gap, speed, KL/recon terms, sample
spread); a paragraph is left out when its runs are missing rather than filled with generic text.
"""
from __future__ import annotations

import json
import math

import numpy as np

from analysis import covid_runs, discussion_covid, figures_search, vae_runs
from analysis.common import fmt_num, scored_epoch, short_num
from analysis.results import StudyResults
from trainables.names import PREDICTIONS


def map_paragraph(results: StudyResults) -> str | None:
    run = covid_runs.best_sequence_run(results, need=PREDICTIONS)
    if run is None:
        return None
    pred = json.loads(run.artifacts[PREDICTIONS].read_text())
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


def search_paragraph(results: StudyResults, trainable: str) -> str | None:
    runs = figures_search.search_trials(results, trainable)
    if not runs:
        return None
    metric, direction = figures_search.objective(results, trainable)
    best = (max if direction == "maximize" else min)(runs, key=lambda r: r.metrics[metric])
    varied = figures_search.infer_distributions(runs)
    cfg = ", ".join(f"{k}={short_num(best.params[k], 3)}" for k in varied) or "no parameter varied"
    text = (f"The search ran {len(runs)} trial{'s' if len(runs) != 1 else ''} (fixed runs included) on {metric}; the "
            f"best reached {metric} = {best.metrics[metric]:.4g} ({cfg}).")
    imp = figures_search.param_importances(results, trainable)
    if imp:
        name, value = next(iter(imp.items()))
        text += f" By fANOVA, {name} explains the most variance ({value:.2f})."
    return text


def covid_discussion(results: StudyResults) -> list[str]:
    paras = [*discussion_covid.paragraphs(results), map_paragraph(results), search_paragraph(results, "covid")]
    return [p for p in paras if p]


def _kl_effect(w: float, r, base, stats: dict) -> str:
    """One paragraph for KL x100 or x0 against KL x1: the two ELBO terms, then what the images show, in words
    decided by vae_runs.describe_samples from measured image statistics."""
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
    text = f"KL x{w:g}: {kl_txt}; {rec_txt}."
    s, s1 = stats.get(w), stats.get(1.0)
    if s and s1:
        text += f" Pixel RMSE of the reconstructions is {s.recon_rmse:.1f} (weight 1: {s1.recon_rmse:.1f}, on 0..255)."
    if s:
        kind, words = vae_runs.describe_samples(s)
        if words:
            text += f" Its prior samples are {words}."
        kind1 = vae_runs.describe_samples(s1)[0] if s1 else "unknown"
        if w == 0.0 and kind == "no-face" and ratio > 2:
            text += (f" A KL of {kl:.0f} nats says q(z|x) is far from N(0, I), so a draw z ~ N(0, I) need not resemble "
                     "any image's code: that fits samples without face structure"
                     + (", while the KL x1 model, held near the prior, decodes face-like ones." if kind1 == "face-like" else "."))
        elif w == 0.0 and kind == "face-like":
            text += " So in this run a weight of 0 did not cost the prior samples their face structure."
    return text


def iw_paragraph(runs: dict) -> str | None:
    """The importance-weighted estimate of -log p(x) against the ELBO of the same samples, per KL weight."""
    rows = [(w, r, vae_runs.iw_results(r)) for w, r in runs.items()]
    rows = [(w, r, iw) for w, r, iw in rows if iw and np.isfinite(iw.get("test_iw_neg_elbo", math.nan))]
    if not rows:
        return None
    parts, gaps = [], {}
    for w, r, iw in rows:
        gap = iw["test_iw_neg_elbo"] - iw["test_iw_nll"]
        gaps[w] = gap
        parts.append(f"{vae_runs.weight_label(w)}: {iw['test_iw_nll']:.1f} vs {iw['test_iw_neg_elbo']:.1f} nats/image "
                     f"(gap {gap:.1f} nats, {gap / (vae_runs.image_dims(r) * math.log(2)):.4f} bits/dim)")
    ks = sorted({int(iw.get("iw_samples", 0)) for _w, _r, iw in rows})
    k_txt = "k=" + "/".join(str(k) for k in ks)
    text = (f"Importance weighting with {k_txt} samples of q(z|x) per held-out image gives a tighter bound on "
            "-log p(x) than the ELBO of the same samples (IWAE estimate vs negative ELBO): " + "; ".join(parts) + ". "
            "The gap is a lower bound on the mean KL(q(z|x) || p(z|x)), how far the encoder's posterior is from the "
            "decoder's true one.")
    if len(gaps) > 1:
        big, small = max(gaps, key=gaps.get), min(gaps, key=gaps.get)
        text += (f" It is largest for {vae_runs.weight_label(big)} ({gaps[big]:.1f} nats): that encoder is the furthest "
                 f"from the posterior its own decoder implies; smallest for {vae_runs.weight_label(small)} "
                 f"({gaps[small]:.1f} nats).")
    return text


def _epoch(run) -> str:
    best, stopped = scored_epoch(run)
    return f"{best:.0f}" + (f", stopped at {stopped}" if stopped is not None else "")


def vae_choice(results: StudyResults) -> str | None:
    """What chose the VAE: validation, and the test numbers reported once for the weights it chose."""
    runs = results.select(trainable="vae")
    best = vae_runs.chosen(results)
    if best is None:
        return None
    metric, _ = vae_runs.objective(runs)
    if metric.startswith("test"):
        return (f"This study predates the validation part: its runs were ranked on {metric}, the held-out images "
                "that also report the result.")
    p = best.param
    n_val = covid_runs.summary(best).get("n_val")  # summary.json: the same reader for both trainables
    text = (f"Chosen on validation: every run is scored with the weights of its best validation epoch (its own loss, "
            f"reconstruction + KL weight x KL, on {n_val or 'the'} validation faces held out from training), and the "
            f"study's best trial is the lowest {metric} (negative ELBO at KL weight 1 on those faces) over "
            f"{len(runs)} runs: {best.name} ({p('arch', '?')}, latent {p('latent_dim')}, KL x{short_num(p('kl_weight'))}, "
            f"lr {short_num(p('lr'))}), {metric} = {fmt_num(best.metrics.get(metric), 1)} at epoch {_epoch(best)}.")
    if np.isfinite(best.metrics.get("test_neg_elbo", math.nan)):
        text += (f" Its test negative ELBO, computed once for those weights, is "
                 f"{fmt_num(best.metrics['test_neg_elbo'], 1)} nats/image; test numbers chose nothing.")
    return text


def vae_discussion(results: StudyResults) -> list[str]:
    runs = vae_runs.by_weight(results)
    out = []
    stats = {w: vae_runs.image_stats(r) for w, r in runs.items()}
    if runs:
        parts = [f"{vae_runs.weight_label(w)}: negative ELBO {fmt_num(r.metrics.get('test_neg_elbo'), 1)} nats/image "
                 f"({fmt_num(r.metrics.get('test_bits_per_dim'))} bits/dim) = reconstruction "
                 f"{fmt_num(r.metrics.get('test_recon'), 1)} + KL {fmt_num(r.metrics.get('test_kl'), 2)}"
                 for w, r in runs.items()]
        text = ("Held-out results, each run at its best validation epoch"
                + (f" ({', '.join(f'{vae_runs.weight_label(w)}: epoch {_epoch(r)}' for w, r in runs.items())})"
                   if any(np.isfinite(r.metrics.get('best_epoch', math.nan)) for r in runs.values()) else "")
                + ". " + "; ".join(parts) + ".")
        s1 = stats.get(1.0)
        words = vae_runs.describe_samples(s1)[1] if s1 else ""
        if words:
            text += f" The prior samples of the KL x1 model are {words}."
        out.append(text)
    base = runs.get(1.0)
    for w in (100.0, 0.0):
        r = runs.get(w)
        if r is not None and base is not None:
            out.append(_kl_effect(w, r, base, stats))
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
    return out + [p for p in (iw_paragraph(runs), search_paragraph(results, "vae")) if p]
