"""The VAE trainable on small synthetic faces (CPU, seconds), plus one integration test on real faces."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from trainables import vae, vae_models
from trainables.common import NonFiniteLossError
from trainables.vae import VAEConfig, fit, interpolate, reconstruct, sample

S = 16
SMALL = dict(image_size=S, latent_dim=4, hidden=(64,), batch_size=32, epochs=3, iw_samples=4, device="cpu", lr=2e-3)


def _faces(n: int, seed: int) -> np.ndarray:
    """Face-like structure a VAE can learn fast: a coloured disc on a gradient background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:S, 0:S] / (S - 1)
    out = np.empty((n, 3, S, S), np.uint8)
    for i in range(n):
        bg = rng.uniform(0, 1, 3)[:, None, None] * (0.5 + 0.5 * yy)
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
        img = np.where(disc, rng.uniform(0, 1, 3)[:, None, None], bg)
        out[i] = np.clip(img * 255 + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _faces(160, 0), _faces(32, 3), _faces(48, 1)  # train, validation, test


def _run(data, report=None, artifact_dir=None, **overrides) -> dict:
    return fit(VAEConfig(**{**SMALL, **overrides}), *data, report, artifact_dir=artifact_dir)


def _curve(data, **overrides) -> list[dict]:
    history: list[dict] = []
    _run(data, history.append, **overrides)
    return history


def _untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.endswith("time_s")}


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_loss_falls_and_metrics_are_named(data, arch):
    hist = _curve(data, arch=arch, epochs=4, hidden=None if arch == "conv" else (64,))
    assert [m["epoch"] for m in hist] == [1, 2, 3, 4]
    for key in ("epoch_train_loss", "epoch_train_neg_elbo", "epoch_val_neg_elbo", "val_neg_elbo", "val_bits_per_dim",
                "val_recon", "val_kl", "epoch_time_s", "eval_time_s", "best_epoch"):
        assert all(math.isfinite(m[key]) for m in hist), key
    assert hist[-1]["epoch_train_loss"] < hist[0]["epoch_train_loss"]
    assert hist[-1]["epoch_val_neg_elbo"] < hist[0]["epoch_val_neg_elbo"]
    # val_* is the best epoch's so far; the test images are scored once, in the last report
    assert [m["val_loss"] for m in hist] == [min(h["epoch_val_loss"] for h in hist[:i + 1]) for i in range(len(hist))]
    assert not any(k.startswith("test_") for m in hist[:-1] for k in m)
    m = hist[-1]
    assert m["test_neg_elbo"] == pytest.approx(m["test_recon"] + m["test_kl"])
    assert m["test_bits_per_dim"] == pytest.approx(m["test_neg_elbo"] / (3 * S * S * math.log(2)))


def test_unknown_and_bad_keys_are_rejected():
    with pytest.raises(ValueError, match="arhc"):
        VAEConfig.from_dict({"arhc": "mlp"})
    with pytest.raises(ValueError, match="arhc"):
        vae.train({"arhc": "mlp"})  # before any data is touched
    with pytest.raises(ValueError, match="likelihood"):
        VAEConfig.from_dict({"likelihood": "poisson"})
    assert VAEConfig.from_dict({"hidden": [32, 16]}).hidden == (32, 16)
    assert VAEConfig.from_dict({"hidden": "32,16"}).hidden == (32, 16)


@pytest.mark.parametrize("arch", ["mlp", "conv", "homework_conv"])
def test_report_functions_shapes_and_dtypes(data, arch):
    model = vae_models.build_vae(arch, S, 6, None)
    real = data[1][:5]
    rec = reconstruct(model, real)
    assert rec.shape == (5, 3, S, S) and rec.dtype == np.uint8
    smp = sample(model, 7, seed=3)
    assert smp.shape == (7, 3, S, S) and smp.dtype == np.uint8
    assert np.array_equal(smp, sample(model, 7, seed=3))
    it = interpolate(model, real[0], real[1], steps=4)
    assert it.shape == (6, 3, S, S) and it.dtype == np.uint8
    assert np.array_equal(it[0], real[0]) and np.array_equal(it[-1], real[1])


