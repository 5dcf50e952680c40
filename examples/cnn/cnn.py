"""A temporal convolutional network (TCN) on the COVID windows: your own model as a study plugin, in one file.

The question is the built-in's (trainables/sequence.py): from the last L days of a country's new cases, is the next
day higher? `**COVID_HOOKS` gives this plugin the built-in's data, driver-side checks and four baselines (majority,
weekly rule, logistic regression, boosted trees) on exactly the same windows and splits. What this file adds:

  model   residual blocks of two causal dilated 1-D convolutions over the L days (dilation 1, 2, 4, ...), the last
          day's features (or the mean over days) -> dropout -> Linear(channels, 2)
  data    every window on the device once, as (N, F, L); a batch is an index gather
  loop    S seeds, each its own model, optimizer and shuffling; each epoch every model trains once over the
          training windows and is evaluated on validation and test. Each model is scored at its best validation
          epoch so far (`BestEpochs`), so nothing is chosen on test: `val_acc` (the objective) and `test_acc` are
          means over seeds of those numbers, `*_std` their sample std, `*_acc_ens` the seed ensemble (mean
          P(increase) > 0.5), `epoch_*` the epoch's own values (the learning curves).

Resumable: `trainables.common` writes the state into checkpoint_dir before each report (`end_epoch`) and reads it
back from resume_from (`resume_state`, which refuses a checkpoint written under another config).
Usable: the end of run writes model.pt (each seed's weights at its best validation epoch), and `model=ModelSpec(...)`
says how to load it and predict with it, so `open_study(DIR).model("cnn")`, `study predict DIR --part cnn --input
windows.npy` and MLflow's logged model work for this plugin as for the built-ins.
Study files beside this one name it `trainable = "cnn:TRAINABLE"`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from data.sequence_data import CovidDataConfig, build_sequence_data
from trainables import ModelSpec, Trainable
from trainables.common import (BestEpochs, check_config_values, end_epoch, epochs_to_run, load_model_file,
                               resume_state, save_model, start_fit)
from trainables.config import NESTED, config_from_dict
from trainables.covid_hooks import COVID_HOOKS

PARTS = ("train", "val", "test")
EVAL_ROWS = 4096  # windows per forward pass at evaluation
# What may differ between a checkpoint's config and the resumed run's: the budget and where it runs, not the fit
RESUMABLE_CHANGES = {"epochs", "patience", "num_threads", "device", "data_dir"}


@dataclass
class CNNConfig:
    channels: int = 32
    kernel_size: int = 3
    levels: int = 3                # residual blocks; block i has dilation 2**i (receptive field 1 + 2(k-1)(2^levels-1))
    dropout: float = 0.1
    pool: str = "last"             # last: the last day's features | mean: the mean over the L days
    data: CovidDataConfig = field(default_factory=CovidDataConfig, metadata=NESTED)  # seq_len, split, ... (flat keys)
    lr: float = 3e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 15
    patience: int = 0              # stop when no seed's val_acc has improved for this many epochs; 0: never
    seeds: int = 3                 # S models, seeds data.seed .. data.seed + S - 1
    num_threads: int = 0           # torch CPU threads; 0 leaves the setting alone
    device: str = "auto"           # auto | cpu | cuda

    def __post_init__(self):
        check_config_values(self, {"channels": (1, 1024), "kernel_size": (2, 16), "levels": (1, 10),
                                   "dropout": (0.0, 0.9), "lr": (1e-6, 1.0), "batch_size": (1, 65536),
                                   "epochs": (1, 10000), "seeds": (1, 64), "patience": (0, 10000)},
                            {"pool": ("last", "mean"), "device": ("auto", "cpu", "cuda")})


# ----------------------------------------------------------------------------------------------- model
class CausalConv(nn.Conv1d):
    """A Conv1d whose output at day t sees days <= t only: left padding of (kernel - 1) * dilation."""

    def forward(self, x):
        return super().forward(F.pad(x, ((self.kernel_size[0] - 1) * self.dilation[0], 0)))


class Block(nn.Module):
    def __init__(self, c_in, c_out, kernel_size, dilation, dropout):
        super().__init__()
        self.conv1 = CausalConv(c_in, c_out, kernel_size, dilation=dilation)
        self.conv2 = CausalConv(c_out, c_out, kernel_size, dilation=dilation)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        h = self.drop(F.relu(self.conv1(x)))
        h = self.drop(F.relu(self.conv2(h)))
        return F.relu(h + self.skip(x))


class TCN(nn.Module):
    """(B, F, L) windows -> (B, 2) logits."""

    def __init__(self, n_features: int, cfg: CNNConfig):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(n_features if i == 0 else cfg.channels, cfg.channels, cfg.kernel_size,
                                            2 ** i, cfg.dropout) for i in range(cfg.levels)])
        self.drop, self.pool = nn.Dropout(cfg.dropout), cfg.pool
        self.head = nn.Linear(cfg.channels, 2)

    def forward(self, x):
        h = self.blocks(x)                                    # (B, C, L)
        h = h[:, :, -1] if self.pool == "last" else h.mean(-1)
        return self.head(self.drop(h))


# ----------------------------------------------------------------------------------------------- loop
def train_epoch(model, opt, x, y, idx, batch_size, gen):
    """One pass over the windows idx in the order of gen; (summed loss, correct count) as tensors."""
    model.train()
    order = idx[torch.randperm(len(idx), generator=gen).to(idx.device)]
    loss_sum, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, len(order), batch_size):
        b = order[start:start + batch_size]
        logits = model(x[b])
        loss = F.cross_entropy(logits, y[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach() * len(b)
        correct += (logits.detach().argmax(-1) == y[b]).sum()
    return loss_sum, correct


@torch.no_grad()
def evaluate(model, x, y, idx):
    """(summed loss, correct count, P(increase) per window) on the windows idx."""
    model.eval()
    logits = torch.cat([model(x[idx[i:i + EVAL_ROWS]]) for i in range(0, len(idx), EVAL_ROWS)])
    loss, correct = F.cross_entropy(logits, y[idx], reduction="sum"), (logits.argmax(-1) == y[idx]).sum()
    return loss, correct, logits.softmax(-1)[:, 1]


def train(config: CNNConfig, report, *, checkpoint_dir=None, resume_from=None, artifact_dir=None, data=None):
    cfg = config if isinstance(config, CNNConfig) else config_from_dict(CNNConfig, config)  # flat keys
    device = start_fit(cfg)  # torch.set_num_threads(num_threads) when > 0; 'auto' = CUDA when there is one
    windows = build_sequence_data(cfg.data, source=data)  # the study's shared CSSE series -> windows of set C
    split = windows.splits[windows.split]
    x = torch.as_tensor(np.ascontiguousarray(windows.x.transpose(0, 2, 1))).to(device)  # (N, F, L)
    y = torch.as_tensor(windows.y).long().to(device)
    idx = {part: torch.as_tensor(getattr(split, part)).long().to(device) for part in PARTS}

    seeds = [cfg.data.seed + j for j in range(cfg.seeds)]
    models, opts, gens = [], [], []
    for s in seeds:
        torch.manual_seed(s)  # a model's initial weights depend on its seed only
        models.append(TCN(x.shape[1], cfg).to(device))
        opts.append(torch.optim.AdamW(models[-1].parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay))
        gens.append(torch.Generator().manual_seed(s))
    torch.manual_seed(cfg.data.seed)  # dropout masks
    tracker = BestEpochs("max", len(seeds), cfg.patience)
    scored: dict[str, np.ndarray] = {}  # metric -> per seed, at its best validation epoch
    best_weights = [_copy(m) for m in models]  # each seed's weights at its best validation epoch: model.pt
    best_p = {part: torch.zeros(len(seeds), len(idx[part]), device=device) for part in ("val", "test")}
    metrics = {}
    state = resume_state(resume_from, cfg, RESUMABLE_CHANGES)  # refused if written under another config
    if state is not None:
        for model, opt, gen, saved in zip(models, opts, gens, state["seeds"]):
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["opt"])
            gen.set_state(saved["gen"])
        torch.set_rng_state(state["rng"])
        tracker = BestEpochs("max", len(seeds), cfg.patience, **state["best"])
        scored = {k: np.asarray(v) for k, v in state["scored"].items()}
        best_p = {k: v.to(device) for k, v in state["best_p"].items()}
        best_weights = [{n: t.to(device) for n, t in w.items()} for w in state["best_weights"]]
        metrics = state["metrics"]

    for epoch in epochs_to_run(cfg, state):
        t0 = time.perf_counter()
        now = {f"{p}_{w}": np.zeros(len(seeds)) for p in PARTS for w in ("loss", "acc")}  # this epoch, per seed
        probs = {}
        for k, (model, opt, gen) in enumerate(zip(models, opts, gens)):
            results = {"train": train_epoch(model, opt, x, y, idx["train"], cfg.batch_size, gen)}
            for part in ("val", "test"):
                *results[part], probs[part, k] = evaluate(model, x, y, idx[part])
            for part, (loss, correct) in results.items():
                now[f"{part}_loss"][k] = float(loss) / len(idx[part])
                now[f"{part}_acc"][k] = float(correct) / len(idx[part])
        if not np.isfinite(now["train_loss"]).all():
            raise FloatingPointError(f"non-finite train_loss at epoch {epoch}")
        improved = tracker.update(epoch, now["val_acc"])
        scored = {name: np.where(improved, v, scored.get(name, v)) for name, v in now.items()}
        for part in best_p:
            for k in np.flatnonzero(improved):
                best_p[part][k] = probs[part, int(k)]
        for k in np.flatnonzero(improved):
            best_weights[k] = _copy(models[k])

        metrics = {"epoch": epoch, "best_epoch": float(tracker.epoch.mean())}
        for name, v in scored.items():
            metrics[name] = float(v.mean())
            if len(v) > 1:
                metrics[f"{name}_std"] = float(v.std(ddof=1))
        for part, p in best_p.items():  # the seed ensemble: mean P(increase) of the best-epoch models > 0.5
            metrics[f"{part}_acc_ens"] = float(((p.mean(0) > 0.5).long() == y[idx[part]]).double().mean())
        metrics |= {f"epoch_{name}": float(v.mean()) for name, v in now.items()}
        metrics["epoch_time_s"] = time.perf_counter() - t0
        own = {"rng": torch.get_rng_state(), "scored": {k: v.tolist() for k, v in scored.items()}, "best_p": best_p,
               "best_weights": best_weights,
               "seeds": [{"model": m.state_dict(), "opt": o.state_dict(), "gen": g.get_state()}
                         for m, o, g in zip(models, opts, gens)]}
        # checkpoint, then report (the order the study needs); True once patience ran out
        if end_epoch(epoch, metrics, tracker, cfg, own, checkpoint_dir=checkpoint_dir, report=report):
            break
    if artifact_dir is not None:  # the weights the test numbers were scored with, one state_dict per seed
        save_model(artifact_dir, cfg, {f"{k}.{n}": t for k, w in enumerate(best_weights) for n, t in w.items()},
                   seeds=seeds, n_features=int(x.shape[1]))
    return metrics


def _copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------- the model, to use
@dataclass
class CNNModel:
    """The trial's S models, each at its best validation epoch; P(increase) is the mean of their softmax."""

    models: list[TCN]
    config: CNNConfig
    seeds: list[int]

    @torch.no_grad()
    def predict(self, windows) -> "pd.DataFrame":
        """Windows (N, L, F) as the data layer builds them, or (N, L*F) / a table of L*F columns (day-major: all
        features of the oldest day first) -> a DataFrame of p_increase (mean over seeds) and p_increase_std."""
        import pandas as pd

        x = np.array(windows.to_numpy() if hasattr(windows, "to_numpy") else windows, dtype=np.float32)
        steps, feats = self.config.data.seq_len, self.models[0].blocks[0].conv1.in_channels
        if x.ndim == 2 and x.shape[1] == steps * feats:
            x = x.reshape(len(x), steps, feats)
        if x.ndim != 3 or x.shape[1:] != (steps, feats):
            raise ValueError(f"windows of shape {x.shape}: expected (N, {steps}, {feats}) or (N, {steps * feats})")
        device = next(self.models[0].parameters()).device
        xt = torch.as_tensor(np.ascontiguousarray(x.transpose(0, 2, 1))).to(device)  # (N, F, L)
        p = torch.stack([torch.cat([m(xt[i:i + EVAL_ROWS]).softmax(-1)[:, 1] for i in range(0, len(xt), EVAL_ROWS)])
                         if len(xt) else torch.zeros(0, device=device) for m in self.models]).double().cpu().numpy()
        std = p.std(0, ddof=1) if len(p) > 1 else np.zeros(p.shape[1])
        return pd.DataFrame({"p_increase": p.mean(0), "p_increase_std": std})


