"""The COVID sequence classifier (homework problem 1): RNN / LSTM / GRU on windows of L days -> increase next day?

Reads top to bottom: config, data, groups of models, loop, end of run. `train(config)` builds the windows with the
data layer and calls `fit(cfg, data)`; `fit` takes in-memory `SequenceData`, so tests and benchmarks can feed
synthetic arrays of the real shapes.

One trial = one config under `seeds` seeds (S), each trained twice: on the configured split ("main") and on the
leakage-free time split ("time", the twin). Under the random split, overlapping windows of one country land in
train and test, so `test_acc` flatters the model; evaluating the same model on later days would not fix that (it
has trained on most of those windows), so a twin of the same shape and seed trains on the time split's training
days. The K = 2S models are independent but stacked into one batched model (`sequence_model.StackedClassifier`):
one forward/backward/optimizer step per batch for all of them, which is what makes seeds cheap. Each model keeps
its own initial weights (from its seed) and its own shuffling (a generator per model), and its loss is its own mean,
so model k learns exactly what it would learn alone (tests/test_trainable_sequence.py trains both ways and
compares the curves). `time_twin=False` trains the main models only and reports no time numbers (not leaky ones);
under split == "time" the main models are the leakage-free ones and the *_time metrics repeat theirs.

Each epoch reports the mean over seeds of every metric and, with two seeds or more, its spread (`*_std`, sample
standard deviation): train/val/test loss and accuracy, and the same with `_time` for the twins. The plain names
are each model's numbers at its best validation epoch so far (`common.BestEpochs`: the weights that are scored);
the epoch's own values, the learning curves, are `epoch_<name>`. `*_acc_ens` is the accuracy of the seed ensemble
(the mean of the S models' P(increase), each model at its best epoch). With `patience` the run stops once no model
has improved for that many epochs. A study chooses on `val_acc`; test numbers are reported, never used to choose;
the end of run (confusion matrix, map, model.pt) uses the best-epoch weights; `trainables.covid_model` loads
model.pt back as a ready model (the `Trainable.model` of this trainable).

Speed: every window lives on the training device for the whole run, time-major (T, N, F); a batch is an index
gather of per-model permutations; losses and correct counts accumulate on the device and are read once per epoch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from data.sequence_data import CovidDataConfig, CovidSource, SequenceData, build_sequence_data, load_source
from trainables.common import (
    BEST_EPOCH, CONFUSION, END_TIME, EVAL_TIME, MODEL, NESTED, PREDICTIONS, SUMMARY, BestEpochs, Report,
    check_config_values, check_finite, config_from_dict, curve, end_epoch, epochs_to_run, resume_state, rng_state,
    save_model, seed_everything, set_rng_state, start_fit, write_json,
)
from trainables import covid_model
from trainables.covid_hooks import COVID_HOOKS
from trainables.sequence_model import StackedClassifier
from trainables.stacked_rnn import GATES
from trainables.trainable import TORCH_WORKING_BYTES, ModelSpec, Trainable

# Windows per forward pass at evaluation, over all K models: bounded memory; on a CPU small enough that a step's
# tensors stay in the cache (measured, K=6 GRUs 1x32: 4096 per model took 2.8x as long as 170).
EVAL_ROWS = {"cpu": 1024, "cuda": 65536, "mps": 65536}
PARTS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------------- config
# Inclusive (low, high) limits: a value outside is a mistake (a typo, a unit slip), not an experiment.
LIMITS: dict[str, tuple[float, float]] = {
    "hidden_size": (1, 4096), "num_layers": (1, 8), "seq_len": (1, 10_000), "batch_size": (1, 65_536),
    "epochs": (1, 100_000), "seeds": (1, 64), "lr": (1e-8, 10.0), "weight_decay": (0.0, 1.0),
    "num_threads": (0, 1024), "min_partners": (1, 100_000), "seed": (0, 2**31 - 1), "dropout": (0.0, 0.99),
    "patience": (0, 100_000), "min_delta": (0.0, 1.0),
}
CHOICES = {"cell": ("rnn", "lstm", "gru"), "optimizer": ("adam", "sgd"), "device": ("auto", "cpu", "cuda")}


@dataclass(frozen=True)
class SequenceConfig:
    """Every key has a default. The window keys (seq_len, norm, split, ...) belong to the nested data config,
    `data.sequence_data.CovidDataConfig`, and are given flat: `from_dict({"seq_len": 14})`."""

    cell: str = "gru"                 # rnn | lstm | gru
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.0              # between stacked layers and on the last hidden state, before the head
    data: CovidDataConfig = field(default_factory=CovidDataConfig, metadata=NESTED)  # its seed seeds models too
    # optimisation
    optimizer: str = "adam"           # adam | sgd (momentum 0.9)
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 20
    patience: int = 0                 # stop when no model's val_acc has improved for this many epochs; 0: never
    min_delta: float = 0.0            # an improvement is more than this (accuracy, 0..1)
    seeds: int = 3                    # S: models per split, seeds data.seed .. data.seed+S-1
    device: str = "auto"              # auto | cpu | cuda
    num_threads: int = 0              # torch CPU threads for this trial; 0 leaves the setting alone
    time_twin: bool = True            # also train each seed on the time split (see module docstring)

    def __post_init__(self) -> None:
        check_config_values(self, LIMITS, CHOICES)
        check_config_values(self.data, LIMITS, {})

    from_dict = classmethod(config_from_dict)

    @property
    def model_seeds(self) -> list[int]:
        return [self.data.seed + j for j in range(self.seeds)]


# Keys that may change between a checkpoint and its resumption without changing the curve.
RESUMABLE_CHANGES = {"epochs", "device", "num_threads", "data_dir", "patience", "min_delta"}


# ----------------------------------------------------------------------------------------------- groups of models
@dataclass
class Stack:
    """Models trained side by side: the same part sizes, so one batch gathers (K, B) windows for all of them.
    `group[k]` is "main" or "time"; `parts[name]` holds each model's window indices of that part (K, n)."""

    group: list[str]
    seeds: list[int]
    parts: dict[str, torch.Tensor]
    model: StackedClassifier
    optimizer: torch.optim.Optimizer
    shuffles: list[torch.Generator]


