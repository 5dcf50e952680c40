"""Preprocessing and architecture of the reported models, written from their logged params (not from memory).

The model text is `str(model)` of the trainable's own model class rebuilt from the run's config, so it cannot
drift from what was trained; if the trainables cannot be imported the params alone are reported.
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

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


def _n_params(cfg) -> int | None:
    try:
        from trainables.vae_models import build_vae

        model = build_vae(cfg["arch"], cfg["image_size"], cfg["latent_dim"], cfg["hidden"])
        return sum(q.numel() for q in model.parameters())
    except Exception:  # no torch here, or an old config: the sentence goes without the count
        return None


def _vae_hidden(run: RunInfo, arch: str) -> tuple[int, ...] | None:
    raw = run.param("hidden")
    if raw:
        try:
            value = json.loads(raw)
            return tuple(int(h) for h in (value if isinstance(value, list) else [value]))
        except (ValueError, TypeError):
            return tuple(int(h) for h in raw.replace(",", " ").replace("(", " ").replace(")", " ").split() if h.isdigit())
    try:
        from trainables.vae_models import DEFAULT_HIDDEN

        return DEFAULT_HIDDEN.get(arch)
    except Exception:
        return None


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
    p = run.param
    s = int(run.num("image_size", 32.0))
    d = 3 * s * s
    arch = p("arch", "mlp")
    latent = int(run.num("latent_dim", 32.0))
    hidden = _vae_hidden(run, arch)
    lik = p("likelihood", "bernoulli")
    w = run.num("kl_weight", 1.0)
    times = run.history.get("epoch_time_s")
    epoch_s = float(np.mean(times[1])) if times is not None and len(times[1]) else math.nan
    n = _n_params({"arch": arch, "image_size": s, "latent_dim": latent, "hidden": hidden})
    n_txt = f" ({n:,} parameters)" if n else ""
    widths = "-".join(str(h) for h in hidden) if hidden else "default"
    lines = [
        f"Size: every face is resized to {s}x{s} with the '{p('resample', 'bilinear')}' filter, so an image is "
        f"D = 3x{s}x{s} = {d:,} values. " + _size_why(s, epoch_s),
        "No crop: the data set's images are already square face crops, centred by the face detector that made it "
        "(lbpcascade_animeface), so a further crop would only cut off hair and chin; the whole square is resized.",
    ]
    if lik == "gaussian":
        sigma = f"learned (starting at {p('sigma', '0.1')})" if p("learn_sigma") in ("true", "True", "1") else f"fixed at {p('sigma', '0.1')}"
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
        k = len(hidden) if hidden else 2
        lines.append(f"Encoder 'conv'{n_txt}: {k} convolutions (4x4, stride 2, ReLU) with {widths} channels halve the "
                     f"image each time ({s} -> {s // 2 ** k}), then one linear layer to the mean and log-variance of "
                     f"q(z|x). Why: a face is made of local parts (eyes, mouth, hair edges) that look alike wherever they "
                     "are, so shared filters learn them with far fewer weights than fully connected layers.")
    else:
        lines.append(f"Encoder '{arch}'{n_txt}: the conv VAE of one homework report (conv 3x3 stride 2, conv 5x5 "
                     f"stride 2, channels {widths}, then linear to the mean and log-variance of q(z|x)); kept as the "
                     "benchmark's reference workload.")
    lines.append(f"Decoder: the encoder mirrored (the same widths in reverse"
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
