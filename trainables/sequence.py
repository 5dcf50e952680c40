"""The COVID sequence classifier (homework problem 1): RNN / LSTM / GRU on windows of L days -> increase next day?

Reads top to bottom: config, data, model, loss/evaluation, loop. `train(config)` builds the windows with the data
layer and calls `fit(cfg, data)`; `fit` takes in-memory `SequenceData`, so tests and benchmarks can feed synthetic
arrays of the real shapes.

Speed: every window lives on the training device for the whole run; a batch is an index slice of a per-epoch
permutation drawn from a seeded generator (no DataLoader, no per-sample Python, no host<->device copy and no
`.item()` per batch: loss sums and correct counts accumulate on the device and are read once per epoch).

The leakage-free number, `test_acc_time`: under the `random` split, overlapping windows of one country land on
both sides of the split (and under `country`, the same days of strongly correlated countries do), so `test_acc`
flatters the model. Evaluating the same model on the time split's test days would not fix that (under a random
split it has trained on most of those windows). So when split != "time" (and `time_twin` is on) a second model of
the same shape is trained in the same loop on the time split's training windows and evaluated on its test windows:
an honest number at twice the cost. `time_twin=False` skips it, and test_acc_time is then left out, not faked.
Under split == "time" the main model is already leakage-free and `test_acc_time == test_acc`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from data.sequence_data import CovidDataConfig, CovidSource, SequenceData, build_sequence_data
from trainables.common import (
    Report, check_finite, config_from_dict, load_checkpoint, pick_device, rng_state, save_checkpoint,
    save_model, seed_everything, set_rng_state, write_json,
)
from trainables.rnn_cells import ManualRNN

LABELS = ["no increase", "increase"]
EVAL_CHUNK = 8192  # windows per forward pass at evaluation: bounded memory, few kernel launches


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SequenceConfig:
    """Every key has a default; the data keys are passed on to `data.sequence_data.CovidDataConfig` unchanged."""

    cell: str = "gru"                 # rnn | lstm | gru
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.0              # between stacked layers (torch semantics); ignored with one layer
    seq_len: int = 30                 # L, days per window
    # data (see CovidDataConfig for their meaning)
    date_range: str = "full"
    revisions: str = "clip"
    selection: str = "any-pair"
    threshold: float = 0.7
    reference: str = "Algeria"
    min_partners: int = 40
    label: str = "next-higher"
    norm: str = "log1p"
    split: str = "random"             # random | time | country
    train_frac: float = 0.75
    data_dir: str | None = None       # None: the data layer's default (STUDY_DATA_DIR, else the user cache)
    # optimisation
    optimizer: str = "adam"           # adam | sgd (momentum 0.9)
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 20
    seed: int = 0
    device: str = "auto"              # auto | cpu | cuda
    impl: str = "cudnn"               # cudnn: torch.nn.RNN/LSTM/GRU ; manual: trainables.rnn_cells
    num_threads: int = 0              # torch CPU threads for this trial; 0 leaves the setting alone
    time_twin: bool = True            # train a twin on the time split for test_acc_time (see module docstring)

    def __post_init__(self) -> None:
        choices = {"cell": ("rnn", "lstm", "gru"), "optimizer": ("adam", "sgd"), "impl": ("cudnn", "manual"),
                   "device": ("auto", "cpu", "cuda")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r}: expected one of {', '.join(allowed)}")
        for key in ("hidden_size", "num_layers", "seq_len", "batch_size", "epochs"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key}={getattr(self, key)!r}: must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r}: must be in [0, 1)")
        if self.lr <= 0 or self.num_threads < 0:
            raise ValueError("lr must be > 0 and num_threads >= 0")

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "SequenceConfig":
        return config_from_dict(cls, config)

    def data_config(self) -> CovidDataConfig:
        names = {f.name for f in dataclasses.fields(CovidDataConfig)}
        return CovidDataConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})


# Keys that may change between a checkpoint and its resumption without changing the curve.
RESUMABLE_CHANGES = {"epochs", "device", "num_threads", "data_dir"}


# ----------------------------------------------------------------------------------------------- data
def _tensors(data: SequenceData, device: torch.device) -> dict[str, torch.Tensor]:
    """Copy every array to the device once, for the whole run."""
    names = ["x_train", "y_train", "x_test", "y_test", "x_train_time", "y_train_time", "x_test_time",
             "y_test_time", "x_latest"]
    out = {n: torch.as_tensor(np.asarray(getattr(data, n))).to(device) for n in names}
    for n in names:
        out[n] = out[n].float() if n.startswith("x") else out[n].long()
    if len(out["x_train"]) == 0 or len(out["x_test"]) == 0:
        raise ValueError(f"need training and test windows, got {len(out['x_train'])} and {len(out['x_test'])}")
    return out


# ----------------------------------------------------------------------------------------------- model
class SequenceClassifier(nn.Module):
    """Recurrent encoder -> last hidden state of the top layer -> linear -> 2 logits (softmax at the loss)."""

    def __init__(self, cfg: SequenceConfig, input_size: int = 1):
        super().__init__()
        dropout = cfg.dropout if cfg.num_layers > 1 else 0.0
        if cfg.impl == "manual":
            self.rnn = ManualRNN(cfg.cell, input_size, cfg.hidden_size, cfg.num_layers, dropout)
        else:
            cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cfg.cell]
            self.rnn = cls(input_size, cfg.hidden_size, cfg.num_layers, batch_first=True, dropout=dropout)
        self.head = nn.Linear(cfg.hidden_size, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def _optimizer(cfg: SequenceConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    # Fused Adam: one kernel updates every parameter instead of about ten ops per tensor. The models are small, so
    # that per-op cost shows: on a 1-thread CPU trial it was 12-25% of an epoch (`study bench`, hidden 32, batch 64).
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


# ----------------------------------------------------------------------------------------------- loss / eval
def _train_epoch(model, opt, x, y, batch_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over a seeded permutation; returns (summed loss, correct count) as device tensors (no sync)."""
    model.train()
    perm = torch.randperm(len(x), generator=gen).to(x.device)  # one copy per epoch, not per batch
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, len(x), batch_size):
        idx = perm[start:start + batch_size]
        xb, yb = x[idx], y[idx]
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
    return loss_sum, correct


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    if len(x) == 0:
        return x.new_zeros(0, 2)
    return torch.cat([model(x[i:i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)])


def _evaluate(model, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, correct count) on the device."""
    logits = _logits(model, x)
    return F.cross_entropy(logits, y, reduction="sum"), (logits.argmax(1) == y).sum()


# ----------------------------------------------------------------------------------------------- loop
def fit(cfg: SequenceConfig, data: SequenceData, report: Report | None = None, *, checkpoint_dir=None,
        resume_from=None, artifact_dir=None) -> dict:
    """Train on in-memory windows; report each epoch; return the last metrics plus the end-of-run results."""
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device(cfg.device)
    gen = seed_everything(cfg.seed)
    t = _tensors(data, device)
    twin = cfg.split != "time" and cfg.time_twin
    model = SequenceClassifier(cfg, t["x_train"].shape[-1]).to(device)
    opt = _optimizer(cfg, model)
    model_t = SequenceClassifier(cfg, t["x_train"].shape[-1]).to(device) if twin else None
    opt_t = _optimizer(cfg, model_t) if twin else None

    start, metrics = 1, {}
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        changed = sorted(k for k, v in state["config"].items()
                         if k not in RESUMABLE_CHANGES and getattr(cfg, k, None) != v)
        if changed:
            raise ValueError(f"{resume_from}: checkpoint was written with different {', '.join(changed)}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if twin:
            model_t.load_state_dict(state["twin"])
            opt_t.load_state_dict(state["twin_optimizer"])
        set_rng_state(state["rng"], gen)
        start, metrics = state["epoch"] + 1, state["metrics"]

    n_train, n_test, n_test_time = len(t["y_train"]), len(t["y_test"]), len(t["y_test_time"])
    for epoch in range(start, cfg.epochs + 1):
        t0 = time.perf_counter()
        tr_loss, tr_correct = _train_epoch(model, opt, t["x_train"], t["y_train"], cfg.batch_size, gen)
        te_loss, te_correct = _evaluate(model, t["x_test"], t["y_test"])
        if twin:
            _train_epoch(model_t, opt_t, t["x_train_time"], t["y_train_time"], cfg.batch_size, gen)
            tt_loss, tt_correct = _evaluate(model_t, t["x_test_time"], t["y_test_time"])
        else:  # split == "time": the main model is the leakage-free one (else the values are dropped below)
            tt_loss, tt_correct = te_loss, te_correct
        tr_loss, tr_correct, te_loss, te_correct, tt_loss, tt_correct = torch.stack(
            [tr_loss, tr_correct.double(), te_loss, te_correct.double(), tt_loss, tt_correct.double()]
        ).tolist()  # the one host sync of the epoch
        check_finite(epoch, train_loss=tr_loss, test_loss=te_loss, test_loss_time=tt_loss)
        n_tt = n_test_time if twin else n_test
        metrics = {
            "epoch": epoch,
            "train_loss": tr_loss / n_train, "train_acc": tr_correct / n_train,
            "test_loss": te_loss / n_test, "test_acc": te_correct / n_test,
            "test_loss_time": tt_loss / max(n_tt, 1), "test_acc_time": tt_correct / max(n_tt, 1),
            "epoch_time_s": time.perf_counter() - t0,
        }
        if not twin and cfg.split != "time":  # no twin asked for: report no leakage-free number, not a leaky one
            del metrics["test_loss_time"], metrics["test_acc_time"]
        if checkpoint_dir is not None:
            save_checkpoint(
                checkpoint_dir, model=model.state_dict(), optimizer=opt.state_dict(),
                twin=model_t.state_dict() if twin else None, twin_optimizer=opt_t.state_dict() if twin else None,
                epoch=epoch, rng=rng_state(gen), metrics=metrics, config=dataclasses.asdict(cfg),
            )
        if report is not None:
            report(dict(metrics))

    return _finish(cfg, data, t, model, metrics, artifact_dir)


def _majority_rate(y) -> float:
    rate = float(np.mean(np.asarray(y) == 1)) if len(y) else 0.5
    return max(rate, 1.0 - rate)


def _finish(cfg, data: SequenceData, t: dict, model: nn.Module, metrics: dict, artifact_dir) -> dict:
    """Confusion matrix on the test split, P(increase) per country for the next unlabelled day, artefacts."""
    pred = _logits(model, t["x_test"]).argmax(1)
    confusion = torch.zeros(2, 2, dtype=torch.long, device=pred.device)
    confusion.index_put_((t["y_test"], pred), torch.ones_like(pred), accumulate=True)  # rows: true, cols: predicted
    p_inc = torch.softmax(_logits(model, t["x_latest"]), dim=1)[:, 1].tolist()
    countries = {name: {"iso2": iso, "p_increase": p}
                 for name, iso, p in zip(data.latest_countries, data.latest_iso2, p_inc)}
    y_test = np.asarray(data.y_test)
    result = {
        **metrics,
        "confusion": {"labels": LABELS, "matrix": confusion.tolist()},
        "predictions": countries,
        "prediction_date": data.prediction_date,
        "n_train": int(len(data.y_train)), "n_test": int(len(y_test)),
        # accuracy of always guessing the majority class of the test split (the bar a model must beat)
        "majority_rate": _majority_rate(y_test), "majority_rate_time": _majority_rate(data.y_test_time),
        "n_countries_c": len(data.countries_c), "countries_c": list(data.countries_c), "data_hash": data.data_hash,
    }
    if artifact_dir is not None:
        folder = Path(artifact_dir)
        write_json(folder, "summary.json", result)
        write_json(folder, "confusion.json", result["confusion"])
        write_json(folder, "predictions.json", {"date": data.prediction_date, "countries": countries})
        save_model(folder, cfg, model)
    return result


def train(config: dict, report: Report | None = None, *, checkpoint_dir=None, resume_from=None,
          artifact_dir=None, data: CovidSource | None = None) -> dict:
    """The entry point of ARCHITECTURE.md: config dict -> windows from the data layer -> `fit`.

    `data` is a `CovidSource` a study's driver read once and shares with every trial (re-read by the data layer
    when its date range differs from the config's).
    """
    cfg = SequenceConfig.from_dict(config)
    windows = build_sequence_data(cfg.data_config(), source=data)
    return fit(cfg, windows, report, checkpoint_dir=checkpoint_dir, resume_from=resume_from,
               artifact_dir=artifact_dir)