def _optimizer(cfg: SequenceConfig, model: StackedClassifier) -> torch.optim.Optimizer:
    """Adam and SGD act elementwise, so on stacked parameters each model's update is the one it would get alone."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    # Fused Adam: one kernel updates every parameter instead of about ten ops per tensor.
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


def build_stacks(cfg: SequenceConfig, data: SequenceData, device: torch.device) -> list[Stack]:
    """One stack when every group's parts have the same sizes (random vs time split: always), else one per group."""
    groups = [("main", data.splits[data.split])]
    if cfg.time_twin and data.split != "time":
        groups.append(("time", data.splits["time"]))
    sizes = {tuple(len(p) for p in split) for _, split in groups}
    bundles = [groups] if len(sizes) == 1 else [[g] for g in groups]
    stacks = []
    for bundle in bundles:
        names = [name for name, _ in bundle for _ in cfg.model_seeds]
        seeds = [s for _ in bundle for s in cfg.model_seeds]
        parts = {part: torch.as_tensor(np.stack([getattr(split, part) for _, split in bundle
                                                 for _ in cfg.model_seeds])).long().to(device) for part in PARTS}
        model = StackedClassifier(cfg.cell, data.x.shape[-1], cfg.hidden_size, cfg.num_layers, cfg.dropout,
                                  seeds).to(device)
        stacks.append(Stack(names, seeds, parts, model, _optimizer(cfg, model),
                            [torch.Generator().manual_seed(s) for s in seeds]))
    return stacks


