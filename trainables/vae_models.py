"""The VAE's networks: encoder x -> (mu, logvar), decoder z -> per-pixel logits, for three architectures.

- ``mlp``: fully connected, like the homework reports (flatten -> hidden widths -> 2*latent; mirrored back).
- ``conv``: a small conv net (one 4x4 stride-2 conv per width in ``hidden``; mirrored with transposed convs).
- ``homework_conv``: the conv VAE of one homework report, kept as the benchmark's reference workload:
  conv 3->64 (3x3, s2), conv 64->128 (5x5, s2), linear to the latent (the report used 256), mirrored decoder.

The decoder always returns unnormalised outputs ``(N,3,S,S)``; ``sigmoid`` of them is the mean image for both
likelihoods (Bernoulli mean, or the Gaussian mean squashed into [0,1]), so display code needs no likelihood.
"""
from __future__ import annotations

import functools
import math
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

ARCHS = ("mlp", "conv", "homework_conv")
DEFAULT_HIDDEN = {"mlp": (512, 256), "conv": (32, 64), "homework_conv": (64, 128)}


class VAE(nn.Module):
    """Encoder + decoder + (optionally) one learned Gaussian log-sigma shared by all pixels."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, image_size: int,
                 arch: str, learn_sigma: bool = False, sigma: float = 1.0):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim, self.image_size, self.arch = latent_dim, image_size, arch
        # A learned sigma starts at the configured value so it needs no thousands of steps to get there.
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma))) if learn_sigma else None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x).chunk(2, dim=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """One reparameterised pass: returns (decoder logits, mu, logvar)."""
        mu, logvar = self.encode(x)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + noise * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


class _Unflatten(nn.Module):
    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


def _mlp_layers(widths: tuple[int, ...], out: int) -> list[nn.Module]:
    """Linear + ReLU between consecutive widths, then Linear to `out`, created in that order (the seeded weights)."""
    return [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())] + [nn.Linear(widths[-1], out)]


def _mlp(image_size: int, latent_dim: int, hidden: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    d = 3 * image_size * image_size
    enc = nn.Sequential(nn.Flatten(), *_mlp_layers((d, *hidden), 2 * latent_dim))
    return enc, nn.Sequential(*_mlp_layers((latent_dim, *hidden[::-1]), d), _Unflatten((3, image_size, image_size)))


def check_shape(arch: str, image_size: int, hidden: tuple[int, ...] | None) -> tuple[int, ...]:
    """The widths `arch` builds with (None: its default); ValueError when the conv nets cannot halve image_size
    once per layer. The config checks it (so a study checks it before anything starts), the builders rely on it."""
    if arch not in _BUILDERS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
    hidden = tuple(hidden) if hidden is not None else DEFAULT_HIDDEN[arch]
    if arch == "homework_conv" and len(hidden) != 2:
        raise ValueError(f"homework_conv takes two conv widths in hidden, got {hidden}")
    factor = 2 ** len(hidden) if arch != "mlp" else 1
    if image_size % factor:
        raise ValueError(f"{arch}: image_size {image_size} must be divisible by 2**len(hidden) = {factor} "
                         f"(hidden = {hidden})")
    return hidden


def _conv(image_size: int, latent_dim: int, hidden: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    s = image_size // 2 ** len(hidden)
    enc: list[nn.Module] = []
    ch = 3
    for h in hidden:
        enc += [nn.Conv2d(ch, h, 4, stride=2, padding=1), nn.ReLU()]
        ch = h
    enc += [nn.Flatten(), nn.Linear(ch * s * s, 2 * latent_dim)]
    dec: list[nn.Module] = [nn.Linear(latent_dim, ch * s * s), nn.ReLU(), _Unflatten((ch, s, s))]
    widths = list(reversed(hidden))[1:] + [3]
    for i, h in enumerate(widths):
        dec.append(nn.ConvTranspose2d(ch, h, 4, stride=2, padding=1))
        if i < len(widths) - 1:
            dec.append(nn.ReLU())
        ch = h
    return nn.Sequential(*enc), nn.Sequential(*dec)


def _homework_conv(image_size: int, latent_dim: int, hidden: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    c1, c2 = hidden
    s = image_size // 4
    enc = nn.Sequential(
        nn.Conv2d(3, c1, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(c1, c2, 5, stride=2, padding=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(c2 * s * s, 2 * latent_dim),
    )
    dec = nn.Sequential(
        nn.Linear(latent_dim, c2 * s * s), nn.ReLU(), _Unflatten((c2, s, s)),
        nn.ConvTranspose2d(c2, c1, 5, stride=2, padding=2, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(c1, 3, 3, stride=2, padding=1, output_padding=1),
    )
    return enc, dec


_BUILDERS = {"mlp": _mlp, "conv": _conv, "homework_conv": _homework_conv}


def build_vae(arch: str, image_size: int, latent_dim: int, hidden: tuple[int, ...] | None = None,
              learn_sigma: bool = False, sigma: float = 1.0) -> VAE:
    """The model for one config; ``hidden=None`` picks the architecture's default widths."""
    hidden = check_shape(arch, image_size, hidden)
    enc, dec = _BUILDERS[arch](image_size, latent_dim, hidden)
    return VAE(enc, dec, latent_dim, image_size, arch, learn_sigma, sigma)


