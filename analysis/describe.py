"""Preprocessing and architecture of the reported models, written from their logged params (not from memory).

The model text is `str(model)` of the trainable's own model class rebuilt from the run's config, so it cannot
drift from what was trained.
"""
from __future__ import annotations

import json
import math

import numpy as np

from analysis.results import RunInfo
from trainables import registry


def run_config(run: RunInfo):
    """The run's config, built by its trainable's config class from its params (study/ logs non-strings as JSON;
    a string field keeps its text even where it looks like a number)."""
    found = registry.get(run.trainable)
    values = {}
    for key, default in found.full_config({}).items():
        if key in run.params:
            text = run.params[key]
            try:
                values[key] = json.loads(text)
            except (json.JSONDecodeError, TypeError):
                values[key] = text
            if isinstance(default, str) and not isinstance(values[key], str):
                values[key] = text
    return found.make_config(values)


def _model_text(model) -> str:
    n = sum(p.numel() for p in model.parameters())
    return f"{model}\n\n{n:,} trainable parameters"


def sequence_model(run: RunInfo) -> str:
    """One seed's model (K=1) of the run; its input width is what the data layer gives for the `features` setting."""
    from data.windows import inputs
    from trainables.sequence_model import StackedClassifier

    cfg = run_config(run)
    n_features = inputs(np.zeros((1, 1)), np.zeros(1, "datetime64[D]"), cfg.data.features, "none").shape[-1]
    return _model_text(StackedClassifier(cfg.cell, n_features, cfg.hidden_size, cfg.num_layers, cfg.dropout,
                                         [cfg.data.seed]))


def _vae(cfg):
    from trainables.vae_models import build_vae

    return build_vae(cfg.arch, cfg.image_size, cfg.latent_dim, cfg.hidden, cfg.learn_sigma, cfg.sigma)


def vae_model(run: RunInfo) -> str:
    return _model_text(_vae(run_config(run)))


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
        + ("negative steps (downward revisions) are set to 0: a negative step corrects earlier reporting, it is not a "
           "count of that day, and 0 keeps every input a count." if rev == "clip" else "negative steps are kept."),
        f"Set C ({sel}): {how}; Pearson correlation of the daily new-case series. Why: countries whose curves move "
        "together share one dynamic, so their windows are examples of the same forecasting problem.",
        f"Each country in C gives sliding windows of L={p('seq_len')} days of new cases; label rule '{p('label', 'next-higher')}' "
        + ("(1 when the next day's new cases exceed the window's last day); "
           if p("label", "next-higher") == "next-higher" else "(1 when the next day has any new cases); ")
        + f"input normalisation '{p('norm', 'log1p')}'"
        + {"log1p": " (log(1+x): daily counts span orders of magnitude between countries and over time, and a "
                    "recurrent unit's tanh/sigmoid saturates on large inputs; log1p keeps 0 at 0).",
           "none": " (raw counts).",
           "minmax": " (each window scaled to [0,1] by its own range: the shape of the curve, not its level).",
           "zscore": " (each country's counts centred and scaled by the mean and spread of its training days: "
                     "countries of very different size on one scale)."}
        .get(p("norm", "log1p"), "."),
        f"Split '{p('split', 'random')}' with train fraction {p('train_frac', '0.75')}; every run also trains and scores on "
        "the leakage-free time split (test_acc_time).",
    ]
    if summary:
        lines.append(f"{summary.get('n_train', '?')} training and {summary.get('n_test', '?')} test windows; "
                     f"always guessing the majority class would score {summary.get('majority_rate', float('nan')):.3f}."
                     if isinstance(summary.get("majority_rate"), (int, float)) else
                     f"{summary.get('n_train', '?')} training and {summary.get('n_test', '?')} test windows.")
    return lines


def _size_why(s: int, epoch_s: float) -> str:
    took = f" (this run: {epoch_s:.1f} s per training epoch)" if math.isfinite(epoch_s) else ""
    if s <= 16:
        return (f"Why {s}x{s}: a smoke-test size that trains in seconds{took}; hair colour and the rough place of face "
                "and eyes survive, detail does not.")
    if s < 64:
        return (f"Why {s}x{s}: it has {(64 // s) ** 2}x fewer pixels than 64x64, and encoder and decoder cost grows with the "
                f"pixels, so an epoch over all faces is affordable on a CPU{took}; face shape, hair and eyes stay "
                "recognisable, fine detail (eye highlights, hair strands) is lost.")
    return (f"Why {s}x{s}: the faces' own resolution in the shared set, so no detail is lost, at 4x the pixels (and "
            f"about 4x the compute per epoch) of 32x32{took}: a size for a GPU.")


