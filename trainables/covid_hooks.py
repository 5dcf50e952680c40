"""What any trainable on the COVID windows shares: its data, the check of it, and the baselines.

Each hook takes a config with a `data: CovidDataConfig` field (nested, flat keys), so the built-in recurrent
classifier and a plugin on the same windows (examples/cnn) get the same data, checks and baselines with
`Trainable(..., **COVID_HOOKS)`. No torch here: the driver runs these.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from data.sequence_data import CovidDataConfig, CovidSource, build_sequence_data, load_source

# CovidDataConfig fields that do not change the windows, labels or splits (model inputs, where the file is).
NOT_DATA = ("data_dir", "norm", "features")


def load_data(cfg: Any) -> CovidSource:
    """The CSSE series of the part's date range, read once on the driver and shared with every trial."""
    return load_source(cfg.data.data_dir, cfg.data.date_range)


def data_hash(source: CovidSource) -> str:
    return source.data_hash


def check(cfg: Any, source: CovidSource) -> None:
    """The windows of this config can be built (a set C, windows longer than L, both classes): DataError if not.
    Milliseconds per config, so the driver checks every fixed run before Ray starts."""
    build_sequence_data(cfg.data, source=source)


def baseline_setting(cfg: Any) -> dict[str, Any]:
    """What decides the windows, labels and splits (date range, set C, L, label rule, split, fractions, split
    seed), not the model inputs, which the baselines do not use: one set of baselines per distinct setting."""
    return {f.name: getattr(cfg.data, f.name) for f in dataclasses.fields(CovidDataConfig) if f.name not in NOT_DATA}


def baselines(setting: dict[str, Any], source: CovidSource) -> list[dict[str, Any]]:
    """Majority, weekly rule, logistic regression and boosted trees on exactly those windows (trainables.baselines),
    scored on the trials' configured split and on the time split."""
    from trainables.baselines import fit_baselines

    rows = fit_baselines(build_sequence_data(CovidDataConfig(**setting), source=source))
    for row in rows:
        row["params"] = {"trained_split": setting["split"]}
        row["run_name"] = f"{row['baseline']} {row['split']} L={setting['seq_len']}"
    return rows


COVID_HOOKS = dict(load_data=load_data, data_hash=data_hash, check=check, baseline_setting=baseline_setting,
                   baselines=baselines)