def test_homework_conv_has_the_reports_shape():
    model = vae_models.build_vae("homework_conv", 64, 256, None)
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 64, (3, 3), (2, 2)), (64, 128, (5, 5), (2, 2))]
    mu, logvar = model.encode(torch.rand(2, 3, 64, 64))
    assert mu.shape == logvar.shape == (2, 256)
    assert model.decode(mu).shape == (2, 3, 64, 64)


@pytest.mark.parametrize("part,term", [("decoder", "recon"), ("encoder", "kl")])
def test_nan_is_reported_with_epoch_and_term(data, monkeypatch, part, term):
    build = vae_models.build_vae

    def poisoned(*args, **kwargs):
        model = build(*args, **kwargs)
        getattr(model, part).register_forward_hook(lambda mod, inp, out: out * float("nan"))
        return model

    monkeypatch.setattr(vae_models, "build_vae", poisoned)
    with pytest.raises(NonFiniteLossError, match=rf"non-finite {term} .*epoch 1"):
        _run(data, epochs=2)


def test_resume_continues_the_same_curve(data, tmp_path):
    cfg = VAEConfig(**{**SMALL, "epochs": 4})
    uninterrupted: list[dict] = []
    end = fit(cfg, *data, uninterrupted.append)

    class Stop(Exception):
        pass

    def stop_after_two(m):
        if m["epoch"] == 2:
            raise Stop
    with pytest.raises(Stop):
        fit(cfg, *data, stop_after_two, checkpoint_dir=tmp_path / "ckpt")
    resumed: list[dict] = []
    end2 = fit(cfg, *data, resumed.append, checkpoint_dir=tmp_path / "ckpt", resume_from=tmp_path / "ckpt")
    assert [m["epoch"] for m in resumed] == [3, 4]
    assert [_untimed(m) for m in resumed] == [_untimed(m) for m in uninterrupted[2:]]
    assert _untimed(end2) == _untimed(end)


def test_resume_refuses_a_different_model(data, tmp_path):
    """As the COVID classifier does: a checkpoint resumes under its own config only, but for the keys that change
    no epoch already run (the budget, patience, the end-of-run estimate's iw_*)."""
    fit(VAEConfig(**{**SMALL, "epochs": 1, "iw_samples": 0}), *data, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"different latent_dim \(4, now 8\);") as err:
        fit(VAEConfig(**{**SMALL, "latent_dim": 8}), *data, resume_from=tmp_path)
    assert "\n" not in str(err.value) and "iw_samples (" not in str(err.value)
    resumed: list[dict] = []
    fit(VAEConfig(**{**SMALL, "epochs": 2, "patience": 3}), *data, resumed.append, resume_from=tmp_path)
    assert [m["epoch"] for m in resumed] == [2]


def test_patience_stops_on_validation_and_scores_the_best_epoch(data, tmp_path):
    """A learning rate too high to keep improving: the run stops `patience` epochs after its best validation
    epoch, and its test numbers and model.pt are that epoch's weights (the same as a run stopped there)."""
    hist: list[dict] = []
    res = _run(data, hist.append, artifact_dir=tmp_path / "a", epochs=40, lr=0.03, patience=2, min_delta=1.0)
    best = hist[-1]["best_epoch"]
    assert hist[-1]["stopped_by_patience"] == 1.0 and len(hist) == best + 2 < 40
    assert hist[-1]["val_loss"] == hist[best - 1]["epoch_val_loss"]
    assert min(h["epoch_val_loss"] for h in hist) > hist[-1]["val_loss"] - 1.0  # no later gain beat min_delta
    assert hist[-1]["val_neg_elbo"] == hist[best - 1]["epoch_val_neg_elbo"]
    short = _run(data, epochs=best, lr=0.03)
    assert res["test_neg_elbo"] == pytest.approx(short["test_neg_elbo"], rel=1e-6)
    model, _ = vae.load_model(tmp_path / "a" / "model.pt")
    assert vae.evaluate(model, torch.from_numpy(data[2]), VAEConfig(**SMALL), False)["neg_elbo"] == pytest.approx(
        res["test_neg_elbo"], rel=1e-6)


