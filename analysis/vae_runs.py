"""Which VAE runs stand for KL weight 1, 100 and 0, and the image statistics the discussion quotes."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.common import best_run
from analysis.results import RunInfo, StudyResults

HOMEWORK_WEIGHTS = (1.0, 100.0, 0.0)


def kl_weight(run: RunInfo) -> float:
    return run.num("kl_weight", 1.0)


def weight_label(w: float) -> str:
    return f"KL x{w:g}"


def by_weight(results: StudyResults) -> dict[float, RunInfo]:
    """The run for each homework KL weight: fixed runs first (all VAE runs if none), the lowest held-out
    negative ELBO when a weight was trained more than once."""
    runs = results.select(trainable="vae", group="fixed") or results.select(trainable="vae")
    out = {}
    for w in HOMEWORK_WEIGHTS:
        same = [r for r in runs if math.isclose(kl_weight(r), w)]
        pick = best_run(same, "test_neg_elbo", "min") or (same[0] if same else None)
        if pick is not None:
            out[w] = pick
    return out


def image_dims(run: RunInfo) -> int:
    """D = 3*S*S, for nats/image -> bits/dim."""
    s = run.num("image_size", 32.0)
    return int(3 * s * s)


def images(run: RunInfo) -> dict[str, np.ndarray] | None:
    path = run.artifacts.get("images.npz")
    if path is None:
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@dataclass
class ImageStats:
    recon_rmse: float  # pixel RMSE (0..255) between real test images and their reconstructions
    sample_std: float  # mean over pixels of the std across prior samples: 0 = every sample the same
    real_std: float  # the same statistic over the real images, for scale


def image_stats(run: RunInfo) -> ImageStats | None:
    imgs = images(run)
    if imgs is None or "real" not in imgs:
        return None
    real = imgs["real"].astype(np.float64)
    recon = imgs.get("recon")
    samples = imgs.get("samples")
    rmse = float(np.sqrt(np.mean((real - recon.astype(np.float64)) ** 2))) if recon is not None else math.nan
    std = float(samples.astype(np.float64).std(0).mean()) if samples is not None and len(samples) > 1 else math.nan
    return ImageStats(rmse, std, float(real.std(0).mean()) if len(real) > 1 else math.nan)
