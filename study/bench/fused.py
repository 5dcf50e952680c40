"""Workload `fused`: the K models of one covid trial trained at once, against the same models one after another.

What a study trial of the homework covid preset trains: a GRU (hidden 32, one layer) on windows of L = 30 days,
batch 64, under 3 seeds on the configured (random) split and on the time split (the twin): K = 6 models, stacked
by `trainables.sequence` into one batched model with a hand-written backward (`trainables.stacked_rnn`), one
forward / backward / optimizer step per batch for all six. The plain side trains the same 6 models (same seeds,
same split each, same windows) the homework's way (`study.bench.plain.sequence_epochs`: TensorDataset +
`DataLoader(shuffle=True)`, `torch.nn.GRU`), one after another.

Unit: model-epochs per second (one model's training pass over its training windows + its held-out pass; the plain
loop evaluates the validation and test parts together, as ours evaluates both). Ours: K / the trial's epoch time
(`epoch_time_s`, all K models); plain: 1 / its median epoch. speedup = ours / plain. Each round is one fit of
ours and the 6 plain runs, alternating, with `warmup` untimed epochs per model.

Data: synthetic windows (`workloads.synthetic_windows`) of the real shape, as many as the homework date range has
at L = 30 (11,193, split 70 / 15 / 15 %), so the workload needs no data files.

Allocator: both sides run in this process after `trainables.common.keep_freed_memory` (`study bench` sets it
first, as every trainable does).

Threads: both sides at 1 torch thread (unless `--threads`), the setting a study trial runs at (the runner gives
each trial 1 CPU and runs one trial per core); per-core throughput is what a study on this machine gets.
"""
from __future__ import annotations

from typing import Any

from study.bench.timing import FULL, BenchRun, median_after_warmup, n_params
from study.bench.workloads import bench_splits, held_out, sequence_data, synthetic_windows

# The homework preset's covid trial at L = 30 (study/presets/homework.toml: hidden 32, 1 layer, lr 3e-3,
# batch 64, seeds 3, twin).
FUSED = {"cell": "gru", "hidden_size": 32, "num_layers": 1, "seq_len": 30, "batch_size": 64, "lr": 3e-3}
SEEDS = 3
TIME_TWIN = True
K = SEEDS * (2 if TIME_TWIN else 1)


def fused_config(device: str, epochs: int, threads: int):
    from trainables.sequence import SequenceConfig

    return SequenceConfig.from_dict(dict(epochs=epochs, device=device, seeds=SEEDS, time_twin=TIME_TWIN, seed=0,
                                         split="random", num_threads=threads, **FUSED))


def fused_data(n: int):
    """Synthetic windows with a random and a time split of equal part sizes (70 / 15 / 15 %)."""
    x, y = synthetic_windows(n, FUSED["seq_len"], seed=0)
    n_train = int(0.7 * n)
    return sequence_data(x, y, bench_splits(n, n_train), split="random")


def plain_models(cfg) -> list[tuple[str, int]]:
    """(split, seed) of every model a trial trains, in the order the trainable stacks them."""
    splits = ["random"] + (["time"] if cfg.time_twin else [])
    return [(split, seed) for split in splits for seed in cfg.model_seeds]


def bench_fused(run: BenchRun) -> dict[str, Any]:
    import torch

    from study.bench import plain as bench_plain
    from trainables import sequence
    from trainables.sequence_model import StackedClassifier

    sizes, device = run.sizes, run.device
    threads = run.threads or 1
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = fused_data(sizes.fused_windows)
        cfg = fused_config(device, sizes.epochs, threads)
        models = plain_models(cfg)

        def plain_round() -> list[list[float]]:
            out = []
            for split_name, seed in models:
                split = data.splits[split_name]
                held = held_out(split)
                out.append(bench_plain.sequence_epochs(
                    data.x[split.train], data.y[split.train], data.x[held], data.y[held], cell=cfg.cell,
                    hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, batch_size=cfg.batch_size, lr=cfg.lr,
                    epochs=sizes.epochs, device=device, seed=seed))
            return out

        ours_models: list[int] = []

        def ours_round() -> list[float]:
            reported: list[dict] = []
            result = sequence.fit(cfg, data, reported.append)
            ours_models.append(len(result["models"]))
            return [m["epoch_time_s"] + m["eval_time_s"] for m in reported]

        plain, ours = [], []
        for _ in range(sizes.rounds):  # alternating, as timing.alternate, keeping each plain model's epochs apart
            plain.append(plain_round())
            ours.append(ours_round())
    finally:
        torch.set_num_threads(before)

    plain_s = median_after_warmup([t for rnd in plain for t in rnd], sizes.warmup)  # one model-epoch
    ours_epoch_s = median_after_warmup(ours, sizes.warmup)                           # K model-epochs
    k = ours_models[0]
    ours_s = ours_epoch_s / k
    split = data.splits[data.split]
    model = StackedClassifier(cfg.cell, data.x.shape[-1], cfg.hidden_size, cfg.num_layers, cfg.dropout, [0])
    what = (f"K={k} {cfg.cell.upper()}s 1x{cfg.hidden_size} in one trial ({cfg.seeds} seeds x main + time twin) "
            f"vs {len(models)} plain runs in a row, L={cfg.data.seq_len}, {len(split.train):,} windows, "
            f"batch {cfg.batch_size}")
    return {
        "workload": "fused", "what": what, "unit": "s/model-epoch", "plain_s": plain_s, "ours_s": ours_s,
        "speedup": plain_s / ours_s, "plain_model_epochs_per_s": 1.0 / plain_s,
        "ours_model_epochs_per_s": 1.0 / ours_s, "ours_epoch_s": ours_epoch_s,
        "k_models": k, "ours_models": ours_models, "plain_runs": [len(rnd) for rnd in plain],
        "plain_models": [{"split": s, "seed": seed} for s, seed in models],
        "seeds": cfg.seeds, "time_twin": cfg.time_twin, "cell": cfg.cell, "hidden_size": cfg.hidden_size,
        "num_layers": cfg.num_layers, "seq_len": cfg.data.seq_len, "batch_size": cfg.batch_size, "threads": threads,
        "n_train": len(split.train), "n_val": len(split.val), "n_test": len(split.test),
        "n_params_per_model": n_params(model),
        "plain_epochs_s": plain, "ours_epochs_s": ours, "warmup_epochs": sizes.warmup,
    }


def fused_note(row: dict[str, Any], quick: bool) -> list[str]:
    """The line under the table: K and the sizes."""
    lines = ["", f"Fused: one trial of our sequence trainable trains K={row['k_models']} models at once "
                 f"({row['cell'].upper()} {row['num_layers']}x{row['hidden_size']}, seeds={row['seeds']} x "
                 f"{'main + time twin' if row['time_twin'] else 'main'}; L={row['seq_len']}, batch "
                 f"{row['batch_size']}, {row['n_train']:,} train + {row['n_val']:,} val + {row['n_test']:,} test "
                 f"synthetic windows; {row['n_params_per_model']:,} parameters per model) in "
                 f"{row['ours_epoch_s']:.2f} s per epoch; the plain loop trains the same {row['plain_runs'][0]} "
                 f"models one after another. Both at {row['threads']} torch thread(s). "
                 f"{row['ours_model_epochs_per_s']:.2f} vs {row['plain_model_epochs_per_s']:.2f} model-epochs/s."]
    if quick:
        lines.append(f"(--quick: {row['n_train']:,} training windows instead of {int(0.7 * FULL.fused_windows):,}.)")
    return lines