def vae_preprocessing(run: RunInfo) -> list[str]:
    """The homework's Q2.i from this run's params: each choice with the reason for it, so it stays true for
    another configuration (size, architecture, likelihood, KL weight)."""
    from trainables.vae_models import DEFAULT_HIDDEN

    p, cfg = run.param, run_config(run)
    s, arch, latent, lik, w = cfg.image_size, cfg.arch, cfg.latent_dim, cfg.likelihood, cfg.kl_weight
    d = 3 * s * s
    hidden = cfg.hidden or DEFAULT_HIDDEN[arch]
    times = run.history.get("epoch_time_s")
    epoch_s = float(np.mean(times[1])) if times is not None and len(times[1]) else math.nan
    n_txt = f" ({sum(q.numel() for q in _vae(cfg).parameters()):,} parameters)"
    widths = "-".join(str(h) for h in hidden)
    lines = [
        f"Size: every face is resized to {s}x{s} with the '{p('resample', 'bilinear')}' filter, so an image is "
        f"D = 3x{s}x{s} = {d:,} values. " + _size_why(s, epoch_s),
        "No crop: the data set's images are already square face crops, centred by the face detector that made it "
        "(lbpcascade_animeface), so a further crop would only cut off hair and chin; the whole square is resized.",
    ]
    if lik == "gaussian":
        sigma = f"learned (starting at {cfg.sigma:g})" if cfg.learn_sigma else f"fixed at {cfg.sigma:g}"
        lines.append("Scaling: uint8 0..255 -> x/255 in [0,1], kept as uint8 and converted per batch (4x less memory). "
                     f"Gaussian pixel likelihood N(x; sigmoid(decoder), sigma^2), sigma {sigma}: a density on [0,1]^D, "
                     "so bits/dim are reported on the 8-bit scale (+ln 256 per value).")
    else:
        lines.append("Scaling: uint8 0..255 -> x/255 in [0,1], kept as uint8 and converted per batch (4x less memory); "
                     "no mean/std standardisation, because the Bernoulli likelihood (binary cross-entropy against the "
                     "decoder's logits) needs targets in [0,1], and the decoder's sigmoid is then directly the mean "
                     "image. Intensities are not binary, so these nats compare only with other Bernoulli runs.")
    if arch == "mlp":
        lines.append(f"Encoder 'mlp'{n_txt}: flatten the {d:,} values, fully connected layers of {widths} units (ReLU), "
                     f"then {2 * latent} outputs, the mean and log-variance of q(z|x). Why: the simplest VAE and the "
                     "cheapest per epoch at small sizes; it does not know that neighbouring pixels belong together, so "
                     "its weights grow with D.")
    elif arch == "conv":
        k = len(hidden)
        lines.append(f"Encoder 'conv'{n_txt}: {k} convolutions (4x4, stride 2, ReLU) with {widths} channels halve the "
                     f"image each time ({s} -> {s // 2 ** k}), then one linear layer to the mean and log-variance of "
                     f"q(z|x). Why: a face is made of local parts (eyes, mouth, hair edges) that look alike wherever they "
                     "are, so shared filters learn them with far fewer weights than fully connected layers.")
    else:
        lines.append(f"Encoder '{arch}'{n_txt}: the conv VAE of one homework report (conv 3x3 stride 2, conv 5x5 "
                     f"stride 2, channels {widths}, then linear to the mean and log-variance of q(z|x)); kept as the "
                     "benchmark's reference workload.")
    lines.append("Decoder: the encoder mirrored (the same widths in reverse"
                 + ("; transposed convolutions double the resolution back" if arch != "mlp" else "")
                 + f" to {s}x{s}), so both directions have the same capacity and the {latent}-dimensional code is the "
                 f"only bottleneck. Latent size {latent}: {d / latent:.0f}x fewer numbers than pixel values, room for "
                 "the coarse factors (hair colour and style, face position, lighting); a dimension the data does not "
                 "need costs nothing, because the KL term pushes it to the prior.")
    if w == 1:
        why_w = "weight 1 makes the loss exactly the negative ELBO, a bound on -log p(x)"
    elif w == 0:
        why_w = "weight 0 drops the prior term: an autoencoder with noise, whose codes nothing holds near N(0, I)"
    elif w > 1:
        why_w = "a weight above 1 pushes q(z|x) toward the prior at the cost of reconstruction"
    else:
        why_w = "a weight below 1 lets codes carry more about the image than the ELBO would pay for"
    lines.append(f"Loss: reconstruction + kl_weight x KL(q(z|x) || N(0, I)), kl_weight={w:g}: {why_w}. The reported "
                 "negative ELBO always uses weight 1, so runs with different weights are on one scale.")
    lines.append(f"{p('max_images') or 'all'} images, a seeded {float(p('test_frac', '0.1')):.0%} held out for the "
                 f"held-out ELBO, reconstructions and interpolation; optimiser {p('optimizer', 'adam')}, lr {p('lr')}, "
                 f"batch {p('batch_size')}, {p('epochs')} epochs.")
    return lines
