"""The VAE trainable (assignment problem 2): config -> data -> model -> loss -> loop -> report functions.

``train(config)`` loads the anime faces through the data layer and calls ``fit``; ``fit`` takes in-memory uint8
images ``(N,3,S,S)`` so tests and the benchmark can feed synthetic arrays of the real shapes.

Conventions (every number is per image unless it says per dim):
- The loss is the negative ELBO with the KL term times ``kl_weight``: ``recon + kl_weight * KL(q(z|x) || N(0,I))``,
  KL in closed form, one reparameterised sample per image. ``*_neg_elbo`` always uses KL weight 1 (nats/image).
- ``likelihood="bernoulli"``: ``recon`` is the binary cross-entropy of the decoder's logits against the pixel
  intensities x = uint8/255 in [0,1] (plain BCE, not the continuous Bernoulli). That is the Bernoulli
  log-likelihood of the intensities, NOT a normalised density for continuous data, so its nats and bits/dim
  are comparable only between Bernoulli runs: ``bits_per_dim = neg_elbo / (3*S*S*ln 2)``.
- ``likelihood="gaussian"``: N(x; sigmoid(logits), sigma^2) per pixel, sigma fixed (``sigma``) or one learned
  log-sigma per model (``learn_sigma``; ``sigma`` is then its start). It is a density on [0,1]^D; bits/dim
  move it to the 8-bit scale: ``bits_per_dim = (neg_elbo + D*ln 256) / (D*ln 2)``, D = 3*S*S (the usual
  discretisation offset; without dequantisation noise it is an approximation, not a strict bound).
- Faces split train / validation / test (``val_frac``, ``test_frac``, seeded). ``val_*`` and ``test_*`` use a fixed
  noise generator (seed+1), so epochs differ by the model only. Validation picks each run's best epoch (its own
  loss, ``val_loss``) and a study's best trial (``val_neg_elbo``, KL weight 1); the test images are scored once,
  with the best epoch's weights.
- End of run: ``test_iw_nll`` = the test set's mean -log p(x), estimated by importance weighting with k =
  ``iw_samples`` samples of q(z|x), beside ``test_iw_neg_elbo`` (the single-sample ELBO averaged over the same k
  samples, MC KL); ``test_iw_nll <= test_iw_neg_elbo`` always (Jensen). Decoding every test image k times cost
  more than two training epochs, so only a random subset of ``iw_images`` test images is decoded k times, and the
  rest of the test set enters through a control variate (see ``importance_weighted``); ``test_iw_nll_se`` is the
  standard error that sub-sampling adds, ``iw_images`` the number used (``iw_images=0``: every test image, exact).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from trainables import vae_models
from trainables.common import (BEST_EPOCH, END_TIME, EVAL_TIME, IMAGES, MODEL, SUMMARY, BestEpochs, Report,
                               check_config_values, check_finite, config_from_dict, curve, end_epoch, epochs_to_run,
                               load_safely, resume_state, rng_state, save_model, seed_everything, set_rng_state,
                               start_fit, write_json)
from trainables import vae_model
from trainables.trainable import TORCH_WORKING_BYTES, ModelSpec, Trainable
from trainables.vae_models import (EVAL_BATCH, VAE, autocast, fast_path, interpolate, reconstruct,  # noqa: F401
                                   sample, to_float)


# ----------------------------------------------------------------------------------------------- config
VAE_LIMITS: dict[str, tuple[float, float]] = {
    "image_size": (4, 512), "latent_dim": (1, 4096), "sigma": (1e-6, 10.0), "kl_weight": (0.0, 1e6),
    "lr": (1e-8, 1.0), "batch_size": (1, 65_536), "epochs": (0, 100_000), "seed": (0, 2**31 - 1),
    "max_images": (1, 100_000_000), "num_threads": (0, 1024), "iw_samples": (0, 100_000),
    "iw_images": (0, 100_000_000), "hidden": (1, 65_536), "patience": (0, 100_000), "min_delta": (0.0, 1e9),
}
VAE_CHOICES = {"likelihood": ("bernoulli", "gaussian"), "optimizer": ("adam", "adamw", "sgd"),
               "device": ("auto", "cpu", "cuda")}


@dataclass(frozen=True)
class VAEConfig:
    """Every key has a default that trains sensibly on a 2-core CPU (32x32 MLP VAE: ~5 s per epoch of all faces)."""
    arch: str = "mlp"                 # mlp | conv | homework_conv (64x64, conv 3->64->128, 256-d latent)
    image_size: int = 32              # S: 16 | 28 | 32 | 64 (conv archs need S divisible by 2**len(hidden))
    latent_dim: int = 32
    hidden: tuple[int, ...] | None = None  # widths: mlp layers / conv channels; None = (512,256) | (32,64) | (64,128)
    likelihood: str = "bernoulli"     # bernoulli | gaussian (see module docstring)
    sigma: float = 0.1                # Gaussian pixel std (fixed, or the start of the learned one)
    learn_sigma: bool = False         # Gaussian: learn one log-sigma per model
    kl_weight: float = 1.0            # homework: 1, 100, 0; anything >= 0
    optimizer: str = "adam"           # adam | adamw | sgd (momentum 0.9)
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 10
    patience: int = 0                 # stop when val_loss has not improved for this many epochs; 0: never
    min_delta: float = 0.0            # an improvement is more than this (nats per image)
    seed: int = 0                     # weights, shuffling, noise and the train/validation/test split
    device: str = "auto"              # auto | cpu | cuda
    data_dir: str | None = None       # None: $STUDY_DATA_DIR, else the per-user cache (data.location)
    max_images: int | None = None     # None: every face the loader finds (20,963 in the shared zip)
    test_frac: float = 0.1            # held out for the test numbers (the same images at any val_frac)
    val_frac: float = 0.05            # taken from the rest for validation: what chooses and stops
    num_threads: int = 0              # torch CPU threads; 0 = leave as is
    iw_samples: int = 64              # k of the end-of-run importance-weighted estimate; 0 = skip
    iw_images: int = 128              # test images decoded k times for it (a random subset); 0 = all
    resample: str = "bilinear"        # resize filter of the faces loader

    def __post_init__(self) -> None:
        hidden = self.hidden
        if isinstance(hidden, str):
            hidden = [h for h in hidden.replace(",", " ").split()]
        if hidden is not None:
            if not all(isinstance(h, (int, str)) and not isinstance(h, bool) and str(h).strip().isdigit()
                       for h in hidden):
                raise ValueError(f"hidden={self.hidden!r}: expected whole numbers (layer widths)")
            object.__setattr__(self, "hidden", tuple(int(h) for h in hidden))
        check_config_values(self, VAE_LIMITS, {"arch": tuple(vae_models.ARCHS), **VAE_CHOICES})
        if not 0 < self.test_frac < 1:
            raise ValueError(f"test_frac={self.test_frac!r}: must be in (0, 1)")
        if not 0 < self.val_frac < 1 - self.test_frac:
            raise ValueError(f"val_frac={self.val_frac!r}: must be in (0, 1 - test_frac)")
        vae_models.check_shape(self.arch, self.image_size, self.hidden)  # in the driver, not first in a trial

    from_dict = classmethod(config_from_dict)


# Keys that may change between a checkpoint and its resumption without changing the epochs already run: the budget,
# where it runs, when it stops, and the end-of-run importance-weighted estimate.
RESUMABLE_CHANGES = {"epochs", "device", "num_threads", "data_dir", "patience", "min_delta", "iw_samples", "iw_images"}


# ------------------------------------------------------------------------------------------------- data
def _resident(images: np.ndarray, cfg: VAEConfig, device: torch.device) -> torch.Tensor:
    """uint8 images stay uint8 on the device (4x less memory, one copy); batches are converted when used."""
    s = cfg.image_size
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, s, s) or len(images) == 0:
        raise ValueError(f"expected uint8 images (N>0,3,{s},{s}), got {images.dtype} {images.shape}")
    images = np.ascontiguousarray(images) if images.flags.writeable else np.array(images)  # memmap cache: copy
    return torch.from_numpy(images).to(device)


# ------------------------------------------------------------------------------------------------- loss
def recon_nll(model: VAE, logits: torch.Tensor, x: torch.Tensor, cfg: VAEConfig) -> torch.Tensor:
    """-log p(x|z) per image (float32), summed over the 3*S*S pixels."""
    logits = logits.float()
    if cfg.likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    else:
        log_sigma = model.log_sigma if model.log_sigma is not None else math.log(cfg.sigma)
        inv = torch.exp(-torch.as_tensor(log_sigma, device=x.device))
        nll = 0.5 * ((x - torch.sigmoid(logits)) * inv) ** 2 + log_sigma + 0.5 * math.log(2 * math.pi)
    return nll.flatten(1).sum(1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per image, closed form."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def bits_per_dim(neg_elbo: float, cfg: VAEConfig) -> float:
    d = 3 * cfg.image_size ** 2
    offset = d * math.log(256) if cfg.likelihood == "gaussian" else 0.0
    return (neg_elbo + offset) / (d * math.log(2))


# ------------------------------------------------------------------------------------------------- loop
def _train_epoch(model, opt, images, cfg: VAEConfig, gen: torch.Generator, fast: bool) -> torch.Tensor:
    """One pass over a seeded permutation; returns on the device [loss, recon, kl] sums and, per term (recon, kl),
    the first batch at which it was non-finite (inf if never), so a blow-up names its origin without a sync."""
    model.train()
    perm = torch.randperm(images.shape[0], generator=gen).to(images.device)
    sums = torch.zeros(3, device=images.device)
    first_bad = torch.full((2,), math.inf, device=images.device)
    for step, start in enumerate(range(0, images.shape[0], cfg.batch_size)):
        x = to_float(images, perm[start:start + cfg.batch_size], fast)
        with autocast(images.device, fast):
            logits, mu, logvar = model(x)
        recon, kl = recon_nll(model, logits, x, cfg), kl_divergence(mu, logvar)
        loss = recon + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.mean().backward()
        opt.step()
        batch = torch.stack([loss.sum(), recon.sum(), kl.sum()]).detach()
        sums += batch
        first_bad = torch.where(torch.isfinite(batch[1:]), first_bad, first_bad.clamp(max=step))
    return torch.cat([sums, first_bad])


def _one_sample(model: VAE, images: torch.Tensor, cfg: VAEConfig, fast: bool, gen: torch.Generator):
    """Per batch of EVAL_BATCH images in order: (recon, closed-form KL) per image at one sample (noise from gen)."""
    for start in range(0, images.shape[0], EVAL_BATCH):
        x = to_float(images, slice(start, start + EVAL_BATCH), fast)
        noise = torch.randn(x.shape[0], model.latent_dim, generator=gen, device=x.device)
        with autocast(images.device, fast):
            logits, mu, logvar = model(x, noise)
        yield recon_nll(model, logits, x, cfg), kl_divergence(mu, logvar)


@torch.no_grad()
def evaluate(model: VAE, images: torch.Tensor, cfg: VAEConfig, fast: bool) -> dict[str, float]:
    """Held-out recon, KL and negative ELBO (KL weight 1) per image, with fixed noise (seed+1)."""
    model.eval()
    gen = torch.Generator(device=images.device).manual_seed(cfg.seed + 1)
    sums = torch.zeros(2, device=images.device)
    for recon, kl in _one_sample(model, images, cfg, fast, gen):
        sums += torch.stack([recon.sum(), kl.sum()])
    recon, kl = (sums / images.shape[0]).tolist()
    return {"recon": recon, "kl": kl, "neg_elbo": recon + kl}


@torch.no_grad()
def importance_weighted(model: VAE, images: torch.Tensor, cfg: VAEConfig, k: int, fast: bool,
                        n_images: int = 0) -> dict[str, float]:
    """The test set's mean -log p(x) ~ -log mean_j p(x,z_j)/q(z_j|x), z_j ~ q(z|x), j=1..k (and the MC neg ELBO of
    the same z_j), from k decodings of a random subset of `n_images` test images (0 or >= N: all of them).

    Why a subset is enough: per image, -log p(x) varies across test images by about as much as the one-sample
    negative ELBO x_i does (sd ~135 nats for the 32x32 conv VAE), but the two move together: their difference d_i
    has an sd of ~6 nats. So x_i is computed for every test image (one decoding each) and only d_i is sub-sampled:
    estimate = mean_all(x) + mean_subset(iw_i - x_i), unbiased for the full-test-set value, with standard error
    sd(d)/sqrt(n) * sqrt(1 - n/N) (~0.5 nats for n = 128). Next to the test set's own sampling error as an estimate
    of E[-log p(x)] (sd/sqrt(N) ~3 nats for N = 2,096), that adds ~1.5% to the total; it costs n*k instead of N*k
    decodings. k, n and the standard error are reported with the estimate."""
    model.eval()
    gen = torch.Generator(device=images.device).manual_seed(cfg.seed + 2)
    n = images.shape[0]
    # Every test image: the one-sample negative ELBO (closed-form KL), the control variate.
    control = torch.cat([(recon + kl).double() for recon, kl in _one_sample(model, images, cfg, fast, gen)])
    m = n if n_images <= 0 or n_images >= n else n_images
    subset = (torch.arange(n, device=images.device) if m == n
              else torch.randperm(n, generator=gen, device=images.device)[:m])
    iw_nll, mc_neg_elbo = [], []
    for start in range(0, m, EVAL_BATCH):
        idx = subset[start:start + EVAL_BATCH]
        x = to_float(images, idx, fast)
        with autocast(images.device, fast):
            mu, logvar = model.encode(x)
        mu, logvar = mu.float(), logvar.float()
        per_call = max(1, EVAL_BATCH // x.shape[0])  # several samples per decoder call: batches of ~EVAL_BATCH
        logw = []
        for j in range(0, k, per_call):
            c = min(per_call, k - j)
            eps = torch.randn((c, *mu.shape), generator=gen, device=x.device)
            z = (mu + eps * torch.exp(0.5 * logvar)).flatten(0, 1)
            with autocast(images.device, fast):
                logits = model.decode(z)
            # log p(x|z) + log N(z;0,I) - log N(z;mu,sigma): the 2*pi terms cancel.
            log_pz_over_q = (0.5 * (eps.pow(2) - z.view_as(eps).pow(2) + logvar)).sum(-1)
            recon = recon_nll(model, logits, x.repeat(c, *([1] * (x.dim() - 1))), cfg).view(c, -1)
            logw.append((log_pz_over_q - recon).double())
        logw = torch.cat(logw)  # (k, B)
        iw_nll.append(-(torch.logsumexp(logw, 0) - math.log(k)))
        mc_neg_elbo.append(-logw.mean(0))
    iw_nll, mc_neg_elbo = torch.cat(iw_nll), torch.cat(mc_neg_elbo)
    base, diff_iw = control.mean(), iw_nll - control[subset]
    diff_elbo = mc_neg_elbo - control[subset]
    se = (diff_iw.var() / m * (1 - m / n)).sqrt() if 1 < m < n else torch.zeros((), dtype=torch.float64)
    nll, neg_elbo, se = torch.stack([base + diff_iw.mean(), base + diff_elbo.mean(), se]).tolist()
    return {"test_iw_nll": nll, "test_iw_neg_elbo": neg_elbo, "test_iw_bits_per_dim": bits_per_dim(nll, cfg),
            "test_iw_nll_se": se, "iw_images": m}


def fit(cfg: VAEConfig, train_images: np.ndarray, val_images: np.ndarray, test_images: np.ndarray,
        report: Report | None = None, *, checkpoint_dir=None, resume_from=None, artifact_dir=None,
        info: dict | None = None) -> dict:
    """Train on uint8 (N,3,S,S) arrays; report each epoch; return the last metrics + end-of-run results (+ info).

    Each epoch reports the training and validation numbers (`epoch_*`: the curves) and `val_*` of the best
    validation epoch so far (`common.BestEpochs`): the epoch of the lowest `val_loss`, the run's own loss
    (recon + kl_weight * KL) on the validation images, so a KL x0 run is an autoencoder trained until its
    reconstructions stop improving. The test images are scored once, with the best epoch's weights, in the last
    report (the last epoch, or where `patience` stopped the run)."""
    device = start_fit(cfg)
    state = resume_state(resume_from, cfg, RESUMABLE_CHANGES)
    gen = seed_everything(cfg.seed)
    train_x, val_x, test_x = (_resident(a, cfg, device) for a in (train_images, val_images, test_images))
    model = vae_models.build_vae(cfg.arch, cfg.image_size, cfg.latent_dim, cfg.hidden,
                                 cfg.likelihood == "gaussian" and cfg.learn_sigma, cfg.sigma).to(device)
    fast = fast_path(cfg.arch, device)  # bf16 autocast for the conv nets (GPU, bf16 CPU); channels_last on a GPU
    if fast and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    else:
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        opt = cls(model.parameters(), lr=cfg.lr, fused=True if device.type == "cuda" else None)
    tracker = BestEpochs("min", 1, cfg.patience, cfg.min_delta, **(state["best"] if state else {}))
    best_weights, metrics, scored = _copy(model), {}, {}
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], gen)
        best_weights, scored, metrics = state["best_weights"], state["scored"], state["metrics"]
    n = train_x.shape[0]
    for epoch in epochs_to_run(cfg, state):
        t0 = time.perf_counter()
        out = _train_epoch(model, opt, train_x, cfg, gen, fast).tolist()  # the epoch's one host sync
        train_time = time.perf_counter() - t0
        loss, recon, kl = (v / n for v in out[:3])
        # Name the term that broke first (the encoder runs before the decoder, so kl wins a tie).
        terms = sorted([(out[4], 0, "kl", kl), (out[3], 1, "recon", recon)])
        check_finite(epoch, **{name: value for _, _, name, value in terms})
        val = _numbers("val", evaluate(model, val_x, cfg, fast), cfg)
        check_finite(epoch, val_kl=val["val_kl"], val_recon=val["val_recon"])
        val["val_loss"] = val["val_recon"] + cfg.kl_weight * val["val_kl"]
        if tracker.update(epoch, [val["val_loss"]])[0]:
            best_weights, scored = _copy(model), val
        metrics = {
            "epoch": epoch, "epoch_time_s": train_time, BEST_EPOCH: int(tracker.epoch[0]), **scored,
            **{curve(k): v for k, v in _numbers("train", {"recon": recon, "kl": kl, "neg_elbo": recon + kl}, cfg).items()},
            curve("train_loss"): loss, **{curve(k): v for k, v in val.items()},
        }
        if model.log_sigma is not None:
            metrics[curve("sigma")] = float(model.log_sigma.detach().exp())

        def last_report(stop: bool) -> dict[str, float]:
            """The last report scores the test images, once, with the best weights; end_epoch asks after the
            checkpoint, so loading them leaves the epoch's own weights in the file."""
            test = {}
            if stop or epoch == cfg.epochs:
                model.load_state_dict(best_weights)
                test = _numbers("test", evaluate(model, test_x, cfg, fast), cfg)
            return {**test, EVAL_TIME: time.perf_counter() - t0 - train_time}

        own = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(gen),
               "best_weights": best_weights, "scored": scored}
        if end_epoch(epoch, metrics, tracker, cfg, own, checkpoint_dir=checkpoint_dir, report=report,
                     before_report=last_report):
            break
    t0 = time.perf_counter()
    model.load_state_dict(best_weights)
    result = dict(metrics)
    if "test_neg_elbo" not in result:  # no epoch ran here (epochs=0, or resumed after the last one)
        result.update(_numbers("test", evaluate(model, test_x, cfg, fast), cfg))
    if cfg.iw_samples > 0:
        t1 = time.perf_counter()
        result["iw_samples"] = cfg.iw_samples
        result.update(importance_weighted(model, test_x, cfg, cfg.iw_samples, fast, cfg.iw_images))
        result["iw_time_s"] = time.perf_counter() - t1
    result.update(n_train=n, n_val=int(val_x.shape[0]), n_test=int(test_x.shape[0]),
                  n_params=sum(p.numel() for p in model.parameters()))
    result.update(info or {})
    if artifact_dir is not None:
        write_artifacts(artifact_dir, model, cfg, result, test_images, elapsed=lambda: time.perf_counter() - t0)
    return result


