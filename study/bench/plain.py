"""The reference: training loops written the way the homework reports did, for `study bench` to compare against.

Deliberately plain (this is the baseline, not code to improve): data in a `TensorDataset` of float32 tensors on
the host, a `DataLoader(shuffle=True)`, every batch copied with `.to(device)`, float32 throughout, one model at
a time, and the running loss / correct count read with `.item()` on every batch (a host sync per batch on a
GPU). The models are `torch.nn.GRU/LSTM/RNN` + a linear head, the homework report's conv VAE, the small conv VAE
of the study presets and an MLP VAE of the project's default shape, with the parameter counts of the project's own
models for the same workload. This module imports nothing of the project: it is the baseline, whatever changes.

Each `*_epochs` function returns the wall time of every epoch (one training pass plus one test pass, as the
reports printed test numbers every epoch), with the device synchronised at the end of the epoch.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


# ----------------------------------------------------------------------------------------------- models
class PlainSequenceModel(nn.Module):
    """torch.nn.RNN/LSTM/GRU (batch_first) -> last time step of the top layer -> Linear(hidden, 2)."""

    def __init__(self, cell: str, hidden_size: int, num_layers: int, input_size: int = 1):
        super().__init__()
        rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(input_size, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1, :])


class _TwoConvVAE(nn.Module):
    """What both conv VAEs do with their layers: conv1, conv2 -> fc_mu / fc_logvar; fc_dec -> deconv1, deconv2."""

    def encode(self, x):
        h = F.relu(self.conv2(F.relu(self.conv1(x)))).flatten(1)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z):
        h = F.relu(self.fc_dec(z)).view(-1, self.c2, self.s, self.s)
        return torch.sigmoid(self.deconv2(F.relu(self.deconv1(h))))

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


class PlainConvVAE(_TwoConvVAE):
    """The homework report's conv VAE: 64x64 -> conv 3->64 (3x3, s2) -> conv 64->128 (5x5, s2) -> fc_mu / fc_logvar
    (256-d latent); decoder fc -> 128x16x16 -> deconv 128->64 (5x5, s2) -> deconv 64->3 (3x3, s2) -> sigmoid."""

    def __init__(self, image_size: int = 64, latent_dim: int = 256, c1: int = 64, c2: int = 128):
        super().__init__()
        s = image_size // 4
        self.c2, self.s = c2, s
        self.conv1 = nn.Conv2d(3, c1, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 5, stride=2, padding=2)
        self.fc_mu = nn.Linear(c2 * s * s, latent_dim)
        self.fc_logvar = nn.Linear(c2 * s * s, latent_dim)
        self.fc_dec = nn.Linear(latent_dim, c2 * s * s)
        self.deconv1 = nn.ConvTranspose2d(c2, c1, 5, stride=2, padding=2, output_padding=1)
        self.deconv2 = nn.ConvTranspose2d(c1, 3, 3, stride=2, padding=1, output_padding=1)


class PlainSmallConvVAE(_TwoConvVAE):
    """A conv VAE with one 4x4 stride-2 conv per width (3 -> c1 -> c2), fc_mu / fc_logvar; mirrored with
    transposed convs -> sigmoid (the shape of the study presets' `conv` VAE)."""

    def __init__(self, image_size: int = 32, latent_dim: int = 32, c1: int = 32, c2: int = 64):
        super().__init__()
        s = image_size // 4
        self.c2, self.s = c2, s
        self.conv1 = nn.Conv2d(3, c1, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 4, stride=2, padding=1)
        self.fc_mu = nn.Linear(c2 * s * s, latent_dim)
        self.fc_logvar = nn.Linear(c2 * s * s, latent_dim)
        self.fc_dec = nn.Linear(latent_dim, c2 * s * s)
        self.deconv1 = nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1)
        self.deconv2 = nn.ConvTranspose2d(c1, 3, 4, stride=2, padding=1)


