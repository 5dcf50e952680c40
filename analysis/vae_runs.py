"""Which VAE runs stand for KL weight 1, 100 and 0, and the image statistics the discussion quotes."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from analysis.common import best_run
from analysis.results import RunInfo, StudyResults
from trainables import registry
from trainables.names import IMAGES, SUMMARY

HOMEWORK_WEIGHTS = (1.0, 100.0, 0.0)


def kl_weight(run: RunInfo) -> float:
    return run.num("kl_weight", 1.0)


def weight_label(w: float) -> str:
    return f"KL x{w:g}"


def by_weight(results: StudyResults) -> dict[float, RunInfo]:
    """The run for each homework KL weight: fixed runs first (all VAE runs if none), the lowest validation
    negative ELBO (the study's objective; the held-out one in stores from before validation) when a weight was
    trained more than once."""
    runs = results.select(trainable="vae", group="fixed") or results.select(trainable="vae")
    out = {}
    for w in HOMEWORK_WEIGHTS:
        same = [r for r in runs if math.isclose(kl_weight(r), w)]
        pick = best_run(same, *objective(same)) or (same[0] if same else None)
        if pick is not None:
            out[w] = pick
    return out


def objective(runs: list[RunInfo]) -> tuple[str, str]:
    """The VAE objective (validation negative ELBO), or test_neg_elbo for runs logged before the validation part."""
    found = registry.get("vae")
    if runs and not any(found.metric in r.metrics for r in runs):
        return "test_neg_elbo", "min"
    return found.metric, found.mode


def chosen(results: StudyResults) -> RunInfo | None:
    """The study's best VAE trial (fixed and search) on the objective: validation, never test."""
    runs = results.select(trainable="vae")
    return best_run(runs, *objective(runs))


IW_KEYS = ("test_iw_nll", "test_iw_neg_elbo", "test_iw_bits_per_dim", "iw_samples", "iw_images", "n_test")


def iw_results(run: RunInfo) -> dict[str, float] | None:
    """The end-of-run importance-weighted estimate (trainables.vae): from summary.json, else from the run's
    metrics; None when the run did not compute it (iw_samples=0)."""
    try:
        data = json.loads(run.artifacts[SUMMARY].read_text()) if SUMMARY in run.artifacts else {}
    except (OSError, ValueError):
        data = {}
    out = {k: float(data[k]) for k in IW_KEYS if isinstance(data.get(k), (int, float))}
    out |= {k: float(run.metrics[k]) for k in IW_KEYS if k not in out and k in run.metrics}
    return out if np.isfinite(out.get("test_iw_nll", math.nan)) else None


def image_dims(run: RunInfo) -> int:
    """D = 3*S*S, for nats/image -> bits/dim."""
    s = run.num("image_size", 32.0)
    return int(3 * s * s)


def images(run: RunInfo) -> dict[str, np.ndarray] | None:
    path = run.artifacts.get(IMAGES)
    if path is None:
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# Thresholds that turn the image statistics into words (checked on real runs: a conv VAE at 32x32 after 8 epochs
# gave samples/real layout 0.86 at KL x1, 1.41 at x100 and -0.03 at x0; spread 0.78, 0.25 and 0.66 of the real
# images'; 16x16 MLP runs after 2 epochs had a spread of 0.14-0.20 at every weight: one average face).
ONE_IMAGE_SPREAD = 0.35  # samples' spread / real images' spread below this: the samples are nearly one image
FACE_LAYOUT = 0.5  # samples' layout (or mirror) correlation / the real images' at or above this: face structure
BLURRY_TV, NOISY_TV = 0.7, 1.3  # samples' total variation / the real images': below = blurrier, above = noisier


@dataclass
class ImageStats:
    """Numbers measured on a run's saved images (uint8, 0..255): the discussion's words come from these."""

    recon_rmse: float  # pixel RMSE between real test images and their reconstructions
    sample_std: float  # mean over pixels of the std across prior samples: 0 = every sample the same
    real_std: float  # the same statistic over the real images, for scale
    n_samples: int = 0
    n_real: int = 0
    # Median over images of the Pearson correlation with the mean real image: the shared face layout (light skin in
    # the middle, hair around, eyes at one height). Real faces score well above 0; structureless blobs near 0.
    sample_layout: float = math.nan
    real_layout: float = math.nan
    # Median correlation of an image with its left-right mirror: centred faces are roughly symmetric.
    sample_mirror: float = math.nan
    real_mirror: float = math.nan
    # Mean absolute difference of neighbouring pixels (total variation): edges and detail; blur lowers it.
    sample_tv: float = math.nan
    real_tv: float = math.nan


def _corr_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1), 0.0)


