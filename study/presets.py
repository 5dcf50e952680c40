"""Presets are data: constants, fixed runs and a search space per trainable, in one place.

A preset for one trainable is a `Part`: the constants every trial gets, the fixed runs the homework asks for
(given to Optuna as points to evaluate, so the searcher learns from them too), and a declarative search space
that `study.space` turns into a define-by-run Optuna function. `homework` = the fixed runs plus a search.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

# name -> ("categorical", [choices]) | ("int", lo, hi) | ("loguniform", lo, hi) | ("uniform", lo, hi)
Space = dict[str, tuple]


@dataclass(frozen=True)
class Part:
    """One Tuner's worth of work: a trainable, its constants, fixed points and search."""

    kind: str                        # "covid" | "vae"
    constants: dict[str, Any]
    space: Space
    fixed: list[dict[str, Any]] = field(default_factory=list)
    num_samples: int = 0             # search trials on top of the fixed ones
    scheduler: str = "none"          # "asha" | "none"
    grace_period: int = 1            # ASHA: epochs before a trial may be stopped
    metric: str = ""
    mode: str = ""

    @property
    def epochs(self) -> int:
        return int(self.constants["epochs"])

    @property
    def total_trials(self) -> int:
        return len(self.fixed) + self.num_samples


# Chosen on validation: test numbers are logged for every trial but never used to choose (report them once).
COVID_METRIC = ("val_acc", "max")
# The honest comparison across KL weights is the true negative ELBO (KL weight 1), not each trial's objective.
VAE_METRIC = ("test_neg_elbo", "min")

COVID_SPACE: Space = {
    "cell": ("categorical", ["rnn", "lstm", "gru"]),
    "seq_len": ("int", 1, 40),
    "hidden_size": ("categorical", [16, 32, 64, 128]),
    "num_layers": ("int", 1, 2),
    "lr": ("loguniform", 3e-4, 3e-2),
    "norm": ("categorical", ["none", "log1p", "zscore", "minmax"]),
    # What the baselines see (the window relative to its last day, the weekday); `norm` acts on counts only.
    "features": ("categorical", ["counts", "counts+weekday", "relative", "relative+weekday"]),
}
VAE_SPACE: Space = {
    # Categorical, not log-uniform: the homework's 0 has no logarithm, and TPE handles a few levels well.
    "kl_weight": ("categorical", [0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]),
    "latent_dim": ("categorical", [8, 16, 32, 64]),
    "arch": ("categorical", ["mlp", "conv"]),
    "lr": ("loguniform", 1e-4, 3e-3),
}


def _grid(**axes: list) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]


def _covid_fixed(lengths: list[int], hidden: int, lr: float, layers: int) -> list[dict]:
    """The homework's runs: every cell at several L on plain counts (seeds inside each trial), same other settings;
    plus 'no normalisation' for the norm figure."""
    base = {"hidden_size": hidden, "num_layers": layers, "lr": lr, "features": "counts"}
    runs = [dict(base, cell=c, seq_len=L, norm="log1p") for c, L in itertools.product(["rnn", "lstm", "gru"], lengths)]
    runs += [dict(base, cell=c, seq_len=max(lengths), norm="none") for c in ["rnn", "lstm", "gru"]]
    return runs


def _vae_fixed(arch: str, latent: int, lr: float) -> list[dict]:
    """The homework's three runs: KL weight 1, 100 and 0 with everything else equal."""
    return [{"kl_weight": w, "latent_dim": latent, "arch": arch, "lr": lr} for w in (1.0, 100.0, 0.0)]


PRESETS: dict[str, dict[str, Part]] = {
    "smoke": {
        "covid": Part(
            kind="covid",
            constants={"epochs": 2, "batch_size": 128, "date_range": "homework", "split": "random", "seed": 0,
                       "seeds": 2},
            space=COVID_SPACE | {"hidden_size": ("categorical", [8, 16])},
            # Every report figure has its runs: three cells at two L, and one run without normalisation.
            fixed=_covid_fixed([5, 10], hidden=16, lr=1e-2, layers=1),
            num_samples=2, scheduler="asha", grace_period=1, metric=COVID_METRIC[0], mode=COVID_METRIC[1],
        ),
        "vae": Part(
            kind="vae",
            constants={"epochs": 2, "batch_size": 128, "image_size": 16, "max_images": 512, "iw_samples": 8, "seed": 0},
            space={k: v for k, v in VAE_SPACE.items() if k != "arch"} | {"latent_dim": ("categorical", [4, 8])},
            fixed=[{"kl_weight": w, "latent_dim": 8, "lr": 1e-3} for w in (1.0, 100.0, 0.0)],
            num_samples=2, scheduler="none", metric=VAE_METRIC[0], mode=VAE_METRIC[1],
        ),
    },
    "homework": {
        "covid": Part(
            kind="covid",
            constants={"epochs": 30, "batch_size": 64, "date_range": "homework", "split": "random", "seed": 0,
                       "seeds": 3},
            space=COVID_SPACE,
            fixed=_covid_fixed([1, 4, 10, 20, 30], hidden=32, lr=3e-3, layers=1),
            num_samples=24, scheduler="asha", grace_period=5, metric=COVID_METRIC[0], mode=COVID_METRIC[1],
        ),
        "vae": Part(
            kind="vae",
            constants={"epochs": 20, "batch_size": 128, "image_size": 32, "iw_samples": 64, "seed": 0},
            space=VAE_SPACE,
            fixed=_vae_fixed(arch="conv", latent=32, lr=1e-3),
            num_samples=8, scheduler="asha", grace_period=4, metric=VAE_METRIC[0], mode=VAE_METRIC[1],
        ),
    },
    "search": {
        "covid": Part(
            kind="covid",
            constants={"epochs": 30, "batch_size": 64, "date_range": "homework", "split": "random", "seed": 0,
                       "seeds": 3},
            space=COVID_SPACE, num_samples=48, scheduler="asha", grace_period=5,
            metric=COVID_METRIC[0], mode=COVID_METRIC[1],
        ),
        "vae": Part(
            kind="vae",
            constants={"epochs": 20, "batch_size": 128, "image_size": 32, "iw_samples": 64, "seed": 0},
            space=VAE_SPACE, num_samples=16, scheduler="asha", grace_period=4,
            metric=VAE_METRIC[0], mode=VAE_METRIC[1],
        ),
    },
}
KINDS = {"covid": ["covid"], "vae": ["vae"], "homework": ["covid", "vae"]}


def parts_for(target: str, preset: str) -> list[Part]:
    """The Tuner parts of `study run TARGET --preset PRESET`, in run order."""
    if target not in KINDS:
        raise KeyError(f"unknown study target {target!r}; choose from {', '.join(KINDS)}")
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return [PRESETS[preset][kind] for kind in KINDS[target]]