def _copy(model: VAE) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _numbers(part: str, terms: dict[str, float], cfg: VAEConfig) -> dict[str, float]:
    """recon, kl, neg_elbo (KL weight 1) and bits/dim of one part, named `<part>_<what>`."""
    return {f"{part}_neg_elbo": terms["neg_elbo"], f"{part}_bits_per_dim": bits_per_dim(terms["neg_elbo"], cfg),
            f"{part}_recon": terms["recon"], f"{part}_kl": terms["kl"]}


def train(config: VAEConfig | dict, report: Report | None = None, *, checkpoint_dir=None, resume_from=None,
          artifact_dir=None, data=None) -> dict:
    """The entry point of the contract (`trainables.Trainable`): config -> faces (cached by the data layer) ->
    seeded split -> fit.

    `data` is a FaceSet the caller already loaded (a study sends one through Ray's object store instead of
    every trial reading the cache); it is used when its image size matches the config."""
    cfg = config if isinstance(config, VAEConfig) else VAEConfig.from_dict(config)
    faces = data
    if faces is None or faces.images.shape[-1] != cfg.image_size:
        faces = load_data(cfg, progress=False)
    images = faces.images if cfg.max_images is None else faces.images[: cfg.max_images]
    from data.faces import split_three

    train_idx, val_idx, test_idx = split_three(len(images), cfg.val_frac, cfg.test_frac, cfg.seed)
    return fit(cfg, images[train_idx], images[val_idx], images[test_idx], report, checkpoint_dir=checkpoint_dir,
               resume_from=resume_from, artifact_dir=artifact_dir, info={"data_hash": faces.source_hash})


