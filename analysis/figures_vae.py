"""Problem 2 figures: ELBO curves for KL x1/x100/x0, its two terms, image grids per weight, KL/recon trade-off.

Each `fig_*(results, out_dir) -> Path | None`; None (reason in `results.skipped`) when the runs are missing.
"""
from __future__ import annotations

import math

import numpy as np

from analysis import vae_runs
from analysis.common import plt, save, scored_epoch
from trainables.names import curve
from analysis.results import StudyResults

WEIGHT_COLOURS = {1.0: "#1f77b4", 100.0: "#d62728", 0.0: "#2ca02c"}


def _runs_or_skip(results: StudyResults, figure: str):
    runs = vae_runs.by_weight(results)
    if not runs:
        results.skip(figure, "no VAE run with KL weight 1, 100 or 0")
    return runs


def _log_if_wide(ax, values) -> None:
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0])
    if len(v) and v.max() / max(v.min(), 1e-12) > 20:
        ax.set_yscale("log")


# The curves drawn per run: training and validation (runs since the validation part), or training and held-out
# (older runs, which evaluated the test images every epoch and logged no validation).
SPLITS = (("train", "--", "train"), ("val", "-", "validation"), ("test", "-", "held-out"))


def _curve(run, key):
    """A per-epoch curve: `epoch_<key>`, else `key` when it has more than one point (an older run's curve; a
    plain name with one point is a number scored once, not a curve)."""
    c = run.history.get(curve(key))
    if c is None:
        c = run.history.get(key)
        if c is not None and len(c[0]) < 2:
            c = None
    return (c[0], c[1]) if c is not None and len(c[0]) else None


def _mark_best(ax, run, key, colour, scale: float = 1.0) -> None:
    """A dot on the validation curve at the epoch whose weights are scored; an x where patience stopped it."""
    c = _curve(run, key)
    best, stopped = scored_epoch(run)
    if c is None or not np.isfinite(best) or best not in c[0]:
        return
    ax.plot([best], [c[1][list(c[0]).index(best)] / scale], "o", color=colour, ms=5)
    if stopped is not None:
        ax.plot([c[0][-1]], [c[1][-1] / scale], "x", color=colour, ms=7)


def fig_vae_elbo(results: StudyResults, out_dir):
    """Negative ELBO per epoch, train (dashed) and validation (solid), in nats/image (left) and bits/dim (right);
    a dot marks the epoch whose weights are scored, an x where patience stopped the run."""
    runs = _runs_or_skip(results, "vae_elbo")
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    seen = []
    for w, run in runs.items():
        d_ln2 = vae_runs.image_dims(run) * math.log(2)
        for part, style, split in SPLITS:
            key = f"{part}_neg_elbo"
            c = _curve(run, key)
            if c is None:
                continue
            label = f"{vae_runs.weight_label(w)} {split}"
            axes[0].plot(c[0], c[1], style, color=WEIGHT_COLOURS[w], label=label)
            axes[1].plot(c[0], c[1] / d_ln2, style, color=WEIGHT_COLOURS[w], label=label)
            seen.extend(c[1])
            if part == "val":
                _mark_best(axes[0], run, key, WEIGHT_COLOURS[w])
                _mark_best(axes[1], run, key, WEIGHT_COLOURS[w], d_ln2)
    for ax, unit in zip(axes, ("nats / image", "bits / dim")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"negative ELBO ({unit})")
        _log_if_wide(ax, seen if unit.startswith("nats") else np.asarray(seen) / d_ln2)
        ax.legend(fontsize=8)
    fig.suptitle("VAE learning curves: negative ELBO (true ELBO, KL weight 1, whatever the training weight); "
                 "dot: the epoch scored, x: stopped by patience")
    fig.tight_layout()
    return save(fig, out_dir, "vae_elbo.png")


def fig_vae_terms(results: StudyResults, out_dir):
    """The two ELBO terms per epoch: reconstruction (nats/image) and KL(q(z|x) || p(z)) (nats, log scale)."""
    runs = _runs_or_skip(results, "vae_terms")
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, term, title in zip(axes, ("recon", "kl"), ("reconstruction term", "KL term")):
        seen = []
        for w, run in runs.items():
            for split, style, _ in SPLITS:
                c = _curve(run, f"{split}_{term}")
                if c is None:
                    continue
                y = np.maximum(c[1], 1e-3) if term == "kl" else c[1]
                ax.plot(c[0], y, style, color=WEIGHT_COLOURS[w], label=f"{vae_runs.weight_label(w)} {split}")
                seen.extend(y)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats / image")
        ax.set_title(title)
        if term == "kl":
            ax.set_yscale("log")
        else:
            _log_if_wide(ax, seen)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out_dir, "vae_terms.png")