def load_model(folder: Path, device: str = "cpu") -> CNNModel:
    """model.pt (read with weights_only=True: nothing in it runs) -> the ready CNNModel, in eval mode."""
    blob = load_model_file(folder)
    cfg = config_from_dict(CNNConfig, blob["config"])
    models = []
    for k, _seed in enumerate(blob["seeds"]):
        model = TCN(blob["n_features"], cfg)
        model.load_state_dict({n.split(".", 1)[1]: t for n, t in blob["state_dict"].items() if n.startswith(f"{k}.")})
        models.append(model.to(device).eval())
    return CNNModel(models, cfg, list(blob["seeds"]))


TRAINABLE = Trainable(
    name="cnn", config=CNNConfig, train=train, metric="val_acc", mode="max", **COVID_HOOKS, artifacts=("model.pt",),
    model=ModelSpec(files=("model.pt",), load=load_model, predict=lambda model, windows: model.predict(windows),
                    describe="COVID windows (N, L, F), or a table of L*F columns t0_f0, ..., day-major"),
    progress={"epoch": "epoch", "train_acc": "train acc", "val_acc": "val acc", "best_epoch": "best epoch"},
    test_metrics=("test_acc",),
    description="temporal convolutional network (dilated causal 1-D convolutions) on the COVID windows",
)