def load_data(cfg: VAEConfig, progress: bool = True):
    """The faces at the config's image size (from the cache folder once prepared), read once on a study's driver."""
    from data.faces import load_faces
    from data.location import faces_source, resolve_data_dir

    return load_faces(faces_source(resolve_data_dir(cfg.data_dir)), size=cfg.image_size, resample=cfg.resample,
                      progress=progress, max_images=cfg.max_images)


def check_data(cfg: VAEConfig, faces) -> None:
    """Both sides of the train/test split need an image (fewer images than a batch are fine: one short batch)."""
    from data.errors import DataError
    from data.faces import split_indices

    n = len(faces.images) if cfg.max_images is None else min(len(faces.images), cfg.max_images)
    train_idx, test_idx = split_indices(n, test_frac=cfg.test_frac, seed=cfg.seed)
    if len(train_idx) and len(test_idx):
        return
    least = next(m for m in range(2, 10_000) if all(map(len, split_indices(m, test_frac=cfg.test_frac))))
    raise DataError(f"{n} image(s) leave the {'test' if len(train_idx) else 'training'} part of a "
                    f"{1 - cfg.test_frac:.0%}/{cfg.test_frac:.0%} split empty; the VAE needs at least "
                    f"{least} images", faces.source)


def memory(cfg: VAEConfig, faces) -> int:
    """Bytes one trial of `cfg` needs at its peak beyond the interpreter, on the high side (the `Trainable.memory`
    hook): the uint8 images twice (the shared copy and the split's), the weights eight times over (themselves,
    gradients, Adam's two moments and its step's temporaries, the best epoch's copy, the checkpoint's), every
    layer's output for twice a training batch (activations and their gradients) and for EVAL_BATCH images
    (evaluation), four float tensors of EVAL_BATCH images' pixels (the importance weighting's logits, inputs and
    losses) and TORCH_WORKING_BYTES. Measured (peak RSS of `train` above a bare import, 20,963 32x32 faces,
    latent 64, CPU): MLP 328 MiB (estimate 417), conv 337 MiB (478). The model is built on torch's meta device:
    shapes only, nothing allocated, whatever its size."""
    n = len(faces.images) if faces is not None else 0
    n = min(n, cfg.max_images) if cfg.max_images else n
    pixels = 3 * cfg.image_size ** 2
    with torch.device("meta"):
        model = vae_models.build_vae(cfg.arch, cfg.image_size, cfg.latent_dim, cfg.hidden, cfg.learn_sigma, cfg.sigma)
    weights, per_image = sum(p.numel() for p in model.parameters()), vae_models.layer_outputs(model)
    floats = 8 * weights + per_image * (2 * cfg.batch_size + EVAL_BATCH) + 4 * EVAL_BATCH * pixels
    return 2 * n * pixels + 4 * floats + TORCH_WORKING_BYTES


