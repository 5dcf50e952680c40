"""The VAE's end-of-run importance-weighted estimate: a random subset of test images decoded k times, the rest
through a control variate; unbiased for the full-test-set value within its stated standard error, and cheap."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables import vae
from trainables.vae import VAEConfig, importance_weighted

S = 16


def _images(n: int, seed: int) -> np.ndarray:
    """Flat-coloured squares with noise: the per-image likelihood varies a lot between images, as with faces."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, (n, 3, 1, 1))
    noise = rng.normal(0, 12, (n, 3, S, S))
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def trained():
    cfg = VAEConfig(image_size=S, latent_dim=4, hidden=(64,), batch_size=64, epochs=3, iw_samples=0, device="cpu",
                    lr=3e-3)
    train, test = _images(1200, 0), _images(600, 1)
    captured = {}

    def keep(folder, model, cfg, summary, test_images, **kw):  # the trained model, without writing files
        captured["model"] = model

    original = vae.write_artifacts
    vae.write_artifacts = keep
    try:
        vae.fit(cfg, train, test[:64], test, artifact_dir="unused")
    finally:
        vae.write_artifacts = original
    return captured["model"].eval(), cfg, torch.from_numpy(test)


def test_a_subset_estimates_the_full_test_set_within_its_standard_error(trained) -> None:
    model, cfg, test = trained
    full = importance_weighted(model, test, cfg, k=16, fast=False, n_images=0)
    assert full["iw_images"] == len(test) and full["test_iw_nll_se"] == 0.0
    sub = importance_weighted(model, test, cfg, k=16, fast=False, n_images=64)
    assert sub["iw_images"] == 64 and sub["test_iw_nll_se"] > 0
    assert sub["test_iw_nll"] <= sub["test_iw_neg_elbo"]  # Jensen holds for the estimate too
    # the full run's own Monte Carlo noise is far below the subset's standard error: 4 SE is a 1-in-15,000 miss
    assert abs(sub["test_iw_nll"] - full["test_iw_nll"]) < 4 * sub["test_iw_nll_se"] + 0.05
    # and the control variate is what makes 64 images enough: the plain subset mean's error would be ~10x larger
    spread = _per_image_neg_elbo(model, test, cfg).std()
    assert sub["test_iw_nll_se"] < 0.2 * spread / np.sqrt(64)


def _per_image_neg_elbo(model, test, cfg) -> np.ndarray:
    with torch.no_grad():
        x = test.float() / 255
        logits, mu, logvar = model(x)
        return (vae.recon_nll(model, logits, x, cfg) + vae.kl_divergence(mu, logvar)).numpy()


def test_the_subset_is_what_gets_decoded_k_times(trained) -> None:
    model, cfg, test = trained
    decoded = []
    original = model.decode
    model.decode = lambda z: decoded.append(z.shape[0]) or original(z)
    try:
        importance_weighted(model, test, cfg, k=16, fast=False, n_images=64)
    finally:
        del model.decode
    assert sum(decoded) == len(test) + 64 * 16  # one decoding per test image (control variate) + n * k


def test_fit_reports_k_the_images_used_and_the_standard_error() -> None:
    cfg = VAEConfig(image_size=S, latent_dim=4, hidden=(32,), batch_size=64, epochs=1, iw_samples=8, iw_images=20,
                    device="cpu")
    res = vae.fit(cfg, _images(300, 2), _images(20, 4), _images(50, 3))
    assert res["iw_samples"] == 8 and res["iw_images"] == 20 and res["n_test"] == 50
    assert res["test_iw_nll_se"] > 0 and res["iw_time_s"] > 0
    assert res["test_iw_nll"] <= res["test_iw_neg_elbo"]
    every = vae.fit(VAEConfig(**{**cfg.__dict__, "iw_images": 0}), _images(300, 2), _images(20, 4), _images(50, 3))
    assert every["iw_images"] == 50 and every["test_iw_nll_se"] == 0.0


def test_negative_iw_images_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="iw_images"):
        VAEConfig(iw_images=-1)