def layout_corr(images: np.ndarray, reference: np.ndarray) -> float:
    """Median correlation of each image with the mean of the reference images."""
    x = images.astype(np.float64).reshape(len(images), -1)
    mean = reference.astype(np.float64).mean(0).reshape(1, -1)
    return float(np.median(_corr_rows(x, np.broadcast_to(mean, x.shape))))


def mirror_corr(images: np.ndarray) -> float:
    """Median correlation of each image with its left-right mirror image."""
    x = images.astype(np.float64)
    return float(np.median(_corr_rows(x.reshape(len(x), -1), x[..., ::-1].reshape(len(x), -1))))


def total_variation(images: np.ndarray) -> float:
    x = images.astype(np.float64)
    return float((np.abs(np.diff(x, axis=-1)).mean() + np.abs(np.diff(x, axis=-2)).mean()) / 2)


def image_stats(run: RunInfo) -> ImageStats | None:
    imgs = images(run)
    if imgs is None or "real" not in imgs:
        return None
    real = imgs["real"].astype(np.float64)
    recon = imgs.get("recon")
    samples = imgs.get("samples")
    rmse = float(np.sqrt(np.mean((real - recon.astype(np.float64)) ** 2))) if recon is not None else math.nan
    std = float(samples.astype(np.float64).std(0).mean()) if samples is not None and len(samples) > 1 else math.nan
    out = ImageStats(rmse, std, float(real.std(0).mean()) if len(real) > 1 else math.nan,
                     n_samples=0 if samples is None else len(samples), n_real=len(real),
                     real_layout=layout_corr(real, real), real_mirror=mirror_corr(real), real_tv=total_variation(real))
    if samples is not None and len(samples):
        out.sample_layout = layout_corr(samples, real)
        out.sample_mirror = mirror_corr(samples)
        out.sample_tv = total_variation(samples)
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if np.isfinite(a) and np.isfinite(b) and b > 0 else math.nan


def describe_samples(s: ImageStats) -> tuple[str, str]:
    """(kind, sentence) for a run's prior samples: kind is 'one-image', 'face-like', 'no-face' or 'mixed'. The
    sentence quotes the numbers the words were decided from (thresholds above)."""
    spread = _ratio(s.sample_std, s.real_std)
    layout = _ratio(s.sample_layout, s.real_layout)
    mirror = _ratio(s.sample_mirror, s.real_mirror)
    tv = _ratio(s.sample_tv, s.real_tv)
    if not np.isfinite(spread) or not np.isfinite(layout):
        return "unknown", ""
    numbers = (f"correlation with the mean real face {s.sample_layout:.2f} (real images {s.real_layout:.2f}), "
               f"left-right mirror correlation {s.sample_mirror:.2f} (real {s.real_mirror:.2f}), spread across "
               f"samples {s.sample_std:.1f} per pixel (real {s.real_std:.1f})")
    sharp = ""
    if np.isfinite(tv):
        sharp = (f"; total variation {tv:.0%} of the real images', so " +
                 ("blurrier than real faces" if tv < BLURRY_TV else "noisier than real faces" if tv > NOISY_TV
                  else "about as sharp as real faces"))
    if spread < ONE_IMAGE_SPREAD:
        kind = "one-image"
        words = ("nearly one image: an average face repeated" if layout >= FACE_LAYOUT else
                 "nearly one image, with little face structure")
    elif layout >= FACE_LAYOUT and (not np.isfinite(mirror) or mirror >= FACE_LAYOUT):
        kind, words = "face-like", "face-like and varied: the face layout of the data, different from sample to sample"
    elif layout < FACE_LAYOUT and (not np.isfinite(mirror) or mirror < FACE_LAYOUT):
        kind, words = "no-face", "varied blobs of colour with little face structure"
    else:
        kind, words = "mixed", "partly face-like: one of the two face measures is at the data's level, the other is not"
    return kind, f"{words} (measured on {s.n_samples} samples against {s.n_real} held-out images: {numbers}{sharp})"