class PlainMLPVAE(nn.Module):
    """A fully connected VAE as in the reports: flatten -> hidden widths -> fc_mu / fc_logvar; mirrored -> sigmoid."""

    def __init__(self, image_size: int = 32, latent_dim: int = 32, hidden: tuple[int, ...] = (512, 256)):
        super().__init__()
        d = 3 * image_size * image_size
        self.shape = (3, image_size, image_size)
        enc, width = [], d
        for h in hidden:
            enc += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.enc = nn.Sequential(*enc)
        self.fc_mu, self.fc_logvar = nn.Linear(width, latent_dim), nn.Linear(width, latent_dim)
        dec, width = [], latent_dim
        for h in reversed(hidden):
            dec += [nn.Linear(width, h), nn.ReLU()]
            width = h
        dec.append(nn.Linear(width, d))
        self.dec = nn.Sequential(*dec)

    def encode(self, x):
        h = self.enc(x.flatten(1))
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z):
        return torch.sigmoid(self.dec(z)).view(-1, *self.shape)

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


def plain_vae(arch: str, image_size: int, latent_dim: int, hidden: tuple[int, ...]) -> nn.Module:
    if arch == "homework_conv":
        return PlainConvVAE(image_size, latent_dim, *hidden)
    if arch == "conv" and len(hidden) == 2:
        return PlainSmallConvVAE(image_size, latent_dim, *hidden)
    if arch == "mlp":
        return PlainMLPVAE(image_size, latent_dim, hidden)
    raise ValueError(f"no plain reference for VAE arch {arch!r}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------- loops
def sequence_epochs(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
                    cell: str, hidden_size: int, num_layers: int, batch_size: int, lr: float, epochs: int,
                    device: str | torch.device = "cpu", seed: int = 0) -> list[float]:
    """Train one classifier the reports' way; return each epoch's seconds (train pass + test pass)."""
    device = torch.device(device)
    torch.manual_seed(seed)
    train_loader = DataLoader(TensorDataset(torch.from_numpy(x_train).float(), torch.from_numpy(y_train).long()),
                              batch_size=batch_size, shuffle=True)
    test_loader = DataLoader(TensorDataset(torch.from_numpy(x_test).float(), torch.from_numpy(y_test).long()),
                             batch_size=batch_size, shuffle=False)
    model = PlainSequenceModel(cell, hidden_size, num_layers, x_train.shape[-1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    times = []
    for _epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        for xb, yb in train_loader:
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad()
            out = model(xb)
            loss = criterion(out, yb)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(yb)
            correct += (out.argmax(1) == yb).sum().item()
            seen += len(yb)
        model.eval()
        test_loss, test_correct = 0.0, 0
        with torch.no_grad():
            for xb, yb in test_loader:
                xb, yb = xb.to(device), yb.to(device)
                out = model(xb)
                test_loss += criterion(out, yb).item() * len(yb)
                test_correct += (out.argmax(1) == yb).sum().item()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def vae_epochs(train_images: np.ndarray, test_images: np.ndarray, *, arch: str, image_size: int, latent_dim: int,
               hidden: tuple[int, ...], batch_size: int, lr: float, epochs: int, kl_weight: float = 1.0,
               device: str | torch.device = "cpu", seed: int = 0) -> list[float]:
    """Train one VAE the reports' way (float32 [0,1] tensors, BCE(sum) + kl_weight * KL); each epoch's seconds."""
    device = torch.device(device)
    torch.manual_seed(seed)
    # The reports converted every image to float32 up front (ToTensor); done here, outside the timed epochs.
    train_x = torch.from_numpy(np.asarray(train_images)).float().div_(255.0)
    test_x = torch.from_numpy(np.asarray(test_images)).float().div_(255.0)
    train_loader = DataLoader(TensorDataset(train_x), batch_size=batch_size, shuffle=True)
    test_loader = DataLoader(TensorDataset(test_x), batch_size=batch_size, shuffle=False)
    model = plain_vae(arch, image_size, latent_dim, hidden).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def loss_fn(recon, x, mu, logvar):
        bce = F.binary_cross_entropy(recon, x, reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return bce + kl_weight * kld

    times = []
    for _epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        train_loss = 0.0
        for (x,) in train_loader:
            x = x.to(device)
            opt.zero_grad()
            recon, mu, logvar = model(x)
            loss = loss_fn(recon, x, mu, logvar)
            (loss / len(x)).backward()
            opt.step()
            train_loss += loss.item()
        model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for (x,) in test_loader:
                x = x.to(device)
                recon, mu, logvar = model(x)
                test_loss += loss_fn(recon, x, mu, logvar).item()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times
