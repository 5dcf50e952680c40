"""A VAE trial's model, ready to use: encode faces, decode latents, sample new faces (`Trainable.model` of `vae`).

`load(folder)` rebuilds model.pt (the weights of the trial's best validation epoch, read with weights_only=True)
as a `VAEModel` on numpy arrays: images are uint8 (N, 3, S, S) as the data layer loads them (`data.faces`), S the
trial's `image_size`; float images in [0, 1] are taken too. `predict` (what `study predict --input` and MLflow
call) gives each image's latent mean, `sample` new images decoded from the prior.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables import vae_models
from trainables.names import MODEL

DESCRIBE = ("images (N, 3, S, S) or flattened (N, 3*S*S), S the trial's image_size: uint8 0-255 (or integers, as a "
            "CSV holds them) or floats in [0, 1]; one row of latent means z0..z{d-1} per image")


@dataclass
class VAEModel:
    """The trial's VAE (`net`, a torch module) and its `config` (a `VAEConfig`), on numpy arrays."""

    net: vae_models.VAE
    config: Any

    @property
    def image_size(self) -> int:
        return self.net.image_size

    @property
    def latent_dim(self) -> int:
        return self.net.latent_dim

    def images(self, inputs: Any) -> np.ndarray:
        """inputs (N, 3, S, S) or (N, 3*S*S), a DataFrame of 3*S*S columns too -> uint8 (N, 3, S, S); ValueError
        naming the shape expected, or the range of float pixels."""
        x = np.asarray(inputs.to_numpy() if hasattr(inputs, "to_numpy") else inputs)
        s = self.image_size
        if x.ndim == 2 and x.shape[1] == 3 * s * s:
            x = x.reshape(len(x), 3, s, s)
        if x.ndim != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"images of shape {x.shape}: this model takes (N, 3, {s}, {s}) or (N, {3 * s * s})")
        if x.dtype == np.uint8:
            return x
        if np.issubdtype(x.dtype, np.integer):
            if x.size and (x.min() < 0 or x.max() > 255):
                raise ValueError("integer pixels must lie in 0..255")
            return x.astype(np.uint8)
        x = x.astype(np.float64)
        if not np.isfinite(x).all() or (x.size and (x.min() < 0 or x.max() > 1)):
            raise ValueError("float pixels must lie in [0, 1] (integers are read as 0..255)")
        return np.round(x * 255).astype(np.uint8)

    def encode(self, inputs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Images -> (mu, logvar) of q(z|x), float32 (N, latent_dim) each."""
        x = self.images(inputs)
        device = next(self.net.parameters()).device
        mus, logvars = [], []
        with torch.no_grad():
            for start in range(0, len(x), vae_models.EVAL_BATCH):
                batch = torch.as_tensor(x[start:start + vae_models.EVAL_BATCH], device=device).float().div_(255.0)
                mu, logvar = self.net.encode(batch)
                mus.append(mu.float().cpu().numpy())
                logvars.append(logvar.float().cpu().numpy())
        empty = np.zeros((0, self.latent_dim), np.float32)
        return (np.concatenate(mus) if mus else empty), (np.concatenate(logvars) if logvars else empty)

    def decode(self, z: Any) -> np.ndarray:
        """Latents (N, latent_dim) -> the decoder's mean images, uint8 (N, 3, S, S)."""
        zz = np.asarray(z, dtype=np.float32)
        if zz.ndim != 2 or zz.shape[1] != self.latent_dim:
            raise ValueError(f"latents of shape {zz.shape}: this model takes (N, {self.latent_dim})")
        return vae_models._decode(self.net.eval(), torch.as_tensor(zz, device=next(self.net.parameters()).device))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """n new images, uint8 (n, 3, S, S), decoded from z ~ N(0, I) drawn with `seed` (the trial's samples.png
        used its config's seed)."""
        return vae_models.sample(self.net, int(n), int(seed))

    def reconstruct(self, inputs: Any) -> np.ndarray:
        """Images -> their reconstructions at the latent mean, uint8."""
        return vae_models.reconstruct(self.net, self.images(inputs))

    def predict(self, inputs: Any) -> Any:
        """A DataFrame of the latent means, columns z0..z{d-1}, one row per image."""
        import pandas as pd

        mu, _ = self.encode(inputs)
        return pd.DataFrame(mu.astype(np.float64), columns=[f"z{i}" for i in range(mu.shape[1])])


def load(folder: str | Path, device: str = "cpu") -> VAEModel:
    """`ModelSpec.load`: model.pt in `folder` -> a VAEModel on `device`, in eval mode."""
    from trainables.vae import load_model

    net, cfg = load_model(Path(folder) / MODEL, device)
    return VAEModel(net, cfg)


def predict(model: VAEModel, inputs: Any) -> Any:
    return model.predict(inputs)


def sample(model: VAEModel, n: int, seed: int) -> np.ndarray:
    return model.sample(n, seed)