def layer_outputs(model: VAE) -> int:
    """Floats the encoder's and the decoder's layers output for one image, walked from the shapes alone (on a
    meta-device model a forward pass would first import torch's meta kernels: seconds)."""
    total = 0
    for net, shape in ((model.encoder, (3, model.image_size, model.image_size)), (model.decoder, (model.latent_dim,))):
        for m in net:
            if isinstance(m, nn.Linear):
                shape = (m.out_features,)
            elif isinstance(m, nn.Flatten):
                shape = (math.prod(shape),)
            elif isinstance(m, _Unflatten):
                shape = m.shape
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
                size = ((shape[1] + 2 * p - k) // s + 1 if isinstance(m, nn.Conv2d)
                        else (shape[1] - 1) * s - 2 * p + k + m.output_padding[0])
                shape = (m.out_channels, size, size)
            total += math.prod(shape)  # an activation keeps its input's shape
    return total


# ------------------------------------------------ input conversion and the report functions (uint8 in/out)
EVAL_BATCH = 512


def fast_path(arch: str, device: torch.device) -> bool:
    """bf16 autocast for the conv nets where it pays: on a GPU, and on a CPU with native bf16 instructions
    (avx512_bf16 or AMX; measured on a 2-core AMD EPYC with avx512_bf16: a 32x32 conv-VAE epoch 1.95x as fast
    at one thread, the same loss). channels_last helped on the CPU only without bf16 (1.17x) and not at all with it, so it is GPU-only.
    The MLP stays float32 everywhere; so do CPUs without bf16, where autocast emulates it slowly."""
    if arch == "mlp":
        return False
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 (the flags Linux lists in /proc/cpuinfo; elsewhere: no)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def to_float(images: torch.Tensor, idx: torch.Tensor | slice, fast: bool) -> torch.Tensor:
    """uint8 rows -> float in [0,1] (channels_last for the conv nets on a GPU)."""
    x = images[idx].float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if fast and x.is_cuda else x


def autocast(device: torch.device, fast: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if fast else nullcontext()


@torch.no_grad()
def _decode(model: VAE, z: torch.Tensor) -> np.ndarray:
    fast = fast_path(model.arch, z.device)
    out = []
    for start in range(0, z.shape[0], EVAL_BATCH):
        with autocast(z.device, fast):
            mean = torch.sigmoid(model.decode(z[start:start + EVAL_BATCH]).float())
            out.append((mean.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 3, model.image_size, model.image_size), np.uint8)


@torch.no_grad()
def _latent_means(model: VAE, images: np.ndarray) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(np.array(images, dtype=np.uint8), device=device)
    fast = fast_path(model.arch, device)
    mus = []
    for start in range(0, x.shape[0], EVAL_BATCH):
        with autocast(device, fast):
            mus.append(model.encode(to_float(x, slice(start, start + EVAL_BATCH), fast))[0].float())
    return torch.cat(mus)


def reconstruct(model: VAE, images: np.ndarray) -> np.ndarray:
    """uint8 (N,3,S,S) -> the decoder's mean image at the latent mean, uint8 (N,3,S,S)."""
    return _decode(model.eval(), _latent_means(model, images))


def sample(model: VAE, n: int, seed: int = 0) -> np.ndarray:
    """n images decoded (mean image) from z ~ N(0, I), drawn from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.latent_dim, generator=gen).to(next(model.parameters()).device)
    return _decode(model.eval(), z)


def interpolate(model: VAE, image_a: np.ndarray, image_b: np.ndarray, steps: int = 8) -> np.ndarray:
    """steps+2 images: real a, decodings of (1-t)*mu_a + t*mu_b at ``steps`` inner points, real b."""
    mu = _latent_means(model, np.stack([image_a, image_b]))
    t = torch.linspace(0, 1, steps + 2, device=mu.device)[1:-1, None]
    inner = _decode(model, (1 - t) * mu[0] + t * mu[1])
    return np.concatenate([image_a[None], inner, image_b[None]])
