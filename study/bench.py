"""`study bench`: the project's training paths against the homework reports' plain PyTorch loops, in one run.

Every reference workload runs twice in this process: (a) `study.bench_plain` (TensorDataset + DataLoader with
shuffle, per-batch `.to(device)`, float32, `.item()` per batch, one model at a time) and (b) the project's own
code path (`trainables.sequence.fit`, `trainables.vae.fit`, `study.runner.run_study`) with the same model, the
same data sizes and the same batch size. Inputs are synthetic tensors of the real shapes (random walks of daily
counts cut into windows; random uint8 images), so workloads 1-3 need no data files; the study (4) trains on
the real COVID windows and is skipped, with the reason printed, when that file is missing.

Timing: seconds per epoch = the median of the timed epochs; each side runs `rounds` times, alternating (plain,
ours, plain, ours), each round a fresh model with `warmup` untimed epochs first, so a burst of load from another
process on a shared machine lands on both sides rather than on one. An epoch is one training
pass plus one pass over the test split on both sides (the reports printed test numbers every epoch). Our side's
time is the trainable's own `epoch_time_s` (+ `eval_time_s` for the VAE), taken after the epoch's host sync.
speedup = plain / ours (> 1: ours is faster). The time-split twin of the sequence trainable is off on our side
(`time_twin=False`): the plain loop has no twin, and with it on our side would train twice per epoch.

Threads (why these settings). Workloads 1-3 train one model at a time on both sides with the same torch thread
count (`--threads`, default torch's own: one per core), so the comparison is the loop, not the threading. The
study is where the CPU gains: its trials are small (hidden 32, batch 64, sequences of 1-30 steps), whose
kernels are too small to split well over threads; intra-op threading on 2 cores mostly adds synchronisation.
So the project's runner gives each trial 1 CPU (Ray `cpus_per_trial=1`, torch threads 1 in the trial) and runs
as many trials at once as there are cores (2 here), while the plain loops run one after another with torch's
default threads, as the homework did. On a GPU (`--device cuda`, unmeasured on the 2-core CPU machine) the
study packs trials on the GPU with fractional GPUs: 1 CPU and 1/k GPU each, k = min(8, cores).

Overhead of Ray + MLflow per trial: (wall x concurrent slots - the trials' summed epoch times) / trials, i.e.
every slot-second not spent in a training or test pass (trial start, reading windows, MLflow runs and per-epoch
logging, checkpoints, artefacts), and that as a % of a trial's time (its epochs plus its overhead).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.bench_study import bench_study, study_missing
from study.cli import UsageError

SEQUENCE_WORKLOADS = ("gru", "lstm", "rnn")
VAE_WORKLOADS = ("vae-homework", "vae-default")
WORKLOADS = (*SEQUENCE_WORKLOADS, *VAE_WORKLOADS, "study")


@dataclass(frozen=True)
class Sizes:
    """Data sizes and epochs; FULL is the issue's reference, QUICK fits a few minutes on a 2-core CPU."""

    windows: int = 10_000              # training windows (L=30); the test split is a quarter of that
    vae_homework_images: int = 21_551  # 64x64 training images; the test split is a tenth of that
    vae_default_images: int = 21_551   # images at the default config's size (32x32)
    warmup: int = 1                    # epochs of each round run but not timed
    timed: int = 2                     # timed epochs of each round
    rounds: int = 2                    # plain, ours, plain, ours: a burst of load from elsewhere hits both sides
    study_trials: int = 16             # the first N fixed covid runs of the homework preset
    study_epochs: int = 10

    @property
    def epochs(self) -> int:
        return self.warmup + self.timed


FULL = Sizes()
QUICK = Sizes(windows=2_000, vae_homework_images=256, vae_default_images=4_096, study_trials=4, study_epochs=2)
SEQ = {"hidden_size": 128, "num_layers": 2, "seq_len": 30, "batch_size": 128, "lr": 1e-3}
VAE_HOMEWORK = {"arch": "homework_conv", "image_size": 64, "latent_dim": 256, "batch_size": 64, "lr": 1e-3}