TRAINABLE = Trainable(
    name="vae", config=VAEConfig, train=train, metric="val_neg_elbo", mode="min", artifacts=(SUMMARY, IMAGES, MODEL),
    load_data=load_data, data_hash=lambda faces: faces.source_hash, check=check_data, memory=memory,
    progress={"epoch": "epoch", "epoch_train_loss": "objective", "val_neg_elbo": "val -ELBO",
              "best_epoch": "best epoch"},
    test_metrics=("test_neg_elbo",), report_section="analysis.section_vae:section",
    model=ModelSpec(files=(MODEL,), load=vae_model.load, predict=vae_model.predict, describe=vae_model.DESCRIBE,
                    sample=vae_model.sample),
    description="Variational autoencoder on 64x64 anime faces, KL term x1/x100/x0 (homework problem 2)",
)


# --------------------------------------------------------------------------- report functions + artefacts
def load_model(path: str | Path, device: str = "cpu") -> tuple[VAE, VAEConfig]:
    """Rebuild a model written as ``model.pt`` by ``write_artifacts``."""
    blob = load_safely(path, map_location=device)  # never unpickle code from a file
    cfg = VAEConfig.from_dict(blob["config"])
    model = vae_models.build_vae(cfg.arch, cfg.image_size, cfg.latent_dim, cfg.hidden,
                                 cfg.likelihood == "gaussian" and cfg.learn_sigma, cfg.sigma)
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), cfg


