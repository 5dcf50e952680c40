"""Preprocessing and architecture of the reported models, written from their logged params (not from memory).

The model text is `str(model)` of the trainable's own model class rebuilt from the run's config, so it cannot
drift from what was trained; if the trainables cannot be imported the params alone are reported.
"""
from __future__ import annotations

import dataclasses
import json

from analysis.results import RunInfo


def config_values(run: RunInfo, cls) -> dict:
    """The run's params for the fields of a config dataclass, decoded (study/ logs non-strings as JSON)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name not in run.params:
            continue
        text = run.params[f.name]
        try:
            out[f.name] = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            out[f.name] = text
        if isinstance(f.default, str) and not isinstance(out[f.name], str):
            out[f.name] = text  # a string field whose value looks like a number ("1e-3" is still a string field)
    return out


def _model_text(model) -> str:
    n = sum(p.numel() for p in model.parameters())
    return f"{model}\n\n{n:,} trainable parameters"


def sequence_model(run: RunInfo) -> str | None:
    try:
        from trainables.sequence import SequenceClassifier, SequenceConfig

        cfg = SequenceConfig(**config_values(run, SequenceConfig))
        return _model_text(SequenceClassifier(cfg))
    except Exception:  # old params, or no torch here: the params table still describes the run
        return None


def vae_model(run: RunInfo) -> str | None:
    try:
        from trainables.vae import VAEConfig
        from trainables.vae_models import build_vae

        cfg = VAEConfig(**config_values(run, VAEConfig))
        return _model_text(build_vae(cfg.arch, cfg.image_size, cfg.latent_dim, cfg.hidden, cfg.learn_sigma, cfg.sigma))
    except Exception:
        return None


def sequence_preprocessing(run: RunInfo, summary: dict | None) -> list[str]:
    """Sentences on how the windows were made, with this run's values."""
    p = run.param
    rev = p("revisions", "clip")
    sel = p("selection", "any-pair")
    how = {
        "reference": f"countries whose correlation with {p('reference')} exceeds {p('threshold')}",
        "any-pair": f"every country that is in at least one pair with correlation above {p('threshold')}",
        "k-partners": f"countries with at least {p('min_partners')} partners above {p('threshold')}",
    }.get(sel, sel)
    lines = [
        f"Daily new cases are the day-to-day differences of the cumulative CSSE counts (date range: {p('date_range', 'full')}); "
        + ("negative steps (downward revisions) are set to 0." if rev == "clip" else "negative steps are kept."),
        f"Set C ({sel}): {how}; Pearson correlation of the daily new-case series.",
        f"Each country in C gives sliding windows of L={p('seq_len')} days of new cases; label rule '{p('label', 'next-higher')}' "
        + ("(1 when the next day's new cases exceed the window's last day); "
           if p("label", "next-higher") == "next-higher" else "(1 when the next day has any new cases); ")
        + f"input normalisation '{p('norm', 'log1p')}'.",
        f"Split '{p('split', 'random')}' with train fraction {p('train_frac', '0.75')}; every run also trains and scores on "
        "the leakage-free time split (test_acc_time).",
    ]
    if summary:
        lines.append(f"{summary.get('n_train', '?')} training and {summary.get('n_test', '?')} test windows; "
                     f"always guessing the majority class would score {summary.get('majority_rate', float('nan')):.3f}."
                     if isinstance(summary.get("majority_rate"), (int, float)) else
                     f"{summary.get('n_train', '?')} training and {summary.get('n_test', '?')} test windows.")
    return lines


def vae_preprocessing(run: RunInfo) -> list[str]:
    p = run.param
    s = p("image_size", "32")
    return [
        f"Anime faces are decoded from the zip, resized to {s}x{s} with the '{p('resample', 'bilinear')}' filter "
        f"(no crop: the faces are already centred squares) and kept as uint8 (N,3,{s},{s}); pixels scaled to [0,1] per batch.",
        f"{p('max_images') or 'all'} images, a seeded {float(p('test_frac', '0.1')):.0%} held out for the held-out ELBO, "
        "reconstructions and interpolation.",
        f"Model '{p('arch', 'mlp')}', latent dimension {p('latent_dim')}, {p('likelihood', 'bernoulli')} pixel likelihood; "
        f"loss = reconstruction + kl_weight x KL with kl_weight={p('kl_weight')}; optimiser {p('optimizer', 'adam')}, "
        f"lr {p('lr')}, batch {p('batch_size')}, {p('epochs')} epochs.",
    ]