# --------------------------------------------------------------------------------------- synthetic data
def synthetic_windows(n: int, seq_len: int, seed: int = 0):
    """Windows of log1p daily counts from random walks of a log-rate, labelled 'next day higher' (~45% positive)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    log_rate = rng.uniform(0, 8, (n, 1)) + np.cumsum(rng.normal(0, 0.15, (n, seq_len + 1)), axis=1)
    counts = rng.poisson(np.exp(np.clip(log_rate, -5, 12)))
    x = np.log1p(counts[:, :seq_len]).astype(np.float32)[..., None]
    y = (counts[:, seq_len] > counts[:, seq_len - 1]).astype(np.int64)
    return x, y


def synthetic_images(n: int, size: int, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def sequence_data(x_train, y_train, x_test, y_test):
    """A SequenceData of synthetic windows (the time-split arrays repeat them; the twin is off in the bench)."""
    from data.sequence_data import SequenceData

    return SequenceData(
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        x_train_time=x_train, y_train_time=y_train, x_test_time=x_test, y_test_time=y_test,
        x_latest=x_test[:4], latest_countries=[f"synthetic {i}" for i in range(min(4, len(x_test)))],
        latest_iso2=[None] * min(4, len(x_test)), prediction_date="2020-01-01", countries_c=[],
        data_hash="synthetic",
    )


# --------------------------------------------------------------------------------------- configs + models
def sequence_config(cell: str, device: str, epochs: int):
    from trainables.sequence import SequenceConfig

    return SequenceConfig(cell=cell, epochs=epochs, device=device, time_twin=False, seed=0, **SEQ)


def vae_config(workload: str, device: str, epochs: int):
    """vae-homework: the report's conv VAE; vae-default: VAEConfig() as it is (only epochs/device/IW changed)."""
    from trainables.vae import VAEConfig

    extra = VAE_HOMEWORK if workload == "vae-homework" else {}
    return VAEConfig(epochs=epochs, device=device, iw_samples=0, seed=0, **extra)


def _vae_hidden(cfg) -> tuple[int, ...]:
    from trainables.vae_models import DEFAULT_HIDDEN

    return tuple(cfg.hidden) if cfg.hidden is not None else DEFAULT_HIDDEN[cfg.arch]


def our_model(workload: str):
    """The model our path trains for a workload (for the same-shape check)."""
    if workload in SEQUENCE_WORKLOADS:
        from trainables.sequence import SequenceClassifier

        return SequenceClassifier(sequence_config(workload, "cpu", 1))
    from trainables.vae_models import build_vae

    cfg = vae_config(workload, "cpu", 1)
    return build_vae(cfg.arch, cfg.image_size, cfg.latent_dim, cfg.hidden)


def plain_model(workload: str):
    """The model the plain loop trains for a workload."""
    from study import bench_plain

    if workload in SEQUENCE_WORKLOADS:
        return bench_plain.PlainSequenceModel(workload, SEQ["hidden_size"], SEQ["num_layers"])
    cfg = vae_config(workload, "cpu", 1)
    return bench_plain.plain_vae(cfg.arch, cfg.image_size, cfg.latent_dim, _vae_hidden(cfg))


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------- workloads 1-3
def _median(rounds: list[list[float]], warmup: int) -> float:
    """Median of every round's epochs after its warm-up (all epochs if a round has no more)."""
    return statistics.median([t for times in rounds for t in (times[warmup:] or times)])


def _rounds(plain, ours, sizes: Sizes) -> tuple[list[list[float]], list[list[float]]]:
    """Alternate the two sides (plain, ours, plain, ours, ...): each call returns one round's epoch times."""
    p, o = [], []
    for _ in range(sizes.rounds):
        p.append(plain())
        o.append(ours())
    return p, o


def _row(workload: str, what: str, plain: list[list[float]], ours: list[list[float]], sizes: Sizes, **extra) -> dict:
    p, o = _median(plain, sizes.warmup), _median(ours, sizes.warmup)
    return {"workload": workload, "what": what, "unit": "s/epoch", "plain_s": p, "ours_s": o, "speedup": p / o,
            "plain_epochs_s": plain, "ours_epochs_s": ours, "warmup_epochs": sizes.warmup, **extra}