def _png(images: np.ndarray, ncol: int, path: Path, tile: int = 64) -> None:
    from PIL import Image

    n, _, s, _ = images.shape
    rows = -(-n // ncol)
    grid = np.full((rows * s, ncol * s, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        grid[r * s:(r + 1) * s, c * s:(c + 1) * s] = img.transpose(1, 2, 0)
    scale = max(1, tile // s)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(grid).resize((ncol * s * scale, rows * s * scale), Image.NEAREST).save(tmp)
    tmp.replace(path)


def write_artifacts(folder, model: VAE, cfg: VAEConfig, summary: dict, test_images: np.ndarray,
                    elapsed: Callable[[], float] | None = None, n: int = 16, steps: int = 8) -> None:
    """summary.json, images.npz (real, recon, samples, interp), model.pt, and PNG grids of the three."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    real = test_images[:n]
    images = {"real": real, "recon": reconstruct(model, real), "samples": sample(model, 64, cfg.seed),
              "interp": interpolate(model, test_images[0], test_images[min(1, len(test_images) - 1)], steps)}
    with open(folder / f"{IMAGES}.tmp", "wb") as tmp:
        np.savez_compressed(tmp, **images)
    (folder / f"{IMAGES}.tmp").replace(folder / IMAGES)
    save_model(folder, cfg, model)
    pairs = np.stack([images["real"], images["recon"]], 1).reshape(-1, *real.shape[1:])  # real, recon, ...
    _png(pairs, 8, folder / "reconstructions.png")
    _png(images["samples"], 8, folder / "samples.png")
    _png(images["interp"], len(images["interp"]), folder / "interpolation.png")
    if elapsed is not None:
        summary[END_TIME] = elapsed()  # the end of run: best weights back, test, IWAE, these artefacts
    write_json(folder, SUMMARY, summary)