def montage(images: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
    """uint8 (N,3,H,W) -> one (rows*H, cols*W, 3) image with white gutters."""
    n, _, h, w = images.shape
    rows = int(math.ceil(n / cols))
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = img.transpose(1, 2, 0)
    return out


def _grid_figure(results, out_dir, figure: str, needs: tuple[str, ...], build, title: str):
    """One panel per KL weight whose images.npz has the arrays `needs`; build(imgs) -> (montage array, caption)."""
    runs = _runs_or_skip(results, figure)
    panels = []
    for w, run in runs.items():
        imgs = vae_runs.images(run)
        if imgs and all(k in imgs for k in needs):
            panels.append((w, *build(imgs)))
    if not panels:
        if runs:
            results.skip(figure, "the VAE runs have no images.npz")
        return None
    width = max(p[1].shape[1] for p in panels)
    height = sum(p[1].shape[0] for p in panels)
    fig_w = 10.0
    fig, axes = plt.subplots(len(panels), 1, figsize=(fig_w, fig_w * height / width + 0.6 * len(panels)), squeeze=False)
    for ax, (w, img, caption) in zip(axes[:, 0], panels):
        ax.imshow(img, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{vae_runs.weight_label(w)}: {caption}", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, out_dir, f"{figure}.png")


def fig_vae_reconstructions(results: StudyResults, out_dir):
    """Per KL weight: real held-out images (top row) above their reconstructions (bottom row)."""
    def build(imgs):
        k = min(10, len(imgs["real"]))
        return montage(np.concatenate([imgs["real"][:k], imgs["recon"][:k]]), k), "top real, bottom reconstruction"
    return _grid_figure(results, out_dir, "vae_reconstructions", ("real", "recon"), build,
                        "Real images and their reconstructions")


def fig_vae_samples(results: StudyResults, out_dir):
    """Per KL weight: decoded samples z ~ p(z) = N(0, I)."""
    def build(imgs):
        s = imgs["samples"][:24]
        return montage(s, 12), f"{len(s)} samples from the prior"
    return _grid_figure(results, out_dir, "vae_samples", ("samples",), build, "Samples from the prior p(z)")


def fig_vae_interpolation(results: StudyResults, out_dir):
    """Per KL weight: decoded points on the line between two real images' latent means (real images at the ends)."""
    def build(imgs):
        strip = imgs["interp"]
        return montage(strip, len(strip), pad=2), f"real | {len(strip) - 2} interpolated | real"
    return _grid_figure(results, out_dir, "vae_interpolation", ("interp",), build,
                        "Interpolation between the latent codes of two real images")


def fig_vae_tradeoff(results: StudyResults, out_dir):
    """Final held-out KL against reconstruction term for every VAE trial; colour = KL weight used in training."""
    runs = [r for r in results.select(trainable="vae") if {"test_kl", "test_recon"} <= set(r.metrics)]
    if len(runs) < 2:
        results.skip("vae_tradeoff", "fewer than two VAE runs with test_kl and test_recon")
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5))
    w = np.array([vae_runs.kl_weight(r) for r in runs])
    kl = np.maximum([r.metrics["test_kl"] for r in runs], 1e-3)
    rec = np.array([r.metrics["test_recon"] for r in runs])
    search = np.array([r.group == "search" for r in runs])
    cw = np.log10(np.where(w > 0, w, np.nan))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#d62728")
    for mask, marker, label in ((search, "o", "search trial"), (~search, "s", "fixed run")):
        if mask.any():
            sc = ax.scatter(kl[mask], rec[mask], c=cw[mask], cmap=cmap, vmin=np.nanmin(cw) if np.isfinite(cw).any() else 0,
                            vmax=np.nanmax(cw) if np.isfinite(cw).any() else 1, marker=marker, s=60,
                            edgecolors="black", plotnonfinite=True, label=label)
    for r, x, y, ww in zip(runs, kl, rec, w):
        if r.group != "search":
            ax.annotate(vae_runs.weight_label(ww), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("KL(q(z|x) || p(z)), nats / image (held-out)")
    ax.set_ylabel("reconstruction term, nats / image (held-out)")
    ax.set_title(f"KL / reconstruction trade-off over {len(runs)} VAE runs")
    fig.colorbar(sc, ax=ax, label="log10 KL weight (red: weight 0)")
    ax.legend(fontsize=8)
    return save(fig, out_dir, "vae_tradeoff.png")