# ----------------------------------------------------------------------------------------------- loop
def _train_epoch(stack: Stack, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass of every model over its training windows; (summed loss, correct count) per model, on the device."""
    stack.model.train()
    train = stack.parts["train"]
    perms = torch.stack([torch.randperm(train.shape[1], generator=g) for g in stack.shuffles]).to(train.device)
    order = train.gather(1, perms)  # (K, n) window ids, each model in its own order
    loss_sum = torch.zeros(len(stack.seeds), device=x.device)
    correct = torch.zeros(len(stack.seeds), device=x.device, dtype=torch.long)
    for start in range(0, order.shape[1], batch_size):
        idx = order[:, start:start + batch_size]
        yb = y[idx]
        logits = stack.model(_windows(x, idx))
        losses = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view_as(yb)
        stack.optimizer.zero_grad(set_to_none=True)
        losses.mean(1).sum().backward()  # each model's gradient is that of its own mean loss
        stack.optimizer.step()
        loss_sum += losses.detach().sum(1)
        correct += (logits.detach().argmax(-1) == yb).sum(1)
    return loss_sum, correct


def _windows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (T, N, F) at window ids idx (K, B) -> (T, K, B, F); index_select, ~4x faster than x[:, idx] on a CPU."""
    return x.index_select(1, idx.flatten()).view(x.shape[0], *idx.shape, x.shape[-1])


@torch.no_grad()
def _logits(model: StackedClassifier, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Logits (K, n, 2) of each model on its own windows idx (K, n), in chunks."""
    model.eval()
    chunk = max(1, EVAL_ROWS.get(x.device.type, 1024) // idx.shape[0])
    return torch.cat([model(_windows(x, idx[:, i:i + chunk])) for i in range(0, idx.shape[1], chunk)], dim=1)


def _evaluate(stack: Stack, x: torch.Tensor, y: torch.Tensor, part: str) -> tuple[torch.Tensor, ...]:
    """Per model on its windows of `part`: summed loss, correct count, and P(increase) per window (K, n)."""
    idx = stack.parts[part]
    logits, yy = _logits(stack.model, x, idx), y[idx]
    loss = F.cross_entropy(logits.flatten(0, 1), yy.flatten(), reduction="none").view_as(yy).sum(1)
    return loss, (logits.argmax(-1) == yy).sum(1), torch.softmax(logits, -1)[..., 1]


def metric_name(part: str, what: str, time_split: bool = False, std: bool = False, ens: bool = False) -> str:
    """val_acc, test_acc_std, test_acc_time, test_acc_time_std, test_acc_time_ens: part, what, the time split's
    models, the spread over seeds, the seed ensemble."""
    return f"{part}_{what}" + ("_time" if time_split else "") + ("_std" if std else "") + ("_ens" if ens else "")


def _names(name: str, split: str) -> list[bool]:
    """Which metric families a group's numbers fill: under the time split the main models are the leakage-free
    ones, so their numbers are the *_time ones too."""
    return [False, True] if split == "time" else [name == "time"]


def _aggregate(per_model: dict[tuple[str, str], np.ndarray], group: list[str], split: str) -> dict[str, float]:
    """Mean over seeds of each metric per group, with its sample std when there are two seeds or more."""
    out: dict[str, float] = {}
    groups = np.asarray(group)
    for name in ("main", "time"):
        mask = groups == name
        for time_split in _names(name, split) if mask.any() else []:
            for (part, what), values in per_model.items():
                v = values[mask]
                out[metric_name(part, what, time_split)] = float(v.mean())
                if len(v) > 1:
                    out[metric_name(part, what, time_split, std=True)] = float(v.std(ddof=1))
    return out


def _ensembles(stacks: list[Stack], probs: list[dict[str, torch.Tensor]], y: torch.Tensor,
               split: str) -> dict[str, float]:
    """Accuracy of each group's seed ensemble: the mean of its S models' P(increase) per window, > 0.5 = increase
    (a tie answers "no increase", as argmax does for one model). Models of one group share their windows."""
    out: dict[str, float] = {}
    for stack, p in zip(stacks, probs):
        for name in dict.fromkeys(stack.group):
            rows = [k for k, g in enumerate(stack.group) if g == name]
            for part in PARTS[1:]:
                truth = y[stack.parts[part][rows[0]]]
                acc = float(((p[part][rows].mean(0) > 0.5).long() == truth).double().mean())
                for time_split in _names(name, split):
                    out[metric_name(part, "acc", time_split, ens=True)] = acc
    return out


def _take(best: torch.Tensor, now: torch.Tensor, improved: torch.Tensor) -> None:
    """best[k] = now[k] for each improved model k (tensors with a leading K dim: stacked weights, probabilities)."""
    best[improved] = now[improved].detach()


def fit(cfg: SequenceConfig, data: SequenceData, report: Report | None = None, *, checkpoint_dir=None,
        resume_from=None, artifact_dir=None) -> dict:
    """Train K = S (x2 with the twin) models on in-memory windows; report each epoch; return the last metrics plus
    the end-of-run results (per-model numbers included), all from each model's best validation epoch."""
    device = start_fit(cfg)
    state = resume_state(resume_from, cfg, RESUMABLE_CHANGES)
    seed_everything(cfg.data.seed)  # dropout masks; shuffling and initial weights have a generator per model
    x = torch.as_tensor(np.ascontiguousarray(np.asarray(data.x, dtype=np.float32).transpose(1, 0, 2))).to(device)
    y = torch.as_tensor(np.asarray(data.y)).long().to(device)
    stacks = build_stacks(cfg, data, device)
    group = [g for s in stacks for g in s.group]
    tracker = BestEpochs("max", len(group), cfg.patience, cfg.min_delta, **(state["best"] if state else {}))
    # What each model is scored by, updated when it improves: its weights, its numbers, its val/test P(increase).
    best_weights = [{n: t.detach().clone() for n, t in s.model.state_dict().items()} for s in stacks]
    best_probs = [{p: torch.zeros(s.parts[p].shape, device=device) for p in PARTS[1:]} for s in stacks]
    scored: dict[tuple[str, str], np.ndarray] = {}

    metrics: dict = {}
    if state is not None:
        for i, (stack, saved) in enumerate(zip(stacks, state["stacks"])):
            stack.model.load_state_dict(saved["model"])
            stack.optimizer.load_state_dict(saved["optimizer"])
            for gen, gen_state in zip(stack.shuffles, saved["shuffles"]):
                gen.set_state(gen_state)
            best_weights[i] = {n: t.to(device) for n, t in saved["best_weights"].items()}
            best_probs[i] = {p: t.to(device) for p, t in saved["best_probs"].items()}
        scored = {tuple(k.split("/")): np.asarray(v) for k, v in state["scored"].items()}
        set_rng_state(state["rng"], torch.Generator())
        metrics = state["metrics"]

    sizes = {part: torch.tensor([s.parts[part].shape[1] for s in stacks for _ in s.seeds], dtype=torch.float64)
             for part in PARTS}
    for epoch in epochs_to_run(cfg, state):
        t0 = time.perf_counter()
        sums = {f"{part}_{what}": [] for part in PARTS for what in ("loss", "correct")}
        trained = [_train_epoch(stack, x, y, cfg.batch_size) for stack in stacks]
        t1 = time.perf_counter()
        probs = []
        for stack, train_sums in zip(stacks, trained):
            results = [train_sums] + [_evaluate(stack, x, y, p) for p in PARTS[1:]]
            for part, (loss, correct, *_) in zip(PARTS, results):
                sums[f"{part}_loss"].append(loss)
                sums[f"{part}_correct"].append(correct)
            probs.append({p: r[2] for p, r in zip(PARTS[1:], results[1:])})
        flat = torch.stack([torch.cat(v).double() for v in sums.values()]).cpu()  # the one host sync of the epoch
        named = dict(zip(sums, flat))
        check_finite(epoch, **{f"{part}_loss": float(named[f"{part}_loss"].sum()) for part in PARTS})
        per_model = {(part, what): (named[f"{part}_{key}"] / sizes[part]).numpy()
                     for part in PARTS for what, key in (("loss", "loss"), ("acc", "correct"))}
        improved = tracker.update(epoch, per_model[("val", "acc")])
        scored = {key: np.where(improved, now, scored.get(key, now)) for key, now in per_model.items()}
        offset = 0
        for i, stack in enumerate(stacks):
            mask = torch.as_tensor(improved[offset:offset + len(stack.seeds)], device=device)
            offset += len(stack.seeds)
            for name, weight in stack.model.state_dict().items():
                _take(best_weights[i][name], weight, mask)
            for part in PARTS[1:]:
                _take(best_probs[i][part], probs[i][part], mask)
        main = np.asarray(group) == "main"
        metrics = {"epoch": epoch, **_aggregate(scored, group, data.split), **_ensembles(stacks, best_probs, y, data.split),
                   BEST_EPOCH: float(tracker.epoch[main].mean()),
                   **{curve(k): v for k, v in _aggregate(per_model, group, data.split).items()},
                   "epoch_time_s": t1 - t0, EVAL_TIME: time.perf_counter() - t1}
        own = {"rng": rng_state(torch.Generator()), "scored": {"/".join(k): v.tolist() for k, v in scored.items()},
               "stacks": [{"model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
                           "shuffles": [g.get_state() for g in s.shuffles], "best_weights": best_weights[i],
                           "best_probs": best_probs[i]} for i, s in enumerate(stacks)]}
        if end_epoch(epoch, metrics, tracker, cfg, own, checkpoint_dir=checkpoint_dir, report=report):
            break

    t0 = time.perf_counter()
    for stack, weights in zip(stacks, best_weights):
        stack.model.load_state_dict(weights)  # the end of run scores each model at its best validation epoch
    return _finish(cfg, data, stacks, x, y, metrics, scored, tracker, artifact_dir, t0)


# ----------------------------------------------------------------------------------------------- end of run
def _train_majority_accuracy(y: np.ndarray, split: Any) -> float:
    """Test accuracy of always answering the class most common in training (the bar a model must clear)."""
    return float(np.mean(y[split.test] == int(np.mean(y[split.train]) > 0.5)))


@torch.no_grad()
def _finish(cfg: SequenceConfig, data: SequenceData, stacks: list[Stack], x, y, metrics: dict,
            per_model: dict[tuple[str, str], np.ndarray], tracker: BestEpochs, artifact_dir, t0: float) -> dict:
    """Confusion matrix (summed over the main models) on the test part, P(increase) per country on the next
    unlabelled day (mean and spread over the main models), which models only ever predict one class, artefacts."""
    confusion = torch.zeros(2, 2, dtype=torch.long)
    probs, constant, pos_rate = [], 0, []
    x_latest = torch.as_tensor(np.ascontiguousarray(np.asarray(data.x_latest, np.float32).transpose(1, 0, 2)))
    for stack in stacks:
        main = [k for k, g in enumerate(stack.group) if g == "main"]
        if not main:
            continue
        idx = stack.parts["test"]
        pred = _logits(stack.model, x, idx).argmax(-1)[main].cpu()
        truth = y[idx][main].cpu()
        confusion.index_put_((truth.flatten(), pred.flatten()), torch.ones(pred.numel(), dtype=torch.long),
                             accumulate=True)  # rows: true, cols: predicted
        constant += int(((pred == 0).all(1) | (pred == 1).all(1)).sum())
        pos_rate += pred.double().mean(1).tolist()
        k = len(stack.seeds)
        latest = x_latest.to(x.device).unsqueeze(1).expand(-1, k, -1, -1)
        stack.model.eval()
        probs.append(torch.softmax(stack.model(latest), -1)[main, :, 1].cpu())
    p = torch.cat(probs).double()  # (S, countries)
    countries = {name: {"iso2": iso, "p_increase": float(p[:, i].mean()),
                        "p_increase_std": float(p[:, i].std()) if len(p) > 1 else 0.0}
                 for i, (name, iso) in enumerate(zip(data.latest_countries, data.latest_iso2))}
    y_np, main_split = np.asarray(data.y), data.splits[data.split]
    models = [{"seed": s, "split": data.split if g == "main" else "time", BEST_EPOCH: int(tracker.epoch[i]),
               **{metric_name(*k): float(v[i]) for k, v in per_model.items()}}
              for i, (g, s) in enumerate((g, s) for st in stacks for g, s in zip(st.group, st.seeds))]
    result = {
        **metrics,
        "confusion": {"labels": ["no increase", "increase"], "matrix": confusion.tolist()},
        "predictions": countries,
        "prediction_date": data.prediction_date,
        "seeds": cfg.model_seeds, "models": models,
        "n_train": len(main_split.train), "n_val": len(main_split.val), "n_test": len(main_split.test),
        "majority_rate": _train_majority_accuracy(y_np, main_split),
        "majority_rate_time": _train_majority_accuracy(y_np, data.splits["time"]),
        # main models whose test predictions are all one class: they are majority-class predictors, not forecasters
        "constant_models": constant, "test_pred_positive_rate": float(np.mean(pos_rate)),
        "n_countries_c": len(data.countries_c), "countries_c": list(data.countries_c), "data_hash": data.data_hash,
    }
    if artifact_dir is not None:
        write_json(artifact_dir, CONFUSION, result["confusion"])
        write_json(artifact_dir, PREDICTIONS, {"date": data.prediction_date, "countries": countries})
        # the first stack holds every main model (the main group is built first), and the time twins beside
        # them when both splits' parts have the same sizes; `group` and `seeds` say which row is which
        save_model(artifact_dir, cfg, stacks[0].model, group=stacks[0].group, seeds=stacks[0].seeds)
    result[END_TIME] = time.perf_counter() - t0  # the best weights back, scoring them, the artefacts
    if artifact_dir is not None:
        write_json(artifact_dir, SUMMARY, result)
    return result


def train(config: SequenceConfig | dict, report: Report | None = None, *, checkpoint_dir=None, resume_from=None,
          artifact_dir=None, data: CovidSource | None = None) -> dict:
    """The entry point of the contract (`trainables.Trainable`): config -> windows from the data layer -> `fit`.

    `data` is a `CovidSource` a study's driver read once and shares with every trial (re-read by the data layer
    when its date range differs from the config's)."""
    cfg = config if isinstance(config, SequenceConfig) else SequenceConfig.from_dict(config)
    windows = build_sequence_data(cfg.data, source=data)
    return fit(cfg, windows, report, checkpoint_dir=checkpoint_dir, resume_from=resume_from,
               artifact_dir=artifact_dir)


def memory(cfg: SequenceConfig, source: CovidSource | None) -> int:
    """Bytes one trial of `cfg` needs at its peak beyond the interpreter, on the high side (the `Trainable.memory`
    hook), counted from the shapes: N windows (at most every country, set C or not, at every day), each L x F
    float32 twice (the windows and the device's time-major copy) and L float64 (the raw counts) plus each
    model's split indices; the K = seeds (x2 with the time twin) models' weights eight times over (themselves,
    gradients, Adam's two moments and its step's temporaries, the best epoch's copy, the checkpoint's); per
    layer what `stacked_rnn` keeps for the backward and its scratch, (4G+8) x L x K*B x H floats for G gates
    (GRU 20, LSTM 24); evaluation's chunk of EVAL_ROWS windows (at most a part's, all models) without grad,
    (2G+4) x L x rows x H; TORCH_WORKING_BYTES. Measured for the homework search's largest trial (LSTM, L=40,
    hidden 128, two layers, relative+weekday, 3 seeds, CPU): peak RSS of `train` 788 MiB above a bare import,
    600-760 MiB above the data's loading in five runs (estimate 817 MiB)."""
    d = cfg.data
    if source is None or source.date_range != d.date_range:
        source = load_source(d.data_dir, d.date_range)
    countries, days = source.series.cumulative.shape
    n = countries * max(1, days - d.seq_len)
    feats = (2 if d.features.startswith("relative") else 1) + (7 if d.features.endswith("+weekday") else 0)
    k = cfg.seeds * (2 if cfg.time_twin and d.split != "time" else 1)
    g, h, steps = GATES[cfg.cell], cfg.hidden_size, d.seq_len
    weights = sum(g * h * ((feats if layer == 0 else h) + h + 2) for layer in range(cfg.num_layers)) + 2 * h + 2
    cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    part = max(d.val_frac, 1 - d.train_frac - d.val_frac)  # the evaluated parts: validation and test
    rows = min(k * int(n * part + 1), EVAL_ROWS["cpu" if cpu else "cuda"])
    floats = (8 * k * weights + cfg.num_layers * (4 * g + 8) * steps * k * cfg.batch_size * h
              + (2 * g + 4) * steps * rows * h)
    return 4 * floats + n * steps * (8 * feats + 8) + 16 * k * n + TORCH_WORKING_BYTES


TRAINABLE = Trainable(
    name="covid", config=SequenceConfig, train=train, metric="val_acc", mode="max",
    artifacts=(SUMMARY, CONFUSION, PREDICTIONS, MODEL), **COVID_HOOKS, memory=memory,
    progress={"epoch": "epoch", "train_acc": "train acc", "val_acc": "val acc", "val_acc_time": "val acc (time)"},
    test_metrics=("test_acc",), report_section="analysis.section_covid:section",
    model=ModelSpec(files=(MODEL,), load=covid_model.load, predict=covid_model.predict,
                    describe=covid_model.DESCRIBE),
    description="RNN/LSTM/GRU classifier of a next-day increase in new COVID-19 cases (homework problem 1)",
)
