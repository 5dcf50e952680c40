"""A COVID trial's model, ready to use: P(increase of new cases tomorrow) from the last L days of a country.

`load(folder)` rebuilds what `trainables.sequence` wrote as model.pt (`ModelSpec.load`): every model the trial
trained, each at its best validation epoch (the weights its test numbers and its map were scored with), stacked as
the trial stacked them. The "main" models (one per seed, on the configured split) answer `probabilities` and
`predict`; the time split's twins (`time_twin`, trained on the earlier days only) are there too, under
`group="time"`. P(increase) is the mean over the seeds' softmax, as the trial's map and ensemble take it.

Inputs are windows as the data layer builds them (`data.sequence_data`: `SequenceData.x`, (N, L, F) float32,
features and normalisation applied, the oldest day first), or a table of L*F columns `t0_f0, t0_f1, ...,
t{L-1}_f{F-1}` (day-major: all features of the oldest day, then the next day's), or raw series: `latest` reads a
country's last L days from the data folder, `windows_from_cumulative` turns your own cumulative counts into the
model's input with the trial's revision rule, features and normalisation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.covid import CovidSeries, daily_new_cases
from data.errors import DataError
from data.sequence_data import CovidDataConfig, load_source
from data.windows import latest_inputs
from trainables.common import load_model_file
from trainables.names import MODEL
from trainables.sequence_model import StackedClassifier

DESCRIBE = ("windows (N, L, F) as data.sequence_data builds them (features and normalisation applied, oldest day "
            "first), or a table of L*F columns t0_f0, t0_f1, ..., t{L-1}_f{F-1} (all features of day 0, the oldest, "
            "then day 1's, ...); one row of P(increase) per window")


@dataclass
class CovidModel:
    """The trial's stacked models (see the module docstring); `config` is the trial's `SequenceConfig`."""

    net: StackedClassifier
    config: Any                 # trainables.sequence.SequenceConfig
    group: list[str]            # per stacked model: "main" | "time"
    seeds: list[int]            # per stacked model
    device: torch.device

    @property
    def seq_len(self) -> int:
        return self.config.data.seq_len

    @property
    def n_features(self) -> int:
        return self.net.input_size

    def windows(self, inputs: Any) -> np.ndarray:
        """inputs (N, L, F), (N, L*F) or a DataFrame of L*F columns -> float32 (N, L, F); a wrong shape is a
        ValueError saying the shape expected."""
        names = list(getattr(inputs, "columns", []))
        x = np.array(inputs.to_numpy() if hasattr(inputs, "to_numpy") else inputs, dtype=np.float32)  # a copy
        steps, feats = self.seq_len, self.n_features
        if x.ndim == 2 and x.shape[1] == steps * feats:
            if names and names != columns(steps, feats) and all(isinstance(n, str) for n in names):
                raise ValueError(f"columns {names[:3]}...: expected {', '.join(columns(steps, feats)[:3])}, ... "
                                 f"({steps * feats} columns, L={steps} days x F={feats} features)")
            x = x.reshape(len(x), steps, feats)
        if x.ndim != 3 or x.shape[1:] != (steps, feats):
            raise ValueError(f"windows of shape {x.shape}: this model takes (N, {steps}, {feats}) or (N, "
                             f"{steps * feats}) (L={steps} days x F={feats} features)")
        if not np.isfinite(x).all():
            raise ValueError("windows hold NaN or infinite values")
        return x

    def probabilities(self, inputs: Any, group: str = "main") -> np.ndarray:
        """P(increase) of each model of `group` on each window: float64 (S, N). Evaluated as the trial evaluated
        its test windows (the same stacked models, time-major, in chunks of the same size), so `predict` on the
        test windows gives back the trial's test numbers."""
        return self._rows(self._all(inputs), group)

    def predict(self, inputs: Any) -> Any:
        """A DataFrame, one row per window: p_increase (mean over the seeds' models), p_increase_std (their
        sample std; 0 with one seed), and with the time twins p_increase_time (the leakage-free models' mean)."""
        import pandas as pd

        every = self._all(inputs)
        p = self._rows(every, "main")
        out = {"p_increase": p.mean(0), "p_increase_std": p.std(0, ddof=1) if len(p) > 1 else np.zeros(p.shape[1])}
        if "time" in self.group:
            out["p_increase_time"] = self._rows(every, "time").mean(0)
        return pd.DataFrame(out)

    @torch.no_grad()
    def _all(self, inputs: Any) -> np.ndarray:
        """P(increase) of every stacked model on every window, (K, N): one pass serves both groups."""
        from trainables.sequence import EVAL_ROWS  # the trial's own chunking (sequence imports this module)

        x = torch.as_tensor(np.ascontiguousarray(self.windows(inputs).transpose(1, 0, 2))).to(self.device)
        k, n = len(self.group), x.shape[1]
        chunk = max(1, EVAL_ROWS.get(self.device.type, 1024) // k)
        self.net.eval()
        out = [torch.softmax(self.net(x[:, i:i + chunk].unsqueeze(1).expand(-1, k, -1, -1)), -1)[..., 1].double().cpu()
               for i in range(0, n, chunk)]
        return torch.cat(out, 1).numpy() if out else np.zeros((k, 0))

    def _rows(self, every: np.ndarray, group: str) -> np.ndarray:
        rows = [k for k, g in enumerate(self.group) if g == group]
        if not rows:
            raise ValueError(f"no {group!r} models in this trial (it has {sorted(set(self.group))})")
        return every[rows]

    def windows_from_cumulative(self, cumulative: Any, dates: Any, countries: list[str] | None = None
                                ) -> tuple[np.ndarray, list[str]]:
        """Your own cumulative counts (C, T) or (T,) on consecutive `dates` (T, the last is the last day known)
        -> the model's input for the next day, (C', L, F), and the countries kept (one with no case is left out,
        as the trial's map leaves it out). The trial's revision rule, features and normalisation are applied
        (zscore's statistics come from the days before the series' own time-split cutoff: give the trial's date
        range to reproduce its numbers)."""
        values = np.atleast_2d(np.asarray(cumulative, dtype=np.float64))
        days = np.asarray(dates, dtype="datetime64[D]")
        if values.shape[1] != len(days):
            raise ValueError(f"{values.shape[1]} counts per country but {len(days)} dates")
        names = list(countries) if countries is not None else [f"series {i}" for i in range(len(values))]
        if len(names) != len(values):
            raise ValueError(f"{len(values)} series but {len(names)} country names")
        zeros = np.zeros(len(values))
        series = CovidSeries(countries=names, dates=days, cumulative=values, lat=zeros, long=zeros,
                             source=Path("<cumulative counts>"))
        return self._latest(daily_new_cases(series, self.config.data.revisions))

    def latest(self, countries: list[str] | None = None, data_dir: str | None = None) -> Any:
        """P(increase) on the day after the data's last day, from each country's last L days in the data folder
        (`data_dir`, default the trial's own): a DataFrame indexed by country with iso2, date and `predict`'s
        columns; the same numbers as the trial's predictions.json when the data is the same. Unknown country
        names are a DataError naming them."""
        d: CovidDataConfig = self.config.data
        source = load_source(data_dir if data_dir is not None else d.data_dir, d.date_range)
        daily = daily_new_cases(source.series, d.revisions)
        x, found = self._latest(daily)
        rows = list(range(len(found)))
        if countries is not None:
            missing = [c for c in countries if c not in found]
            if missing:
                known = "has no case in the data" if all(c in daily.countries for c in missing) else "is not in the data"
                raise DataError(f"country {missing[0]!r} {known} (names as in the CSSE file, e.g. 'US', 'Korea, "
                                f"South')", source.csv_path)
            rows = [found.index(c) for c in countries]
        table = self.predict(x[rows])
        table.insert(0, "date", str(daily.dates[-1] + np.timedelta64(1, "D")))
        table.insert(0, "iso2", [source.iso2.get(found[i]) for i in rows])
        table.index = [found[i] for i in rows]
        table.index.name = "country"
        return table

    def _latest(self, daily) -> tuple[np.ndarray, list[str]]:
        d = self.config.data
        return latest_inputs(daily, d.seq_len, d.norm, None, d.train_frac, d.features, d.val_frac)


def columns(steps: int, feats: int) -> list[str]:
    """The table layout of a window: t{day}_f{feature}, day-major, the oldest day first."""
    return [f"t{t}_f{f}" for t in range(steps) for f in range(feats)]


def load(folder: str | Path, device: str = "cpu") -> CovidModel:
    """`ModelSpec.load`: model.pt in `folder` -> a CovidModel on `device`, in eval mode (read with
    weights_only=True: nothing in the file runs). A model.pt of an older trial that did not say which stacked
    models are the main ones: the first `seeds` are (the trial stacks the main group first)."""
    from trainables.sequence import SequenceConfig

    blob = load_model_file(folder, map_location="cpu")
    cfg = SequenceConfig.from_dict(blob["config"])
    state = blob["state_dict"]
    k, input_size = state["weight_ih_l0"].shape[0], state["weight_ih_l0"].shape[-1]
    seeds = [int(s) for s in blob.get("seeds", (cfg.model_seeds * 2)[:k])]
    group = list(blob.get("group", ["main"] * cfg.seeds + ["time"] * (k - cfg.seeds)))
    if len(seeds) != k or len(group) != k:
        raise ValueError(f"{Path(folder) / MODEL}: {k} stacked models but {len(seeds)} seeds, {len(group)} groups")
    net = StackedClassifier(cfg.cell, input_size, cfg.hidden_size, cfg.num_layers, cfg.dropout, seeds)
    net.load_state_dict(state)
    dev = torch.device(device)
    return CovidModel(net.to(dev).eval(), cfg, group, seeds, dev)


def predict(model: CovidModel, inputs: Any) -> Any:
    """`ModelSpec.predict`: windows -> a DataFrame of p_increase (see `CovidModel.predict`)."""
    return model.predict(inputs)
