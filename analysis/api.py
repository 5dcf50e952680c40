"""A study as pandas DataFrames, for analysis scripts: `open_study(folder or name)`.

```python
from analysis import open_study
study = open_study("studies/NAME")            # a study folder; or open_study("NAME", tracking_uri="http://...")
study.trials      # one row per trial: part, trial_id, group, state, every config value (typed), final metrics
study.history     # long format: part, trial_id, epoch, metric, value
study.baselines   # one row per (data setting, baseline, scored split) of the COVID part
study.chosen("covid")   # the chosen trial's row, its test numbers and the baselines on the same windows
```
Columns and units: docs/ANALYSIS.md. The numbers are the report's: the same loader (`analysis.results`) and the
same choice (`covid_runs.best_sequence_run`, the part's objective on validation). Read-only: it opens a study
while it runs, without its lock.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from analysis import covid_runs, vae_runs
from analysis.results import RunInfo, StudyResults, load_study
from data.errors import DataError
from trainables import registry
from trainables.registry import (BASELINE, BASELINE_TAG, MLFLOW_DB, OPTUNA_DB, RAY_TRIAL_ATTR, STOPPED_TAG,
                                 STUDY_STATE, TRIAL_TAG)

ID_COLUMNS = ["part", "trial_id", "run_id", "group", "state", "chosen"]


@dataclass
class Study:
    """What `open_study` returns; see the module docstring."""

    name: str
    folder: Path | None
    tracking_uri: str
    trials: pd.DataFrame
    history: pd.DataFrame
    baselines: pd.DataFrame
    results: StudyResults

    def chosen(self, part: str) -> dict[str, Any]:
        """The part's chosen trial (its row), the test numbers reported for it, and for covid the baselines on
        its windows and splits (validation chose none of this: test numbers are reported, not compared)."""
        rows = self.trials[(self.trials.part == part) & self.trials.chosen]
        if rows.empty:
            raise DataError(f"no finished {part} trial with its objective yet", self.folder or self.tracking_uri)
        row = rows.iloc[0]
        config = registry.get(part).full_config({})  # test_frac is a setting, not a test number
        test = {k: float(row[k]) for k in row.index if k.startswith("test_") and k not in config and pd.notna(row[k])}
        out: dict[str, Any] = {"trial": row, "metric": registry.get(part).metric, "test": test}
        if part == "covid":
            run = next(r for r in self.results.runs if r.run_id == row.run_id)
            out["baselines"] = pd.DataFrame([
                {"baseline": name, "split": split, **{k: b.metrics.get(k, math.nan)
                                                      for k in ("train_acc", "val_acc", "test_acc")}}
                for split in ("random", "time") for name, b in covid_runs.baselines_at(self.results, run, split).items()])
        return out


def open_study(path_or_name: str | Path, storage: str | Path = "studies", tracking_uri: str | None = None) -> Study:
    """A study folder (or a study's name under `storage`), or with `tracking_uri` a study on an MLflow server."""
    folder = _folder(Path(path_or_name), Path(storage)) if tracking_uri is None else None
    if folder is not None:
        state = json.loads((folder / STUDY_STATE).read_text()) if (folder / STUDY_STATE).is_file() else {}
        tracking_uri = state.get("mlflow_uri") or f"sqlite:///{(folder / MLFLOW_DB).resolve()}"
        name = state.get("name") or folder.name
    else:
        name = str(path_or_name)
    results = load_study(tracking_uri, name)
    if folder is None and results.study_dir:
        folder = Path(results.study_dir)
    results.study_dir = str(folder) if folder else None
    states = _optuna_states(folder)
    runs = [r for r in [*results.runs, *results.failed] if r.trainable in registry.TRAINABLES]
    chosen = _chosen_ids(results)
    rows = [_trial_row(r, states, chosen) for r in runs]
    trials = pd.DataFrame(rows) if rows else pd.DataFrame(columns=ID_COLUMNS)
    for col in trials.columns:  # ints stay ints where another part's rows leave the column empty (nullable Int64)
        values = [row[col] for row in rows if col in row and row[col] is not None]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            trials[col] = trials[col].astype("Int64")
    history = pd.DataFrame([{"part": r.trainable, "trial_id": r.tags.get(TRIAL_TAG, r.name), "epoch": int(step),
                             "metric": key, "value": float(value)}
                            for r in runs for key, (steps, values) in sorted(r.history.items()) if key != "epoch"
                            for step, value in zip(steps, values)],
                           columns=["part", "trial_id", "epoch", "metric", "value"])
    baselines = pd.DataFrame([_baseline_row(r) for r in results.runs if r.trainable == BASELINE])
    return Study(name=results.name, folder=folder, tracking_uri=tracking_uri, trials=trials, history=history,
                 baselines=baselines, results=results)


def _folder(path: Path, storage: Path) -> Path:
    for folder in (path, storage / path):
        if (folder / STUDY_STATE).is_file() or (folder / MLFLOW_DB).is_file():
            return folder.resolve()
    if path.is_dir() or (storage / path).is_dir():
        raise DataError(f"not a study folder (no {STUDY_STATE} or {MLFLOW_DB})", path if path.is_dir() else storage / path)
    raise DataError(f"no study folder here, nor {storage / path}", path)


def _optuna_states(folder: Path | None) -> dict[str, str]:
    """Ray trial id -> Optuna state (COMPLETE, PRUNED, FAIL, RUNNING), from the study folder's storage."""
    if folder is None or not (folder / OPTUNA_DB).is_file():
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / OPTUNA_DB}", skip_table_creation=True)
    return {t.user_attrs[RAY_TRIAL_ATTR]: t.state.name
            for s in optuna.get_all_study_summaries(storage)
            for t in optuna.load_study(study_name=s.study_name, storage=storage).get_trials(deepcopy=False)
            if RAY_TRIAL_ATTR in t.user_attrs}