def test_deterministic_on_cpu(data):
    a, b = _curve(data, epochs=2), _curve(data, epochs=2)
    assert [_untimed(m) for m in a] == [_untimed(m) for m in b]
    assert _untimed(a[-1]) != _untimed(_curve(data, epochs=2, seed=1)[-1])


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_importance_weighted_bound_is_above_the_elbo(data, likelihood):
    res = _run(data, epochs=2, iw_samples=16, likelihood=likelihood)
    assert res["iw_samples"] == 16
    assert res["test_iw_nll"] <= res["test_iw_neg_elbo"]  # log-likelihood bound >= ELBO
    assert res["test_iw_nll"] < res["test_neg_elbo"]


@pytest.mark.parametrize("kl_weight", [0.0, 100.0, 0.5])
def test_kl_weights_run(data, kl_weight):
    m = _curve(data, epochs=2, kl_weight=kl_weight)[-1]
    assert math.isfinite(m["epoch_train_loss"]) and math.isfinite(m["test_neg_elbo"])
    assert m["epoch_train_loss"] == pytest.approx(m["epoch_train_recon"] + kl_weight * m["epoch_train_kl"], rel=1e-5)
    assert m["epoch_train_neg_elbo"] == pytest.approx(m["epoch_train_recon"] + m["epoch_train_kl"], rel=1e-5)


def test_gaussian_learned_sigma_and_bits_per_dim_offset(data):
    m = _curve(data, epochs=2, likelihood="gaussian", learn_sigma=True, sigma=0.2)[-1]
    assert 0 < m["epoch_sigma"] < 1 and m["epoch_sigma"] != 0.2
    d = 3 * S * S
    assert m["test_bits_per_dim"] == pytest.approx((m["test_neg_elbo"] + d * math.log(256)) / (d * math.log(2)))


def test_artefacts_are_written(data, tmp_path):
    res = _run(data, epochs=1, artifact_dir=tmp_path / "art")
    art = tmp_path / "art"
    assert json.loads((art / "summary.json").read_text())["test_neg_elbo"] == pytest.approx(res["test_neg_elbo"])
    with np.load(art / "images.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert set(arrays) == {"real", "recon", "samples", "interp"}
    assert all(a.dtype == np.uint8 and a.shape[1:] == (3, S, S) for a in arrays.values())
    assert arrays["interp"].shape[0] == 10 and np.array_equal(arrays["interp"][0], data[2][0])
    assert np.array_equal(arrays["real"], data[2][:16])
    model, cfg = vae.load_model(art / "model.pt")
    assert cfg.image_size == S and np.array_equal(reconstruct(model, arrays["real"]), arrays["recon"])
    for name in ("samples.png", "reconstructions.png", "interpolation.png"):
        assert Image.open(art / name).size[0] > 0


def test_train_reads_a_folder_of_faces(tmp_path):
    folder = tmp_path / "anime_faces" / "images"
    folder.mkdir(parents=True)
    for i, img in enumerate(_faces(40, 2)):
        Image.fromarray(img.transpose(1, 2, 0)).resize((24, 24)).save(folder / f"{i}.png")
    seen: list[dict] = []
    res = vae.train({**SMALL, "epochs": 1, "data_dir": str(tmp_path), "max_images": 30}, seen.append)
    assert res["n_train"] + res["n_val"] + res["n_test"] == 30 and res["n_test"] == 3 and res["n_val"] == 2
    assert len(seen) == 1 and isinstance(res["data_hash"], str)


@pytest.mark.integration
def test_neg_elbo_falls_on_real_faces(real_data_dir, tmp_path):
    from data.faces import load_faces, split_three
    from data.location import faces_source

    faces = load_faces(faces_source(real_data_dir), size=16, cache_root=tmp_path, progress=False, max_images=512)
    assert faces.images.shape == (512, 3, 16, 16)
    parts = split_three(512, val_frac=0.05, test_frac=0.1, seed=0)
    cfg = VAEConfig(image_size=16, epochs=2, batch_size=64, iw_samples=8, device="cpu")
    hist: list[dict] = []
    res = fit(cfg, *(faces.images[p] for p in parts), hist.append)
    assert hist[1]["epoch_train_neg_elbo"] < hist[0]["epoch_train_neg_elbo"]
    assert hist[1]["epoch_val_neg_elbo"] < hist[0]["epoch_val_neg_elbo"]
    assert res["test_iw_nll"] <= res["test_iw_neg_elbo"]