def bench_sequence(cell: str, sizes: Sizes, device: str) -> dict:
    from study import bench_plain
    from trainables import sequence

    x, y = synthetic_windows(sizes.windows + sizes.windows // 4, SEQ["seq_len"], seed=0)
    x_tr, y_tr, x_te, y_te = x[:sizes.windows], y[:sizes.windows], x[sizes.windows:], y[sizes.windows:]
    data = sequence_data(x_tr, y_tr, x_te, y_te)

    def plain_round() -> list[float]:
        return bench_plain.sequence_epochs(
            x_tr, y_tr, x_te, y_te, cell=cell, hidden_size=SEQ["hidden_size"], num_layers=SEQ["num_layers"],
            batch_size=SEQ["batch_size"], lr=SEQ["lr"], epochs=sizes.epochs, device=device)

    def ours_round() -> list[float]:
        reported: list[dict] = []
        sequence.fit(sequence_config(cell, device, sizes.epochs), data, reported.append)
        return [m["epoch_time_s"] for m in reported]

    plain, ours = _rounds(plain_round, ours_round, sizes)
    what = (f"{cell.upper()} {SEQ['num_layers']}x{SEQ['hidden_size']}, L={SEQ['seq_len']}, "
            f"{sizes.windows:,} windows, batch {SEQ['batch_size']}")
    return _row(cell, what, plain, ours, sizes, n_train=len(y_tr), n_test=len(y_te),
                n_params=n_params(our_model(cell)))


def bench_vae(workload: str, sizes: Sizes, device: str) -> dict:
    from study import bench_plain
    from trainables import vae

    cfg = vae_config(workload, device, sizes.epochs)
    n = sizes.vae_homework_images if workload == "vae-homework" else sizes.vae_default_images
    images = synthetic_images(n + max(1, n // 10), cfg.image_size, seed=0)
    train, test = images[:n], images[n:]

    def plain_round() -> list[float]:
        return bench_plain.vae_epochs(
            train, test, arch=cfg.arch, image_size=cfg.image_size, latent_dim=cfg.latent_dim,
            hidden=_vae_hidden(cfg), batch_size=cfg.batch_size, lr=cfg.lr, epochs=sizes.epochs, device=device)

    def ours_round() -> list[float]:
        reported: list[dict] = []
        vae.fit(cfg, train, test, reported.append)
        return [m["epoch_time_s"] + m["eval_time_s"] for m in reported]

    plain, ours = _rounds(plain_round, ours_round, sizes)
    label = "homework conv VAE" if workload == "vae-homework" else f"default VAE ({cfg.arch})"
    what = f"{label}, {cfg.image_size}x{cfg.image_size}, {n:,} images, batch {cfg.batch_size}"
    return _row(workload, what, plain, ours, sizes, n_train=len(train), n_test=len(test),
                n_params=n_params(our_model(workload)))


# --------------------------------------------------------------------------------------- the whole run
def machine_info(device: str) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "device": device, "threads": torch.get_num_threads()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_bench(workloads: list[str], quick: bool, device: str, data_dir: str | None = None,
              threads: int | None = None, log=print) -> dict[str, Any]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    sizes = QUICK if quick else FULL
    result: dict[str, Any] = {"quick": quick, "machine": machine_info(device), "sizes": dataclasses.asdict(sizes),
                              "rows": [], "skipped": []}
    if quick:
        log("study bench --quick: scaled down from the reference workloads: "
            f"{sizes.windows:,} windows (not 10,000), homework VAE at {sizes.vae_homework_images:,} images and "
            f"default VAE at {sizes.vae_default_images:,} (not 21,551), study of {sizes.study_trials} trials x {sizes.study_epochs} epochs "
            "(not 16 x 10)")
    with tempfile.TemporaryDirectory(prefix="study-bench-") as tmp:
        for w in workloads:
            log(f"study bench: {w} ...")
            t0 = time.perf_counter()
            if w in SEQUENCE_WORKLOADS:
                row = bench_sequence(w, sizes, device)
            elif w in VAE_WORKLOADS:
                row = bench_vae(w, sizes, device)
            else:
                reason = study_missing(data_dir)
                if reason:
                    log(f"study bench: skipping the study workload: {reason}")
                    result["skipped"].append({"workload": "study", "reason": reason})
                    continue
                row = bench_study(sizes, device, data_dir, Path(tmp))
            row["bench_s"] = time.perf_counter() - t0
            result["rows"].append(row)
            log(f"study bench: {w}: plain {row['plain_s']:.3f} {row['unit']}, ours {row['ours_s']:.3f}, "
                f"speedup {row['speedup']:.2f}x ({row['bench_s']:.0f} s)")
    return result


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table (it goes into the README as it is)."""
    m = result["machine"]
    lines = [
        f"device {m['device']}{' (' + m['gpu'] + ')' if m.get('gpu') else ''}, {m['cores']} cores ({m['cpu']}), "
        f"torch {m['torch']}, {m['threads']} threads{', QUICK sizes' if result['quick'] else ''}",
        "",
        "| workload | what | plain | ours | speedup (plain / ours) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        if r["workload"] == "study":
            plain = f"{r['plain_trial_epochs_per_s']:.2f} trial-epochs/s"
            ours = f"{r['ours_trial_epochs_per_s']:.2f} trial-epochs/s"
        else:
            plain, ours = f"{r['plain_s']:.3f} s/epoch", f"{r['ours_s']:.3f} s/epoch"
        lines.append(f"| {r['workload']} | {r['what']} | {plain} | {ours} | {r['speedup']:.2f}x |")
    for s in result["skipped"]:
        lines.append(f"| {s['workload']} | skipped: {s['reason']} | | | |")
    study = next((r for r in result["rows"] if r["workload"] == "study"), None)
    if study:
        lines += ["", f"Study: {study['concurrent_trials']} trials at once, {study['cpus_per_trial']:g} CPU each "
                      f"(plain loops: one after another, {study['plain_threads']} torch threads). Ray + MLflow overhead "
                      f"{study['overhead_per_trial_s']:.2f} s per trial = {study['overhead_pct_of_trial']:.0f}% of a "
                      f"trial's time ({study['overhead_in_trial_s']:.2f} s inside the trial function outside its "
                      f"epochs: {study['overhead_trial_start_s']:.2f} s at the start, {study['overhead_per_report_s'] * 1000:.0f} ms "
                      f"per epoch report; {study['overhead_between_trials_s']:.2f} s between trials); end to end incl. Ray start {study['ours_end_to_end_trial_epochs_per_s']:.2f} "
                      "trial-epochs/s.",
                  "",
                  f"Of that, {study['study_startup_s']:.1f} s is paid once per study, not per trial (each of the "
                  f"{study['concurrent_trials']} Ray workers starts and imports torch before its first trial, then is "
                  f"reused); the marginal cost of one more trial is {study['overhead_marginal_per_trial_s']:.2f} s = "
                  f"{study['overhead_marginal_pct_of_trial']:.0f}% of a trial's time here, "
                  f"{100 * study['overhead_marginal_per_trial_s'] / 5:.0f}% of a 5-second trial."]
        if result["quick"]:
            lines.append(f"(--quick: {study['trials']} tiny trials x {study['epochs']} epochs, so the per-trial overhead "
                         "dominates this ratio; the full run's 16 x 10 is the one to read.)")
    return "\n".join(lines)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def _parse_only(value: str | None) -> list[str]:
    if not value:
        return list(WORKLOADS)
    chosen = [w.strip() for w in value.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown or not chosen:
        raise UsageError(f"--only {value!r}: expected a comma list of {', '.join(WORKLOADS)}")
    return [w for w in WORKLOADS if w in chosen]


def _bench(args: argparse.Namespace) -> int:
    import torch

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA device here")
    json_path = Path(args.json) if args.json else None
    if json_path is not None and not json_path.parent.is_dir():
        raise UsageError(f"--json {args.json}: folder {json_path.parent} does not exist")
    workloads = _parse_only(args.only)
    result = run_bench(workloads, args.quick, device, args.data_dir, args.threads)
    result["command"] = "study bench" + "".join(
        f" {flag}" for flag in (["--quick"] if args.quick else []) + [f"--device {device}"]
        + ([f"--only {','.join(workloads)}"] if args.only else []) + ([f"--threads {args.threads}"] if args.threads else []))
    print()
    print(format_table(result))
    if json_path is not None:
        _write_json(json_path, result)
        print(f"\nstudy bench: wrote {json_path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time the project's training paths against the homework's plain PyTorch loops")
    p.add_argument("--quick", action="store_true", help="scaled-down workloads: a few minutes on a 2-core CPU")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when torch sees one, else cpu")
    p.add_argument("--json", metavar="FILE", help="write every row, the machine and the sizes as JSON")
    p.add_argument("--only", metavar="LIST", help=f"comma list of workloads (default all: {','.join(WORKLOADS)})")
    p.add_argument("--threads", type=int, help="torch threads for the single-model workloads (default torch's)")
    p.add_argument("--data-dir", help="data folder for the study workload (default: $STUDY_DATA_DIR, else the cache)")
    p.set_defaults(handler=_bench)
