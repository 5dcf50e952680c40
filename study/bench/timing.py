"""What every workload of `study bench` shares: the sizes, the alternating rounds and the shape of a result row.

Timing: seconds per epoch = the median of the timed epochs; each side runs `rounds` times, alternating (plain,
ours, plain, ours), each round a fresh model with `warmup` untimed epochs first, so a burst of load from another
process on a shared machine lands on both sides rather than on one. An epoch is one training pass plus one pass
over the test split on both sides (the reports printed test numbers every epoch). speedup = plain / ours.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


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
    vae_study_trials: int = 4          # the homework preset's VAE runs (conv, 32x32), two per CPU slot
    vae_study_images: int = 8_000      # real faces (train + test) each VAE trial loads
    vae_study_epochs: int = 4
    fused_windows: int = 11_193        # windows of the fused workload (train 70%, val 15%, test 15%): the real
                                       # count at L=30 on the homework date range
    read_trials: tuple[int, int] = (10, 1_000)  # the read workload's two study sizes (--read-sizes)
    read_repeats: int = 3              # runs of each read command per size; the median is kept


    @property
    def epochs(self) -> int:
        return self.warmup + self.timed


FULL = Sizes()
QUICK = Sizes(windows=2_000, vae_homework_images=256, vae_default_images=4_096, study_trials=4, study_epochs=2,
              vae_study_trials=2, vae_study_images=2_000, vae_study_epochs=2, fused_windows=2_000,
              read_trials=(5, 20), read_repeats=2)


@dataclass(frozen=True)
class BenchRun:
    """What one workload is run with: sizes, device, the data folder (studies on real data) and a scratch folder."""

    sizes: Sizes
    device: str
    data_dir: str | None
    workdir: Path
    threads: int | None = None  # --threads; None: each workload's own choice (torch's default, or see the workload)
    cache: bool = True  # the read workload keeps its studies in the user cache (False: --no-cache)


def median_after_warmup(rounds: list[list[float]], warmup: int) -> float:
    """Median of every round's epochs after its warm-up (all epochs if a round has no more)."""
    return statistics.median([t for times in rounds for t in (times[warmup:] or times)])


def alternate(plain: Callable[[], list[float]], ours: Callable[[], list[float]],
              sizes: Sizes) -> tuple[list[list[float]], list[list[float]]]:
    """Alternate the two sides (plain, ours, plain, ours, ...): each call returns one round's epoch times."""
    p, o = [], []
    for _ in range(sizes.rounds):
        p.append(plain())
        o.append(ours())
    return p, o


def epoch_row(workload: str, what: str, plain: list[list[float]], ours: list[list[float]], sizes: Sizes,
              **extra) -> dict:
    """A single-model row: seconds per epoch on each side and their ratio."""
    p, o = median_after_warmup(plain, sizes.warmup), median_after_warmup(ours, sizes.warmup)
    return {"workload": workload, "what": what, "unit": "s/epoch", "plain_s": p, "ours_s": o, "speedup": p / o,
            "plain_epochs_s": plain, "ours_epochs_s": ours, "warmup_epochs": sizes.warmup, **extra}


def n_params(model) -> int:
    """Parameters of one model; a stacked model (trainables.sequence_model.StackedClassifier) counts its model 0."""
    if hasattr(model, "torch_state"):
        return sum(v.numel() for v in model.torch_state(0).values())
    return sum(p.numel() for p in model.parameters())