def _chosen_ids(results: StudyResults) -> set[str]:
    """Run ids of each part's chosen trial, as the report chooses it."""
    chosen = covid_runs.best_sequence_run(results)
    ids = {chosen.run_id} if chosen else set()
    best = vae_runs.chosen(results)
    return ids | ({best.run_id} if best else set())


def _state(run: RunInfo, states: dict[str, str]) -> str:
    found = states.get(run.tags.get(TRIAL_TAG, ""))
    if found:
        return found
    if run.status == "FAILED":
        return "FAIL"
    if run.status == "RUNNING":
        return "RUNNING"
    return "PRUNED" if run.tags.get(STOPPED_TAG, "").startswith("scheduler") else "COMPLETE"


def typed_config(run: RunInfo) -> dict[str, Any]:
    """The run's config with each value of its type (params are logged as text; non-strings as JSON)."""
    defaults = registry.get(run.trainable).full_config({})
    out = {}
    for key, default in defaults.items():
        text = run.params.get(key)
        if text is None or isinstance(default, str):
            out[key] = text if text is not None else default
            continue
        try:
            out[key] = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            out[key] = text
        if isinstance(default, float) and isinstance(out[key], int) and not isinstance(out[key], bool):
            out[key] = float(out[key])
    return out


def _trial_row(run: RunInfo, states: dict[str, str], chosen: set[str]) -> dict[str, Any]:
    epochs = [int(s[-1]) for s in (steps for steps, _ in run.history.values()) if len(s)]
    return {"part": run.trainable, "trial_id": run.tags.get(TRIAL_TAG, run.name), "run_id": run.run_id,
            "group": run.group, "state": _state(run, states), "chosen": run.run_id in chosen,
            **typed_config(run),
            **{k: v for k, v in sorted(run.metrics.items()) if k not in ("epoch", "epoch_time_s")},
            "epochs_run": max(epochs, default=0),
            "train_s": float(run.history["epoch_time_s"][1].sum()) if "epoch_time_s" in run.history else math.nan,
            "start_time": pd.to_datetime(run.start_time, unit="ms")}


def _baseline_row(run: RunInfo) -> dict[str, Any]:
    setting = {k: run.params[k] for k in ("date_range", "seq_len", "trained_split", "split") if k in run.params}
    if "seq_len" in setting:
        setting["seq_len"] = int(setting["seq_len"])
    return {"part": "covid", "baseline": run.tags.get(BASELINE_TAG, run.params.get("baseline")), **setting,
            **{k: run.metrics.get(k, math.nan) for k in ("train_acc", "val_acc", "test_acc")}}
